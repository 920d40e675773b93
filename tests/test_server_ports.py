"""A port that is taken stops the server at once, naming the port: gRPC, REST and metrics alike.

gRPC sets SO_REUSEPORT by default, so a second server on :8500 used to start
without an error and answer half the requests with NOT_FOUND from its empty
model list. The port here is held the way a first gRPC server holds it (with
SO_REUSEPORT), so the test fails on the old behaviour.
"""

import socket
import subprocess
import sys

import pytest

from serving_helpers import LANGUAGE_MODEL_NAME, session_toy_models


def _listening_socket(reuse_port: bool) -> socket.socket:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuse_port:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.mark.parametrize("flag, what", [("--port", "gRPC"), ("--rest_api_port", "REST"),
                                        ("--monitoring_port", "metrics")])
def test_a_port_in_use_stops_the_server_with_a_message(flag, what, tmp_path_factory):
    models = session_toy_models(tmp_path_factory) / LANGUAGE_MODEL_NAME
    holder = _listening_socket(reuse_port=True)
    port = holder.getsockname()[1]
    arguments = {"--port": "0", "--rest_api_port": "0", "--monitoring_port": "0", flag: str(port)}
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "serving.server.cli", "--host=127.0.0.1", f"--model_name={LANGUAGE_MODEL_NAME}",
             f"--model_base_path={models}", *(f"{key}={value}" for key, value in arguments.items())],
            capture_output=True, text=True, timeout=120)
    finally:
        holder.close()
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert f"cannot listen for {what} on 127.0.0.1:{port} ({flag}): it is in use" in completed.stderr
    assert "Traceback" not in completed.stderr
