"""Where a language model's training step spends its time: an op-level TensorFlow trace.

Builds the zoo side exactly as `benchmarks/training_speed.py` does (the preset
through `rnn-zoo-train`'s own functions, on the same synthetic token stream),
trains `--warmup` steps, then records `--steps` steps with TensorFlow's profiler
and adds up the trace's op events by op type and by op name. Times are summed
over the threads TensorFlow ran ops on, so they add up to more than the step's
wall time on a machine with several cores; their shares say what costs most.

    python benchmarks/training_profile.py --shape small --cell lstm
    python benchmarks/training_profile.py --shape medium --cell gru --precision float32

Outputs (under --output_dir, default benchmarks/results/profiles/):
training_profile_<shape>_<cell>_<precision>.{json,md}, with the CPU's flags.
Switches such as RNN_ZOO_UNROLL_STEPS=0 are read from the environment as in
training.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {"small": "ptb_small", "medium": "ptb_medium"}
TOP = 25


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--cell", choices=("lstm", "gru", "simple_rnn"), default="lstm")
    parser.add_argument("--precision", choices=("preset", "float32", "mixed_bfloat16"), default="preset",
                        help="the preset's own (auto: bfloat16 where the CPU has it), or forced")
    parser.add_argument("--steps", type=int, default=10, help="training steps traced (default 10)")
    parser.add_argument("--warmup", type=int, default=5, help="untraced steps first (default 5)")
    parser.add_argument("--output_dir", default=str(Path(__file__).parent / "results" / "profiles"))
    return parser


def summarize_trace(xspace_path: Path, steps: int) -> dict:
    """Per-step milliseconds by op type and by op name from an XSpace trace file.

    TensorFlow names each op event "<op name>:<op type>"; events without a type
    (the executor's own bookkeeping, function calls) are left out, since they
    contain the ops' time.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(xspace_path.read_bytes())
    by_type, by_name, calls = collections.Counter(), collections.Counter(), collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                op_name, _, op_type = name.rpartition(":")
                if not op_name or not op_type or " " in op_type or "::" in name:
                    continue
                milliseconds = event.duration_ps / 1e9
                by_type[op_type] += milliseconds
                by_name[name] += milliseconds
                calls[op_type] += 1
    total = sum(by_type.values())
    return {
        "op_ms_per_step": total / steps,
        "by_type": [{"op_type": op, "ms_per_step": ms / steps, "share": ms / total if total else 0.0,
                     "calls_per_step": calls[op] / steps} for op, ms in by_type.most_common(TOP)],
        "by_name": [{"op": op, "ms_per_step": ms / steps, "share": ms / total if total else 0.0}
                    for op, ms in by_name.most_common(TOP)],
    }


def markdown_report(result: dict) -> str:
    machine = result["machine"]
    flags = ", ".join(flag for flag, present in machine["flags"].items() if present) or "none listed"
    lines = [
        f"# Op-level profile: {result['preset']} [{result['cell']}], {result['precision']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {machine['cpu_model']} ({machine['cpu_family_model']}), {machine['logical_cpus']} logical "
        f"CPUs; flags: {flags}.",
        "",
        f"Step: {result['step_ms_untraced']:.1f} ms untraced, {result['step_ms_traced']:.1f} ms traced "
        f"({result['tokens_per_step']} tokens a step); ops took {result['trace']['op_ms_per_step']:.1f} ms a "
        "step summed over threads.",
        "",
        "## By op type",
        "",
        "| op type | ms per step | share of op time | calls per step |",
        "|---|---:|---:|---:|",
    ]
    for row in result["trace"]["by_type"]:
        lines.append(f"| {row['op_type']} | {row['ms_per_step']:.2f} | {row['share']:.1%} | "
                     f"{row['calls_per_step']:.0f} |")
    lines += ["", "## Costliest ops", "", "| op | ms per step | share |", "|---|---:|---:|"]
    for row in result["trace"]["by_name"]:
        lines.append(f"| `{row['op'][-110:]}` | {row['ms_per_step']:.2f} | {row['share']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(Path(__file__).parent))
    from training.quiet import prefer_onednn

    prefer_onednn()  # as rnn-zoo-train does
    import tensorflow as tf

    import training_speed

    if args.precision != "preset":
        os.environ[training_speed.PRECISION_VARIABLE] = args.precision
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        corpus = training_speed.write_corpus(scratch / "corpus.txt",
                                             training_speed.synthetic_stream(10_000, 200_000, 0))
        side = training_speed.ZooSide({"job": "language_model", "preset": SHAPES[args.shape],
                                       "cell": args.cell, "corpus": str(corpus), "seed": 0})
        side.train(args.warmup)
        untraced, _ = side.train(args.steps)
        tf.profiler.experimental.start(str(scratch / "trace"))
        traced, _ = side.train(args.steps)
        tf.profiler.experimental.stop()
        trace_file = next((scratch / "trace").rglob("*.xplane.pb"))
        # fit() ran one untimed step more than it timed (training_speed.ZooSide.train).
        trace = summarize_trace(trace_file, args.steps + 1)
        info = side.describe()
    result = {
        "command": "python benchmarks/training_profile.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "preset": SHAPES[args.shape], "cell": args.cell, "precision": info["precision"],
        "steps": args.steps, "tokens_per_step": info["batch_size"] * info["num_steps"],
        "step_ms_untraced": untraced / args.steps * 1e3, "step_ms_traced": traced / args.steps * 1e3,
        "machine": training_speed.machine_info(), "versions": info["versions"], "trace": trace,
    }
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    stem = output / f"training_profile_{args.shape}_{args.cell}_{info['precision']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown_report(result), encoding="utf-8")
    print(f"wrote {stem}.{{json,md}}: {result['step_ms_untraced']:.1f} ms a step; "
          f"costliest op type {trace['by_type'][0]['op_type']} ({trace['by_type'][0]['share']:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
