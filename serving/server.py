"""The model server: TensorFlow Serving's gRPC and REST APIs for the zoo's SavedModels.

    python -m serving.server                                  # every model under ./saved_models
    python -m serving.server --model_name=lm --model_base_path=saved_models/lm
    python -m serving.server --model_config_file=models.config --rest_api_port=8501

Flags carry TF Serving's names where it has them, so scripts and clients move
between this server and `tensorflow_model_server` unchanged. The server is
stateless: a language model's recurrent state travels in the requests.
"""

import argparse
import concurrent.futures
import logging
import os
import pathlib
import signal
import sys
import threading

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import model_service_pb2, model_service_pb2_grpc, prediction_service_pb2, \
    prediction_service_pb2_grpc

from serving.batching import BatchingParameters, BatchScheduler, read_batching_parameters_file
from serving.errors import ServingError
from serving.metrics import ServingMetrics
from serving.model_manager import ModelManager, config_for_single_model
from serving.model_service import ModelServicer
from serving.prediction_service import InferenceService, PredictionServicer
from serving.rest import RestApi, RestServer

logger = logging.getLogger("serving.server")

DEFAULT_MODEL_BASE_DIR = "saved_models"
_SERVICE_NAMES = (
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
)


def build_argument_parser() -> argparse.ArgumentParser:
    """The command line, with TF Serving's flag names where they exist."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="Serve the zoo's SavedModels over TensorFlow Serving's gRPC API "
                    "(PredictionService, ModelService) and, optionally, its REST API. With no model "
                    "flags, every model directory under --model_base_dir is served, latest version each.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    network = parser.add_argument_group("network")
    network.add_argument("--port", type=int, default=8500, help="gRPC port (0 picks a free one).")
    network.add_argument("--host", default="0.0.0.0", help="Address to bind the gRPC, REST and metrics ports.")
    network.add_argument("--rest_api_port", type=int, default=0,
                         help="Port of TF Serving's REST API (/v1/models/...); 0 disables it.")
    network.add_argument("--rest_api_timeout_in_ms", type=int, default=30000, help="Deadline of a REST request.")
    network.add_argument("--monitoring_port", type=int, default=0,
                         help="Port serving Prometheus metrics at /metrics; 0 disables it.")
    network.add_argument("--grpc_max_threads", type=int, default=max(16, 4 * (os.cpu_count() or 1)),
                         help="Threads answering gRPC requests (requests waiting for a batch hold one).")
    network.add_argument("--max_message_bytes", type=int, default=256 * 1024 * 1024,
                         help="Largest gRPC request or response.")

    models = parser.add_argument_group("models")
    models.add_argument("--model_name", default="default", help="Name of the model given by --model_base_path.")
    models.add_argument("--model_base_path", help="Directory of one model's numbered version directories.")
    models.add_argument("--model_config_file",
                        help="ModelServerConfig in protobuf text format (models, version policies, labels).")
    models.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                        help="Re-read --model_config_file this often when it changed; 0 reads it once.")
    models.add_argument("--model_base_dir", default=DEFAULT_MODEL_BASE_DIR,
                        help="Without --model_base_path or --model_config_file: serve every model directory "
                             "here (relative to the working directory).")
    models.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="Look for new and removed versions this often; 0 looks once at start.")

    batching = parser.add_argument_group("batching")
    batching.add_argument("--enable_batching", action="store_true",
                          help="Merge concurrent requests of the same model version and signature.")
    batching.add_argument("--batching_parameters_file",
                          help="BatchingParameters in TF Serving's text format (max_batch_size, "
                               "batch_timeout_micros, max_enqueued_batches, num_batch_threads).")

    parser.add_argument("--shutdown_grace_seconds", type=float, default=10.0,
                        help="On SIGTERM/SIGINT, how long requests in flight may take to finish.")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="Logging level.")
    return parser


def check_arguments(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    """Rejects contradictory flags with a usage error (exit code 2)."""
    if arguments.model_base_path and arguments.model_config_file:
        parser.error("give --model_base_path or --model_config_file, not both")
    for flag in ("port", "rest_api_port", "monitoring_port"):
        if not 0 <= getattr(arguments, flag) <= 65535:
            parser.error(f"--{flag} must be a port number (0-65535)")
    if arguments.batching_parameters_file and not arguments.enable_batching:
        parser.error("--batching_parameters_file needs --enable_batching")
    if arguments.grpc_max_threads < 1:
        parser.error("--grpc_max_threads must be at least 1")


def make_model_manager(arguments: argparse.Namespace, metrics: ServingMetrics, on_availability_change) -> ModelManager:
    """Builds the ModelManager for the model flags (one model, a config file, or a directory)."""
    common = dict(poll_wait_seconds=arguments.file_system_poll_wait_seconds, metrics=metrics,
                  on_availability_change=on_availability_change)
    if arguments.model_base_path:
        config = config_for_single_model(arguments.model_name, pathlib.Path(arguments.model_base_path).absolute())
        return ModelManager(config=config, **common)
    if arguments.model_config_file:
        return ModelManager(config_file=arguments.model_config_file,
                            config_file_poll_wait_seconds=arguments.model_config_file_poll_wait_seconds, **common)
    return ModelManager(model_base_dir=pathlib.Path(arguments.model_base_dir).absolute(), **common)


class _HealthReporter:
    """Keeps grpc.health.v1 in line with the server: overall, per service and per model."""

    def __init__(self, servicer: health.HealthServicer):
        self._servicer = servicer
        self._ready = False
        self._lock = threading.Lock()
        for service in ("",) + _SERVICE_NAMES:
            servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    def models_changed(self, availability: dict[str, bool]) -> None:
        with self._lock:
            for name, available in availability.items():
                self._servicer.set(name, health_pb2.HealthCheckResponse.SERVING if available
                                   else health_pb2.HealthCheckResponse.NOT_SERVING)

    def ready(self) -> None:
        with self._lock:
            for service in ("",) + _SERVICE_NAMES:
                self._servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    def shutting_down(self) -> None:
        with self._lock:
            self._servicer.enter_graceful_shutdown()


def serve(arguments: argparse.Namespace, stop_event: threading.Event) -> int:
    """Runs the server until `stop_event` is set, then shuts down gracefully.

    Returns:
        The process exit code: 0 after a clean shutdown, 1 when startup fails.
    """
    metrics = ServingMetrics()
    health_servicer = health.HealthServicer()
    health_reporter = _HealthReporter(health_servicer)
    try:
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

    inference = InferenceService(manager, batcher)
    message_options = [("grpc.max_receive_message_length", arguments.max_message_bytes),
                       ("grpc.max_send_message_length", arguments.max_message_bytes)]
    grpc_server = grpc.server(concurrent.futures.ThreadPoolExecutor(
        max_workers=arguments.grpc_max_threads, thread_name_prefix="grpc"), options=message_options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(inference, metrics), grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager, metrics), grpc_server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    reflection.enable_server_reflection(
        _SERVICE_NAMES + (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        grpc_server)

    rest_server = None
    try:
        grpc_port = grpc_server.add_insecure_port(f"{arguments.host}:{arguments.port}")
        if not grpc_port:
            raise OSError(f"cannot bind gRPC port {arguments.host}:{arguments.port}")
        if arguments.monitoring_port:
            metrics.start_http_server(arguments.monitoring_port, arguments.host)
        if arguments.rest_api_port:
            rest_api = RestApi(inference, manager, metrics, arguments.rest_api_timeout_in_ms / 1000)
            rest_server = RestServer(rest_api, arguments.host, arguments.rest_api_port)
    except (OSError, RuntimeError) as error:
        logger.error("Cannot start: %s", error)
        metrics.stop_http_server()
        if batcher is not None:
            batcher.close()
        return 1

    # Ports open before models load, so health checks see NOT_SERVING (not
    # "connection refused") while a slow model loads; requests meanwhile get
    # NOT_FOUND, as from TF Serving for a model still loading.
    grpc_server.start()
    logger.info("gRPC API (PredictionService, ModelService, health, reflection) at %s:%d", arguments.host, grpc_port)
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
        health_reporter.ready()
        logger.info("Serving models: %s", ", ".join(manager.model_names()) or "none yet")

    while not stop_event.wait(0.5):
        pass

    logger.info("Shutting down: refusing new requests, finishing those in flight (up to %.0f s)",
                arguments.shutdown_grace_seconds)
    health_reporter.shutting_down()
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


def main(argv: list[str] | None = None) -> int:
    """Parses flags, installs SIGTERM/SIGINT handlers and runs the server."""
    parser = build_argument_parser()
    arguments = parser.parse_args(argv)
    check_arguments(parser, arguments)
    logging.basicConfig(level=arguments.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop_event = threading.Event()

    def request_stop(signal_number, _frame):
        logger.info("Received %s", signal.Signals(signal_number).name)
        stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return serve(arguments, stop_event)


if __name__ == "__main__":
    sys.exit(main())
