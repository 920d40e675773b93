"""Tests for training.lm_batching: stream layout and TBPTT batch continuity."""

from __future__ import annotations

import numpy as np
import pytest

from training.lm_batching import lm_dataset, make_streams, num_batches


def batches_of(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(inputs.numpy(), targets.numpy()) for inputs, targets in dataset]


def test_make_streams_cuts_contiguous_rows_and_drops_the_tail():
    streams = make_streams(np.arange(23), batch_size=4)
    # n = 23 // 4 = 5; ids 20, 21, 22 do not fill a row and are dropped.
    assert streams.dtype == np.int32
    np.testing.assert_array_equal(
        streams,
        [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]],
    )


def test_make_streams_accepts_python_lists():
    np.testing.assert_array_equal(make_streams([4, 5, 6, 7], 2), [[4, 5], [6, 7]])


@pytest.mark.parametrize(
    "ids, batch_size, message",
    [
        (np.arange(3), 4, "too short"),
        (np.arange(8), 0, "batch_size"),
        (np.zeros((2, 4), dtype=np.int64), 2, "1-D"),
        (np.array([0.5, 1.5]), 1, "integers"),
        (np.array([2**40]), 1, "int32"),
    ],
)
def test_make_streams_rejects_bad_input(ids, batch_size, message):
    with pytest.raises(ValueError, match=message):
        make_streams(ids, batch_size)


def test_documented_example_exactly():
    # The example in the module docstring: 14 ids, 2 streams, 3 steps.
    batches = batches_of(lm_dataset(np.arange(14), batch_size=2, num_steps=3))
    assert len(batches) == 2
    np.testing.assert_array_equal(batches[0][0], [[0, 1, 2], [7, 8, 9]])
    np.testing.assert_array_equal(batches[0][1], [[1, 2, 3], [8, 9, 10]])
    np.testing.assert_array_equal(batches[1][0], [[3, 4, 5], [10, 11, 12]])
    np.testing.assert_array_equal(batches[1][1], [[4, 5, 6], [11, 12, 13]])


def test_batches_are_contiguous_across_batches_and_targets_are_shifted():
    batch_size, num_steps, num_ids = 3, 4, 100
    ids = np.arange(num_ids)
    streams = make_streams(ids, batch_size)  # n = 33
    batches = batches_of(lm_dataset(ids, batch_size, num_steps))
    assert len(batches) == num_batches(num_ids, batch_size, num_steps) == (33 - 1) // 4
    for index, (inputs, targets) in enumerate(batches):
        assert inputs.shape == targets.shape == (batch_size, num_steps)
        assert inputs.dtype == targets.dtype == np.int32
        start = index * num_steps
        np.testing.assert_array_equal(inputs, streams[:, start : start + num_steps])
        # With ids = arange, each target is its input + 1.
        np.testing.assert_array_equal(targets, inputs + 1)
        if index + 1 < len(batches):
            following = batches[index + 1][0]
            # Row j of batch i + 1 starts right where row j of batch i ended.
            np.testing.assert_array_equal(following[:, 0], inputs[:, -1] + 1)
            np.testing.assert_array_equal(following[:, 0], targets[:, -1])
    # Row j covers ids j*n ... and never crosses into row j + 1.
    np.testing.assert_array_equal(batches[0][0][:, 0], [0, 33, 66])


def test_last_partial_window_is_dropped_and_shapes_are_static():
    # n = 10 per stream: inputs may use 9 ids -> two windows of 4, one id unused.
    dataset = lm_dataset(np.arange(20), batch_size=2, num_steps=4)
    assert dataset.element_spec[0].shape.as_list() == [2, 4]
    assert dataset.element_spec[1].shape.as_list() == [2, 4]
    assert int(dataset.cardinality()) == 2
    batches = batches_of(dataset)
    np.testing.assert_array_equal(batches[-1][0], [[4, 5, 6, 7], [14, 15, 16, 17]])
    np.testing.assert_array_equal(batches[-1][1], [[5, 6, 7, 8], [15, 16, 17, 18]])


def test_window_filling_the_stream_exactly_needs_one_more_id_for_targets():
    # n = 9: inputs may use 8 ids = exactly two windows of 4.
    assert num_batches(18, batch_size=2, num_steps=4) == 2
    # n = 8: only 7 ids can be inputs, so the second window is incomplete.
    assert num_batches(16, batch_size=2, num_steps=4) == 1


@pytest.mark.parametrize(
    "num_ids, batch_size, num_steps, expected",
    [(929_589, 20, 35, 1327), (0, 4, 3, 0), (7, 2, 3, 0), (8, 2, 3, 1), (100, 1, 99, 1)],
)
def test_num_batches_matches_the_dataset(num_ids, batch_size, num_steps, expected):
    assert num_batches(num_ids, batch_size, num_steps) == expected
    if expected and num_ids < 10_000:
        dataset = lm_dataset(np.arange(num_ids), batch_size, num_steps)
        assert len(batches_of(dataset)) == expected


def test_corpus_too_short_for_one_batch_raises():
    with pytest.raises(ValueError, match="no full batch"):
        lm_dataset(np.arange(7), batch_size=2, num_steps=3)


@pytest.mark.parametrize("arguments", [(-1, 2, 3), (10, 0, 3), (10, 2, 0)])
def test_num_batches_rejects_bad_arguments(arguments):
    with pytest.raises(ValueError):
        num_batches(*arguments)


def test_dataset_is_not_shuffled_between_passes():
    dataset = lm_dataset(np.arange(50), batch_size=2, num_steps=5)
    first, second = batches_of(dataset), batches_of(dataset)
    for (inputs_a, targets_a), (inputs_b, targets_b) in zip(first, second):
        np.testing.assert_array_equal(inputs_a, inputs_b)
        np.testing.assert_array_equal(targets_a, targets_b)
