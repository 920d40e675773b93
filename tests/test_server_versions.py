"""Versions on disk and config reloads, against a real server polling every 0.2 s.

The server starts with no model flags in a directory holding `saved_models/`
(the default mode), then versions are dropped in, broken, fixed, and the
config is replaced. The tests run in file order and build on each other's
state, as an operator's session would.
"""

import pathlib
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (get_model_status_pb2, model_management_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

from serving_helpers import (CLASSIFIER_NAME, LANGUAGE_MODEL_NAME, TAGGER_NAME, copy_version_atomically,
                             run_saved_model, running_server, save_toy_model, session_toy_models)

TIMEOUT_SECONDS = 10
State = get_model_status_pb2.ModelVersionStatus.State
TOKEN_IDS = np.array([[2, 4, 6, 8]], np.int64)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A working directory with `saved_models/` (a copy: these tests change it) and staged exports."""
    root = tmp_path_factory.mktemp("versions")
    shutil.copytree(session_toy_models(tmp_path_factory), root / "saved_models",
                    ignore=shutil.ignore_patterns(".complete"))
    staged = root / "staged"
    for version in (3, 4):
        save_toy_model(LANGUAGE_MODEL_NAME, staged / str(version), seed=version)
    return root


@pytest.fixture(scope="module")
def server(workspace):
    with running_server(cwd=workspace, poll_wait_seconds=0.2, rest=False, monitoring=False,
                        log_dir=workspace) as process:
        yield process


@pytest.fixture(scope="module")
def channel(server):
    with server.channel() as opened:
        yield opened


@pytest.fixture(scope="module")
def prediction(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_service(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_lm(prediction, **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = LANGUAGE_MODEL_NAME
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["token_ids"].CopyFrom(tf.make_tensor_proto(TOKEN_IDS))
    response = prediction.Predict(request, timeout=TIMEOUT_SECONDS)
    return response.model_spec.version.value, tf.make_ndarray(response.outputs["logits"])


def statuses(model_service, name):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    response = model_service.GetModelStatus(request, timeout=TIMEOUT_SECONDS)
    return {row.version: row for row in response.model_version_status}


def wait_for(condition, timeout_seconds=20.0, interval=0.1):
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout_seconds} s")


def health_of(channel, service):
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_SECONDS).status


def test_serves_every_model_under_saved_models_by_default(model_service):
    for name in (LANGUAGE_MODEL_NAME, CLASSIFIER_NAME, TAGGER_NAME):
        rows = statuses(model_service, name)
        assert {version: row.state for version, row in rows.items()} == {2: State.AVAILABLE}


def test_a_new_model_directory_is_discovered(workspace, channel):
    staging = workspace / "saved_models" / ".incoming"
    shutil.copytree(workspace / "saved_models" / TAGGER_NAME, staging)
    staging.rename(workspace / "saved_models" / "tagger_copy")
    wait_for(lambda: _serving(channel, "tagger_copy"))


def _serving(channel, service):
    try:
        return health_of(channel, service) == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def test_a_new_version_replaces_the_old_without_a_failed_request(workspace, prediction, model_service):
    answers, failures, stop = [], [], threading.Event()

    def stream():
        while not stop.is_set():
            try:
                answers.append(predict_lm(prediction))
            except grpc.RpcError as error:  # any failure fails the test
                failures.append(f"{error.code()}: {error.details()}")

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(answers) > 10)
        copy_version_atomically(workspace / "staged" / "3", workspace / "saved_models" / LANGUAGE_MODEL_NAME, 3)
        wait_for(lambda: sum(version == 3 for version, _ in answers[-20:]) == 20)
    finally:
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT_SECONDS)

    assert failures == []
    versions = [version for version, _ in answers]
    assert set(versions) == {2, 3}
    # Each thread sees the switch once: no answer from 2 after its first from 3.
    first_new = versions.index(3)
    assert versions[first_new:].count(2) <= len(threads)
    expected = {version: run_saved_model(path, "serving_default", token_ids=TOKEN_IDS)["logits"]
                for version, path in ((2, workspace / "saved_models" / LANGUAGE_MODEL_NAME / "2"),
                                      (3, workspace / "staged" / "3"))}
    for version, logits in answers:
        np.testing.assert_array_equal(logits, expected[version])
    rows = wait_for(lambda: (rows := statuses(model_service, LANGUAGE_MODEL_NAME))[2].state == State.END and rows)
    assert rows[3].state == State.AVAILABLE and rows[3].status.error_code == 0


def test_a_broken_version_leaves_the_previous_one_serving(workspace, prediction, model_service, channel):
    base_path = workspace / "saved_models" / LANGUAGE_MODEL_NAME
    broken = base_path / ".writing-4"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\x08\x01garbage, not a SavedModel \xff\xff")
    broken.rename(base_path / "4")

    row = wait_for(lambda: statuses(model_service, LANGUAGE_MODEL_NAME).get(4, None) and
                   statuses(model_service, LANGUAGE_MODEL_NAME)[4].status.error_code != 0 and
                   statuses(model_service, LANGUAGE_MODEL_NAME)[4])
    assert row.state == State.END
    assert row.status.error_code == grpc.StatusCode.DATA_LOSS.value[0]
    assert "Could not parse SavedModel" in row.status.error_message
    assert predict_lm(prediction)[0] == 3
    assert statuses(model_service, LANGUAGE_MODEL_NAME)[3].state == State.AVAILABLE
    assert health_of(channel, LANGUAGE_MODEL_NAME) == health_pb2.HealthCheckResponse.SERVING

    # Fixing the export (a new directory with the same number) is picked up.
    shutil.rmtree(base_path / "4")
    copy_version_atomically(workspace / "staged" / "4", base_path, 4)
    wait_for(lambda: predict_lm(prediction)[0] == 4)
    rows = statuses(model_service, LANGUAGE_MODEL_NAME)
    assert rows[4].state == State.AVAILABLE and rows[4].status.error_code == 0
    assert rows[3].state == State.END


def _config(**models) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for name, (base_path, extra) in models.items():
        entry = config.model_config_list.config.add(name=name, base_path=str(base_path), model_platform="tensorflow")
        if extra:
            entry.MergeFrom(extra)
    return config


def test_reload_config_applies_policies_and_labels_and_removes_models(workspace, prediction, model_service, channel):
    base = workspace / "saved_models"
    language_model = model_server_config_pb2.ModelConfig()
    language_model.model_version_policy.all.SetInParent()
    language_model.version_labels["stable"] = 1
    language_model.version_labels["canary"] = 4
    config = _config(lm=(base / LANGUAGE_MODEL_NAME, language_model), tagger=(base / TAGGER_NAME, None))
    response = model_service.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config),
                                                       timeout=60)
    assert response.status.error_code == 0

    rows = statuses(model_service, LANGUAGE_MODEL_NAME)
    assert {version for version, row in rows.items() if row.state == State.AVAILABLE} == {1, 2, 3, 4}
    version, logits = predict_lm(prediction, version_label="stable")
    assert version == 1
    np.testing.assert_array_equal(
        logits, run_saved_model(base / LANGUAGE_MODEL_NAME / "1", "serving_default", token_ids=TOKEN_IDS)["logits"])
    assert predict_lm(prediction, version_label="canary")[0] == 4
    assert predict_lm(prediction)[0] == 4

    with pytest.raises(grpc.RpcError) as raised:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = CLASSIFIER_NAME
        request.inputs["sentences"].CopyFrom(tf.make_tensor_proto(["good"]))
        prediction.Predict(request, timeout=TIMEOUT_SECONDS)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "Servable not found for request: Latest(classifier)"
    assert {row.state for row in statuses(model_service, CLASSIFIER_NAME).values()} == {State.END}
    assert health_of(channel, CLASSIFIER_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert health_of(channel, "tagger_copy") == health_pb2.HealthCheckResponse.NOT_SERVING


def test_reload_with_a_specific_version_policy(workspace, prediction, model_service):
    language_model = model_server_config_pb2.ModelConfig()
    language_model.model_version_policy.specific.versions.append(2)
    config = _config(lm=(workspace / "saved_models" / LANGUAGE_MODEL_NAME, language_model))
    model_service.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=60)
    rows = statuses(model_service, LANGUAGE_MODEL_NAME)
    assert {version for version, row in rows.items() if row.state == State.AVAILABLE} == {2}
    assert predict_lm(prediction)[0] == 2


@pytest.mark.parametrize("config, message", [
    # Relative to the server's working directory, so under its allowed --model_base_dir.
    (_config(lm=(pathlib.Path("saved_models/nonexistent"), None)), "base path saved_models/nonexistent does not exist"),
    (model_server_config_pb2.ModelServerConfig(custom_model_config={}), "Only ModelConfigList is currently supported"),
])
def test_an_invalid_reload_changes_nothing(prediction, model_service, config, message):
    with pytest.raises(grpc.RpcError) as raised:
        model_service.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config),
                                                timeout=TIMEOUT_SECONDS)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in raised.value.details()
    assert predict_lm(prediction)[0] == 2
