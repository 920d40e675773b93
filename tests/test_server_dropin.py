"""The server as a drop-in for tensorflow_model_server, on TF Serving's own kinds of test models.

The models are exported here, into pytest's temporary directories, the way
TF Serving's testdata scripts export theirs (servables/tensorflow/testdata:
saved_model_half_plus_two.py, export_counter.py): TF1 graphs with reference
variables written by `SavedModelBuilder` (half_plus_two, half_plus_three,
counter, with tf.Example classify/regress signatures), and a native TF2
`tf.Module` (whose classify/regress signatures carry the predict method
name). The expected values are those TF Serving's
model_servers/tensorflow_model_server_test.py asserts.
"""

import json
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_status_pb2, inference_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc, regression_pb2)

from serving.protocol.errors import ServingError
from serving.server import cli, metrics, model_manager, warmup
from serving.server.servable import Servable
from serving_helpers import predict_request, running_server

TIMEOUT_SECONDS = 20
VERSION = 123  # TF Serving's test models are version 00000123
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
PREDICT = "tensorflow/serving/predict"


# === TF Serving's kinds of models, exported here ===


def export_half_plus(export_dir: pathlib.Path, plus: float, tags=("serve",)) -> pathlib.Path:
    """A TF1 `y = 0.5 * x + plus` as saved_model_half_plus_two.py writes it (reference variables).

    Signatures: serving_default (predict x -> y, x of shape [?,1] parsed
    from tf.Examples), classify_x_to_y (tf.Examples -> scores) and
    regress_x_to_y (tf.Examples -> outputs), with their TF1 method names.
    """
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        a = v1.Variable(0.5, name="a", use_resource=False)
        b = v1.Variable(plus, name="b", use_resource=False)
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = v1.parse_example(serialized, {"x": v1.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")
        y = tf.add(tf.multiply(a, x), b, name="y")
        session.run(v1.global_variables_initializer())
        info = v1.saved_model.utils.build_tensor_info
        build = v1.saved_model.signature_def_utils.build_signature_def
        signatures = {
            "serving_default": build({"x": info(x)}, {"y": info(y)}, PREDICT),
            "classify_x_to_y": build({"inputs": info(serialized)}, {"scores": info(y)}, CLASSIFY),
            "regress_x_to_y": build({"inputs": info(serialized)}, {"outputs": info(y)}, REGRESS),
        }
        builder = v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(session, list(tags), signature_def_map=signatures)
        builder.save()
    return export_dir


def export_counter(export_dir: pathlib.Path) -> pathlib.Path:
    """TF Serving's export_counter.py: a stateful reference variable and four predict signatures."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        counter = v1.Variable(0.0, dtype=tf.float32, name="counter", use_resource=False)
        incr_counter = counter.assign_add(1.0)
        delta = v1.placeholder(dtype=tf.float32, name="delta")
        incr_counter_by = counter.assign_add(delta)
        reset_counter = counter.assign(0.0)
        session.run(v1.global_variables_initializer())
        info = v1.saved_model.utils.build_tensor_info
        build = v1.saved_model.signature_def_utils.build_signature_def
        signatures = {
            "get_counter": build({}, {"output": info(counter)}, PREDICT),
            "incr_counter": build({}, {"output": info(incr_counter)}, PREDICT),
            "incr_counter_by": build({"delta": info(delta)}, {"output": info(incr_counter_by)}, PREDICT),
            "reset_counter": build({}, {"output": info(reset_counter)}, PREDICT),
        }
        builder = v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
        builder.save()
    return export_dir


class HalfPlusTwoTf2(tf.Module):
    """A native TF2 half_plus_two: its classify/regress signatures carry the predict method name."""

    def __init__(self):
        super().__init__()
        self.a = tf.Variable(0.5)
        self.b = tf.Variable(2.0)
        self.kernel = tf.Variable([[0.5]])

    def _x(self, serialized):
        return tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def matmul(self, x):  # needs rank 2: a graph that refuses other shapes itself
        return {"y": tf.matmul(x, self.kernel) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        return {"scores": self.a * self._x(inputs) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        return {"outputs": self.a * self._x(inputs) + self.b}


def export_tf2(export_dir: pathlib.Path) -> pathlib.Path:
    module = HalfPlusTwoTf2()
    tf.saved_model.save(module, str(export_dir), signatures={
        "serving_default": module.predict, "matmul": module.matmul,
        "classify_x_to_y": module.classify, "regress_x_to_y": module.regress})
    return export_dir


def example_x(value: float) -> bytes:
    example = tf.train.Example()
    example.features.feature["x"].float_list.value.append(value)
    return example.SerializeToString()


def verify_predict_request(model: str) -> predict_pb2.PredictRequest:
    """The request of TF Serving's VerifyPredictRequest: x = [2.0] with shape [1], output_filter y."""
    request = predict_pb2.PredictRequest(output_filter=["y"])
    request.model_spec.name = model
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add(size=1)
    return request


def write_warmup_file(version_dir: pathlib.Path, logs) -> pathlib.Path:
    """Writes assets.extra/tf_serving_warmup_requests: a TFRecord of PredictionLog records."""
    path = warmup.warmup_requests_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def predict_log(model: str, value: float) -> prediction_log_pb2.PredictionLog:
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(predict_request(model, x=np.array([[value]], np.float32)))
    return log


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{name: base path} of the four models, each with version 123."""
    root = tmp_path_factory.mktemp("dropin-models")
    version = f"{VERSION:08d}"
    export_half_plus(root / "half_plus_two" / version, 2.0)
    export_half_plus(root / "half_plus_three" / version, 3.0)
    export_counter(root / "counter" / version)
    export_tf2(root / "tf2_half_plus_two" / version)
    classify_log = prediction_log_pb2.PredictionLog()
    classify_log.classify_log.request.model_spec.signature_name = "classify_x_to_y"
    classify_log.classify_log.request.input.example_list.examples.add().ParseFromString(example_x(1.0))
    write_warmup_file(root / "tf2_half_plus_two" / version, [predict_log("tf2_half_plus_two", 1.0), classify_log])
    return {name: root / name for name in ("half_plus_two", "half_plus_three", "counter", "tf2_half_plus_two")}


def write_model_config(path: pathlib.Path, models: dict) -> pathlib.Path:
    entries = " ".join(f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}'
                       for name, base in models.items())
    path.write_text(f"model_config_list {{ {entries} }}\n")
    return path


@pytest.fixture(scope="module")
def socket_path():
    directory = tempfile.mkdtemp(prefix="dropin-", dir="/tmp")  # UNIX socket paths must be short
    yield pathlib.Path(directory) / "grpc.sock"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def server(models, tmp_path_factory, socket_path):
    """One server for the four models, with TF Serving's socket, channel-argument and monitoring flags."""
    directory = tmp_path_factory.mktemp("dropin-server")
    config = write_model_config(directory / "models.config", models)
    monitoring = directory / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/custom/metrics" }\n')
    arguments = [f"--grpc_socket_path={socket_path}",
                 "--grpc_channel_arguments=grpc.max_connection_age_ms=20000,grpc.lb_policy_name=grpclb",
                 f"--monitoring_config_file={monitoring}", "--enable_batching"]
    with running_server(model_config_file=config, poll_wait_seconds=0, extra_arguments=arguments,
                        log_dir=directory) as process:
        yield process


@pytest.fixture(scope="module")
def stub(server):
    with server.channel() as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def rest_call(server, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.rest_url + path, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# === 1. Shapes: names and dtypes are checked, the graph decides on shapes ===


@pytest.mark.parametrize("model, expected", [("half_plus_two", 3.0), ("half_plus_three", 4.0),
                                             ("tf2_half_plus_two", 3.0)])
def test_predict_takes_the_shape_the_graph_accepts(stub, model, expected):
    for output_filter in (["y"], []):  # TF Serving's test sends it with and without the filter
        request = verify_predict_request(model)
        del request.output_filter[:]
        request.output_filter.extend(output_filter)
        response = stub.Predict(request, timeout=TIMEOUT_SECONDS)
        assert response.outputs["y"].dtype == types_pb2.DT_FLOAT
        assert list(response.outputs["y"].tensor_shape.dim) == [response.outputs["y"].tensor_shape.dim[0]]
        assert list(response.outputs["y"].float_val) == [expected]
        assert (response.model_spec.name, response.model_spec.signature_name, response.model_spec.version.value) \
            == (model, "serving_default", VERSION)


def test_a_shape_the_graph_refuses_is_invalid_argument_with_the_graphs_message(stub):
    request = predict_request("tf2_half_plus_two", "matmul", x=np.array([2.0, 3.0, 4.0], np.float32))
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=TIMEOUT_SECONDS)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = raised.value.details()
    assert "rank" in details.lower() or "ndims" in details.lower() or "matrix" in details.lower(), details
    assert details.endswith('Input "x": expected shape [?,1], got [3].')
    # The same signature with its own shape works: the refusal was the graph's, not a check of ours.
    response = stub.Predict(predict_request("tf2_half_plus_two", "matmul", x=np.array([[2.0]], np.float32)),
                            timeout=TIMEOUT_SECONDS)
    assert list(response.outputs["y"].float_val) == [3.0]


def test_dtypes_and_names_are_still_checked(stub):
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_request("half_plus_two", x=np.array([[2.0]], np.float64)), timeout=TIMEOUT_SECONDS)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == 'Input "x": expected dtype DT_FLOAT, got DT_DOUBLE.'
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_request("half_plus_two", z=np.array([[2.0]], np.float32)), timeout=TIMEOUT_SECONDS)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Sent extra: {z}. Missing but required: {x}." in raised.value.details()


def test_rest_predict_as_in_tf_servings_test(server):
    assert rest_call(server, "/v1/models/half_plus_two:predict", {"instances": [2.0, 3.0, 4.0]}) \
        == (200, b'{"predictions": [3.0, 3.5, 4.0]}\n')
    assert rest_call(server, "/v1/models/half_plus_two:predict", {"inputs": [2.0, 3.0, 4.0]}) \
        == (200, b'{"outputs": [3.0, 3.5, 4.0]}\n')


# === 2. TF1 SavedModels: reference variables, a stateful counter ===


def test_counter_keeps_its_state_between_requests(stub):
    def call(signature, **inputs):
        response = stub.Predict(predict_request("counter", signature, **inputs), timeout=TIMEOUT_SECONDS)
        return list(response.outputs["output"].float_val)

    call("reset_counter")
    assert call("get_counter") == [0.0]
    assert call("incr_counter") == [1.0]
    assert call("incr_counter") == [2.0]
    assert call("incr_counter_by", delta=np.float32(3.0)) == [5.0]
    assert call("get_counter") == [5.0]
    assert call("reset_counter") == [0.0]
    assert call("get_counter") == [0.0]


def test_model_status_of_tf1_models(server):
    with server.channel() as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "half_plus_two"}), timeout=TIMEOUT_SECONDS)
    assert [(status.version, status.status.error_code) for status in response.model_version_status] == [(VERSION, 0)]
    status, body = rest_call(server, "/v1/models/half_plus_two")
    assert status == 200 and json.loads(body) == {"model_version_status": [
        {"version": str(VERSION), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def test_saved_model_tags_choose_the_meta_graph(tmp_path):
    export_half_plus(tmp_path / "tagged" / "1", 2.0, tags=("serve", "gpu"))
    with pytest.raises(ServingError) as raised:
        Servable.load("tagged", 1, tmp_path / "tagged" / "1")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert "Could not find meta graph def matching supplied tags: { serve }" in raised.value.message
    assert "{ serve gpu }" in raised.value.message and "--saved_model_tags" in raised.value.message
    servable = Servable.load("tagged", 1, tmp_path / "tagged" / "1", tags=("gpu", "serve"))
    assert servable.run("serving_default", {"x": np.array([[4.0]], np.float32)})["y"].tolist() == [[4.0]]
    arguments = cli.build_parser().parse_args(["--saved_model_tags=serve, gpu"])
    cli.check_arguments(cli.build_parser(), arguments)
    assert arguments.saved_model_tags == ["serve", "gpu"]


# === 3. Classify, Regress, MultiInference (gRPC and REST) ===


def classification_request(model, signature, *values):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    for value in values:
        request.input.example_list.examples.add().ParseFromString(example_x(value))
    return request


def regression_request(model, signature, *values):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    for value in values:
        request.input.example_list.examples.add().ParseFromString(example_x(value))
    return request


@pytest.mark.parametrize("model", ["half_plus_two", "tf2_half_plus_two"])
def test_classify_and_regress(stub, model):
    result = stub.Classify(classification_request(model, "classify_x_to_y", 2.0, 4.0), timeout=TIMEOUT_SECONDS)
    assert [[(entry.label, entry.score) for entry in item.classes] for item in result.result.classifications] \
        == [[("", 3.0)], [("", 4.0)]]
    assert (result.model_spec.name, result.model_spec.signature_name, result.model_spec.version.value) \
        == (model, "classify_x_to_y", VERSION)
    result = stub.Regress(regression_request(model, "regress_x_to_y", 2.0, 6.0), timeout=TIMEOUT_SECONDS)
    assert [regression.value for regression in result.result.regressions] == [3.0, 5.0]
    assert (result.model_spec.signature_name, result.model_spec.version.value) == ("regress_x_to_y", VERSION)


def test_regress_checks_the_signature_as_tf_serving(stub):
    with pytest.raises(grpc.RpcError) as raised:
        stub.Regress(regression_request("half_plus_two", "nope", 2.0), timeout=TIMEOUT_SECONDS)
    assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                             "No signature was found with the name: nope")
    with pytest.raises(grpc.RpcError) as raised:  # serving_default's input is "x", not "inputs"
        stub.Regress(regression_request("half_plus_two", "serving_default", 2.0), timeout=TIMEOUT_SECONDS)
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION, "No regression inputs found in SignatureDef: serving_default takes {x}; "
                                             'the serialized tf.Examples go to an input named "inputs"')
    with pytest.raises(grpc.RpcError) as raised:
        stub.Regress(regression_request("half_plus_two", "regress_x_to_y"), timeout=TIMEOUT_SECONDS)
    assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")


@pytest.mark.parametrize("model", ["half_plus_two", "tf2_half_plus_two"])
def test_multi_inference(stub, model):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY)):
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = model, signature
    request.input.example_list.examples.add().ParseFromString(example_x(2.0))
    response = stub.MultiInference(request, timeout=TIMEOUT_SECONDS)
    assert len(response.results) == 2
    assert response.results[0].regression_result.regressions[0].value == 3.0
    assert response.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert [(result.model_spec.name, result.model_spec.signature_name, result.model_spec.version.value)
            for result in response.results] == [(model, "regress_x_to_y", VERSION), (model, "classify_x_to_y", VERSION)]


@pytest.mark.parametrize("change, code, message", [
    (lambda request: request.tasks[1].model_spec.__setattr__("name", "half_plus_three"),
     grpc.StatusCode.INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
    (lambda request: request.tasks[1].model_spec.__setattr__("signature_name", "regress_x_to_y"),
     grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: regress_x_to_y"),
    (lambda request: request.tasks[1].__setattr__("method_name", PREDICT),
     grpc.StatusCode.UNIMPLEMENTED, f"Unsupported signature method_name: {PREDICT} (set each task's method_name "
                                    f"to {CLASSIFY} or {REGRESS})"),
    (lambda request: request.tasks[1].model_spec.__setattr__("signature_name", "nope"),
     grpc.StatusCode.INVALID_ARGUMENT, "Requested signature not found in model graph: nope"),
], ids=["two models", "duplicate signature", "predict task", "unknown signature"])
def test_multi_inference_refusals(stub, change, code, message):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY)):
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = "half_plus_two", signature
    request.input.example_list.examples.add().ParseFromString(example_x(2.0))
    change(request)
    with pytest.raises(grpc.RpcError) as raised:
        stub.MultiInference(request, timeout=TIMEOUT_SECONDS)
    assert (raised.value.code(), raised.value.details()) == (code, message)


@pytest.mark.parametrize("model", ["half_plus_two", "tf2_half_plus_two"])
def test_rest_classify_and_regress_answer_results(server, model):
    assert rest_call(server, f"/v1/models/{model}:classify",
                     {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}) \
        == (200, b'{"results": [[["", 3.0]]]}\n')
    assert rest_call(server, f"/v1/models/{model}:regress",
                     {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]}) \
        == (200, b'{"results": [3.0, 4.0]}\n')


def test_signature_method_name_check_only_with_its_flag(models, tmp_path):
    config = write_model_config(tmp_path / "models.config", {name: models[name]
                                                             for name in ("half_plus_two", "tf2_half_plus_two")})
    with running_server(model_config_file=config, poll_wait_seconds=0, monitoring=False, log_dir=tmp_path,
                        # Without warm-up: its classify record on the TF2 model would fail the check too.
                        extra_arguments=["--enable_signature_method_name_check", "--enable_model_warmup=false"]
                        ) as process:
        with process.channel() as channel:
            checked = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for call, request, kind, method in (
                    (checked.Classify, classification_request("tf2_half_plus_two", "classify_x_to_y", 2.0),
                     "classification", CLASSIFY),
                    (checked.Regress, regression_request("tf2_half_plus_two", "regress_x_to_y", 2.0),
                     "regression", REGRESS)):
                with pytest.raises(grpc.RpcError) as raised:
                    call(request, timeout=TIMEOUT_SECONDS)
                assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert raised.value.details() == f"Expected {kind} signature method_name to be {method}. Was: {PREDICT}"
            # TF1 signatures carry the right method names and pass the check.
            result = checked.Classify(classification_request("half_plus_two", "classify_x_to_y", 2.0),
                                      timeout=TIMEOUT_SECONDS)
            assert result.result.classifications[0].classes[0].score == 3.0


# === 4. Flags: UNIX socket, channel arguments, monitoring config, warm-up ===


def test_grpc_on_the_unix_socket(server, socket_path):
    assert socket_path.exists()
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            verify_predict_request("half_plus_two"), timeout=TIMEOUT_SECONDS)
    assert list(response.outputs["y"].float_val) == [3.0]


def test_grpc_channel_arguments_are_parsed_as_tf_serving_parses_them():
    assert cli.parse_grpc_channel_arguments("grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb") \
        == [("grpc.max_connection_age_ms", 2000), ("grpc.lb_policy_name", "grpclb")]
    assert cli.parse_grpc_channel_arguments("") == []
    assert cli.parse_grpc_channel_arguments("big=99999999999") == [("big", "99999999999")]  # not an int32
    with pytest.raises(ValueError, match="is not key=value"):
        cli.parse_grpc_channel_arguments("grpc.max_connection_age_ms")


def test_monitoring_config_file_moves_the_prometheus_page(server):
    status, page = rest_call(server, "/custom/metrics")
    assert status == 200 and b"rnn_zoo_serving_requests_total" in page
    status, _ = rest_call(server, metrics.DEFAULT_PROMETHEUS_PATH)
    assert status == 400  # no longer served there: a malformed REST request, as any other path


def test_monitoring_config_file_parsing(tmp_path):
    path = tmp_path / "monitoring.config"
    path.write_text("prometheus_config { enable: true }\n")
    assert metrics.read_monitoring_config_file(path) == metrics.PrometheusSettings(True, "/monitoring/prometheus/metrics")
    path.write_text("prometheus_config { enable: false path: '/m' }\n")
    assert metrics.read_monitoring_config_file(path) == metrics.PrometheusSettings(False, "/m")
    path.write_text("prometheus_config { enabled: true }\n")
    with pytest.raises(ValueError, match=f"Invalid protobuf file: '{path}'"):
        metrics.read_monitoring_config_file(path)


def test_warmup_ran_before_the_version_served(server, stub):
    log = server.log_text()
    assert "Number of warmup records read: 2" in log
    assert log.index("Number of warmup records read: 2") < log.index("Successfully loaded servable version "
                                                                     "{name: tf2_half_plus_two")
    response = stub.Predict(verify_predict_request("tf2_half_plus_two"), timeout=TIMEOUT_SECONDS)
    assert list(response.outputs["y"].float_val) == [3.0]


def _half_plus_two_version(tmp_path, name="half_plus_two") -> pathlib.Path:
    return export_half_plus(tmp_path / name / "1", 2.0)


def test_warmup_replays_each_record_the_given_times(tmp_path):
    version = export_counter(tmp_path / "counter" / "1")
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(predict_request("counter", "incr_counter"))
    write_warmup_file(version, [log, log])
    servable = Servable.load("counter", 1, version)
    assert warmup.run_saved_model_warmup(servable, num_request_iterations=3) == 2
    assert servable.run("get_counter", {})["output"].tolist() == 6.0  # 2 records x 3 iterations


def test_warmup_failures_fail_the_load(tmp_path):
    version = _half_plus_two_version(tmp_path)
    servable = Servable.load("half_plus_two", 1, version)
    assert warmup.run_saved_model_warmup(servable) == 0  # no file: nothing to do, as in TF Serving

    write_warmup_file(version, [predict_log("half_plus_two", 1.0)] * (warmup.MAX_WARMUP_RECORDS + 1))
    with pytest.raises(ServingError) as raised:
        warmup.run_saved_model_warmup(servable)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.message == (f"Number of warmup records exceeds the maximum (1000) at "
                                    f"{warmup.warmup_requests_path(version)}")
    write_warmup_file(version, [predict_log("half_plus_two", 1.0)] * warmup.MAX_WARMUP_RECORDS)
    assert warmup.run_saved_model_warmup(servable) == warmup.MAX_WARMUP_RECORDS

    session_log = prediction_log_pb2.PredictionLog()
    session_log.session_run_log.SetInParent()
    write_warmup_file(version, [session_log])
    with pytest.raises(ServingError) as raised:
        warmup.run_saved_model_warmup(servable)
    assert raised.value.code == grpc.StatusCode.UNIMPLEMENTED

    bad_request = prediction_log_pb2.PredictionLog()
    bad_request.predict_log.request.CopyFrom(predict_request("half_plus_two", x=np.array([[1.0]], np.float64)))
    write_warmup_file(version, [bad_request])
    with pytest.raises(ServingError, match='expected dtype DT_FLOAT, got DT_DOUBLE'):
        warmup.run_saved_model_warmup(servable)

    warmup.warmup_requests_path(version).write_bytes(b"this is not a TFRecord file at all")
    with pytest.raises(ServingError) as raised:
        warmup.run_saved_model_warmup(servable)
    assert raised.value.code == grpc.StatusCode.DATA_LOSS
    assert raised.value.message.endswith("Please verify your warmup data is in TFRecord format.")


def test_a_failed_warmup_leaves_the_version_unavailable_with_its_error(tmp_path):
    from serving.server import app

    version = _half_plus_two_version(tmp_path)
    write_warmup_file(version, [predict_log("half_plus_two", 1.0)] * (warmup.MAX_WARMUP_RECORDS + 1))
    arguments = cli.build_parser().parse_args([f"--model_base_path={version.parent}", "--model_name=half_plus_two",
                                               "--file_system_poll_wait_seconds=0"])
    cli.check_arguments(cli.build_parser(), arguments)
    manager = app.make_model_manager(arguments, metrics.ServingMetrics(), None)
    manager.start()
    try:
        [status] = manager.model_status(predict_request("half_plus_two").model_spec)
        assert status.state == get_model_status_pb2.ModelVersionStatus.END
        assert "Model warm-up failed" in status.error.message
        assert "Number of warmup records exceeds the maximum (1000)" in status.error.message
        with pytest.raises(ServingError, match=r"Servable not found for request: Latest\(half_plus_two\)"):
            manager.resolve(predict_request("half_plus_two").model_spec)
    finally:
        manager.stop()
    # With --enable_model_warmup=false the same version serves.
    arguments = cli.build_parser().parse_args([f"--model_base_path={version.parent}", "--model_name=half_plus_two",
                                               "--file_system_poll_wait_seconds=0", "--enable_model_warmup=false"])
    cli.check_arguments(cli.build_parser(), arguments)
    manager = app.make_model_manager(arguments, metrics.ServingMetrics(), None)
    manager.start()
    try:
        assert manager.resolve(predict_request("half_plus_two").model_spec).version == 1
    finally:
        manager.stop()


# === 5. Messages ===


def test_bad_model_config_file_is_worded_as_tf_serving(tmp_path):
    config = tmp_path / "bad_model_config.txt"
    config.write_text("improperly formatted file")  # TF Serving's testdata/bad_model_config.txt
    with pytest.raises(ServingError) as raised:
        model_manager.ModelManager(config_file=config, poll_wait_seconds=0)
    assert raised.value.message.startswith(f"Invalid protobuf file: '{config}'")


def test_rest_messages_are_worded_as_tf_serving(server):
    """json_tensor.cc's wording (ParseJson, FormatSignatureError, TypeError), each saying what to send."""
    def error(path, body: bytes):
        request = urllib.request.Request(server.rest_url + path, data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
        return raised.value.code, json.loads(raised.value.read())["error"]

    predict = "/v1/models/half_plus_two:predict"
    assert error(predict, b"") == (400, "JSON Parse error: The document is empty")
    status, message = error(predict, b'{"instances": [2.0,]}')
    assert status == 400 and message.startswith("JSON Parse error: Expecting value at offset: 19")
    assert error(predict, b'[2.0]') == (400, "JSON Value: [2.0] Is not object (the body must be a JSON object "
                                             'such as {"instances": [...]})')
    assert error(predict, b'{"signature_name": 7, "instances": [2.0]}') == (
        400, "JSON Value: 7 not formatted correctly. 'signature_name' key must be a string value.")
    assert error(predict, b'{"instances": ["two"]}') == (
        400, 'Input "x": JSON Value: "two" Type: String is not of expected type: float (send numbers)')


def test_server_with_a_bad_model_config_file_exits_with_tf_servings_message(tmp_path):
    """TF Serving's testBadModelConfig: the log names the file as `Invalid protobuf file: '<path>'`."""
    import subprocess
    import sys

    config = tmp_path / "bad_model_config.txt"
    config.write_text("improperly formatted file")
    result = subprocess.run([sys.executable, "-m", "serving.server.cli", "--port=0", f"--model_config_file={config}"],
                            capture_output=True, text=True, timeout=120, cwd=pathlib.Path(__file__).parent.parent)
    assert result.returncode == 1
    assert f"Invalid protobuf file: '{config}'" in result.stderr
