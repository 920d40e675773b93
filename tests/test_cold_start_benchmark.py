"""benchmarks/cold_start.py runs end to end and writes its tables (no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def test_cold_start_benchmark_writes_both_settings_for_every_bundled_model(tmp_path):
    completed = subprocess.run([sys.executable, "benchmarks/cold_start.py", "--rounds", "1", "--output_dir",
                                str(tmp_path)], cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "cold_start.json").read_text())
    assert set(result["runs"]) == {"warm-up off", "warm-up on"}
    for runs in result["runs"].values():
        (run,) = runs
        assert run["ready_seconds"] > 0
        assert set(run["models"]) == {"sst2_bilstm", "ewt_upos_bilstm", "ptb_word_lstm", "shakespeare_char_lstm"}
        assert all(times["first_ms"] > 0 and times["second_ms"] > 0 for times in run["models"].values())
    assert "| warm-up on |" in (tmp_path / "cold_start.md").read_text()
    assert (tmp_path / "cold_start.png").stat().st_size > 0
