"""The load-and-faults benchmark, run in its --quick form against the real server (about 25 s on 2 cores)."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import checkout_changes, checkout_snapshot

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPOSITORY_ROOT / "benchmarks" / "load_and_faults.py"


def test_quick_run_reports_every_figure_and_no_unexpected_errors(tmp_path):
    before = checkout_snapshot()
    completed = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--output_dir", str(tmp_path)],
                               cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert checkout_changes(before, checkout_snapshot()) == []
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"load_and_faults.{suffix}").stat().st_size > 0

    result = json.loads((tmp_path / "load_and_faults.json").read_text())
    assert result["settings"]["clients"] == 4 and result["settings"]["quick"] is True
    assert [event["event"] for event in result["events"]] == [
        "new_version", "corrupt_version", "model_removed", "sigterm"]
    results = result["results"]
    for key in ("requests", "ok", "errors_expected", "errors_unexpected", "expected_codes", "unexpected_codes",
                "latency_ok_before_sigterm", "per_phase", "per_model", "per_api", "fault_effects"):
        assert key in results, key
    assert results["requests"] > 0 and results["ok"] > 0
    assert set(results["per_model"]) == {"ewt_upos_bilstm", "ptb_word_lstm", "shakespeare_char_lstm",
                                         "sst2_bilstm"}
    assert all(entry["ok"] > 0 for entry in results["per_model"].values())
    assert set(results["per_phase"]) == {"before_faults", "new_version", "corrupt_version", "model_removed",
                                         "after_sigterm"}
    for phase in results["per_phase"].values():
        assert {"p50_ms", "p90_ms", "p99_ms"} <= set(phase["latency_ok"])
    assert results["unexpected_codes"] == {}, results["error_messages"]
    assert results["errors_unexpected"] == 0

    server = result["server"]
    assert server["exit_code"] == 0, server["log"]
    assert server["sigterm_to_exit_s"] is not None
    assert server["rss_mib_before_load"] > 0 and server["rss_mib_at_sigterm"] > 0
    assert server["log"]["tracebacks"] == 0, server["log"]
    assert result["machine"]["cpu_model"]
