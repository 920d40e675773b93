"""Quiet TensorFlow's C++ start-up logs unless the user chose a level.

Importing TensorFlow prints oneDNN and CUDA notices from C++, among them
``E0000 ... failed call to cuInit ... (303)`` on every machine without a GPU,
which reads like a failure. ``TF_CPP_MIN_LOG_LEVEL`` does not reach all of
them: Abseil writes every message logged before ``absl::InitializeLog()`` to
stderr whatever the level (abseil/abseil-cpp#1718), and TensorFlow logs its
start-up lines that early. So the commands import TensorFlow, and let it find
its devices, with file descriptor 2 pointed at a temporary file; if the import
fails, what it wrote is replayed on stderr, so no error is ever hidden.

A user who sets ``TF_CPP_MIN_LOG_LEVEL`` keeps their choice: nothing is
redirected then, and TensorFlow logs as that level says.
"""
from __future__ import annotations

import os
import sys
import tempfile

_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
_ONEDNN = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn() -> None:
    """Turns TensorFlow's oneDNN CPU kernels on for this process, unless the user chose.

    TensorFlow enables them by default only on CPUs with AVX-512 VNNI, BF16 or
    AMX; on an AVX2-only CPU (the AMD EPYC machines here) it leaves them off,
    and a 1280x650x10k float32 product, the language models' softmax, then
    runs at 77 GFLOP/s instead of 105 (measured in issue 9; PyTorch: 101).
    `TF_ENABLE_ONEDNN_OPTS=0` turns them off again. Call it before anything
    imports TensorFlow; afterwards it does nothing.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault(_ONEDNN, "1")


def quiet_tensorflow_logs() -> None:
    """Import TensorFlow without its C++ start-up lines, unless the user set TF_CPP_MIN_LOG_LEVEL.

    Call it before anything imports tensorflow (a command's ``main`` after its
    arguments are parsed). Later in the run, TensorFlow's C++ warnings stay
    hidden (level 2) and its errors still print.
    """
    if _LEVEL in os.environ:
        return
    os.environ[_LEVEL] = "2"
    if "tensorflow" in sys.modules:
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the cuInit line is logged here
            _meet_onednn_bool_notice(tf)
        except BaseException:
            _restore(saved)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        _restore(saved)


def _meet_onednn_bool_notice(tf) -> None:
    """Runs, once, the first graph op that makes oneDNN's layout pass log its DT_BOOL notice.

    With oneDNN on, the first graph that transposes a boolean tensor (Keras'
    and the fused loops' time-major masks, the exported `step` signatures)
    logs ``E0000 ... util.cc:131] oneDNN supports DT_BOOL only on platforms
    with AVX-512. Falling back to the default Eigen-based implementation``,
    once per process, at ERROR level and so past TF_CPP_MIN_LOG_LEVEL=2, on
    every CPU, AVX-512 ones included: nothing is wrong, Eigen's transpose runs.
    Transposing a 2x2 boolean here (a 1x1 one is optimised away), while file descriptor 2 is captured, uses
    that one line up (tests/test_quiet.py checks it stays unprinted).
    """
    tf.function(lambda values: tf.transpose(values > 0, [1, 0]))(tf.zeros([2, 2]))


def _restore(saved_descriptor: int) -> None:
    os.dup2(saved_descriptor, 2)
    os.close(saved_descriptor)
