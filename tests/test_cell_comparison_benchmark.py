"""benchmarks/cell_comparison.py: cells sized to one parameter count, trained, tabled (tiny data, no timing)."""

import json
import subprocess
import sys
from pathlib import Path

from tiny_corpora import write_sst

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def test_the_cells_get_equal_parameter_counts_and_a_row_each(tmp_path):
    write_sst(tmp_path / "data" / "sst2")
    completed = subprocess.run(
        [sys.executable, "benchmarks/cell_comparison.py", "--data_root", str(tmp_path / "data"), "--tasks", "sst",
         "--sst_epochs", "1", "--work_dir", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "out")],
        cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "cell_comparison.json").read_text())
    cells = result["tasks"]["sst"]["cells"]
    assert set(cells) == {"simple_rnn", "gru", "lstm"}
    reference = result["tasks"]["sst"]["reference_parameters"]
    assert cells["lstm"]["parameters"] == reference and cells["lstm"]["hidden_dim"] == 128
    for cell in ("simple_rnn", "gru"):  # wider cells with fewer gates, within 1% of the LSTM's count
        assert cells[cell]["hidden_dim"] > 128 and abs(cells[cell]["parameters"] - reference) < 0.01 * reference
    for row in cells.values():
        (run,) = row["runs"]
        assert 0 <= run["dev"] <= 1 and run["command"].startswith("rnn-zoo-train --preset sst_bilstm --cell ")
    table = (tmp_path / "out" / "cell_comparison.md").read_text()
    assert table.count("| sst (sst_bilstm) |") == 3 and (tmp_path / "out" / "cell_comparison.png").stat().st_size
