"""SIGTERM: stop accepting, finish what is in flight, exit 0."""

import signal
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving_helpers import LANGUAGE_MODEL_NAME, running_server, session_toy_models


def _request(token_ids):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = LANGUAGE_MODEL_NAME
    request.inputs["token_ids"].CopyFrom(tf.make_tensor_proto(token_ids))
    return request


def _wait_for_queued_requests(server, count, timeout_seconds=20.0):
    """Waits until the server's metrics show `count` requests in its batch queues."""
    deadline = time.monotonic() + timeout_seconds
    line = f"rnn_zoo_serving_batch_queued_requests {float(count)}"
    while line not in urllib.request.urlopen(server.monitoring_url, timeout=5).read().decode():
        assert time.monotonic() < deadline, f"the server never had {count} requests queued"
        time.sleep(0.05)


def test_sigterm_finishes_requests_in_flight(tmp_path_factory):
    models_root = session_toy_models(tmp_path_factory)
    directory = tmp_path_factory.mktemp("shutdown")
    # A long batch timeout keeps requests in flight (waiting in the batch queue)
    # until SIGTERM comes; shutting down runs what is queued at once.
    (directory / "batching.config").write_text("batch_timeout_micros { value: 20000000 }\nmax_batch_size { value: 64 }")
    arguments = ["--enable_batching", f"--batching_parameters_file={directory / 'batching.config'}"]
    with running_server(model_base_path=models_root / LANGUAGE_MODEL_NAME, model_name=LANGUAGE_MODEL_NAME,
                        rest=False, monitoring=True, log_dir=directory, extra_arguments=arguments) as server:
        with server.channel() as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            in_flight = [stub.Predict.future(_request(np.array([[2, 3 + index]], np.int64)), timeout=20)
                         for index in range(3)]
            _wait_for_queued_requests(server, 3)
            server.process.send_signal(signal.SIGTERM)
            for future in in_flight:
                response = future.result()
                assert response.outputs["logits"].tensor_shape.dim[1].size == 2
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(_request(np.array([[2]], np.int64)), timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert server.process.wait(timeout=30) == 0
    assert "Server stopped" in server.log_text()
