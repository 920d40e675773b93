"""The generation-speed benchmark: its naive baseline is the same model, and its --quick run reports every figure."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import checkout_changes, checkout_snapshot

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPOSITORY_ROOT / "benchmarks" / "generation_speed.py"
CHAR_MODEL = REPOSITORY_ROOT / "saved_models" / "shakespeare_char_lstm"


def _benchmark_module():
    sys.path.insert(0, str(REPOSITORY_ROOT / "benchmarks"))
    try:
        import generation_speed
    finally:
        sys.path.remove(str(REPOSITORY_ROOT / "benchmarks"))
    return generation_speed


def test_the_naive_loop_generates_what_the_stateful_loop_does():
    from serving.generation import SavedModelBackend, generate

    benchmark = _benchmark_module()
    backend = SavedModelBackend(str(benchmark.latest_version(CHAR_MODEL.parent, CHAR_MODEL.name)))
    naive = benchmark.PrefixRefeedBackend(backend)
    prompts = ["ROMEO:", "KING RICHARD III:", "ROMEO:"]
    options = dict(max_new_tokens=12, do_sample=False, stop_at_end_token=False)
    carried = generate(backend, prompts, **options)
    refed = generate(naive, prompts, **options)
    assert refed.token_ids == carried.token_ids
    assert all(len(row) == 12 for row in refed.token_ids)
    # Every step fed each row's whole prefix: the longest prefix is the prompt and all but the last token.
    longest_prompt = max(len(row) for row in backend.tokenize(prompts)) + 1  # + the start token
    assert max(len(prefix) for prefix in naive._prefixes) == longest_prompt + 11


def test_quick_run_reports_every_figure(tmp_path):
    before = checkout_snapshot()
    completed = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--output_dir", str(tmp_path)],
                               cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert checkout_changes(before, checkout_snapshot()) == []
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"generation_speed.{suffix}").stat().st_size > 0

    result = json.loads((tmp_path / "generation_speed.json").read_text())
    setup = result["setup"]
    assert setup["models"] == ["shakespeare_char_lstm"] and setup["batch_size"] == 4 and setup["quick"] is True
    runs = result["runs"]["shakespeare_char_lstm"]
    assert set(runs) == {f"{backend}, {rows}" for backend in ("in-process", "in-process, logits", "gRPC",
                                                              "gRPC, logits", "gRPC, logits, typed fields")
                         for rows in ("1 prompt", "4 prompts")} | {"naive in-process, 1 prompt"}
    for name, run in runs.items():
        assert run["tokens"] == run["rows"] * setup["max_new_tokens"], name
        assert len(run["seconds"]) == setup["repeats"]
        assert run["tokens_per_second_min"] <= run["tokens_per_second"] <= run["tokens_per_second_max"]
    targets = {target["target"]: target for target in result["targets"]}
    assert len(targets) == 6
    grpc_one = targets["gRPC at least 0.7x in-process, 1 prompt"]
    expected = runs["gRPC, 1 prompt"]["tokens_per_second"] / runs["in-process, 1 prompt"]["tokens_per_second"]
    assert abs(grpc_one["value"] - expected) < 1e-3 and grpc_one["met"] == (grpc_one["value"] >= 0.7)
    assert all(target["value"] > 0 for target in targets.values())
    assert result["load"]["before"]["uptime"] and result["machine"]["cpu_model"]
