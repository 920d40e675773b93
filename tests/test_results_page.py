"""docs/results.md is what `python -m training.results_page` writes from the shipped models."""

from pathlib import Path

from training import results_page

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def test_the_results_page_matches_the_shipped_models(tmp_path):
    assert results_page.main(["--output_root", str(tmp_path)]) == 0
    written = (tmp_path / results_page.PAGE).read_text()
    assert written == (REPOSITORY_ROOT / results_page.PAGE).read_text(), (
        "docs/results.md is stale: run `python -m training.results_page`")
    assert (tmp_path / results_page.FIGURE).stat().st_size > 0


def test_every_shipped_model_has_a_row_with_its_dev_figure():
    table = results_page.rows(REPOSITORY_ROOT / "saved_models")
    shipped = results_page.shipped_versions(REPOSITORY_ROOT / "saved_models")
    assert {row["name"] for row in table} == set(shipped) == set(results_page.ANCHORS)
    for row in table:
        assert row["parameters"] > 0 and row["train_minutes"] > 0
        if row["member_commands"]:  # an ensemble: its members' commands, then the one that joins them
            assert row["command"].startswith("rnn-zoo-ensemble --runs ")
            assert all(command.startswith("rnn-zoo-train ") for command in row["member_commands"])
            assert "ensemble of" in row["shape"]
        else:
            assert row["command"].startswith("rnn-zoo-train ")
        assert (0 < row["dev"] <= 100) if row["metric"] == "accuracy" else row["dev"] > 0
