"""The zoo's SimpleRNN: the fused CPU loop computes what keras.layers.SimpleRNN computes,
gradients included.

As for the LSTM (tests/test_fused_lstm.py): both sides in float32, the same
products summed in other orders, so they agree to 1e-5 of each tensor's scale.
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

import zoo
from zoo.fused_simple_rnn import SimpleRNN

from fused_helpers import B, D, MASKS, T, U, scale_close


def _pair(go_backwards=False):
    keras.utils.set_random_seed(1)
    reference = keras.layers.SimpleRNN(U, return_sequences=True, return_state=True, go_backwards=go_backwards)
    fused = SimpleRNN(U, return_sequences=True, return_state=True, go_backwards=go_backwards)
    x = np.random.default_rng(0).normal(size=(B, T, D)).astype("float32")
    reference(x)
    fused(x)
    weights = reference.get_weights()
    weights[2] = np.random.default_rng(9).normal(size=weights[2].shape).astype("float32")  # a non-zero bias
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
def test_the_fused_loop_matches_keras_outputs_state_and_every_gradient(mask_name, go_backwards, unroll,
                                                                        monkeypatch):
    monkeypatch.setenv("RNN_ZOO_UNROLL_STEPS", unroll)  # the window (T steps) written out, or tf.scan
    reference, fused, x = _pair(go_backwards)
    h0 = np.random.default_rng(2).normal(size=(B, U)).astype("float32")
    mask = MASKS[mask_name]
    expected = _forward_and_gradients(reference, x, mask, h0)
    actual = _forward_and_gradients(fused, x, mask, h0)
    names = ["outputs", "h", "d_x", "d_h0", "d_kernel", "d_recurrent_kernel", "d_bias"]
    for name, a, e in zip(names, actual, expected, strict=True):
        assert a is not None, name
        scale_close(a, e, name)


def test_the_fused_loop_applies_on_a_cpu_and_the_switch_turns_it_off(monkeypatch):
    _, fused, _ = _pair()
    assert fused._fused_applies(training=True)
    dropout = SimpleRNN(U, dropout=0.5)
    assert dropout._fused_applies(training=False) and not dropout._fused_applies(training=True)
    assert not SimpleRNN(U, activation="relu")._fused_applies(training=False)
    assert not SimpleRNN(U, use_bias=False)._fused_applies(training=False)
    monkeypatch.setenv("RNN_ZOO_FUSED_SIMPLE_RNN", "0")
    assert not fused._fused_applies(training=True)


def test_a_zoo_language_model_trains_the_same_with_and_without_the_fused_loop(monkeypatch):
    tokens = np.array([[3, 4, 5, 6, 2], [6, 7, 8, 9, 2]])
    targets = np.roll(tokens, -1, axis=1)

    def one_step():
        keras.utils.set_random_seed(4)
        model = zoo.build("language_model", cell="simple_rnn", vocabulary_size=10, embedding_dim=4,
                          hidden_dim=3, num_layers=2)
        model.compile(optimizer=keras.optimizers.SGD(0.5),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.train_on_batch(tokens, targets)
        return [w.numpy() for w in model.weights]

    fused = one_step()
    monkeypatch.setenv("RNN_ZOO_FUSED_SIMPLE_RNN", "0")
    for a, e in zip(fused, one_step(), strict=True):
        scale_close(a, e)
