"""The one chart the speed benchmarks draw: a horizontal bar per configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def bar_chart(path: Path, names: Sequence[str], values: Sequence[float], *, xlabel: str, title: str,
              log_scale: bool = False, figsize: tuple[float, float] = (7, 3.2),
              reference: float | None = None) -> None:
    """Writes a PNG with one horizontal bar per name, the first at the top.

    `reference` draws a dashed vertical line at that value (say 1 for ratios).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=figsize)
    axis.barh(list(names), list(values))
    if log_scale:
        axis.set_xscale("log")
    if reference is not None:
        axis.axvline(reference, color="black", linestyle="--", linewidth=1)
    axis.set_xlabel(xlabel)
    axis.set_title(title)
    axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
