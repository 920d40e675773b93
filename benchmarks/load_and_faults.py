"""Load and faults: the model server under many clients while its model directory changes, then SIGTERM.

What it does, on loopback:

1. Copies saved_models/ into a temporary model base directory (the checkout's
   saved_models/ is never touched) and starts the real server process on it
   (`python -m serving.server.cli`, what `rnn-zoo-serve` runs) with gRPC, REST
   and a short `--file_system_poll_wait_seconds`, so changes on disk are seen
   within a second.
2. Starts `--clients` client threads spread over a few client processes (this
   script with `--worker`; each process imports the official
   `tensorflow_serving` stubs once). Three threads in four speak gRPC through
   the stubs (Predict on every signature family, Classify with tf.Examples),
   one in four TF Serving's REST API (:predict, :classify). Each thread cycles
   over every bundled model, a valid request of one of its signatures at a
   time: SST-2 sentences, tagger sentences and token matrices, the language
   models' score / tokenize / initial_state / step / serving_default.
3. On a schedule (fractions of `--duration`, from the start of the load):
   0.2 a new version of sst2_bilstm (a copy of its version, under the next
   number, renamed in as exporters do); 0.4 a corrupt version of
   ewt_upos_bilstm (a directory whose saved_model.pb is random bytes);
   0.6 shakespeare_char_lstm's directory removed; 1.0 SIGTERM to the server
   while every client keeps sending for `--tail` seconds more.
4. Records every request (start time, latency, model, API, method, status:
   the gRPC code name or `HTTP <status>` or the client-side exception) and
   samples the server's resident memory twice a second.

Every error is sorted into expected (NOT_FOUND / 404 for the removed model
after its removal; UNAVAILABLE, CANCELLED, 503 and refused or reset
connections for calls started after SIGTERM) or unexpected (anything else: INTERNAL, UNKNOWN, HTTP 500 and
RESOURCE_EXHAUSTED among them). A server that crashed or did not exit 0 shows
in `server.exit_code`.

    python benchmarks/load_and_faults.py                     # 64 clients, 60 s: about 1.5 min on 2 cores
    python benchmarks/load_and_faults.py --clients 16 --duration 20
    python benchmarks/load_and_faults.py --quick             # 4 clients, 8 s, into a temporary directory

Outputs (under --output_dir, default benchmarks/results/; a new temporary
directory for --quick): load_and_faults.json, load_and_faults.md and
load_and_faults.png (latency over time, the fault events marked, resident
memory beside it).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import logging
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPOSITORY_ROOT) not in sys.path:
    sys.path.insert(0, str(REPOSITORY_ROOT))
BENCHMARKS = pathlib.Path(__file__).resolve().parent
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

DEFAULT_OUTPUT_DIR = REPOSITORY_ROOT / "benchmarks" / "results"
SAVED_MODELS = REPOSITORY_ROOT / "saved_models"
NAME = "load_and_faults"

logger = logging.getLogger(NAME)

# The faults, each at a fraction of --duration from the start of the load.
NEW_VERSION_MODEL = "sst2_bilstm"
CORRUPT_VERSION_MODEL = "ewt_upos_bilstm"
REMOVED_MODEL = "shakespeare_char_lstm"
SCHEDULE = (
    (0.2, "new_version", NEW_VERSION_MODEL),
    (0.4, "corrupt_version", CORRUPT_VERSION_MODEL),
    (0.6, "model_removed", REMOVED_MODEL),
    (1.0, "sigterm", "server"),
)
PHASES = ("before_faults", "new_version", "corrupt_version", "model_removed", "after_sigterm")
# The event that starts each phase after the first.
PHASE_EVENTS = {"new_version": "new_version", "corrupt_version": "corrupt_version",
                "model_removed": "model_removed", "after_sigterm": "sigterm"}

# Statuses that are the point of a fault, not a failure of the server.
AFTER_REMOVAL = {"NOT_FOUND", "HTTP 404"}
# CANCELLED: grpc-python's server.stop() cancels the calls still waiting in gRPC core. The server
# answers or refuses (UNAVAILABLE) what arrives before it stops (ShutdownGate), so only a call
# that reaches core in the instant of the stop can be CANCELLED, and only after the SIGTERM.
AFTER_SIGTERM = {"UNAVAILABLE", "CANCELLED", "HTTP 503", "ConnectionRefusedError", "ConnectionResetError",
                 "RemoteDisconnected", "BrokenPipeError", "IncompleteRead", "ConnectionAbortedError"}
SERVER_FAULTS = {"INTERNAL", "UNKNOWN", "HTTP 500", "DATA_LOSS"}

CALL_TIMEOUT_SECONDS = 30.0
# After a failed call a client waits this long before the next, as a real one would.
ERROR_BACKOFF_SECONDS = 0.05
RECORD_MARKER = "@@load_and_faults "


# === Requests (worker side) ===


def _sentences(rng: random.Random) -> list[str]:
    pool = ["a gorgeous , witty , seductive movie .", "the plot is thin and the acting worse .",
            "The cat sat on the mat .", "It was not bad at all , honestly .", "what a waste of two hours",
            "an utterly charming film about nothing much ."]
    return rng.sample(pool, rng.randint(1, 3))


LM_TEXT = {"ptb_word_lstm": ["the company said its profit rose N N <eos>", "the market fell sharply <eos>"],
           "shakespeare_char_lstm": ["ROMEO:\nBut soft, what light", "KING HENRY:\nOnce more unto the breach"]}


def language_model_sizes(model: str, models_dir: pathlib.Path | None = None) -> tuple[int, int]:
    """(state width, vocabulary size) of a bundled language model's newest version, read from its `step`
    signature, so the requests fit whatever version ships."""
    from tensorflow.core.protobuf import saved_model_pb2

    base = (models_dir or REPOSITORY_ROOT / "saved_models") / model
    newest = max((path for path in base.iterdir() if path.name.isdigit()), key=lambda path: int(path.name))
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((newest / "saved_model.pb").read_bytes())
    step = saved_model.meta_graphs[0].signature_def["step"]
    return (step.inputs["state"].tensor_shape.dim[1].size, step.outputs["logits"].tensor_shape.dim[1].size)


class RequestMenu:
    """Valid gRPC and REST requests for each bundled model, built once per worker process."""

    def __init__(self, models: list[str], seed: int):
        import numpy as np
        from tensorflow_serving.apis import classification_pb2, model_pb2, predict_pb2

        from serving.protocol import tensors

        self.models = models
        rng = random.Random(seed)
        np_rng = np.random.default_rng(seed)

        def predict(model: str, signature: str, inputs: dict):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model, signature_name=signature))
            for alias, value in inputs.items():
                request.inputs[alias].CopyFrom(tensors.numpy_to_tensor_proto(value, use_tensor_content=True))
            return ("Predict", signature, request)

        def classify(model: str, sentences: list[str]):
            request = classification_pb2.ClassificationRequest(
                model_spec=model_pb2.ModelSpec(name=model, signature_name="classify"))
            request.input.example_list.examples.extend(tensors.make_example({"text": s}) for s in sentences)
            return ("Classify", "classify", request)

        self.grpc: dict[str, list] = {}
        self.rest: dict[str, list] = {}
        for model in models:
            grpc_requests, rest_requests = [], []
            for _ in range(4):  # a few variants of each, so batches differ in size and length
                sentences = _sentences(rng)
                if model.startswith("sst2"):
                    grpc_requests += [predict(model, "serving_default", {"sentences": np.array(sentences, object)}),
                                      classify(model, sentences)]
                    rest_requests += [("predict", {"instances": sentences}),
                                      ("classify", {"signature_name": "classify",
                                                    "examples": [{"text": s} for s in sentences]})]
                elif model.startswith("ewt"):
                    tokens = [s.split() for s in sentences]
                    width = max(len(t) for t in tokens)
                    padded = np.array([t + [""] * (width - len(t)) for t in tokens], object)
                    grpc_requests += [predict(model, "serving_default", {"sentences": np.array(sentences, object)}),
                                      predict(model, "tag_tokens", {"tokens": padded})]
                    rest_requests += [("predict", {"instances": sentences}),
                                      ("predict", {"signature_name": "tag_tokens",
                                                   "inputs": {"tokens": padded.tolist()}})]
                else:  # a language model
                    state_width, vocabulary_size = language_model_sizes(model)
                    texts = LM_TEXT[model][:rng.randint(1, 2)]
                    steps = rng.randint(1, 8)
                    token_ids = np_rng.integers(2, vocabulary_size, size=(1, steps), dtype=np.int64)
                    state = np.zeros((1, state_width), np.float32)
                    grpc_requests += [
                        predict(model, "score", {"text": np.array(texts, object)}),
                        predict(model, "tokenize", {"text": np.array(texts, object)}),
                        predict(model, "initial_state", {"batch_size": np.array(rng.randint(1, 4), np.int32)}),
                        predict(model, "step", {"token_ids": token_ids, "state": state}),
                        predict(model, "serving_default", {"token_ids": token_ids}),
                    ]
                    rest_requests += [
                        ("predict", {"signature_name": "score", "instances": texts}),
                        ("predict", {"signature_name": "step",
                                     "inputs": {"token_ids": token_ids.tolist(), "state": state.tolist()}}),
                    ]
            self.grpc[model] = grpc_requests
            self.rest[model] = [(method, json.dumps(body).encode()) for method, body in rest_requests]


def _grpc_client(target: str, menu: RequestMenu, index: int, stop_at: float, records: list) -> None:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    rng = random.Random(index)
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        calls = {"Predict": stub.Predict, "Classify": stub.Classify}
        turn = index
        while time.time() < stop_at:
            model = menu.models[turn % len(menu.models)]
            turn += 1
            method, signature, request = rng.choice(menu.grpc[model])
            started = time.time()
            clock = time.perf_counter()
            version, message = None, None
            try:
                response = calls[method](request, timeout=CALL_TIMEOUT_SECONDS)
                code = "OK"
                version = response.model_spec.version.value
            except grpc.RpcError as error:
                code, message = error.code().name, (error.details() or "")[:200]
            latency = time.perf_counter() - clock
            records.append((started, latency, model, "grpc", f"{method}/{signature}", code, version, message))
            if code != "OK":
                time.sleep(ERROR_BACKOFF_SECONDS)


def _rest_client(host: str, port: int, menu: RequestMenu, index: int, stop_at: float, records: list) -> None:
    rng = random.Random(index)
    connection = None
    turn = index
    while time.time() < stop_at:
        model = menu.models[turn % len(menu.models)]
        turn += 1
        method, body = rng.choice(menu.rest[model])
        started = time.time()
        clock = time.perf_counter()
        message = None
        try:
            if connection is None:
                connection = http.client.HTTPConnection(host, port, timeout=CALL_TIMEOUT_SECONDS)
            connection.request("POST", f"/v1/models/{model}:{method}", body,
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            code = "OK" if response.status == 200 else f"HTTP {response.status}"
            if code != "OK":
                message = payload[:200].decode(errors="replace")
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
                connection = None
        except (OSError, http.client.HTTPException) as error:
            code, message = type(error).__name__, str(error)[:200]
            if connection is not None:
                connection.close()
            connection = None
        latency = time.perf_counter() - clock
        records.append((started, latency, model, "rest", method, code, None, message))
        if code != "OK":
            time.sleep(ERROR_BACKOFF_SECONDS)
    if connection is not None:
        connection.close()


def run_worker(spec: dict) -> int:
    """One client process: builds its requests, says ready, waits for the start line, runs its threads."""
    menu = RequestMenu(spec["models"], seed=spec["first_index"])
    print(RECORD_MARKER + json.dumps({"ready": True}), flush=True)
    start = json.loads(sys.stdin.readline())
    stop_at = start["stop_at"]
    while time.time() < start["start_at"]:
        time.sleep(0.005)
    records: list = []
    threads = []
    for offset in range(spec["threads"]):
        index = spec["first_index"] + offset
        if index % 4 == 3:
            target, arguments = _rest_client, ("127.0.0.1", spec["rest_port"], menu, index, stop_at, records)
        else:
            target, arguments = _grpc_client, (spec["grpc_target"], menu, index, stop_at, records)
        threads.append(threading.Thread(target=target, args=arguments, name=f"client-{index}", daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, stop_at - time.time()) + CALL_TIMEOUT_SECONDS + 5)
    with open(spec["records_path"], "w") as file:
        json.dump(list(records), file)
    print(RECORD_MARKER + json.dumps({"done": len(records)}), flush=True)
    return 0


# === The model directory and its faults (controller side) ===


def drop_in_version(model_dir: pathlib.Path, source_version: pathlib.Path, version: int) -> pathlib.Path:
    """Copies a version in as exporters do: to a hidden temporary name, then one rename."""
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".incoming-", dir=model_dir))
    shutil.copytree(source_version, staging, dirs_exist_ok=True)
    target = model_dir / str(version)
    os.rename(staging, target)
    return target


def drop_in_corrupt_version(model_dir: pathlib.Path, version: int) -> pathlib.Path:
    """A complete-looking version directory whose saved_model.pb is random bytes."""
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".incoming-", dir=model_dir))
    (staging / "saved_model.pb").write_bytes(random.Random(0).randbytes(4096))
    (staging / "variables").mkdir()
    target = model_dir / str(version)
    os.rename(staging, target)
    return target


def remove_model(model_dir: pathlib.Path, graveyard: pathlib.Path) -> None:
    """Takes a model's directory away at once (a rename out of the base directory), then deletes it."""
    moved = graveyard / model_dir.name
    os.rename(model_dir, moved)
    shutil.rmtree(moved)


def latest_version(model_dir: pathlib.Path) -> int:
    return max(int(path.name) for path in model_dir.iterdir() if path.name.isdigit())


def model_status(rest_port: int, model: str) -> object:
    """GET /v1/models/<model> (the REST status call), as JSON or the HTTP error."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v1/models/{model}", timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return {"http_status": error.code, "body": error.read().decode(errors="replace")[:300]}
    except OSError as error:
        return {"error": type(error).__name__}


# === Measuring the server ===


def resident_bytes(pid: int) -> int | None:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        pass
    except Exception:  # the process is gone
        return None
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            value = resident_bytes(self.pid)
            if value is not None:
                self.samples.append((time.time(), value))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def machine_info() -> dict:
    from training_speed import machine_info as training_machine_info

    return training_machine_info()


# === Analysis ===


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(latencies: list[float]) -> dict:
    return {"count": len(latencies),
            **{f"p{q}_ms": (None if not latencies else round(percentile(latencies, q) * 1000, 2))
               for q in (50, 90, 99)},
            "max_ms": round(max(latencies) * 1000, 2) if latencies else None}


def classify_status(record: dict, events: dict) -> str:
    """'ok', 'expected' (what a fault should cause) or 'unexpected'."""
    code = record["code"]
    if code == "OK":
        return "ok"
    if code in AFTER_SIGTERM and record["start"] >= events["sigterm"]:
        return "expected"
    if code in AFTER_REMOVAL and record["model"] == REMOVED_MODEL and record["start"] >= events["model_removed"]:
        return "expected"
    return "unexpected"


def phase_of(start: float, events: dict) -> str:
    phase = PHASES[0]
    for name in PHASES[1:]:
        if start >= events[PHASE_EVENTS[name]]:
            phase = name
    return phase


def analyse(records: list[dict], events: dict, load_start: float) -> dict:
    for record in records:
        record["class"] = classify_status(record, events)
        record["phase"] = phase_of(record["start"], events)
    by_class = collections.Counter(r["class"] for r in records)
    codes = collections.defaultdict(collections.Counter)
    for record in records:
        if record["code"] != "OK":
            codes[record["class"]][record["code"]] += 1
    per_model = {}
    for model in sorted({r["model"] for r in records}):
        mine = [r for r in records if r["model"] == model]
        per_model[model] = {
            "requests": len(mine), "ok": sum(r["code"] == "OK" for r in mine),
            "codes": dict(collections.Counter(r["code"] for r in mine)),
            "versions_served": dict(collections.Counter(str(r["version"]) for r in mine
                                                        if r["code"] == "OK" and r["version"] is not None)),
            "latency_ok": latency_summary([r["latency"] for r in mine if r["code"] == "OK"]),
        }
    phase_bounds = [load_start] + [events[PHASE_EVENTS[name]] for name in PHASES[1:]]
    phase_bounds.append(max(r["start"] for r in records) if records else events["sigterm"])
    per_phase = {}
    for position, name in enumerate(PHASES):
        mine = [r for r in records if r["phase"] == name]
        seconds = max(1e-9, phase_bounds[position + 1] - phase_bounds[position])
        per_phase[name] = {
            "from_s": round(phase_bounds[position] - load_start, 2),
            "seconds": round(seconds, 2),
            "requests": len(mine),
            "ok": sum(r["code"] == "OK" for r in mine),
            "requests_per_second": round(len(mine) / seconds, 1),
            "ok_per_second": round(sum(r["code"] == "OK" for r in mine) / seconds, 1),
            "codes": dict(collections.Counter(r["code"] for r in mine)),
            "latency_ok": latency_summary([r["latency"] for r in mine if r["code"] == "OK"]),
        }
    per_api = {api: {"requests": sum(r["api"] == api for r in records),
                     "latency_ok": latency_summary([r["latency"] for r in records
                                                    if r["api"] == api and r["code"] == "OK"])}
               for api in ("grpc", "rest")}
    before_sigterm = [r for r in records if r["start"] < events["sigterm"]]
    load_seconds = max(1e-9, events["sigterm"] - load_start)

    # When each fault showed: first request served by the new version, first NOT_FOUND of the removed model.
    new_version = events.get("new_version_number")
    first_new = min((r["start"] for r in records if r["model"] == NEW_VERSION_MODEL and r["version"] == new_version
                     and r["code"] == "OK"), default=None)
    last_old = max((r["start"] for r in records if r["model"] == NEW_VERSION_MODEL and r["code"] == "OK"
                    and r["version"] is not None and r["version"] != new_version), default=None)
    first_missing = min((r["start"] for r in records if r["model"] == REMOVED_MODEL
                         and r["code"] in AFTER_REMOVAL), default=None)
    last_served = max((r["start"] for r in records if r["model"] == REMOVED_MODEL and r["code"] == "OK"
                       and r["start"] < events["sigterm"]), default=None)
    after_sigterm = [r for r in records if r["start"] >= events["sigterm"]]
    messages = collections.defaultdict(collections.Counter)  # a few messages of each error code, with counts
    for record in records:
        if record["code"] != "OK":
            messages[f"{record['class']} {record['code']}"][record["message"]] += 1
    return {
        "requests": len(records),
        "requests_before_sigterm": len(before_sigterm),
        "requests_per_second_before_sigterm": round(len(before_sigterm) / load_seconds, 1),
        "ok": by_class["ok"],
        "errors_expected": by_class["expected"],
        "errors_unexpected": by_class["unexpected"],
        "expected_codes": dict(codes["expected"]),
        "unexpected_codes": dict(codes["unexpected"]),
        "error_messages": {key: dict(counter.most_common(3)) for key, counter in sorted(messages.items())},
        # The first few unexpected errors in full, to tell what caused them.
        "unexpected_examples": [
            {"at_s": round(r["start"] - load_start, 3), "latency_ms": round(r["latency"] * 1000, 2),
             "model": r["model"], "api": r["api"], "method": r["method"], "code": r["code"],
             "message": r["message"], "phase": r["phase"]}
            for r in sorted(records, key=lambda r: r["start"]) if r["class"] == "unexpected"][:20],
        "server_fault_codes": {code: count for code, count in codes["unexpected"].items() if code in SERVER_FAULTS},
        "latency_ok_before_sigterm": latency_summary([r["latency"] for r in before_sigterm if r["code"] == "OK"]),
        "per_phase": per_phase,
        "per_model": per_model,
        "per_api": per_api,
        "fault_effects": {
            "new_version_first_served_after_s": _delay(first_new, events["new_version"]),
            "old_version_last_served_after_s": _delay(last_old, events["new_version"]),
            "removed_model_first_not_found_after_s": _delay(first_missing, events["model_removed"]),
            "removed_model_last_ok_after_s": _delay(last_served, events["model_removed"]),
            "requests_started_after_sigterm_ok": sum(r["code"] == "OK" for r in after_sigterm),
        },
    }


def _delay(moment: float | None, event: float) -> float | None:
    return None if moment is None else round(moment - event, 3)


# === The controller ===


def start_workers(arguments, models: list[str], grpc_port: int, rest_port: int, work_dir: pathlib.Path):
    processes = max(1, min(arguments.client_processes, arguments.clients))
    per_process = [arguments.clients // processes + (i < arguments.clients % processes) for i in range(processes)]
    workers, first = [], 0
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
                       GRPC_VERBOSITY=os.environ.get("GRPC_VERBOSITY", "ERROR"))
    for number, threads in enumerate(per_process):
        spec = {"models": models, "threads": threads, "first_index": first,
                "grpc_target": f"127.0.0.1:{grpc_port}", "rest_port": rest_port,
                "records_path": str(work_dir / f"records-{number}.json")}
        first += threads
        log = open(work_dir / f"worker-{number}.log", "wb")
        process = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                   cwd=REPOSITORY_ROOT, env=environment, text=True)
        workers.append((process, spec, log))
    return workers


def read_marker(process: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"client process {process.pid} exited with {process.wait()}")
        if line.startswith(RECORD_MARKER):
            return json.loads(line[len(RECORD_MARKER):])
    raise TimeoutError("client process did not answer")


def server_log_summary(log_path: pathlib.Path) -> dict:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    lines = text.splitlines()
    interesting = [line for line in lines if re.search(r"ERROR|CRITICAL|Traceback|Failed|failed", line)]
    return {"lines": len(lines), "tracebacks": text.count("Traceback (most recent call last)"),
            "error_lines": len([line for line in lines if " ERROR " in line or "ERROR:" in line]),
            "warning_lines": len([line for line in lines if "WARNING" in line]),
            "notable_lines": [line[:400] for line in interesting[:25]],
            "tail": [line[:400] for line in lines[-15:]]}


def run(arguments) -> dict:
    from serving.server.launch import free_port, wait_for_health

    work_dir = pathlib.Path(tempfile.mkdtemp(prefix="load-and-faults-"))
    base_dir = work_dir / "models"
    graveyard = work_dir / "removed"
    graveyard.mkdir()
    shutil.copytree(SAVED_MODELS, base_dir)
    models = sorted(path.name for path in base_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    for needed in (NEW_VERSION_MODEL, CORRUPT_VERSION_MODEL, REMOVED_MODEL):
        if needed not in models:
            raise SystemExit(f"saved_models/ has no {needed}; the fault schedule needs it")

    grpc_port, rest_port = free_port(), free_port()
    command = [sys.executable, "-m", "serving.server.cli", f"--port={grpc_port}", "--host=127.0.0.1",
               f"--rest_api_port={rest_port}", f"--model_base_dir={base_dir}",
               f"--file_system_poll_wait_seconds={arguments.poll_seconds}",
               f"--shutdown_grace_seconds={arguments.grace_seconds}", *arguments.server_args]
    log_path = work_dir / "server.log"
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    launched = time.time()
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPOSITORY_ROOT,
                                  env=environment)
    workers = start_workers(arguments, models, grpc_port, rest_port, work_dir)
    result: dict = {}
    sampler = None
    try:
        wait_for_health(f"127.0.0.1:{grpc_port}", timeout_seconds=arguments.startup_timeout, process=server)
        healthy = time.time()
        for process, _, _ in workers:
            read_marker(process, arguments.startup_timeout)
        sampler = MemorySampler(server.pid)
        sampler.start()
        time.sleep(1.0)
        rss_before = resident_bytes(server.pid)

        load_start = time.time() + 0.5
        stop_at = load_start + arguments.duration + arguments.tail
        for process, _, _ in workers:
            process.stdin.write(json.dumps({"start_at": load_start, "stop_at": stop_at}) + "\n")
            process.stdin.flush()

        events: dict = {}
        event_log = []
        for fraction, name, target in SCHEDULE:
            moment = load_start + fraction * arguments.duration
            time.sleep(max(0.0, moment - time.time()))
            at = time.time()
            detail: dict = {"target": target}
            if name == "new_version":
                model_dir = base_dir / target
                old = latest_version(model_dir)
                drop_in_version(model_dir, model_dir / str(old), old + 1)
                events["new_version_number"] = old + 1
                detail.update(source_version=old, new_version=old + 1)
            elif name == "corrupt_version":
                model_dir = base_dir / target
                version = latest_version(model_dir) + 1
                drop_in_corrupt_version(model_dir, version)
                detail.update(corrupt_version=version)
            elif name == "model_removed":
                remove_model(base_dir / target, graveyard)
            elif name == "sigterm":
                # What the server says about the changed models just before it is stopped.
                status_before_sigterm = {model: model_status(rest_port, model)
                                         for model in (NEW_VERSION_MODEL, CORRUPT_VERSION_MODEL, REMOVED_MODEL)}
                at = time.time()
                server.send_signal(signal.SIGTERM)
            events[name] = at
            event_log.append({"event": name, "at_s": round(at - load_start, 3), **detail})
            logger.info("%5.1f s  %s %s", at - load_start, name, target)

        sigterm_at = events["sigterm"]
        try:
            exit_code = server.wait(timeout=arguments.grace_seconds + 20)
        except subprocess.TimeoutExpired:
            exit_code = None
        exited_at = time.time()
        sampler.stop()

        worker_codes = []
        for process, spec, log in workers:
            process.stdin.close()
            try:
                process.wait(timeout=arguments.tail + CALL_TIMEOUT_SECONDS + 30)
            except subprocess.TimeoutExpired:
                process.kill()
            worker_codes.append(process.returncode)
            log.close()
        records = []
        for _, spec, _ in workers:
            path = pathlib.Path(spec["records_path"])
            if path.exists():
                for start, latency, model, api, method, code, version, message in json.loads(path.read_text()):
                    records.append({"start": start, "latency": latency, "model": model, "api": api,
                                    "method": method, "code": code, "version": version, "message": message})
        records.sort(key=lambda r: r["start"])

        samples = sampler.samples
        during = [value for moment, value in samples if load_start <= moment < sigterm_at]
        rss_end = [value for moment, value in samples if moment < sigterm_at]
        summary = analyse(records, events, load_start)
        result = {
            "benchmark": NAME,
            "command": " ".join(["python", "benchmarks/load_and_faults.py", *arguments.argv]),
            "settings": {"clients": arguments.clients, "client_processes": len(workers),
                         "grpc_clients": sum(1 for i in range(arguments.clients) if i % 4 != 3),
                         "rest_clients": sum(1 for i in range(arguments.clients) if i % 4 == 3),
                         "duration_s": arguments.duration, "tail_after_sigterm_s": arguments.tail,
                         "poll_seconds": arguments.poll_seconds, "shutdown_grace_seconds": arguments.grace_seconds,
                         "call_timeout_s": CALL_TIMEOUT_SECONDS, "error_backoff_s": ERROR_BACKOFF_SECONDS,
                         "models": models, "server_command": " ".join(command[1:]).replace(str(work_dir), "<tmp>"),
                         "quick": arguments.quick},
            "events": event_log,
            "server": {
                "startup_s": round(healthy - launched, 2),
                "exit_code": exit_code,
                "sigterm_to_exit_s": round(exited_at - sigterm_at, 3) if exit_code is not None else None,
                "rss_mib_before_load": _mib(rss_before),
                "rss_mib_peak_during_load": _mib(max(during) if during else None),
                "rss_mib_at_sigterm": _mib(rss_end[-1] if rss_end else None),
                "rss_samples": [[round(moment - load_start, 2), _mib(value)] for moment, value in samples],
                "log": server_log_summary(log_path),
                "model_status_before_sigterm": status_before_sigterm,
            },
            "client_process_exit_codes": worker_codes,
            "results": summary,
            "machine": machine_info(),
            "_records": records,
            "_load_start": load_start,
        }
        return result
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if server.poll() is None:
            server.kill()
            server.wait()
        for process, _, log in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
        shutil.rmtree(work_dir, ignore_errors=True)


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


# === Reports ===


def write_markdown(result: dict, path: pathlib.Path) -> None:
    results, server, settings = result["results"], result["server"], result["settings"]
    machine = result["machine"]
    lines = [
        "# Load and faults", "",
        f"`{result['command']}`: {settings['clients']} clients ({settings['grpc_clients']} gRPC through the "
        f"official stubs, {settings['rest_clients']} REST) in {settings['client_processes']} processes for "
        f"{settings['duration_s']} s on loopback, over {', '.join(settings['models'])}; SIGTERM at the end with "
        f"the clients still sending for {settings['tail_after_sigterm_s']} s.",
        "",
        f"Machine: {machine.get('cpu_model')} ({machine.get('usable_cpus')} usable CPUs, "
        f"hypervisor {machine.get('hypervisor')}), {machine.get('platform')}, Python {machine.get('python')}.",
        "",
        "## Totals", "",
        "| requests | before SIGTERM | req/s before SIGTERM | OK | expected errors | unexpected errors | "
        "p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {results['requests']} | {results['requests_before_sigterm']} | "
        f"{results['requests_per_second_before_sigterm']} | {results['ok']} | {results['errors_expected']} | "
        f"{results['errors_unexpected']} | {results['latency_ok_before_sigterm']['p50_ms']} | "
        f"{results['latency_ok_before_sigterm']['p90_ms']} | {results['latency_ok_before_sigterm']['p99_ms']} |",
        "",
        f"Expected error codes: {_codes(results['expected_codes'])}. "
        f"Unexpected: {_codes(results['unexpected_codes'])}. "
        f"Server faults (INTERNAL, UNKNOWN, HTTP 500): {_codes(results['server_fault_codes'])}.",
        "",
        f"Server: started (health SERVING) in {server['startup_s']} s; exit code {server['exit_code']}, "
        f"{server['sigterm_to_exit_s']} s from SIGTERM to exit; resident memory {server['rss_mib_before_load']} MiB "
        f"before the load, {server['rss_mib_peak_during_load']} MiB at the peak, {server['rss_mib_at_sigterm']} MiB "
        f"at SIGTERM. Log: {server['log']['lines']} lines, {server['log']['tracebacks']} tracebacks.",
        "",
        "## Events", "",
        "| at s | event | detail |", "|---|---|---|",
    ]
    for event in result["events"]:
        detail = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "at_s"))
        lines.append(f"| {event['at_s']} | {event['event']} | {detail} |")
    effects = results["fault_effects"]
    lines += ["", "Fault effects (seconds after the event): "
              + ", ".join(f"{key} {value}" for key, value in effects.items()) + ".", ""]
    lines += ["## Phases (latency of OK requests)", "",
              "| phase | from s | seconds | requests | req/s | OK/s | p50 ms | p90 ms | p99 ms | codes |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, phase in results["per_phase"].items():
        latency = phase["latency_ok"]
        lines.append(f"| {name} | {phase['from_s']} | {phase['seconds']} | {phase['requests']} | "
                     f"{phase['requests_per_second']} | {phase['ok_per_second']} | {latency['p50_ms']} | "
                     f"{latency['p90_ms']} | {latency['p99_ms']} | {_codes(phase['codes'])} |")
    lines += ["", "## Models", "",
              "| model | requests | OK | p50 ms | p99 ms | versions served (gRPC) | codes |",
              "|---|---|---|---|---|---|---|"]
    for model, entry in results["per_model"].items():
        lines.append(f"| {model} | {entry['requests']} | {entry['ok']} | {entry['latency_ok']['p50_ms']} | "
                     f"{entry['latency_ok']['p99_ms']} | {_codes(entry['versions_served'])} | "
                     f"{_codes(entry['codes'])} |")
    lines += ["", "## APIs", "", "| API | requests | p50 ms | p99 ms |", "|---|---|---|---|"]
    for api, entry in results["per_api"].items():
        lines.append(f"| {api} | {entry['requests']} | {entry['latency_ok']['p50_ms']} | "
                     f"{entry['latency_ok']['p99_ms']} |")
    lines += ["", "Expected errors: NOT_FOUND / HTTP 404 for the removed model after its removal; UNAVAILABLE, "
              "CANCELLED, HTTP 503 and refused or reset connections after SIGTERM. Everything else counts as unexpected.", ""]
    path.write_text("\n".join(lines))


def _codes(counts: dict) -> str:
    return ", ".join(f"{code} {count}" for code, count in sorted(counts.items(), key=lambda item: -item[1])) or "none"


def write_plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records, load_start = result["_records"], result["_load_start"]
    figure, axis = plt.subplots(figsize=(10, 4.8))
    styles = {"ok": ("tab:blue", "OK"), "expected": ("tab:orange", "expected error"),
              "unexpected": ("tab:red", "unexpected error")}
    for status, (color, label) in styles.items():
        mine = [r for r in records if r["class"] == status]
        if mine:
            axis.scatter([r["start"] - load_start for r in mine], [max(r["latency"], 1e-4) * 1000 for r in mine],
                         s=2, alpha=0.35 if status == "ok" else 0.8, color=color, label=f"{label} ({len(mine)})",
                         rasterized=True)
    # Per-second p50 and p99 of the OK requests.
    buckets = collections.defaultdict(list)
    for record in records:
        if record["code"] == "OK":
            buckets[int(record["start"] - load_start)].append(record["latency"] * 1000)
    seconds = sorted(buckets)
    axis.plot([s + 0.5 for s in seconds], [percentile(buckets[s], 50) for s in seconds], color="black",
              linewidth=1.2, label="p50 per second (OK)")
    axis.plot([s + 0.5 for s in seconds], [percentile(buckets[s], 99) for s in seconds], color="black",
              linewidth=1, linestyle="--", label="p99 per second (OK)")
    axis.set_yscale("log")
    axis.set_xlabel("seconds since the load started")
    axis.set_ylabel("latency (ms)")
    top = axis.get_ylim()[1]
    for event in result["events"]:
        axis.axvline(event["at_s"], color="tab:green" if event["event"] != "sigterm" else "tab:red",
                     linestyle=":", linewidth=1.2)
        axis.text(event["at_s"], top, " " + event["event"].replace("_", " "), rotation=90, va="top", ha="right",
                  fontsize=8)
    memory = axis.twinx()
    samples = result["server"]["rss_samples"]
    memory.plot([s[0] for s in samples], [s[1] for s in samples], color="tab:purple", linewidth=1, alpha=0.7)
    memory.set_ylabel("server resident memory (MiB)", color="tab:purple")
    settings = result["settings"]
    axis.set_title(f"{settings['clients']} clients for {settings['duration_s']} s: latency, faults, SIGTERM")
    axis.legend(loc="lower left", fontsize=7, markerscale=4)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_outputs(result: dict, output_dir: pathlib.Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_plot(result, output_dir / f"{NAME}.png")
    write_markdown(result, output_dir / f"{NAME}.md")
    public = {key: value for key, value in result.items() if not key.startswith("_")}
    (output_dir / f"{NAME}.json").write_text(json.dumps(public, indent=2) + "\n")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=None, help="Client threads (default 64; 4 with --quick).")
    parser.add_argument("--duration", type=float, default=None,
                        help="Seconds of load before SIGTERM (default 60; 8 with --quick).")
    parser.add_argument("--tail", type=float, default=3.0, help="Seconds the clients keep sending after SIGTERM.")
    parser.add_argument("--client_processes", type=int, default=2,
                        help="Processes the client threads are spread over.")
    parser.add_argument("--poll_seconds", type=float, default=0.5, help="--file_system_poll_wait_seconds.")
    parser.add_argument("--grace_seconds", type=float, default=10.0, help="--shutdown_grace_seconds.")
    parser.add_argument("--startup_timeout", type=float, default=120.0)
    parser.add_argument("--server_args", nargs="*", default=[], help="More flags for the server.")
    parser.add_argument("--output_dir", type=pathlib.Path, default=None,
                        help="Default benchmarks/results/, or a new temporary directory with --quick.")
    parser.add_argument("--quick", action="store_true", help="4 clients for 8 s, into a temporary directory.")
    arguments = parser.parse_args(argv)
    arguments.argv = argv
    if arguments.clients is None:
        arguments.clients = 4 if arguments.quick else 64
    if arguments.duration is None:
        arguments.duration = 8.0 if arguments.quick else 60.0
    if arguments.quick:
        arguments.client_processes = min(arguments.client_processes, 1)
        arguments.tail = min(arguments.tail, 2.0)
    if arguments.output_dir is None:
        arguments.output_dir = (pathlib.Path(tempfile.mkdtemp(prefix="load-and-faults-results-"))
                                if arguments.quick else DEFAULT_OUTPUT_DIR)
    return arguments


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return run_worker(json.loads(argv[1]))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments = parse_arguments(argv)
    result = run(arguments)
    write_outputs(result, arguments.output_dir)
    results, server = result["results"], result["server"]
    print(f"requests {results['requests']} ({results['requests_per_second_before_sigterm']}/s before SIGTERM), "
          f"OK {results['ok']}, expected errors {results['expected_codes']}, "
          f"unexpected {results['unexpected_codes']}; p50/p99 "
          f"{results['latency_ok_before_sigterm']['p50_ms']}/{results['latency_ok_before_sigterm']['p99_ms']} ms; "
          f"RSS {server['rss_mib_before_load']} -> {server['rss_mib_at_sigterm']} MiB; exit code "
          f"{server['exit_code']} after {server['sigterm_to_exit_s']} s")
    print(f"wrote {arguments.output_dir / (NAME + '.json')}, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
