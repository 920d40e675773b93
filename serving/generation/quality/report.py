"""The report of a comparison: a Markdown table and page, strict JSON, and a plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


_COLUMNS = (("perplexity", "perplexity", "{:.2f}"), ("repetition", "repetition %", "{:.0%}"),
            ("distinct_1", "distinct-1", "{:.3f}"), ("distinct_2", "distinct-2", "{:.3f}"),
            ("distinct_3", "distinct-3", "{:.3f}"), ("self_bleu", "Self-BLEU-4", "{:.3f}"),
            ("zipf", "Zipf", "{:.2f}"))


def _cell(value: float | None, template: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return template.format(value).rstrip("%")


def markdown_table(rows: dict[str, dict]) -> str:
    """The metrics side by side, one row per method and one for the human text."""
    lines = ["| text | " + " | ".join(title for _, title, _ in _COLUMNS) + " |",
             "|---|" + "---:|" * len(_COLUMNS)]
    for row in rows.values():
        cells = [_cell(row[key], template) for key, _, template in _COLUMNS]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    """The whole Markdown report: what was run, the table, how to read it, examples."""
    setup = report["setup"]
    unit = "characters" if setup["level"] == "char" else "words"
    words = "words" if setup["level"] == "word" else "whitespace-separated words of the text"
    lines = [
        f"# Generation quality: `{setup['model']}`",
        "",
        f"{setup['num_prompts']} prompts of {setup['prompt_tokens']} {unit}, each the start of a line of the dev "
        f"split ({setup['data_source']}); every method continues each prompt by {setup['max_new_tokens']} "
        f"{unit} (the end token does not stop it), seed {setup['seed']}. The human row is what follows each "
        f"prompt in the corpus, {setup['max_new_tokens']} {unit} too.",
        "",
        markdown_table(report["rows"]),
        "",
        "How each column is measured (after Holtzman et al., 2020):",
        "",
        f"- perplexity: the model's perplexity per {unit[:-1]} of the continuations, with the prompt as context.",
        f"- repetition: the share of continuations that end in a loop -- a phrase of at least "
        f"{setup['metrics']['min_phrase_length']} {unit} repeated at least {setup['metrics']['min_repeats']} "
        "times back to back at the very end (counting full copies of any rotation of the phrase, since the "
        f"text stops mid-phrase); loops longer than 1/{setup['metrics']['min_repeats']} of the continuation "
        "cannot be seen, so the rate grows with the length.",
        f"- distinct-n: unique n-grams / all n-grams of the {words}, over all continuations.",
        f"- Self-BLEU-4: BLEU-4 (uniform weights, no smoothing) of each continuation against all the others, "
        f"averaged, over the first {setup['metrics']['self_bleu_max_texts']} continuations; higher means "
        "less diverse. Without smoothing a text that shares no 4-gram with any other scores 0, so short, "
        "diverse texts average near 0.",
        f"- Zipf: minus the slope of log count against log rank of the {words}, least squares over at most the "
        f"{setup['metrics']['zipf_max_ranks']} most frequent types. Samples this small have a long tail of "
        "words seen once, which flattens the fit: compare rows with each other, not with published values.",
        "",
        "First continuation of each method:",
        "",
    ]
    for row in report["rows"].values():
        example = row["examples"][0] if row["examples"] else {"continuation": ""}
        lines.append(f"- {row['label']}: `{_one_line(example['continuation'])}`")
    return "\n".join(lines) + "\n"


def _one_line(text: str, width: int = 160) -> str:
    """A text on one line for Markdown: newlines shown as ⏎, backticks removed, cut to ``width``."""
    text = text.replace("\n", "⏎").replace("`", "'")
    return text if len(text) <= width else text[:width - 1] + "…"


def _json_safe(value):
    """The report with NaN (an undefined metric) as null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_report(report: dict, output: str | os.PathLike) -> tuple[Path, Path, Path]:
    """Writes ``<output>.json`` (undefined metrics as null), ``<output>.md`` and ``<output>.png``.

    Returns:
        The three paths.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path, plot_path = (Path(f"{output}.{suffix}") for suffix in ("json", "md", "png"))
    json_path.write_text(json.dumps(_json_safe(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                         encoding="utf-8")
    markdown_path.write_text(markdown_report(report), encoding="utf-8")
    plot_report(report, plot_path)
    return json_path, markdown_path, plot_path


# The panels of the plot: (metric, title, log scale).
_PLOTTED = (("perplexity", "perplexity (log)", True), ("repetition", "ends in a loop", False),
            ("distinct_2", "distinct-2", False), ("self_bleu", "Self-BLEU-4", False), ("zipf", "Zipf coefficient", False))


def plot_report(report: dict, path: str | os.PathLike) -> None:
    """One panel per metric, a bar per method, the human text's value as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    methods = [name for name in rows if name != "human"]
    human = rows.get("human")
    figure, axes = plt.subplots(1, len(_PLOTTED), figsize=(3.0 * len(_PLOTTED), 3.2), sharey=True)
    for axis, (key, title, log_scale) in zip(axes, _PLOTTED):
        values = [rows[name][key] for name in methods]
        values = [float("nan") if value is None else value for value in values]
        axis.barh(range(len(methods)), values, color="tab:blue")
        if human is not None and human.get(key) is not None and not math.isnan(human[key]):
            axis.axvline(human[key], color="tab:orange", linestyle="--", label="human (dev split)")
        if log_scale:
            axis.set_xscale("log")
        axis.set_title(title)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(methods)), [rows[name]["label"] for name in methods])
    axes[0].invert_yaxis()
    if human is not None:
        axes[-1].legend(loc="lower right", fontsize="small")
    figure.suptitle(f"generation quality: {report['setup']['model']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
