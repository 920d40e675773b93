"""Work after the client left: a huge request with a short deadline, run whole or in pieces.

    python benchmarks/deadline_work.py          # about 2 min; writes benchmarks/results/deadline_work.{json,md,png}
    python benchmarks/deadline_work.py --quick  # 2,000 sentences, 1 round, into a temporary directory

Two servers of `saved_models/sst2_bilstm` run side by side, one with
`--max_rows_per_run=0` (every request in one call, as before pieces) and one
with the default (pieces of 256 rows that check the deadline between them).
In turns (A B A B), each gets one request of `--sentences` sentences with a
`--deadline` seconds deadline, which it cannot meet; as soon as the client
sees DEADLINE_EXCEEDED it sends a one-sentence probe. Per setting (medians
over `--rounds`, min-max in brackets):

- busy_after_deadline_s: how long the server kept computing after the
  client had its answer (until it used under 0.02 CPU seconds in 0.2 s);
- cpu_after_deadline_s: the server's CPU seconds (user + system, from
  /proc) in that time, work for a request nobody wanted;
- probe_ms: the probe's latency, which shares the CPU with that work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPOSITORY_ROOT), str(REPOSITORY_ROOT / "benchmarks")]

MODEL = "sst2_bilstm"
SETTINGS = {"one call": "--max_rows_per_run=0", "pieces of 256": "--max_rows_per_run=256"}


def _cpu_seconds(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _sentences(count: int) -> list[bytes]:
    import numpy as np

    versions = sorted((REPOSITORY_ROOT / "saved_models" / MODEL).iterdir(), key=lambda path: int(path.name))
    words = json.loads((versions[-1] / "assets.extra" / "vocabulary.json").read_text())["tokens"][2:2000]
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=20)).encode() for _ in range(count)]


def _wait_until_idle(pid: int, started: float, window: float = 0.2, idle_cpu: float = 0.02,
                     limit: float = 120.0) -> float:
    """Seconds from `started` (perf_counter) until the process used under `idle_cpu` CPU seconds in `window`."""
    samples = [(time.perf_counter(), _cpu_seconds(pid))]
    while time.perf_counter() - started < limit:
        time.sleep(0.05)
        samples.append((time.perf_counter(), _cpu_seconds(pid)))
        recent = [sample for sample in samples if sample[0] >= samples[-1][0] - window]
        if samples[-1][0] - samples[0][0] >= window and recent[-1][1] - recent[0][1] < idle_cpu:
            return recent[0][0] - started
    return limit


def measure_once(server, stub, big, probe, deadline: float) -> dict:
    import grpc

    pid = server.process.pid
    cpu_before = _cpu_seconds(pid)
    started = time.perf_counter()
    try:
        stub.Predict(big, timeout=deadline)
        code = "OK"
    except grpc.RpcError as error:
        code = error.code().name
    answered = time.perf_counter()
    cpu_at_deadline = _cpu_seconds(pid)
    probe_started = time.perf_counter()
    stub.Predict(probe, timeout=120)
    probe_ms = 1000 * (time.perf_counter() - probe_started)
    busy = _wait_until_idle(pid, answered)
    return {"code": code, "client_waited_s": answered - started, "probe_ms": probe_ms,
            "busy_after_deadline_s": busy, "cpu_before_deadline_s": cpu_at_deadline - cpu_before,
            "cpu_after_deadline_s": _cpu_seconds(pid) - cpu_at_deadline}


def run(arguments) -> dict:
    import contextlib

    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from training_speed import machine_info
    from serving.server.launch import running_server

    def request(sentences):
        message = predict_pb2.PredictRequest()
        message.model_spec.name = MODEL
        message.inputs["sentences"].CopyFrom(tf.make_tensor_proto(np.array(sentences, object)))
        return message

    big, probe = request(_sentences(arguments.sentences)), request([b"a fine film"])
    results = {name: [] for name in SETTINGS}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(running_server(
            model_name=MODEL, model_base_path=REPOSITORY_ROOT / "saved_models" / MODEL, rest=False,
            monitoring=False, cwd=REPOSITORY_ROOT,
            extra_arguments=[flag, f"--max_batch_size={arguments.sentences}"])) for name, flag in SETTINGS.items()}
        stubs = {name: prediction_service_pb2_grpc.PredictionServiceStub(
            stack.enter_context(grpc.insecure_channel(server.grpc_target))) for name, server in servers.items()}
        for name in SETTINGS:  # warm: the first big request of each server is not timed
            stubs[name].Predict(request(_sentences(300)), timeout=120)
        for round_index in range(arguments.rounds):
            for name in SETTINGS:
                results[name].append(measure_once(servers[name], stubs[name], big, probe, arguments.deadline))
                print(f"round {round_index + 1} {name}: {results[name][-1]}", flush=True)
                time.sleep(0.5)

    def summary(rows, key):
        values = [row[key] for row in rows]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {
        "benchmark": "deadline_work",
        "command": "python benchmarks/deadline_work.py" + (" --quick" if arguments.quick else ""),
        "settings": {"model": MODEL, "sentences": arguments.sentences, "deadline_s": arguments.deadline,
                     "rounds": arguments.rounds, "flags": SETTINGS},
        "results": {name: {"codes": sorted({row["code"] for row in rows}),
                           **{key: summary(rows, key) for key in ("client_waited_s", "probe_ms", "busy_after_deadline_s",
                                                                   "cpu_before_deadline_s", "cpu_after_deadline_s")},
                           "rounds": rows}
                    for name, rows in results.items()},
        "machine": machine_info(),
    }


def write_outputs(result: dict, output_dir: Path) -> None:
    from plotting import bar_chart

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "deadline_work.json").write_text(json.dumps(result, indent=2) + "\n")
    settings = result["settings"]

    def cell(entry, scale=1.0, digits=2):
        return (f"{entry['median'] * scale:.{digits}f} ({entry['min'] * scale:.{digits}f}-"
                f"{entry['max'] * scale:.{digits}f})")

    lines = [
        "# Work after the client left",
        "",
        f"`{result['command']}`: {settings['sentences']:,} sentences to `{settings['model']}` in one Predict with a "
        f"{settings['deadline_s']} s deadline, then a one-sentence probe as soon as the client has its "
        f"DEADLINE_EXCEEDED; two servers side by side, in turns, {settings['rounds']} rounds; medians "
        "(min-max).",
        "",
        "| setting | flag | status | server busy s after the deadline | server CPU s after the deadline | "
        "server CPU s before it | probe ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in result["results"].items():
        lines.append(f"| {name} | `{settings['flags'][name]}` | {', '.join(entry['codes'])} | "
                     f"{cell(entry['busy_after_deadline_s'])} | {cell(entry['cpu_after_deadline_s'])} | "
                     f"{cell(entry['cpu_before_deadline_s'])} | {cell(entry['probe_ms'], digits=1)} |")
    machine = result["machine"]
    lines += ["", f"Machine: {json.dumps(machine)}", ""]
    (output_dir / "deadline_work.md").write_text("\n".join(lines))
    names = list(result["results"])
    bar_chart(output_dir / "deadline_work.png", names,
              [result["results"][name]["cpu_after_deadline_s"]["median"] for name in names],
              xlabel="server CPU seconds after the client's deadline (median)",
              title=f"{settings['sentences']:,} sentences, {settings['deadline_s']} s deadline")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=40_000)
    parser.add_argument("--deadline", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 sentences, 1 round, a temporary directory")
    parser.add_argument("--output_dir", type=Path,
                        help="default benchmarks/results/ (a new temporary directory with --quick)")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.sentences, arguments.rounds, arguments.deadline = 2000, 1, 0.05
        arguments.output_dir = arguments.output_dir or Path(tempfile.mkdtemp(prefix="deadline_work_"))
    arguments.output_dir = arguments.output_dir or REPOSITORY_ROOT / "benchmarks" / "results"
    result = run(arguments)
    write_outputs(result, arguments.output_dir)
    print(f"wrote {arguments.output_dir / 'deadline_work.json'}, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
