"""Batches for truncated backpropagation through time (TBPTT).

The language-model corpus is one long id stream. As in Zaremba et al. (2014)
and PyTorch's word_language_model (`batchify`), it is cut into `batch_size`
contiguous streams, one per batch row, and each stream is read in windows of
`num_steps` ids:

    ids      0 1 2 3 4 5 6 7 8 9 10 11 12 13        (batch_size 2: n = 7)
    streams  row 0: 0 1 2 3  4  5  6
             row 1: 7 8 9 10 11 12 13
    batch 0  inputs [[0 1 2], [7 8 9]]     targets [[1 2 3], [8 9 10]]
    batch 1  inputs [[3 4 5], [10 11 12]]  targets [[4 5 6], [11 12 13]]
                                                     (num_steps 3)

Row j of batch i + 1 continues row j of batch i, so a model that carries its
recurrent state from one batch to the next (a stateful RNN) sees each stream
as one unbroken text, while gradients flow back only `num_steps` steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


def make_streams(ids: np.ndarray | Sequence[int], batch_size: int) -> np.ndarray:
    """Cuts an id sequence into `batch_size` contiguous streams.

    Args:
        ids: The corpus as a 1-D sequence of token ids.
        batch_size: The number of streams (batch rows).

    Returns:
        `int32 [batch_size, n]` with `n = len(ids) // batch_size`; row `j` is
        `ids[j * n:(j + 1) * n]`. The last `len(ids) % batch_size` ids, which
        would not fill a row, are dropped.

    Raises:
        ValueError: If `ids` is not 1-D, holds values outside int32, or is
            shorter than `batch_size`; or `batch_size` < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
    info = np.iinfo(np.int32)
    if ids.size and (ids.min() < info.min or ids.max() > info.max):
        raise ValueError("ids must fit in int32")
    stream_length = len(ids) // batch_size
    if stream_length == 0:
        raise ValueError(
            f"a corpus of {len(ids)} ids is too short for {batch_size} streams"
        )
    kept = ids[: batch_size * stream_length].astype(np.int32)
    return kept.reshape(batch_size, stream_length)  # (batch, n)


def num_batches(num_ids: int, batch_size: int, num_steps: int) -> int:
    """Returns the number of full `[batch_size, num_steps]` batches in a corpus.

    Each stream has `n = num_ids // batch_size` ids. A window's targets are
    its inputs shifted by one, so `n - 1` ids can be inputs, giving
    `(n - 1) // num_steps` windows; a last partial window is dropped.

    Raises:
        ValueError: If any argument is negative, or `batch_size` or
            `num_steps` is 0.
    """
    if num_ids < 0:
        raise ValueError(f"num_ids must not be negative, got {num_ids}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    stream_length = num_ids // batch_size
    return max(stream_length - 1, 0) // num_steps


def lm_dataset(
    ids: np.ndarray | Sequence[int], batch_size: int, num_steps: int
) -> tf.data.Dataset:
    """Returns the TBPTT batches of a corpus, in stream order.

    Batch `i` is `(streams[:, i*T:(i+1)*T], streams[:, i*T+1:(i+1)*T+1])` for
    `T = num_steps`, both `int32 [batch_size, num_steps]`. Shapes are fixed
    (the last partial window is dropped), which a stateful model needs. The
    dataset is never shuffled: shuffling would break the continuity between
    consecutive batches that carrying the state relies on.

    Args:
        ids: The corpus as a 1-D sequence of token ids.
        batch_size: The number of streams (batch rows).
        num_steps: The window length, i.e. how far gradients flow back.

    Returns:
        A dataset of `num_batches(len(ids), batch_size, num_steps)` pairs
        `(inputs, targets)`.

    Raises:
        ValueError: If the corpus is too short for one batch, or an argument
            is invalid (see `make_streams`).
    """
    streams = make_streams(ids, batch_size)  # (batch, n)
    count = num_batches(streams.size, batch_size, num_steps)
    if count == 0:
        raise ValueError(
            f"a corpus of {np.asarray(ids).size} ids gives no full batch of "
            f"{batch_size} streams x {num_steps} steps (+1 for the targets)"
        )
    used = count * num_steps

    def windows(array: np.ndarray) -> np.ndarray:
        # (batch, count * steps) -> (count, batch, steps): batch i is windows[i].
        return array.reshape(batch_size, count, num_steps).transpose(1, 0, 2)

    inputs = windows(streams[:, :used])
    targets = windows(streams[:, 1 : used + 1])
    return tf.data.Dataset.from_tensor_slices((inputs, targets))
