"""The zoo's GRU: the fused CPU loop computes what keras.layers.GRU computes, gradients included.

As for the LSTM (tests/test_fused_lstm.py): both sides in float32, the same
products summed in other orders, so they agree to 1e-5 of each tensor's scale.
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

import zoo
from zoo.fused_gru import GRU, fused_gru

from fused_helpers import B, D, MASKS, T, U, scale_close


def _pair(go_backwards=False):
    keras.utils.set_random_seed(1)
    reference = keras.layers.GRU(U, return_sequences=True, return_state=True, go_backwards=go_backwards)
    fused = GRU(U, return_sequences=True, return_state=True, go_backwards=go_backwards)
    x = np.random.default_rng(0).normal(size=(B, T, D)).astype("float32")
    reference(x)
    fused(x)
    # Non-zero biases, so that both bias rows are exercised.
    weights = reference.get_weights()
    weights[2] = np.random.default_rng(9).normal(size=weights[2].shape).astype("float32")
    reference.set_weights(weights)
    fused.set_weights(weights)
    return reference, fused, x


def _forward_and_gradients(layer, x, mask, h0):
    x, h0 = tf.constant(x), tf.constant(h0)
    weights = np.random.default_rng(5).normal(size=(B, T, U)).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch([x, h0])
        outputs, h = layer(x, initial_state=h0, mask=mask, training=True)
        loss = tf.reduce_sum(outputs * weights) + tf.reduce_sum(h * h)
    variables = [v.value for v in layer.trainable_variables]
    return [outputs, h] + tape.gradient(loss, [x, h0] + variables)


@pytest.mark.parametrize("unroll", ["64", "0"], ids=["unrolled", "while_loop"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("mask_name", sorted(MASKS))
def test_the_fused_loop_matches_keras_outputs_state_and_every_gradient(mask_name, go_backwards, unroll, monkeypatch):
    monkeypatch.setenv("RNN_ZOO_UNROLL_STEPS", unroll)  # the window (T steps) written out, or tf.scan
    reference, fused, x = _pair(go_backwards)
    h0 = np.random.default_rng(2).normal(size=(B, U)).astype("float32")
    expected = _forward_and_gradients(reference, x, MASKS[mask_name], h0)
    actual = _forward_and_gradients(fused, x, MASKS[mask_name], h0)
    names = ["outputs", "h", "d_x", "d_h0", "d_kernel", "d_recurrent_kernel", "d_bias"]
    for name, a, e in zip(names, actual, expected, strict=True):
        assert a is not None, name
        scale_close(a, e, name)


def test_the_fused_loop_applies_on_a_cpu_and_the_switch_turns_it_off(monkeypatch):
    _, fused, x = _pair()
    assert fused._fused_applies(training=True)
    assert not GRU(U, reset_after=False)._fused_applies(training=False)
    assert not GRU(U, recurrent_dropout=0.5)._fused_applies(training=True)
    on = fused(x)[0].numpy()
    monkeypatch.setenv("RNN_ZOO_FUSED_GRU", "0")
    assert not fused._fused_applies(training=True)
    scale_close(fused(x)[0].numpy(), on)


def test_a_bidirectional_zoo_classifier_trains_the_same_with_and_without_the_fused_loop(monkeypatch):
    tokens = np.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 2]])
    labels = np.array([0, 1])

    def one_step():
        keras.utils.set_random_seed(4)
        model = zoo.build("classifier", cell="gru", vocabulary_size=10, embedding_dim=4, hidden_dim=3,
                          num_classes=2, bidirectional=True, num_layers=2)
        model.compile(optimizer=keras.optimizers.SGD(0.5),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.train_on_batch(tokens, labels)
        return [w.numpy() for w in model.weights]

    fused = one_step()
    monkeypatch.setenv("RNN_ZOO_FUSED_GRU", "0")
    for a, e in zip(fused, one_step(), strict=True):
        scale_close(a, e)


def test_bfloat16_products_keep_the_state_in_float32():
    # An update gate of sigmoid(7) keeps 99.9% of the state and moves it 0.0009 of
    # the way to a candidate of 1 each step: from 0.5 that is 0.00045, under half of
    # bfloat16's step of 1/256 there, so a bfloat16 state would stay at 0.5.
    steps = 50
    inputs = tf.zeros((1, steps, 1), tf.bfloat16)
    bias = np.array([[7.0, 0.0, 10.0], [0.0, 0.0, 0.0]], "float32")
    zeros = np.zeros((1, 3), "float32")
    _, outputs, (h,) = fused_gru(inputs, np.full((1, 1), 0.5, "float32"), None, zeros, zeros, bias)
    keep = 1 / (1 + np.exp(-7.0))
    expected = 0.5
    for _ in range(steps):
        expected = keep * expected + (1 - keep) * np.tanh(10.0)
    assert h.dtype == tf.float32 and outputs.dtype == tf.bfloat16
    np.testing.assert_allclose(float(h[0, 0]), expected, atol=1e-4)
    assert expected - 0.5 > 0.015
