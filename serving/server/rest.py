"""TensorFlow Serving's REST API on `--rest_api_port`, over the same InferenceService.

    GET  /v1/models/<model>[/versions/<v>|/labels/<l>]             status
    GET  /v1/models/<model>[/versions/<v>|/labels/<l>]/metadata    signatures
    POST /v1/models/<model>[/versions/<v>|/labels/<l>]:predict     {"instances": [...]} or {"inputs": ...}
    POST /v1/models/<model>[/versions/<v>|/labels/<l>]:classify    {"examples": [...], "context": {...}}
    GET  /monitoring/prometheus/metrics                            (TF Serving's metrics path)

Errors are `{"error": "<message>"}` with the HTTP code TF Serving gives for
the status (400 invalid argument, 404 not found, 503 unavailable, ...).
`RestApi.handle` is plain request-in, response-out, so it is tested without
sockets; `RestServer` puts it on a threaded `http.server`.
"""

import contextlib
import http
import http.server
import json
import logging
import re
import ssl
import sys
import threading
import time
import urllib.parse

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.protocol import errors, tensors
from serving.protocol.errors import ServingError, invalid_argument
from serving.server.access import RequestLimiter, TokenChecker, message_too_large
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
    """

    def __init__(self, inference: InferenceService, manager: ModelManager,
                 metrics: ServingMetrics | None = None, timeout_seconds: float | None = 30.0,
                 tokens: TokenChecker | None = None):
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
        if method == "GET" and path == PROMETHEUS_PATH and self._metrics is not None:
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
        try:
            document = json.loads(body.decode("utf-8") if body else "")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise invalid_argument(f"JSON Parse error: {error}") from None
        if not isinstance(document, dict):
            raise invalid_argument("JSON Value: request body must be a JSON object")
        signature_name = document.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid_argument("'signature_name' key must be a string value.")
        model_spec.signature_name = signature_name
        if method == "predict":
            return self._predict(model_spec, document)
        if method == "classify":
            return self._classify(model_spec, document)
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "Regress is not implemented by this server; use :predict")

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
        examples = document.get("examples")
        if not isinstance(examples, list) or not examples:
            raise invalid_argument("'examples' must be a non-empty list of feature objects")
        request = classification_pb2.ClassificationRequest(model_spec=model_spec)
        try:
            built = [tensors.make_example(_feature_object(example)) for example in examples]
            if "context" in document:
                request.input.example_list_with_context.context.CopyFrom(
                    tensors.make_example(_feature_object(document["context"])))
                request.input.example_list_with_context.examples.extend(built)
            else:
                request.input.example_list.examples.extend(built)
        except ValueError as error:
            raise invalid_argument(str(error)) from None
        response = self._inference.classify(request, self._timeout_seconds)
        return {"result": [[[entry.label, entry.score] for entry in classifications.classes]
                           for classifications in response.result.classifications]}


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
    if _is_named_instance(inputs) and (len(input_names) > 1 or set(inputs) == set(input_names)):
        return dict(inputs)
    if len(input_names) == 1:
        return {input_names[0]: inputs}
    raise invalid_argument("'inputs' must be a JSON object of named inputs for a signature with several inputs")


class RestServer:
    """Serves `RestApi` over HTTP/1.1 (or HTTPS) from a thread per connection.

    Each request is checked in this order, before its body is read: the
    bearer token, the framing (`Content-Length` only: a `Transfer-Encoding`
    is refused, so a proxy in front and this server cannot disagree on where
    a request ends), the body size, a request slot.

    Args:
        api: The RestApi.
        host: Address to bind.
        port: Port to bind.
        limiter: The RequestLimiter shared with gRPC.
        max_body_bytes: Largest request body (`--max_message_bytes`).
        ssl_context: Serve HTTPS with this server-side context, or None for HTTP.
        socket_timeout_seconds: Idle limit per connection (and for the TLS
            handshake), so slow clients cannot hold threads forever.
    """

    def __init__(self, api: RestApi, host: str, port: int, limiter: RequestLimiter | None = None,
                 max_body_bytes: int = 64 * 1024 * 1024, ssl_context: ssl.SSLContext | None = None,
                 socket_timeout_seconds: float = 60.0):
        self._in_flight = 0
        self._idle = threading.Condition()
        self._scheme = "https" if ssl_context is not None else "http"
        handler = _make_handler(api, socket_timeout_seconds, self._track, limiter, max_body_bytes)
        self._server = _HttpServer((host, port), handler, ssl_context)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rest-server", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()
        logger.info("REST API at %s://%s:%d/v1/models/<model>", self._scheme, *self._server.server_address[:2])

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stops accepting connections and waits for requests in flight to be answered."""
        self._server.shutdown()
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=grace_seconds)
        self._server.server_close()

    def _track(self, delta: int) -> None:
        with self._idle:
            self._in_flight += delta
            self._idle.notify_all()


class _HttpServer(http.server.ThreadingHTTPServer):
    """The threaded HTTP server, with TLS done in each connection's thread, and quiet about clients.

    The TLS handshake runs in the connection's own thread (not in `accept`,
    where one slow or silent client would stall every other), and a client
    that fails it, drops its connection or times out is logged at debug
    level: such things are the client's, and must not flood the log with
    tracebacks.
    """

    def __init__(self, address, handler, ssl_context: ssl.SSLContext | None):
        self._ssl_context = ssl_context
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        if self._ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(self.RequestHandlerClass.timeout)
        with self._ssl_context.wrap_socket(request, server_side=True) as secure:  # the handshake
            super().finish_request(secure, client_address)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, ssl.SSLError, OSError)):
            logger.debug("REST connection from %s ended: %s", client_address[0], error)
        else:
            logger.exception("REST connection from %s failed", client_address[0])


def _make_handler(api: RestApi, socket_timeout_seconds: float, track, limiter: RequestLimiter | None,
                  max_body_bytes: int):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = socket_timeout_seconds
        server_version = "rnn-zoo-serving"

        def _answer(self, method: str) -> None:
            try:
                api.authorize(method, self.path, self.headers.get("Authorization"))
            except ServingError as error:
                extra = {"WWW-Authenticate": "Bearer"} if error.code == grpc.StatusCode.UNAUTHENTICATED else {}
                self._refuse(error.http_status, error.message, extra)
                return
            if "Transfer-Encoding" in self.headers:
                self._refuse(http.HTTPStatus.NOT_IMPLEMENTED,
                             "Transfer-Encoding is not supported: send the body with a Content-Length")
                return
            length_header = self.headers.get("Content-Length", "0")
            length = int(length_header) if length_header.isascii() and length_header.isdigit() else -1
            if length < 0 or len(self.headers.get_all("Content-Length") or ()) > 1:
                self._refuse(http.HTTPStatus.BAD_REQUEST, "Content-Length must be one whole number of bytes")
                return
            if length > max_body_bytes:
                self._refuse(http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             message_too_large("request body", length, max_body_bytes).message)
                return
            track(+1)
            try:
                with limiter.slot() if limiter is not None else contextlib.nullcontext():
                    body = self.rfile.read(length) if length else b""
                    status, content_type, payload = api.handle(method, self.path, body)
                self._send(status, content_type, payload)
            except ServingError as error:  # no free request slot; the body is left unread
                self._refuse(error.http_status, error.message, {"Retry-After": "1"})
            finally:
                track(-1)

        def _refuse(self, status: int, message: str, headers: dict | None = None) -> None:
            """Answers with a JSON error and closes the connection (an unread body may follow)."""
            self.close_connection = True
            self._send(status, "application/json", (json.dumps({"error": message}) + "\n").encode("utf-8"),
                       dict(headers or {}, Connection="close"))

        def _send(self, status: int, content_type: str, payload: bytes, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            self._answer("GET")

        def do_POST(self):  # noqa: N802
            self._answer("POST")

        def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
            logger.debug("REST %s - %s", self.address_string(), format % args)

    return Handler
