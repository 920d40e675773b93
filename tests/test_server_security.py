"""Hostile and unauthorised callers against a real server: tokens, limits, the admin RPC, TLS, deadlines.

Three servers, one per configuration, each shared by the tests of its
section; every refusal is checked for its status code and for naming the
flag that changes it.
"""

import json
import shutil
import ssl
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tensorflow_serving.apis import (classification_pb2, get_model_status_pb2, model_management_pb2, model_service_pb2_grpc,
                                     prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

from serving.client import cli as client_cli
from serving.client.connection import ConnectionSecurity
from serving.client.serving_client import ServingClient, ServingClientError
from serving.protocol.errors import ServingError
from serving_helpers import (CLASSIFIER_NAME, LANGUAGE_MODEL_NAME, predict_request, make_certificate_authority,
                             make_signed_certificate, running_server, session_toy_models, write_ssl_config)

TIMEOUT_SECONDS = 10
TOKEN = "s3cret-token-for-tests"
MAX_BATCH_SIZE = 4
MAX_MESSAGE_BYTES = 64 * 1024


def _predict_request(model=LANGUAGE_MODEL_NAME, signature="", **inputs):
    return predict_request(model, signature, **inputs)


def _token_ids(rows=1):
    return np.full((rows, 2), 2, np.int64)


def _rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, timeout=TIMEOUT_SECONDS, **kwargs)
    return raised.value


def _rest(url, body=None, headers=None, context=None):
    """(HTTP status, decoded JSON body, response headers) of one REST call."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


def _bearer(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


# === Tokens, request limits, allowed reload paths (one server) ===


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    return session_toy_models(tmp_path_factory)


@pytest.fixture(scope="module")
def guarded(models_root, tmp_path_factory):
    directory = tmp_path_factory.mktemp("guarded")
    token_file = directory / "tokens.txt"
    token_file.write_text(f"# rotated monthly\nold-token-still-accepted\n{TOKEN}\n")
    arguments = [f"--auth_token_file={token_file}", "--health_checks_without_token",
                 f"--max_batch_size={MAX_BATCH_SIZE}", f"--max_message_bytes={MAX_MESSAGE_BYTES}"]
    with running_server(model_base_dir=models_root, log_dir=directory, extra_arguments=arguments,
                        security=ConnectionSecurity(auth_token=TOKEN)) as server:
        yield server


@pytest.fixture(scope="module")
def guarded_channel(guarded):
    with guarded.channel() as channel:
        yield channel


@pytest.fixture(scope="module")
def guarded_prediction(guarded_channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(guarded_channel)


AUTHORIZED = (("authorization", f"Bearer {TOKEN}"),)


@pytest.mark.parametrize("metadata, code, fragment", [
    ((), grpc.StatusCode.UNAUTHENTICATED, "--auth_token_file"),
    ((("authorization", "Basic dXNlcjpwYXNz"),), grpc.StatusCode.UNAUTHENTICATED, "Bearer <token>"),
    ((("authorization", "Bearer"),), grpc.StatusCode.UNAUTHENTICATED, "Bearer <token>"),
    ((("authorization", "Bearer wrong-token"),), grpc.StatusCode.PERMISSION_DENIED, "--auth_token_file"),
    ((("authorization", f"Bearer {TOKEN}x"),), grpc.StatusCode.PERMISSION_DENIED, "not accepted"),
])
def test_grpc_calls_without_the_right_token_are_refused(guarded_prediction, metadata, code, fragment):
    error = _rpc_error(guarded_prediction.Predict, _predict_request(token_ids=_token_ids()), metadata=metadata)
    assert error.code() == code
    assert fragment in error.details()


def test_every_token_of_the_file_is_accepted_and_the_scheme_is_case_blind(guarded_prediction):
    for value in (f"Bearer {TOKEN}", "bearer old-token-still-accepted"):
        response = guarded_prediction.Predict(_predict_request(token_ids=_token_ids()), timeout=TIMEOUT_SECONDS,
                                              metadata=(("authorization", value),))
        assert response.model_spec.name == LANGUAGE_MODEL_NAME


def test_model_service_and_reflection_need_the_token_too(guarded_channel):
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = LANGUAGE_MODEL_NAME
    error = _rpc_error(model_service_pb2_grpc.ModelServiceStub(guarded_channel).GetModelStatus, status_request)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    reflection = reflection_pb2_grpc.ServerReflectionStub(guarded_channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                timeout=TIMEOUT_SECONDS)
    with pytest.raises(grpc.RpcError) as raised:
        list(responses)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_checks_stay_open_with_the_flag(guarded_channel):
    response = health_pb2_grpc.HealthStub(guarded_channel).Check(health_pb2.HealthCheckRequest(),
                                                                  timeout=TIMEOUT_SECONDS)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("headers, status, fragment", [
    ({}, 401, "--auth_token_file"),
    ({"Authorization": "Bearer nope"}, 403, "not accepted"),
    (_bearer(), 200, None),
])
def test_rest_predict_needs_the_token(guarded, headers, status, fragment):
    code, body, response_headers = _rest(f"{guarded.rest_url}/v1/models/{LANGUAGE_MODEL_NAME}:predict",
                                         {"instances": [[2, 3]]}, headers)
    assert code == status, body
    if fragment is None:
        assert len(body["predictions"]) == 1
    else:
        assert fragment in body["error"]
    if status == 401:
        assert response_headers["WWW-Authenticate"] == "Bearer"


def test_rest_model_status_is_the_open_health_check_and_metadata_is_not(guarded):
    code, body, _ = _rest(f"{guarded.rest_url}/v1/models/{LANGUAGE_MODEL_NAME}")
    assert code == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
    code, body, _ = _rest(f"{guarded.rest_url}/v1/models/{LANGUAGE_MODEL_NAME}/metadata")
    assert code == 401


def test_client_library_sends_the_token(guarded):
    with ServingClient(guarded.grpc_target, TIMEOUT_SECONDS, security=ConnectionSecurity(auth_token=TOKEN)) as client:
        assert client.score(LANGUAGE_MODEL_NAME, ["the cat sat"])[0].num_tokens == 2
    with ServingClient(guarded.grpc_target, TIMEOUT_SECONDS) as client:
        with pytest.raises(ServingClientError) as raised:
            client.get_model_status(LANGUAGE_MODEL_NAME)
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_client_cli_reads_the_token_file(guarded, tmp_path, capsys):
    (tmp_path / "token").write_text(TOKEN + "\n")
    code = client_cli.main(["--server", guarded.grpc_target, "--auth_token_file", str(tmp_path / "token"),
                            "status", LANGUAGE_MODEL_NAME])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["versions"][0]["state"] == "AVAILABLE"


# --- limits ---


@pytest.mark.parametrize("request_factory, fragment", [
    (lambda: _predict_request(token_ids=_token_ids(MAX_BATCH_SIZE + 1)), "Input token_ids asks for 5 rows"),
    (lambda: _predict_request(signature="initial_state", batch_size=np.int32(10**9)),
     "Input batch_size asks for 1000000000 rows"),
    (lambda: _predict_request(signature="tokenize", text=np.array(["a"] * 100, dtype=object)), "100 rows"),
])
def test_a_request_over_max_batch_size_is_refused_naming_the_flag(guarded_prediction, request_factory, fragment):
    error = _rpc_error(guarded_prediction.Predict, request_factory(), metadata=AUTHORIZED)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in error.details() and f"at most {MAX_BATCH_SIZE}" in error.details()
    assert "--max_batch_size" in error.details()


def test_a_classify_over_max_batch_size_is_refused(guarded_prediction):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = CLASSIFIER_NAME, "classify"
    for _ in range(MAX_BATCH_SIZE + 1):
        request.input.example_list.examples.add().features.feature["text"].bytes_list.value.append(b"good")
    error = _rpc_error(guarded_prediction.Classify, request, metadata=AUTHORIZED)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "--max_batch_size" in error.details()


def test_rest_over_max_batch_size_is_400(guarded):
    code, body, _ = _rest(f"{guarded.rest_url}/v1/models/{LANGUAGE_MODEL_NAME}:predict",
                          {"instances": [[2, 3]] * (MAX_BATCH_SIZE + 1)}, _bearer())
    assert code == 400 and "--max_batch_size" in body["error"]


def test_a_message_over_the_limit_is_refused_naming_the_flag(guarded_prediction):
    text = np.array(["the " * (MAX_MESSAGE_BYTES // 4)], dtype=object)  # one row, just over the limit
    error = _rpc_error(guarded_prediction.Predict, _predict_request(signature="tokenize", text=text),
                       metadata=AUTHORIZED)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "request is" in error.details() and "--max_message_bytes" in error.details()


def test_a_response_over_the_limit_is_refused_naming_the_flag(guarded_prediction):
    # 4 rows of 500 tokens: a 16 kB request whose logits (4 x 500 x 16 floats, 128 kB) are over 64 KiB.
    error = _rpc_error(guarded_prediction.Predict, _predict_request(token_ids=np.full((4, 500), 2, np.int64)),
                       metadata=AUTHORIZED)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "response is" in error.details() and "--max_message_bytes" in error.details()


def test_a_rest_body_over_the_limit_is_413(guarded):
    code, body, _ = _rest(f"{guarded.rest_url}/v1/models/{LANGUAGE_MODEL_NAME}:predict",
                          {"instances": ["x" * MAX_MESSAGE_BYTES]}, _bearer())
    assert code == 413 and "--max_message_bytes" in body["error"]


def test_chunked_rest_bodies_are_read_as_one_request(guarded):
    request = urllib.request.Request(f"{guarded.rest_url}/v1/models/{LANGUAGE_MODEL_NAME}:predict",
                                     data=iter([b'{"instances": ', b'[[2, 3]]}']), headers=dict(_bearer()),
                                     method="POST")
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # an iterable body goes chunked
        body = json.loads(response.read())
    assert np.asarray(body["predictions"]).shape == (1, 2, 16)


# --- the admin RPC ---


def _reload_request(**base_paths):
    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in base_paths.items():
        config.model_config_list.config.add(name=name, base_path=str(base_path), model_platform="tensorflow")
    return model_management_pb2.ReloadConfigRequest(config=config)


def test_reload_outside_the_allowed_directories_is_refused(guarded_channel, models_root, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(models_root / LANGUAGE_MODEL_NAME, outside)
    escape_by_link = models_root / f"link-{tmp_path.name}"  # under the allowed directory, leading out of it
    escape_by_link.symlink_to(tmp_path, target_is_directory=True)
    stub = model_service_pb2_grpc.ModelServiceStub(guarded_channel)
    try:
        for base_path in (outside, models_root / ".." / tmp_path.name / "elsewhere", escape_by_link / "elsewhere"):
            error = _rpc_error(stub.HandleReloadConfigRequest, _reload_request(evil=base_path), metadata=AUTHORIZED)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, base_path
            assert "--allowed_model_base_paths" in error.details() and "evil" in error.details()
    finally:
        escape_by_link.unlink()
    # Nothing changed: the models still serve.
    assert prediction_service_pb2_grpc.PredictionServiceStub(guarded_channel).Predict(
        _predict_request(token_ids=_token_ids()), timeout=TIMEOUT_SECONDS, metadata=AUTHORIZED).outputs


def test_reload_under_the_allowed_directory_still_works(guarded_channel, models_root):
    stub = model_service_pb2_grpc.ModelServiceStub(guarded_channel)
    paths = {name: models_root / name for name in ("lm", "classifier", "tagger")}
    response = stub.HandleReloadConfigRequest(_reload_request(**paths), timeout=60, metadata=AUTHORIZED)
    assert response.status.error_code == 0


# === Concurrency limit, a switched-off reload, clients that leave (one server) ===


MAX_CONCURRENT = 2


@pytest.fixture(scope="module")
def holding(models_root, tmp_path_factory):
    """A server whose batch queue holds 1-row requests (a long batch timeout, batches of 4 rows)."""
    directory = tmp_path_factory.mktemp("holding")
    (directory / "batching.config").write_text("batch_timeout_micros { value: 60000000 }\nmax_batch_size { value: 4 }")
    arguments = [f"--max_concurrent_requests={MAX_CONCURRENT}", "--disable_reload_config", "--enable_batching",
                 f"--batching_parameters_file={directory / 'batching.config'}",
                 "--rest_api_num_threads=1", "--rest_api_max_connections=1"]
    with running_server(model_base_path=models_root / LANGUAGE_MODEL_NAME, model_name=LANGUAGE_MODEL_NAME,
                        log_dir=directory, extra_arguments=arguments) as server:
        yield server


def _queued_requests(server) -> float:
    text = urllib.request.urlopen(server.monitoring_url, timeout=5).read().decode()
    line = next(line for line in text.splitlines() if line.startswith("rnn_zoo_serving_batch_queued_requests "))
    return float(line.split()[1])


def _wait_for(condition, what, timeout_seconds=20.0):
    import time

    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_past_max_concurrent_requests_callers_are_refused_at_once_and_cancelled_ones_leave(holding):
    with holding.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        held = [stub.Predict.future(_predict_request(token_ids=_token_ids()), timeout=60)
                for _ in range(MAX_CONCURRENT)]
        _wait_for(lambda: _queued_requests(holding) == MAX_CONCURRENT, "the requests never queued")

        error = _rpc_error(stub.Predict, _predict_request(token_ids=_token_ids()))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"maximum of {MAX_CONCURRENT} concurrent requests" in error.details()
        assert "--max_concurrent_requests" in error.details()
        code, body, headers = _rest(f"{holding.rest_url}/v1/models/{LANGUAGE_MODEL_NAME}:predict",
                                    {"instances": [[2, 3]]})
        assert code == 429 and "--max_concurrent_requests" in body["error"] and headers["Retry-After"] == "1"
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_SECONDS)
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # health takes no request slot

        # Clients that give up leave the batch queue at once (not after the 60 s batch timeout),
        # and their slots come free.
        for future in held:
            assert future.cancel()
        _wait_for(lambda: _queued_requests(holding) == 0, "cancelled requests stayed in the queue")

        def full_batch_answers():
            try:
                return stub.Predict(_predict_request(token_ids=_token_ids(4)), timeout=TIMEOUT_SECONDS).outputs
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                return False
        _wait_for(full_batch_answers, "the slots of cancelled requests never came free")
    assert "Traceback" not in holding.log_text()


def test_rest_connections_past_the_thread_pool_and_its_queue_get_503_naming_the_flags(holding):
    import socket
    import threading

    from serving_helpers import read_http_response

    held = {}

    def held_request():  # waits in the batch queue, holding the one REST thread
        held.update(zip(("status", "body", "headers"), _rest(
            f"{holding.rest_url}/v1/models/{LANGUAGE_MODEL_NAME}:predict", {"instances": [[2, 3]]})))

    thread = threading.Thread(target=held_request)
    thread.start()
    _wait_for(lambda: _queued_requests(holding) == 1, "the REST request never queued")
    status_request = f"GET /v1/models/{LANGUAGE_MODEL_NAME} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", holding.rest_port), timeout=TIMEOUT_SECONDS) as waiting, \
            socket.create_connection(("127.0.0.1", holding.rest_port), timeout=TIMEOUT_SECONDS) as refused:
        waiting.sendall(status_request)  # takes the one place in the queue
        refused.sendall(status_request)
        with refused.makefile("rb") as reader:
            status, body, headers = read_http_response(reader)
        assert status == 503 and headers["Retry-After"] == "1"
        assert "--rest_api_num_threads" in body["error"] and "--rest_api_max_connections" in body["error"]

        # A gRPC request of 3 rows completes the batch of 4: the held request is answered,
        # and the waiting connection gets the thread.
        with holding.channel() as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                _predict_request(token_ids=_token_ids(3)), timeout=TIMEOUT_SECONDS)
        assert response.outputs["logits"].tensor_shape.dim[0].size == 3
        thread.join(timeout=TIMEOUT_SECONDS)
        assert held["status"] == 200 and len(held["body"]["predictions"]) == 1
        with waiting.makefile("rb") as reader:
            status, body, _ = read_http_response(reader)
        assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"


def test_the_reload_rpc_can_be_switched_off(holding, models_root):
    with holding.channel() as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        error = _rpc_error(stub.HandleReloadConfigRequest, _reload_request(lm=models_root / LANGUAGE_MODEL_NAME))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "--disable_reload_config" in error.details()
    assert "Refused HandleReloadConfigRequest" in holding.log_text()


# === Mutual TLS on gRPC and REST (one server) ===


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    if shutil.which("openssl") is None:
        # Not a skip: without certificates TLS would go untested and CI stay green.
        pytest.fail("the openssl command makes the test certificates: install it (Debian: apt install openssl)")
    directory = tmp_path_factory.mktemp("certificates")
    authority = make_certificate_authority(directory, "test-ca")
    rogue = make_certificate_authority(directory, "rogue-ca")
    return {"ca": authority, "server": make_signed_certificate(directory, "server", authority, "serverAuth"),
            "client": make_signed_certificate(directory, "client", authority, "clientAuth"),
            "rogue_client": make_signed_certificate(directory, "rogue-client", rogue, "clientAuth")}


@pytest.fixture(scope="module")
def client_security(certificates):
    return ConnectionSecurity(ca_cert=certificates["ca"]["cert"], client_cert=certificates["client"]["cert"],
                              client_key=certificates["client"]["key"])


@pytest.fixture(scope="module")
def mutual_tls(models_root, certificates, client_security, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    ssl_config = write_ssl_config(directory / "ssl.config", certificates["server"], certificates["ca"]["cert"],
                                  client_verify=True)
    with running_server(model_base_path=models_root / LANGUAGE_MODEL_NAME, model_name=LANGUAGE_MODEL_NAME,
                        log_dir=directory, monitoring=False, extra_arguments=[f"--ssl_config_file={ssl_config}"],
                        security=client_security) as server:
        yield server


def _health_code(target, security):
    from serving.client.connection import open_channel

    with open_channel(target, security) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_mutual_tls_lets_in_only_clients_with_a_certificate_from_the_ca(mutual_tls, certificates, client_security):
    ca = certificates["ca"]["cert"]
    assert _health_code(mutual_tls.grpc_target, client_security) == grpc.StatusCode.OK
    refused = {
        "plain text": None,
        "TLS without a client certificate": ConnectionSecurity(ca_cert=ca),
        "a certificate from another CA": ConnectionSecurity(ca_cert=ca,
                                                            client_cert=certificates["rogue_client"]["cert"],
                                                            client_key=certificates["rogue_client"]["key"]),
    }
    for what, security in refused.items():
        assert _health_code(mutual_tls.grpc_target, security) == grpc.StatusCode.UNAVAILABLE, what


def test_the_client_library_and_cli_speak_mutual_tls(mutual_tls, certificates, client_security, capsys):
    with ServingClient(mutual_tls.grpc_target, TIMEOUT_SECONDS, security=client_security) as client:
        assert client.score(LANGUAGE_MODEL_NAME, ["the cat sat"])[0].num_tokens == 2
    code = client_cli.main(["--server", mutual_tls.grpc_target, "--ca_cert", str(certificates["ca"]["cert"]),
                            "--client_cert", str(certificates["client"]["cert"]),
                            "--client_key", str(certificates["client"]["key"]), "status", LANGUAGE_MODEL_NAME])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["versions"][0]["state"] == "AVAILABLE"


def test_rest_serves_https_with_the_same_client_check(mutual_tls, certificates):
    url = f"https://127.0.0.1:{mutual_tls.rest_port}/v1/models/{LANGUAGE_MODEL_NAME}"
    context = ssl.create_default_context(cafile=certificates["ca"]["cert"])
    context.load_cert_chain(certificates["client"]["cert"], certificates["client"]["key"])
    code, body, _ = _rest(url, context=context)
    assert code == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"

    without_certificate = ssl.create_default_context(cafile=certificates["ca"]["cert"])
    with pytest.raises(OSError):  # a refused handshake, or a reset (TLS 1.3 reports it after the handshake)
        _rest(url, context=without_certificate)
    with pytest.raises(OSError):
        _rest(f"http://127.0.0.1:{mutual_tls.rest_port}/v1/models/{LANGUAGE_MODEL_NAME}")
    # A refused handshake is the client's failure: no traceback floods the log.
    assert "Traceback" not in mutual_tls.log_text()


@pytest.mark.parametrize("text, fragment", [
    ('server_key: "not a key"\nserver_cert: "x"\n', "server_key must hold the PEM text itself"),
    ('server_kee: "x"\n', "is not a tensorflow.serving.SSLConfig text proto"),
    (None, "client_verify needs custom_ca"),
])
def test_a_bad_ssl_config_is_refused_with_a_message(certificates, tmp_path, text, fragment):
    from serving.server.tls import read_ssl_config_file

    path = tmp_path / "ssl.config"
    if text is None:
        write_ssl_config(path, certificates["server"], client_verify=True)
    else:
        path.write_text(text)
    with pytest.raises(ValueError, match=fragment):
        read_ssl_config_file(path)


# === Deadlines and clients that left, in process ===


class _GoneClient:
    """A gRPC context whose client has left."""

    def is_active(self):
        return False

    def add_callback(self, callback):
        return True


def test_a_request_whose_deadline_passed_or_whose_client_left_never_starts():
    from serving.server.prediction_service import InferenceService

    inference = InferenceService(manager=None)
    with pytest.raises(ServingError) as raised:
        inference._run(None, "serving_default", {}, timeout_seconds=0.0)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and "nothing was run" in raised.value.message
    with pytest.raises(ServingError) as raised:
        inference._run(None, "serving_default", {}, timeout_seconds=5.0, client=_GoneClient())
    assert raised.value.code == grpc.StatusCode.CANCELLED


def test_batched_entries_whose_client_left_are_dropped_before_they_run():
    from serving.server import batching

    ran = []
    scheduler = batching.BatchScheduler(batching.BatchingParameters(max_batch_size=8, num_batch_threads=1))
    try:
        plan = batching.SignatureBatchingPlan(batchable=True)
        tasks = [batching._Task({"x": np.ones((1, 2))}, 1, None, client=client)
                 for client in (_GoneClient(), None)]
        scheduler._execute(batching._Queue(lambda inputs: ran.append(len(inputs["x"])) or inputs, plan, ("", "")),
                           tasks)
    finally:
        scheduler.close()
    assert ran == [1]  # only the request whose client is still there
    assert tasks[0].error.code == grpc.StatusCode.CANCELLED and tasks[1].outputs is not None


# === Flags ===


@pytest.mark.parametrize("arguments, fragment", [
    (["--max_concurrent_requests=16", "--grpc_max_threads=16"], "must be more than --max_concurrent_requests"),
    (["--health_checks_without_token"], "needs --auth_token_file"),
    (["--max_batch_size=0"], "--max_batch_size must be at least 1"),
    (["--max_message_bytes=3000000000"], "below 2 GiB"),
])
def test_contradictory_limit_and_security_flags_are_usage_errors(arguments, fragment, capsys):
    from serving.server import cli

    parser = cli.build_parser()
    with pytest.raises(SystemExit) as raised:
        cli.check_arguments(parser, parser.parse_args(arguments))
    assert raised.value.code == 2 and fragment in capsys.readouterr().err


def test_grpc_threads_default_to_the_concurrency_limit_plus_spares():
    from serving.server import cli

    parser = cli.build_parser()
    arguments = parser.parse_args(["--max_concurrent_requests=10"])
    cli.check_arguments(parser, arguments)
    assert arguments.grpc_max_threads == 18


@pytest.mark.parametrize("module", ["serving.client.cli", "serving.generation.cli", "serving.generation.quality.cli"])
def test_every_client_command_takes_the_connection_flags(module):
    import importlib

    help_text = importlib.import_module(module).build_parser().format_help()
    for flag in ("--ca_cert", "--client_cert", "--client_key", "--auth_token_file"):
        assert flag in help_text, (module, flag)
