"""Train a zoo model on a corpus: `rnn-zoo-train --help`.

    rnn-zoo-train --preset ptb_small --data ../shared/data/ptb
    rnn-zoo-train --preset sst_bilstm --data glue/sst2 --epochs 3
    rnn-zoo-train --preset sst_lm --data ../shared/data/sst2 --output_dir runs/sst_lm
    rnn-zoo-train --preset sst_bilstm --data glue/sst2 --init_from runs/sst_lm
    rnn-zoo-train --task tagger --cell gru --set bidirectional=true --set hidden_dim=64 \\
        --data ../shared/data/ud_english_ewt --output_dir runs/ewt_gru

Running the same command again after an interruption resumes from the last
finished epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from training.cli import parse_assignment, quiet_tensorflow_logs, zoo_catalog
from training.quiet import prefer_onednn

# Keys of the data options the command line sets (training.run.DATA_KEYS, less
# those only a preset or the defaults give).
_DATA_ARGUMENTS = ("source", "dev_source", "level", "tag_column", "valid_start", "data_dir", "download",
                   "max_train", "max_dev", "vocabulary_min_count", "vocabulary_max_size", "reverse")
_TRAINING_ARGUMENTS = ("epochs", "batch_size", "num_steps", "optimizer", "learning_rate", "clip_norm",
                       "early_stopping_patience", "precision", "word_dropout", "init_from",
                       "init_layers")
_OPTIMIZERS = ("adagrad", "adam", "rmsprop", "sgd")  # training.run.OPTIMIZERS (tested to match)
_STRATEGIES = ("default", "mirrored", "multi_worker")  # training.distribution.STRATEGIES (tested)
_PRECISIONS = ("float32", "mixed_bfloat16", "auto")  # training.precision.PRECISIONS (tested)


def build_parser() -> argparse.ArgumentParser:
    catalog = zoo_catalog()
    parser = argparse.ArgumentParser(
        prog="rnn-zoo-train",
        description="Train a recurrent model (language model, SST classifier, POS tagger) "
                    "with Keras, evaluate it on dev, and write a run directory.",
        epilog="Presets: " + ", ".join(catalog.list_presets()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to train")
    what.add_argument("--preset", help="a named configuration (see --list_presets)")
    what.add_argument("--task", choices=catalog.TASKS, help="the task, when not using a preset")
    what.add_argument("--cell", choices=catalog.CELL_TYPES, help="recurrent cell (overrides the preset)")
    what.add_argument("--set", dest="model_options", action="append", default=[], type=parse_assignment,
                      metavar="KEY=VALUE", help="a model option, e.g. hidden_dim=64, "
                      "bidirectional=true, gates=input+output (repeatable)")
    what.add_argument("--list_presets", action="store_true", help="list presets and exit")

    data = parser.add_argument_group("data")
    data.add_argument("--data", dest="source", help="a local file or directory in the task's "
                      "standard format, or a tensorflow-datasets name (glue/sst2, "
                      "universal_dependencies/en_ewt, tiny_shakespeare)")
    data.add_argument("--dev_data", dest="dev_source", help="dev split source, if not found beside --data")
    data.add_argument("--level", choices=("word", "char"), help="language-model tokens")
    data.add_argument("--tag_column", choices=("upos", "xpos"), help="CoNLL-U tag column")
    data.add_argument("--valid_start", metavar="REGEX",
                      help="language-model text without a dev file: dev starts at the first line "
                      "matching REGEX after the last 10%% mark ('' cuts at the mark itself)")
    data.add_argument("--data_dir", help="tensorflow-datasets data directory")
    data.add_argument("--download", action="store_true", default=None,
                      help="let tensorflow-datasets download the corpus if it is not prepared yet")
    data.add_argument("--max_train", type=int, help="use only the first N train sentences (tokens for LMs)")
    data.add_argument("--max_dev", type=int, help="use only the first N dev sentences (tokens for LMs)")
    data.add_argument("--vocabulary_max_size", type=int, help="keep the N most frequent tokens")
    data.add_argument("--vocabulary_min_count", type=int, help="drop tokens seen fewer times")
    data.add_argument("--reverse", action="store_true", default=None,
                      help="language models: read the text right to left (a backward model "
                      "for --init_from)")

    fit = parser.add_argument_group("training (overrides the preset)")
    fit.add_argument("--epochs", type=int)
    fit.add_argument("--batch_size", type=int)
    fit.add_argument("--num_steps", type=int, help="truncated-BPTT window (language models)")
    fit.add_argument("--optimizer", choices=_OPTIMIZERS)
    fit.add_argument("--learning_rate", type=float)
    fit.add_argument("--clip_norm", type=float, help="clip gradients to this global norm")
    fit.add_argument("--early_stopping_patience", type=int)
    fit.add_argument("--word_dropout", type=float, metavar="ALPHA",
                     help="classifiers and taggers: a train word seen n times becomes <unk> with "
                     "probability ALPHA/(n+ALPHA), anew each epoch (0: off)")
    fit.add_argument("--init_from", nargs="+", metavar="LM_RUN",
                     help="classifiers and taggers: start the word vectors and recurrent layers "
                     "from a word language-model run (Dai & Le 2015); a second run, trained with "
                     "--reverse, starts a bidirectional model's backward direction")
    fit.add_argument("--init_layers", type=int, metavar="N",
                     help="with --init_from: copy only the N lowest recurrent layers (0: the word "
                     "vectors only; default: every layer that fits)")
    fit.add_argument("--precision", choices=_PRECISIONS,
                     help="arithmetic: float32, mixed_bfloat16 (bfloat16 products, float32 weights, "
                     "loss and carried state), or auto (bfloat16 where the CPU has AVX512-BF16 or AMX)")
    parser.add_argument("--strategy", choices=_STRATEGIES, default="default",
                        help="tf.distribute strategy: mirrored uses every local GPU, multi_worker "
                        "the cluster in TF_CONFIG (start the same command on every worker)")
    parser.add_argument("--output_dir", help="run directory (default runs/<preset or task_cell>); "
                        "the same command into it again resumes the run")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what --output_dir holds, even another run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", choices=("auto", "0", "1", "2"), default="auto",
                        help="Keras progress output: 1 progress bar, 2 one line per epoch")
    parser.add_argument("--dry_run", action="store_true", help="print the resolved config and exit")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        catalog = zoo_catalog()
        for name in catalog.list_presets():
            preset = catalog.get_preset(name)
            print(f"{name:24s} {preset['task']:15s} {preset['description']}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prefer_onednn()  # training's matrix products, on CPUs where TensorFlow leaves oneDNN off
    quiet_tensorflow_logs()
    from training.distribution import make_strategy
    from training.errors import DataError
    from training.run import resolve_config, train

    try:
        # First: a multi-worker strategy must exist before TensorFlow runs any op.
        strategy = make_strategy(args.strategy) if not args.dry_run else None
        config = resolve_config(
            preset=args.preset,
            task=args.task,
            cell=args.cell,
            model=dict(args.model_options),
            training={key: getattr(args, key) for key in _TRAINING_ARGUMENTS},
            data={key: getattr(args, key) for key in _DATA_ARGUMENTS},
            output_dir=args.output_dir,
            seed=args.seed,
        )
        if args.dry_run:
            print(json.dumps(config, indent=2, sort_keys=True))
            return 0
        verbose = args.verbose if args.verbose == "auto" else int(args.verbose)
        metrics = train(config, verbose=verbose, overwrite=args.overwrite, strategy=strategy)
    except (DataError, ValueError) as error:
        print(f"rnn-zoo-train: error: {error}", file=sys.stderr)
        return 2
    dev = {k: v for k, v in metrics["dev"].items() if k != "per_tag"}
    print(json.dumps({"run": config["output_dir"], "dev": dev}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
