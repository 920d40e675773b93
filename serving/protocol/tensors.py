"""TensorProto <-> numpy, JSON <-> numpy, and input checks against a signature.

The server and the client both use these functions, so what one writes the
other reads. Conversion is strict: a request that does not describe a
well-formed tensor is answered INVALID_ARGUMENT with the reason, never with a
crash or an allocation the server cannot afford.
"""

import base64
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving.protocol.errors import invalid_argument

# A TensorProto may carry fewer values than its shape holds (TensorFlow repeats
# the last one). This caps how far a small request can expand in memory.
MAX_EXPANDED_ELEMENTS = 1 << 24


@dataclasses.dataclass(frozen=True)
class _DataTypeSpec:
    numpy_dtype: np.dtype
    field: str  # TensorProto's typed value field
    pad_value: Any  # the contract's padding value, or None where padding is not defined


_SPECS = {
    types_pb2.DT_FLOAT: _DataTypeSpec(np.dtype(np.float32), "float_val", None),
    types_pb2.DT_DOUBLE: _DataTypeSpec(np.dtype(np.float64), "double_val", None),
    types_pb2.DT_HALF: _DataTypeSpec(np.dtype(np.float16), "half_val", None),
    types_pb2.DT_INT8: _DataTypeSpec(np.dtype(np.int8), "int_val", 0),
    types_pb2.DT_INT16: _DataTypeSpec(np.dtype(np.int16), "int_val", 0),
    types_pb2.DT_INT32: _DataTypeSpec(np.dtype(np.int32), "int_val", 0),
    types_pb2.DT_INT64: _DataTypeSpec(np.dtype(np.int64), "int64_val", 0),
    types_pb2.DT_UINT8: _DataTypeSpec(np.dtype(np.uint8), "int_val", 0),
    types_pb2.DT_UINT16: _DataTypeSpec(np.dtype(np.uint16), "int_val", 0),
    types_pb2.DT_UINT32: _DataTypeSpec(np.dtype(np.uint32), "uint32_val", 0),
    types_pb2.DT_UINT64: _DataTypeSpec(np.dtype(np.uint64), "uint64_val", 0),
    types_pb2.DT_BOOL: _DataTypeSpec(np.dtype(np.bool_), "bool_val", None),
    types_pb2.DT_STRING: _DataTypeSpec(np.dtype(object), "string_val", b""),
    types_pb2.DT_COMPLEX64: _DataTypeSpec(np.dtype(np.complex64), "scomplex_val", None),
    types_pb2.DT_COMPLEX128: _DataTypeSpec(np.dtype(np.complex128), "dcomplex_val", None),
}
_DATA_TYPE_BY_NUMPY = {spec.numpy_dtype: data_type for data_type, spec in _SPECS.items()
                       if data_type != types_pb2.DT_STRING}


# Typed fields whose packed wire form is the values' raw little-endian bytes:
# DataType -> (TensorProto field number, numpy dtype of one wire value).
# Complex values travel as (real, imaginary) pairs, which is how numpy lays
# them out; a bool is one byte, 0 or 1, which is also its varint.
_PACKED_FIXED_WIDTH = {
    types_pb2.DT_FLOAT: (5, np.dtype("<f4")),
    types_pb2.DT_DOUBLE: (6, np.dtype("<f8")),
    types_pb2.DT_COMPLEX64: (9, np.dtype("<f4")),
    types_pb2.DT_COMPLEX128: (12, np.dtype("<f8")),
    types_pb2.DT_BOOL: (11, np.dtype("u1")),
}
_LENGTH_DELIMITED = 2  # protobuf wire type of packed repeated fields


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def data_type_name(data_type: int) -> str:
    """Returns `DT_INT64` and the like; the number itself for unknown values."""
    try:
        return types_pb2.DataType.Name(data_type)
    except ValueError:
        return str(data_type)


def numpy_dtype(data_type: int) -> np.dtype:
    """Returns the numpy dtype that holds a TensorFlow DataType (object for strings).

    Raises:
        ServingError: INVALID_ARGUMENT for a DataType this server does not handle.
    """
    spec = _SPECS.get(data_type)
    if spec is None:
        raise invalid_argument(f"unsupported tensor dtype {data_type_name(data_type)}")
    return spec.numpy_dtype


def pad_value(data_type: int) -> Any:
    """The contract's padding value for a DataType: 0 for integers, b"" for strings, else None."""
    spec = _SPECS.get(data_type)
    return None if spec is None else spec.pad_value


def data_type_of(array: np.ndarray) -> int:
    """Returns the DataType for a numpy array (object/bytes/str arrays are DT_STRING)."""
    if array.dtype.kind in "OSU":
        return types_pb2.DT_STRING
    data_type = _DATA_TYPE_BY_NUMPY.get(array.dtype)
    if data_type is None:
        raise ValueError(f"numpy dtype {array.dtype} has no TensorFlow Serving equivalent")
    return data_type


def shape_string(dims) -> str:
    """Formats a shape as TensorFlow does, unknown sizes as `?`: `[?,3]`."""
    return "[" + ",".join("?" if size < 0 else str(size) for size in dims) + "]"


# === TensorProto -> numpy ===


def tensor_proto_to_numpy(proto: tensor_pb2.TensorProto, alias: str = "", *, copy: bool = True,
                          encoded_strings: bool = False) -> np.ndarray:
    """Decodes a TensorProto from a request, checking that it is self-consistent.

    Follows TensorFlow's rules: `tensor_content` wins when set and must hold
    exactly the shape's bytes; otherwise the typed field is read, and fewer
    values than the shape holds are completed with the last value (zeros when
    there is none). Both are read by numpy in one pass (`np.frombuffer` on
    the bytes, `np.array` on the repeated field), never value by value.

    Args:
        proto: The tensor as received.
        alias: The input name, used in error messages.
        copy: Copy `tensor_content` out of the message. Without the copy the
            array is a read-only view of the message's bytes: what the server
            uses, as TensorFlow copies its inputs anyway.
        encoded_strings: Accept a string tensor in `tensor_content`, encoded
            as TensorFlow's `EncodeStringList` writes it (TF Serving's
            `--enable_serialization_as_tensor_content` responses); clients
            pass True, the server refuses such requests as before.

    Returns:
        A numpy array; strings are an object array of bytes.

    Raises:
        ServingError: INVALID_ARGUMENT naming the input and the problem.
    """
    def fail(reason: str):
        return invalid_argument(f"tensor parsing error: {alias} ({reason})")

    spec = _SPECS.get(proto.dtype)
    if spec is None:
        raise fail(f"unsupported dtype {data_type_name(proto.dtype)}")
    if proto.tensor_shape.unknown_rank:
        raise fail("the shape has unknown rank")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise fail(f"negative dimension in shape {shape}")
    num_elements = math.prod(shape)

    if proto.tensor_content:
        content = proto.tensor_content
        if proto.dtype == types_pb2.DT_STRING:
            if not encoded_strings:
                raise fail("string tensors cannot use tensor_content")
            try:
                return decode_string_list(content, num_elements).reshape(shape)
            except ValueError as error:
                raise fail(str(error)) from None
        expected_bytes = num_elements * spec.numpy_dtype.itemsize
        if len(content) != expected_bytes:
            raise fail(f"tensor_content has {len(content)} bytes but shape "
                       f"{shape_string(shape)} of {data_type_name(proto.dtype)} needs {expected_bytes}")
        array = np.frombuffer(content, dtype=spec.numpy_dtype).reshape(shape)
        return array.copy() if copy else array

    values = getattr(proto, spec.field)
    num_values = len(values)
    if spec.numpy_dtype.kind == "c":
        if num_values % 2:
            raise fail("complex values must come in (real, imaginary) pairs")
        num_values //= 2
    if num_values > num_elements:
        raise fail(f"{num_values} values do not fit shape {shape_string(shape)}")
    if num_values < num_elements and num_elements > MAX_EXPANDED_ELEMENTS:
        raise fail(f"shape {shape_string(shape)} holds {num_elements} elements but only "
                   f"{num_values} values were sent")
    try:
        flat = _typed_values_to_numpy(values, spec, proto.dtype)
    except (OverflowError, ValueError, TypeError) as error:
        raise fail(str(error)) from None
    if num_values < num_elements:
        filler = flat[-1] if num_values else np.zeros((), spec.numpy_dtype)[()]
        if spec.numpy_dtype == object and not num_values:
            filler = b""
        completed = np.empty(num_elements, dtype=spec.numpy_dtype)
        completed[:num_values] = flat
        completed[num_values:] = filler
        flat = completed
    return flat.reshape(shape)


def decode_string_list(content: bytes, count: int) -> np.ndarray:
    """Reads `count` strings from TensorFlow's string-tensor encoding.

    TensorFlow (`Tensor::AsProtoTensorContent`, `port::EncodeStringList`)
    writes every length as a varint first, then the strings back to back.

    Returns:
        A flat object array of bytes.

    Raises:
        ValueError: The bytes do not hold exactly `count` such strings.
    """
    if count > len(content):  # each string takes at least its one-byte length
        raise ValueError(f"tensor_content of {len(content)} bytes cannot hold {count} strings")
    sizes, position = [], 0
    for _ in range(count):
        size, shift = 0, 0
        while True:
            if position >= len(content) or shift > 28:
                raise ValueError("tensor_content is not an encoded string list (a length is cut off)")
            byte = content[position]
            position += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        sizes.append(size)
    if position + sum(sizes) != len(content):
        raise ValueError(f"tensor_content holds {len(content) - position} string bytes but the lengths "
                         f"add up to {sum(sizes)}")
    flat = np.empty(count, dtype=object)
    for index, size in enumerate(sizes):
        flat[index] = bytes(content[position:position + size])
        position += size
    return flat


def _typed_values_to_numpy(values, spec: _DataTypeSpec, data_type: int) -> np.ndarray:
    if data_type == types_pb2.DT_STRING:
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
        return flat
    if data_type == types_pb2.DT_HALF:
        # half_val carries the IEEE half bit patterns in int32 slots.
        return np.array(values, dtype=np.uint16).view(np.float16)
    if spec.numpy_dtype.kind == "c":
        parts = np.array(values, dtype=spec.numpy_dtype.type(0).real.dtype)
        return parts[0::2] + 1j * parts[1::2]
    return np.array(values, dtype=spec.numpy_dtype)


# === numpy -> TensorProto ===


def as_array(value: Any) -> np.ndarray:
    """Makes an array from user data; text becomes UTF-8 bytes in an object array."""
    array = np.asarray(value)
    if array.dtype.kind == "O" and all(type(item) is bytes for item in array.ravel().tolist()):
        return array  # already bytes (what TensorFlow's .numpy() gives): nothing to convert
    if array.dtype.kind in "US" or (array.dtype.kind == "O" and array.size):
        encoded = np.empty(array.shape, dtype=object)
        for index, item in np.ndenumerate(array):
            if isinstance(item, str):
                encoded[index] = item.encode("utf-8")
            elif isinstance(item, (bytes, np.bytes_)):
                encoded[index] = bytes(item)
            else:
                raise ValueError(f"a string tensor holds a {type(item).__name__}: {item!r}")
        return encoded
    if array.dtype.kind == "O":  # empty object array: strings by convention
        return array
    return array


def numpy_to_tensor_proto(value: Any, use_tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """Encodes an array as a TensorProto.

    Args:
        value: An array or nested lists; text is encoded as UTF-8.
        use_tensor_content: Pack numbers into `tensor_content` (compact and fast)
            instead of the typed `*_val` fields. TF Serving answers with typed
            fields, which clients reading `float_val` directly depend on.

    Returns:
        The TensorProto.
    """
    return fill_tensor_proto(tensor_pb2.TensorProto(), value, use_tensor_content)


def fill_tensor_proto(proto: tensor_pb2.TensorProto, value: Any,
                      use_tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """Writes an array into an empty TensorProto in place (`numpy_to_tensor_proto` without the new message).

    The server fills `response.outputs[alias]` this way, which saves building
    each output twice (a proto, then `CopyFrom` into the response).

    Returns:
        `proto`.
    """
    array = as_array(value)
    data_type = data_type_of(array)
    spec = _SPECS[data_type]
    proto.dtype = data_type
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    if data_type == types_pb2.DT_STRING:
        proto.string_val.extend(array.ravel().tolist())
    elif use_tensor_content:
        proto.tensor_content = np.ascontiguousarray(array, dtype=spec.numpy_dtype).tobytes()
    elif data_type in _PACKED_FIXED_WIDTH:
        # The typed field, written as protobuf itself would write it (packed: tag,
        # byte length, raw values) and merged in: one pass over the bytes instead
        # of a Python float per value (64 x 10,001 logits: ~0.3 ms instead of ~30 ms).
        if array.size:
            field_number, wire_dtype = _PACKED_FIXED_WIDTH[data_type]
            little_endian = spec.numpy_dtype.newbyteorder("<")
            values = np.ascontiguousarray(array, dtype=little_endian).view(wire_dtype).tobytes()
            proto.MergeFromString(_varint(field_number << 3 | _LENGTH_DELIMITED) + _varint(len(values)) + values)
    elif data_type == types_pb2.DT_HALF:
        proto.half_val.extend(array.ravel().view(np.uint16).tolist())
    elif spec.numpy_dtype.kind == "c":
        flat = array.ravel()
        pairs = np.stack([flat.real, flat.imag], axis=1).ravel()
        getattr(proto, spec.field).extend(pairs.tolist())
    else:
        getattr(proto, spec.field).extend(array.ravel().tolist())
    return proto


# === Checks against a signature ===


def check_input(alias: str, array: np.ndarray, tensor_info: meta_graph_pb2.TensorInfo) -> None:
    """Checks an input's dtype and shape against the signature's TensorInfo.

    Raises:
        ServingError: INVALID_ARGUMENT saying what was expected and what came.
    """
    expected_type = tensor_info.dtype
    received_type = data_type_of(array)
    if expected_type != received_type:
        raise invalid_argument(
            f"Input \"{alias}\": expected dtype {data_type_name(expected_type)}, "
            f"got {data_type_name(received_type)}.")
    if array.dtype.kind in "fc" and array.size and not np.isfinite(array).all():
        # No zoo signature takes NaN or infinity (the only float input is a recurrent
        # state), and one would turn every output of its row into NaN.
        first = tuple(int(index) for index in np.argwhere(~np.isfinite(array))[0])
        raise invalid_argument(
            f"Input \"{alias}\" holds NaN or infinity (first at index {list(first)}); send finite numbers "
            "(a state from this model's initial_state or step signatures)")
    if tensor_info.tensor_shape.unknown_rank:
        return
    expected_dims = [dim.size for dim in tensor_info.tensor_shape.dim]
    compatible = len(expected_dims) == array.ndim and all(
        expected < 0 or expected == received for expected, received in zip(expected_dims, array.shape))
    if not compatible:
        raise invalid_argument(
            f"Input \"{alias}\": expected shape {shape_string(expected_dims)}, "
            f"got {shape_string(array.shape)}.")


def tensor_info_dims(tensor_info: meta_graph_pb2.TensorInfo) -> list[int] | None:
    """Returns a TensorInfo's dims (-1 where unknown), or None for unknown rank."""
    if tensor_info.tensor_shape.unknown_rank:
        return None
    return [dim.size for dim in tensor_info.tensor_shape.dim]


def make_tensor_shape(dims) -> tensor_shape_pb2.TensorShapeProto:
    shape = tensor_shape_pb2.TensorShapeProto()
    for size in dims:
        shape.dim.add(size=size)
    return shape


# === JSON <-> numpy (TensorFlow Serving's REST encoding) ===


def json_to_numpy(value: Any, data_type: int, alias: str = "") -> np.ndarray:
    """Builds an array of a DataType from JSON (nested lists; `{"b64": ...}` for bytes).

    Raises:
        ServingError: INVALID_ARGUMENT for ragged lists or values of the wrong kind.
    """
    spec = _SPECS.get(data_type)
    if spec is None:
        raise invalid_argument(f"Input \"{alias}\": unsupported dtype {data_type_name(data_type)}")
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    leaves: list = []
    _flatten_json(value, shape, 0, leaves, alias)
    try:
        if data_type == types_pb2.DT_STRING:
            flat = np.empty(len(leaves), dtype=object)
            flat[:] = [json_leaf_to_bytes(leaf, alias) for leaf in leaves]
        else:
            is_bool = spec.numpy_dtype.kind == "b"
            for leaf in leaves:
                # JSON true/false only for bool tensors, and only integers for integer tensors.
                if isinstance(leaf, bool) != is_bool or not isinstance(leaf, (int, float)) or (
                        isinstance(leaf, float) and spec.numpy_dtype.kind in "iu"):
                    # Worded as TF Serving's json_tensor.cc (TypeError), after the input's name.
                    raise invalid_argument(
                        f"Input \"{alias}\": JSON Value: {_json_text(leaf)} Type: {_json_type_name(leaf)} is not "
                        f"of expected type: {_tf_type_string(data_type)} (send "
                        f"{_JSON_KIND_HINT.get(spec.numpy_dtype.kind, 'values of that type')})")
            with np.errstate(over="ignore"):
                flat = np.array(leaves, dtype=spec.numpy_dtype)
            if flat.dtype.kind in "fc" and not np.isfinite(flat).all():  # JSON numbers are finite (checked)
                raise invalid_argument(
                    f"Input \"{alias}\": a number is out of the range of {data_type_name(data_type)}; "
                    "send smaller numbers")
    except (OverflowError, ValueError, TypeError) as error:
        raise invalid_argument(f"Input \"{alias}\": {error}: send values that fit {data_type_name(data_type)}") \
            from None
    return flat.reshape(shape)


_JSON_KIND_HINT = {"b": "true or false", "i": "integers", "u": "non-negative integers", "f": "numbers",
                   "c": "numbers"}


def _json_text(value: Any, limit: int = 60) -> str:
    """A JSON value as JSON text, shortened, for error messages."""
    import json

    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_type_name(value: Any) -> str:
    """rapidjson's type names, as TF Serving's messages use them."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return "Number"
    if isinstance(value, str):
        return "String"
    return "Array" if isinstance(value, list) else "Object"


def _tf_type_string(data_type: int) -> str:
    """TensorFlow's DataTypeString: DT_INT64 -> int64, DT_FLOAT -> float."""
    return data_type_name(data_type).removeprefix("DT_").lower()


def _flatten_json(value: Any, shape: list[int], depth: int, leaves: list, alias: str) -> None:
    if depth == len(shape):
        if isinstance(value, list):
            raise invalid_argument(f"Input \"{alias}\": lists are nested unevenly (ragged tensor)")
        leaves.append(value)
        return
    if not isinstance(value, list) or len(value) != shape[depth]:
        raise invalid_argument(
            f"Input \"{alias}\": expecting a list of {shape[depth]} elements at depth {depth}, "
            f"got {json_preview(value)} (ragged tensors are not allowed)")
    for item in value:
        _flatten_json(item, shape, depth + 1, leaves, alias)


def json_leaf_to_bytes(leaf: Any, alias: str) -> bytes:
    """Reads a JSON string (UTF-8) or `{"b64": ...}` (binary) as bytes."""
    if isinstance(leaf, str):
        return leaf.encode("utf-8")
    if isinstance(leaf, dict) and set(leaf) == {"b64"} and isinstance(leaf["b64"], str):
        try:
            return base64.b64decode(leaf["b64"], validate=True)
        except ValueError:
            raise invalid_argument(f"Input \"{alias}\": invalid base64 in {{\"b64\": ...}}") from None
    raise invalid_argument(f"Input \"{alias}\": {json_preview(leaf)} is not a string or {{\"b64\": ...}}")


def numpy_to_json(array: np.ndarray, binary: bool = False) -> Any:
    """Converts an array to JSON values as TF Serving's REST API writes them.

    Args:
        array: The output tensor.
        binary: Write strings as `{"b64": ...}` (TF Serving does so for output
            names ending in `_bytes`); otherwise UTF-8 text, falling back to
            base64 for bytes that are not valid UTF-8.
    """
    if array.dtype == object or array.dtype.kind == "S":
        def encode(item):
            if isinstance(item, bytes):
                if not binary:
                    try:
                        return item.decode("utf-8")
                    except UnicodeDecodeError:
                        pass
                return {"b64": base64.b64encode(item).decode("ascii")}
            return item
        return _map_nested(array.tolist(), encode)
    if array.dtype.kind == "c":
        return _map_nested(array.tolist(), lambda item: [item.real, item.imag])
    return array.tolist()


def _map_nested(value: Any, function) -> Any:
    if isinstance(value, list):
        return [_map_nested(item, function) for item in value]
    return function(value)


def json_preview(value: Any, limit: int = 60) -> str:
    """A short repr of a JSON value for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def outputs_to_numpy(outputs: Mapping[str, tensor_pb2.TensorProto]) -> dict[str, np.ndarray]:
    """Decodes every tensor of a response map (PredictResponse.outputs).

    Reads both forms a server may answer with: typed `*_val` fields (TF
    Serving's default) and `tensor_content` (`--enable_serialization_as_tensor_content`),
    string tensors included.
    """
    return {alias: tensor_proto_to_numpy(proto, alias, encoded_strings=True) for alias, proto in outputs.items()}


def make_example(features: dict) -> example_pb2.Example:
    """Builds a tf.Example from {name: str | bytes | int | float | list of one kind}."""
    example = example_pb2.Example()
    for name, value in features.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        feature = example.features.feature[name]
        if all(isinstance(item, (str, bytes)) for item in values):
            feature.bytes_list.value.extend(item.encode("utf-8") if isinstance(item, str) else item
                                            for item in values)
        elif all(isinstance(item, int) and not isinstance(item, bool) for item in values):
            feature.int64_list.value.extend(values)
        elif all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in values):
            feature.float_list.value.extend(values)
        else:
            raise ValueError(f"feature {name!r} mixes kinds or holds an unsupported value: {value!r}")
    return example
