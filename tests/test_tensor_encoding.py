"""The fast encodings of tensors: packed typed fields and TensorFlow's string lists, against the slow forms."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.protocol import tensors
from serving.protocol.errors import ServingError


def _slow_typed_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """The typed field filled one Python value at a time (what the fast path replaces)."""
    proto = tensor_pb2.TensorProto(dtype=tensors.data_type_of(array))
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    field = {np.float32: "float_val", np.float64: "double_val", np.complex64: "scomplex_val",
             np.complex128: "dcomplex_val", np.bool_: "bool_val"}[array.dtype.type]
    flat = array.ravel()
    if array.dtype.kind == "c":
        flat = np.stack([flat.real, flat.imag], axis=1).ravel()
    getattr(proto, field).extend(flat.tolist())
    return proto


@pytest.mark.parametrize("array", [
    np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32),
    np.array([[1e-38, -0.0, np.float32(3.4e38)]], np.float32),
    np.random.default_rng(1).normal(size=(2, 2)).astype(np.float64),
    (np.arange(4) + 1j * np.arange(4)[::-1]).astype(np.complex64).reshape(2, 2),
    (np.arange(3) - 2j).astype(np.complex128),
    np.array([[True, False, True]]),
    np.zeros((0, 7), np.float32),
    np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
])
def test_packed_typed_fields_are_the_typed_fields(array):
    fast = tensors.numpy_to_tensor_proto(array)
    assert not fast.tensor_content
    assert fast == _slow_typed_proto(array)
    assert fast.SerializeToString() == _slow_typed_proto(array).SerializeToString()
    np.testing.assert_array_equal(tf.make_ndarray(fast), array)
    np.testing.assert_array_equal(tensors.tensor_proto_to_numpy(fast), array)


def test_fill_tensor_proto_fills_a_response_in_place_as_numpy_to_tensor_proto_builds_one():
    from tensorflow_serving.apis import predict_pb2

    logits = np.random.default_rng(2).normal(size=(4, 10)).astype(np.float32)
    for use_tensor_content in (False, True):
        response = predict_pb2.PredictResponse()
        tensors.fill_tensor_proto(response.outputs["logits"], logits, use_tensor_content)
        assert response.outputs["logits"] == tensors.numpy_to_tensor_proto(logits, use_tensor_content)
        assert bool(response.outputs["logits"].tensor_content) == use_tensor_content


def _encoded_string_tensor(strings: list[bytes], shape) -> tensor_pb2.TensorProto:
    """A string tensor as TensorFlow writes it with tensor_content (every varint length, then the bytes)."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_content = b"".join(tensors._varint(len(item)) for item in strings) + b"".join(strings)
    return proto


def test_clients_read_string_tensors_in_tensor_content_as_tf_serving_writes_them():
    strings = [b"positive", b"", "caf\u00e9".encode(), b"x" * 300]  # 300 needs a two-byte length
    proto = _encoded_string_tensor(strings, [2, 2])
    decoded = tensors.outputs_to_numpy({"label": proto})["label"]
    assert decoded.shape == (2, 2) and decoded.ravel().tolist() == strings


@pytest.mark.parametrize("content, reason", [
    (b"\x05ab", "lengths add up to 5"),
    (b"\x80", "cut off"),
    (b"\x01", "cannot hold 2 strings"),
])
def test_a_bad_encoded_string_list_is_an_error_naming_it(content, reason):
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=content)
    proto.tensor_shape.dim.add(size=2 if reason.startswith("cannot") else 1)
    with pytest.raises(ServingError, match=reason):
        tensors.tensor_proto_to_numpy(proto, "label", encoded_strings=True)


def test_the_server_still_refuses_string_tensor_content_in_requests():
    proto = _encoded_string_tensor([b"a"], [1])
    with pytest.raises(ServingError, match="string tensors cannot use tensor_content"):
        tensors.tensor_proto_to_numpy(proto, "sentences")


def test_request_inputs_can_be_views_of_the_message():
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    proto = tensors.numpy_to_tensor_proto(array, use_tensor_content=True)
    view = tensors.tensor_proto_to_numpy(proto, copy=False)
    np.testing.assert_array_equal(view, array)
    assert not view.flags.writeable
    assert tensors.tensor_proto_to_numpy(proto).flags.writeable
