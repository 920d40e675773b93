"""Long requests run in pieces, so a client that left or a response too large stops the work.

A request of 40,000 sentences runs for seconds. Run in one call, it keeps
running after its deadline has passed or its client has gone, and a response
over `--max_message_bytes` is found too large only once it is all computed.
`run_in_pieces` cuts such a request along axis 0 into pieces of `piece_rows`
rows and, between pieces, checks that the caller still wants the answer and
that the outputs so far fit the response limit; the work stops at the first
check that fails, wasting at most one piece.

    request rows 0..39,999 ── piece 0..255 ── check ── piece 256..511 ── check ── ... ── concat ── response
                                                 └── deadline passed / client gone / too large: stop here

The pieces' outputs are joined along axis 0. A time-axis output (axis 1 free
in the signature) whose pieces came out of different lengths, as text
tokenized in the graph does, is right-padded with the pad value of its dtype
(0, "" or False), the contract's value past a row's end (the batcher relies
on the same). Joined outputs equal those of one call, but for the last bit
or two of floats, which TensorFlow rounds differently for different batch
sizes (see `serving.server.batching`).

`estimated_output_bytes` gives a lower bound of the response size before
anything runs, from the signature and the inputs' shapes, so a request whose
outputs cannot fit is refused at once.
"""

from collections.abc import Callable

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving.protocol import errors
from serving.server.access import message_too_large
from serving.server.batching import SignatureBatchingPlan, pad_axis_1

PIECE_ROWS = 256


def request_rows(inputs: dict) -> int | None:
    """The rows (axis 0) every input has, or None when they disagree or one is a scalar."""
    rows = {array.shape[0] if array.ndim else None for array in inputs.values()}
    if len(rows) != 1 or None in rows:
        return None
    return rows.pop()


def output_bytes(array: np.ndarray) -> int:
    """About what an output costs in a response: its bytes, a string tensor's characters plus one per value."""
    if array.dtype == object:
        return sum(len(value) + 1 for value in array.ravel())
    return array.nbytes


def estimated_output_bytes(signature: meta_graph_pb2.SignatureDef, plan: SignatureBatchingPlan, inputs: dict,
                           output_aliases: list[str]) -> int:
    """A lower bound of the response's tensor bytes, from shapes alone (0 where a shape is not known).

    An output counts when every dimension is known: axis 0 from the
    request's rows, a time axis (axis 1 free, see SignatureBatchingPlan) from
    the length of the padded token inputs when they all have one, every other
    dimension from the signature. Strings count one byte a value.
    """
    rows = request_rows(inputs)
    if rows is None:
        return 0
    lengths = {inputs[alias].shape[1] for alias in plan.paddable_inputs
               if alias in inputs and inputs[alias].ndim >= 2}
    length = lengths.pop() if len(lengths) == 1 else None
    total = 0
    for alias in output_aliases:
        shape = _output_shapes(signature, plan).get(alias)
        if shape is None:
            continue
        bytes_per_row, time_axis = shape
        if time_axis:
            if length is None:
                continue
            bytes_per_row *= length
        total += rows * bytes_per_row
    return total


_SHAPES_CACHE: dict = {}  # id(signature) -> (signature, {alias: (bytes per row, has a time axis)})


def _output_shapes(signature: meta_graph_pb2.SignatureDef, plan: SignatureBatchingPlan) -> dict:
    """{output alias: (bytes per row past a time axis, whether axis 1 is the time axis)} for outputs whose
    other dimensions are all known; computed once per signature (it costs 0.1 ms a request otherwise)."""
    cached = _SHAPES_CACHE.get(id(signature))
    if cached is not None and cached[0] is signature:
        return cached[1]
    shapes = {}
    for alias, tensor_info in signature.outputs.items():
        if tensor_info.tensor_shape.unknown_rank or not tensor_info.tensor_shape.dim:
            continue
        dims = [dim.size for dim in tensor_info.tensor_shape.dim][1:]
        time_axis = bool(dims) and dims[0] < 0 and alias in plan.time_axis_outputs
        if time_axis:
            dims = dims[1:]
        if any(size < 0 for size in dims):
            continue
        item = 1 if tensor_info.dtype == types_pb2.DT_STRING else tf.dtypes.as_dtype(tensor_info.dtype).size
        shapes[alias] = (int(np.prod(dims, dtype=np.int64)) * item, time_axis)
    if len(_SHAPES_CACHE) > 1024:  # signatures of unloaded versions: start afresh
        _SHAPES_CACHE.clear()
    _SHAPES_CACHE[id(signature)] = (signature, shapes)
    return shapes


def run_in_pieces(run: Callable[[dict], dict], inputs: dict, rows: int, plan: SignatureBatchingPlan,
                  piece_rows: int, still_wanted: Callable[[int, int], None], max_output_bytes: int,
                  output_aliases: list[str] | None = None) -> dict:
    """Runs `run` on pieces of `piece_rows` rows and joins the outputs; see the module docstring.

    Args:
        run: Runs the signature on (a piece of) the inputs.
        inputs: The checked inputs, each with `rows` rows.
        plan: The signature's SignatureBatchingPlan (for the time-axis outputs).
        still_wanted: Called as (rows done, rows) before each piece after the
            first; raises (DEADLINE_EXCEEDED, CANCELLED) to stop.
        max_output_bytes: The response limit (`--max_message_bytes`).
        output_aliases: The outputs that go into the response (all if None).

    Raises:
        ServingError: RESOURCE_EXHAUSTED once the outputs so far pass the
            limit; what `still_wanted` or `run` raise.
    """
    pieces, size = [], 0
    for start in range(0, rows, piece_rows):
        if start:
            still_wanted(start, rows)
        piece = run({alias: array[start:start + piece_rows] for alias, array in inputs.items()})
        expected = min(piece_rows, rows - start)
        for alias, array in piece.items():
            if array.ndim == 0 or array.shape[0] != expected:
                raise errors.internal(f"output {alias} has shape {array.shape} for a piece of {expected} rows")
        size += sum(output_bytes(array) for alias, array in piece.items()
                    if output_aliases is None or alias in output_aliases)
        if size > max_output_bytes:
            raise message_too_large(f"response, after {start + expected} of its {rows} rows,", size,
                                    max_output_bytes, at_least=True)
        pieces.append(piece)
    return join_pieces(pieces, plan)


def join_pieces(pieces: list[dict], plan: SignatureBatchingPlan) -> dict:
    """Concatenates the pieces' outputs along axis 0, padding time axes to the longest piece.

    Raises:
        ServingError: INTERNAL when the pieces disagree past axis 0 other
            than on a time axis.
    """
    joined = {}
    for alias in pieces[0]:
        parts = [piece[alias] for piece in pieces]
        if alias in plan.time_axis_outputs and parts[0].ndim >= 2:
            length = max(part.shape[1] for part in parts)
            parts = [pad_axis_1(part, length) for part in parts]
        if len({part.shape[1:] for part in parts}) != 1:
            raise errors.internal(f"output {alias} has shapes {sorted({part.shape for part in parts})} in "
                                  "different pieces of the request")
        joined[alias] = np.concatenate(parts, axis=0)
    return joined
