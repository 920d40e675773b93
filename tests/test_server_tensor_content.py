"""`--enable_serialization_as_tensor_content`: numeric Predict outputs as bytes, the same values as without it.

Two real servers on the toy models, one with the flag (as the demo and the
generation benchmark start theirs) and one without (TF Serving's default,
typed `*_val` fields); the same requests must give the same arrays, and the
generation client must work against both.
"""

import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.generation import GrpcBackend, generate
from serving.protocol import tensors
from serving_helpers import LANGUAGE_MODEL_NAME, TAGGER_NAME, TOY_STATE_SIZE, running_server, session_toy_models


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    models_root = session_toy_models(tmp_path_factory)
    log_dir = tmp_path_factory.mktemp("tensor-content-logs")
    with running_server(model_base_dir=models_root, rest=False, monitoring=False, log_dir=log_dir,
                        tensor_content_responses=True) as fast, \
            running_server(model_base_dir=models_root, rest=False, monitoring=False, log_dir=log_dir) as typed:
        yield {"tensor_content": fast, "typed": typed}


def _predict(server, model, signature, **inputs) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tensors.numpy_to_tensor_proto(value, use_tensor_content=True))
    with server.channel() as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)


def test_numeric_outputs_come_as_tensor_content_only_with_the_flag(servers):
    inputs = dict(token_ids=np.array([[2, 3, 0], [4, 0, 0]], np.int64),
                  state=np.random.default_rng(0).normal(size=(2, TOY_STATE_SIZE)).astype(np.float32))
    fast = _predict(servers["tensor_content"], LANGUAGE_MODEL_NAME, "step", **inputs)
    typed = _predict(servers["typed"], LANGUAGE_MODEL_NAME, "step", **inputs)
    assert set(fast.outputs) == set(typed.outputs) == {"logits", "state"}
    for alias in fast.outputs:
        assert fast.outputs[alias].tensor_content and not fast.outputs[alias].float_val
        assert typed.outputs[alias].float_val and not typed.outputs[alias].tensor_content
        assert fast.outputs[alias].tensor_shape == typed.outputs[alias].tensor_shape
    fast_arrays, typed_arrays = tensors.outputs_to_numpy(fast.outputs), tensors.outputs_to_numpy(typed.outputs)
    for alias in fast_arrays:
        np.testing.assert_array_equal(fast_arrays[alias], typed_arrays[alias])
        assert fast_arrays[alias].dtype == np.float32 and fast_arrays[alias].flags.writeable


def test_string_outputs_stay_in_string_val(servers):
    fast = _predict(servers["tensor_content"], TAGGER_NAME, "serving_default",
                    sentences=np.array([b"the cat sat"], object))
    typed = _predict(servers["typed"], TAGGER_NAME, "serving_default", sentences=np.array([b"the cat sat"], object))
    assert fast.outputs["tags"].string_val and not fast.outputs["tags"].tensor_content
    assert fast.outputs["lengths"].tensor_content  # int64: bytes
    assert list(fast.outputs["tags"].string_val) == list(typed.outputs["tags"].string_val)
    np.testing.assert_array_equal(tensors.outputs_to_numpy(fast.outputs)["lengths"],
                                  tensors.outputs_to_numpy(typed.outputs)["lengths"])


def test_generation_over_both_servers_gives_the_same_text(servers):
    results = {}
    for kind, server in servers.items():
        with GrpcBackend(server.grpc_target, LANGUAGE_MODEL_NAME) as backend:
            results[kind] = generate(backend, ["the cat", "a dog sat"], max_new_tokens=6, do_sample=False,
                                     stop_at_end_token=False, return_logprobs=True)
    assert results["tensor_content"].token_ids == results["typed"].token_ids
    assert results["tensor_content"].logprobs == results["typed"].logprobs
