"""Evaluate a trained run on a split: `rnn-zoo-evaluate --help`.

    rnn-zoo-evaluate --run runs/ptb_small                 # perplexity on dev
    rnn-zoo-evaluate --run runs/ewt_bilstm --per_tag      # accuracy per UPOS tag
    rnn-zoo-evaluate --run runs/sst_lstm --data glue/sst2 --split dev
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from training.cli import quiet_tensorflow_logs
from training.errors import DataError


def evaluate_run(run_dir, *, source: str | None = None, split: str = "dev",
                 batch_size: int | None = None, num_steps: int | None = None) -> dict:
    """Metrics of the run's saved model on `split` of `source` (default: the run's data).

    Raises:
        DataError: the run directory or its files are missing, or the data is bad.
    """
    quiet_tensorflow_logs()
    import keras

    import zoo  # noqa: F401  (registers the zoo's classes for load_model)
    from training.datasets import load_split
    from training.run import PreparedData, evaluate, uses_characters
    from training.vocab import LabelVocabulary, Vocabulary

    run_dir = Path(run_dir)
    for name in ("config.json", "vocabulary.json", "model.keras"):
        if not (run_dir / name).exists():
            raise DataError(f"{run_dir / name}: no such file (is {run_dir} a finished training run?)")
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    if batch_size:
        config["training"]["batch_size"] = batch_size
    if num_steps:
        config["training"]["num_steps"] = num_steps
    data = config["data"]
    split_data = load_split(config["task"], source or data.get("dev_source") or data["source"], split,
                            level=data["level"], tag_column=data["tag_column"],
                            valid_fraction=data["valid_fraction"], data_dir=data.get("data_dir"))
    labels = LabelVocabulary.load(run_dir / "labels.json") if (run_dir / "labels.json").exists() else None
    char_vocabulary = None
    if uses_characters(config):
        char_vocabulary = Vocabulary.load(run_dir / "char_vocabulary.json")
    prepared = PreparedData(Vocabulary.load(run_dir / "vocabulary.json"), labels, None, split_data,
                            char_vocabulary)
    model = keras.saving.load_model(run_dir / "model.keras")
    return evaluate(model, config, prepared, split_data)


def format_per_tag(per_tag: dict) -> str:
    """A plain-text table: tag, count, accuracy, worst first."""
    lines = [f"{'tag':8s} {'count':>7s} {'accuracy':>9s}"]
    for tag, row in sorted(per_tag.items(), key=lambda item: item[1]["accuracy"]):
        lines.append(f"{tag:8s} {row['count']:7d} {row['accuracy']:9.4f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnn-zoo-evaluate",
        description="Evaluate a trained run: perplexity (language models), accuracy "
                    "(classifiers, taggers) and per-tag accuracy (taggers).",
    )
    parser.add_argument("--run", required=True, help="a run directory written by rnn-zoo-train")
    parser.add_argument("--data", dest="source", help="data source (default: the run's own)")
    parser.add_argument("--split", default="dev", help="split to evaluate (default dev)")
    parser.add_argument("--batch_size", type=int, help="streams / batch size (default: the run's)")
    parser.add_argument("--num_steps", type=int, help="window for language models (default: the run's)")
    parser.add_argument("--per_tag", action="store_true", help="print the per-tag accuracy table")
    parser.add_argument("--output", help="also write the metrics to this JSON file")
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        metrics = evaluate_run(args.run, source=args.source, split=args.split,
                               batch_size=args.batch_size, num_steps=args.num_steps)
    except (DataError, ValueError) as error:
        print(f"rnn-zoo-evaluate: error: {error}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if args.per_tag and "per_tag" in metrics:
        print(format_per_tag(metrics["per_tag"]))
    print(json.dumps({k: v for k, v in metrics.items() if k != "per_tag"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
