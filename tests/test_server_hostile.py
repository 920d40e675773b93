"""A table of hostile requests against one real server, over gRPC (the official stubs) and REST (raw sockets).

Each row is one request a careless or hostile client could send. Each is
checked for its status code and for a fragment of the message that tells the
caller what to fix; after each, the server must still say SERVING and answer
a valid request. REST rows are written as the bytes on the wire, so framing
mistakes (two lengths, bad chunks, folded headers) reach the server as sent;
a row marked `closes` must also end its connection after one answer, so a
request hidden in its body is never answered (request smuggling).
"""

import dataclasses
import socket
from collections.abc import Callable

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from serving_helpers import (CLASSIFIER_NAME, LANGUAGE_MODEL_NAME, TAGGER_NAME, TOY_STATE_SIZE, TOY_VOCABULARY,
                             read_http_response, running_server, session_toy_models)

TIMEOUT_SECONDS = 10
MAX_BATCH_SIZE = 4
MAX_MESSAGE_BYTES = 64 * 1024
VOCABULARY_SIZE = len(TOY_VOCABULARY)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models_root = session_toy_models(tmp_path_factory)
    arguments = [f"--max_batch_size={MAX_BATCH_SIZE}", f"--max_message_bytes={MAX_MESSAGE_BYTES}"]
    with running_server(model_base_dir=models_root, log_dir=tmp_path_factory.mktemp("hostile"),
                        monitoring=False, extra_arguments=arguments) as process:
        yield process


@pytest.fixture(scope="module")
def channel(server):
    with server.channel() as opened:
        yield opened


# === Building requests ===


def _tensor(value, dtype=None) -> tensor_pb2.TensorProto:
    return tf.make_tensor_proto(value, dtype=dtype)


def _predict(model=LANGUAGE_MODEL_NAME, signature="", version=None, label=None, output_filter=(), **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.output_filter.extend(output_filter)
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(value if isinstance(value, tensor_pb2.TensorProto) else _tensor(value))
    return request


def _ids(*rows) -> np.ndarray:
    return np.array(rows or [[2, 3]], np.int64)


def _state(*values) -> np.ndarray:
    return np.array([values or [0.0] * TOY_STATE_SIZE], np.float32)


def _raw_tensor(dtype=types_pb2.DT_INT64, shape=(1, 2), **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def _classify(examples=None, model=CLASSIFIER_NAME, signature="classify", context=None):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    target = request.input.example_list
    if context is not None:
        request.input.example_list_with_context.context.CopyFrom(context)
        target = request.input.example_list_with_context
    for example in examples if examples is not None else [_example(text=[b"good movie"])]:
        target.examples.add().CopyFrom(example)
    return request


def _example(**features) -> example_pb2.Example:
    """A tf.Example; bytes lists become bytes features, ints int64 features, floats float features."""
    example = example_pb2.Example()
    for name, values in features.items():
        feature = example.features.feature[name]
        if all(isinstance(value, bytes) for value in values):
            feature.bytes_list.value.extend(values)
        elif all(isinstance(value, int) for value in values):
            feature.int64_list.value.extend(values)
        else:
            feature.float_list.value.extend(values)
    return example


def _metadata(model=LANGUAGE_MODEL_NAME, fields=("signature_def",)):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = model
    return request


def _status(model=LANGUAGE_MODEL_NAME, version=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    return request


def _regress():
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = LANGUAGE_MODEL_NAME
    return request


def _multi_inference():
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add().model_spec.name = CLASSIFIER_NAME
    return request


# === gRPC rows ===


@dataclasses.dataclass(frozen=True)
class GrpcCase:
    """One hostile RPC: the method, a factory for its request, the code and a fragment of the message."""

    name: str
    method: str
    request: Callable[[], object]
    code: grpc.StatusCode
    fragment: str


INVALID, NOT_FOUND, PRECONDITION = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                    grpc.StatusCode.FAILED_PRECONDITION)
LONG_NAME = "m" * 10_000

GRPC_CASES = [
    # --- model names ---
    GrpcCase("empty model name", "Predict", lambda: _predict(model="", token_ids=_ids()), INVALID,
             "a request must name a model"),
    GrpcCase("unknown model", "Predict", lambda: _predict(model="nope", token_ids=_ids()), NOT_FOUND,
             "Servable not found for request: Latest(nope)"),
    GrpcCase("path-like model name", "Predict", lambda: _predict(model="../lm", token_ids=_ids()), NOT_FOUND,
             "Latest(../lm)"),
    GrpcCase("absolute path as model name", "Predict", lambda: _predict(model="/etc/passwd", token_ids=_ids()),
             NOT_FOUND, "Latest(/etc/passwd)"),
    GrpcCase("model name with a NUL", "Predict", lambda: _predict(model="lm\x00", token_ids=_ids()), NOT_FOUND,
             "Servable not found"),
    GrpcCase("model name of 10k characters", "Predict", lambda: _predict(model=LONG_NAME, token_ids=_ids()),
             NOT_FOUND, "Servable not found for request: Latest(mmm"),
    GrpcCase("no model_spec", "Predict", lambda: predict_pb2.PredictRequest(), INVALID, "Missing ModelSpec"),
    # --- versions and labels ---
    GrpcCase("version not on disk", "Predict", lambda: _predict(version=99, token_ids=_ids()), NOT_FOUND,
             "Specific(lm, 99)"),
    GrpcCase("negative version", "Predict", lambda: _predict(version=-1, token_ids=_ids()), NOT_FOUND,
             "Specific(lm, -1)"),
    GrpcCase("version 0", "Predict", lambda: _predict(version=0, token_ids=_ids()), NOT_FOUND, "Specific(lm, 0)"),
    GrpcCase("unknown label", "Predict", lambda: _predict(label="canary", token_ids=_ids()), INVALID,
             "Unrecognized servable version label: canary"),
    GrpcCase("path-like label", "Predict", lambda: _predict(label="../../etc", token_ids=_ids()), INVALID,
             "Unrecognized servable version label"),
    # --- signatures ---
    GrpcCase("unknown signature", "Predict", lambda: _predict(signature="nope", token_ids=_ids()), PRECONDITION,
             'Serving signature key "nope" not found'),
    GrpcCase("the init op as signature", "Predict", lambda: _predict(signature="__saved_model_init_op"),
             PRECONDITION, "not found"),
    GrpcCase("signature of another model", "Predict", lambda: _predict(signature="tag_tokens", token_ids=_ids()),
             PRECONDITION, 'Serving signature key "tag_tokens" not found'),
    # --- input names ---
    GrpcCase("no inputs", "Predict", lambda: _predict(), INVALID, "Missing but required: {token_ids}"),
    GrpcCase("an extra input", "Predict", lambda: _predict(token_ids=_ids(), state=_state()), INVALID,
             "Sent extra: {state}"),
    GrpcCase("a misnamed input", "Predict", lambda: _predict(tokens=_ids()), INVALID,
             "Sent extra: {tokens}. Missing but required: {token_ids}"),
    GrpcCase("step without its state", "Predict", lambda: _predict(signature="step", token_ids=_ids()), INVALID,
             "Missing but required: {state}"),
    # --- dtypes, ranks, shapes ---
    GrpcCase("float token ids", "Predict", lambda: _predict(token_ids=np.array([[2.0, 3.0]], np.float32)),
             INVALID, "expected dtype DT_INT64, got DT_FLOAT"),
    GrpcCase("string token ids", "Predict", lambda: _predict(token_ids=np.array([[b"the"]], object)), INVALID,
             "expected dtype DT_INT64, got DT_STRING"),
    GrpcCase("int32 token ids", "Predict", lambda: _predict(token_ids=np.array([[2, 3]], np.int32)), INVALID,
             "expected dtype DT_INT64, got DT_INT32"),
    GrpcCase("rank 1 token ids", "Predict", lambda: _predict(token_ids=np.array([2, 3], np.int64)), INVALID,
             "expected shape [?,?], got [2]"),
    GrpcCase("rank 3 token ids", "Predict", lambda: _predict(token_ids=np.ones((1, 2, 2), np.int64)), INVALID,
             "expected shape [?,?], got [1,2,2]"),
    GrpcCase("scalar token ids", "Predict", lambda: _predict(token_ids=np.int64(2)), INVALID,
             "expected shape [?,?], got []"),
    GrpcCase("unsupported dtype", "Predict", lambda: _predict(token_ids=_raw_tensor(dtype=types_pb2.DT_VARIANT)),
             INVALID, "unsupported dtype"),
    GrpcCase("negative dimension", "Predict", lambda: _predict(token_ids=_raw_tensor(shape=(1, -2))), INVALID,
             "negative dimension"),
    GrpcCase("unknown rank", "Predict",
             lambda: _predict(token_ids=tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64,
                                                               tensor_shape={"unknown_rank": True})),
             INVALID, "unknown rank"),
    GrpcCase("tensor_content of the wrong size", "Predict",
             lambda: _predict(token_ids=_raw_tensor(tensor_content=b"\x00" * 12)), INVALID,
             "tensor_content has 12 bytes but shape [1,2] of DT_INT64 needs 16"),
    GrpcCase("more values than the shape holds", "Predict",
             lambda: _predict(token_ids=_raw_tensor(int64_val=[2, 3, 4])), INVALID, "3 values do not fit shape [1,2]"),
    GrpcCase("a billion elements from one value", "Predict",
             lambda: _predict(token_ids=_raw_tensor(shape=(1, 10**9), int64_val=[2])), INVALID,
             "holds 1000000000 elements but only 1 values were sent"),
    GrpcCase("state of the wrong width", "Predict",
             lambda: _predict(signature="step", token_ids=_ids(), state=np.zeros((1, 5), np.float32)), INVALID,
             f"expected shape [?,{TOY_STATE_SIZE}], got [1,5]"),
    GrpcCase("state holding NaN", "Predict",
             lambda: _predict(signature="step", token_ids=_ids(), state=_state(0.0, np.nan, 0.0)), INVALID,
             'Input "state" holds NaN or infinity (first at index [0, 1]); send finite numbers'),
    GrpcCase("state holding infinity", "Predict",
             lambda: _predict(signature="step", token_ids=_ids(), state=_state(np.inf, 0.0, 0.0)), INVALID,
             "holds NaN or infinity (first at index [0, 0])"),
    GrpcCase("state rows unlike token rows", "Predict",
             lambda: _predict(signature="step", token_ids=_ids([2], [3]), state=_state()), INVALID,
             "The inputs disagree on the number of rows (state has 1, token_ids has 2)"),
    # --- empty batches and sizes over each limit ---
    GrpcCase("rows over --max_batch_size", "Predict", lambda: _predict(token_ids=np.full((5, 2), 2, np.int64)),
             INVALID, f"at most {MAX_BATCH_SIZE} rows per request (--max_batch_size)"),
    GrpcCase("initial_state of a billion rows", "Predict",
             lambda: _predict(signature="initial_state", batch_size=np.int32(10**9)), INVALID, "--max_batch_size"),
    GrpcCase("initial_state of -1 rows", "Predict",
             lambda: _predict(signature="initial_state", batch_size=np.int32(-1)), INVALID,
             "Input batch_size asks for -1 rows"),
    GrpcCase("a request over --max_message_bytes", "Predict",
             lambda: _predict(signature="tokenize", text=np.array([b"the " * (MAX_MESSAGE_BYTES // 4)], object)),
             grpc.StatusCode.RESOURCE_EXHAUSTED, "(--max_message_bytes)"),
    GrpcCase("a request over gRPC's own limit", "Predict",
             lambda: _predict(signature="tokenize", text=np.array([b"a" * (3 * MAX_MESSAGE_BYTES)], object)),
             grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max"),
    GrpcCase("a response over --max_message_bytes", "Predict",
             lambda: _predict(token_ids=np.full((4, 500), 2, np.int64)), grpc.StatusCode.RESOURCE_EXHAUSTED,
             "response is at least 128000 bytes"),  # 4 x 500 x 16 float32 logits, refused before running
    # --- token ids ---
    GrpcCase("a negative token id", "Predict", lambda: _predict(token_ids=_ids([2, -1])), INVALID,
             f"-1 is not in [0, {VOCABULARY_SIZE})"),
    GrpcCase("a token id past the vocabulary", "Predict", lambda: _predict(token_ids=_ids([2, VOCABULARY_SIZE])),
             INVALID, f"{VOCABULARY_SIZE} is not in [0, {VOCABULARY_SIZE})"),
    GrpcCase("the largest int64 as token id", "Predict", lambda: _predict(token_ids=_ids([2**63 - 1])), INVALID,
             f"is not in [0, {VOCABULARY_SIZE})"),
    GrpcCase("step with a token id past the vocabulary", "Predict",
             lambda: _predict(signature="step", token_ids=_ids([99]), state=_state()), INVALID,
             f"99 is not in [0, {VOCABULARY_SIZE})"),
    # --- output filters ---
    GrpcCase("unknown output filter", "Predict", lambda: _predict(token_ids=_ids(), output_filter=["probs"]),
             INVALID, "output tensor alias not found in signature: probs Outputs expected to be in the set {logits}"),
    GrpcCase("duplicate output filter", "Predict",
             lambda: _predict(signature="step", token_ids=_ids(), state=_state(), output_filter=["state", "state"]),
             INVALID, "duplicate output tensor alias: state"),
    # --- Classify and tf.Examples ---
    GrpcCase("classify without model_spec", "Classify", lambda: classification_pb2.ClassificationRequest(),
             INVALID, "Missing ModelSpec"),
    GrpcCase("classify on a predict signature", "Classify", lambda: _classify(signature="serving_default"),
             INVALID, 'is not a classify signature, whose outputs are "classes" and/or "scores"; call it with '
                      'Predict'),
    GrpcCase("classify on a model without one", "Classify", lambda: _classify(model=LANGUAGE_MODEL_NAME),
             INVALID, "No signature was found with the name: classify"),
    GrpcCase("classify with no examples", "Classify", lambda: _classify(examples=[]), INVALID, "Input is empty."),
    GrpcCase("examples over --max_batch_size", "Classify",
             lambda: _classify(examples=[_example(text=[b"good"])] * 5), INVALID, "--max_batch_size"),
    GrpcCase("an example whose text is an int", "Classify", lambda: _classify(examples=[_example(text=[7])]),
             INVALID, "Key: text"),
    GrpcCase("an example with two texts", "Classify",
             lambda: _classify(examples=[_example(text=[b"good", b"bad"])]), INVALID, "Key: text"),
    GrpcCase("a context whose text is a float", "Classify",
             lambda: _classify(examples=[_example(other=[b"x"])], context=_example(text=[1.5])), INVALID,
             "Key: text"),
    GrpcCase("serialized examples that are not protos", "Predict",
             lambda: _predict(model=CLASSIFIER_NAME, signature="classify",
                              inputs=np.array([b"\xff\xfe not a proto"], object)), INVALID,
             "serialized tf.Examples must parse as tensorflow.Example"),
    # --- non-UTF-8 strings (valid DT_STRING bytes: the tokenizers take them) ---
    GrpcCase("non-UTF-8 sentence to the tagger, then a bad signature", "Predict",
             lambda: _predict(model=TAGGER_NAME, signature="nope", sentences=np.array([b"\xff\xfe"], object)),
             PRECONDITION, 'Serving signature key "nope" not found'),
    # --- other methods ---
    GrpcCase("metadata without a field", "GetModelMetadata", lambda: _metadata(fields=()), INVALID,
             "must specify at least one metadata_field"),
    GrpcCase("metadata of an unsupported field", "GetModelMetadata", lambda: _metadata(fields=("weights",)),
             INVALID, "Metadata field weights is not supported"),
    GrpcCase("metadata of an unknown model", "GetModelMetadata", lambda: _metadata(model="nope"), NOT_FOUND,
             "Latest(nope)"),
    GrpcCase("status of an unknown model", "GetModelStatus", lambda: _status(model="nope"), NOT_FOUND, "nope"),
    GrpcCase("status of a version not on disk", "GetModelStatus", lambda: _status(version=99), NOT_FOUND, "99"),
    GrpcCase("status with an empty name", "GetModelStatus", lambda: _status(model=""), INVALID,
             "a request must name a model"),
    GrpcCase("Regress on a predict signature", "Regress", _regress, grpc.StatusCode.FAILED_PRECONDITION,
             'the serialized tf.Examples go to an input named "inputs"'),
    GrpcCase("MultiInference without method names", "MultiInference", _multi_inference,
             grpc.StatusCode.UNIMPLEMENTED, "set each task's method_name to tensorflow/serving/classify or "
                                            "tensorflow/serving/regress"),
]

_STUBS = {"GetModelStatus": model_service_pb2_grpc.ModelServiceStub}


def _call(channel, method: str, request, metadata=()):
    stub = _STUBS.get(method, prediction_service_pb2_grpc.PredictionServiceStub)(channel)
    return getattr(stub, method)(request, timeout=TIMEOUT_SECONDS, metadata=metadata)


def assert_still_serving(server, channel) -> None:
    """Health is SERVING and a valid Predict answers, over gRPC and REST."""
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_SECONDS)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    response = _call(channel, "Predict", _predict(token_ids=_ids()))
    assert tf.make_ndarray(response.outputs["logits"]).shape == (1, 2, VOCABULARY_SIZE)
    status, body, _ = rest_exchange(server, _http("POST", "/v1/models/lm:predict", '{"instances": [[2, 3]]}'))
    assert status == 200 and np.asarray(body["predictions"]).shape == (1, 2, VOCABULARY_SIZE)


@pytest.mark.parametrize("case", GRPC_CASES, ids=[case.name for case in GRPC_CASES])
def test_hostile_rpc_is_refused_with_a_message_and_the_server_keeps_serving(server, channel, case):
    with pytest.raises(grpc.RpcError) as raised:
        _call(channel, case.method, case.request())
    assert raised.value.code() == case.code, raised.value.details()
    assert case.fragment in raised.value.details()
    assert_still_serving(server, channel)


def test_an_empty_batch_answers_empty_outputs(server, channel):
    response = _call(channel, "Predict", _predict(token_ids=np.zeros((0, 2), np.int64)))
    assert tf.make_ndarray(response.outputs["logits"]).shape == (0, 2, VOCABULARY_SIZE)
    status, body, _ = rest_exchange(server, _http("POST", PREDICT, '{"inputs": {"token_ids": []}}'))
    assert status == 400 and "expected shape [?,?], got [0]" in body["error"]  # [] has rank 1 in JSON
    assert_still_serving(server, channel)


def test_a_request_that_is_not_a_proto_is_invalid_argument(server, channel):
    predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                  request_serializer=lambda data: data, response_deserializer=lambda data: data)
    for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05\x0a\x03\xff\xfe\xfd"):  # junk; a model name that is not UTF-8
        with pytest.raises(grpc.RpcError) as raised:
            predict(garbage, timeout=TIMEOUT_SECONDS)
        assert raised.value.code() == INVALID, raised.value.details()
        assert "is not a valid tensorflow.serving.PredictRequest" in raised.value.details()
    assert_still_serving(server, channel)


def test_non_utf8_strings_are_bytes_to_the_models(server, channel):
    response = _call(channel, "Predict", _predict(model=TAGGER_NAME, sentences=np.array([b"\xff\xfe the"], object)))
    assert tf.make_ndarray(response.outputs["tokens"]).tolist() == [[b"\xff\xfe", b"the"]]
    # REST can only carry them as {"b64": ...}, and answers the same tokens so, rather than as broken text.
    status, body, _ = rest_exchange(server, _http("POST", "/v1/models/tagger:predict",
                                                  '{"instances": [{"b64": "//4gdGhl"}], "signature_name": ""}'))
    assert status == 200, body
    assert body["predictions"][0]["tokens"] == [{"b64": "//4="}, "the"]


# === REST rows: the request's bytes as sent ===


def _http(method: str, target: str, body: str | bytes | None = None, headers: dict | None = None,
          version: str = "HTTP/1.1") -> bytes:
    """A request as bytes, with Host and (for a body) Content-Length unless `headers` say otherwise."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1"]
    fields = dict(headers or {})
    if data is not None and "Content-Length" not in fields and "Transfer-Encoding" not in fields:
        fields["Content-Length"] = str(len(data))
    lines += [f"{name}: {value}" for name, value in fields.items() if value is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (data or b"")


def _raw(text: str) -> bytes:
    return text.encode("latin-1")


def rest_exchange(server, raw: bytes, closes: bool = False, half_close: bool = False):
    """Sends `raw` on a new connection: (status, JSON body, headers) of the first answer.

    With `closes`, the server must then close the connection without a
    second answer (what a smuggled request would get). With `half_close`,
    the client shuts its sending side after the request.
    """
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=TIMEOUT_SECONDS) as connection:
        connection.sendall(raw)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        with connection.makefile("rb") as reader:
            answer = read_http_response(reader)
            if closes:
                assert answer[2]["Connection"] == "close"
                assert reader.read() == b"", "a second answer came on the connection"
        return answer


@dataclasses.dataclass(frozen=True)
class RestCase:
    name: str
    raw: bytes
    status: int
    fragment: str
    closes: bool = False
    half_close: bool = False  # the client shuts its sending side after the request


PREDICT = "/v1/models/lm:predict"
SMUGGLED = "GET /v1/models/lm HTTP/1.1\r\nHost: x\r\n\r\n"

REST_CASES = [
    # --- model names, versions, labels ---
    RestCase("no model name", _http("GET", "/v1/models"), 400, "Missing model name"),
    RestCase("unknown model", _http("GET", "/v1/models/nope"), 404, "nope"),
    RestCase("path-like model name", _http("GET", "/v1/models/..%2F..%2Fetc"), 404, "../../etc"),
    RestCase("model name with a NUL", _http("POST", "/v1/models/lm%00:predict", '{"instances": [[2]]}'), 404,
             "Servable not found"),
    RestCase("model name of 10k characters", _http("GET", f"/v1/models/{LONG_NAME}"), 404, "mmmm"),
    RestCase("version not on disk", _http("POST", "/v1/models/lm/versions/99:predict", '{"instances": [[2]]}'),
             404, "Specific(lm, 99)"),
    RestCase("version that is not a number", _http("GET", "/v1/models/lm/versions/two"), 400, "Malformed request"),
    RestCase("unknown label", _http("POST", "/v1/models/lm/labels/canary:predict", '{"instances": [[2]]}'), 400,
             "Unrecognized servable version label: canary"),
    RestCase("unknown path", _http("GET", "/v2/anything"), 400, "Malformed request: GET /v2/anything"),
    RestCase("unknown method", _http("POST", "/v1/models/lm:explain", "{}"), 400, "Malformed request"),
    RestCase("regress without examples", _http("POST", "/v1/models/lm:regress", "{}"), 400,
             "'examples' must be a non-empty list of feature objects"),
    RestCase("PUT", _http("PUT", PREDICT, "{}"), 405, "GET a model's status or metadata, POST to :predict"),
    # --- signatures and inputs ---
    RestCase("unknown signature", _http("POST", PREDICT, '{"signature_name": "nope", "instances": [[2]]}'), 400,
             'Serving signature key "nope" not found'),
    RestCase("signature_name not a string", _http("POST", PREDICT, '{"signature_name": 5, "instances": [[2]]}'),
             400, "'signature_name' key must be a string value"),
    RestCase("neither instances nor inputs", _http("POST", PREDICT, '{"examples": []}'), 400,
             "Missing 'inputs' or 'instances' key"),
    RestCase("both instances and inputs", _http("POST", PREDICT, '{"instances": [[2]], "inputs": [[2]]}'), 400,
             "Not allowed to have both"),
    RestCase("empty instances", _http("POST", PREDICT, '{"instances": []}'), 400, "non-empty JSON list"),
    RestCase("misnamed input", _http("POST", PREDICT, '{"inputs": {"tokens": [[2]]}}'), 400,
             "Missing but required: {token_ids}"),
    RestCase("extra input", _http("POST", "/v1/models/lm:predict",
                                  '{"signature_name": "step", "instances": [{"token_ids": [2], "state": [0, 0, 0], '
                                  '"mood": 1}]}'), 400, "Sent extra: {mood}"),
    RestCase("ragged instances", _http("POST", PREDICT, '{"instances": [[2, 3], [2]]}'), 400, "ragged"),
    RestCase("strings for int64 ids", _http("POST", PREDICT, '{"instances": [["the"]]}'), 400,
             'JSON Value: "the" Type: String is not of expected type: int64 (send integers)'),
    RestCase("floats for int64 ids", _http("POST", PREDICT, '{"instances": [[2.5]]}'), 400,
             "JSON Value: 2.5 Type: Number is not of expected type: int64 (send integers)"),
    RestCase("rank 1 ids", _http("POST", PREDICT, '{"inputs": [2, 3]}'), 400, "expected shape [?,?], got [2]"),
    RestCase("ids past the vocabulary", _http("POST", PREDICT, '{"instances": [[2, 99]]}'), 400,
             f"99 is not in [0, {VOCABULARY_SIZE})"),
    RestCase("an int past int64", _http("POST", PREDICT, '{"instances": [[9223372036854775808]]}'), 400,
             "send values that fit DT_INT64"),
    RestCase("state of the wrong width",
             _http("POST", PREDICT, '{"signature_name": "step", "inputs": {"token_ids": [[2]], "state": [[0, 0]]}}'),
             400, f"expected shape [?,{TOY_STATE_SIZE}], got [1,2]"),
    RestCase("state past float32",
             _http("POST", PREDICT, '{"signature_name": "step", "inputs": {"token_ids": [[2]], '
                                    '"state": [[1e300, 0, 0]]}}'), 400, "out of the range of DT_FLOAT"),
    RestCase("rows over --max_batch_size", _http("POST", PREDICT, '{"instances": [[2], [2], [2], [2], [2]]}'), 400,
             "(--max_batch_size)"),
    RestCase("invalid base64", _http("POST", "/v1/models/classifier:predict", '{"instances": [{"b64": "%%%"}]}'),
             400, "invalid base64"),
    RestCase("classify without examples", _http("POST", "/v1/models/classifier:classify", '{"examples": 3}'), 400,
             "'examples' must be a non-empty list"),
    RestCase("classify with a nested feature",
             _http("POST", "/v1/models/classifier:classify", '{"examples": [{"text": {"a": 1}}]}'), 400,
             "is not a string or {\"b64\": ...}"),
    # --- JSON ---
    RestCase("not JSON", _http("POST", PREDICT, "{instances: [[2]]}"), 400, "JSON Parse error"),
    RestCase("an empty body", _http("POST", PREDICT, ""), 400, "JSON Parse error"),
    RestCase("a JSON array", _http("POST", PREDICT, "[[2]]"), 400,
             "JSON Value: [[2]] Is not object (the body must be a JSON object"),
    RestCase("a number past float64", _http("POST", PREDICT, '{"instances": [[1e400]]}'), 400,
             "the number 1e400 is out of the range of a 64-bit float"),
    RestCase("NaN", _http("POST", PREDICT, '{"instances": [[NaN]]}'), 400, "NaN is not JSON"),
    RestCase("-Infinity", _http("POST", PREDICT, '{"instances": [[-Infinity]]}'), 400, "-Infinity is not JSON"),
    RestCase("an integer of 5000 digits", _http("POST", PREDICT, '{"instances": [[' + "9" * 5000 + "]]}"), 400,
             "has more than 20 digits"),
    RestCase("nested 65 levels", _http("POST", PREDICT, '{"instances": ' + "[" * 64 + "]" * 64 + "}"), 400,
             "nested more than 64 levels deep"),
    RestCase("nested 30000 levels", _http("POST", PREDICT, '{"instances": ' + "[" * 30000 + "]" * 30000 + "}"),
             400, "nested more than 64 levels deep"),
    RestCase("a body that is not UTF-8", _http("POST", PREDICT, b'{"instances": ["\xff"]}'), 400, "not UTF-8"),
    # --- sizes ---
    RestCase("a body over --max_message_bytes",
             _http("POST", PREDICT, None, {"Content-Length": str(MAX_MESSAGE_BYTES + 1)}), 413,
             "(--max_message_bytes)", closes=True),
    RestCase("headers over 64 KiB", _http("GET", "/v1/models/lm", None, {"X-Big": "x" * 70_000}), 413,
             "The headers sent with the request exceed the maximum allowed bytes", closes=True),
    # --- HTTP framing ---
    RestCase("Content-Length and Transfer-Encoding", _raw(
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"0\r\n\r\n{SMUGGLED}"), 400, "must not carry both Content-Length and Transfer-Encoding", closes=True),
    RestCase("two Content-Lengths", _raw(
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 20\r\n\r\n{{}}{SMUGGLED}"),
        400, "Content-Length is given twice", closes=True),
    RestCase("Content-Length with a sign", _http("POST", PREDICT, "{}", {"Content-Length": "+2"}), 400,
             "Content-Length must be one whole number", closes=True),
    RestCase("Content-Length with an underscore", _http("POST", PREDICT, "{}" + "x" * 8, {"Content-Length": "1_0"}),
             400, "Content-Length must be one whole number", closes=True),
    RestCase("a body shorter than its Content-Length", _http("POST", PREDICT, "{}", {"Content-Length": "10"}),
             400, "ended after 2 of its 10 bytes", closes=True, half_close=True),
    RestCase("Transfer-Encoding gzip", _http("POST", PREDICT, b"0\r\n\r\n", {"Transfer-Encoding": "gzip"}), 501,
             "must be 'chunked'", closes=True),
    RestCase("Transfer-Encoding twice", _raw(
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n"), 400, "Transfer-Encoding is given twice", closes=True),
    RestCase("chunked on HTTP/1.0", _http("POST", PREDICT, f"0\r\n\r\n{SMUGGLED}", {"Transfer-Encoding": "chunked",
                                                                                     "Connection": "keep-alive"},
                                          version="HTTP/1.0"),
             400, "Transfer-Encoding needs HTTP/1.1", closes=True),
    RestCase("space before the colon", _raw(
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 2\r\n\r\n{{}}"),
        400, "no space before the colon", closes=True),
    RestCase("a folded header", _raw(
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n 0\r\n\r\n{{}}"), 400, "obs-fold", closes=True),
    RestCase("a NUL in a header", _raw("GET /v1/models/lm HTTP/1.1\r\nHost: x\r\nX-Note: a\x00b\r\n\r\n"), 400,
             "CR or NUL", closes=True),
    RestCase("a negative chunk size", _http("POST", PREDICT, f"-5\r\n{SMUGGLED}", {"Transfer-Encoding": "chunked"}),
             400, "chunk size b'-5' is not hex digits", closes=True),
    RestCase("a 0x chunk size", _http("POST", PREDICT, "0x2\r\n{}\r\n0\r\n\r\n", {"Transfer-Encoding": "chunked"}),
             400, "is not hex digits", closes=True),
    RestCase("a chunk longer than its size", _http("POST", PREDICT, "1\r\n{}\r\n0\r\n\r\n",
                                                   {"Transfer-Encoding": "chunked"}),
             400, "not followed by CRLF", closes=True),
    RestCase("a request hidden in the trailers", _http("POST", PREDICT, f"2\r\n{{}}\r\n0\r\n{SMUGGLED}",
                                                       {"Transfer-Encoding": "chunked"}),
             400, "trailer", closes=True),
    RestCase("chunks over --max_message_bytes", _http(
        "POST", PREDICT, f"{MAX_MESSAGE_BYTES:x}\r\n" + "x" * MAX_MESSAGE_BYTES + "\r\n1\r\nx\r\n0\r\n\r\n",
        {"Transfer-Encoding": "chunked"}), 413, "(--max_message_bytes)", closes=True),
    RestCase("two Authorization headers", _raw(
        "GET /v1/models/lm HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n"), 400,
        "Authorization is given twice", closes=True),
    RestCase("a lower-case method", _raw("get /v1/models/lm HTTP/1.1\r\nHost: x\r\n\r\n"), 400,
             "method names are case-sensitive and uppercase", closes=True),
    RestCase("an absolute URI", _raw("GET http://evil.example/v1/models/lm HTTP/1.1\r\nHost: x\r\n\r\n"), 400,
             "Absolute URI not allowed", closes=True),
    RestCase("a request line of one word", _raw("HELLO\r\n\r\n"), 400, "Malformed Request-Line", closes=True),
    RestCase("HTTP/2.0 over HTTP/1 framing", _raw("GET /v1/models/lm HTTP/2.0\r\nHost: x\r\n\r\n"), 505,
             "Cannot fulfill request", closes=True),
    RestCase("bare LF line ends", _raw("GET /v1/models/lm HTTP/1.1\nHost: x\n\n"), 400, "CRLF", closes=True),
]


@pytest.mark.parametrize("case", REST_CASES, ids=[case.name for case in REST_CASES])
def test_hostile_http_request_is_refused_with_a_message_and_the_server_keeps_serving(server, channel, case):
    status, body, _ = rest_exchange(server, case.raw, closes=case.closes, half_close=case.half_close)
    assert status == case.status, body
    assert case.fragment in body["error"]
    assert_still_serving(server, channel)


def test_keep_alive_serves_several_requests_on_one_connection_and_reads_chunked_bodies(server):
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=TIMEOUT_SECONDS) as connection:
        requests = [_http("POST", PREDICT, '{"instances": [[2, 3]]}'),
                    _http("POST", PREDICT, b'e\r\n{"instances": \r\n9\r\n[[2, 3]]}\r\n0\r\nX-Trailer: 1\r\n\r\n',
                          {"Transfer-Encoding": "chunked"}),
                    _http("GET", "/v1/models/lm")]
        connection.sendall(b"".join(requests))  # pipelined: each is read exactly where the one before ended
        with connection.makefile("rb") as reader:
            answers = [read_http_response(reader) for _ in requests]
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert answers[0][1] == answers[1][1]  # the chunked body was read as the same request
    assert answers[2][1]["model_version_status"][0]["state"] == "AVAILABLE"
    assert all(headers["Connection"] != "close" for _, _, headers in answers)


def test_no_traceback_in_the_log(server):
    assert "Traceback" not in server.log_text()
