"""The diagnostics' figures, as PNG files (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.diagnostics.gradient_flow import EFFECTIVE_MEMORY_THRESHOLD, format_memory


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers or CI
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    figure.clear()
    return path


def plot_gradient_flow(flows: dict, path, title: str = "") -> Path:
    """Norm of dL_T/dh_t (top layer) and dL_T/dx_t over distance, each divided by its value at distance 0."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, flow in flows.items():
        for axis, which, norms in ((axes[0], "hidden", flow.hidden_norms[-1]),
                                   (axes[1], "input", flow.input_norms)):
            memory = format_memory(flow.effective_memory(which), flow.max_distance)
            ratio = np.maximum(norms / norms[0], 1e-30)
            axis.plot(flow.distances, ratio, label=f"{name} (memory {memory})")
    for axis, label in ((axes[0], "||dL_T/dh_t|| / ||dL_T/dh_T||, top layer"),
                        (axes[1], "||dL_T/dx_t|| / ||dL_T/dx_T||")):
        axis.axhline(EFFECTIVE_MEMORY_THRESHOLD, color="gray", linestyle="--", linewidth=1)
        axis.set_yscale("log")
        axis.set_ylim(bottom=1e-12, top=10)
        axis.set_xlabel("distance T - t")
        axis.set_title(label, fontsize=10)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_long_dependency(results: list[dict], path, chance: float, title: str = "") -> Path:
    """Held-out accuracy against sequence length, one line per variant (mean over seeds)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for variant in dict.fromkeys(result["variant"] for result in results):
        lengths = sorted({r["length"] for r in results if r["variant"] == variant})
        means = [np.mean([r["accuracy"] for r in results
                          if r["variant"] == variant and r["length"] == length]) for length in lengths]
        axis.plot(lengths, means, marker="o", label=variant)
    axis.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance")
    axis.set_xscale("log")
    axis.set_xlabel("sequence length L (the label is token 1)")
    axis.set_ylabel("held-out accuracy")
    axis.set_ylim(0, 1.05)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    if title:
        axis.set_title(title, fontsize=10)
    return _save(figure, path)


def plot_clipping(traces: dict, path, title: str = "") -> Path:
    """Global gradient norm before clipping (and applied), and the loss, per step, for each run."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, trace in traces.items():
        line, = axes[0].plot(trace.gradient_norms, label=f"{name}: before clipping", linewidth=1)
        if trace.clip_norm is not None:
            axes[0].plot(trace.applied_norms, color=line.get_color(), linestyle=":",
                         label=f"{name}: applied (clip {trace.clip_norm:g})")
        axes[1].plot(trace.losses, label=name, linewidth=1)
    axes[0].set_yscale("log")
    axes[0].set_title("global gradient norm", fontsize=10)
    axes[1].set_title("training loss", fontsize=10)
    for axis in axes:
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_initial_state(result: dict, summary: dict, path, metric: str, title: str = "",
                       window: int = 10) -> Path:
    """Early-training loss (moving average over `window` steps, mean over seeds) and the dev metric per variant."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for variant in summary:
        losses = np.mean([run["losses"] for run in result["runs"] if run["variant"] == variant], axis=0)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes[0].plot(np.arange(window, len(losses) + 1), smooth, label=f"{variant} initial state")
    axes[0].set_xlabel("step")
    axes[0].set_title(f"training loss (moving average of {window} steps)", fontsize=10)
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    names = list(summary)
    values = [summary[name]["dev"][metric] for name in names]
    axes[1].bar(names, values, color=["C0", "C1"][:len(names)])
    for index, value in enumerate(values):
        axes[1].text(index, value, f"{value:.4g}", ha="center", va="bottom")
    axes[1].set_title(f"dev {metric}", fontsize=10)
    if title:
        figure.suptitle(title)
    return _save(figure, path)
