"""`rnn-zoo-serve`: the model server's command line.

    rnn-zoo-serve                                   # every model under ./saved_models
    rnn-zoo-serve --model_name=lm --model_base_path=saved_models/lm
    rnn-zoo-serve --model_config_file=models.config --rest_api_port=8501

Flags carry TF Serving's names where it has them, so scripts and clients move
between this server and `tensorflow_model_server` unchanged. The flags are
parsed and checked before the server's modules (gRPC, TensorFlow) are
imported, so `--help` and flag errors answer at once.
"""

import argparse
import logging
import signal
import sys
import threading

from training.quiet import quiet_tensorflow_logs

PROG = "rnn-zoo-serve"
DEFAULT_MODEL_BASE_DIR = "saved_models"
DEFAULT_MAX_BATCH_SIZE = 1024
DEFAULT_MAX_CONCURRENT_REQUESTS = 64
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_REST_API_NUM_THREADS = 16
DEFAULT_REST_API_MAX_CONNECTIONS = 256
_SPARE_GRPC_THREADS = 8

logger = logging.getLogger("serving.server")


def build_parser() -> argparse.ArgumentParser:
    """The command line, with TF Serving's flag names where they exist."""
    parser = argparse.ArgumentParser(
        prog=PROG,
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
    network.add_argument("--rest_api_num_threads", type=int, default=DEFAULT_REST_API_NUM_THREADS,
                         help="Threads answering REST connections (each serves one request at a time); "
                              "more connections wait, up to --rest_api_max_connections.")
    network.add_argument("--rest_api_max_connections", type=int, default=DEFAULT_REST_API_MAX_CONNECTIONS,
                         help="REST connections waiting for a thread, and idle keep-alive connections held "
                              "open, each at most this; past it a new connection gets HTTP 503 and an "
                              "answered one is closed instead of kept alive.")
    network.add_argument("--monitoring_port", type=int, default=0,
                         help="Port serving Prometheus metrics at /metrics; 0 disables it.")
    network.add_argument("--monitoring_config_file",
                         help="A tensorflow.serving.MonitoringConfig text proto, as TF Serving's: "
                              "prometheus_config { enable: true path: \"/monitoring/prometheus/metrics\" } "
                              "serves the metrics at that path of the REST port (needs --rest_api_port); "
                              "enable: false stops it. Without the file they are served at "
                              "/monitoring/prometheus/metrics of the REST port.")
    network.add_argument("--grpc_socket_path", default="",
                         help="Also serve the gRPC API on this UNIX socket (relative or absolute path), "
                              "as TF Serving's flag; clients connect to unix:<path>.")
    network.add_argument("--grpc_channel_arguments", default="",
                         help="Comma-separated key=value gRPC server arguments, as TF Serving's flag (e.g. "
                              "grpc.max_connection_age_ms=2000); a value that is a 32-bit integer is passed as "
                              "one, any other as a string.")
    network.add_argument("--grpc_max_threads", type=int,
                         help="Threads answering gRPC requests (requests waiting for a batch hold one); must be "
                              "more than --max_concurrent_requests, so that health checks and refusals always "
                              "find a thread. Default: --max_concurrent_requests + 8.")

    limits = parser.add_argument_group("limits (each refusal names its flag)")
    limits.add_argument("--max_batch_size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                        help="Most rows one request may carry (axis 0 of its inputs, examples of a Classify, "
                             "the batch_size of initial_state); more is INVALID_ARGUMENT (HTTP 400). Not the "
                             "batching file's max_batch_size, which caps merged batches.")
    limits.add_argument("--max_rows_per_run", type=int, default=256,
                        help="A request of more rows runs in pieces of this many (or the batching file's "
                             "max_batch_size, if larger); between pieces the server checks the deadline, the "
                             "client and the response size, so a client that leaves stops the work. 0 runs "
                             "every request in one call.")
    limits.add_argument("--max_concurrent_requests", type=int, default=DEFAULT_MAX_CONCURRENT_REQUESTS,
                        help="Requests running or waiting for a batch at once, gRPC and REST together; past it "
                             "RESOURCE_EXHAUSTED (HTTP 429) at once. Health checks and reflection do not count.")
    limits.add_argument("--max_message_bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                        help="Largest request or response, gRPC message or REST body; past it "
                             "RESOURCE_EXHAUSTED (HTTP 413 for a REST body).")

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

    models.add_argument("--saved_model_tags", default="serve",
                        help="Comma-separated tag set of the MetaGraph to load from each SavedModel, as TF "
                             "Serving's flag.")
    models.add_argument("--enable_model_warmup", type=_boolean, nargs="?", const=True, default=True,
                        help="Before a version serves, replay the requests in its "
                             "assets.extra/tf_serving_warmup_requests (TFRecord of PredictionLog, at most 1000), "
                             "as TF Serving does; a failing record fails the load. =false turns it off.")
    models.add_argument("--num_request_iterations_for_warmup", type=int, default=0,
                        help="Runs of each warm-up record; used only if > 0 (otherwise 1).")
    models.add_argument("--enable_signature_method_name_check", type=_boolean, nargs="?", const=True,
                        default=False,
                        help="Refuse signatures whose method_name does not fit the API (Classify needs "
                             "tensorflow/serving/classify, Regress tensorflow/serving/regress), as TF Serving's "
                             "flag; off by default, so native TF2 classify/regress signatures serve.")
    models.add_argument("--allowed_model_base_paths",
                        help="Comma-separated directories HandleReloadConfigRequest may load models from (each "
                             "with everything under it); other paths are PERMISSION_DENIED. Default: "
                             "--model_base_dir, or the base paths of the models configured at start.")
    models.add_argument("--disable_reload_config", action="store_true",
                        help="Answer every HandleReloadConfigRequest with PERMISSION_DENIED.")

    security = parser.add_argument_group("security")
    security.add_argument("--ssl_config_file",
                          help="TLS for gRPC and REST: a tensorflow.serving.SSLConfig text proto, as TF "
                               "Serving's (server_key, server_cert, custom_ca: PEM text; client_verify: true "
                               "asks every client for a certificate signed by custom_ca).")
    security.add_argument("--auth_token_file",
                          help="Require 'authorization: Bearer <token>' (gRPC metadata, HTTP header) with one of "
                               "the tokens in this file, one per line; none is UNAUTHENTICATED (401), another "
                               "PERMISSION_DENIED (403).")
    security.add_argument("--health_checks_without_token", action="store_true",
                          help="With --auth_token_file: let gRPC health checks and REST model status "
                               "(GET /v1/models/<model>) through without a token.")

    batching = parser.add_argument_group("batching")
    batching.add_argument("--enable_batching", action="store_true",
                          help="Merge concurrent requests of the same model version and signature.")
    batching.add_argument("--batching_parameters_file",
                          help="BatchingParameters in TF Serving's text format (max_batch_size, "
                               "batch_timeout_micros, max_enqueued_batches, num_batch_threads).")

    responses = parser.add_argument_group("responses")
    responses.add_argument("--enable_serialization_as_tensor_content", action="store_true",
                           help="Write the numeric tensors of Predict responses as tensor_content bytes "
                                "(compact, no per-value encoding) instead of the typed *_val fields, as TF "
                                "Serving's flag of this name does. Clients must read tensor_content "
                                "(tf.make_ndarray and this project's client do). String tensors stay in "
                                "string_val.")

    parser.add_argument("--shutdown_drain_seconds", type=float, default=1.0,
                        help="On SIGTERM/SIGINT, how long at most to keep answering calls (health saying "
                             "NOT_SERVING) until none has arrived for 50 ms, so calls clients sent before the "
                             "signal are run rather than cancelled; new calls then get UNAVAILABLE.")
    parser.add_argument("--shutdown_grace_seconds", type=float, default=10.0,
                        help="On SIGTERM/SIGINT, how long requests in flight may take to finish.")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="Logging level.")
    return parser


def _boolean(text: str) -> bool:
    """A TF Serving style boolean flag value: true/false (also 1/0, yes/no)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_grpc_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """Reads `--grpc_channel_arguments` as TF Serving does (model_servers/server.cc).

    `key=value` pairs separated by commas; a value that parses as a 32-bit
    integer is passed to gRPC as an integer, any other as a string.

    Raises:
        ValueError: An entry that is not `key=value`.
    """
    arguments = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        key, equals, value = entry.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"{entry!r} is not key=value (e.g. grpc.max_connection_age_ms=2000)")
        key, value = key.strip(), value.strip()
        try:
            number = int(value)
        except ValueError:
            arguments.append((key, value))
            continue
        arguments.append((key, number) if -2**31 <= number < 2**31 else (key, value))
    return arguments


def check_arguments(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    """Rejects contradictory flags with a usage error (exit code 2)."""
    if isinstance(arguments.grpc_channel_arguments, str):
        try:
            arguments.grpc_channel_arguments = parse_grpc_channel_arguments(arguments.grpc_channel_arguments)
        except ValueError as error:
            parser.error(f"--grpc_channel_arguments: {error}")
    if isinstance(arguments.saved_model_tags, str):
        arguments.saved_model_tags = [tag.strip() for tag in arguments.saved_model_tags.split(",") if tag.strip()]
    if not arguments.saved_model_tags:
        parser.error("--saved_model_tags must name at least one tag (TF Serving's default: serve)")
    if arguments.monitoring_config_file and not arguments.rest_api_port:
        parser.error("--monitoring_config_file configures the metrics of the REST port: give --rest_api_port too")
    if arguments.model_base_path and arguments.model_config_file:
        parser.error("give --model_base_path or --model_config_file, not both")
    for flag in ("port", "rest_api_port", "monitoring_port"):
        if not 0 <= getattr(arguments, flag) <= 65535:
            parser.error(f"--{flag} must be a port number (0-65535)")
    if arguments.health_checks_without_token and not arguments.auth_token_file:
        parser.error("--health_checks_without_token needs --auth_token_file")
    if arguments.batching_parameters_file and not arguments.enable_batching:
        parser.error("--batching_parameters_file needs --enable_batching")
    for flag in ("max_batch_size", "max_concurrent_requests", "max_message_bytes", "rest_api_num_threads",
                 "rest_api_max_connections"):
        if getattr(arguments, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    for flag in ("shutdown_drain_seconds", "shutdown_grace_seconds", "max_rows_per_run"):
        if getattr(arguments, flag) < 0:
            parser.error(f"--{flag} must be 0 or more")
    if arguments.max_message_bytes >= 2**31:
        parser.error("--max_message_bytes must be below 2 GiB (gRPC's limit)")
    if arguments.grpc_max_threads is None:
        arguments.grpc_max_threads = arguments.max_concurrent_requests + _SPARE_GRPC_THREADS
    elif arguments.grpc_max_threads <= arguments.max_concurrent_requests:
        parser.error(f"--grpc_max_threads ({arguments.grpc_max_threads}) must be more than "
                     f"--max_concurrent_requests ({arguments.max_concurrent_requests})")


def main(argv: list[str] | None = None) -> int:
    """Parses flags, installs SIGTERM/SIGINT handlers and runs the server."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    check_arguments(parser, arguments)
    logging.basicConfig(level=arguments.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_tensorflow_logs()
    from serving.server.app import serve  # imports gRPC, TensorFlow and the TF Serving protos

    stop_event = threading.Event()

    def request_stop(signal_number, _frame):
        logger.info("Received %s", signal.Signals(signal_number).name)
        stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return serve(arguments, stop_event)


if __name__ == "__main__":
    sys.exit(main())
