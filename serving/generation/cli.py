"""`rnn-zoo-generate`: stream generated text from a zoo language model, or score texts.

    rnn-zoo-generate --model shakespeare_char_lstm "ROMEO:" --max_new_tokens 200 --top_p 0.95 --seed 1
    rnn-zoo-generate --saved_model saved_models/shakespeare_char_lstm/3 "JULIET:"    # no server

The arguments are parsed before TensorFlow is imported (a backend imports it
when it is made), so `--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from serving.generation.backends import BackendError, add_backend_arguments, backend_from_arguments
from serving.generation.loop import generate, stream_generate
from serving.generation.options import GenerationError, GenerationOptions, GenerationResult
from serving.generation.scoring import score
from training.quiet import quiet_tensorflow_logs

PROG = "rnn-zoo-generate"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate text from a zoo language model over gRPC (or in this process), "
                    "streaming tokens as they come.",
        epilog=f'example: {PROG} --model shakespeare_char_lstm "ROMEO:" '
               "--max_new_tokens 200 --top_p 0.95 --seed 1")
    parser.add_argument("prompts", nargs="*", help="prompts (default: one empty prompt)")
    parser.add_argument("--prompts_file", help="a file with one prompt per line: batch mode, with a progress bar")
    parser.add_argument("--batch_size", type=int, default=32, help="prompts per generate call in batch mode")
    add_backend_arguments(parser)
    defaults = GenerationOptions()
    for name in ("max_new_tokens", "min_new_tokens", "top_k", "no_repeat_ngram_size", "num_beams",
                 "num_return_sequences", "seed"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name),
                            help=f"as in Hugging Face generate() (default: {getattr(defaults, name)})")
    for name in ("temperature", "top_p", "min_p", "typical_p", "repetition_penalty", "length_penalty"):
        parser.add_argument(f"--{name}", type=float, default=getattr(defaults, name),
                            help=f"as in Hugging Face generate() (default: {getattr(defaults, name)})")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--do_sample", action="store_true", default=None, help="sample (default unless beams)")
    sampling.add_argument("--greedy", dest="do_sample", action="store_false", default=None,
                          help="the most likely token at each step (do_sample=False)")
    parser.add_argument("--early_stopping", choices=["true", "false", "never"], default="false",
                        help="beam search stopping rule (default: false, Hugging Face's heuristic)")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--stop_token_id", type=int, action="append", default=[], help="stop token id (repeatable)")
    parser.add_argument("--ignore_end_token", action="store_true", help="do not stop at the model's <eos>")
    parser.add_argument("--logprobs", action="store_true", help="print each row with its token log-probabilities "
                                                                "as a JSON line")
    parser.add_argument("--score", action="store_true",
                        help="score the prompts instead of generating: log-probability, tokens scored and "
                             "perplexity of each, as JSON lines")
    parser.add_argument("--verbose", action="store_true", help="log progress")
    return parser


def _options_from_arguments(args: argparse.Namespace) -> dict:
    options = {name: getattr(args, name) for name in (
        "max_new_tokens", "min_new_tokens", "top_k", "no_repeat_ngram_size", "num_beams", "num_return_sequences",
        "seed", "temperature", "top_p", "min_p", "typical_p", "repetition_penalty", "length_penalty", "do_sample")}
    options["early_stopping"] = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    options["stop"] = list(args.stop) + list(args.stop_token_id)
    options["stop_at_end_token"] = not args.ignore_end_token
    options["return_logprobs"] = args.logprobs
    return options


class _RowPrinter:
    """Streams several rows to one terminal: each line is prefixed with its row.

    A row's text is printed a line at a time (or every ``width`` characters
    when it has no newline), so rows interleave readably.
    """

    def __init__(self, out, width: int = 72):
        self.out, self.width = out, width
        self.pending: dict[int, str] = {}

    def add(self, row: int, piece: str) -> None:
        text = self.pending.get(row, "") + piece
        while "\n" in text or len(text) >= self.width:
            cut = text.index("\n") + 1 if "\n" in text[:self.width] else self.width
            self.out.write(f"[{row}] {text[:cut].rstrip(chr(10))}\n")
            text = text[cut:]
        self.pending[row] = text
        self.out.flush()

    def finish(self) -> None:
        for row, text in sorted(self.pending.items()):
            if text:
                self.out.write(f"[{row}] {text}\n")
        self.pending.clear()


def _print_logprobs(result: GenerationResult, first_row: int = 0) -> None:
    for index, (text, tokens, logprobs) in enumerate(zip(result.full_texts, result.token_ids, result.logprobs)):
        print(json.dumps({"row": first_row + index, "text": text, "token_ids": tokens, "logprobs": logprobs}))


def _run_interactive(backend, prompts: list[str], options: dict) -> None:
    """Streams the rows of a few prompts to stdout as tokens come."""
    results: list[GenerationResult] = []
    stream = stream_generate(backend, prompts, on_result=results.append, **options)
    if len(prompts) * options["num_return_sequences"] == 1:
        print(prompts[0], end="", flush=True)
        for _, piece in stream:
            print(piece, end="", flush=True)
        print()
    else:
        printer = _RowPrinter(sys.stdout)
        per_prompt = options["num_return_sequences"]
        started = set()
        for row, piece in stream:
            if row not in started:  # each row starts with its prompt
                started.add(row)
                piece = prompts[row // per_prompt] + piece
            printer.add(row, piece)
        printer.finish()
    if options["return_logprobs"]:
        _print_logprobs(results[0])


def _run_batches(backend, prompts: list[str], options: dict, batch_size: int) -> None:
    """Generates for many prompts, a batch at a time, with a progress bar on stderr."""
    from tqdm import tqdm

    row = 0
    with tqdm(total=len(prompts), desc="prompts", unit="prompt", file=sys.stderr) as progress:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            result = generate(backend, batch, **options)
            if options["return_logprobs"]:
                _print_logprobs(result, row)
            else:
                for offset, text in enumerate(result.full_texts):
                    print(f"--- [{row + offset}] ---\n{text}")
            row += len(result.texts)
            progress.update(len(batch))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    prompts = list(args.prompts)
    if args.prompts_file:
        prompts += Path(args.prompts_file).read_text(encoding="utf-8").splitlines()
    prompts = prompts or [""]
    options = _options_from_arguments(args)
    try:
        GenerationOptions(**options).check()
        if args.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
        quiet_tensorflow_logs()  # before a backend imports TensorFlow
        backend = backend_from_arguments(args)
        if args.score:
            for text, scored in zip(prompts, score(backend, prompts)):
                print(json.dumps({"text": text, **scored}))
        elif args.prompts_file:
            _run_batches(backend, prompts, options, args.batch_size)
        else:
            _run_interactive(backend, prompts, options)
    except (ValueError, OSError, BackendError, GenerationError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
