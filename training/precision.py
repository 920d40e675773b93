"""The numeric precision a run trains in: float32, or bfloat16 arithmetic where the CPU has it.

`--precision` (the training option `precision`) takes

- `float32`: every computation in float32;
- `mixed_bfloat16`: Keras' mixed policy: matrix products and activations in
  bfloat16, weights, optimizer state and gradients' updates in float32. The
  loss (and with it the softmax) is computed in float32 from the logits, and
  the language model's carried state is kept in float32 between batches;
- `auto`: `mixed_bfloat16` on a CPU with bfloat16 instructions (AVX512-BF16 or
  AMX-BF16), `float32` anywhere else, since without them TensorFlow emulates
  bfloat16 and runs slower than float32.

Whatever a run trains in, the model it saves computes in float32 (the
weights are float32 either way), so evaluation, export and serving see the
same model on every machine.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras

PRECISIONS = ("float32", "mixed_bfloat16", "auto")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where it cannot tell)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_has_bfloat16(flags: set[str] | None = None) -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(precision: str, flags: set[str] | None = None) -> str:
    """The Keras dtype policy for a `precision` setting (`auto` decided by the CPU).

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}. Valid precisions: {', '.join(PRECISIONS)}.")
    if precision == "auto":
        return "mixed_bfloat16" if cpu_has_bfloat16(flags) else "float32"
    return precision


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Layers built inside the block take `policy`; the global policy is restored after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def compute_in_float32(model) -> None:
    """Switches every layer of a (mixed-precision) model to float32 computation, in place.

    The weights are float32 under a mixed policy already, so this changes what
    the model computes in, and what its saved config says, not its weights.
    """
    for layer in model._flatten_layers(include_self=True, recursive=True):
        layer.dtype_policy = "float32"
