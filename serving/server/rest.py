"""TensorFlow Serving's REST API on `--rest_api_port`, over the same InferenceService.

    GET  /v1/models/<model>[/versions/<v>|/labels/<l>]             status
    GET  /v1/models/<model>[/versions/<v>|/labels/<l>]/metadata    signatures
    POST /v1/models/<model>[/versions/<v>|/labels/<l>]:predict     {"instances": [...]} or {"inputs": ...}
    POST /v1/models/<model>[/versions/<v>|/labels/<l>]:classify    {"examples": [...], "context": {...}}
    POST /v1/models/<model>[/versions/<v>|/labels/<l>]:regress     {"examples": [...], "context": {...}}
    GET  /monitoring/prometheus/metrics                            (TF Serving's metrics path)

Errors are `{"error": "<message>"}` with the HTTP code TF Serving gives for
the status (400 invalid argument, 404 not found, 503 unavailable, ...).
`RestApi.handle` is plain request-in, response-out, so it is tested without
sockets; `RestServer` puts it on cheroot, CherryPy's threaded HTTP server
(see "HTTP" below for what is added to it).
"""

import contextlib
import http
import io
import json
import logging
import math
import queue
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse

import cheroot.errors
import cheroot.makefile
import cheroot.server
import cheroot.ssl
import cheroot.workers.threadpool
import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     regression_pb2)

from serving.protocol import errors, tensors
from serving.protocol.errors import ServingError, invalid_argument
from serving.server.access import SHUTTING_DOWN_MESSAGE, RequestLimiter, ShutdownGate, TokenChecker, \
    message_too_large
from serving.server.metrics import ServingMetrics
from serving.server.model_manager import ModelManager
from serving.server.model_service import model_status_response
from serving.server.prediction_service import SIGNATURE_DEF_FIELD, InferenceService, check_input_names
from serving.server.servable import DEFAULT_SIGNATURE_NAME

logger = logging.getLogger(__name__)

_VERSION_PART = r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
_POST_PATTERN = re.compile(r"/v1/models/(?P<name>[^/:]+)" + _VERSION_PART + r":(?P<method>classify|regress|predict)",
                           re.IGNORECASE)
_GET_PATTERN = re.compile(r"/v1/models(?:/(?P<name>[^/:]+))?" + _VERSION_PART + r"(?:/(?P<subresource>metadata))?",
                          re.IGNORECASE)
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


class RestApi:
    """Answers REST requests as TF Serving's HTTP handler does.

    Args:
        inference: Runs predict and classify.
        manager: Model status and lookups.
        metrics: Counts requests and serves the Prometheus page, or None.
        timeout_seconds: Deadline given to each request (`--rest_api_timeout_in_ms`).
        prometheus_path: Where GET serves the metrics page (TF Serving's path by
            default, or `--monitoring_config_file`'s); None serves none.
    """

    def __init__(self, inference: InferenceService, manager: ModelManager,
                 metrics: ServingMetrics | None = None, timeout_seconds: float | None = 30.0,
                 tokens: TokenChecker | None = None, prometheus_path: str | None = PROMETHEUS_PATH):
        self._prometheus_path = prometheus_path
        self._inference = inference
        self._manager = manager
        self._metrics = metrics
        self._timeout_seconds = timeout_seconds
        self._tokens = tokens

    def authorize(self, method: str, path: str, authorization: str | None) -> None:
        """Checks the caller's bearer token (before its body is read).

        With `--health_checks_without_token`, a model's status
        (`GET /v1/models/<model>`, REST's health check) needs none.

        Raises:
            ServingError: UNAUTHENTICATED (401) or PERMISSION_DENIED (403).
        """
        if self._tokens is None:
            return
        if self._tokens.health_checks_without_token and method == "GET":
            match = _GET_PATTERN.fullmatch(urllib.parse.urlsplit(path).path)
            if match is not None and match.group("name") and not match.group("subresource"):
                return
        self._tokens.check(authorization)

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        """Answers one request.

        Returns:
            (HTTP status, content type, body).
        """
        path = urllib.parse.urlsplit(path).path
        if method == "GET" and path == self._prometheus_path and self._metrics is not None:
            return int(http.HTTPStatus.OK), "text/plain; version=0.0.4", self._metrics.exposition()
        started = time.perf_counter()
        api, model_name, code = f"REST {method}", "", grpc.StatusCode.OK
        try:
            match = None
            if method == "POST":
                match = _POST_PATTERN.fullmatch(path)
            elif method == "GET":
                match = _GET_PATTERN.fullmatch(path)
            if match is None:
                raise invalid_argument(f"Malformed request: {method} {path}")
            model_name = urllib.parse.unquote(match.group("name") or "")
            model_spec = self._model_spec(match)
            if method == "POST":
                api = "REST " + match.group("method").lower()
                payload = self._post(match.group("method").lower(), model_spec, body)
            else:
                api = "REST metadata" if match.group("subresource") else "REST status"
                payload = self._get(model_spec, bool(match.group("subresource")))
            status = int(http.HTTPStatus.OK)
        except Exception as error:  # any failure is this request's JSON error
            serving_error = errors.request_failure(error, f"{method} {path}")
            code = serving_error.code
            payload, status = {"error": serving_error.message}, serving_error.http_status
        finally:
            if self._metrics is not None:
                known = bool(model_name) and self._manager.is_known_model(model_name)
                self._metrics.observe_request(model_name, known, api, code.name, time.perf_counter() - started)
        return status, "application/json", (json.dumps(payload, indent=None) + "\n").encode("utf-8")

    @staticmethod
    def _model_spec(match: re.Match) -> model_pb2.ModelSpec:
        model_spec = model_pb2.ModelSpec(name=urllib.parse.unquote(match.group("name") or ""))
        if match.group("version"):
            model_spec.version.value = int(match.group("version"))
        elif match.group("label"):
            model_spec.version_label = urllib.parse.unquote(match.group("label"))
        return model_spec

    # --- GET ---

    def _get(self, model_spec: model_pb2.ModelSpec, metadata: bool) -> dict:
        if not model_spec.name:
            raise invalid_argument("Missing model name in request.")
        if not metadata:
            response = model_status_response(
                self._manager, get_model_status_pb2.GetModelStatusRequest(model_spec=model_spec))
            return _json_dict(response)
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=model_spec,
                                                                 metadata_field=[SIGNATURE_DEF_FIELD])
        response = self._inference.get_model_metadata(request)
        signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_def_map)
        return {"model_spec": _json_dict(response.model_spec),
                "metadata": {SIGNATURE_DEF_FIELD: _json_dict(signature_def_map)}}

    # --- POST ---

    def _post(self, method: str, model_spec: model_pb2.ModelSpec, body: bytes) -> dict:
        document = parse_json_body(body)
        # Worded as TF Serving's json_tensor.cc (ParseJson, FormatSignatureError).
        if not isinstance(document, dict):
            raise invalid_argument(f"JSON Value: {tensors.json_preview(document)} Is not object (the body must be "
                                   "a JSON object such as {\"instances\": [...]})")
        signature_name = document.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid_argument(f"JSON Value: {tensors.json_preview(signature_name)} not formatted correctly. "
                                   "'signature_name' key must be a string value.")
        model_spec.signature_name = signature_name
        if method == "predict":
            return self._predict(model_spec, document)
        if method == "classify":
            return self._classify(model_spec, document)
        return self._regress(model_spec, document)

    def _predict(self, model_spec: model_pb2.ModelSpec, document: dict) -> dict:
        if ("instances" in document) == ("inputs" in document):
            raise invalid_argument("Missing 'inputs' or 'instances' key" if "instances" not in document
                                   else "Not allowed to have both 'instances' and 'inputs' keys")
        servable = self._manager.resolve(model_spec)
        signature_name = model_spec.signature_name or DEFAULT_SIGNATURE_NAME
        signature = servable.signature(signature_name)
        input_names = sorted(signature.inputs)
        row_format = "instances" in document
        columns = (_columns_from_instances(document["instances"], input_names) if row_format
                   else _columns_from_inputs(document["inputs"], input_names))
        check_input_names(signature, columns)
        inputs = {alias: tensors.json_to_numpy(value, signature.inputs[alias].dtype, alias)
                  for alias, value in columns.items()}
        outputs = self._inference.predict_arrays(servable, signature_name, inputs, [], self._timeout_seconds)
        encoded = {alias: tensors.numpy_to_json(array, binary=alias.endswith("_bytes"))
                   for alias, array in outputs.items()}
        if not row_format:
            return {"outputs": next(iter(encoded.values())) if len(encoded) == 1 else encoded}
        batch_sizes = {alias: (array.shape[0] if array.ndim else None) for alias, array in outputs.items()}
        first_alias, batch_size = next(iter(batch_sizes.items()))
        for alias, size in batch_sizes.items():
            if size is None or size != batch_size:
                raise invalid_argument(
                    f"Tensor name: {alias} has inconsistent batch size: {size} expecting: {batch_size}"
                    " (use the columnar 'inputs' format for such outputs)")
        if len(encoded) == 1:
            return {"predictions": encoded[first_alias]}
        return {"predictions": [{alias: encoded[alias][row] for alias in encoded} for row in range(batch_size)]}

    def _classify(self, model_spec: model_pb2.ModelSpec, document: dict) -> dict:
        """`:classify`: `{"results": [[[label, score], ...] per example]}`, the key TF Serving's handler writes."""
        request = classification_pb2.ClassificationRequest(model_spec=model_spec)
        _fill_examples(request.input, document)
        response = self._inference.classify(request, self._timeout_seconds)
        return {"results": [[[entry.label, entry.score] for entry in classifications.classes]
                            for classifications in response.result.classifications]}

    def _regress(self, model_spec: model_pb2.ModelSpec, document: dict) -> dict:
        """`:regress`: `{"results": [value per example]}`, as TF Serving's handler writes it."""
        request = regression_pb2.RegressionRequest(model_spec=model_spec)
        _fill_examples(request.input, document)
        response = self._inference.regress(request, self._timeout_seconds)
        return {"results": [regression.value for regression in response.result.regressions]}


def _fill_examples(request_input, document: dict) -> None:
    """Fills a tensorflow.serving.Input from REST's `"examples"` (and optional `"context"`) objects.

    Raises:
        ServingError: INVALID_ARGUMENT saying what to send.
    """
    examples = document.get("examples")
    if not isinstance(examples, list) or not examples:
        raise invalid_argument("'examples' must be a non-empty list of feature objects")
    try:
        built = [tensors.make_example(_feature_object(example)) for example in examples]
        if "context" in document:
            request_input.example_list_with_context.context.CopyFrom(
                tensors.make_example(_feature_object(document["context"])))
            request_input.example_list_with_context.examples.extend(built)
        else:
            request_input.example_list.examples.extend(built)
    except ValueError as error:
        raise invalid_argument(str(error)) from None


# === JSON bodies ===

MAX_JSON_DEPTH = 64  # far more than any tensor's rank plus the request's own objects
_MAX_JSON_INTEGER_DIGITS = 20  # uint64's largest value has 20 digits


def parse_json_body(body: bytes):
    """Reads a request body as strict JSON (RFC 8259), or says what to fix.

    Python's json module would read `1e400` as infinity, accept `NaN` and
    `Infinity`, and recurse into arrays until a RecursionError; here each is
    INVALID_ARGUMENT (HTTP 400) with a message, as is nesting deeper than
    MAX_JSON_DEPTH.

    Raises:
        ServingError: INVALID_ARGUMENT.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid_argument(f"JSON Parse error: the body is not UTF-8 ({error}); send UTF-8 JSON, "
                               "with binary strings as {\"b64\": ...}") from None
    if not text:  # json_tensor.cc (ParseJson) words these two as follows
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        document = json.loads(text, parse_float=_finite_float, parse_int=_bounded_int,
                              parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep() from None
    except json.JSONDecodeError as error:
        raise invalid_argument(f"JSON Parse error: {error.msg} at offset: {error.pos} (line {error.lineno} "
                               f"column {error.colno})") from None
    _check_json_depth(document)
    return document


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise invalid_argument(f"JSON Value: the number {text[:40]} is out of the range of a 64-bit float "
                               "(magnitude at most 1.8e308); send a smaller number")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_JSON_INTEGER_DIGITS:
        raise invalid_argument(f"JSON Value: the integer {text[:40]}... has more than {_MAX_JSON_INTEGER_DIGITS} "
                               "digits, out of the range of every integer dtype; send a smaller number")
    return int(text)


def _refuse_constant(name: str):
    raise invalid_argument(f"JSON Value: {name} is not JSON (RFC 8259 has no NaN or Infinity); send finite "
                           "numbers")


def _too_deep() -> ServingError:
    return invalid_argument(f"JSON Value: the body is nested more than {MAX_JSON_DEPTH} levels deep; a request "
                            f"needs a few levels plus the tensor's rank")


def _check_json_depth(document) -> None:
    """Raises INVALID_ARGUMENT when lists and objects nest deeper than MAX_JSON_DEPTH (no recursion)."""
    pending = [(document, 1)]
    while pending:
        node, depth = pending.pop()
        if not isinstance(node, (list, dict)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        children = node.values() if isinstance(node, dict) else node
        pending.extend((child, depth + 1) for child in children if isinstance(child, (list, dict)))


def _json_dict(message) -> dict:
    """A proto as TF Serving's REST API prints it: field names as in the .proto, defaults included."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _feature_object(value) -> dict:
    """Reads one REST example: {feature: value | [values]}, bytes as {"b64": ...}."""
    if not isinstance(value, dict):
        raise invalid_argument(f"an example must be a JSON object of features, got {tensors.json_preview(value)}")

    def leaf(item):
        return tensors.json_leaf_to_bytes(item, "examples") if isinstance(item, dict) else item

    return {name: [leaf(item) for item in feature] if isinstance(feature, list) else leaf(feature)
            for name, feature in value.items()}


def _is_named_instance(instance) -> bool:
    return isinstance(instance, dict) and set(instance) != {"b64"}


def _columns_from_instances(instances, input_names: list[str]) -> dict:
    """Turns row-format `instances` into one list per input.

    With one input, an instance may be the bare value; otherwise each
    instance is an object of named inputs, all with the same names.
    """
    if not isinstance(instances, list) or not instances:
        raise invalid_argument("'instances' must be a non-empty JSON list")
    named = all(_is_named_instance(instance) for instance in instances)
    if len(input_names) == 1 and not named:
        return {input_names[0]: instances}
    if not named:
        raise invalid_argument("with several inputs, every element of 'instances' must be a JSON object "
                               "of named inputs")
    names = set(instances[0])
    for index, instance in enumerate(instances):
        if set(instance) != names:
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{tensors.json_preview(instance)} does not name the same inputs as element 0")
    return {name: [instance[name] for instance in instances] for name in instances[0]}


def _columns_from_inputs(inputs, input_names: list[str]) -> dict:
    """Turns columnar `inputs` into one value per input."""
    if _is_named_instance(inputs):  # a JSON object can only name inputs (a tensor is a list or a value)
        return dict(inputs)
    if len(input_names) == 1:
        return {input_names[0]: inputs}
    raise invalid_argument("'inputs' must be a JSON object of named inputs for a signature with several inputs")


# === HTTP: cheroot, with framing checked strictly ===
#
# cheroot (CherryPy's HTTP server) parses the request line, keeps connections
# alive, runs a fixed pool of worker threads and does TLS. On top of it:
#   - headers are read strictly (_StrictHeaderReader) and the framing is checked
#     (_RestRequest.read_request_headers), so that no request can be read two
#     ways by this server and a proxy in front of it;
#   - chunked bodies are decoded here (_read_chunked_body), strictly, trailers
#     included: cheroot's decoder reads "-5" or "0x10" as chunk sizes and
#     leaves trailers on the wire, where they would be read as the next request;
#   - the TLS handshake runs in the connection's worker thread
#     (_DeferredHandshakeAdapter), not in cheroot's accept loop, where one
#     silent client would hold up every other;
#   - every refusal, cheroot's own included, is TF Serving's JSON error.

_CRLF = b"\r\n"
_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(rb"[0-9]{1,19}")
# Headers a request may carry once: a second Content-Length, Transfer-Encoding or
# Host is how requests are smuggled past proxies; a second Authorization is ambiguous.
_SINGLE_HEADERS = frozenset({b"Content-Length", b"Transfer-Encoding", b"Host", b"Authorization", b"Content-Type"})
MAX_HEADER_BYTES = 64 * 1024
_MAX_CHUNK_LINE_BYTES = 4096


class _StrictHeaderReader(cheroot.server.HeaderReader):
    """Reads request headers as RFC 9112 asks of a server that must not be fooled.

    Refused (400): header lines folded onto the next line (obs-fold), names
    that are not tokens or have space before the colon, values holding CR or
    NUL, and a second Content-Length, Transfer-Encoding, Host, Authorization
    or Content-Type. cheroot's own reader accepts all of these (and keeps only
    the last of two Content-Lengths). Other repeated headers are joined with
    ", " as RFC 9110 section 5.3 says.
    """

    def __call__(self, rfile, hdict=None):
        headers = {} if hdict is None else hdict
        while True:
            line = rfile.readline()
            if not line:
                raise ValueError("Illegal end of headers.")
            if line == _CRLF:
                return headers
            if not line.endswith(_CRLF):
                raise ValueError("HTTP requires CRLF line ends")
            if line[:1] in (b" ", b"\t"):
                raise ValueError("Header lines continued on the next line (obs-fold) are not accepted: "
                                 "send each header on one line")
            name, colon, value = line[:-2].partition(b":")
            if not colon or not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"Malformed header line {line[:40]!r}: expected 'Name: value', "
                                 "with no space before the colon")
            value = value.strip(b" \t")
            if b"\r" in value or b"\0" in value:
                raise ValueError(f"Header {name.decode('ascii')} holds a CR or NUL character")
            key = name.title()
            if key in headers:
                if key in _SINGLE_HEADERS:
                    raise ValueError(f"Header {key.decode('ascii')} is given twice: send it once")
                value = headers[key] + b", " + value
            headers[key] = value


def _framing_problem(request) -> tuple[int, str] | None:
    """Why a request's body framing is refused, as (HTTP status, message), or None when it is sound."""
    headers = request.inheaders
    length, coding = headers.get(b"Content-Length"), headers.get(b"Transfer-Encoding")
    if length is not None and not _DIGITS.fullmatch(length):
        return 400, "Content-Length must be one whole number of bytes (digits only)"
    if coding is None:
        return None
    if length is not None:
        return 400, "A request must not carry both Content-Length and Transfer-Encoding: send one of them"
    if request.response_protocol != "HTTP/1.1":
        return 400, "Transfer-Encoding needs HTTP/1.1: send the body with a Content-Length"
    if coding.lower() != b"chunked":
        return 501, "Transfer-Encoding must be 'chunked' (no other coding is supported)"
    return None


def _json_error(message: str) -> bytes:
    return (json.dumps({"error": message}) + "\n").encode("utf-8")


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Client Closed Request" if status == 499 else "Error"
    return f"{status} {phrase}".encode("latin-1")


# cheroot's refusals that come without a message.
_CHEROOT_REFUSALS = {"501": "Transfer-Encoding must be 'chunked' (no other coding is supported)",
                     "408": "The request did not arrive in time: send it whole, without pauses"}


class _RestRequest(cheroot.server.HTTPRequest):
    """cheroot's request, with strict headers and framing, and JSON refusals."""

    header_reader = _StrictHeaderReader()

    def read_request_headers(self):
        if not super().read_request_headers():
            return False
        problem = _framing_problem(self)
        if problem is not None:
            status, message = problem
            self.simple_response(_status_line(status).decode("latin-1"), message)
            return False
        return True

    def simple_response(self, status, msg=""):
        """Answers with a JSON error and closes the connection (for cheroot's refusals too)."""
        status = str(status)
        message = msg.decode("latin-1") if isinstance(msg, bytes) else msg
        message = message or _CHEROOT_REFUSALS.get(status[:3], status[4:])
        body = _json_error(message)
        self.close_connection = True
        head = (f"{self.server.protocol} {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("latin-1")
        try:
            self.conn.wfile.write(head + body)
        except OSError as error:  # the client has gone
            logger.debug("REST: could not send %s: %s", status, error)


class _RestConnection(cheroot.server.HTTPConnection):
    """A connection whose TLS handshake (if any) runs here, in its worker thread, on its first request."""

    RequestHandlerClass = _RestRequest
    _handshake_done = False

    def communicate(self):
        if not self._handshake_done and isinstance(self.socket, ssl.SSLSocket):
            try:
                self.socket.do_handshake()  # bounded by the connection's timeout
            except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
                logger.debug("REST: TLS handshake with %s failed: %s", getattr(self, "remote_addr", "?"), error)
                return False
        self._handshake_done = True
        return super().communicate()


class _DeferredHandshakeAdapter(cheroot.ssl.Adapter):
    """cheroot's TLS adapter for a ready SSLContext, leaving the handshake to the worker thread."""

    def __init__(self, context: ssl.SSLContext):
        super().__init__(certificate=None, private_key=None)
        self.context = context

    def bind(self, sock):
        return sock

    def wrap(self, sock):
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), self.get_environ()

    def get_environ(self):
        return {"HTTPS": "on", "wsgi.url_scheme": "https"}

    def makefile(self, sock, mode="r", bufsize=io.DEFAULT_BUFFER_SIZE):
        return cheroot.makefile.MakeFile(sock, mode, bufsize)


class _Refusal(Exception):
    """A request refused before it reaches RestApi: (HTTP status, message, extra headers)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


def _read_chunked_body(rfile, limit: int) -> bytes:
    """Decodes a chunked body (RFC 9112 section 7.1), trailers included, or refuses it.

    Chunk sizes are hex digits only (an optional `;extension` is ignored);
    a chunk must be followed by CRLF; trailer fields are read and dropped.

    Raises:
        _Refusal: 400 for a malformed body, 413 past `limit` bytes.
    """
    parts, size = [], 0
    while True:
        line = rfile.readline(_MAX_CHUNK_LINE_BYTES)
        if not line.endswith(_CRLF):
            raise _Refusal(400, "Malformed chunked body: a chunk-size line must end with CRLF")
        size_text = line[:-2].partition(b";")[0]
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise _Refusal(400, f"Malformed chunked body: chunk size {size_text[:20]!r} is not hex digits")
        chunk_size = int(size_text, 16)
        if chunk_size == 0:
            break
        size += chunk_size
        if size > limit:
            raise _Refusal(413, message_too_large("request body", size, limit).message)
        chunk = rfile.read(chunk_size)
        if len(chunk) != chunk_size or rfile.read(2) != _CRLF:
            raise _Refusal(400, "Malformed chunked body: a chunk is shorter than its size or not followed by CRLF")
        parts.append(chunk)
    while True:  # the trailer section, up to its empty line
        line = rfile.readline(_MAX_CHUNK_LINE_BYTES)
        if line == _CRLF:
            return b"".join(parts)
        size += len(line)
        name, colon, _ = line.partition(b":")
        if not line.endswith(_CRLF) or not colon or not _HEADER_NAME.fullmatch(name) or size > limit:
            raise _Refusal(400, "Malformed chunked body: each trailer line must be 'Name: value', and the "
                                "trailers end with an empty line")


class _RestGateway(cheroot.server.Gateway):
    """Answers one parsed request: token, body size, a request slot, then RestApi.

    The token is checked before the body is read; a refusal before the body
    is read closes the connection (an unread body may follow).
    """

    def respond(self):
        request, server = self.req, self.req.server
        method, target = request.method.decode("latin-1"), request.uri.decode("latin-1")
        try:
            gate = server.shutdown_gate
            if gate is not None:
                gate.saw_call()
                if gate.refusing:
                    raise _Refusal(503, SHUTTING_DOWN_MESSAGE, {"Retry-After": "1"})
            if method not in ("GET", "POST"):
                raise _Refusal(405, f"Method {method} is not allowed: GET a model's status or metadata, "
                                    "POST to :predict, :classify or :regress", {"Allow": "GET, POST"})
            try:
                server.api.authorize(method, target, _header_text(request.inheaders.get(b"Authorization")))
            except ServingError as error:
                raise _Refusal(error.http_status, error.message,
                               {"WWW-Authenticate": "Bearer"} if error.code == grpc.StatusCode.UNAUTHENTICATED
                               else {}) from None
            length = 0 if request.chunked_read else int(request.inheaders.get(b"Content-Length", b"0"))
            if length > server.max_body_bytes:
                raise _Refusal(413, message_too_large("request body", length, server.max_body_bytes).message)
            try:
                slot = server.limiter.slot() if server.limiter is not None else contextlib.nullcontext()
                with slot:
                    body = (_read_chunked_body(request.conn.rfile, server.max_body_bytes) if request.chunked_read
                            else request.rfile.read(length) if length else b"")
                    if len(body) != length and not request.chunked_read:
                        raise _Refusal(400, f"The body ended after {len(body)} of its {length} bytes "
                                            "(Content-Length)")
                    status, content_type, payload = server.api.handle(method, target, body)
            except ServingError as error:  # no free request slot; the body is left unread
                raise _Refusal(error.http_status, error.message, {"Retry-After": "1"}) from None
        except _Refusal as refusal:
            request.close_connection = True
            self._send(refusal.status, "application/json", _json_error(refusal.message), refusal.headers)
            return
        self._send(status, content_type, payload)

    def _send(self, status: int, content_type: str, payload: bytes, headers: dict | None = None) -> None:
        request = self.req
        request.status = _status_line(status)
        request.outheaders = [(b"Content-Type", content_type.encode("latin-1")),
                              (b"Content-Length", str(len(payload)).encode("latin-1"))]
        request.outheaders += [(name.encode("latin-1"), value.encode("latin-1"))
                               for name, value in (headers or {}).items()]
        request.ensure_headers_sent()
        request.write(payload)


def _header_text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


class _HttpServer(cheroot.server.HTTPServer):
    """cheroot's server with the REST gateway, a fixed thread pool, bounded queues, and quiet about clients."""

    ConnectionClass = _RestConnection

    def __init__(self, address, api: RestApi, limiter: RequestLimiter | None, max_body_bytes: int,
                 ssl_context: ssl.SSLContext | None, num_threads: int, max_connections: int,
                 timeout_seconds: float):
        super().__init__(address, _RestGateway, minthreads=num_threads, maxthreads=num_threads,
                         server_name="rnn-zoo-serving")
        self.api, self.limiter, self.max_body_bytes = api, limiter, max_body_bytes
        self.shutdown_gate: ShutdownGate | None = None
        self.max_connections = max_connections
        # Connections waiting for a worker are at most max_connections; past that
        # the accept loop hands them to _answer_overflow at once, never blocks on them.
        self.requests = cheroot.workers.threadpool.ThreadPool(
            self, min=num_threads, max=num_threads, accepted_queue_size=max_connections, accepted_queue_timeout=0)
        self.keep_alive_conn_limit = max_connections  # idle keep-alive connections held open
        self.request_queue_size = min(max_connections, socket.SOMAXCONN)  # the listen backlog
        self.timeout = timeout_seconds
        self.max_request_header_size = MAX_HEADER_BYTES
        self.max_request_body_size = 0  # checked by the gateway, with the flag in the message
        self.ssl_adapter = _DeferredHandshakeAdapter(ssl_context) if ssl_context is not None else None
        self._overflow = queue.Queue(maxsize=max_connections)
        self._overflow_thread = threading.Thread(target=self._answer_overflow, name="rest-overflow", daemon=True)
        self._overflow_thread.start()

    def process_conn(self, conn):
        try:
            self.requests.put(conn)
        except queue.Full:
            try:
                self._overflow.put_nowait(conn)
            except queue.Full:  # a flood: not even a refusal is written
                conn.close()

    def _answer_overflow(self):
        """Answers connections that found no worker and no queue place with 503, naming the flags."""
        message = _json_error(f"The REST server's {self.requests.max} threads are busy and "
                              f"{self.max_connections} connections wait already (--rest_api_num_threads, "
                              "--rest_api_max_connections); retry later")
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: "
                f"{len(message)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode("latin-1")
        while True:
            conn = self._overflow.get()
            if conn is None:
                return
            try:
                if isinstance(conn.socket, ssl.SSLSocket):
                    conn.socket.do_handshake()
                conn.wfile.write(head + message)
                conn.wfile.flush()
            except (OSError, ValueError) as error:
                logger.debug("REST: could not refuse a connection: %s", error)
            finally:
                conn.close()

    def stop(self):
        super().stop()
        with contextlib.suppress(queue.Full):  # a full queue: the daemon thread ends with the process
            self._overflow.put_nowait(None)

    def error_log(self, msg="", level=logging.INFO, traceback=False):
        """cheroot's log: what clients cause (disconnects, failed handshakes, timeouts) only at debug level."""
        error = sys.exc_info()[1]
        client_side = error is None or isinstance(
            error, (OSError, ValueError, cheroot.errors.FatalSSLAlert, cheroot.errors.NoSSLError))
        if client_side or not traceback:
            logger.debug("REST: %s", msg)
        else:
            logger.log(level, "REST: %s", msg, exc_info=True)


class RestServer:
    """Serves `RestApi` over HTTP/1.1 (or HTTPS) on cheroot: keep-alive, a fixed thread pool, bounded queues.

    Each request is checked in this order: the framing (strict headers; a body
    with a Content-Length or chunked, never both), the bearer token, the body
    size, a request slot; only then is its body read.

    Args:
        api: The RestApi.
        host: Address to bind.
        port: Port to bind (bound here, so a port in use fails at once).
        limiter: The RequestLimiter shared with gRPC.
        max_body_bytes: Largest request body (`--max_message_bytes`).
        ssl_context: Serve HTTPS with this server-side context, or None for HTTP.
        num_threads: Connections served at once (`--rest_api_num_threads`).
        max_connections: Connections waiting for a thread, and idle keep-alive
            connections held open, each at most this (`--rest_api_max_connections`);
            past it a new connection gets 503 and an idle one is closed.
        socket_timeout_seconds: Idle limit per connection (and for the TLS
            handshake), so slow clients cannot hold threads forever.
        shutdown_gate: The server's ShutdownGate: once it refuses, requests
            get 503 with its message. None: none.
    """

    def __init__(self, api: RestApi, host: str, port: int, limiter: RequestLimiter | None = None,
                 max_body_bytes: int = 64 * 1024 * 1024, ssl_context: ssl.SSLContext | None = None,
                 num_threads: int = 16, max_connections: int = 256, socket_timeout_seconds: float = 60.0,
                 shutdown_gate: ShutdownGate | None = None):
        self._scheme = "https" if ssl_context is not None else "http"
        self._server = _HttpServer((host, port), api, limiter, max_body_bytes, ssl_context, num_threads,
                                   max_connections, socket_timeout_seconds)
        self._server.shutdown_gate = shutdown_gate
        self._server.prepare()  # binds the port and starts the worker threads
        self._thread = threading.Thread(target=self._server.serve, name="rest-server", daemon=True)

    @property
    def port(self) -> int:
        return self._server.bind_addr[1]

    def start(self) -> None:
        self._thread.start()
        logger.info("REST API at %s://%s:%d/v1/models/<model>", self._scheme, *self._server.bind_addr[:2])

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stops accepting connections, closes idle ones, and waits for requests in flight to be answered."""
        self._server.shutdown_timeout = grace_seconds
        self._server.stop()
        self._thread.join(timeout=grace_seconds)
