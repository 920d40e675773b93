"""What the command lines share: the zoo's names without Keras, quiet TensorFlow, `--set` values.

A command builds and parses its arguments first and imports TensorFlow only
after (about 5 s here), so `--help` and argument errors answer at once. The
choices in `--help` (tasks, cells, presets) come from `zoo.names` and
`zoo.presets`, which are plain data; importing them as `zoo.names` would run
`zoo/__init__.py` and import Keras, so `zoo_catalog` loads the two files by
path when the zoo is not imported yet.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

from training.quiet import quiet_tensorflow_logs  # noqa: F401  (re-exported for the commands)

_ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"


def _load_by_path(name: str):
    spec = importlib.util.spec_from_file_location(f"_rnn_zoo_light_{name}", _ZOO_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def zoo_catalog() -> SimpleNamespace:
    """TASKS, CELL_TYPES, GATES, POOLINGS and the presets, without importing Keras."""
    if "zoo" in sys.modules:
        import zoo

        names, presets = zoo, zoo.presets
    else:
        names, presets = _load_by_path("names"), _load_by_path("presets")
    return SimpleNamespace(TASKS=names.TASKS, CELL_TYPES=names.CELL_TYPES, GATES=names.GATES,
                           POOLINGS=names.POOLINGS, list_presets=presets.list_presets,
                           get_preset=presets.get_preset)


def parse_assignment(text: str) -> tuple[str, object]:
    """`key=value` with the value read as JSON when it parses (numbers, true, lists), else a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value
