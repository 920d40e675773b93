"""The environment switches that turn the zoo's speed levers off (RNN_ZOO_FUSED_LSTM=0 and the like)."""

from __future__ import annotations

import os


def switched_on(variable: str) -> bool:
    """Whether the lever `variable` names is on: the variable unset, or not 0/false/no/off."""
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "no", "off")
