"""Cold start: each bundled model's first requests on a fresh server, with and without warm-up.

    python benchmarks/cold_start.py          # about 1 min; writes benchmarks/results/cold_start.{json,md,png}

A fresh server is started on `saved_models/` with `--enable_model_warmup=false`
and then with it on (the default, which replays each version's
`assets.extra/tf_serving_warmup_requests` before the version serves), in turns,
`--rounds` times each. Each time, after health says SERVING, every model gets
one request, then the same request again. Reported per setting: seconds until
SERVING, and the first and second request's milliseconds per model (medians
over the rounds, min-max in brackets).
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

REQUESTS = {  # model: (signature, input name, text)
    "sst2_bilstm": ("serving_default", "sentences", "a fine film"),
    "ewt_upos_bilstm": ("serving_default", "sentences", "the cat sat"),
    "ptb_word_lstm": ("score", "text", "the cat sat"),
    "shakespeare_char_lstm": ("score", "text", "To be"),
}
SETTINGS = {"warm-up off": "--enable_model_warmup=false", "warm-up on": "--enable_model_warmup=true"}


def measure_once(flag: str) -> dict:
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.server.launch import running_server

    started = time.monotonic()
    with running_server(model_base_dir=REPOSITORY_ROOT / "saved_models", extra_arguments=[flag], rest=False,
                        monitoring=False, cwd=REPOSITORY_ROOT) as server:
        result = {"ready_seconds": time.monotonic() - started, "models": {}}
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for name, (signature, alias, text) in REQUESTS.items():
                request = predict_pb2.PredictRequest()
                request.model_spec.name, request.model_spec.signature_name = name, signature
                request.inputs[alias].CopyFrom(tf.make_tensor_proto(np.array([text.encode()])))
                times = []
                for _ in range(2):
                    begun = time.perf_counter()
                    stub.Predict(request, timeout=60)
                    times.append(1000 * (time.perf_counter() - begun))
                result["models"][name] = {"first_ms": times[0], "second_ms": times[1]}
    return result


def _summary(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output_dir", type=Path, default=REPOSITORY_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    runs = {setting: [] for setting in SETTINGS}
    for _ in range(args.rounds):
        for setting, flag in SETTINGS.items():
            runs[setting].append(measure_once(flag))
    from load_and_faults import machine_info
    from plotting import bar_chart

    lines = ["# Cold start: first requests on a fresh server, with and without warm-up", "",
             f"Command: `python benchmarks/cold_start.py --rounds {args.rounds}`. Medians over the rounds, "
             "(min-max); the two settings took turns.", "",
             "| setting | seconds until SERVING | " + " | ".join(
                 f"{name} first / second ms" for name in REQUESTS) + " |",
             "|---|---|" + "---|" * len(REQUESTS)]
    for setting, results in runs.items():
        cells = [_summary([r["ready_seconds"] for r in results], 1)]
        for name in REQUESTS:
            first = _summary([r["models"][name]["first_ms"] for r in results], 0)
            second = _summary([r["models"][name]["second_ms"] for r in results], 0)
            cells.append(f"{first} / {second}")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    machine = machine_info()
    lines += ["", f"Machine: {json.dumps(machine)}"]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    names, values = [], []
    for setting, results in runs.items():
        for name in REQUESTS:
            names.append(f"{name}, {setting}")
            values.append(statistics.median(r["models"][name]["first_ms"] for r in results))
    bar_chart(args.output_dir / "cold_start.png", names, values, xlabel="first request, ms (median)",
              title="A fresh server's first request per model", log_scale=True, figsize=(7, 3.6))
    lines.insert(3, "![first requests](cold_start.png)\n")
    (args.output_dir / "cold_start.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.output_dir / "cold_start.json").write_text(
        json.dumps({"rounds": args.rounds, "runs": runs, "machine": machine}, indent=2) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
