"""The suite's guard against tests writing into the checkout sees what it should."""

from conftest import checkout_changes, checkout_snapshot


def test_the_guard_sees_added_rewritten_removed_files_and_empty_directories(tmp_path):
    (tmp_path / "kept.txt").write_text("a")
    (tmp_path / "gone.txt").write_text("b")
    (tmp_path / ".venv").mkdir()
    before = checkout_snapshot(tmp_path)
    (tmp_path / "runs" / "classifier_lstm").mkdir(parents=True)
    (tmp_path / "kept.txt").write_text("longer")
    (tmp_path / "gone.txt").unlink()
    (tmp_path / ".venv" / "ignored").write_text("c")
    assert checkout_changes(before, checkout_snapshot(tmp_path)) == [
        "added runs/", "added runs/classifier_lstm/", "removed gone.txt", "rewrote kept.txt"]
    assert checkout_changes(before, before) == []
