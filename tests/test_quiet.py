"""Commands start quietly: no TensorFlow C++ start-up lines unless the user asks for them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
# Lines TensorFlow's C++ side prints at import on CPU machines (which ones depends on the CPU).
NOISE = ("All log messages before absl::InitializeLog()", "I0000 ", "E0000 ", "W0000 ", "cuInit",
         "oneDNN custom operations", "cpu_feature_guard")


def _environment(**extra):
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return {**environment, "PYTHONPATH": str(REPOSITORY_ROOT), **extra}


def test_a_command_that_imports_tensorflow_prints_none_of_its_start_up_lines():
    completed = subprocess.run(
        [sys.executable, "-m", "training.train", "--preset", "ptb_small", "--data", "ptb", "--dry_run"],
        cwd=REPOSITORY_ROOT, env=_environment(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert '"preset": "ptb_small"' in completed.stdout
    assert not [line for line in completed.stderr.splitlines() if any(noise in line for noise in NOISE)], \
        completed.stderr


def test_onednns_boolean_notice_is_not_printed_when_a_model_runs():
    # oneDNN's layout pass logs "supports DT_BOOL only on platforms with AVX-512" at ERROR level
    # the first time a graph transposes a boolean, as every masked recurrent layer does.
    script = ("import sys; from training.quiet import quiet_tensorflow_logs; quiet_tensorflow_logs(); "
              "import tensorflow as tf; "
              "masked = tf.function(lambda x: tf.transpose(x > 0, [1, 0])); "
              "print(masked(tf.constant([[1.0, -1.0]])).numpy().ravel().tolist())")
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY_ROOT,
                               env=_environment(TF_ENABLE_ONEDNN_OPTS="1"), capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["[True,", "False]"]
    assert "DT_BOOL" not in completed.stderr, completed.stderr


def test_a_level_the_user_set_is_kept_and_nothing_is_redirected():
    script = ("import os, sys; from training.quiet import quiet_tensorflow_logs; quiet_tensorflow_logs(); "
              "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], 'tensorflow' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY_ROOT,
                               env=_environment(TF_CPP_MIN_LOG_LEVEL="0"), capture_output=True, text=True,
                               timeout=120)
    assert completed.stdout.split() == ["0", "False"], "the user's level, and TensorFlow left to the caller"


def test_a_failing_import_replays_what_it_wrote(tmp_path):
    # A stand-in `tensorflow` that writes to file descriptor 2, as the C++ side does, then fails.
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'F0000 fatal: libtensorflow_framework.so.2 not found\\n')\n"
        "raise ImportError('cannot load tensorflow')\n")
    script = "from training.quiet import quiet_tensorflow_logs; quiet_tensorflow_logs()"
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY_ROOT,
                               env=_environment(PYTHONPATH=f"{tmp_path}{os.pathsep}{REPOSITORY_ROOT}"),
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1
    assert "F0000 fatal: libtensorflow_framework.so.2 not found" in completed.stderr
    assert "ImportError: cannot load tensorflow" in completed.stderr


@pytest.mark.parametrize("user_value, expected", [(None, "1"), ("0", "0")])
def test_training_turns_onednn_on_unless_the_user_chose(user_value, expected):
    # TensorFlow leaves oneDNN off on AVX2-only CPUs; rnn-zoo-train turns it on, and keeps a user's 0.
    script = ("import os; from training.quiet import prefer_onednn; prefer_onednn(); "
              "print(os.environ['TF_ENABLE_ONEDNN_OPTS'])")
    environment = _environment(**({} if user_value is None else {"TF_ENABLE_ONEDNN_OPTS": user_value}))
    if user_value is None:
        environment.pop("TF_ENABLE_ONEDNN_OPTS", None)
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY_ROOT, env=environment,
                               capture_output=True, text=True, timeout=60)
    assert completed.stdout.split() == [expected], completed.stderr


def test_onednn_is_left_alone_once_tensorflow_is_imported():
    script = ("import os, tensorflow; os.environ.pop('TF_ENABLE_ONEDNN_OPTS', None); "
              "from training.quiet import prefer_onednn; prefer_onednn(); "
              "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset'))")
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY_ROOT, env=_environment(),
                               capture_output=True, text=True, timeout=120)
    assert completed.stdout.split() == ["unset"], "too late to matter, so it is not pretended"
