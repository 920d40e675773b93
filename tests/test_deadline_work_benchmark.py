"""benchmarks/deadline_work.py runs end to end and writes its tables (no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def test_deadline_work_benchmark_measures_both_settings(tmp_path):
    completed = subprocess.run([sys.executable, "benchmarks/deadline_work.py", "--quick", "--output_dir",
                                str(tmp_path)], cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "deadline_work.json").read_text())
    assert set(result["results"]) == {"one call", "pieces of 256"}
    for entry in result["results"].values():
        (round_,) = entry["rounds"]
        assert round_["code"] in ("DEADLINE_EXCEEDED", "OK")  # a very fast machine may meet even the short deadline
        assert round_["busy_after_deadline_s"] >= 0 and round_["cpu_after_deadline_s"] >= 0
        assert round_["probe_ms"] > 0
    assert "| pieces of 256 | `--max_rows_per_run=256` |" in (tmp_path / "deadline_work.md").read_text()
    assert (tmp_path / "deadline_work.png").stat().st_size > 0
