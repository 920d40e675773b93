"""The summaries: one JSON file with every number and a Markdown page that reads them out."""

from __future__ import annotations

import json
from pathlib import Path

from training.diagnostics.gradient_flow import EFFECTIVE_MEMORY_THRESHOLD


def write_summary(output_dir, data: dict, markdown: str) -> tuple[Path, Path]:
    """Writes `summary.json` and `summary.md` into `output_dir`; their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = output_dir / "summary.json", output_dir / "summary.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    markdown_path.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return json_path, markdown_path


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def gradients_markdown(models: dict, command: str) -> str:
    """The gradient-flow page: effective memory and spectral radius per model."""
    rows = []
    for name, entry in models.items():
        ratio = entry["hidden_norms"][-1]
        at = {k: (ratio[k] / ratio[0] if k < len(ratio) else None) for k in (10, 50)}
        radii = entry["spectral_radii"]
        rows.append([name, entry["source"], entry["effective_memory_text"]["hidden"],
                     entry["effective_memory_text"]["input"],
                     *(f"{value:.2e}" if value is not None else "" for value in at.values()),
                     ", ".join(f"{radius:.3f}" for radius in radii) if radii else ""])
    return "\n\n".join([
        "# Gradient flow by distance",
        f"Made by `{command}`.",
        f"Mean over rows and end positions T of the gradient norm of the loss at T against "
        f"the state h_t (top layer) and the input x_t, by distance T - t. Effective memory: the "
        f"first distance at which it is below {EFFECTIVE_MEMORY_THRESHOLD:g} of its value at "
        "distance 0 (\"> N\": never, within the N distances measured). Spectral radius: "
        "SimpleRNN layers only, one per layer and direction.",
        _table(["model", "weights", "effective memory (h)", "effective memory (x)",
                "h ratio at 10", "h ratio at 50", "spectral radius"], rows),
        "![gradient flow](gradient_flow.png)",
    ])


def long_dependency_markdown(results: list[dict], settings: dict, chance: float, command: str) -> str:
    """Accuracy by variant and length."""
    variants = list(dict.fromkeys(result["variant"] for result in results))
    lengths = sorted({result["length"] for result in results})
    rows = []
    for variant in variants:
        cells = []
        for length in lengths:
            values = [r["accuracy"] for r in results if r["variant"] == variant and r["length"] == length]
            cells.append(f"{100 * sum(values) / len(values):.1f}" if values else "")
        rows.append([variant, *cells])
    return "\n\n".join([
        "# Long-dependency task: the label is the first token",
        f"Made by `{command}`.",
        f"Held-out accuracy (%) after training, mean over seeds {settings['seeds']}; chance "
        f"{100 * chance:.1f}%. Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()
                                                       if k != "seeds") + ".",
        _table(["variant", *(f"L={length}" for length in lengths)], rows),
        "![accuracy against L](long_dependency.png)",
    ])


def clipping_markdown(summary: dict, settings: dict, command: str) -> str:
    rows = [[name, entry["clip_norm"] if entry["clip_norm"] is not None else "none",
             f"{entry['median_gradient_norm']:.3g}", f"{entry['max_gradient_norm']:.4g}",
             f"{entry['max_applied_norm']:.7g}", entry["steps_clipped"], entry["nonfinite_steps"],
             f"{entry['final_loss']:.4f}"] for name, entry in summary.items()]
    return "\n\n".join([
        "# Exploding gradients, with and without global-norm clipping",
        f"Made by `{command}`.",
        "One SimpleRNN classifier on the first-token task, its recurrent matrix rescaled to "
        "spectral radius " f"{settings['recurrent_radius']}, trained twice from the same weights "
        "on the same batches with SGD: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".",
        _table(["run", "clip norm", "median norm", "largest norm", "largest applied norm",
                "steps clipped", "non-finite steps", "loss (last 10 steps)"], rows),
        "![gradient norms](clipping.png)",
    ])


def initial_state_markdown(summary: dict, settings: dict, command: str) -> str:
    early = next(key for key in next(iter(summary.values())) if key.startswith("mean_loss_first"))
    metrics = list(next(iter(summary.values()))["dev"])
    rows = [[name, *(f"{entry['dev'][m]:.4f}" for m in metrics), f"{entry[early]:.4f}",
             f"{entry['mean_loss_last_10_steps']:.4f}"] for name, entry in summary.items()]
    return "\n\n".join([
        "# Zero against learned initial state",
        f"Made by `{command}`.",
        "Both variants from the same config and seed, the same batches in the same order; "
        "only `learned_initial_state` differs. " + ", ".join(f"{k}={v}" for k, v in settings.items())
        + ". Dev figures are means over the seeds.",
        _table(["initial state", *(f"dev {m}" for m in metrics), early.replace("_", " "),
                "loss, last 10 steps"], rows),
        "![initial state](initial_state.png)",
    ])
