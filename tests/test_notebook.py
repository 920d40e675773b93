"""The Colab notebook runs as written: its code cells, in order, in a fresh process."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tiny_corpora import write_text

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPOSITORY_ROOT / "notebooks" / "rnn_zoo_quickstart.ipynb"


def test_notebook_code_cells_run_in_order(tmp_path):
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    cells = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert cells, "the notebook has code"
    assert not any(line.lstrip().startswith(("!", "%")) for cell in cells for line in cell.splitlines()), \
        "cells must be plain Python so they run outside Jupyter too"
    script = tmp_path / "notebook.py"
    script.write_text("\n\n".join(cells), encoding="utf-8")
    # The notebook takes the local corpus, else downloads tiny_shakespeare; the
    # test gives it a small character corpus of its own instead.
    corpus = write_text(tmp_path / "corpus", "train.txt", None, level="char", lines=4000)
    # Its run and export go to a temporary directory, not into the checkout's runs/.
    work = tmp_path / "work"
    environment = {**os.environ, "RNN_ZOO_NOTEBOOK_DATA": str(corpus), "RNN_ZOO_NOTEBOOK_WORK": str(work),
                   "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run([sys.executable, str(script)], cwd=REPOSITORY_ROOT, env=environment,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout
    assert "dev cross-entropy (nats/char)" in out
    assert "exported to" in out
    assert "perplexity of a PTB-like sentence" in out
    assert out.count("ROMEO:") >= 2 and "JULIET:" in out, "generated in-process and over gRPC"
    assert "same text in-process: True" in out
    assert (work / "char" / "model.keras").exists()
    assert (work / "saved_models" / "notebook_char" / "1" / "saved_model.pb").exists()
