"""The serving-speed benchmark, run in its --quick form against real server processes (about 40 s on 2 cores).

No timing is asserted (the machine is shared): only that every figure is
there, is a number where a number belongs, and agrees with the others.
"""

import json
import subprocess
import sys
from pathlib import Path

from conftest import checkout_changes, checkout_snapshot

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPOSITORY_ROOT / "benchmarks" / "serving_speed.py"
MODES = {"in_process", "unbatched", "batched", "echo"}


def test_quick_run_reports_every_figure(tmp_path):
    before = checkout_snapshot()
    completed = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--output_dir", str(tmp_path)],
                               cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert checkout_changes(before, checkout_snapshot()) == []
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"serving_speed.{suffix}").stat().st_size > 0

    result = json.loads((tmp_path / "serving_speed.json").read_text())
    settings = result["settings"]
    assert settings["quick"] is True and settings["models"] == ["sst2_bilstm"] and settings["concurrency"] == [1, 8]
    assert "--enable_batching" in settings["server_flags"]["batched"]
    assert "--enable_batching" not in settings["server_flags"]["unbatched"]
    assert result["errors"] == {}
    assert result["load"]["before"]["uptime"] and result["load"]["after"]["uptime"]
    assert result["machine"]["cpu_model"] and result["machine"]["flags"]

    windows = result["windows"]["sst2_bilstm"]
    assert set(windows) == {"1", "8"}
    for concurrency, modes in windows.items():
        assert set(modes) == MODES
        for mode, mode_windows in modes.items():
            assert len(mode_windows) == settings["rounds"] == 1
            window = mode_windows[0]
            assert window["calls"] > 0 and window["rows_per_second"] > 0, (concurrency, mode)
            assert 0 < window["p50_ms"] <= window["p90_ms"] <= window["p99_ms"], (concurrency, mode)
            rows_per_call = int(concurrency) if mode == "in_process" else 1
            assert window["rows"] == window["calls"] * rows_per_call
            if mode == "in_process":
                assert window["in_process_cpu_ms_per_row"] > 0
            else:
                assert window["server_cpu_ms_per_row"] > 0 and window["client_cpu_ms_per_row"] > 0

    summary = result["results"]["per_model"]["sst2_bilstm"]
    for concurrency, row in summary.items():
        for mode in ("unbatched", "batched", "echo"):
            ratio = row[mode]["throughput_ratio_to_in_process"]["median"]
            expected = windows[concurrency][mode][0]["rows_per_second"] / \
                windows[concurrency]["in_process"][0]["rows_per_second"]
            assert abs(ratio - expected) <= 1e-3 * max(1.0, expected)
            added = row[mode]["added_p50_ms"]["median"]
            assert abs(added - (windows[concurrency][mode][0]["p50_ms"]
                                - windows[concurrency]["in_process"][0]["p50_ms"])) < 1e-3

    targets = result["results"]["targets"]
    assert [target["target"] for target in targets] == [
        "server adds at most 0.8 ms p50 at concurrency 1 (unbatched)"]  # no concurrency 32 in --quick
    target = targets[0]
    assert target["value"] == summary["1"]["unbatched"]["added_p50_ms"]["median"]
    assert target["met"] == (target["value"] <= 0.8)
    assert target["floor"]["value"] == summary["1"]["echo"]["p50_ms"]["median"]

    markdown = (tmp_path / "serving_speed.md").read_text()
    assert "## Targets" in markdown and "gRPC echo server" in markdown
