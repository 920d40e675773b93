"""Training-curve plots from the CSV history Keras' CSVLogger writes."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import keras


def read_history(csv_path) -> dict[str, list[float]]:
    """Columns of a CSVLogger file as float lists (missing values as NaN)."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            columns.setdefault(key, []).append(number)
    return columns


def plot_history(csv_path, png_path, title: str = "") -> Path:
    """Writes one panel per metric (train and validation together) to `png_path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers or CI
    import matplotlib.pyplot as plt

    history = read_history(csv_path)
    epochs = [int(e) + 1 for e in history.get("epoch", [])]
    names = [k for k in history if k not in ("epoch", "learning_rate") and not k.startswith("val_")]
    panels = names + (["learning_rate"] if "learning_rate" in history else [])
    figure, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.4))
    axes = list(axes) if len(panels) > 1 else [axes]
    for axis, name in zip(axes, panels):
        axis.plot(epochs, history[name], marker="o", label="train" if name != "learning_rate" else name)
        if f"val_{name}" in history:
            axis.plot(epochs, history[f"val_{name}"], marker="o", label="dev")
        axis.set_xlabel("epoch")
        axis.set_title(name)
        if name == "perplexity":
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    png_path = Path(png_path)
    figure.savefig(png_path, dpi=110)
    plt.close(figure)
    return png_path


class PlotHistory(keras.callbacks.Callback):
    """Redraws the training-curve PNG after every epoch, so it is there mid-run."""

    def __init__(self, csv_path, png_path, title: str = ""):
        super().__init__()
        self.csv_path, self.png_path, self.title = Path(csv_path), Path(png_path), title

    def on_epoch_end(self, epoch, logs=None):
        # CSVLogger writes its row in its own on_epoch_end, which runs first
        # because it is earlier in the callback list.
        if self.csv_path.exists():
            plot_history(self.csv_path, self.png_path, self.title)
