"""`make demo` (python -m serving.demo): the README's main command, on the bundled models, end to end."""

import subprocess
import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_serves_the_bundled_models_and_calls_each_one():
    completed = subprocess.run([sys.executable, "-m", "serving.demo"], cwd=REPOSITORY_ROOT,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = completed.stdout
    for model in ("sst2_bilstm", "ewt_upos_bilstm", "ptb_word_lstm", "shakespeare_char_lstm"):
        assert model in out, model
    assert "Traceback" not in completed.stderr
    assert out.rstrip().endswith("server stopped.")
