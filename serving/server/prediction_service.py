"""tensorflow.serving.PredictionService: Predict, Classify, GetModelMetadata.

`InferenceService` holds the request logic, in TF Serving's order of checks
and with its messages; the gRPC servicer and the REST API both call it, so the
two protocols cannot drift apart. `handle_rpc` turns any failure into a gRPC
status on the one request that caused it, and counts every request.
"""

import time
from collections.abc import Callable

import grpc
import numpy as np
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, inference_pb2, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from serving.protocol import errors, tensors
from serving.protocol.errors import ServingError, invalid_argument
from serving.server.batching import CLIENT_GONE_MESSAGE, BatchScheduler
from serving.server.metrics import ServingMetrics
from serving.server.model_manager import ModelManager
from serving.server.servable import DEFAULT_SIGNATURE_NAME, Servable

CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
DEFAULT_MAX_BATCH_SIZE = 1024
BATCH_SIZE_INPUT = "batch_size"  # initial_state's scalar input (docs/serving_contract.md)
SIGNATURE_DEF_FIELD = "signature_def"
# gRPC carries the status message in a header; clients refuse huge headers.
_MAX_DETAILS_CHARS = 4000


class InferenceService:
    """Runs requests on the loaded models, optionally through the batcher.

    Args:
        manager: Where requests find their servable.
        batcher: A BatchScheduler, or None to run every request alone.
        max_batch_size: Most rows one request may carry (`--max_batch_size`).
    """

    def __init__(self, manager: ModelManager, batcher: BatchScheduler | None = None,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE):
        self.manager = manager
        self.batcher = batcher
        self.max_batch_size = max_batch_size

    # --- Predict ---

    def predict(self, request: predict_pb2.PredictRequest, timeout_seconds: float | None = None,
                client=None) -> predict_pb2.PredictResponse:
        """Runs any signature on the request's named input tensors.

        `client` is the gRPC context (see `_run`), or None.

        Raises:
            ServingError: with TF Serving's code and message for each failure.
        """
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        servable = self.manager.resolve(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE_NAME
        signature = servable.signature(signature_name)

        check_input_names(signature, request.inputs)
        inputs = {alias: tensors.tensor_proto_to_numpy(proto, alias) for alias, proto in request.inputs.items()}
        outputs = self.predict_arrays(servable, signature_name, inputs, list(request.output_filter), timeout_seconds,
                                      client)
        response = predict_pb2.PredictResponse()
        _fill_model_spec(response.model_spec, servable, signature_name)
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(tensors.numpy_to_tensor_proto(array))
        return response

    def predict_arrays(self, servable: Servable, signature_name: str, inputs: dict,
                       output_filter: list[str], timeout_seconds: float | None = None, client=None) -> dict:
        """Checks numpy inputs against the signature, runs it, and filters the outputs.

        The part of Predict shared by gRPC and REST.

        Returns:
            {output alias: array}, in `output_filter` order or sorted by alias.

        Raises:
            ServingError: INVALID_ARGUMENT for wrong names, dtypes, shapes or
                output filter; the model's own error when it fails.
        """
        signature = servable.signature(signature_name)
        check_input_names(signature, inputs)
        for alias, array in inputs.items():
            tensors.check_input(alias, array, signature.inputs[alias])
        check_rows_agree(signature, inputs)
        self.check_batch_size(inputs)
        output_aliases = []
        for alias in output_filter:
            if alias not in signature.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                    f"the set {{{','.join(sorted(signature.outputs))}}}.")
            if alias in output_aliases:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            output_aliases.append(alias)
        outputs = self._run(servable, signature_name, inputs, timeout_seconds, client)
        return {alias: outputs[alias] for alias in (output_aliases or sorted(signature.outputs))}

    def check_batch_size(self, inputs: dict) -> None:
        """Refuses a request of more rows than `--max_batch_size`, before any work is done.

        Rows are axis 0 of each input; the contract's scalar `batch_size`
        input (`initial_state`) asks for that many rows, so it counts too.

        Raises:
            ServingError: INVALID_ARGUMENT naming the input and the flag.
        """
        for alias, array in inputs.items():
            if array.ndim:
                rows = array.shape[0]
            elif alias == BATCH_SIZE_INPUT and array.dtype.kind in "iu":
                rows = int(array)
            else:
                continue
            if rows < 0:
                raise invalid_argument(f"Input {alias} asks for {rows} rows; send a number of rows from 0 to "
                                       f"{self.max_batch_size}")
            if rows > self.max_batch_size:
                raise invalid_argument(
                    f"Input {alias} asks for {rows} rows; this server takes at most {self.max_batch_size} rows "
                    "per request (--max_batch_size). Split the request.")

    # --- Classify ---

    def classify(self, request: classification_pb2.ClassificationRequest, timeout_seconds: float | None = None,
                 client=None) -> classification_pb2.ClassificationResponse:
        """Runs a `tensorflow/serving/classify` signature on serialized tf.Examples.

        Raises:
            ServingError: with TF Serving's code and message for each failure.
        """
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        servable = self.manager.resolve(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE_NAME
        signature = servable.signature_defs.get(signature_name)
        if signature is None or signature_name.startswith("__"):
            raise invalid_argument(f"No signature was found with the name: {signature_name}")
        if signature.method_name != CLASSIFY_METHOD_NAME:
            raise invalid_argument(
                f"Expected classification signature method_name to be {CLASSIFY_METHOD_NAME}. "
                f"Was: {signature.method_name}")
        if len(signature.inputs) != 1:
            raise invalid_argument("Expected one input Tensor.")
        if len(signature.outputs) not in (1, 2):
            raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
        if "inputs" not in signature.inputs:
            raise errors.failed_precondition("No classification inputs found in SignatureDef: inputs")
        if "classes" not in signature.outputs and "scores" not in signature.outputs:
            raise errors.failed_precondition(
                "Expected classification signature outputs to contain at least one of \"classes\" or \"scores\".")

        examples = serialized_examples(request.input)
        if len(examples) > self.max_batch_size:
            raise invalid_argument(
                f"The request holds {len(examples)} examples; this server takes at most {self.max_batch_size} "
                "per request (--max_batch_size). Split the request.")
        outputs = self._run(servable, signature_name, {"inputs": examples}, timeout_seconds, client)
        classes, scores = outputs.get("classes"), outputs.get("scores")
        num_examples = len(examples)
        for name, output, dtype_kind in (("classes", classes, "O"), ("scores", scores, "f")):
            if output is None:
                continue
            if output.ndim != 2:
                raise invalid_argument(
                    f"Expected Tensor shape: [batch_size num_classes] but got {tensors.shape_string(output.shape)}")
            if output.dtype.kind != dtype_kind:
                expected = "DT_STRING" if dtype_kind == "O" else "DT_FLOAT"
                raise invalid_argument(f"Expected {name} Tensor of {expected}. Got: {output.dtype}")
            if output.shape[0] != num_examples:
                raise invalid_argument(
                    f"Expected {name} output batch size of {num_examples}. Got: {output.shape[0]}")
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise invalid_argument(
                f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}")

        response = classification_pb2.ClassificationResponse()
        _fill_model_spec(response.model_spec, servable, signature_name)
        num_classes = (classes if classes is not None else scores).shape[1]
        for row in range(num_examples):
            classifications = response.result.classifications.add()
            for column in range(num_classes):
                entry = classifications.classes.add()
                if classes is not None:
                    entry.label = classes[row, column].decode("utf-8", errors="replace")
                if scores is not None:
                    entry.score = float(scores[row, column])
        return response

    # --- GetModelMetadata ---

    def get_model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                           ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """Returns the version's SignatureDefMap packed in an Any, as TF Serving does.

        Raises:
            ServingError: INVALID_ARGUMENT for a missing spec or unsupported field,
                NOT_FOUND for an unknown model or version.
        """
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {field} is not supported")
        servable = self.manager.resolve(request.model_spec)
        signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.signature_defs.items():
            signature_def_map.signature_def[key].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map)
        return response

    # --- shared ---

    def _run(self, servable: Servable, signature_name: str, inputs: dict, timeout_seconds: float | None,
             client=None) -> dict:
        """Runs the signature, unless the caller is already gone.

        Args:
            client: The gRPC context (`is_active()`, `add_callback()`), or None:
                a request whose deadline has passed or whose client has left
                is not started, and leaves the batch queue when that happens.
        """
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               "The request's deadline had passed before it could start; nothing was run")
        if client is not None and not client.is_active():
            raise ServingError(grpc.StatusCode.CANCELLED, CLIENT_GONE_MESSAGE)
        if self.batcher is None:
            return servable.run(signature_name, inputs)
        return self.batcher.run(
            (servable.name, servable.version, signature_name), inputs, servable.batching_plan(signature_name),
            lambda batch_inputs: servable.run(signature_name, batch_inputs), timeout_seconds,
            metric_labels=(servable.name, signature_name), client=client)


def check_input_names(signature, received_names) -> None:
    """Checks that a request names exactly the signature's inputs.

    Raises:
        ServingError: INVALID_ARGUMENT listing the extra and missing inputs,
            worded as TF Serving words it.
    """
    received, expected = set(received_names), set(signature.inputs)
    if received != expected:
        raise invalid_argument(
            f"input size does not match signature: {len(received)}!={len(expected)} "
            f"len({{{','.join(sorted(received))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(received - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - received))}}}.")


def check_rows_agree(signature, inputs: dict) -> None:
    """Checks that the inputs with a batch axis (axis 0 of unknown size) have the same number of rows.

    TensorFlow would fail deep inside the model (a ConcatOp or a scan) with a
    message that does not say which inputs disagree.

    Raises:
        ServingError: INVALID_ARGUMENT naming each input's rows.
    """
    rows = {}
    for alias, array in inputs.items():
        dims = tensors.tensor_info_dims(signature.inputs[alias])
        if dims and dims[0] < 0 and array.ndim:
            rows[alias] = array.shape[0]
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"{alias} has {count}" for alias, count in sorted(rows.items()))
        raise invalid_argument(f"The inputs disagree on the number of rows ({listed}); send one row per "
                               "sequence in every input")


def serialized_examples(request_input) -> np.ndarray:
    """Turns a `tensorflow.serving.Input` into the string tensor a classify signature takes.

    With `example_list_with_context`, each example is the context's bytes
    followed by the example's: concatenated serialized protos merge, which is
    how TF Serving adds the context features to every example.

    Raises:
        ServingError: INVALID_ARGUMENT for an empty input.
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [example.SerializeToString() for example in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        context = request_input.example_list_with_context.context.SerializeToString()
        serialized = [context + example.SerializeToString()
                      for example in request_input.example_list_with_context.examples]
    else:
        serialized = []
    if not serialized:
        raise invalid_argument("Input is empty.")
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return array


def _fill_model_spec(model_spec, servable: Servable, signature_name: str) -> None:
    model_spec.name = servable.name
    model_spec.version.value = servable.version
    model_spec.signature_name = signature_name


# === gRPC ===


def handle_rpc(api: str, model_name: str, context: grpc.ServicerContext, empty_response,
               function: Callable[[], object], metrics: ServingMetrics | None,
               manager: ModelManager | None):
    """Runs one RPC: any failure becomes this request's gRPC status; all are counted.

    Args:
        api: The method name, for logs and metrics.
        model_name: The requested model (labelled only when it is configured).
        context: The gRPC context.
        empty_response: Returned with a non-OK status (gRPC drops it).
        function: Computes the response.
        metrics: Where to count the request, or None.
        manager: Tells known model names from others, for the metric label.
    """
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    try:
        return function()
    except Exception as error:  # every failure is the request's, never the server's
        serving_error = errors.request_failure(error, f"{api} for model {model_name!r}")
        code = serving_error.code
        context.set_code(code)
        context.set_details(serving_error.message[:_MAX_DETAILS_CHARS])
        return empty_response
    finally:
        if metrics is not None:
            known = bool(model_name) and manager is not None and manager.is_known_model(model_name)
            metrics.observe_request(model_name, known, api, code.name, time.perf_counter() - started)


def remaining_seconds(context: grpc.ServicerContext) -> float | None:
    """The client's deadline as seconds from now, None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e8 else max(remaining, 0.0)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """gRPC `tensorflow.serving.PredictionService` on top of `InferenceService`."""

    def __init__(self, inference: InferenceService, metrics: ServingMetrics | None = None):
        self._inference = inference
        self._metrics = metrics

    def _handle(self, api, request, context, empty_response, function):
        return handle_rpc(api, request.model_spec.name, context, empty_response, function,
                          self._metrics, self._inference.manager)

    def Predict(self, request, context):
        return self._handle("Predict", request, context, predict_pb2.PredictResponse(),
                            lambda: self._inference.predict(request, remaining_seconds(context), context))

    def Classify(self, request, context):
        return self._handle("Classify", request, context, classification_pb2.ClassificationResponse(),
                            lambda: self._inference.classify(request, remaining_seconds(context), context))

    def GetModelMetadata(self, request, context):
        return self._handle("GetModelMetadata", request, context,
                            get_model_metadata_pb2.GetModelMetadataResponse(),
                            lambda: self._inference.get_model_metadata(request))

    def Regress(self, request, context):
        def refuse():
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               "Regress is not implemented by this server: the zoo exports no "
                               "tensorflow/serving/regress signatures; use Predict")
        return self._handle("Regress", request, context, regression_pb2.RegressionResponse(), refuse)

    def MultiInference(self, request, context):
        def refuse():
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               "MultiInference is not implemented by this server; send one Classify "
                               "or Predict request per signature")
        spec_holder = request.tasks[0] if request.tasks else inference_pb2.InferenceTask()
        return handle_rpc("MultiInference", spec_holder.model_spec.name, context,
                          inference_pb2.MultiInferenceResponse(), refuse, self._metrics, self._inference.manager)
