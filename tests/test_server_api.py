"""The server as a client sees it: a real process, called with TF Serving's own stubs.

One server serves the three toy models (latest version: 2) for the whole
module; values are checked against running the same SavedModel in-process.
"""

import json
import shutil
import subprocess
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from serving_helpers import (CLASSIFIER_NAME, LANGUAGE_MODEL_NAME, TAGGER_NAME, TOY_CLASS_NAMES, TOY_STATE_SIZE,
                             assert_float32_close, run_saved_model, running_server, session_toy_models)

TIMEOUT_SECONDS = 10
LATEST = 2


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    return session_toy_models(tmp_path_factory)


@pytest.fixture(scope="module")
def server(models_root, tmp_path_factory):
    with running_server(model_base_dir=models_root, poll_wait_seconds=0.5,
                        log_dir=tmp_path_factory.mktemp("api-server-log")) as process:
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


def predict_request(model, signature="", version=None, label=None, output_filter=(), **inputs):
    """A PredictRequest built the way TF Serving's own clients build one."""
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


def outputs_of(response):
    return {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}


def assert_outputs_equal(actual, expected):
    assert set(actual) == set(expected)
    for alias, value in expected.items():
        if value.dtype == object:
            assert actual[alias].tolist() == value.tolist(), alias
        else:
            np.testing.assert_array_equal(actual[alias], value, err_msg=alias)


STATE = np.random.default_rng(0).normal(size=(2, TOY_STATE_SIZE)).astype(np.float32)
PREDICT_CASES = [
    (LANGUAGE_MODEL_NAME, "serving_default", {"token_ids": np.array([[2, 4, 6], [3, 5, 0]], np.int64)}),
    (LANGUAGE_MODEL_NAME, "step", {"token_ids": np.array([[2, 4], [3, 0]], np.int64), "state": STATE}),
    (LANGUAGE_MODEL_NAME, "tokenize", {"text": np.array([b"the cat sat", b"a dog", b""], dtype=object)}),
    (LANGUAGE_MODEL_NAME, "detokenize", {"token_ids": np.array([[2, 4, 0], [1, 5, 7]], np.int64)}),
    (LANGUAGE_MODEL_NAME, "initial_state", {"batch_size": np.array(3, np.int32)}),
    (LANGUAGE_MODEL_NAME, "score", {"text": np.array([b"the cat sat on the mat", b"dog"], dtype=object)}),
    (CLASSIFIER_NAME, "serving_default", {"sentences": np.array([b"good movie", b"very bad"], dtype=object)}),
    (TAGGER_NAME, "serving_default", {"sentences": np.array([b"the cat sat", b"a dog"], dtype=object)}),
    (TAGGER_NAME, "tag_tokens", {"tokens": np.array([[b"the", b"cat", b""], [b"a", b"dog", b"ran"]], dtype=object)}),
]


@pytest.mark.parametrize("model, signature, inputs", PREDICT_CASES,
                         ids=[f"{model}-{signature}" for model, signature, _ in PREDICT_CASES])
def test_predict_matches_the_saved_model(prediction, models_root, model, signature, inputs):
    response = prediction.Predict(predict_request(model, signature, **inputs), timeout=TIMEOUT_SECONDS)
    assert (response.model_spec.name, response.model_spec.version.value, response.model_spec.signature_name) \
        == (model, LATEST, signature)
    assert_outputs_equal(outputs_of(response), run_saved_model(models_root / model / str(LATEST), signature, **inputs))


def test_default_signature_and_specific_versions(prediction, models_root):
    token_ids = np.array([[2, 4, 6]], np.int64)
    latest = prediction.Predict(predict_request(LANGUAGE_MODEL_NAME, token_ids=token_ids), timeout=TIMEOUT_SECONDS)
    assert latest.model_spec.signature_name == "serving_default"
    # Version 1 is not loaded under the default "latest" policy.
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(predict_request(LANGUAGE_MODEL_NAME, version=1, token_ids=token_ids),
                           timeout=TIMEOUT_SECONDS)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    pinned = prediction.Predict(predict_request(LANGUAGE_MODEL_NAME, version=2, token_ids=token_ids),
                                timeout=TIMEOUT_SECONDS)
    np.testing.assert_array_equal(outputs_of(pinned)["logits"], outputs_of(latest)["logits"])
    version_1 = run_saved_model(models_root / LANGUAGE_MODEL_NAME / "1", "serving_default", token_ids=token_ids)
    assert not np.allclose(version_1["logits"], outputs_of(latest)["logits"])


def test_output_filter_returns_only_the_named_outputs(prediction):
    request = predict_request(TAGGER_NAME, output_filter=["tags", "lengths"],
                              sentences=np.array([b"the cat sat"], dtype=object))
    outputs = outputs_of(prediction.Predict(request, timeout=TIMEOUT_SECONDS))
    assert set(outputs) == {"tags", "lengths"} and outputs["lengths"].tolist() == [3]


def _text_example(text):
    example = tf.train.Example()
    example.features.feature["text"].bytes_list.value.append(text)
    return example


def test_classify_fills_classification_results(prediction, models_root):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = CLASSIFIER_NAME
    request.model_spec.signature_name = "classify"
    texts = [b"good movie", b"not good", b"bad"]
    request.input.example_list.examples.extend(_text_example(text) for text in texts)
    response = prediction.Classify(request, timeout=TIMEOUT_SECONDS)
    assert (response.model_spec.name, response.model_spec.version.value, response.model_spec.signature_name) \
        == (CLASSIFIER_NAME, LATEST, "classify")
    expected = run_saved_model(models_root / CLASSIFIER_NAME / str(LATEST), "classify",
                               inputs=np.array([_text_example(t).SerializeToString() for t in texts], dtype=object))
    assert len(response.result.classifications) == len(texts)
    for classifications, scores in zip(response.result.classifications, expected["scores"]):
        assert [entry.label for entry in classifications.classes] == list(TOY_CLASS_NAMES)
        np.testing.assert_allclose([entry.score for entry in classifications.classes], scores, rtol=1e-6)


def test_classify_merges_the_context_into_each_example(prediction, models_root):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = CLASSIFIER_NAME
    request.model_spec.signature_name = "classify"
    request.input.example_list_with_context.context.CopyFrom(_text_example(b"very good"))
    request.input.example_list_with_context.examples.extend([tf.train.Example(), tf.train.Example()])
    response = prediction.Classify(request, timeout=TIMEOUT_SECONDS)
    expected = run_saved_model(models_root / CLASSIFIER_NAME / str(LATEST), "serving_default",
                               sentences=np.array([b"very good"], dtype=object))["probabilities"][0]
    for classifications in response.result.classifications:
        # Two examples here against one there: another batch size, equal to float32 rounding.
        assert_float32_close([entry.score for entry in classifications.classes], expected)


def test_model_metadata_is_a_packed_signature_def_map(prediction):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = LANGUAGE_MODEL_NAME
    response = prediction.GetModelMetadata(request, timeout=TIMEOUT_SECONDS)
    assert response.model_spec.name == LANGUAGE_MODEL_NAME and response.model_spec.version.value == LATEST
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_def_map)
    signatures = signature_def_map.signature_def
    assert {"serving_default", "tokenize", "detokenize", "initial_state", "step", "score"} <= set(signatures)
    step = signatures["step"]
    assert step.method_name == "tensorflow/serving/predict"
    assert step.inputs["token_ids"].dtype == tf.int64.as_datatype_enum
    assert [dim.size for dim in step.inputs["token_ids"].tensor_shape.dim] == [-1, -1]
    assert [dim.size for dim in step.inputs["state"].tensor_shape.dim] == [-1, TOY_STATE_SIZE]
    assert step.outputs["state"].dtype == tf.float32.as_datatype_enum
    assert signatures["initial_state"].inputs["batch_size"].dtype == tf.int32.as_datatype_enum

    request.model_spec.name = CLASSIFIER_NAME
    classifier_map = get_model_metadata_pb2.SignatureDefMap()
    prediction.GetModelMetadata(request, timeout=TIMEOUT_SECONDS).metadata["signature_def"].Unpack(classifier_map)
    assert classifier_map.signature_def["classify"].method_name == "tensorflow/serving/classify"


def test_model_status_reports_available_versions(model_service):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = TAGGER_NAME
    response = model_service.GetModelStatus(request, timeout=TIMEOUT_SECONDS)
    assert [(row.version, row.state, row.status.error_code) for row in response.model_version_status] \
        == [(LATEST, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]
    request.model_spec.version.value = LATEST
    assert len(model_service.GetModelStatus(request, timeout=TIMEOUT_SECONDS).model_version_status) == 1


# === Errors: codes and messages as TF Serving gives them ===


def _classify_request(signature="classify", texts=(b"good",)):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = CLASSIFIER_NAME
    request.model_spec.signature_name = signature
    request.input.example_list.examples.extend(_text_example(text) for text in texts)
    return request


def _bad_content_request():
    request = predict_request(LANGUAGE_MODEL_NAME)
    proto = request.inputs["token_ids"]
    proto.dtype = tf.int64.as_datatype_enum
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=3)
    proto.tensor_content = b"\x01\x02\x03"
    return request


def _huge_dims_request():
    request = predict_request(LANGUAGE_MODEL_NAME)
    proto = request.inputs["token_ids"]
    proto.dtype = tf.int64.as_datatype_enum
    proto.tensor_shape.dim.add(size=1 << 40)
    proto.tensor_shape.dim.add(size=1 << 40)
    proto.int64_val.append(2)
    return request


_IDS = np.array([[2, 4]], np.int64)
_STATE_1 = np.zeros((1, TOY_STATE_SIZE), np.float32)
ERROR_CASES = {
    "no model spec": ("Predict", lambda: predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT,
                      "Missing ModelSpec"),
    "empty model name": ("Predict", lambda: predict_request("", "step"), grpc.StatusCode.INVALID_ARGUMENT,
                         "ModelSpec.name is empty"),
    "unknown model": ("Predict", lambda: predict_request("nope", token_ids=_IDS), grpc.StatusCode.NOT_FOUND,
                      "Servable not found for request: Latest(nope)"),
    "unknown version": ("Predict", lambda: predict_request(LANGUAGE_MODEL_NAME, version=99, token_ids=_IDS),
                        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(lm, 99)"),
    "unknown label": ("Predict", lambda: predict_request(LANGUAGE_MODEL_NAME, label="canary", token_ids=_IDS),
                      grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: canary"),
    "unknown signature": ("Predict", lambda: predict_request(LANGUAGE_MODEL_NAME, "nope", token_ids=_IDS),
                          grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
    "missing input": ("Predict", lambda: predict_request(LANGUAGE_MODEL_NAME, "step", token_ids=_IDS),
                      grpc.StatusCode.INVALID_ARGUMENT,
                      "input size does not match signature: 1!=2 len({token_ids}) != len({state,token_ids}). "
                      "Sent extra: {}. Missing but required: {state}."),
    "extra input": ("Predict", lambda: predict_request(LANGUAGE_MODEL_NAME, token_ids=_IDS, bogus=_IDS),
                    grpc.StatusCode.INVALID_ARGUMENT, "Sent extra: {bogus}. Missing but required: {}."),
    "wrong dtype": ("Predict", lambda: predict_request(LANGUAGE_MODEL_NAME, token_ids=_IDS.astype(np.float32)),
                    grpc.StatusCode.INVALID_ARGUMENT, 'Input "token_ids": expected dtype DT_INT64, got DT_FLOAT.'),
    "wrong rank": ("Predict", lambda: predict_request(LANGUAGE_MODEL_NAME, token_ids=np.array([2, 4], np.int64)),
                   grpc.StatusCode.INVALID_ARGUMENT, 'Input "token_ids": expected shape [?,?], got [2].'),
    "wrong state size": ("Predict", lambda: predict_request(LANGUAGE_MODEL_NAME, "step", token_ids=_IDS,
                                                            state=np.zeros((1, 5), np.float32)),
                         grpc.StatusCode.INVALID_ARGUMENT, 'Input "state": expected shape [?,3], got [1,5].'),
    "unknown output": ("Predict", lambda: predict_request(LANGUAGE_MODEL_NAME, output_filter=["nope"], token_ids=_IDS),
                       grpc.StatusCode.INVALID_ARGUMENT,
                       "output tensor alias not found in signature: nope Outputs expected to be in the set {logits}."),
    "duplicate output": ("Predict", lambda: predict_request(LANGUAGE_MODEL_NAME, output_filter=["logits", "logits"],
                                                            token_ids=_IDS),
                         grpc.StatusCode.INVALID_ARGUMENT, "duplicate output tensor alias: logits"),
    "id out of range": ("Predict", lambda: predict_request(LANGUAGE_MODEL_NAME, token_ids=np.array([[99]], np.int64)),
                        grpc.StatusCode.INVALID_ARGUMENT, "indices[0,0] = 99 is not in [0, 16)"),
    "negative batch size": ("Predict", lambda: predict_request(LANGUAGE_MODEL_NAME, "initial_state",
                                                               batch_size=np.array(-1, np.int32)),
                            grpc.StatusCode.INVALID_ARGUMENT, "-1"),
    "bad tensor content": ("Predict", _bad_content_request, grpc.StatusCode.INVALID_ARGUMENT,
                           "tensor parsing error: token_ids (tensor_content has 3 bytes"),
    "huge dims": ("Predict", _huge_dims_request, grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: token_ids"),
    # The method-name check applies only with --enable_signature_method_name_check (test_server_dropin.py).
    "classify a predict signature": ("Classify", lambda: _classify_request("serving_default"),
                                     grpc.StatusCode.INVALID_ARGUMENT,
                                     "Expected one or two output Tensors, found 3 (serving_default is not a "
                                     "classify signature"),
    "classify unknown signature": ("Classify", lambda: _classify_request("nope"), grpc.StatusCode.INVALID_ARGUMENT,
                                   "No signature was found with the name: nope"),
    "classify nothing": ("Classify", lambda: _classify_request(texts=()), grpc.StatusCode.INVALID_ARGUMENT,
                         "Input is empty."),
    "metadata without field": ("GetModelMetadata",
                               lambda: get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "lm"}),
                               grpc.StatusCode.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must specify at least one metadata_field"),
    "metadata other field": ("GetModelMetadata",
                             lambda: get_model_metadata_pb2.GetModelMetadataRequest(
                                 model_spec={"name": "lm"}, metadata_field=["signature_def", "graph"]),
                             grpc.StatusCode.INVALID_ARGUMENT, "Metadata field graph is not supported"),
    "regress a predict signature": ("Regress", lambda: regression_pb2.RegressionRequest(model_spec={"name": "lm"}),
                                    grpc.StatusCode.FAILED_PRECONDITION,
                                    "No regression inputs found in SignatureDef: serving_default takes {token_ids}"),
    "multi inference without tasks": ("MultiInference", lambda: inference_pb2.MultiInferenceRequest(),
                                      grpc.StatusCode.INVALID_ARGUMENT, "MultiInferenceRequest holds no tasks"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_have_tf_servings_codes_and_messages(prediction, case):
    method, build_request, code, message = ERROR_CASES[case]
    with pytest.raises(grpc.RpcError) as raised:
        getattr(prediction, method)(build_request(), timeout=TIMEOUT_SECONDS)
    assert raised.value.code() == code
    assert message in raised.value.details()


@pytest.mark.parametrize("spec, message", [
    ({"name": "nope"}, "Could not find any versions of model nope"),
    ({"name": "lm", "version": {"value": 9}}, "Could not find version 9 of model lm"),
])
def test_model_status_not_found(model_service, spec, message):
    with pytest.raises(grpc.RpcError) as raised:
        model_service.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=spec),
                                     timeout=TIMEOUT_SECONDS)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and raised.value.details() == message


def test_garbage_never_hurts_the_server(channel, prediction):
    raw_predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                      request_serializer=None, response_deserializer=None)
    for garbage in (b"\xff\xfe\x00garbage", b"\x0a\xff\xff\xff\xff\x0f", bytes(range(256)) * 10):
        with pytest.raises(grpc.RpcError) as raised:
            raw_predict(garbage, timeout=TIMEOUT_SECONDS)
        assert raised.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    for build_request in (_bad_content_request, _huge_dims_request):
        with pytest.raises(grpc.RpcError):
            prediction.Predict(build_request(), timeout=TIMEOUT_SECONDS)
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_SECONDS)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    prediction.Predict(predict_request(LANGUAGE_MODEL_NAME, token_ids=_IDS), timeout=TIMEOUT_SECONDS)


# === Health, reflection, metrics ===


def test_health_is_serving_overall_and_per_model(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", LANGUAGE_MODEL_NAME, CLASSIFIER_NAME, TAGGER_NAME, "tensorflow.serving.PredictionService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_SECONDS)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as raised:
        stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=TIMEOUT_SECONDS)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=TIMEOUT_SECONDS)
    names = {service.name for response in responses for service in response.list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "grpc.health.v1.Health"} <= names


def _metric_value(page: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith(prefix))


def test_metrics_count_requests_by_model_api_and_code(server, prediction):
    prediction.Predict(predict_request(LANGUAGE_MODEL_NAME, token_ids=_IDS), timeout=TIMEOUT_SECONDS)
    with pytest.raises(grpc.RpcError):
        prediction.Predict(predict_request("never-configured", token_ids=_IDS), timeout=TIMEOUT_SECONDS)
    page = urllib.request.urlopen(server.monitoring_url, timeout=TIMEOUT_SECONDS).read().decode()
    assert _metric_value(page, 'rnn_zoo_serving_requests_total{api="Predict",code="OK",model="lm"}') >= 1
    assert _metric_value(page, 'rnn_zoo_serving_requests_total{api="Predict",code="NOT_FOUND",model="<unknown>"}') >= 1
    assert "never-configured" not in page  # unknown names never become label values
    assert 'rnn_zoo_serving_request_latency_seconds_bucket{api="Predict"' in page
    assert _metric_value(page, 'rnn_zoo_serving_model_versions_available{model="lm"}') == 1
    assert "rnn_zoo_serving_batch_size" in page


# === REST ===


def rest_call(server, path, body=None):
    """Returns (HTTP status, decoded JSON) for a GET (body None) or POST."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(server.rest_url + path, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_rest_model_status_and_metadata(server):
    assert rest_call(server, "/v1/models/lm") == (200, {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    status, metadata = rest_call(server, "/v1/models/lm/versions/2/metadata")
    assert status == 200
    assert metadata["model_spec"]["name"] == "lm" and metadata["model_spec"]["version"] == "2"
    step = metadata["metadata"]["signature_def"]["signature_def"]["step"]
    assert step["inputs"]["state"]["dtype"] == "DT_FLOAT"


def test_rest_predict_row_and_columnar_formats(server, prediction, models_root):
    status, body = rest_call(server, "/v1/models/lm:predict",
                             {"signature_name": "tokenize", "instances": ["the cat sat", "a dog"]})
    assert status == 200
    assert body == {"predictions": [{"lengths": 3, "token_ids": [2, 4, 6]}, {"lengths": 2, "token_ids": [3, 5, 0]}]}

    inputs = {"token_ids": [[2, 4], [3, 0]], "state": STATE.tolist()}
    status, body = rest_call(server, "/v1/models/lm/versions/2:predict", {"signature_name": "step", "inputs": inputs})
    assert status == 200
    expected = run_saved_model(models_root / "lm" / "2", "step", token_ids=np.array(inputs["token_ids"], np.int64),
                               state=STATE)
    np.testing.assert_allclose(body["outputs"]["logits"], expected["logits"], rtol=1e-6)
    np.testing.assert_allclose(body["outputs"]["state"], expected["state"], rtol=1e-6)

    status, body = rest_call(server, "/v1/models/tagger:predict", {"instances": [{"sentences": "the cat"}]})
    assert status == 200 and body["predictions"][0]["tags"] == [tag.decode() for tag in run_saved_model(
        models_root / "tagger" / "2", "serving_default", sentences=np.array([b"the cat"], dtype=object))["tags"][0]]

    status, body = rest_call(server, "/v1/models/lm:predict",
                             {"signature_name": "score", "inputs": {"text": ["the cat"]}})
    assert status == 200 and set(body["outputs"]) == {"log_prob", "num_tokens"}


def test_rest_classify(server):
    status, body = rest_call(server, "/v1/models/classifier:classify",
                             {"signature_name": "classify", "examples": [{"text": "good movie"}, {"text": "bad"}]})
    assert status == 200 and len(body["results"]) == 2  # TF Serving's key
    assert [label for label, _ in body["results"][0]] == list(TOY_CLASS_NAMES)
    assert sum(score for _, score in body["results"][0]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/models/nope:predict", {"instances": [[1]]}, 404, "Servable not found for request: Latest(nope)"),
    ("/v1/models/lm/versions/9", None, 404, "Could not find version 9 of model lm"),
    ("/v1/models/lm/labels/x:predict", {"instances": [[1]]}, 400, "Unrecognized servable version label: x"),
    ("/v1/models/lm:predict", {"signature_name": "nope", "instances": [[1]]}, 400,
     'Serving signature key "nope" not found.'),
    ("/v1/models/lm:predict", b"{not json", 400, "JSON Parse error"),
    ("/v1/models/lm:predict", {"instances": [[1, 2], [3]]}, 400, "ragged"),
    ("/v1/models/lm:predict", {"signature_name": "step", "instances": [{"token_ids": [1]}]}, 400,
     "Missing but required: {state}"),
    ("/v1/models/lm:predict", {"instances": [[2]], "inputs": [[2]]}, 400, "both 'instances' and 'inputs'"),
    ("/v1/models/lm:regress", {"examples": []}, 400, "'examples' must be a non-empty list"),
    ("/v2/nothing", None, 400, "Malformed request: GET /v2/nothing"),
])
def test_rest_errors_use_tf_servings_json_and_http_codes(server, path, body, status, message):
    actual_status, payload = rest_call(server, path, body)
    assert actual_status == status and set(payload) == {"error"} and message in payload["error"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_rest_answers_curl(server):
    completed = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-d", '{"signature_name": "detokenize", "instances": [[2, 4, 6]]}',
         server.rest_url + "/v1/models/lm:predict"], capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(completed.stdout) == {"predictions": ["the cat sat"]}
