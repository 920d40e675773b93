"""A thin client for the model server (or TensorFlow Serving itself), through the official stubs.

    from serving.client import ServingClient

    with ServingClient("localhost:8500", timeout_seconds=5) as client:
        result = client.predict("lm", {"token_ids": np.array([[2, 4]], np.int64)})
        result.outputs["logits"].shape, result.version
        client.classify_sentences("sst2", ["a good movie"])[0].label
        client.score("lm", ["the cat sat"])[0].perplexity

The command line is `rnn-zoo-client` (`serving.client.cli`).

Every call has a deadline; a failed call raises `ServingClientError` with the
gRPC code and the server's message.
"""

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence

import grpc
import numpy as np
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving.client import DEFAULT_TARGET, DEFAULT_TIMEOUT_SECONDS
from serving.client.connection import ConnectionSecurity, open_channel
from serving.protocol import tensors
from serving.protocol.errors import ServingError


class ServingClientError(Exception):
    """A call to the server failed.

    Attributes:
        code: The gRPC status code (NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE, ...).
        message: The server's message (or gRPC's, when the server was not reached).
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclasses.dataclass
class PredictResult:
    """Outputs of a Predict call, with the version that answered."""

    outputs: dict[str, np.ndarray]
    model_name: str
    version: int
    signature_name: str


@dataclasses.dataclass
class SentenceClassification:
    """A sentence's label and class probabilities.

    Attributes:
        label: The most probable class.
        probabilities: By class name ("negative", "positive", ...), in the
            model's class order, whichever API answered.
    """

    label: str
    probabilities: dict[str, float]


@dataclasses.dataclass
class TextScore:
    """A language model's score of a text: log p(tokens 2..n | token 1) and perplexity."""

    log_prob: float
    num_tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(-self.log_prob / self.num_tokens) if self.num_tokens else math.nan


@dataclasses.dataclass
class VersionState:
    """One row of GetModelStatus."""

    version: int
    state: str
    error_code: str
    error_message: str


def make_model_spec(model_name: str, signature_name: str = "", version: int | None = None,
                    version_label: str | None = None) -> model_pb2.ModelSpec:
    """A ModelSpec naming the latest version, a version number, or a label."""
    if version is not None and version_label is not None:
        raise ValueError("give a version or a version label, not both")
    model_spec = model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    if version is not None:
        model_spec.version.value = version
    elif version_label is not None:
        model_spec.version_label = version_label
    return model_spec


class ServingClient:
    """Calls PredictionService and ModelService through the official stubs.

    Args:
        target: `host:port` of the gRPC server.
        timeout_seconds: Deadline of every call.
        max_message_bytes: Largest message sent or received.
        security: TLS files and bearer token (`serving.client.connection`);
            None connects in plain text without a token.
    """

    def __init__(self, target: str = DEFAULT_TARGET, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                 max_message_bytes: int = 256 * 1024 * 1024, security: ConnectionSecurity | None = None):
        self.target = target
        self.timeout_seconds = timeout_seconds
        self._metadata = security.metadata() if security is not None else ()
        self._channel = open_channel(target, security, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)])
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._class_names: dict[tuple[str, int], list[str]] = {}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ServingClient":
        return self

    def __exit__(self, *exception_info) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_seconds, metadata=self._metadata)
        except grpc.RpcError as error:
            raise ServingClientError(error.code(), error.details() or "") from None

    # === PredictionService ===

    def predict(self, model_name: str, inputs: Mapping[str, object], signature_name: str = "serving_default",
                version: int | None = None, version_label: str | None = None,
                output_filter: Sequence[str] = ()) -> PredictResult:
        """Runs a signature.

        Args:
            model_name: The model.
            inputs: {input name: array}. Pass numpy arrays of the signature's
                dtypes (np.int64 token ids, np.float32 state); text may be str.
            signature_name: Which signature.
            version: A version number (default: the latest).
            version_label: A version label instead of a number.
            output_filter: Only these outputs (default: all).

        Raises:
            ServingClientError: The server refused or failed the request.
        """
        request = predict_pb2.PredictRequest(
            model_spec=make_model_spec(model_name, signature_name, version, version_label),
            output_filter=list(output_filter))
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(tensors.numpy_to_tensor_proto(value, use_tensor_content=True))
        response = self._call(self._prediction.Predict, request)
        return PredictResult(tensors.outputs_to_numpy(response.outputs), response.model_spec.name,
                             response.model_spec.version.value, response.model_spec.signature_name)

    def predict_json(self, model_name: str, inputs: Mapping[str, object], signature_name: str = "serving_default",
                     version: int | None = None, version_label: str | None = None,
                     output_filter: Sequence[str] = ()) -> PredictResult:
        """Like `predict`, for JSON-like inputs: each is cast to the signature's dtype.

        Raises:
            ServingClientError: The server refused the request, or an input is
                not in the signature (INVALID_ARGUMENT, raised before sending).
        """
        signature = self.get_model_metadata(model_name, version, version_label).get(signature_name)
        if signature is None:
            raise ServingClientError(grpc.StatusCode.FAILED_PRECONDITION,
                                     f"Serving signature key \"{signature_name}\" not found.")
        arrays = {}
        for alias, value in inputs.items():
            if alias not in signature.inputs:
                raise ServingClientError(grpc.StatusCode.INVALID_ARGUMENT,
                                         f"{alias!r} is not an input of {signature_name}; its inputs are "
                                         f"{sorted(signature.inputs)}")
            try:
                arrays[alias] = tensors.json_to_numpy(value, signature.inputs[alias].dtype, alias)
            except ServingError as error:
                raise ServingClientError(error.code, error.message) from None
        return self.predict(model_name, arrays, signature_name, version, version_label, output_filter)

    def classify(self, model_name: str, examples: Sequence[Mapping[str, object]], signature_name: str = "classify",
                 context: Mapping[str, object] | None = None, version: int | None = None,
                 version_label: str | None = None) -> list[list[tuple[str, float]]]:
        """Calls the Classify API with tf.Examples built from feature dicts.

        Args:
            examples: One {feature: value or list} per example.
            signature_name: A signature with method `tensorflow/serving/classify`.
            context: Features shared by every example.

        Returns:
            Per example, (label, score) pairs in the model's class order.
        """
        request = classification_pb2.ClassificationRequest(
            model_spec=make_model_spec(model_name, signature_name, version, version_label))
        if context is not None:
            request.input.example_list_with_context.context.CopyFrom(tensors.make_example(dict(context)))
            request.input.example_list_with_context.examples.extend(tensors.make_example(dict(e)) for e in examples)
        else:
            request.input.example_list.examples.extend(tensors.make_example(dict(e)) for e in examples)
        response = self._call(self._prediction.Classify, request)
        return [[(entry.label, entry.score) for entry in classifications.classes]
                for classifications in response.result.classifications]

    def get_model_metadata(self, model_name: str, version: int | None = None,
                           version_label: str | None = None) -> dict:
        """Returns {signature name: SignatureDef} of the version (latest by default)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=make_model_spec(model_name, "", version, version_label), metadata_field=["signature_def"])
        response = self._call(self._prediction.GetModelMetadata, request)
        signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_def_map)
        return dict(signature_def_map.signature_def)

    # === ModelService ===

    def get_model_status(self, model_name: str, version: int | None = None,
                         version_label: str | None = None) -> list[VersionState]:
        """Returns the state of every version the server knows (newest first)."""
        request = get_model_status_pb2.GetModelStatusRequest(
            model_spec=make_model_spec(model_name, "", version, version_label))
        response = self._call(self._models.GetModelStatus, request)
        state_names = get_model_status_pb2.ModelVersionStatus.State
        code_names = get_model_status_pb2.ModelVersionStatus.DESCRIPTOR.fields_by_name["status"] \
            .message_type.fields_by_name["error_code"].enum_type
        return [VersionState(row.version, state_names.Name(row.state),
                             code_names.values_by_number[row.status.error_code].name
                             if row.status.error_code in code_names.values_by_number else str(row.status.error_code),
                             row.status.error_message)
                for row in response.model_version_status]

    def reload_config(self, config) -> None:
        """Sends a ModelServerConfig (HandleReloadConfigRequest); returns once it is applied."""
        self._call(self._models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest(config=config))

    def wait_until_available(self, model_name: str, version: int | None = None, timeout_seconds: float = 60.0,
                             poll_seconds: float = 0.2) -> VersionState:
        """Polls GetModelStatus until a version (any, or the one given) is AVAILABLE.

        Raises:
            TimeoutError: Not available in time.
        """
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                for row in self.get_model_status(model_name, version):
                    if row.state == "AVAILABLE":
                        return row
            except ServingClientError as error:
                if error.code not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    raise
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{model_name} not AVAILABLE after {timeout_seconds} s")
            time.sleep(poll_seconds)

    # === Task helpers (the zoo's serving contract) ===

    def classify_sentences(self, model_name: str, sentences: Sequence[str], **spec) -> list[SentenceClassification]:
        """Classifies sentences with a classifier's `serving_default` (Predict API).

        Probabilities are keyed by class name, as the Classify API gives them:
        `serving_default` returns only the winning label, so the names of all
        classes come from one Classify call per model version (then cached).
        """
        result = self.predict(model_name, {"sentences": np.array(list(sentences), dtype=object)}, **spec)
        names = self.class_names(model_name, version=result.version)
        return [SentenceClassification(label.decode("utf-8"), dict(zip(names, map(float, row), strict=True)))
                for label, row in zip(result.outputs["label"], result.outputs["probabilities"])]

    def class_names(self, model_name: str, version: int | None = None, signature_name: str = "classify",
                    version_label: str | None = None) -> list[str]:
        """A classifier's class names in id order, from its Classify signature (cached per version)."""
        if version is not None and (model_name, version) in self._class_names:
            return self._class_names[model_name, version]
        rows = self.classify(model_name, [{"text": ""}], signature_name, version=version,
                             version_label=version_label)
        names = [label for label, _ in rows[0]]
        if version is not None:
            self._class_names[model_name, version] = names
        return names

    def classify_sentences_with_examples(self, model_name: str, sentences: Sequence[str],
                                         signature_name: str = "classify", **spec) -> list[SentenceClassification]:
        """Classifies sentences through the Classify API (tf.Examples with a `text` feature)."""
        rows = self.classify(model_name, [{"text": sentence} for sentence in sentences], signature_name, **spec)
        return [SentenceClassification(max(row, key=lambda pair: pair[1])[0], dict(row)) for row in rows]

    def tag(self, model_name: str, sentences: Sequence[str], **spec) -> list[list[tuple[str, str]]]:
        """Tags whitespace-separated sentences; returns (token, tag) pairs per sentence."""
        outputs = self.predict(model_name, {"sentences": np.array(list(sentences), dtype=object)},
                               output_filter=("tokens", "tags", "lengths"), **spec).outputs
        return [[(token.decode("utf-8"), tag.decode("utf-8")) for token, tag in zip(tokens[:length], tags[:length])]
                for tokens, tags, length in zip(outputs["tokens"], outputs["tags"], outputs["lengths"])]

    def score(self, model_name: str, texts: Sequence[str], **spec) -> list[TextScore]:
        """Scores texts with a language model's `score` signature."""
        outputs = self.predict(model_name, {"text": np.array(list(texts), dtype=object)},
                               signature_name="score", **spec).outputs
        return [TextScore(float(log_prob), int(count))
                for log_prob, count in zip(outputs["log_prob"], outputs["num_tokens"])]
