"""The zoo's LSTM: the fused CPU loop computes what keras.layers.LSTM computes, gradients included.

Both sides run in float32; they add the same products in different orders (the
input projection of the whole window at once, the weight gradients summed over
the window in one product), so they agree to float32 rounding of sums of up to
T*B terms, not bit for bit: 1e-5 relative to each tensor's scale.
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

import zoo
from zoo.fused_lstm import LSTM, fused_lstm, unroll_limit, window_scan

from fused_helpers import B, D, MASKS, T, U, scale_close


def _pair(go_backwards=False):
    keras.utils.set_random_seed(1)
    reference = keras.layers.LSTM(U, return_sequences=True, return_state=True, go_backwards=go_backwards)
    fused = LSTM(U, return_sequences=True, return_state=True, go_backwards=go_backwards)
    x = np.random.default_rng(0).normal(size=(B, T, D)).astype("float32")
    reference(x)
    fused(x)
    fused.set_weights(reference.get_weights())
    return reference, fused, x


def _forward_and_gradients(layer, x, mask, h0, c0):
    x, h0, c0 = tf.constant(x), tf.constant(h0), tf.constant(c0)
    weights = np.random.default_rng(5).normal(size=(B, T, U)).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch([x, h0, c0])
        outputs, h, c = layer(x, initial_state=[h0, c0], mask=mask, training=True)
        loss = tf.reduce_sum(outputs * weights) + tf.reduce_sum(h * 2.0) + tf.reduce_sum(c * c)
    variables = [v.value for v in layer.trainable_variables]
    gradients = tape.gradient(loss, [x, h0, c0] + variables)
    return [outputs, h, c] + gradients


@pytest.mark.parametrize("unroll", ["64", "0"], ids=["unrolled", "while_loop"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("mask_name", sorted(MASKS))
def test_the_fused_loop_matches_keras_outputs_states_and_every_gradient(mask_name, go_backwards, unroll, monkeypatch):
    monkeypatch.setenv("RNN_ZOO_UNROLL_STEPS", unroll)  # the window (T steps) written out, or tf.scan
    reference, fused, x = _pair(go_backwards)
    rng = np.random.default_rng(2)
    h0, c0 = rng.normal(size=(2, B, U)).astype("float32")
    mask = MASKS[mask_name]
    expected = _forward_and_gradients(reference, x, mask, h0, c0)
    actual = _forward_and_gradients(fused, x, mask, h0, c0)
    names = ["outputs", "h", "c", "d_x", "d_h0", "d_c0", "d_kernel", "d_recurrent_kernel", "d_bias"]
    for name, a, e in zip(names, actual, expected, strict=True):
        assert a is not None, name
        scale_close(a, e, name)


def test_the_fused_loop_is_what_the_layer_runs_on_a_cpu(monkeypatch):
    _, fused, x = _pair()
    assert fused._fused_applies(training=True)
    dropout = LSTM(U, dropout=0.5)
    assert dropout._fused_applies(training=False) and not dropout._fused_applies(training=True)
    assert not LSTM(U, activation="relu")._fused_applies(training=False)
    monkeypatch.setenv("RNN_ZOO_FUSED_LSTM", "0")
    assert not fused._fused_applies(training=True)


def test_the_switch_gives_the_same_model(monkeypatch):
    _, fused, x = _pair()
    on = fused(x)[0].numpy()
    monkeypatch.setenv("RNN_ZOO_FUSED_LSTM", "0")
    scale_close(fused(x)[0].numpy(), on)


def test_fused_lstm_returns_outputs_in_reading_order():
    x = tf.constant(np.random.default_rng(3).normal(size=(1, 4, 2)).astype("float32"))
    kernel, recurrent, bias = tf.ones((2, 4)) * 0.1, tf.ones((1, 4)) * 0.2, tf.zeros(4)
    zeros = tf.zeros((1, 1))
    last, outputs, (h, _) = fused_lstm(x, zeros, zeros, None, kernel, recurrent, bias, go_backwards=True)
    forward_of_reversed = fused_lstm(tf.reverse(x, [1]), zeros, zeros, None, kernel, recurrent, bias)
    scale_close(outputs, forward_of_reversed[1])
    scale_close(last, h)


def test_a_bidirectional_zoo_tagger_trains_the_same_with_and_without_the_fused_loop(monkeypatch):
    tokens = np.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 2]])
    tags = np.array([[1, 2, 1, 0, 0], [2, 1, 2, 1, 2]])

    def one_step():
        keras.utils.set_random_seed(4)
        model = zoo.build("tagger", cell="lstm", vocabulary_size=10, embedding_dim=4, hidden_dim=3,
                          num_tags=3, bidirectional=True, num_layers=2)
        model.compile(optimizer=keras.optimizers.SGD(0.5),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.train_on_batch(tokens, tags, sample_weight=(tokens != 0).astype("float32"))
        return [w.numpy() for w in model.weights]

    fused = one_step()
    monkeypatch.setenv("RNN_ZOO_FUSED_LSTM", "0")
    for a, e in zip(fused, one_step(), strict=True):
        scale_close(a, e)


def _step(carry, inputs):
    total, product = carry
    x, keep = inputs
    return total + x * keep, product * tf.tanh(x) + total


@pytest.mark.parametrize("reverse", [False, True])
def test_window_scan_unrolled_is_tf_scan(reverse):
    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(size=(5, 2, 3)).astype("float32"))
    keep = tf.constant(rng.integers(0, 2, size=(5, 2, 1)).astype("float32"))
    start = (tf.ones((2, 3)), tf.fill((2, 3), 0.5))
    expected = tf.scan(_step, (x, keep), initializer=start, reverse=reverse)
    actual = window_scan(_step, (x, keep), start, reverse=reverse)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-6, atol=1e-6)


def _loop_ops(time_steps):
    """The graph ops of the fused layer's forward and backward pass on windows of `time_steps`."""
    layer = LSTM(U, return_sequences=True)
    layer.build((B, 4, D))

    @tf.function(input_signature=[tf.TensorSpec((B, time_steps, D), tf.float32)])
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True))
        return tape.gradient(loss, x)

    graph = forward_backward.get_concrete_function().graph
    ops = set()
    for operation in graph.get_operations():
        ops.add(operation.type)
        for function in getattr(operation, "_func_graphs", []) or []:
            ops.update(op.type for op in function.get_operations())
    for function in graph._functions.values():
        ops.update(node.op for node in function.definition.node_def)
    return ops


def test_short_windows_of_known_length_are_unrolled_and_the_rest_loop(monkeypatch):
    """A language model's fixed window is written out step by step (no while loop);
    a window of unknown length, one past the limit, or the switch at 0 takes tf.scan."""
    monkeypatch.delenv("RNN_ZOO_UNROLL_STEPS", raising=False)
    assert unroll_limit() == 64
    assert not {"While", "StatelessWhile"} & _loop_ops(6)
    assert {"While", "StatelessWhile"} & _loop_ops(None)
    monkeypatch.setenv("RNN_ZOO_UNROLL_STEPS", "5")
    assert {"While", "StatelessWhile"} & _loop_ops(6)
    monkeypatch.setenv("RNN_ZOO_UNROLL_STEPS", "0")
    assert {"While", "StatelessWhile"} & _loop_ops(6)
    monkeypatch.setenv("RNN_ZOO_UNROLL_STEPS", "many")
    with pytest.raises(ValueError, match="RNN_ZOO_UNROLL_STEPS must be a whole number"):
        unroll_limit()


def test_bfloat16_products_keep_the_cell_state_in_float32():
    # Forget and input gates open (sigmoid(10)), a cell gate of 0.004 a step, from a cell
    # state of 4: bfloat16 moves in steps of 1/32 at 4, so a bfloat16 state would stay
    # at 4.0; the loop's float32 state adds the 0.004s up, whatever the products' dtype.
    steps = 50
    inputs = tf.zeros((1, steps, 1), tf.bfloat16)
    bias = np.array([10.0, 10.0, np.arctanh(0.004), 0.0], "float32")
    zeros = np.zeros((1, 4), "float32")
    c0 = np.full((1, 1), 4.0, "float32")
    _, outputs, (h, c) = fused_lstm(inputs, np.zeros((1, 1), "float32"), c0, None, zeros, zeros, bias)
    forget = 1 / (1 + np.exp(-10.0))
    expected = 4.0
    for _ in range(steps):
        expected = forget * expected + forget * 0.004
    assert c.dtype == tf.float32 and outputs.dtype == tf.bfloat16
    np.testing.assert_allclose(float(c[0, 0]), expected, atol=1e-4)
    assert expected - 4.0 > 0.15


def test_the_float32_state_switch_gives_the_bfloat16_loop_back(monkeypatch):
    from zoo.fused_lstm import state_dtype

    assert state_dtype(tf.bfloat16) == tf.float32 and state_dtype(tf.float32) == tf.float32
    monkeypatch.setenv("RNN_ZOO_FLOAT32_STATE", "0")
    assert state_dtype(tf.bfloat16) == tf.bfloat16
    inputs = tf.zeros((1, 50, 1), tf.bfloat16)
    bias = np.array([10.0, 10.0, np.arctanh(0.004), 0.0], "float32")
    zeros = np.zeros((1, 4), "float32")
    _, _, (_, c) = fused_lstm(inputs, np.zeros((1, 1), "float32"), np.full((1, 1), 4.0, "float32"),
                              None, zeros, zeros, bias)
    assert c.dtype == tf.bfloat16 and float(c[0, 0]) == 4.0  # every 0.004 lost
