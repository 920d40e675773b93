"""Generation speed: tokens per second over gRPC and in process, one prompt and a batch, against the naive loop.

Runs the same generation loop (`serving.generation`) on each shipped language
model, every way side by side in one process so the machine's noise hits
them alike:

    in-process (SavedModel)          1 prompt, --batch_size prompts   (the model's `sample` signature
                                                                       draws each token)
    in-process, logits               1 prompt, --batch_size prompts   (`step` returns the logits and
                                                                       the client draws)
    gRPC                             1 prompt, --batch_size prompts   (a real server process with
                                                                       --enable_serialization_as_tensor_content;
                                                                       the server draws with `sample`)
    gRPC, logits                     1 prompt, --batch_size prompts   (the same server, `step`: a row of
                                                                       logits comes back each step)
    gRPC, logits, typed fields       1 prompt, --batch_size prompts   (a second server, TF Serving's default
                                                                       response encoding)
    naive, in-process                1 prompt                         (no state carried: the whole prefix
                                                                       is fed again at every step)

A model exported before the `sample` signature (serving.export.upgrade adds
it) runs the drawing jobs with `step`, as the logits jobs do.

Each configuration generates `--max_new_tokens` tokens per row with greedy
decoding and the end token ignored, so every row runs to the full length and
all do the same work. Each runs once to warm up (a short generation), then
the configurations take turns for `--repeats` rounds; the median is reported
with its min-max, with the ratios issue 11 sets targets for: gRPC against
in-process (>= 0.7 at 1 and at 64 prompts), the carried state against the
naive loop (>= 20x at 500 tokens), and 64 prompts against one (>= 30x the
tokens per second).

    python benchmarks/generation_speed.py                        # both models, 1 and 64 prompts, 500 tokens
    python benchmarks/generation_speed.py --models shakespeare_char_lstm --max_new_tokens 200
    python benchmarks/generation_speed.py --quick                # char model, 1 and 4 prompts, 8 tokens

Outputs (under --output_dir, default benchmarks/results/; a new temporary
directory for --quick): generation_speed.json, generation_speed.md and
generation_speed.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
if str(REPOSITORY_ROOT) not in sys.path:
    sys.path.insert(0, str(REPOSITORY_ROOT))
BENCHMARKS = Path(__file__).resolve().parent
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

from plotting import bar_chart  # noqa: E402

NAME = "generation_speed"
MODELS = ("ptb_word_lstm", "shakespeare_char_lstm")
PROMPTS = {
    "ptb_word_lstm": ["the company said", "in the third quarter", "the market", "analysts expect",
                      "the federal government", "shares of"],
    "shakespeare_char_lstm": ["ROMEO:", "JULIET:", "KING RICHARD III:", "MENENIUS:", "First Citizen:",
                              "LADY CAPULET:"],
}
WARMUP_TOKENS = 8

# Issue 11's targets.
TARGET_GRPC_RATIO = 0.7
TARGET_NAIVE_RATIO = 20.0
TARGET_BATCH_RATIO = 30.0


def latest_version(model_base_dir: Path, model: str) -> Path:
    """The highest integer version directory of a model."""
    versions = [path for path in (model_base_dir / model).iterdir() if path.name.isdigit()]
    if not versions:
        raise SystemExit(f"no versions of {model!r} under {model_base_dir}")
    return max(versions, key=lambda path: int(path.name))


class PrefixRefeedBackend:
    """The naive loop's model: no state is carried; every step feeds each row's whole prefix from the start.

    Wraps a stateful backend. The "state" it hands the loop is each row's
    number (the loop selects and repeats state rows, and so these numbers,
    exactly as it does real states), and it keeps every row's tokens itself;
    each `step` runs the inner model from its initial state over the whole
    prefix (prompt and every token so far) and returns the last position's
    logits, which is what a loop without state has to do.
    """

    def __init__(self, backend):
        import numpy as np

        self._np = np
        self._backend = backend
        self.token_strings = backend.token_strings
        self.separator = backend.separator
        self.end_token = backend.end_token
        self._prefixes: list[list[int]] = []

    def tokenize(self, texts):
        return self._backend.tokenize(texts)

    def detokenize(self, rows):
        return self._backend.detokenize(rows)

    def initial_state(self, batch_size: int):
        start = len(self._prefixes)
        self._prefixes.extend([] for _ in range(batch_size))
        return self._np.arange(start, start + batch_size, dtype=self._np.int64).reshape(-1, 1)

    def step(self, token_ids, state):
        from serving.generation.backends import PAD_ID, pad_rows

        np = self._np
        rows = [int(row) for row in np.asarray(state)[:, 0]]
        prefixes = []
        for row, tokens in zip(rows, np.asarray(token_ids)):
            # A repeated row (num_return_sequences) gets its own copy of the prefix.
            prefix = self._prefixes[row] + [int(token) for token in tokens if token != PAD_ID]
            prefixes.append(prefix)
        new_rows = np.arange(len(self._prefixes), len(self._prefixes) + len(rows), dtype=np.int64)
        self._prefixes.extend(prefixes)
        logits, _ = self._backend.step(pad_rows(prefixes), self._backend.initial_state(len(prefixes)))
        return logits, new_rows.reshape(-1, 1)


def time_generations(jobs: list[tuple[str, object, list[str]]], max_new_tokens: int, repeats: int,
                     progress=None) -> dict:
    """Median wall time and tokens per second of each (name, backend, prompts) job.

    Every job runs once to warm up (a short generation: tracing, channels),
    then the jobs take turns, `repeats` rounds, each round starting one job
    later, so a slow moment of the machine is shared out instead of landing
    on one configuration.
    """
    from serving.generation import generate

    options = dict(do_sample=False, stop_at_end_token=False)
    seconds = {name: [] for name, _, _ in jobs}
    tokens = {}
    for name, backend, prompts in jobs:
        generate(backend, prompts, max_new_tokens=min(WARMUP_TOKENS, max_new_tokens), **options)
    for round_number in range(repeats):
        # Each round starts one job later, so no job always follows the same one
        # (a heavy job leaves the caches and the CPU governor to the next).
        shift = round_number % len(jobs)
        for name, backend, prompts in jobs[shift:] + jobs[:shift]:
            start = time.perf_counter()
            result = generate(backend, prompts, max_new_tokens=max_new_tokens, **options)
            seconds[name].append(time.perf_counter() - start)
            tokens[name] = sum(len(row) for row in result.token_ids)
            if progress is not None:
                progress(f"round {round_number + 1}/{repeats} {name}: {tokens[name] / seconds[name][-1]:.0f} tokens/s")
    runs = {}
    for name, _, prompts in jobs:
        median = statistics.median(seconds[name])
        rates = [tokens[name] / value for value in seconds[name]]
        runs[name] = {"rows": len(prompts), "tokens": tokens[name], "seconds": [round(v, 4) for v in seconds[name]],
                      "median_seconds": round(median, 4), "tokens_per_second": round(tokens[name] / median, 1),
                      "tokens_per_second_min": round(min(rates), 1), "tokens_per_second_max": round(max(rates), 1),
                      "steps_per_second": round(max_new_tokens / median, 1),
                      "ms_per_step": round(median * 1000 / max_new_tokens, 3)}
    return runs


def job_name(backend: str, rows: int) -> str:
    return f"{backend}, {rows} prompt{'s' if rows != 1 else ''}"


def model_targets(model: str, runs: dict, batch_size: int) -> list[dict]:
    """Issue 11's generation targets for one model, from its runs."""
    def rate(backend: str, rows: int) -> float | None:
        run = runs.get(job_name(backend, rows))
        return run["tokens_per_second"] if run else None

    def ratio(numerator, denominator) -> float | None:
        return round(numerator / denominator, 3) if numerator and denominator else None

    targets = []
    for rows in (1, batch_size):
        # Like for like: both draw with the model's `sample` signature when it has one.
        value = ratio(rate("gRPC", rows), rate("in-process", rows))
        targets.append({"model": model, "target": f"gRPC at least {TARGET_GRPC_RATIO}x in-process, {rows} "
                                                  f"prompt{'s' if rows != 1 else ''}",
                        "value": value, "limit": TARGET_GRPC_RATIO,
                        "met": value is not None and value >= TARGET_GRPC_RATIO})
    for backend in ("gRPC", "in-process"):
        value = ratio(rate(backend, 1), rate("naive in-process", 1))
        targets.append({"model": model, "target": f"{backend} (state carried) at least {TARGET_NAIVE_RATIO:.0f}x the "
                                                  "naive loop (prefix re-fed), 1 prompt",
                        "value": value, "limit": TARGET_NAIVE_RATIO,
                        "met": value is not None and value >= TARGET_NAIVE_RATIO})
        value = ratio(rate(backend, batch_size), rate(backend, 1))
        targets.append({"model": model, "target": f"{backend}: {batch_size} prompts at least "
                                                  f"{TARGET_BATCH_RATIO:.0f}x the tokens/s of 1",
                        "value": value, "limit": TARGET_BATCH_RATIO,
                        "met": value is not None and value >= TARGET_BATCH_RATIO})
    return targets


def load_text() -> dict:
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        uptime = None
    return {"uptime": uptime, "load_average": [round(value, 2) for value in os.getloadavg()]}


def write_report(results: dict, output_dir: Path) -> None:
    """JSON, a Markdown table per model with the targets, and a bar chart of tokens per second."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{NAME}.json").write_text(json.dumps(results, indent=2) + "\n")
    setup, machine = results["setup"], results["machine"]
    lines = ["# Generation speed", "",
             f"`{setup['command']}`: {setup['max_new_tokens']} new tokens per row, greedy, end token ignored; "
             f"median of {setup['repeats']} interleaved runs, min-max in brackets. gRPC: a real server process on "
             "loopback, each step one Predict carrying the state, the server run with "
             "`--enable_serialization_as_tensor_content` except for `typed fields` (TF Serving's default). "
             "Without `logits` the model's `sample` signature draws each token (one id per row comes back); "
             "with it `step` returns a row of logits and the client draws (the same tokens). "
             "Naive: the same loop with no state carried, the whole prefix fed again at every step (in process).",
             "",
             f"Machine: {machine.get('cpu_model')} ({machine.get('usable_cpus')} usable CPUs), "
             f"{machine.get('platform')}. Shared with other work: load before `{results['load']['before']['uptime']}`, "
             f"after `{results['load']['after']['uptime']}`.", ""]
    lines += ["## Targets", "", "| model | target | measured | met |", "|---|---|---|---|"]
    for target in results["targets"]:
        lines.append(f"| {target['model']} | {target['target']} | {target['value']}x | "
                     f"{'yes' if target['met'] else 'no'} |")
    for model, runs in results["runs"].items():
        base = runs[job_name("in-process", 1)]["tokens_per_second"]
        lines += ["", f"## {model}", "",
                  "| backend, prompts | tokens/s | ms per step | ratio to in-process, same prompts | "
                  "ratio to in-process, 1 prompt |", "|---|---|---|---|---|"]
        for name, row in runs.items():
            same = runs.get(job_name("in-process", row["rows"]))
            same_ratio = f"{row['tokens_per_second'] / same['tokens_per_second']:.2f}" if same else ""
            lines.append(f"| {name} | {row['tokens_per_second']:.0f} [{row['tokens_per_second_min']:.0f}-"
                         f"{row['tokens_per_second_max']:.0f}] | {row['ms_per_step']:.2f} | {same_ratio} | "
                         f"{row['tokens_per_second'] / base:.2f} |")
    lines.append("")
    (output_dir / f"{NAME}.md").write_text("\n".join(lines))

    names = [f"{model}: {name}" for model, runs in results["runs"].items() for name in runs]
    values = [row["tokens_per_second"] for runs in results["runs"].values() for row in runs.values()]
    bar_chart(output_dir / f"{NAME}.png", names, values, xlabel="tokens per second (log scale)",
              title=f"generation speed, {setup['max_new_tokens']} new tokens per row", log_scale=True,
              figsize=(8, 0.32 * len(names) + 1.2))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help=f"default: {' '.join(MODELS)}")
    parser.add_argument("--model_base_dir", default=str(REPOSITORY_ROOT / "saved_models"))
    parser.add_argument("--max_new_tokens", type=int, default=None, help="default 500 (8 with --quick)")
    parser.add_argument("--batch_size", type=int, default=None, help="prompts in the batch runs (default 64; 4 "
                                                                     "with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--no_typed_fields", action="store_true",
                        help="skip the second server (typed-field responses)")
    parser.add_argument("--output_dir", default=None,
                        help="default benchmarks/results/, or a new temporary directory with --quick")
    parser.add_argument("--quick", action="store_true", help="the char model, 1 and 4 prompts, 8 tokens, one round")
    args = parser.parse_args(argv)
    args.models = args.models or (["shakespeare_char_lstm"] if args.quick else list(MODELS))
    args.max_new_tokens = args.max_new_tokens or (8 if args.quick else 500)
    args.batch_size = args.batch_size or (4 if args.quick else 64)
    args.repeats = args.repeats or (1 if args.quick else 3)
    output_dir = Path(args.output_dir) if args.output_dir else (
        Path(tempfile.mkdtemp(prefix="generation-speed-")) if args.quick else BENCHMARKS / "results")

    from training.quiet import quiet_tensorflow_logs

    quiet_tensorflow_logs()
    from load_and_faults import machine_info

    from serving.generation import GrpcBackend, SavedModelBackend
    from serving.server import running_server

    base_dir = Path(args.model_base_dir)
    before = load_text()
    all_runs, targets = {}, []
    for model in args.models:
        local = SavedModelBackend(str(latest_version(base_dir, model)))
        local_logits = SavedModelBackend(str(latest_version(base_dir, model)), use_sample_signature=False)
        pool = PROMPTS.get(model, ["the"])
        prompts = {1: pool[:1], args.batch_size: [pool[index % len(pool)] for index in range(args.batch_size)]}
        servers = {"tensor_content": True} if args.no_typed_fields else {"tensor_content": True,
                                                                          "typed fields": False}
        with contextlib.ExitStack() as stack:
            remotes = {}
            for encoding, content in servers.items():
                server = stack.enter_context(running_server(
                    model_name=model, model_base_path=base_dir / model, rest=False, monitoring=False,
                    tensor_content_responses=content))
                if content:
                    remotes["gRPC"] = stack.enter_context(GrpcBackend(server.grpc_target, model))
                    remotes["gRPC, logits"] = stack.enter_context(
                        GrpcBackend(server.grpc_target, model, use_sample_signature=False))
                else:
                    remotes["gRPC, logits, typed fields"] = stack.enter_context(
                        GrpcBackend(server.grpc_target, model, use_sample_signature=False))
            jobs = [(job_name(label, rows), backend, batch)
                    for label, backend in [("in-process", local), ("in-process, logits", local_logits),
                                           *remotes.items()]
                    for rows, batch in prompts.items()]
            jobs.append((job_name("naive in-process", 1), PrefixRefeedBackend(local), prompts[1]))
            runs = time_generations(jobs, args.max_new_tokens, args.repeats,
                                    progress=lambda text, model=model: print(f"{model} {text}", flush=True))
        all_runs[model] = runs
        targets += model_targets(model, runs, args.batch_size)
    results = {"setup": {"command": " ".join(["python", "benchmarks/generation_speed.py", *argv]),
                         "models": args.models, "max_new_tokens": args.max_new_tokens,
                         "batch_size": args.batch_size, "repeats": args.repeats, "quick": args.quick},
               "load": {"before": before, "after": load_text()},
               "targets": targets, "runs": all_runs, "machine": machine_info()}
    write_report(results, output_dir)
    print((output_dir / f"{NAME}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
