"""`rnn-zoo-generation-quality`: compare decoding methods on a corpus's dev split and write the report.

    rnn-zoo-generation-quality --saved_model saved_models/shakespeare_char_lstm/3 \\
        --data ../shared/data/tinyshakespeare --num_prompts 50 --max_new_tokens 200 \\
        --output benchmarks/results/generation_quality_shakespeare
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from typing import Sequence

from serving.generation import BackendError, GenerationError
from serving.generation.backends import add_backend_arguments, backend_from_arguments
from serving.generation.quality.comparison import (build_reference, compare_decoding, decoding_methods,
                                                   load_dev_tokens, model_level,
                                                   recorded_valid_start)
from serving.generation.quality.metrics import (DEFAULT_MIN_PHRASE_LENGTH, DEFAULT_MIN_REPEATS,
                                                DEFAULT_SELF_BLEU_MAX_TEXTS, DEFAULT_ZIPF_MAX_RANKS, MetricSettings)
from serving.generation.quality.report import markdown_table, write_report
from training.quiet import quiet_tensorflow_logs

PROG = "rnn-zoo-generation-quality"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compare decoding methods (greedy, beam, pure sampling, top-k, nucleus) by the statistics "
                    "of Holtzman et al. (2020): perplexity, repetition, distinct-n, Self-BLEU and Zipf "
                    "coefficient, next to the same statistics of human text from the corpus's dev split.",
        epilog=f"example: {PROG} --saved_model saved_models/shakespeare_char_lstm/3 "
               "--data ../shared/data/tinyshakespeare --num_prompts 50 --max_new_tokens 200 "
               "--output benchmarks/results/generation_quality_shakespeare")
    add_backend_arguments(parser)
    parser.add_argument("--data", required=True,
                        help="the corpus: a directory with ptb.valid.txt/valid.txt, or train.txt whose last "
                             "--valid_fraction is the dev split (tiny-shakespeare), as in training")
    parser.add_argument("--valid_fraction", type=float, default=0.1,
                        help="share of train.txt cut off as dev when there is no dev file (default: 0.1, "
                             "as the shipped models were trained)")
    parser.add_argument("--valid_start", metavar="REGEX",
                        help="dev starts at the first line matching REGEX after that cut, as in training "
                             "(default: what the --saved_model's training.json recorded, else the cut itself)")
    parser.add_argument("--num_prompts", type=int, default=50, help="prompts per method (default: 50)")
    parser.add_argument("--prompt_tokens", type=int,
                        help="tokens per prompt (default: 100 for character models, 20 for word models)")
    parser.add_argument("--max_new_tokens", type=int, default=200,
                        help="tokens generated per prompt, and the human continuation's length (default: 200)")
    parser.add_argument("--methods", default="greedy,beam,sampling,top_k,nucleus",
                        help="comma-separated subset of greedy,beam,sampling,top_k,nucleus (default: all)")
    parser.add_argument("--num_beams", type=int, default=4, help="beams for beam search (default: 4)")
    parser.add_argument("--top_k", type=int, help="k for top-k (default: 40 for word models, 10 for character)")
    parser.add_argument("--top_p", type=float, default=0.95, help="p for nucleus sampling (default: 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--batch_size", type=int, default=50, help="prompts per generate call (default: 50)")
    parser.add_argument("--min_phrase_length", type=int, default=DEFAULT_MIN_PHRASE_LENGTH,
                        help=f"shortest looping phrase, in tokens (default: {DEFAULT_MIN_PHRASE_LENGTH})")
    parser.add_argument("--min_repeats", type=int, default=DEFAULT_MIN_REPEATS,
                        help=f"copies of the phrase at the end that make a loop (default: {DEFAULT_MIN_REPEATS})")
    parser.add_argument("--self_bleu_max_texts", type=int, default=DEFAULT_SELF_BLEU_MAX_TEXTS,
                        help=f"texts used for Self-BLEU (default: {DEFAULT_SELF_BLEU_MAX_TEXTS})")
    parser.add_argument("--zipf_max_ranks", type=int, default=DEFAULT_ZIPF_MAX_RANKS,
                        help=f"ranks in the Zipf fit (default: {DEFAULT_ZIPF_MAX_RANKS})")
    parser.add_argument("--output", help="write <output>.json and <output>.md (default: print only)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="log progress")
    return parser


_METHOD_NAMES = ("greedy", "beam", "sampling", "top_k", "nucleus")
# Test files are never read here (see ../shared/data/README): human text comes from dev only.
_TEST_FILES = ("ptb.test.txt", "test.txt")


def check_arguments(args: argparse.Namespace) -> list[str]:
    """Raises ValueError for impossible numbers or a missing corpus; returns the method names.

    Runs before the model is loaded, so a typo fails at once.
    """
    for name, low in (("num_prompts", 1), ("max_new_tokens", 1), ("num_beams", 2), ("batch_size", 1),
                      ("seed", 0), ("min_phrase_length", 1), ("min_repeats", 2), ("self_bleu_max_texts", 2),
                      ("zipf_max_ranks", 2), ("prompt_tokens", 1), ("top_k", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise ValueError(f"--{name} must be >= {low}, got {value}")
    if not (math.isfinite(args.top_p) and 0.0 < args.top_p <= 1.0):
        raise ValueError(f"--top_p must be in (0, 1], got {args.top_p}")
    if not 0.0 <= args.valid_fraction < 1.0:
        raise ValueError(f"--valid_fraction must be in [0, 1), got {args.valid_fraction}")
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = sorted(set(methods) - set(_METHOD_NAMES))
    if unknown or not methods:
        raise ValueError(f"unknown --methods {unknown or args.methods!r}; choose from {', '.join(_METHOD_NAMES)}")
    if not os.path.exists(os.path.expanduser(args.data)):
        raise ValueError(f"--data {args.data}: no such file or directory")
    if os.path.basename(os.path.normpath(args.data)) in _TEST_FILES:
        raise ValueError(f"--data {args.data} is a test split, which is held back; give the corpus directory "
                         "or its dev file")
    return methods


def _model_name(args: argparse.Namespace) -> str:
    if args.saved_model:
        return os.path.normpath(args.saved_model)
    return f"{args.model} at {args.server}"


def run(args: argparse.Namespace, methods: list[str]) -> dict:
    """Loads the model and the dev split, runs the comparison and returns the report."""
    backend = backend_from_arguments(args)
    level = model_level(backend)
    prompt_tokens = args.prompt_tokens or (100 if level == "char" else 20)
    valid_start = args.valid_start if args.valid_start is not None else recorded_valid_start(args.saved_model)
    tokens, source = load_dev_tokens(args.data, level, args.valid_fraction, valid_start)
    reference = build_reference(backend, tokens, level, args.num_prompts, prompt_tokens, args.max_new_tokens,
                                source)
    chosen = {name: options for name, options in
              decoding_methods(level, args.top_k, args.top_p, args.num_beams).items() if name in methods}
    settings = MetricSettings(args.min_phrase_length, args.min_repeats, args.self_bleu_max_texts,
                              args.zipf_max_ranks)
    rows = compare_decoding(backend, reference, chosen, max_new_tokens=args.max_new_tokens, seed=args.seed,
                            batch_size=args.batch_size, settings=settings, show_progress=not args.no_progress)
    setup = {"model": _model_name(args), "backend": "in-process SavedModel" if args.saved_model else "gRPC",
             "level": level, "data": os.fspath(args.data), "data_source": source,
             "num_prompts": args.num_prompts, "prompt_tokens": prompt_tokens,
             "max_new_tokens": args.max_new_tokens, "seed": args.seed, "prompt_starts": reference.starts,
             "metrics": dataclasses.asdict(settings),
             "metric_units": {"repetition, perplexity": "model tokens",
                              "distinct-n, Self-BLEU, Zipf": "words" if level == "word" else
                              "whitespace-split words of the generated characters"}}
    return {"setup": setup, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        methods = check_arguments(args)
        quiet_tensorflow_logs()  # before the backend imports TensorFlow
        report = run(args, methods)
    except (ValueError, OSError, BackendError, GenerationError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    if args.output:
        for path in write_report(report, args.output):
            print(f"wrote {path}", file=sys.stderr)
    print(markdown_table(report["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
