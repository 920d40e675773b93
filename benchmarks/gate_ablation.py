"""LSTM gate ablation on SST-2: the eight `sst_gates_*` presets side by side.

Reproduces the setup of the gate-ablation table quoted in shared/data/README.md
(25-dim vectors, 50 hidden, final state, AdaGrad, batch 10, 10 epochs, early
stopping on dev, peepholes) with the zoo's `gated_lstm` cell, and writes the
dev accuracies next to the published test accuracies:

    python benchmarks/gate_ablation.py --data ../shared/data/sst2 --seeds 0 1 2

Outputs (under --output_dir, default benchmarks/results/): gate_ablation.json,
gate_ablation.md and gate_ablation.png. Dev and test sets differ, so compare
the ordering of the variants, not the third digit.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

from tqdm import tqdm

# Test accuracy (%) from the table in shared/data/README.md.
PUBLISHED = {
    "none": 80.6, "output": 81.9, "input": 84.4, "input_output": 84.6,
    "forget": 82.1, "input_forget": 84.1, "forget_output": 82.6, "all": 85.3,
}


def run_variant(variant: str, data: str, seed: int, epochs: int, work_dir: Path,
                dev_data: str | None = None) -> float:
    """Trains one preset with one seed and returns its best dev accuracy (%).

    A run that already finished (its metrics.json exists) is read, not
    retrained, so an interrupted ablation picks up where it stopped; a run
    interrupted mid-way resumes from its last epoch (BackupAndRestore).
    """
    from training.run import resolve_config, train

    finished = work_dir / f"{variant}_seed{seed}" / "metrics.json"
    if finished.exists():
        return 100.0 * json.loads(finished.read_text())["dev"]["accuracy"]
    data_options = {"source": data, **({"dev_source": dev_data} if dev_data else {})}
    config = resolve_config(preset=f"sst_gates_{variant}", data=data_options,
                            training={"epochs": epochs}, seed=seed,
                            output_dir=str(work_dir / f"{variant}_seed{seed}"))
    metrics = train(config, verbose=0)
    return 100.0 * metrics["dev"]["accuracy"]


def write_report(results: dict, output_dir: Path) -> None:
    """JSON, a markdown table and a bar chart of dev (ours) vs test (published)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "gate_ablation.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| gates | dev accuracy (mean ± sd over seeds) | published test accuracy |",
             "|---|---|---|"]
    for variant, row in results["variants"].items():
        spread = f" ± {row['stdev']:.1f}" if row["stdev"] is not None else ""
        lines.append(f"| {variant} | {row['mean']:.1f}{spread} | {PUBLISHED[variant]:.1f} |")
    (output_dir / "gate_ablation.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["variants"])
    ours = [results["variants"][n]["mean"] for n in names]
    figure, axis = plt.subplots(figsize=(8, 3.6))
    positions = range(len(names))
    axis.bar([p - 0.2 for p in positions], ours, width=0.4, label="zoo, SST-2 dev")
    axis.bar([p + 0.2 for p in positions], [PUBLISHED[n] for n in names], width=0.4,
             label="published, SST-2 test")
    axis.set_xticks(list(positions), [n.replace("_", "+") for n in names], rotation=20)
    axis.set_ylim(50, 90)
    axis.set_ylabel("accuracy (%)")
    axis.set_title("LSTM gate ablation (gated_lstm cell, peepholes)")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(output_dir / "gate_ablation.png", dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="SST-2 source (directory or tfds name)")
    parser.add_argument("--dev_data", help="dev file, when --data is a single train file (e.g. glue_train.tsv)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--variants", nargs="+", default=list(PUBLISHED), choices=list(PUBLISHED))
    parser.add_argument("--output_dir", default="benchmarks/results")
    parser.add_argument("--work_dir", default="runs/gate_ablation", help="where the runs go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    accuracies: dict[str, list[float]] = {}
    jobs = [(variant, seed) for variant in args.variants for seed in args.seeds]
    for variant, seed in tqdm(jobs, desc="gate ablation"):
        accuracies.setdefault(variant, []).append(
            run_variant(variant, args.data, seed, args.epochs, Path(args.work_dir), args.dev_data))
    results = {
        "setup": {"data": args.data, "dev_data": args.dev_data, "seeds": args.seeds, "epochs": args.epochs, "split": "dev"},
        "variants": {
            variant: {"accuracies": values, "mean": statistics.mean(values),
                      "stdev": statistics.stdev(values) if len(values) > 1 else None}
            for variant, values in accuracies.items()
        },
    }
    write_report(results, Path(args.output_dir))
    print((Path(args.output_dir) / "gate_ablation.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
