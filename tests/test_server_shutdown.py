"""SIGTERM: stop accepting, finish what is in flight, exit 0."""

import signal
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving_helpers import LANGUAGE_MODEL_NAME, running_server, session_toy_models


def _request(token_ids):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = LANGUAGE_MODEL_NAME
    request.inputs["token_ids"].CopyFrom(tf.make_tensor_proto(token_ids))
    return request


def _wait_for_queued_requests(server, count, timeout_seconds=20.0):
    """Waits until the server's metrics show `count` requests in its batch queues."""
    deadline = time.monotonic() + timeout_seconds
    line = f"rnn_zoo_serving_batch_queued_requests {float(count)}"
    while line not in urllib.request.urlopen(server.monitoring_url, timeout=5).read().decode():
        assert time.monotonic() < deadline, f"the server never had {count} requests queued"
        time.sleep(0.05)


def test_sigterm_finishes_requests_in_flight(tmp_path_factory):
    models_root = session_toy_models(tmp_path_factory)
    directory = tmp_path_factory.mktemp("shutdown")
    # A long batch timeout keeps requests in flight (waiting in the batch queue)
    # until SIGTERM comes; shutting down runs what is queued at once.
    (directory / "batching.config").write_text("batch_timeout_micros { value: 20000000 }\nmax_batch_size { value: 64 }")
    arguments = ["--enable_batching", f"--batching_parameters_file={directory / 'batching.config'}"]
    with running_server(model_base_path=models_root / LANGUAGE_MODEL_NAME, model_name=LANGUAGE_MODEL_NAME,
                        rest=False, monitoring=True, log_dir=directory, extra_arguments=arguments) as server:
        with server.channel() as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            in_flight = [stub.Predict.future(_request(np.array([[2, 3 + index]], np.int64)), timeout=20)
                         for index in range(3)]
            _wait_for_queued_requests(server, 3)
            server.process.send_signal(signal.SIGTERM)
            for future in in_flight:
                response = future.result()
                assert response.outputs["logits"].tensor_shape.dim[1].size == 2
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(_request(np.array([[2]], np.int64)), timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert server.process.wait(timeout=30) == 0
    assert "Server stopped" in server.log_text()


def _health(channel, service=""):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=2)
    except grpc.RpcError as error:
        return error.code()
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def _wait_for_health(channel, status, timeout_seconds=90.0, service=""):
    """Polls until health answers `status`; returns what it answered meanwhile (the bound is generous)."""
    deadline, seen = time.monotonic() + timeout_seconds, []
    while (answer := _health(channel, service)) != status:
        seen.append(answer)
        assert time.monotonic() < deadline, f"health never said {status}; it said {sorted(set(map(str, seen)))}"
        time.sleep(0.1)
    return seen


def test_health_says_not_serving_until_the_configured_model_has_loaded(tmp_path_factory):
    import subprocess
    import sys

    from serving.server.launch import ServerProcess, free_port, stop_server
    from serving_helpers import copy_version_atomically

    models_root = session_toy_models(tmp_path_factory)
    directory = tmp_path_factory.mktemp("readiness")
    base_path = directory / LANGUAGE_MODEL_NAME
    base_path.mkdir()  # configured, with no version yet
    port = free_port()
    log_path = directory / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving.server.cli", "--host=127.0.0.1", f"--port={port}",
             f"--model_name={LANGUAGE_MODEL_NAME}", f"--model_base_path={base_path}",
             "--file_system_poll_wait_seconds=0.2"], stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(process, port, None, None, log_path)
    try:
        with server.channel() as channel:
            _wait_for_health(channel, "NOT_SERVING")  # the port is open, the model is not there
            assert _health(channel, "tensorflow.serving.PredictionService") == "NOT_SERVING"
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(_request(np.array([[2]], np.int64)), timeout=5)
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND

            copy_version_atomically(models_root / LANGUAGE_MODEL_NAME / "1", base_path, 1)
            seen = _wait_for_health(channel, "SERVING")
            assert set(seen) <= {"NOT_SERVING"}, seen  # never anything but NOT_SERVING before
            assert stub.Predict(_request(np.array([[2]], np.int64)), timeout=10).outputs["logits"]
    finally:
        exit_code = stop_server(server)
    assert exit_code == 0, server.log_text()
    assert "Health stays NOT_SERVING until these models have a version available: lm" in server.log_text()


def test_sigterm_under_load_answers_what_is_in_flight_and_exits_0_within_the_grace_period(tmp_path_factory):
    import json
    import socket
    import threading

    grace_seconds = 4.0
    models_root = session_toy_models(tmp_path_factory)
    directory = tmp_path_factory.mktemp("sigterm")
    (directory / "batching.config").write_text("batch_timeout_micros { value: 60000000 }\nmax_batch_size { value: 64 }")
    arguments = ["--enable_batching", f"--batching_parameters_file={directory / 'batching.config'}",
                 f"--shutdown_grace_seconds={grace_seconds}"]
    with running_server(model_base_path=models_root / LANGUAGE_MODEL_NAME, model_name=LANGUAGE_MODEL_NAME,
                        log_dir=directory, extra_arguments=arguments) as server:
        with server.channel() as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            in_flight = [stub.Predict.future(_request(np.array([[2, 3 + index]], np.int64)), timeout=60)
                         for index in range(3)]
            rest_answer = {}

            def rest_call():
                request = urllib.request.Request(f"{server.rest_url}/v1/models/{LANGUAGE_MODEL_NAME}:predict",
                                                 data=json.dumps({"instances": [[2, 9]]}).encode())
                with urllib.request.urlopen(request, timeout=60) as response:
                    rest_answer.update(status=response.status, body=json.loads(response.read()))

            rest_thread = threading.Thread(target=rest_call)
            rest_thread.start()
            _wait_for_queued_requests(server, 4)
            # Clients that would hold a shutdown up: one sends half a request line and waits,
            # one keeps an idle keep-alive connection open.
            stalled = socket.create_connection(("127.0.0.1", server.rest_port), timeout=60)
            stalled.sendall(b"POST /v1/models/lm:pre")
            idle = socket.create_connection(("127.0.0.1", server.rest_port), timeout=60)
            idle.sendall(b"GET /v1/models/lm HTTP/1.1\r\nHost: x\r\n\r\n")
            assert idle.recv(65536).startswith(b"HTTP/1.1 200")

            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            for future in in_flight:
                assert future.result().outputs["logits"].tensor_shape.dim[1].size == 2
            rest_thread.join(timeout=60)
            assert rest_answer["status"] == 200 and len(rest_answer["body"]["predictions"]) == 1
            assert server.process.wait(timeout=60) == 0
            elapsed = time.monotonic() - signalled
            stalled.close()
            idle.close()
    assert elapsed < grace_seconds + 3, f"exit took {elapsed:.1f} s with a grace period of {grace_seconds} s"
    assert "Server stopped" in server.log_text() and "Traceback" not in server.log_text()


def test_after_sigterm_calls_are_answered_then_refused_with_unavailable_never_cancelled(tmp_path_factory):
    """The three steps of a shutdown under steady load (serving.server.access.ShutdownGate)."""
    import json
    import threading

    from serving.server.access import SHUTTING_DOWN_MESSAGE

    drain_seconds = 3.0
    models_root = session_toy_models(tmp_path_factory)
    directory = tmp_path_factory.mktemp("drain")
    arguments = [f"--shutdown_drain_seconds={drain_seconds}", "--shutdown_grace_seconds=5"]
    with running_server(model_base_path=models_root / LANGUAGE_MODEL_NAME, model_name=LANGUAGE_MODEL_NAME,
                        log_dir=directory, extra_arguments=arguments) as server:
        records, stop = [], threading.Event()  # (api, started, status, message)

        def grpc_client():
            with server.channel() as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        stub.Predict(_request(np.array([[2, 3]], np.int64)), timeout=10)
                        records.append(("grpc", started, "OK", ""))
                    except grpc.RpcError as error:
                        records.append(("grpc", started, error.code().name, error.details() or ""))
                        if error.code() != grpc.StatusCode.UNAVAILABLE or "shutting down" not in (error.details() or ""):
                            return  # the server has stopped

        def rest_client():
            body = json.dumps({"instances": [[2, 3]]}).encode()
            while not stop.is_set():
                started = time.monotonic()
                request = urllib.request.Request(f"{server.rest_url}/v1/models/{LANGUAGE_MODEL_NAME}:predict",
                                                 data=body)
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        response.read()
                    records.append(("rest", started, "OK", ""))
                except urllib.error.HTTPError as error:
                    records.append(("rest", started, f"HTTP {error.code}", json.loads(error.read())["error"]))
                except OSError:
                    return  # the server has stopped

        clients = [threading.Thread(target=target) for target in (grpc_client, grpc_client, rest_client)]
        for client in clients:
            client.start()
        while sum(record[2] == "OK" for record in records) < 20:
            time.sleep(0.05)
        with server.channel() as channel:
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            health_after = _wait_for_health(channel, "NOT_SERVING", timeout_seconds=drain_seconds)
        assert server.process.wait(timeout=60) == 0
        elapsed = time.monotonic() - signalled
        stop.set()
        for client in clients:
            client.join(timeout=30)
    assert set(health_after) <= {"SERVING"}
    before = [record for record in records if record[1] < signalled]
    after = [record for record in records if record[1] >= signalled]
    assert before and all(status == "OK" for _, _, status, _ in before), sorted({r[2] for r in before})
    # Step 1: still answered while health says NOT_SERVING (the clients never pause, so it lasts
    # the whole drain period); step 2: refused, saying why; a call is never cancelled.
    assert any(status == "OK" and started > signalled + drain_seconds / 2 for _, started, status, _ in after)
    refused = {api for api, _, status, message in after
               if status in ("UNAVAILABLE", "HTTP 503") and message == SHUTTING_DOWN_MESSAGE}
    assert refused == {"grpc", "rest"}
    # Past the refusals, only each gRPC client's last call fails otherwise: the port has closed
    # (UNAVAILABLE), or, for a call that reached gRPC core in the instant it stopped, CANCELLED.
    # These clients retry at once; real ones back off, which makes that instant rarer.
    last = [record for record in after if record[2] != "OK" and record[3] != SHUTTING_DOWN_MESSAGE]
    assert len(last) <= 2 and {record[2] for record in last} <= {"UNAVAILABLE", "CANCELLED"}, last
    assert drain_seconds <= elapsed < drain_seconds + 5 + 3
    assert "still answering" in server.log_text() and "Traceback" not in server.log_text()
