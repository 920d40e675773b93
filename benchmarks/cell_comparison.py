"""SimpleRNN against LSTM against GRU at equal parameter count, on each task.

    python benchmarks/cell_comparison.py --data_root ../shared/data          # about 20 min on 2 cores
    python benchmarks/cell_comparison.py --data_root ../shared/data --seeds 0 1 2

For each task the LSTM keeps its preset's size; the SimpleRNN and the GRU get
the hidden size that brings the whole model's parameter count closest to the
LSTM's (the embeddings and output layers stay as they are, so the cells trade
gates for width). Every cell then trains with the same settings and budget,
the task's preset otherwise:

- lm: PTB words, `ptb_small`'s 2 layers and 200-dim embeddings, for
  `--lm_epochs` epochs (one by default) on the training tokens (the first
  `--lm_tokens` if given), each cell with Zaremba's SGD at learning rate 1 and
  with Adam at 2e-3, reporting the better on dev (SGD sends a SimpleRNN to
  perplexity 38 million, the gradient diagnostics in the README; Adam leaves
  the GRU near the unigram perplexity);
- sst: `sst_bilstm` on the 6,920 SST-2 training sentences;
- ewt: `ewt_bilstm` (words only) on UD English EWT.

Reported: dev perplexity or accuracy (mean and spread over `--seeds`), the
parameter counts, the hidden sizes and the training seconds; the command of
each cell is the `rnn-zoo-train` line in the JSON. Outputs (under
--output_dir, default benchmarks/results/): cell_comparison.json, .md, .png.
Finished runs are read back, not retrained, so a stopped comparison
continues where it was (`--work_dir`, default runs/cell_comparison).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPOSITORY_ROOT), str(REPOSITORY_ROOT / "benchmarks")]

CELLS = ("simple_rnn", "gru", "lstm")
REFERENCE_CELL = "lstm"


def task_settings(arguments) -> dict:
    """{task: (preset, data folder under the data root, {variant: training overrides}, metric, data overrides)}.

    A task with several training variants reports, per cell, the variant with
    the best dev figure (each cell its own optimizer: the language model's
    SimpleRNN diverges with Zaremba's SGD, its GRU stalls with Adam).
    """
    lm_epochs = {"epochs": arguments.lm_epochs}
    return {
        "lm": ("ptb_small", "ptb", {"adam": {"optimizer": "adam", "learning_rate": 2e-3, **lm_epochs},
                                    "sgd": {"optimizer": "sgd", "learning_rate": 1.0, **lm_epochs}},
               "perplexity", {"max_train": arguments.lm_tokens}),
        "sst": ("sst_bilstm", "sst2", {"preset": {"epochs": arguments.sst_epochs}}, "accuracy", {}),
        "ewt": ("ewt_bilstm", "ud_english_ewt", {"preset": {"epochs": arguments.ewt_epochs}}, "accuracy", {}),
    }


def _config(preset, source, training, data_extra, cell, hidden, seed, output_dir):
    from training.run import resolve_config

    return resolve_config(preset=preset, cell=cell, model={} if hidden is None else {"hidden_dim": hidden},
                          training=training,
                          data={"source": source, **data_extra}, seed=seed, output_dir=str(output_dir))


def parameter_count(config: dict, prepared) -> int:
    import keras

    from training.run import build_model

    import numpy as np

    keras.utils.clear_session()
    model = build_model(config, prepared)
    model(np.ones((1, 3), np.int32))  # builds every weight (the word-level models take token ids)
    return int(model.count_params())


def matched_hidden(preset, source, training, data_extra, cell, target: int, prepared, start: int) -> tuple[int, int]:
    """The hidden size whose model has the parameter count closest to `target`, and that count."""
    def count(hidden):
        return parameter_count(_config(preset, source, training, data_extra, cell, hidden, 0, "unused"), prepared)

    low, high = 4, 8 * start
    while low < high:  # the count grows with the hidden size: the first size at or past the target
        middle = (low + high) // 2
        if count(middle) < target:
            low = middle + 1
        else:
            high = middle
    best = min((low - 1, low), key=lambda hidden: abs(count(hidden) - target))
    return best, count(best)


def run_cell(config: dict) -> dict:
    """Trains one cell (or reads its finished run) and returns its metrics."""
    from training.run import train

    finished = Path(config["output_dir"]) / "metrics.json"
    if finished.exists():
        return json.loads(finished.read_text())
    return train(config, verbose=0)


def command_of(preset, source, training, data_extra, cell, hidden, seed, output_dir) -> str:
    output_dir = Path(output_dir)
    if output_dir.is_absolute() and output_dir.is_relative_to(REPOSITORY_ROOT):
        output_dir = output_dir.relative_to(REPOSITORY_ROOT)
    parts = ["rnn-zoo-train", "--preset", preset, "--cell", cell, "--data", source, "--set",
             f"hidden_dim={hidden}", "--seed", str(seed), "--output_dir", str(output_dir)]
    for key, value in training.items():
        if value is None:
            continue
        parts += [f"--{key}", str(value)] if key in ("epochs", "optimizer", "learning_rate") else []
    if data_extra.get("max_train"):
        parts += ["--max_train", str(data_extra["max_train"])]
    return " ".join(parts)


def run(arguments) -> dict:
    from tqdm import tqdm

    from training.run import load_data
    from training_speed import machine_info

    results = {}
    jobs = []
    for task in arguments.tasks:
        preset, directory, variants, metric, data_extra = task_settings(arguments)[task]
        source = str(arguments.data_root / directory)
        first = next(iter(variants.values()))  # the sizes do not depend on the training settings
        base = _config(preset, source, first, data_extra, REFERENCE_CELL, None, 0, "unused")
        reference_hidden = base["model"]["hidden_dim"]
        prepared = load_data(base)
        target = parameter_count(_config(preset, source, first, data_extra, REFERENCE_CELL, reference_hidden,
                                         0, "unused"), prepared)
        cells = {}
        for cell in CELLS:
            hidden, count = ((reference_hidden, target) if cell == REFERENCE_CELL else
                             matched_hidden(preset, source, first, data_extra, cell, target, prepared,
                                            reference_hidden))
            cells[cell] = {"hidden_dim": hidden, "parameters": count, "variants": {name: [] for name in variants}}
            for variant, training in variants.items():
                for seed in arguments.seeds:
                    output_dir = arguments.work_dir / f"{task}_{cell}_{variant}_seed{seed}"
                    jobs.append((task, cell, variant, _config(preset, source, training, data_extra, cell, hidden,
                                                              seed, output_dir),
                                 command_of(preset, source, training, data_extra, cell, hidden, seed, output_dir)))
        results[task] = {"preset": preset, "metric": metric, "reference_parameters": target, "cells": cells,
                         "variants": variants}
    for task, cell, variant, config, command in tqdm(jobs, desc="cell comparison", unit="run"):
        started = time.time()
        metrics = run_cell(config)
        results[task]["cells"][cell]["variants"][variant].append({
            "seed": config["seed"], "dev": metrics["dev"][results[task]["metric"]],
            "train_seconds": metrics.get("train_seconds", round(time.time() - started, 1)), "command": command})
    for task in results.values():
        better = max if task["metric"] == "accuracy" else min
        for cell in task["cells"].values():
            means = {name: statistics.fmean(run_["dev"] for run_ in runs) for name, runs in cell["variants"].items()}
            cell["variant_dev_means"] = means
            cell["variant"] = better(means, key=means.get)  # chosen on dev, the figure reported
            cell["runs"] = cell["variants"][cell["variant"]]
            values = [run_["dev"] for run_ in cell["runs"]]
            cell["dev_mean"] = statistics.fmean(values)
            cell["dev_stdev"] = statistics.stdev(values) if len(values) > 1 else None
            cell["train_seconds_mean"] = statistics.fmean(run_["train_seconds"] for run_ in cell["runs"])
    return {"benchmark": "cell_comparison",
            "command": "python benchmarks/cell_comparison.py " + " ".join(sys.argv[1:]),
            "settings": {"seeds": arguments.seeds, "lm_tokens": arguments.lm_tokens,
                         "lm_epochs": arguments.lm_epochs, "sst_epochs": arguments.sst_epochs,
                         "ewt_epochs": arguments.ewt_epochs},
            "tasks": results, "machine": machine_info()}


def _describe(training: dict) -> str:
    """'adam 0.002', or 'preset' for a variant that only sets the budget."""
    if "optimizer" not in training:
        return "preset"
    return f"{training['optimizer']} {training['learning_rate']:g}"


def _figure(metric: str, value: float) -> str:
    return f"{100 * value:.1f}%" if metric == "accuracy" else f"{value:.1f}"


def write_outputs(result: dict, output_dir: Path) -> None:
    from plotting import bar_chart

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "cell_comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    settings = result["settings"]
    lines = ["# SimpleRNN, GRU and LSTM at equal parameter count", "",
             f"`{result['command'].strip()}`: each task's LSTM at its preset's size, the other cells widened "
             "to the same parameter count; same settings and budget for all (see the script's docstring). "
             f"Seeds {settings['seeds']}; dev figures, mean (± sd over seeds).", "",
             "| task | metric | cell | hidden | parameters | training | dev | vs LSTM | other training: dev | "
             "training s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task, entry in result["tasks"].items():
        metric = entry["metric"]
        reference = entry["cells"][REFERENCE_CELL]["dev_mean"]
        for cell, row in entry["cells"].items():
            spread = "" if row["dev_stdev"] is None else f" ± {_figure(metric, row['dev_stdev'])}"
            if metric == "accuracy":
                versus = f"{100 * (row['dev_mean'] - reference):+.1f} points"
            else:
                versus = f"{row['dev_mean'] / reference:.2f}x perplexity"
            others = ", ".join(f"{name}: {_figure(metric, value)}" for name, value in row["variant_dev_means"].items()
                               if name != row["variant"]) or "-"
            lines.append(f"| {task} ({entry['preset']}) | dev {metric} | {cell} | {row['hidden_dim']} | "
                         f"{row['parameters']:,} | {_describe(entry['variants'][row['variant']])} | "
                         f"{_figure(metric, row['dev_mean'])}{spread} | {versus} | {others} | "
                         f"{row['train_seconds_mean']:.0f} |")
    lines += ["", "Commands (one per cell, training and seed):", ""]
    for task, entry in result["tasks"].items():
        for cell, row in entry["cells"].items():
            lines += [f"- `{run_['command']}`" for runs in row["variants"].values() for run_ in runs]
    lines += ["", f"Machine: {json.dumps(result['machine'])}", ""]
    (output_dir / "cell_comparison.md").write_text("\n".join(lines))
    names, values = [], []
    for task, entry in result["tasks"].items():
        reference = entry["cells"][REFERENCE_CELL]["dev_mean"]
        for cell, row in entry["cells"].items():
            names.append(f"{task}: {cell}")
            # Error relative to the LSTM's: 1 is the LSTM, above 1 worse.
            if entry["metric"] == "accuracy":
                values.append((1 - row["dev_mean"]) / max(1e-9, 1 - reference))
            else:
                values.append(row["dev_mean"] / reference)
    bar_chart(output_dir / "cell_comparison.png", names, values, reference=1.0,
              xlabel="dev error (1 - accuracy) or perplexity, relative to the LSTM's (lower is better)",
              title="Equal parameter count", figsize=(7, 0.35 * len(names) + 1.2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", type=Path, required=True, help="the folder of ptb/, sst2/ and ud_english_ewt/")
    parser.add_argument("--tasks", nargs="+", choices=("lm", "sst", "ewt"), default=["lm", "sst", "ewt"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--lm_tokens", type=int, help="use only the first N PTB training tokens (default: all)")
    parser.add_argument("--lm_epochs", type=int, default=1)
    parser.add_argument("--sst_epochs", type=int, default=4)
    parser.add_argument("--ewt_epochs", type=int, default=4)
    parser.add_argument("--work_dir", type=Path, default=REPOSITORY_ROOT / "runs" / "cell_comparison")
    parser.add_argument("--output_dir", type=Path, default=REPOSITORY_ROOT / "benchmarks" / "results")
    arguments = parser.parse_args(argv)
    from training.quiet import quiet_tensorflow_logs

    quiet_tensorflow_logs()
    result = run(arguments)
    write_outputs(result, arguments.output_dir)
    print(f"wrote {arguments.output_dir / 'cell_comparison.json'}, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
