"""One error type for the model server, and its mapping to gRPC, HTTP and TF codes.

Every layer of the server (tensor conversion, model manager, batcher, services,
REST) raises `ServingError` with a gRPC status code and a message worded as
TensorFlow Serving words it, so gRPC and REST clients see the same failures.
"""

import http
import logging
import re

import grpc

logger = logging.getLogger(__name__)

# TensorFlow Serving's REST server maps status codes to HTTP codes this way
# (model_servers/http_server.cc); REST clients written for it expect these.
_HTTP_STATUS_BY_GRPC_CODE = {
    grpc.StatusCode.OK: http.HTTPStatus.OK,
    grpc.StatusCode.CANCELLED: 499,  # nginx's "client closed request", as TF Serving
    grpc.StatusCode.UNKNOWN: http.HTTPStatus.INTERNAL_SERVER_ERROR,
    grpc.StatusCode.INVALID_ARGUMENT: http.HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.DEADLINE_EXCEEDED: http.HTTPStatus.GATEWAY_TIMEOUT,
    grpc.StatusCode.NOT_FOUND: http.HTTPStatus.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: http.HTTPStatus.CONFLICT,
    grpc.StatusCode.PERMISSION_DENIED: http.HTTPStatus.FORBIDDEN,
    grpc.StatusCode.RESOURCE_EXHAUSTED: http.HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.FAILED_PRECONDITION: http.HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.ABORTED: http.HTTPStatus.CONFLICT,
    grpc.StatusCode.OUT_OF_RANGE: http.HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.UNIMPLEMENTED: http.HTTPStatus.NOT_IMPLEMENTED,
    grpc.StatusCode.INTERNAL: http.HTTPStatus.INTERNAL_SERVER_ERROR,
    grpc.StatusCode.UNAVAILABLE: http.HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS: http.HTTPStatus.INTERNAL_SERVER_ERROR,
    grpc.StatusCode.UNAUTHENTICATED: http.HTTPStatus.UNAUTHORIZED,
}

# tensorflow.error.Code and grpc.StatusCode share their numbers by design.
_GRPC_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request failed with a status code a client can act on.

    Args:
        code: The gRPC status code (NOT_FOUND, INVALID_ARGUMENT, ...).
        message: The human-readable reason, sent to the client as is.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @property
    def http_status(self) -> int:
        """The HTTP status code TensorFlow Serving's REST API gives for this error."""
        return int(_HTTP_STATUS_BY_GRPC_CODE.get(self.code, http.HTTPStatus.INTERNAL_SERVER_ERROR))

    @property
    def tensorflow_code(self) -> int:
        """The `tensorflow.error.Code` number, for StatusProto fields."""
        return self.code.value[0]


def grpc_code_from_number(number: int) -> grpc.StatusCode:
    """Returns the gRPC code with this `tensorflow.error.Code` number (UNKNOWN if none)."""
    return _GRPC_CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


_EAGER_PREAMBLE_END = "<stack traces unavailable>"
_EAGER_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\](?:\s*name:.*)?\s*$")
_FUNCTION_NODE_PREFIX = re.compile(r"^\{\{function_node [^}]*\}\}\s*")


def clean_tensorflow_message(message: str) -> str:
    """Drops the Python-side preamble and suffix from a TensorFlow error message.

    Eager execution wraps the kernel's message ("indices[0,1] = 99 is not in
    [0, 16)") in "Graph execution error: Detected at node ..." lines, a
    "{{function_node ...}}" prefix and an "[Op:...]" suffix; TF Serving's C++ server shows the kernel's
    message, so clients get that here too.
    """
    if message.startswith("Graph execution error:"):
        if _EAGER_PREAMBLE_END in message:
            message = message.split(_EAGER_PREAMBLE_END, 1)[1]
        else:  # the preamble is a traceback: blank-line separated "File ..." entries
            chunks = message.split("\n\n")
            preamble = [index for index, chunk in enumerate(chunks)
                        if chunk.lstrip().startswith(("Graph execution error:", "Detected at node", "File "))]
            message = "\n\n".join(chunks[preamble[-1] + 1:]) or message
    message = _FUNCTION_NODE_PREFIX.sub("", message.strip())
    return _EAGER_OP_SUFFIX.sub("", message).strip()


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def internal(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INTERNAL, message)


def from_exception(error: BaseException) -> ServingError:
    """Turns any exception raised while serving into a `ServingError`.

    TensorFlow's own errors keep their code and message (a bad index is
    INVALID_ARGUMENT, as in TF Serving); argument errors from calling a
    signature are INVALID_ARGUMENT; anything else is INTERNAL, so that a bug
    answers one request with an error instead of taking the server down.
    """
    if isinstance(error, ServingError):
        return error
    error_code = getattr(error, "error_code", None)
    message = getattr(error, "message", None)
    if isinstance(error_code, int) and isinstance(message, str):  # tf.errors.OpError
        return ServingError(grpc_code_from_number(error_code), clean_tensorflow_message(message))
    if isinstance(error, (TypeError, ValueError)):
        return invalid_argument(str(error))
    if isinstance(error, MemoryError):
        return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory while serving the request")
    return internal(f"{type(error).__name__}: {error}")


def request_failure(error: BaseException, description: str) -> ServingError:
    """The ServingError to answer a failed request with, logged at the right level.

    Server-side failures (INTERNAL, UNKNOWN) are logged as errors, with the
    traceback when they are not a ServingError; a client's mistakes only at
    debug level, so bad requests cannot flood the log.

    Args:
        error: What the request raised.
        description: Which request, for the log ("Predict for model 'lm'").
    """
    serving_error = from_exception(error)
    if serving_error.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        logger.error("%s failed: %s", description, serving_error.message,
                     exc_info=not isinstance(error, ServingError))
    else:
        logger.debug("%s: %s", description, serving_error)
    return serving_error
