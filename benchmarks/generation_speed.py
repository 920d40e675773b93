"""Generation speed: tokens per second over gRPC and in-process, one prompt and a batch.

Runs the same generation loop (`serving.generation`) four ways, side by side in
one process so the machine's noise hits them alike:

    in-process (SavedModel), 1 prompt     in-process, a batch of prompts
    gRPC (a real server process), 1 prompt   gRPC, a batch of prompts

Each configuration generates `--max_new_tokens` tokens per row with greedy
decoding and the end token ignored, so every row runs to the full length and
all four do the same work. Each runs once to warm up, then the four take turns for
`--repeats` rounds; the median is reported, with ratios to the in-process single prompt.

    python benchmarks/generation_speed.py --model shakespeare_char_lstm

Outputs (under --output_dir, default benchmarks/results/):
generation_speed.json, generation_speed.md and generation_speed.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from tqdm import tqdm

from plotting import bar_chart


def latest_version(model_base_dir: Path, model: str) -> Path:
    """The highest integer version directory of a model."""
    versions = [path for path in (model_base_dir / model).iterdir() if path.name.isdigit()]
    if not versions:
        raise SystemExit(f"no versions of {model!r} under {model_base_dir}")
    return max(versions, key=lambda path: int(path.name))


def time_generations(jobs: list[tuple[str, object, list[str]]], max_new_tokens: int, repeats: int) -> dict:
    """Median wall time and tokens per second of each (name, backend, prompts) job.

    Every job runs once to warm up (tracing, channel), then the jobs take
    turns, `repeats` rounds, so a slow moment of the machine is shared out
    instead of landing on one configuration.
    """
    from serving.generation import generate

    options = dict(max_new_tokens=max_new_tokens, do_sample=False, stop_at_end_token=False)
    seconds = {name: [] for name, _, _ in jobs}
    tokens = {}
    for name, backend, prompts in jobs:
        generate(backend, prompts, **options)
    for _ in tqdm(range(repeats), desc="rounds"):
        for name, backend, prompts in jobs:
            start = time.perf_counter()
            result = generate(backend, prompts, **options)
            seconds[name].append(time.perf_counter() - start)
            tokens[name] = sum(len(row) for row in result.token_ids)
    runs = {}
    for name, _, prompts in jobs:
        median = statistics.median(seconds[name])
        runs[name] = {"rows": len(prompts), "tokens": tokens[name], "seconds": seconds[name],
                      "median_seconds": median, "tokens_per_second": tokens[name] / median,
                      "steps_per_second": max_new_tokens / median}
    return runs


def write_report(results: dict, output_dir: Path) -> None:
    """JSON, a Markdown table and a bar chart of tokens per second."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "generation_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    runs = results["runs"]
    base = runs["in-process, 1 prompt"]["tokens_per_second"]
    lines = [f"Model `{results['setup']['model']}`, {results['setup']['max_new_tokens']} new tokens per row, "
             f"greedy, median of {results['setup']['repeats']} runs.",
             "",
             "| backend, prompts | tokens/s | steps/s | ratio to in-process, 1 prompt |",
             "|---|---|---|---|"]
    for name, row in runs.items():
        lines.append(f"| {name} | {row['tokens_per_second']:.0f} | {row['steps_per_second']:.0f} | "
                     f"{row['tokens_per_second'] / base:.2f} |")
    (output_dir / "generation_speed.md").write_text("\n".join(lines) + "\n")

    names = list(runs)
    bar_chart(output_dir / "generation_speed.png", names, [runs[name]["tokens_per_second"] for name in names],
              xlabel="tokens per second (log scale)", title=f"generation speed, {results['setup']['model']}",
              log_scale=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shakespeare_char_lstm", help="a language model under --model_base_dir")
    parser.add_argument("--model_base_dir", default="saved_models")
    parser.add_argument("--max_new_tokens", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=32, help="prompts in the batch runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output_dir", default="benchmarks/results")
    args = parser.parse_args(argv)

    from serving.generation import GrpcBackend, SavedModelBackend
    from serving.server import running_server

    base_dir = Path(args.model_base_dir)
    local = SavedModelBackend(str(latest_version(base_dir, args.model)))
    speakers = ["ROMEO:", "JULIET:", "KING RICHARD III:", "MENENIUS:", "First Citizen:", "LADY CAPULET:"]
    batch = [speakers[index % len(speakers)] for index in range(args.batch_size)]
    prompts = {"1 prompt": ["ROMEO:"], f"{args.batch_size} prompts": batch}
    with running_server(model_name=args.model, model_base_path=base_dir / args.model, rest=False,
                        monitoring=False) as server:
        with GrpcBackend(server.grpc_target, args.model) as remote:
            jobs = [(f"{label}, {size}", backend, batch) for label, backend in
                    (("in-process", local), ("gRPC", remote)) for size, batch in prompts.items()]
            runs = time_generations(jobs, args.max_new_tokens, args.repeats)
    results = {"setup": {"model": args.model, "max_new_tokens": args.max_new_tokens,
                         "batch_size": args.batch_size, "repeats": args.repeats}, "runs": runs}
    write_report(results, Path(args.output_dir))
    print((Path(args.output_dir) / "generation_speed.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
