"""The server process: the services wired to a gRPC server, REST and metrics, run until stopped.

`serve(arguments, stop_event)` is what `rnn-zoo-serve` runs once its flags
are parsed (`serving.server.cli`). The server is stateless: a language
model's recurrent state travels in the requests.
"""

import argparse
import concurrent.futures
import contextlib
import errno
import logging
import os
import pathlib
import threading

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import model_service_pb2, model_service_pb2_grpc, prediction_service_pb2, \
    prediction_service_pb2_grpc

from serving.protocol.errors import ServingError
from serving.server.access import AccessInterceptor, RequestLimiter, ShutdownGate, TokenChecker, \
    grpc_core_message_limit
from serving.server.batching import BatchingParameters, BatchScheduler, read_batching_parameters_file
from serving.server.metrics import PrometheusSettings, ServingMetrics, read_monitoring_config_file
from serving.server.model_config import config_for_single_model, read_model_config_file
from serving.server.model_manager import ModelManager
from serving.server.model_service import ModelServicer
from serving.server.prediction_service import InferenceService, PredictionServicer
from serving.server.rest import RestApi, RestServer
from serving.server.servable import SERVE_TAG, Servable
from serving.server.tls import grpc_server_credentials, read_ssl_config_file, rest_ssl_context
from serving.server.warmup import run_saved_model_warmup, warmup_requests_path

logger = logging.getLogger("serving.server")

# Shutdown (ShutdownGate): the quiet gap that shows gRPC core holds no more calls,
# and how long at most new calls are refused with UNAVAILABLE before gRPC stops.
SHUTDOWN_QUIET_SECONDS = 0.05
SHUTDOWN_REFUSING_SECONDS = 0.5

_SERVICE_NAMES = (
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
)


def allowed_model_base_paths(arguments: argparse.Namespace) -> list[pathlib.Path]:
    """The directories HandleReloadConfigRequest may load from: the flag, or what the server started with."""
    if arguments.allowed_model_base_paths:
        return [pathlib.Path(path).absolute() for path in arguments.allowed_model_base_paths.split(",") if path]
    if arguments.model_base_path:
        return [pathlib.Path(arguments.model_base_path).absolute()]
    if arguments.model_config_file:
        config = read_model_config_file(arguments.model_config_file)
        return [pathlib.Path(entry.base_path).expanduser().absolute() for entry in config.model_config_list.config]
    return [pathlib.Path(arguments.model_base_dir).absolute()]


def make_servable_loader(arguments: argparse.Namespace):
    """Loads a version as the flags say: `--saved_model_tags`, then warm-up (`--enable_model_warmup`).

    Returns:
        (name, version, path) -> Servable, for the ModelManager; a warm-up
        failure fails the load, so the version never becomes AVAILABLE.
    """
    tags = tuple(getattr(arguments, "saved_model_tags", None) or (SERVE_TAG,))
    warmup = getattr(arguments, "enable_model_warmup", False)
    iterations = max(1, getattr(arguments, "num_request_iterations_for_warmup", 0) or 1)
    method_name_check = getattr(arguments, "enable_signature_method_name_check", False)

    def load(name: str, version: int, path: pathlib.Path) -> Servable:
        servable = Servable.load(name, version, path, tags=tags)
        if warmup:
            try:
                run_saved_model_warmup(servable, iterations, arguments.max_batch_size, method_name_check)
            except ServingError as error:
                raise ServingError(error.code, f"Model warm-up failed ({warmup_requests_path(path)}): "
                                               f"{error.message}") from None
        return servable

    return load


def make_model_manager(arguments: argparse.Namespace, metrics: ServingMetrics, on_availability_change) -> ModelManager:
    """Builds the ModelManager for the model flags (one model, a config file, or a directory)."""
    common = dict(poll_wait_seconds=arguments.file_system_poll_wait_seconds, metrics=metrics,
                  on_availability_change=on_availability_change, load_servable=make_servable_loader(arguments))
    if arguments.model_base_path:
        config = config_for_single_model(arguments.model_name, pathlib.Path(arguments.model_base_path).absolute())
        return ModelManager(config=config, **common)
    if arguments.model_config_file:
        return ModelManager(config_file=arguments.model_config_file,
                            config_file_poll_wait_seconds=arguments.model_config_file_poll_wait_seconds, **common)
    return ModelManager(model_base_dir=pathlib.Path(arguments.model_base_dir).absolute(), **common)


class _HealthReporter:
    """Keeps grpc.health.v1 in line with the server: overall, per service and per model.

    The server (service "" and the two APIs) says NOT_SERVING until startup
    is over and every configured model has a version available, as TF
    Serving opens its port only then; from then on it says SERVING until
    shutdown, whatever later happens to one model (each model's own service
    name says that).
    """

    def __init__(self, servicer: health.HealthServicer):
        self._servicer = servicer
        self._started = False
        self._ready = False
        self._availability: dict[str, bool] = {}
        self._lock = threading.Lock()
        for service in ("",) + _SERVICE_NAMES:
            servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    def models_changed(self, availability: dict[str, bool]) -> None:
        with self._lock:
            self._availability = dict(availability)
            for name, available in availability.items():
                self._servicer.set(name, health_pb2.HealthCheckResponse.SERVING if available
                                   else health_pb2.HealthCheckResponse.NOT_SERVING)
            self._become_ready_if_loaded()

    def startup_done(self) -> None:
        """The initial load has run: SERVING now if every model has a version, else once they have."""
        with self._lock:
            self._started = True
            self._become_ready_if_loaded()
            if not self._ready:
                waiting = sorted(name for name, available in self._availability.items() if not available)
                logger.warning("Health stays NOT_SERVING until these models have a version available: %s",
                               ", ".join(waiting))

    def _become_ready_if_loaded(self) -> None:
        if self._ready or not self._started or not all(self._availability.values()):
            return
        self._ready = True
        for service in ("",) + _SERVICE_NAMES:
            self._servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        logger.info("Every configured model has a version available: health is SERVING")

    def shutting_down(self) -> None:
        with self._lock:
            self._servicer.enter_graceful_shutdown()


class PortError(OSError):
    """A port the server was told to use cannot be bound (most often: another process has it)."""


@contextlib.contextmanager
def _binding(what: str, host: str, port: int, flag: str):
    """Turns a failed bind into a PortError that names the port, its flag and the cause."""
    try:
        yield
    except OSError as error:
        # cheroot reports a failed bind as an OSError without errno, its text holding the cause.
        in_use = error.errno == errno.EADDRINUSE or os.strerror(errno.EADDRINUSE) in str(error)
        reason = "it is in use" if in_use else (error.strerror or str(error))
        raise PortError(_port_message(what, host, port, flag, reason)) from error
    except RuntimeError as error:  # grpcio: "Failed to bind to address ..."
        raise PortError(_port_message(what, host, port, flag, "it is in use, or the address is not "
                                      "one of this machine's")) from error


def _port_message(what, host, port, flag, reason) -> str:
    return (f"cannot listen for {what} on {host}:{port} ({flag}): {reason}. "
            f"Stop the process that holds it, or choose another {flag}.")


def serve(arguments: argparse.Namespace, stop_event: threading.Event) -> int:
    """Runs the server until `stop_event` is set, then shuts down gracefully.

    Returns:
        The process exit code: 0 after a clean shutdown, 1 when startup fails.
    """
    metrics = ServingMetrics()
    health_servicer = health.HealthServicer()
    health_reporter = _HealthReporter(health_servicer)
    try:
        tokens = (TokenChecker.from_file(arguments.auth_token_file, arguments.health_checks_without_token)
                  if arguments.auth_token_file else None)
        ssl_config = read_ssl_config_file(arguments.ssl_config_file) if arguments.ssl_config_file else None
        rest_ssl = rest_ssl_context(ssl_config) if ssl_config is not None and arguments.rest_api_port else None
        allowed_base_paths = allowed_model_base_paths(arguments)
        monitoring_file = getattr(arguments, "monitoring_config_file", None)
        prometheus = read_monitoring_config_file(monitoring_file) if monitoring_file else PrometheusSettings()
        manager = make_model_manager(arguments, metrics, health_reporter.models_changed)
        batcher = None
        if arguments.enable_batching:
            parameters = (read_batching_parameters_file(arguments.batching_parameters_file)
                          if arguments.batching_parameters_file else BatchingParameters())
            logger.info("Batching enabled: %s", parameters)
            batcher = BatchScheduler(parameters, metrics)
    except (ServingError, ValueError, OSError) as error:
        logger.error("Cannot start: %s", error)
        return 1

    inference = InferenceService(manager, batcher, max_batch_size=arguments.max_batch_size,
                                 tensor_content_responses=arguments.enable_serialization_as_tensor_content,
                                 method_name_check=arguments.enable_signature_method_name_check,
                                 max_response_bytes=arguments.max_message_bytes,
                                 piece_rows=arguments.max_rows_per_run)
    limiter = RequestLimiter(arguments.max_concurrent_requests)
    shutdown_gate = ShutdownGate()
    core_message_limit = grpc_core_message_limit(arguments.max_message_bytes)
    message_options = [("grpc.max_receive_message_length", core_message_limit),
                       ("grpc.max_send_message_length", core_message_limit),
                       # gRPC sets SO_REUSEPORT by default, which lets a second server
                       # bind a port in use and take half of its requests.
                       ("grpc.so_reuseport", 0)]
    # --grpc_channel_arguments come last and replace ours of the same name, as
    # TF Serving adds them to its ServerBuilder after its own.
    user_arguments = dict(arguments.grpc_channel_arguments)
    message_options = [option for option in message_options if option[0] not in user_arguments]
    message_options += list(user_arguments.items())
    # More threads than request slots (--grpc_max_threads > --max_concurrent_requests),
    # so a request past the limit finds a thread and is refused at once, and health
    # checks are answered under load. gRPC's own cap bounds the calls waiting for a
    # thread in a flood (its refusal does not name a flag; ours come first).
    grpc_server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=arguments.grpc_max_threads, thread_name_prefix="grpc"),
        interceptors=[AccessInterceptor(limiter, tokens, arguments.max_message_bytes, shutdown_gate)],
        options=message_options, maximum_concurrent_rpcs=4 * arguments.grpc_max_threads)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(inference, metrics), grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(manager, metrics, allowed_base_paths, reload_enabled=not arguments.disable_reload_config),
        grpc_server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    reflection.enable_server_reflection(
        _SERVICE_NAMES + (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        grpc_server)

    rest_server = None
    try:
        with _binding("gRPC", arguments.host, arguments.port, "--port"):
            address = f"{arguments.host}:{arguments.port}"
            grpc_port = (grpc_server.add_secure_port(address, grpc_server_credentials(ssl_config))
                         if ssl_config is not None else grpc_server.add_insecure_port(address))
            if not grpc_port:
                raise RuntimeError("add_port returned 0")
        if arguments.grpc_socket_path:
            socket_address = "unix:" + arguments.grpc_socket_path  # as TF Serving's server.cc
            try:
                bound = (grpc_server.add_secure_port(socket_address, grpc_server_credentials(ssl_config))
                         if ssl_config is not None else grpc_server.add_insecure_port(socket_address))
            except RuntimeError:
                bound = 0
            if not bound:
                raise PortError(f"cannot listen for gRPC on {socket_address} (--grpc_socket_path): its directory "
                                "must exist and be writable, and no other server may hold the socket. Choose "
                                "another --grpc_socket_path.")
        if arguments.monitoring_port:
            with _binding("metrics", arguments.host, arguments.monitoring_port, "--monitoring_port"):
                metrics.start_http_server(arguments.monitoring_port, arguments.host)
        if arguments.rest_api_port:
            rest_api = RestApi(inference, manager, metrics, arguments.rest_api_timeout_in_ms / 1000, tokens,
                               prometheus_path=prometheus.path if prometheus.enabled else None)
            with _binding("REST", arguments.host, arguments.rest_api_port, "--rest_api_port"):
                rest_server = RestServer(rest_api, arguments.host, arguments.rest_api_port, limiter,
                                         arguments.max_message_bytes, rest_ssl,
                                         num_threads=arguments.rest_api_num_threads,
                                         max_connections=arguments.rest_api_max_connections,
                                         shutdown_gate=shutdown_gate)
    except PortError as error:
        logger.error("Cannot start: %s", error)
        metrics.stop_http_server()
        if batcher is not None:
            batcher.close()
        return 1

    # Ports open before models load, so health checks see NOT_SERVING (not
    # "connection refused") while a slow model loads; requests meanwhile get
    # NOT_FOUND, as from TF Serving for a model still loading.
    grpc_server.start()
    logger.info("gRPC API (PredictionService, ModelService, health, reflection) at %s:%d%s", arguments.host,
                grpc_port, "" if ssl_config is None else
                " with TLS" + (", client certificates required" if ssl_config.client_verify else ""))
    if arguments.grpc_socket_path:
        logger.info("gRPC API also at unix:%s", arguments.grpc_socket_path)
    if rest_server is not None:
        rest_server.start()
    exit_code = 0
    try:
        manager.start()
    except ServingError as error:
        logger.error("Cannot load the models: %s", error.message)
        exit_code = 1
        stop_event.set()
    else:
        health_reporter.startup_done()
        logger.info("Serving models: %s", ", ".join(manager.model_names()) or "none yet")

    while not stop_event.wait(0.5):
        pass

    logger.info("Shutting down: refusing new requests, finishing those in flight (up to %.0f s)",
                arguments.shutdown_grace_seconds)
    health_reporter.shutting_down()
    # Calls the clients sent before the signal may still wait in gRPC core, which
    # cancels them when the server stops: answer them first (ShutdownGate).
    drained = shutdown_gate.wait_until_quiet(SHUTDOWN_QUIET_SECONDS, arguments.shutdown_drain_seconds)
    shutdown_gate.refuse()
    if batcher is not None:
        batcher.drain()  # queued requests run now, not after their batch timeout
    refused = shutdown_gate.wait_until_quiet(SHUTDOWN_QUIET_SECONDS, SHUTDOWN_REFUSING_SECONDS)
    logger.info("Stopping gRPC and REST after %.2f s still answering and %.2f s refusing new calls",
                drained, refused)
    grpc_stopped = grpc_server.stop(arguments.shutdown_grace_seconds)
    if rest_server is not None:
        rest_server.stop(arguments.shutdown_grace_seconds)
    grpc_stopped.wait(arguments.shutdown_grace_seconds + 1)
    if batcher is not None:
        batcher.close()
    manager.stop()
    metrics.stop_http_server()
    logger.info("Server stopped")
    return exit_code
