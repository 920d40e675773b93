"""`rnn-zoo-export`: exports a training run; prints the version directory.

    rnn-zoo-export --run runs/ptb_small --model_name ptb_small

The arguments are parsed before TensorFlow, Keras and the zoo are imported,
so `--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from training.quiet import quiet_tensorflow_logs

PROG = "rnn-zoo-export"


def build_parser() -> argparse.ArgumentParser:
    """The command line; building it imports nothing heavy."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export a trained zoo model (a training run directory) as a TensorFlow "
                    "SavedModel in TensorFlow Serving's <base>/<name>/<version>/ layout, "
                    "with the tokenizer inside.",
    )
    parser.add_argument("--run", required=True,
                        help="training run directory holding model.keras, vocabulary.json, "
                             "config.json (and labels.json, metrics.json)")
    parser.add_argument("--model_name", required=True,
                        help="the name clients ask the server for; becomes a directory")
    parser.add_argument("--export_base", default="saved_models",
                        help="model base directory the server watches (default: saved_models)")
    parser.add_argument("--version", type=int, default=None,
                        help="version number (default: one more than the largest there)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the version if it exists instead of refusing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_tensorflow_logs()
    from serving.export.writer import export_run  # imports TensorFlow, Keras and the zoo

    try:
        path = export_run(args.run, export_base=args.export_base, model_name=args.model_name,
                          version=args.version, overwrite=args.overwrite)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
