"""The training-speed benchmark: its workers on a tiny shape, and its report on a fixed result."""

import json
import math
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import training_speed  # noqa: E402  (lives in benchmarks/, put on the path above)

TINY = training_speed.LANGUAGE_MODEL_SHAPES["tiny"]


def tiny_spec(corpus: Path, side: str = "zoo", **extra) -> dict:
    return {"side": side, "job": "language_model", "preset": TINY["preset"], "cell": "lstm",
            "model": TINY["model"], "training": TINY["training"], "corpus": str(corpus),
            "steps": 2, "warmup": 1, "seed": 0, **extra}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tokens = training_speed.synthetic_stream(TINY["vocabulary_size"], 2_000, seed=0)
    return training_speed.write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", tokens)


@pytest.fixture(scope="module")
def zoo_records(corpus):
    """What the zoo worker emits for one timed round of 2 steps."""
    records = []
    training_speed.run_worker(tiny_spec(corpus), requests=["time"], emit=records.append)
    return records


# === Workers ===


def test_synthetic_stream_has_the_asked_vocabulary():
    tokens = training_speed.synthetic_stream(50, 1_000, seed=3)
    assert len(tokens) == 1_000
    assert len(set(tokens)) == 48  # plus <pad> and <unk>: 50
    assert tokens == training_speed.synthetic_stream(50, 1_000, seed=3)


def test_zoo_worker_runs_the_training_path(zoo_records):
    ready, timed = zoo_records
    info = ready["ready"]
    assert info["side"] == "zoo"
    assert info["config"]["preset"] == "ptb_small" and info["config"]["cell"] == "lstm"
    assert info["config"]["model"]["hidden_dim"] == 16 and info["config"]["model"]["num_layers"] == 1
    training = info["config"]["training"]
    assert (training["optimizer"], training["clip_norm"], training["sum_loss_over_time"]) == ("sgd", 5.0, True)
    assert (info["vocabulary_size"], info["batch_size"], info["num_steps"]) == (200, 4, 5)
    assert info["warmup_steps"] == 1
    assert set(info["versions"]) == {"tensorflow", "keras"}
    assert set(timed) == {"steps", "seconds", "loss", "tokens", "tokens_per_second"}
    assert (timed["steps"], timed["tokens"]) == (2, 2 * 4 * 5)
    assert timed["tokens_per_second"] > 0
    assert 0 < timed["loss"] < 2 * math.log(200)


def test_pytorch_worker_trains_the_same_shapes(corpus, zoo_records):
    pytest.importorskip("torch")
    zoo = zoo_records[0]["ready"]
    records = []
    training_speed.run_worker(tiny_spec(corpus, side="pytorch", config=zoo["config"]),
                              requests=["time"], emit=records.append)
    ready, timed = records
    info = ready["ready"]
    assert (info["vocabulary_size"], info["batch_size"], info["num_steps"]) == (200, 4, 5)
    # Same weights but one bias: nn.LSTM keeps b_ih and b_hh, Keras one bias (4 x hidden).
    assert info["parameters"] - zoo["parameters"] == 4 * 16
    assert (timed["steps"], timed["tokens"]) == (2, 2 * 4 * 5)
    assert timed["tokens_per_second"] > 0


def test_unknown_side_is_refused(corpus):
    with pytest.raises(ValueError, match="Valid sides: zoo, pytorch"):
        training_speed.run_worker(tiny_spec(corpus, side="jax"), requests=[], emit=print)


def test_variants_parse_into_environments():
    assert training_speed.parse_variants(["default", "onednn=TF_ENABLE_ONEDNN_OPTS=1",
                                          "two=A=1,B=x=y"]) == {
        "default": {}, "onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"}, "two": {"A": "1", "B": "x=y"}}
    with pytest.raises(ValueError, match="twice"):
        training_speed.parse_variants(["default", "default"])


# === The report ===


def worker_info(**extra) -> dict:
    return {"versions": {"tensorflow": "2.21.0", "keras": "3.15.1"}, "onednn_enabled": True,
            "threads": {"tf_intra_op": 0, "tf_inter_op": 0}, "environment": {"TF_ENABLE_ONEDNN_OPTS": None},
            "vocabulary_size": 10_000, "batch_size": 20, **extra}


def rounds(*values, key="tokens_per_second"):
    return [{"steps": 10, key: value, "loss": 9.0} for value in values]


def fake_results() -> dict:
    config = {"preset": "ptb_small", "cell": "lstm", "training": {"batch_size": 20, "num_steps": 20},
              "model": {"embedding_dim": 200, "hidden_dim": 200, "num_layers": 2, "dropout": 0.0}}
    zoo = worker_info(config=config, num_steps=20)
    pytorch = {**zoo, "versions": {"torch": "2.13.0+cpu"}, "threads": {"torch_intra_op": 2}}
    del pytorch["onednn_enabled"]
    language_model = training_speed.language_model_row("small", "lstm", {
        "zoo default": {"worker": zoo, "rounds": rounds(900, 1_000, 1_100)},
        "zoo onednn": {"worker": zoo, "rounds": rounds(1_300, 1_200, 1_100)},
        "pytorch": {"worker": pytorch, "rounds": rounds(2_200, 1_800, 2_000)}})
    epoch_info = worker_info(config=config, train_size=67_349, batches_per_epoch=2_105)
    epoch = training_speed.epoch_row("sst_bilstm", {
        "zoo default": {"worker": epoch_info, "rounds": rounds(50, 45, 55, key="seconds_per_epoch")},
        "zoo onednn": {"worker": epoch_info, "rounds": rounds(38, 40, 42, key="seconds_per_epoch")}})
    return {"command": "python benchmarks/training_speed.py", "machine": training_speed.machine_info(),
            "settings": {"rounds": 3, "steps": 10, "warmup": 5, "epoch_batches": 10, "epoch_warmup": 10,
                         "variants": {"default": {}, "onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"}},
                         "data": "synthetic"},
            "language_models": [language_model], "epochs": [epoch]}


def test_rows_summarize_rounds_and_ratios():
    results = fake_results()
    row = results["language_models"][0]
    assert row["sides"]["pytorch"]["tokens_per_second"] == {
        "median": 2_000, "min": 1_800, "max": 2_200, "rounds": [2_200, 1_800, 2_000]}
    assert row["ratios"] == pytest.approx({"zoo default / pytorch": 0.5, "zoo onednn / pytorch": 0.6,
                                           "zoo onednn / zoo default": 1.2})
    assert results["epochs"][0]["sampled_batches"] == 30


def test_markdown_has_a_row_per_cell_and_preset():
    text = training_speed.markdown_report(fake_results())
    lines = text.splitlines()
    assert ("| cell | zoo default tokens/s | zoo onednn tokens/s | PyTorch tokens/s | zoo default / PyTorch "
            "| zoo onednn / PyTorch | zoo onednn / zoo default |") in lines
    assert "| lstm | 1,000 (900–1,100) | 1,200 (1,100–1,300) | 2,000 (1,800–2,200) | 0.50 | 0.60 | 1.20 |" in lines
    assert ("| `sst_bilstm` | synthetic SST-2 GLUE train | 67,349 | 2,105 | 50.0 (45.0–55.0) "
            "| 40.0 (38.0–42.0) | 1.25 |") in lines
    assert "## Zaremba small (`ptb_small`): vocabulary 10,000, 2 x 200, batch 20, 20 steps, dropout 0.0" in lines
    for flag in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"):
        assert any(line.startswith(f"| {flag} | ") for line in lines)


def test_markdown_without_pytorch_leaves_its_columns_empty():
    results = fake_results()
    row = results["language_models"][0]
    del row["sides"]["pytorch"]
    row["ratios"] = training_speed.ratios({name: side["tokens_per_second"]["median"]
                                           for name, side in row["sides"].items()})
    lines = training_speed.markdown_report(results).splitlines()
    assert "| lstm | 1,000 (900–1,100) | 1,200 (1,100–1,300) | – | – | – | 1.20 |" in lines


def test_report_files(tmp_path):
    results = fake_results()
    training_speed.write_report(results, tmp_path)
    assert json.loads((tmp_path / "training_speed.json").read_text()) == json.loads(json.dumps(results))
    assert (tmp_path / "training_speed.md").read_text() == training_speed.markdown_report(results)
    assert (tmp_path / "training_speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_other_processes_share_of_the_cpus():
    ticks = os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)  # one second of every CPU
    # Of 1 s on every CPU, the machine was busy 60% and the worker itself 35%: others took 25%.
    assert training_speed.other_cpu_share((0, 0, 0), (0.6 * ticks, ticks, 0.35 * ticks)) == pytest.approx(0.25)
    assert training_speed.other_cpu_share((0, 0, 0), (5, 10, 5)) is None  # too short to tell
    assert training_speed.other_cpu_share(None, (0, ticks, 0)) is None
