"""Who may call the server, and how much at once: bearer tokens, request limits, the gRPC interceptor.

gRPC and REST share one `RequestLimiter` and one `TokenChecker`, so both
protocols refuse the same callers and count against the same limit:

    caller ── token? ── UNAUTHENTICATED (401) / PERMISSION_DENIED (403)
                 └── message size? ── RESOURCE_EXHAUSTED (413 on REST)
                         └── a free request slot? ── RESOURCE_EXHAUSTED (429)
                                 └── the request runs

After SIGTERM a `ShutdownGate` refuses new calls with UNAVAILABLE before gRPC
stops (see `ShutdownGate`), so a call is answered and never silently cancelled.

Every refusal names the flag that sets the limit, so an operator or a client
knows what to change. Health checks and reflection never take a request slot
(a load balancer must still see the server under load), and health checks
may be left open to callers without a token (`--health_checks_without_token`).
"""

import contextlib
import dataclasses
import hashlib
import hmac
import os
import threading
import time

import grpc
from google.protobuf.message import DecodeError

from serving.client.connection import read_tokens
from serving.protocol.errors import ServingError

HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_METHOD_PREFIXES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")
AUTHORIZATION_METADATA_KEY = "authorization"
BEARER_SCHEME = "bearer"


# === Limits ===


class RequestLimiter:
    """At most `max_concurrent_requests` requests at once, refused (never queued) past that.

    Args:
        max_concurrent_requests: Requests running or waiting for a batch at
            once, over gRPC and REST together (`--max_concurrent_requests`).
    """

    def __init__(self, max_concurrent_requests: int):
        if max_concurrent_requests < 1:
            raise ValueError(f"max_concurrent_requests must be at least 1, got {max_concurrent_requests}")
        self.max_concurrent_requests = max_concurrent_requests
        self._slots = threading.BoundedSemaphore(max_concurrent_requests)

    @contextlib.contextmanager
    def slot(self):
        """Holds one request slot for the duration of the block.

        Raises:
            ServingError: RESOURCE_EXHAUSTED when every slot is taken.
        """
        if not self._slots.acquire(blocking=False):
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"The server is answering its maximum of {self.max_concurrent_requests} concurrent requests "
                "(--max_concurrent_requests); retry later, or raise --max_concurrent_requests")
        try:
            yield
        finally:
            self._slots.release()


SHUTTING_DOWN_MESSAGE = ("The server is shutting down and did not run this request; send it again, "
                         "to another replica if there is one")


class ShutdownGate:
    """Lets calls already sent reach a handler before gRPC stops, and refuses later ones with UNAVAILABLE.

    grpc-python takes calls from gRPC core one at a time on a single thread.
    Under load, calls the clients have sent wait in core for that thread,
    and `server.stop()` cancels every call still waiting there: the client
    gets a bare CANCELLED for a request that was sent before the SIGTERM and
    never ran. So the server stops in three steps (`serving.server.app`):

    1. health says NOT_SERVING and calls are still answered, until none has
       arrived for `quiet_seconds` (core has handed over what it held) or
       `--shutdown_drain_seconds` have passed;
    2. `refuse()`: new calls get UNAVAILABLE with `SHUTTING_DOWN_MESSAGE`
       (nothing was run, so a client may safely retry), again until quiet or
       a short bound;
    3. gRPC and REST stop, and the calls in flight get the grace period.

    `saw_call()` is called for every gRPC call as it is taken from core (the
    interceptor runs on grpc-python's polling thread) and for every REST
    request.
    """

    def __init__(self):
        self._last_call = time.monotonic()
        self.refusing = False

    def saw_call(self) -> None:
        self._last_call = time.monotonic()

    def refuse(self) -> None:
        self.refusing = True

    def wait_until_quiet(self, quiet_seconds: float, max_seconds: float) -> float:
        """Waits until no call has arrived for `quiet_seconds`, at most `max_seconds`; returns the seconds waited."""
        started = time.monotonic()
        self._last_call = max(self._last_call, started - quiet_seconds / 2)  # wait at least half the gap
        while True:
            now = time.monotonic()
            if now - self._last_call >= quiet_seconds or now - started >= max_seconds:
                return now - started
            time.sleep(min(quiet_seconds / 5, 0.01))

    def error(self) -> ServingError:
        return ServingError(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN_MESSAGE)


def message_too_large(what: str, size: int, limit: int, at_least: bool = False) -> ServingError:
    """RESOURCE_EXHAUSTED for a request or response over `--max_message_bytes`."""
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"The {what} is {'at least ' if at_least else ''}{size} bytes, more than the server's "
                        f"limit of {limit} bytes (--max_message_bytes); send fewer rows per request, or raise "
                        "--max_message_bytes")


# === Bearer tokens ===


@dataclasses.dataclass(frozen=True)
class TokenChecker:
    """Checks `Authorization: Bearer <token>` against the tokens the operator gave.

    Tokens are compared as SHA-256 digests with `hmac.compare_digest`, against
    every known token, so the time taken tells nothing about how much of a
    guess was right, nor about the tokens' lengths.

    Attributes:
        token_digests: SHA-256 of each accepted token.
        health_checks_without_token: Let health checks through without a token.
    """

    token_digests: tuple[bytes, ...]
    health_checks_without_token: bool = False

    @classmethod
    def from_file(cls, path: os.PathLike, health_checks_without_token: bool = False) -> "TokenChecker":
        """Reads `--auth_token_file`: one token per line; blank lines and `#` comments are skipped.

        Several lines let tokens be rotated: add the new one, move the
        clients, remove the old one, restart.

        Raises:
            ValueError: The file cannot be read or holds no token.
        """
        tokens = read_tokens(path)
        if any(any(character.isspace() for character in token) for token in tokens):
            raise ValueError(f"--auth_token_file {path}: a token must not contain spaces")
        return cls(tuple(_digest(token) for token in tokens), health_checks_without_token)

    def check(self, authorization: str | None) -> None:
        """Accepts a request whose Authorization value carries a known bearer token.

        Raises:
            ServingError: UNAUTHENTICATED without a bearer token,
                PERMISSION_DENIED for a token that is not accepted.
        """
        if not authorization:
            raise ServingError(grpc.StatusCode.UNAUTHENTICATED,
                               "This server needs a bearer token: send 'authorization: Bearer <token>' (gRPC "
                               "metadata or the HTTP Authorization header), with a token from the server's "
                               "--auth_token_file")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != BEARER_SCHEME or not token:
            raise ServingError(grpc.StatusCode.UNAUTHENTICATED,
                               "The authorization value must be 'Bearer <token>', with a token from the "
                               "server's --auth_token_file")
        digest = _digest(token)
        accepted = False
        for known in self.token_digests:  # no early exit: every token is compared
            accepted |= hmac.compare_digest(known, digest)
        if not accepted:
            raise ServingError(grpc.StatusCode.PERMISSION_DENIED,
                               "The bearer token is not accepted by this server (not in its --auth_token_file)")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


# === gRPC ===


class _Oversized:
    """Stands in for a request too large to parse; the handler answers it with the limit's flag."""

    def __init__(self, size: int):
        self.size = size


class _Undecodable:
    """Stands in for bytes that do not parse as the method's request message (gRPC would say INTERNAL)."""

    def __init__(self, error: Exception):
        self.error = error


def _metadata_value(metadata, key: str) -> str | None:
    for item in metadata or ():
        if item.key == key:  # gRPC gives keys in lower case
            return item.value if isinstance(item.value, str) else item.value.decode("latin-1")
    return None


class AccessInterceptor(grpc.ServerInterceptor):
    """Applies the token check and the limits to every gRPC call before its servicer runs.

    Args:
        limiter: The shared RequestLimiter.
        tokens: A TokenChecker, or None to let every caller in.
        max_message_bytes: Largest request or response (`--max_message_bytes`).
            gRPC itself is told twice this, so requests a little too large are
            answered here with the flag named; larger ones gRPC refuses itself
            ("Received message larger than max").
        shutdown_gate: The server's ShutdownGate, or None.
    """

    def __init__(self, limiter: RequestLimiter, tokens: TokenChecker | None, max_message_bytes: int,
                 shutdown_gate: ShutdownGate | None = None):
        self._limiter = limiter
        self._tokens = tokens
        self._max_message_bytes = max_message_bytes
        self._gate = shutdown_gate

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # an unknown method: gRPC answers UNIMPLEMENTED
        method = handler_call_details.method
        is_health = method.startswith(HEALTH_METHOD_PREFIX)
        if self._gate is not None:
            self._gate.saw_call()
            if self._gate.refusing and not is_health:  # health keeps answering NOT_SERVING
                return _refusing_handler(handler, self._gate.error())
        if self._tokens is not None and not (is_health and self._tokens.health_checks_without_token):
            try:
                self._tokens.check(_metadata_value(handler_call_details.invocation_metadata,
                                                   AUTHORIZATION_METADATA_KEY))
            except ServingError as error:
                return _refusing_handler(handler, error)
        if is_health or method.startswith(REFLECTION_METHOD_PREFIXES) or handler.unary_unary is None:
            return handler
        return self._limited(handler)

    def _limited(self, handler):
        """The unary handler, behind the message-size check and a request slot."""
        behavior, limit = handler.unary_unary, self._max_message_bytes

        def deserialize(data: bytes):
            if len(data) > limit:
                return _Oversized(len(data))
            try:
                return handler.request_deserializer(data) if handler.request_deserializer else data
            except DecodeError as error:
                return _Undecodable(error)

        def run(request, context):
            try:
                if isinstance(request, _Oversized):
                    raise message_too_large("request", request.size, limit)
                if isinstance(request, _Undecodable):
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"The request is not a valid {_request_type_name(handler)} ({request.error}); "
                                       "build it with the tensorflow-serving-api protos")
                with self._limiter.slot():
                    response = behavior(request, context)
                size = response.ByteSize() if hasattr(response, "ByteSize") else 0
                if size > limit:
                    raise message_too_large("response", size, limit)
                return response
            except ServingError as error:
                context.abort(error.code, error.message)

        return grpc.unary_unary_rpc_method_handler(run, request_deserializer=deserialize,
                                                   response_serializer=handler.response_serializer)


def _request_type_name(handler) -> str:
    """The protobuf type a handler's deserializer parses ("tensorflow.serving.PredictRequest"), or "request"."""
    message_class = getattr(handler.request_deserializer, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    return descriptor.full_name if descriptor is not None else "request message"


def _refusing_handler(handler, error: ServingError):
    """A handler of the same kind as `handler` that answers every call with `error`."""
    def refuse(_request, context):
        context.abort(error.code, error.message)

    options = dict(request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, **options)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, **options)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **options)
    return grpc.stream_stream_rpc_method_handler(refuse, **options)


def grpc_core_message_limit(max_message_bytes: int) -> int:
    """What gRPC itself is told (see AccessInterceptor): twice the limit, within int32."""
    return min(2 * max_message_bytes, 2**31 - 1)
