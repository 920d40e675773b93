"""tensorflow.serving.PredictionService: Predict, Classify, Regress, MultiInference, GetModelMetadata.

`InferenceService` holds the request logic, in TF Serving's order of checks
and with its messages; the gRPC servicer and the REST API both call it, so the
two protocols cannot drift apart. `handle_rpc` turns any failure into a gRPC
status on the one request that caused it, and counts every request.
"""

import time
from collections.abc import Callable

import grpc
import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, inference_pb2, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from serving.protocol import errors, tensors
from serving.protocol.errors import ServingError, invalid_argument
from serving.server.access import message_too_large
from serving.server.batching import CLIENT_GONE_MESSAGE, BatchScheduler
from serving.server.metrics import ServingMetrics
from serving.server.model_manager import ModelManager
from serving.server.pieces import PIECE_ROWS, estimated_output_bytes, request_rows, run_in_pieces
from serving.server.servable import DEFAULT_SIGNATURE_NAME, Servable

CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
REGRESS_METHOD_NAME = "tensorflow/serving/regress"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"
_PREDICT_METHOD_NAMES = (PREDICT_METHOD_NAME, CLASSIFY_METHOD_NAME, REGRESS_METHOD_NAME)
DEFAULT_MAX_BATCH_SIZE = 1024
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
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
        tensor_content_responses: Write the numeric tensors of Predict
            responses as `tensor_content` bytes instead of typed `*_val`
            fields (`--enable_serialization_as_tensor_content`; off by
            default, as in TF Serving, whose clients may read `float_val`).
        method_name_check: Refuse signatures whose method_name does not fit
            the API (`--enable_signature_method_name_check`; off by default,
            as in TF Serving, so native TF2 classify/regress signatures,
            saved with the predict method name, serve Classify and Regress).
        max_response_bytes: The largest response (`--max_message_bytes`):
            a request whose outputs cannot fit is refused before it runs,
            or stopped once they pass it (see `serving.server.pieces`).
        piece_rows: Requests of more rows (or more than the batcher's
            largest batch, if that is larger) run in pieces that check, in
            between, the deadline, the client and the response size
            (`--max_rows_per_run`); 0 runs every request in one call.
    """

    def __init__(self, manager: ModelManager, batcher: BatchScheduler | None = None,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, tensor_content_responses: bool = False,
                 method_name_check: bool = False, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 piece_rows: int = PIECE_ROWS):
        self.manager = manager
        self.batcher = batcher
        self.max_batch_size = max_batch_size
        self.max_response_bytes = max_response_bytes
        self.piece_rows = piece_rows and max(piece_rows, batcher.parameters.max_batch_size if batcher else 0)
        self.tensor_content_responses = tensor_content_responses
        self.method_name_check = method_name_check

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
        # Views of the request's bytes, not copies: TensorFlow copies its inputs anyway.
        inputs = {alias: tensors.tensor_proto_to_numpy(proto, alias, copy=False)
                  for alias, proto in request.inputs.items()}
        outputs = self.predict_arrays(servable, signature_name, inputs, list(request.output_filter), timeout_seconds,
                                      client)
        response = predict_pb2.PredictResponse()
        _fill_model_spec(response.model_spec, servable, signature_name)
        for alias, array in outputs.items():  # filled in place: no intermediate proto to copy
            tensors.fill_tensor_proto(response.outputs[alias], array, self.tensor_content_responses)
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
        if self.method_name_check and signature.method_name not in _PREDICT_METHOD_NAMES:
            # predict_util.cc (VerifySignature), applied only with the flag, as there.
            raise errors.internal(
                f"Expected prediction signature method_name to be one of {{{', '.join(_PREDICT_METHOD_NAMES)}}}. "
                f"Was: {signature.method_name}")
        check_input_names(signature, inputs)
        # Names and dtypes are checked here, as TF Serving checks them; shapes
        # are left to the signature's graph (see _run_letting_the_graph_decide).
        shape_hints = []
        for alias, array in inputs.items():
            tensors.check_input(alias, array, _any_shape(signature.inputs[alias]))
            hint = _shape_hint(alias, array, signature.inputs[alias])
            if hint is not None:
                shape_hints.append(hint)
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
        output_aliases = output_aliases or sorted(signature.outputs)
        estimate = 0 if shape_hints else estimated_output_bytes(signature, servable.batching_plan(signature_name),
                                                                inputs, output_aliases)
        if estimate > self.max_response_bytes:  # refused before anything runs
            raise message_too_large("response", estimate, self.max_response_bytes, at_least=True)
        if shape_hints:
            outputs = self._run_letting_the_graph_decide(servable, signature_name, inputs, shape_hints,
                                                         timeout_seconds, client)
        else:
            outputs = self._run(servable, signature_name, inputs, timeout_seconds, client,
                                output_aliases=output_aliases)
        return {alias: outputs[alias] for alias in output_aliases}

    def _run_letting_the_graph_decide(self, servable: Servable, signature_name: str, inputs: dict,
                                      shape_hints: list[str], timeout_seconds: float | None, client) -> dict:
        """Runs a request whose shapes differ from the signature's, alone (never merged into a batch).

        TF Serving feeds such tensors to the graph as they are, and the graph
        either computes with them (`[1]` for an `[?,1]` input of
        half_plus_two) or fails; a failure here is INVALID_ARGUMENT with the
        graph's own message, followed by what the signature declares, so the
        caller knows what to send.
        """
        try:
            return self._run(servable, signature_name, inputs, timeout_seconds, client, alone=True)
        except Exception as error:
            serving_error = errors.from_exception(error)
            if serving_error.code not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL,
                                          grpc.StatusCode.UNKNOWN, grpc.StatusCode.FAILED_PRECONDITION):
                raise serving_error from None
            raise invalid_argument(f"{serving_error.message.rstrip('.')}. {' '.join(shape_hints)}") from None

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
        return self._run_on_examples(request, self._classification_signature, classification_result,
                                     classification_pb2.ClassificationResponse(), timeout_seconds, client)

    # --- Regress ---

    def regress(self, request: regression_pb2.RegressionRequest, timeout_seconds: float | None = None,
                client=None) -> regression_pb2.RegressionResponse:
        """Runs a `tensorflow/serving/regress` signature on serialized tf.Examples.

        Raises:
            ServingError: with TF Serving's code and message for each failure.
        """
        return self._run_on_examples(request, self._regression_signature, regression_result,
                                     regression_pb2.RegressionResponse(), timeout_seconds, client)

    def _run_on_examples(self, request, check_signature, result_of, response, timeout_seconds, client):
        """Classify's and Regress's common path: resolve, check the signature, run it on the
        request's tf.Examples, and fill `response` with `result_of(outputs, number of examples)`."""
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        servable = self.manager.resolve(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE_NAME
        check_signature(servable, signature_name)
        examples = self._examples(request.input)
        outputs = self._run(servable, signature_name, {"inputs": examples}, timeout_seconds, client)
        _fill_model_spec(response.model_spec, servable, signature_name)
        response.result.CopyFrom(result_of(outputs, len(examples)))
        return response

    # --- MultiInference ---

    def multi_inference(self, request: inference_pb2.MultiInferenceRequest, timeout_seconds: float | None = None,
                        client=None) -> inference_pb2.MultiInferenceResponse:
        """Runs several classify and regress signatures of one model version on the same examples.

        Checks and messages follow multi_inference.cc. One difference: TF
        Serving also requires every signature to read the same input tensor
        (true of TF1 exports, never of TF2 ones, whose signatures each have
        their own); here each signature is run on the examples, so
        MultiInference works with TF2 models too.

        Raises:
            ServingError: INVALID_ARGUMENT for an empty, mixed-model or
                duplicate task list, UNIMPLEMENTED for another method name.
        """
        if not request.tasks:
            raise invalid_argument("MultiInferenceRequest holds no tasks; add one InferenceTask per "
                                   "classify or regress signature")
        model_name = ""
        signature_names = []
        for task in request.tasks:
            if not task.model_spec.name:
                raise invalid_argument("Found ModelSpec with an empty model name.")
            if model_name and task.model_spec.name != model_name:
                raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            model_name = task.model_spec.name
            signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE_NAME
            if signature_name in signature_names:
                raise invalid_argument(f"Duplicate evaluation of signature: {signature_name}")
            signature_names.append(signature_name)
        # Every task runs on the same version: the one the first task's spec picks.
        servable = self.manager.resolve(request.tasks[0].model_spec)
        for task, signature_name in zip(request.tasks, signature_names):
            if signature_name not in servable.signature_defs:
                raise invalid_argument(f"Requested signature not found in model graph: {signature_name}")
            if task.method_name == CLASSIFY_METHOD_NAME:
                self._classification_signature(servable, signature_name)
            elif task.method_name == REGRESS_METHOD_NAME:
                self._regression_signature(servable, signature_name)
            else:
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"Unsupported signature method_name: {task.method_name} (set each task's "
                                   f"method_name to {CLASSIFY_METHOD_NAME} or {REGRESS_METHOD_NAME})")
        examples = self._examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task, signature_name in zip(request.tasks, signature_names):
            outputs = self._run(servable, signature_name, {"inputs": examples}, timeout_seconds, client)
            result = response.results.add()
            _fill_model_spec(result.model_spec, servable, signature_name)
            if task.method_name == CLASSIFY_METHOD_NAME:
                result.classification_result.CopyFrom(classification_result(outputs, len(examples)))
            else:
                result.regression_result.CopyFrom(regression_result(outputs, len(examples)))
        return response

    # --- signatures of serialized tf.Examples (Classify, Regress, MultiInference) ---

    def _example_signature(self, servable: Servable, signature_name: str, kind: str,
                           method_name: str) -> meta_graph_pb2.SignatureDef:
        signature = servable.signature_defs.get(signature_name)
        if signature is None or signature_name.startswith("__"):
            raise invalid_argument(f"No signature was found with the name: {signature_name}")
        if self.method_name_check and signature.method_name != method_name:
            # classifier.cc / regressor.cc: only with --enable_signature_method_name_check.
            raise invalid_argument(
                f"Expected {kind} signature method_name to be {method_name}. Was: {signature.method_name}")
        if len(signature.inputs) != 1:
            raise invalid_argument(f"Expected one input Tensor. ({signature_name} takes "
                                   f"{{{','.join(sorted(signature.inputs))}}}; a {kind} signature takes one, "
                                   "\"inputs\", of serialized tf.Examples; call this one with Predict)")
        return signature

    def _classification_signature(self, servable: Servable, signature_name: str) -> meta_graph_pb2.SignatureDef:
        """Checks a signature as classifier.cc (PreProcessClassification) does."""
        signature = self._example_signature(servable, signature_name, "classification", CLASSIFY_METHOD_NAME)
        if len(signature.outputs) not in (1, 2):
            raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)} "
                                   f"({signature_name} is not a classify signature, whose outputs are \"classes\" "
                                   "and/or \"scores\"; call it with Predict)")
        if "inputs" not in signature.inputs:
            raise errors.failed_precondition(_no_examples_input("classification", signature_name, signature))
        if "classes" not in signature.outputs and "scores" not in signature.outputs:
            raise errors.failed_precondition(
                "Expected classification signature outputs to contain at least one of \"classes\" or \"scores\".")
        return signature

    def _regression_signature(self, servable: Servable, signature_name: str) -> meta_graph_pb2.SignatureDef:
        """Checks a signature as regressor.cc (PreProcessRegression) does."""
        signature = self._example_signature(servable, signature_name, "regression", REGRESS_METHOD_NAME)
        if len(signature.outputs) != 1:
            raise invalid_argument(f"Expected one output Tensor. ({signature_name} has {len(signature.outputs)}; a "
                                   "regress signature's one output is \"outputs\"; call it with Predict)")
        if "inputs" not in signature.inputs:
            raise errors.failed_precondition(_no_examples_input("regression", signature_name, signature))
        if "outputs" not in signature.outputs:
            raise errors.failed_precondition(
                f"No regression outputs found in SignatureDef: {signature_name} has outputs "
                f"{{{','.join(sorted(signature.outputs))}}}; Regress reads the one named \"outputs\"")
        return signature

    def _examples(self, request_input) -> np.ndarray:
        """The request's serialized tf.Examples, within `--max_batch_size`."""
        examples = serialized_examples(request_input)
        if len(examples) > self.max_batch_size:
            raise invalid_argument(
                f"The request holds {len(examples)} examples; this server takes at most {self.max_batch_size} "
                "per request (--max_batch_size). Split the request.")
        return examples

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
             client=None, alone: bool = False, output_aliases: list[str] | None = None) -> dict:
        """Runs the signature, unless the caller is already gone.

        Args:
            client: The gRPC context (`is_active()`, `add_callback()`), or None:
                a request whose deadline has passed or whose client has left
                is not started, and leaves the batch queue when that happens.
            alone: Never merge this request with others (its shapes are not
                the signature's, so rows cannot be told apart in a batch),
                nor cut it into pieces.
            output_aliases: The outputs the response will hold (all if None),
                for the response-size check of a request run in pieces.
        """
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               "The request's deadline had passed before it could start; nothing was run")
        if client is not None and not client.is_active():
            raise ServingError(grpc.StatusCode.CANCELLED, CLIENT_GONE_MESSAGE)
        plan = servable.batching_plan(signature_name)
        rows = request_rows(inputs) if plan.batchable and not alone else None
        if rows is not None and self.piece_rows and rows > self.piece_rows:
            deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds

            def still_wanted(done: int, total: int) -> None:
                if client is not None and not client.is_active():
                    raise ServingError(grpc.StatusCode.CANCELLED,
                                       f"The client cancelled the request or went away after {done} of its {total} "
                                       "rows had run; the rest was not run")
                if deadline is not None and time.monotonic() >= deadline:
                    raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                       f"Deadline exceeded after {done} of the request's {total} rows had run; the "
                                       "rest was not run. Send fewer rows per request or allow more time")

            return run_in_pieces(lambda piece: servable.run(signature_name, piece), inputs, rows, plan,
                                 self.piece_rows, still_wanted, self.max_response_bytes, output_aliases)
        if self.batcher is None or alone:
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


def _no_examples_input(kind: str, signature_name: str, signature: meta_graph_pb2.SignatureDef) -> str:
    """classifier.cc / regressor.cc's message (there followed by the SignatureDef), saying what to fix."""
    return (f"No {kind} inputs found in SignatureDef: {signature_name} takes "
            f"{{{','.join(sorted(signature.inputs))}}}; the serialized tf.Examples go to an input named \"inputs\"")


def _any_shape(tensor_info: meta_graph_pb2.TensorInfo) -> meta_graph_pb2.TensorInfo:
    """The TensorInfo with its shape unknown: `tensors.check_input` then checks the dtype (and values) only."""
    loose = meta_graph_pb2.TensorInfo(dtype=tensor_info.dtype)
    loose.tensor_shape.unknown_rank = True
    return loose


def _shape_hint(alias: str, array: np.ndarray, tensor_info: meta_graph_pb2.TensorInfo) -> str | None:
    """`Input "x": expected shape [?,1], got [1].` when the array does not have the signature's shape, else None."""
    dims = tensors.tensor_info_dims(tensor_info)
    if dims is None:
        return None
    if len(dims) == array.ndim and all(expected < 0 or expected == received
                                       for expected, received in zip(dims, array.shape)):
        return None
    return f"Input \"{alias}\": expected shape {tensors.shape_string(dims)}, got {tensors.shape_string(array.shape)}."


def classification_result(outputs: dict, num_examples: int) -> classification_pb2.ClassificationResult:
    """Turns a classify signature's `classes`/`scores` into a ClassificationResult.

    Checks and messages as classifier.cc's PostProcessClassificationResult.

    Raises:
        ServingError: INVALID_ARGUMENT for outputs of the wrong rank, dtype or rows.
    """
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for name, output, dtype_kind in (("classes", classes, "O"), ("scores", scores, "f")):
        if output is None:
            continue
        if output.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {tensors.shape_string(output.shape)}")
        if output.dtype.kind != dtype_kind or (dtype_kind == "f" and output.dtype != np.float32):
            expected = "DT_STRING" if dtype_kind == "O" else "DT_FLOAT"
            raise invalid_argument(f"Expected {name} Tensor of {expected}. Got: {output.dtype}")
        if output.shape[0] != num_examples:
            raise invalid_argument(f"Expected {name} output batch size of {num_examples}. Got: {output.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}")
    result = classification_pb2.ClassificationResult()
    num_classes = (classes if classes is not None else scores).shape[1]
    for row in range(num_examples):
        classifications = result.classifications.add()
        for column in range(num_classes):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = classes[row, column].decode("utf-8", errors="replace")
            if scores is not None:
                entry.score = float(scores[row, column])
    return result


def regression_result(outputs: dict, num_examples: int) -> regression_pb2.RegressionResult:
    """Turns a regress signature's `outputs` ([batch] or [batch, 1] floats) into a RegressionResult.

    Checks and messages as regressor.cc's PostProcessRegressionResult.

    Raises:
        ServingError: INVALID_ARGUMENT for an output of the wrong shape, rows or dtype.
    """
    output = outputs["outputs"]
    if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise invalid_argument("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                               f"{tensors.shape_string(output.shape)}")
    if output.shape[0] != num_examples:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {num_examples} vs. {output.shape[0]}")
    if output.dtype != np.float32:
        raise invalid_argument("Expected output Tensor of DT_FLOAT.  Got: "
                               f"{tensors.data_type_name(tensors.data_type_of(output))}")
    result = regression_pb2.RegressionResult()
    for value in output.reshape(-1):
        result.regressions.add(value=float(value))
    return result


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
        return self._handle("Regress", request, context, regression_pb2.RegressionResponse(),
                            lambda: self._inference.regress(request, remaining_seconds(context), context))

    def MultiInference(self, request, context):
        spec_holder = request.tasks[0] if request.tasks else inference_pb2.InferenceTask()
        return handle_rpc("MultiInference", spec_holder.model_spec.name, context,
                          inference_pb2.MultiInferenceResponse(),
                          lambda: self._inference.multi_inference(request, remaining_seconds(context), context),
                          self._metrics, self._inference.manager)
