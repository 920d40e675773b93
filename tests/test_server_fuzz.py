"""Property-based fuzzing (hypothesis) of PredictRequests and REST bodies against one real server.

The property: whatever arrives, the server answers it with a status a client
can act on, never INTERNAL or UNKNOWN (HTTP 500), and keeps serving.
Requests are built from the parts that matter to the server (model, version,
signature, input names, dtypes, shapes, values, output filters), mostly
plausible, so that they get past the first checks and reach the model.

derandomize=True makes every run try the same cases (a failure reproduces);
max_examples keeps the default run at about 20 s on two cores. For a longer
search: `FUZZ_EXAMPLES=5000 pytest tests/test_server_fuzz.py`.
"""

import json
import os
import socket

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving_helpers import (CLASSIFIER_NAME, LANGUAGE_MODEL_NAME, TAGGER_NAME, read_http_response, running_server,
                             session_toy_models)

TIMEOUT_SECONDS = 10
MAX_BATCH_SIZE = 4
MAX_MESSAGE_BYTES = 64 * 1024
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))
FUZZ_SETTINGS = settings(max_examples=EXAMPLES or 400, deadline=None, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SERVER_FAULTS = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models_root = session_toy_models(tmp_path_factory)
    arguments = [f"--max_batch_size={MAX_BATCH_SIZE}", f"--max_message_bytes={MAX_MESSAGE_BYTES}"]
    with running_server(model_base_dir=models_root, log_dir=tmp_path_factory.mktemp("fuzz"), monitoring=False,
                        extra_arguments=arguments) as process:
        yield process


@pytest.fixture(scope="module")
def prediction(server):
    with server.channel() as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel), health_pb2_grpc.HealthStub(channel)


# === Strategies ===

MODELS = st.sampled_from([LANGUAGE_MODEL_NAME, CLASSIFIER_NAME, TAGGER_NAME, "", "nope", "../lm", "lm\x00"])
SIGNATURES = st.sampled_from(["", "serving_default", "step", "initial_state", "tokenize", "detokenize", "score",
                              "classify", "tag_tokens", "__saved_model_init_op", "nope"])
INPUT_NAMES = st.sampled_from(["token_ids", "state", "batch_size", "text", "sentences", "tokens", "inputs", "x"])
OUTPUT_NAMES = st.sampled_from(["logits", "state", "token_ids", "lengths", "label", "tags", "nope"])
SHAPES = st.lists(st.integers(min_value=0, max_value=6), min_size=0, max_size=4)
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
INTEGERS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
SMALL_IDS = st.integers(min_value=-3, max_value=20)
TEXT = st.one_of(st.binary(max_size=12), st.sampled_from([b"the cat sat", b"good movie", b"", b"\xff\xfe"]))


@st.composite
def tensors(draw) -> tensor_pb2.TensorProto:
    """A TensorProto: a common dtype and shape, values typed or packed, sometimes inconsistent on purpose."""
    dtype = draw(st.sampled_from([types_pb2.DT_INT64, types_pb2.DT_INT32, types_pb2.DT_FLOAT, types_pb2.DT_STRING,
                                  types_pb2.DT_DOUBLE, types_pb2.DT_BOOL, types_pb2.DT_HALF, types_pb2.DT_UINT8]))
    shape = draw(SHAPES)
    size = int(np.prod(shape)) if shape else 1
    count = draw(st.sampled_from([size, size, size, 0, 1, size + 1]))
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for dim in shape:
        proto.tensor_shape.dim.add(size=dim)
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(draw(st.lists(TEXT, min_size=count, max_size=count)))
    elif dtype in (types_pb2.DT_INT64,):
        values = draw(st.lists(st.one_of(SMALL_IDS, INTEGERS), min_size=count, max_size=count))
        if draw(st.booleans()):
            proto.tensor_content = np.array(values, np.int64).tobytes()
        else:
            proto.int64_val.extend(values)
    elif dtype in (types_pb2.DT_INT32, types_pb2.DT_UINT8):
        proto.int_val.extend(draw(st.lists(st.integers(-5, 300), min_size=count, max_size=count)))
    elif dtype == types_pb2.DT_FLOAT:
        values = draw(st.lists(FLOATS, min_size=count, max_size=count))
        if draw(st.booleans()):
            proto.tensor_content = np.array(values, np.float32).tobytes()
        else:
            proto.float_val.extend(values)
    elif dtype == types_pb2.DT_DOUBLE:
        proto.double_val.extend(draw(st.lists(st.floats(), min_size=count, max_size=count)))
    elif dtype == types_pb2.DT_HALF:
        proto.half_val.extend(draw(st.lists(st.integers(0, 65535), min_size=count, max_size=count)))
    else:
        proto.bool_val.extend(draw(st.lists(st.booleans(), min_size=count, max_size=count)))
    return proto


@st.composite
def predict_requests(draw) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = draw(MODELS)
    request.model_spec.signature_name = draw(SIGNATURES)
    version = draw(st.sampled_from([None, None, 1, 2, 0, -1, 99]))
    if version is not None:
        request.model_spec.version.value = version
    for name in draw(st.lists(INPUT_NAMES, max_size=3, unique=True)):
        request.inputs[name].CopyFrom(draw(tensors()))
    request.output_filter.extend(draw(st.lists(OUTPUT_NAMES, max_size=2)))
    return request


# The toy models' signatures (tests/serving_helpers.py): input names, dtypes and ranks.
SIGNATURE_INPUTS = {
    (LANGUAGE_MODEL_NAME, "serving_default"): {"token_ids": (types_pb2.DT_INT64, 2)},
    (LANGUAGE_MODEL_NAME, "step"): {"token_ids": (types_pb2.DT_INT64, 2), "state": (types_pb2.DT_FLOAT, 2)},
    (LANGUAGE_MODEL_NAME, "initial_state"): {"batch_size": (types_pb2.DT_INT32, 0)},
    (LANGUAGE_MODEL_NAME, "tokenize"): {"text": (types_pb2.DT_STRING, 1)},
    (LANGUAGE_MODEL_NAME, "detokenize"): {"token_ids": (types_pb2.DT_INT64, 2)},
    (LANGUAGE_MODEL_NAME, "score"): {"text": (types_pb2.DT_STRING, 1)},
    (CLASSIFIER_NAME, "serving_default"): {"sentences": (types_pb2.DT_STRING, 1)},
    (CLASSIFIER_NAME, "classify"): {"inputs": (types_pb2.DT_STRING, 1)},
    (TAGGER_NAME, "serving_default"): {"sentences": (types_pb2.DT_STRING, 1)},
    (TAGGER_NAME, "tag_tokens"): {"tokens": (types_pb2.DT_STRING, 2)},
}


@st.composite
def plausible_requests(draw) -> predict_pb2.PredictRequest:
    """A request with a real model, signature, input names and dtypes; shapes and values drawn freely."""
    (model, signature), inputs = draw(st.sampled_from(sorted(SIGNATURE_INPUTS.items())))
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    rows = draw(st.integers(0, MAX_BATCH_SIZE + 1))
    for name, (dtype, rank) in inputs.items():
        shape = [rows] + draw(st.lists(st.integers(0, 5), min_size=rank - 1, max_size=rank - 1)) if rank else []
        if draw(st.integers(0, 9)) == 0:  # now and then one rank off
            shape = shape[:-1] if shape and draw(st.booleans()) else shape + [2]
        size = int(np.prod(shape)) if shape else 1
        if dtype == types_pb2.DT_STRING:
            values = np.array(draw(st.lists(TEXT, min_size=size, max_size=size)), object)
        elif dtype == types_pb2.DT_FLOAT:
            values = np.array(draw(st.lists(FLOATS, min_size=size, max_size=size)), np.float32)
        elif dtype == types_pb2.DT_INT32:
            values = np.array(draw(st.lists(st.integers(-2, 2 * MAX_BATCH_SIZE), min_size=size, max_size=size)),
                              np.int32)
        else:
            values = np.array(draw(st.lists(SMALL_IDS, min_size=size, max_size=size)), np.int64)
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values.reshape(shape), dtype=dtype))
    return request


JSON_LEAVES = st.one_of(st.none(), st.booleans(), SMALL_IDS, INTEGERS, st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=8), st.builds(lambda text: {"b64": text}, st.text(max_size=8)))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.sampled_from(["token_ids", "state", "sentences", "b64", "x"]),
                                                    children, max_size=3)), max_leaves=20)


@st.composite
def rest_bodies(draw) -> tuple[str, bytes]:
    """(path, body): a predict or classify call with JSON that is mostly of the right form."""
    model = draw(st.sampled_from([LANGUAGE_MODEL_NAME, CLASSIFIER_NAME, TAGGER_NAME, "nope"]))
    version = draw(st.sampled_from(["", "", "/versions/1", "/versions/99", "/labels/stable"]))
    method = draw(st.sampled_from(["predict", "predict", "classify"]))
    document = {}
    key = draw(st.sampled_from(["instances", "inputs", "examples", "both"]))
    if key == "both":
        document.update(instances=draw(JSON_VALUES), inputs=draw(JSON_VALUES))
    else:
        document[key] = draw(st.one_of(JSON_VALUES, st.lists(st.lists(SMALL_IDS, min_size=1, max_size=3),
                                                              min_size=1, max_size=3)))
    if draw(st.booleans()):
        document["signature_name"] = draw(st.one_of(SIGNATURES, JSON_LEAVES))
    body = json.dumps(document).encode()
    mutation = draw(st.sampled_from(["none", "none", "none", "truncate", "byte", "deep"]))
    if mutation == "truncate":
        body = body[:draw(st.integers(0, len(body)))]
    elif mutation == "byte":
        position = draw(st.integers(0, len(body) - 1))
        body = body[:position] + bytes([draw(st.integers(0, 255))]) + body[position + 1:]
    elif mutation == "deep":
        depth = draw(st.integers(50, 5000))
        body = b'{"instances": ' + b"[" * depth + b"2" + b"]" * depth + b"}"
    return f"/v1/models/{model}{version}:{method}", body


# === Properties ===


@FUZZ_SETTINGS
@given(request=st.one_of(predict_requests(), plausible_requests()))
def test_no_predict_request_gets_internal_or_unknown(prediction, request):
    stub, _ = prediction
    try:
        stub.Predict(request, timeout=TIMEOUT_SECONDS)
    except grpc.RpcError as error:
        assert error.code() not in SERVER_FAULTS, (error.code(), error.details(), request)
        assert error.details(), "a refusal without a message"


@FUZZ_SETTINGS
@given(call=rest_bodies())
def test_no_rest_body_gets_a_500(server, call):
    path, body = call
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=TIMEOUT_SECONDS) as connection:
        connection.sendall(head + body)
        with connection.makefile("rb") as reader:
            status, payload, _ = read_http_response(reader)
    assert status < 500 or status in (501, 503), (status, payload, path, body[:200])
    assert status == 200 or payload["error"], payload


def test_after_the_fuzzing_the_server_still_serves(server, prediction):
    stub, health = prediction
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_SECONDS).status == \
        health_pb2.HealthCheckResponse.SERVING
    request = predict_pb2.PredictRequest()
    request.model_spec.name = LANGUAGE_MODEL_NAME
    request.inputs["token_ids"].CopyFrom(tf.make_tensor_proto(np.array([[2, 3]], np.int64)))
    assert tf.make_ndarray(stub.Predict(request, timeout=TIMEOUT_SECONDS).outputs["logits"]).shape == (1, 2, 16)
    assert "Traceback" not in server.log_text()
