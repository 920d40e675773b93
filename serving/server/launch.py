"""Start the model server as a real process, the way users start it.

Used by the demo (`make demo`), the notebook and the tests: `running_server()`
starts the server's command (`python -m serving.server.cli`, what
`rnn-zoo-serve` runs) on free local ports, waits until the gRPC health
service says SERVING, and stops it with SIGTERM on exit.

    from serving.server import running_server
    with running_server(model_base_dir="saved_models") as server:
        client = ServingClient(server.grpc_target)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

from serving.client.connection import ConnectionSecurity, open_channel

logger = logging.getLogger(__name__)

_SERVER_MODULE = "serving.server.cli"


def free_port() -> int:
    """Returns a TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass
class ServerProcess:
    """A model server started as `python -m serving.server.cli`, with its ports.

    Attributes:
        process: The subprocess.
        grpc_port: gRPC port (PredictionService, ModelService, health, reflection).
        rest_port: REST port, or None when not enabled.
        monitoring_port: Prometheus port, or None when not enabled.
        log_path: File receiving the server's stdout and stderr.
    """

    process: subprocess.Popen
    grpc_port: int
    rest_port: int | None
    monitoring_port: int | None
    log_path: pathlib.Path
    security: ConnectionSecurity | None = None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        scheme = "https" if self.security is not None and self.security.uses_tls else "http"
        return f"{scheme}://127.0.0.1:{self.rest_port}"

    @property
    def monitoring_url(self) -> str:
        return f"http://127.0.0.1:{self.monitoring_port}/metrics"

    def channel(self):
        """Opens a new channel to the server, with TLS when it serves TLS (the caller closes it).

        The bearer token is not part of a channel: pass `security.metadata()`
        with each call.
        """
        return open_channel(self.grpc_target, self.security)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_health(target: str, service: str = "", timeout_seconds: float = 60.0,
                    process: subprocess.Popen | None = None, security: ConnectionSecurity | None = None) -> None:
    """Blocks until the gRPC health service reports SERVING for `service`.

    `security` gives the TLS files and token of a server that needs them.

    Raises:
        TimeoutError: The server did not become healthy in time.
        RuntimeError: The server process exited first.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_seconds
    # While the server imports TensorFlow its port is closed, and gRPC's default
    # reconnect backoff would grow to seconds; poll at a steady short interval.
    options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
               ("grpc.max_reconnect_backoff_ms", 200)]
    metadata = security.metadata() if security is not None else ()
    with open_channel(target, security, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited with code {process.returncode} before it was healthy")
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0,
                                      metadata=metadata)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"server at {target} not SERVING after {timeout_seconds} s")


def stop_server(server: ServerProcess, timeout_seconds: float = 30.0) -> int:
    """Sends SIGTERM and waits for a graceful exit; kills the process if it hangs."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            logger.error("server did not stop in %s s; killing it", timeout_seconds)
            server.process.kill()
            server.process.wait(timeout=timeout_seconds)
    return server.process.returncode


@contextlib.contextmanager
def running_server(*, model_base_dir: os.PathLike | None = None,
                   model_name: str | None = None,
                   model_base_path: os.PathLike | None = None,
                   model_config_file: os.PathLike | None = None,
                   poll_wait_seconds: float = 1.0,
                   rest: bool = True,
                   monitoring: bool = True,
                   extra_arguments: Sequence[str] = (),
                   log_dir: os.PathLike | None = None,
                   cwd: os.PathLike | None = None,
                   startup_timeout_seconds: float = 90.0,
                   security: ConnectionSecurity | None = None,
                   tensor_content_responses: bool = False) -> Iterator[ServerProcess]:
    """Starts the model server as a real subprocess on free ports, healthy on entry.

    At most one model source may be given (none serves `saved_models/` of
    `cwd`). On exit the server gets SIGTERM and must stop with exit code 0, so
    every test using this also checks the graceful shutdown.

    Args:
        model_base_dir: Serve every model directory under this directory.
        model_name: Name for `model_base_path`.
        model_base_path: One model's base path (with `model_name`).
        model_config_file: A ModelServerConfig text proto.
        poll_wait_seconds: `--file_system_poll_wait_seconds`.
        rest: Enable the REST port.
        monitoring: Enable the Prometheus port.
        extra_arguments: More command-line flags.
        log_dir: Where the server log goes (a temporary directory if None).
        cwd: Working directory of the server (default: the current one).
        startup_timeout_seconds: How long to wait for health SERVING.
        security: How clients reach a server started with `--ssl_config_file`
            or `--auth_token_file` (in `extra_arguments`); used for the health
            checks and kept on the ServerProcess.
        tensor_content_responses: Start it with
            `--enable_serialization_as_tensor_content`: numeric outputs come
            back as bytes, not typed values (the demo and the generation
            benchmark do, for speed; off by default, as in TF Serving).

    Yields:
        The running `ServerProcess`.
    """
    if sum(source is not None for source in (model_base_dir, model_base_path, model_config_file)) > 1:
        raise ValueError("give at most one of model_base_dir, model_base_path and model_config_file")
    grpc_port = free_port()
    rest_port = free_port() if rest else None
    monitoring_port = free_port() if monitoring else None
    command = [sys.executable, "-m", _SERVER_MODULE, f"--port={grpc_port}",
               f"--file_system_poll_wait_seconds={poll_wait_seconds}", "--host=127.0.0.1"]
    if rest_port:
        command.append(f"--rest_api_port={rest_port}")
    if monitoring_port:
        command.append(f"--monitoring_port={monitoring_port}")
    if model_base_dir is not None:
        command.append(f"--model_base_dir={model_base_dir}")
    if model_base_path is not None:
        command += [f"--model_name={model_name}", f"--model_base_path={model_base_path}"]
    if model_config_file is not None:
        command.append(f"--model_config_file={model_config_file}")
    if tensor_content_responses:
        command.append("--enable_serialization_as_tensor_content")
    command += list(extra_arguments)

    log_directory = pathlib.Path(log_dir or tempfile.mkdtemp(prefix="serving-log-"))
    log_path = log_directory / f"server-{grpc_port}.log"
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   cwd=cwd or os.getcwd(), env=environment)
    server = ServerProcess(process, grpc_port, rest_port, monitoring_port, log_path, security)
    try:
        wait_for_health(server.grpc_target, timeout_seconds=startup_timeout_seconds, process=process,
                        security=security)
        yield server
    except BaseException:
        stop_server(server)
        logger.error("server log:\n%s", server.log_text())
        raise
    exit_code = stop_server(server)
    if exit_code != 0:
        raise RuntimeError(f"server did not shut down cleanly (exit code {exit_code}); log:\n{server.log_text()}")
