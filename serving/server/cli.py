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
import os
import signal
import sys
import threading

from training.quiet import quiet_tensorflow_logs

PROG = "rnn-zoo-serve"
DEFAULT_MODEL_BASE_DIR = "saved_models"

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
