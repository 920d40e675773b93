"""Serving speed: what the model server adds to a model's own time, for one request and for many at once.

What it does, on loopback:

1. Starts two real server processes (`python -m serving.server.cli`, what
   `rnn-zoo-serve` runs) on the classifier and the tagger, one without and
   one with `--enable_batching`, both with
   `--enable_serialization_as_tensor_content`.
2. Starts one client process (this script with `--worker`) that drives a
   server with the official `tensorflow_serving` stubs on a `grpc.aio`
   channel: `concurrency` callers, each sending one one-sentence Predict
   (`serving_default`) after another for `--seconds`.
3. Loads the same SavedModels in this process and calls the same signature
   on a batch of `concurrency` sentences, one call after another: the floor,
   what the model costs with no server at all.
4. Interleaves them (A B C, A B C, ...: in-process, unbatched server, batched
   server, for each model and concurrency, `--rounds` times), so a slow moment
   of the shared machine lands on all three, and reports medians with their
   spread (min-max over rounds).

Per configuration: p50/p90/p99 latency and requests (sentences) per second;
the CPU seconds per request of the server process, of the client process, and
per sentence in process (the account of where a core's time goes); the
milliseconds the server adds at concurrency 1 and the throughput ratios
against the targets of issue 11.

    python benchmarks/serving_speed.py              # 2 models x concurrency 1, 8, 32, 64, 3 rounds: ~4 min
    python benchmarks/serving_speed.py --quick      # one model, concurrency 1 and 8, one short round
    python benchmarks/serving_speed.py --flamegraph # and py-spy flame graphs of the server under load

Outputs (under --output_dir, default benchmarks/results/; a new temporary
directory for --quick): serving_speed.json, serving_speed.md, serving_speed.png, and with
--flamegraph serving_speed_flamegraph_c1_unbatched.svg and serving_speed_flamegraph_c32_batched.svg.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPOSITORY_ROOT) not in sys.path:
    sys.path.insert(0, str(REPOSITORY_ROOT))
BENCHMARKS = pathlib.Path(__file__).resolve().parent
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

DEFAULT_OUTPUT_DIR = REPOSITORY_ROOT / "benchmarks" / "results"
SAVED_MODELS = REPOSITORY_ROOT / "saved_models"
NAME = "serving_speed"
MODELS = ("sst2_bilstm", "ewt_upos_bilstm")
CONCURRENCY = (1, 8, 32, 64)
SIGNATURE = "serving_default"
RECORD_MARKER = "@@serving_speed "
CALL_TIMEOUT_SECONDS = 30.0
WARMUP_SECONDS = 0.3

# Issue 11's targets.
TARGET_ADDED_MS_P50_C1 = 0.8
TARGET_BATCHED_RATIO_C32 = 0.8

# One sentence per request; caller i sends SENTENCES[i % len]; the in-process batch of n holds the first n of the cycle.
SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "the plot is thin and the acting worse .",
    "It was not bad at all , honestly .",
    "what a waste of two hours",
    "an utterly charming film about nothing much .",
    "The server answered every request in a few milliseconds .",
    "I would not watch it again , but the music is lovely .",
    "Nothing in this film works , from the script to the lighting .",
]

logger = logging.getLogger(NAME)


# === Statistics ===


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def window_summary(latencies: list[float], seconds: float, rows_per_call: int, cpu_seconds: dict) -> dict:
    """One measurement window: latency percentiles (ms), rates, CPU per row (ms)."""
    calls = len(latencies)
    rows = calls * rows_per_call
    summary = {"calls": calls, "rows": rows, "seconds": round(seconds, 4),
               **{f"p{q}_ms": (None if not calls else round(percentile(latencies, q) * 1000, 3)) for q in (50, 90, 99)},
               "calls_per_second": round(calls / seconds, 1) if seconds > 0 else None,
               "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None}
    for name, value in cpu_seconds.items():
        summary[f"{name}_cpu_ms_per_row"] = round(value * 1000 / rows, 4) if rows else None
    return summary


def median_and_spread(windows: list[dict], key: str) -> dict:
    values = [window[key] for window in windows if window.get(key) is not None]
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


# === The client process ===


def _predict_request(model: str, sentence: str):
    import numpy as np
    from tensorflow_serving.apis import model_pb2, predict_pb2

    from serving.protocol import tensors

    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model, signature_name=SIGNATURE))
    request.inputs["sentences"].CopyFrom(
        tensors.numpy_to_tensor_proto(np.array([sentence.encode()], dtype=object), use_tensor_content=True))
    return request


async def _drive(target: str, model: str, concurrency: int, seconds: float) -> dict:
    """`concurrency` callers, each one request after another, for a warm-up and then `seconds`."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.protocol import tensors

    requests = [_predict_request(model, SENTENCES[index % len(SENTENCES)]) for index in range(concurrency)]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        loop_clock = time.perf_counter
        start_at = loop_clock() + WARMUP_SECONDS
        stop_at = start_at + seconds
        cpu_at_start: list[float] = []

        async def caller(index: int) -> None:
            request = requests[index]
            while True:
                began = loop_clock()
                if began >= stop_at:
                    return
                try:
                    response = await stub.Predict(request, timeout=CALL_TIMEOUT_SECONDS)
                    tensors.outputs_to_numpy(response.outputs)  # a real client reads what it asked for
                except grpc.aio.AioRpcError as error:
                    errors[error.code().name] = errors.get(error.code().name, 0) + 1
                    continue
                ended = loop_clock()
                if began >= start_at and ended <= stop_at:
                    latencies.append(ended - began)

        async def mark_start() -> None:
            await asyncio.sleep(max(0.0, start_at - loop_clock()))
            cpu_at_start.append(time.process_time())

        await asyncio.gather(mark_start(), *(caller(index) for index in range(concurrency)))
        cpu_seconds = time.process_time() - cpu_at_start[0]
    return {"latencies": latencies, "seconds": seconds, "client_cpu_seconds": cpu_seconds, "errors": errors}


def run_echo_server(port: int) -> int:
    """A bare PredictionService whose Predict returns a fixed SST-shaped response: gRPC's own cost, the floor.

    Same gRPC server kind as the model server (grpc.server on a thread pool),
    no interceptor, no model, no metrics.
    """
    import concurrent.futures

    import grpc
    import numpy as np
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.protocol import tensors

    response = predict_pb2.PredictResponse()
    response.model_spec.name, response.model_spec.signature_name = MODELS[0], SIGNATURE
    response.model_spec.version.value = 1
    tensors.fill_tensor_proto(response.outputs["label"], np.array([b"positive"], object))
    tensors.fill_tensor_proto(response.outputs["probabilities"], np.array([[0.25, 0.75]], np.float32), True)
    tensors.fill_tensor_proto(response.outputs["label_id"], np.array([1], np.int64), True)

    class Echo(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            return response

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=72))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(RECORD_MARKER + json.dumps({"ready": True}), flush=True)
    sys.stdin.read()  # runs until the controller closes stdin
    server.stop(0)
    return 0


class EchoServer:
    """The echo server as a process (this script with `--echo_server PORT`)."""

    def __init__(self):
        from serving.server.launch import free_port

        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, __file__, "--echo_server", str(self.port)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPOSITORY_ROOT,
                                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), text=True)
        while not self.process.stdout.readline().startswith(RECORD_MARKER):
            if self.process.poll() is not None:
                raise RuntimeError(f"echo server exited with {self.process.returncode}")

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def run_worker() -> int:
    """Answers one JSON command per stdin line with one marker line of results."""
    import grpc  # noqa: F401  (imported before the first command, so no window pays for it)

    print(RECORD_MARKER + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("quit"):
            break
        result = asyncio.run(_drive(command["target"], command["model"], command["concurrency"],
                                    command["seconds"]))
        print(RECORD_MARKER + json.dumps(result), flush=True)
    return 0


class Worker:
    """The client process, driven over its stdin and stdout."""

    def __init__(self, log_path: pathlib.Path):
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
                           GRPC_VERBOSITY=os.environ.get("GRPC_VERBOSITY", "ERROR"))
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log, cwd=REPOSITORY_ROOT,
                                        env=environment, text=True)
        self._read()

    def _read(self) -> dict:
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"client process exited with {self.process.wait()}")
            if line.startswith(RECORD_MARKER):
                return json.loads(line[len(RECORD_MARKER):])

    def drive(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"quit": True}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._log.close()


# === In process (the floor) ===


class InProcess:
    """The models' SavedModels loaded here, called as the server calls them (tf.constant in, .numpy() out)."""

    def __init__(self, models: list[str], model_base_dir: pathlib.Path):
        import tensorflow as tf

        self._tf = tf
        self._functions = {}
        for model in models:
            version = max((path for path in (model_base_dir / model).iterdir() if path.name.isdigit()),
                          key=lambda path: int(path.name))
            loaded = tf.saved_model.load(str(version))
            self._functions[model] = (loaded, loaded.signatures[SIGNATURE])

    def measure(self, model: str, batch_size: int, seconds: float) -> dict:
        import numpy as np

        tf = self._tf
        function = self._functions[model][1]
        sentences = np.array([SENTENCES[index % len(SENTENCES)].encode() for index in range(batch_size)], object)

        def call():
            outputs = function(sentences=tf.constant(sentences, tf.string))
            return {alias: tensor.numpy() for alias, tensor in outputs.items()}

        warm_until = time.perf_counter() + WARMUP_SECONDS
        while time.perf_counter() < warm_until:
            call()
        latencies = []
        cpu_started, started = time.process_time(), time.perf_counter()
        stop_at = started + seconds
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                break
            call()
            latencies.append(time.perf_counter() - began)
        elapsed = time.perf_counter() - started
        return window_summary(latencies, elapsed, batch_size, {"in_process": time.process_time() - cpu_started})


# === Servers ===


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_model_config(path: pathlib.Path, models: list[str], model_base_dir: pathlib.Path) -> pathlib.Path:
    entries = "".join(f'  config {{ name: "{model}" base_path: "{(model_base_dir / model).resolve()}" '
                      f'model_platform: "tensorflow" }}\n' for model in models)
    path.write_text("model_config_list {\n" + entries + "}\n")
    return path


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def uptime_text() -> str | None:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


# === The run ===


def run(arguments) -> dict:
    import contextlib

    from serving.server import running_server

    work_dir = pathlib.Path(tempfile.mkdtemp(prefix="serving-speed-"))
    config = write_model_config(work_dir / "models.config", arguments.models, arguments.model_base_dir)
    common_flags = ["--enable_serialization_as_tensor_content", "--file_system_poll_wait_seconds=0",
                    "--log_level=WARNING", *arguments.server_args]
    batching_file = work_dir / "batching.config"
    batching_file.write_text(arguments.batching_parameters + "\n")
    server_flags = {"unbatched": common_flags,
                    "batched": common_flags + ["--enable_batching", f"--batching_parameters_file={batching_file}"]}
    machine_before = {"uptime": uptime_text(), "load_average": load_average()}
    logger.info("machine before: %s", machine_before["uptime"])
    in_process = InProcess(arguments.models, arguments.model_base_dir)
    # The echo server's floor is measured with the first model's rows (it answers any model alike).
    windows: dict = {model: {str(c): {"in_process": [], "unbatched": [], "batched": [],
                                      **({"echo": []} if model == arguments.models[0] else {})}
                             for c in arguments.concurrency} for model in arguments.models}
    errors: dict = {}
    with contextlib.ExitStack() as stack:
        servers = {mode: stack.enter_context(running_server(
            model_config_file=config, rest=False, monitoring=False, extra_arguments=flags, log_dir=work_dir,
            poll_wait_seconds=0)) for mode, flags in server_flags.items()}
        echo = EchoServer()
        stack.callback(echo.close)
        worker = Worker(work_dir / "worker.log")
        stack.callback(worker.close)
        targets = dict(servers, echo=echo)
        for round_number in range(arguments.rounds):
            for model in arguments.models:
                for concurrency in arguments.concurrency:
                    key = str(concurrency)
                    windows[model][key]["in_process"].append(
                        in_process.measure(model, concurrency, arguments.seconds))
                    for mode in windows[model][key]:
                        if mode == "in_process":
                            continue
                        server = targets[mode]
                        pid = server.process.pid
                        server_cpu = process_cpu_seconds(pid)
                        result = worker.drive(target=server.grpc_target, model=model, concurrency=concurrency,
                                              seconds=arguments.seconds)
                        # The server's CPU covers the warm-up too: scale it to the measured window.
                        server_cpu = (process_cpu_seconds(pid) - server_cpu) * (
                            arguments.seconds / (arguments.seconds + WARMUP_SECONDS))
                        window = window_summary(result["latencies"], result["seconds"], 1,
                                                {"server": server_cpu, "client": result["client_cpu_seconds"]})
                        windows[model][key][mode].append(window)
                        for code, count in result["errors"].items():
                            errors[f"{model} {mode} c{concurrency} {code}"] = \
                                errors.get(f"{model} {mode} c{concurrency} {code}", 0) + count
                    logger.info("round %d %s c%d: in-process %s rows/s, unbatched %s req/s (p50 %s ms), "
                                "batched %s req/s (p50 %s ms)", round_number + 1, model, concurrency,
                                windows[model][key]["in_process"][-1]["rows_per_second"],
                                windows[model][key]["unbatched"][-1]["rows_per_second"],
                                windows[model][key]["unbatched"][-1]["p50_ms"],
                                windows[model][key]["batched"][-1]["rows_per_second"],
                                windows[model][key]["batched"][-1]["p50_ms"])
        flamegraphs = record_flamegraphs(servers, worker, arguments) if arguments.flamegraph else {}
        server_commands = {mode: " ".join(flags).replace(str(work_dir), "<tmp>")
                           for mode, flags in server_flags.items()}
    machine_after = {"uptime": uptime_text(), "load_average": load_average()}
    logger.info("machine after: %s", machine_after["uptime"])

    from load_and_faults import machine_info

    return {
        "benchmark": NAME,
        "command": " ".join(["python", "benchmarks/serving_speed.py", *arguments.argv]),
        "settings": {"models": arguments.models, "concurrency": arguments.concurrency, "rounds": arguments.rounds,
                     "seconds_per_window": arguments.seconds, "warmup_seconds": WARMUP_SECONDS,
                     "signature": SIGNATURE, "sentences_per_request": 1,
                     "batching_parameters": arguments.batching_parameters,
                     "server_flags": server_commands, "client": "one process, grpc.aio channel, official stubs",
                     "quick": arguments.quick},
        "load": {"before": machine_before, "after": machine_after},
        "results": summarize(windows, arguments),
        "errors": errors,
        "flamegraphs": flamegraphs,
        "windows": windows,
        "machine": machine_info(),
    }


FLAMEGRAPH_SECONDS = 6
FLAMEGRAPHS = (("unbatched", 1), ("batched", 32))


def record_flamegraphs(servers: dict, worker: Worker, arguments) -> dict:
    """py-spy flame graphs of the server process under load (unbatched at concurrency 1, batched at 32).

    Samples every thread of the server at 200 Hz while the client drives it
    with the first model; the SVGs go to --output_dir. Skipped (with the
    reason in the results) where py-spy is not installed or may not attach.
    """
    import shutil

    spy = shutil.which("py-spy", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    arguments.output_dir.mkdir(parents=True, exist_ok=True)
    recorded = {}
    for mode, concurrency in FLAMEGRAPHS:
        path = arguments.output_dir / f"{NAME}_flamegraph_c{concurrency}_{mode}.svg"
        recorder = subprocess.Popen([spy, "record", "--pid", str(servers[mode].process.pid), "--duration",
                                     str(FLAMEGRAPH_SECONDS), "--rate", "200", "--nonblocking", "--format",
                                     "flamegraph", "-o", str(path)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        result = worker.drive(target=servers[mode].grpc_target, model=arguments.models[0], concurrency=concurrency,
                              seconds=FLAMEGRAPH_SECONDS + 0.5)
        _, error = recorder.communicate(timeout=60)
        recorded[f"c{concurrency}_{mode}"] = {"path": path.name, "requests": len(result["latencies"])} \
            if recorder.returncode == 0 and path.exists() else {"skipped": error.strip()[-300:]}
    return recorded


def summarize(windows: dict, arguments) -> dict:
    """Medians over rounds, the server's added latency and its throughput ratios, and the targets."""
    summary: dict = {}
    for model, by_concurrency in windows.items():
        entry: dict = {}
        for key, modes in by_concurrency.items():
            row: dict = {}
            for mode, mode_windows in modes.items():
                row[mode] = {field: median_and_spread(mode_windows, field) for field in
                             ("p50_ms", "p90_ms", "p99_ms", "rows_per_second", "in_process_cpu_ms_per_row",
                              "server_cpu_ms_per_row", "client_cpu_ms_per_row")
                             if any(field in window for window in mode_windows)}
            for mode in [mode for mode in ("unbatched", "batched", "echo") if mode in modes]:
                # Paired per round (the windows ran back to back), then the median.
                ratios = [served["rows_per_second"] / local["rows_per_second"]
                          for served, local in zip(modes[mode], modes["in_process"])
                          if served["rows_per_second"] and local["rows_per_second"]]
                added = [served["p50_ms"] - local["p50_ms"] for served, local in zip(modes[mode], modes["in_process"])
                         if served["p50_ms"] is not None and local["p50_ms"] is not None]
                row[mode]["throughput_ratio_to_in_process"] = _spread(ratios)
                row[mode]["added_p50_ms"] = _spread(added)
            entry[key] = row
        summary[model] = entry
    # The echo server (gRPC alone, no model) bounds what any server of this kind can do here:
    # its p50 is the least a request can add, its requests/s the most it can answer.
    echo = {key: row["echo"] for key, row in summary[next(iter(summary))].items() if "echo" in row}
    targets = []
    for model, entry in summary.items():
        if "1" in entry:
            added = entry["1"]["unbatched"]["added_p50_ms"]["median"]
            targets.append({"model": model, "target": "server adds at most 0.8 ms p50 at concurrency 1 (unbatched)",
                            "value": added, "unit": "ms", "limit": TARGET_ADDED_MS_P50_C1,
                            "met": added is not None and added <= TARGET_ADDED_MS_P50_C1,
                            "floor": {"what": "p50 of a gRPC echo server with no model (the least any request adds)",
                                      "value": echo.get("1", {}).get("p50_ms", {}).get("median")}})
        if "32" in entry:
            ratio = entry["32"]["batched"]["throughput_ratio_to_in_process"]["median"]
            echo_rate = echo.get("32", {}).get("rows_per_second", {}).get("median")
            local_rate = entry["32"]["in_process"]["rows_per_second"]["median"]
            targets.append({"model": model, "target": "batching at concurrency 32 gives at least 0.8x the in-process "
                                                      "throughput at batch 32",
                            "value": ratio, "unit": "x", "limit": TARGET_BATCHED_RATIO_C32,
                            "met": ratio is not None and ratio >= TARGET_BATCHED_RATIO_C32,
                            "floor": {"what": "requests/s of a gRPC echo server with no model at concurrency 32, "
                                              "as a ratio to the in-process throughput (the most any such server "
                                              "could reach)",
                                      "value": round(echo_rate / local_rate, 3) if echo_rate and local_rate else None}})
    return {"per_model": summary, "targets": targets}


def _spread(values: list[float]) -> dict:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


# === Reports ===


def _cpu_bound(row: dict, mode: str) -> float | None:
    """Requests per second the machine's usable CPUs allow at the measured CPU cost per request."""
    server = row[mode].get("server_cpu_ms_per_row", {}).get("median")
    client = row[mode].get("client_cpu_ms_per_row", {}).get("median")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not server or client is None:
        return None
    return round(cpus * 1000 / (server + client), 0)


def write_markdown(result: dict, path: pathlib.Path) -> None:
    settings, machine, load = result["settings"], result["machine"], result["load"]
    lines = [
        "# Serving speed", "",
        f"`{result['command']}`: Predict (`{settings['signature']}`, one sentence per request) from "
        f"{settings['client']}, against the same signature called in process on a batch of as many sentences "
        f"as there are concurrent callers, and against a bare gRPC echo server (the same kind of grpc.server, "
        f"no model, no interceptor: what gRPC alone costs; run with the first model's rows). In-process, "
        f"unbatched server, batched server and echo server take turns "
        f"({settings['rounds']} rounds of {settings['seconds_per_window']} s windows after "
        f"{settings['warmup_seconds']} s of warm-up each); medians over rounds, min-max in brackets. "
        f"Server flags: unbatched `{settings['server_flags']['unbatched']}`; batched "
        f"`{settings['server_flags']['batched']}` with `{settings['batching_parameters']}`.",
        "",
        f"Machine: {machine.get('cpu_model')} ({machine.get('usable_cpus')} usable CPUs, hypervisor "
        f"{machine.get('hypervisor')}), {machine.get('platform')}, Python {machine.get('python')}. "
        f"Shared with other work: load before `{load['before']['uptime']}`, after `{load['after']['uptime']}`.",
        "",
        "## Targets", "",
        "| model | target | measured | met | bound set by gRPC alone (echo server, no model) |",
        "|---|---|---|---|---|",
    ]
    for target in result["results"]["targets"]:
        floor = target.get("floor", {}).get("value")
        bound = "" if floor is None else f"{floor} {target['unit']}"
        lines.append(f"| {target['model']} | {target['target']} | {target['value']} {target['unit']} | "
                     f"{'yes' if target['met'] else 'no'} | {bound} |")
    for model, entry in result["results"]["per_model"].items():
        lines += ["", f"## {model}", "",
                  "| concurrency | mode | p50 ms | p90 ms | p99 ms | requests/s | ratio to in-process | "
                  "added p50 ms | server CPU ms/req | client CPU ms/req | CPU-bound req/s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, row in entry.items():
            for mode in [mode for mode in ("in_process", "unbatched", "batched", "echo") if mode in row]:
                values = row[mode]
                label = {"in_process": f"in process, batch {key}", "unbatched": "server",
                         "batched": "server, batching", "echo": "gRPC echo server (no model)"}[mode]
                cpu_server = values.get("server_cpu_ms_per_row", {}).get("median")
                cpu_client = values.get("client_cpu_ms_per_row", {}).get("median")
                if mode == "in_process":
                    cpu_server = values.get("in_process_cpu_ms_per_row", {}).get("median")
                lines.append(
                    f"| {key} | {label} | {_fmt(values['p50_ms'])} | {_fmt(values['p90_ms'])} | "
                    f"{_fmt(values['p99_ms'])} | {_fmt(values['rows_per_second'], 0)} | "
                    f"{_fmt(values.get('throughput_ratio_to_in_process'), 2)} | "
                    f"{_fmt(values.get('added_p50_ms'), 2)} | {cpu_server if cpu_server is not None else ''} | "
                    f"{cpu_client if cpu_client is not None else ''} | "
                    f"{_cpu_bound(row, mode) if mode != 'in_process' else ''} |")
    lines += ["", "In process, `requests/s` counts sentences (a batch of n is n) and `server CPU ms/req` is this "
              "process's CPU per sentence. For the servers, CPU is per request, read from /proc for the server and "
              "from the client process itself; `CPU-bound req/s` is what the usable CPUs would allow at that cost "
              "with nothing else running (server and client share them).", ""]
    if result["errors"]:
        lines += [f"Errors: {result['errors']}", ""]
    for name, entry in result.get("flamegraphs", {}).items():
        if isinstance(entry, dict) and "path" in entry:
            lines.append(f"Flame graph of the server, {name.replace('_', ', ')}: [{entry['path']}]({entry['path']}) "
                         f"(py-spy, every thread, {entry['requests']} requests).")
        else:
            lines.append(f"Flame graph {name}: {entry}")
    lines.append("")
    path.write_text("\n".join(lines))


def _fmt(spread: dict | None, digits: int = 2) -> str:
    if not spread or spread.get("median") is None:
        return ""
    return (f"{spread['median']:.{digits}f} [{spread['min']:.{digits}f}-{spread['max']:.{digits}f}]")


def write_plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_model = result["results"]["per_model"]
    figure, axes = plt.subplots(2, len(per_model), figsize=(5.5 * len(per_model), 7), squeeze=False)
    styles = {"in_process": ("in process (batch = concurrency)", "tab:green"),
              "unbatched": ("server", "tab:blue"), "batched": ("server, batching", "tab:orange"),
              "echo": ("gRPC echo, no model", "tab:gray")}
    for column, (model, entry) in enumerate(per_model.items()):
        levels = [int(key) for key in entry]
        for mode, (label, color) in styles.items():
            if mode not in entry[str(levels[0])]:
                continue
            _errorbar(axes[0][column], levels, [entry[str(c)][mode]["rows_per_second"] for c in levels],
                      label=label, color=color)
            _errorbar(axes[1][column], levels, [entry[str(c)][mode]["p50_ms"] for c in levels],
                      label=f"{label} p50", color=color)
            p99 = [(c, entry[str(c)][mode]["p99_ms"]["median"]) for c in levels]
            p99 = [(c, value) for c, value in p99 if value is not None]
            axes[1][column].plot([c for c, _ in p99], [value for _, value in p99], linestyle=":", color=color,
                                 label=f"{label} p99")
        for axis in axes[:, column]:
            axis.set_xscale("log", base=2)
            axis.set_xticks(levels, [str(c) for c in levels])
            axis.set_xlabel("concurrent callers (in process: batch size)")
        axes[0][column].set_ylabel("sentences per second")
        axes[0][column].set_title(model)
        axes[1][column].set_ylabel("latency ms")
        axes[1][column].set_yscale("log")
    axes[0][0].legend(fontsize=8)
    axes[1][0].legend(fontsize=7)
    figure.suptitle("Predict, one sentence per request: server vs the signature in process")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _errorbar(axis, levels: list[int], spreads: list[dict], **style) -> None:
    """Medians with min-max bars, leaving out levels without a value."""
    points = [(level, spread) for level, spread in zip(levels, spreads) if spread.get("median") is not None]
    if not points:
        return
    axis.errorbar([level for level, _ in points], [spread["median"] for _, spread in points],
                  yerr=[[spread["median"] - spread["min"] for _, spread in points],
                        [spread["max"] - spread["median"] for _, spread in points]],
                  marker="o", capsize=3, **style)


def write_outputs(result: dict, output_dir: pathlib.Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, output_dir / f"{NAME}.md")
    write_plot(result, output_dir / f"{NAME}.png")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help=f"Default {' '.join(MODELS)}; sst2_bilstm with --quick.")
    parser.add_argument("--concurrency", nargs="+", type=int, default=None,
                        help=f"Concurrent callers (default {' '.join(map(str, CONCURRENCY))}; 1 8 with --quick).")
    parser.add_argument("--rounds", type=int, default=None, help="Interleaved rounds (default 3; 1 with --quick).")
    parser.add_argument("--seconds", type=float, default=None, help="Seconds per window (default 2; 0.5 with --quick).")
    parser.add_argument("--model_base_dir", type=pathlib.Path, default=SAVED_MODELS)
    parser.add_argument("--batching_parameters", default="max_batch_size { value: 64 } batch_timeout_micros { value: 1000 }",
                        help="The batched server's --batching_parameters_file, in TF Serving's text format.")
    parser.add_argument("--server_args", nargs="*", default=[], help="More flags for both servers.")
    parser.add_argument("--output_dir", type=pathlib.Path, default=None,
                        help="Default benchmarks/results/, or a new temporary directory with --quick.")
    parser.add_argument("--quick", action="store_true", help="sst2_bilstm, concurrency 1 and 8, one 0.5 s round.")
    parser.add_argument("--flamegraph", action="store_true",
                        help="After the rounds, record py-spy flame graphs of the server under load "
                             "(unbatched at concurrency 1, batched at 32) into --output_dir.")
    arguments = parser.parse_args(argv)
    arguments.argv = argv
    arguments.models = arguments.models or (["sst2_bilstm"] if arguments.quick else list(MODELS))
    arguments.concurrency = arguments.concurrency or ([1, 8] if arguments.quick else list(CONCURRENCY))
    arguments.rounds = arguments.rounds or (1 if arguments.quick else 3)
    arguments.seconds = arguments.seconds or (0.5 if arguments.quick else 2.0)
    if arguments.output_dir is None:
        arguments.output_dir = (pathlib.Path(tempfile.mkdtemp(prefix="serving-speed-results-"))
                                if arguments.quick else DEFAULT_OUTPUT_DIR)
    return arguments


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return run_worker()
    if argv[:1] == ["--echo_server"]:
        return run_echo_server(int(argv[1]))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from training.quiet import quiet_tensorflow_logs

    quiet_tensorflow_logs()
    arguments = parse_arguments(argv)
    result = run(arguments)
    write_outputs(result, arguments.output_dir)
    for target in result["results"]["targets"]:
        print(f"{target['model']}: {target['target']}: {target['value']} {target['unit']} "
              f"({'met' if target['met'] else 'missed'})")
    print(f"wrote {arguments.output_dir / (NAME + '.json')}, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
