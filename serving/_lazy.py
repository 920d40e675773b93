"""Lazy re-exports (PEP 562) for the packages whose modules import TensorFlow.

A package's `__init__` runs before any of its modules, the command-line ones
included; importing TensorFlow there would make every `--help` wait for it
(about 5 s). With these, `from serving.export import export_model` still
works, and imports `serving.export.writer` only then.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable, Callable]:
    """The module-level `__getattr__` and `__dir__` of a package that re-exports names lazily.

    Args:
        package: The package's `__name__`.
        exports: Re-exported name -> the module that defines it.

    Example:

        __getattr__, __dir__ = lazy_exports(__name__, {"export_model": "serving.export.writer"})
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
