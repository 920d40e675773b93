"""The language models' loss gives Keras' sparse cross-entropy, its gradient included."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from training.losses import (SparseCrossEntropyFromLogits, language_model_loss,
                             sparse_cross_entropy_from_logits)

V = 7


def _logits_and_targets(dtype="float32"):
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(3, 5, V)).astype("float32")
    logits[0, 0] = 0.0  # a row of ties
    logits[1, 1, 2] = 60.0  # one logit far above the rest: exp must not overflow
    targets = rng.integers(0, V, size=(3, 5))
    targets[1, 1] = 2
    return tf.cast(tf.constant(logits), dtype), tf.constant(targets)


def _value_and_gradient(loss, logits, targets, sample_weight=None):
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = loss(targets, logits, sample_weight=sample_weight)
    return value, tape.gradient(value, logits)


@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradient_are_keras_sparse_cross_entropy(weighted):
    logits, targets = _logits_and_targets()
    weights = tf.constant(np.random.default_rng(1).integers(0, 2, size=(3, 5)).astype("float32")) \
        if weighted else None
    reference = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    expected, expected_gradient = _value_and_gradient(reference, logits, targets, weights)
    actual, actual_gradient = _value_and_gradient(SparseCrossEntropyFromLogits(), logits, targets, weights)
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(actual_gradient.numpy(), expected_gradient.numpy(), atol=1e-7)


def test_per_token_losses_keep_the_targets_shape():
    logits, targets = _logits_and_targets()
    losses = sparse_cross_entropy_from_logits(targets, logits)
    assert losses.shape == (3, 5)
    expected = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
    np.testing.assert_allclose(losses.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
    assert np.isclose(losses.numpy()[0, 0], np.log(V))  # equal logits: log of the vocabulary size
    assert np.isclose(losses.numpy()[1, 1], 0.0, atol=1e-6)  # the target far above the rest


def test_bfloat16_logits_are_summed_in_float32_and_get_a_bfloat16_gradient():
    logits, targets = _logits_and_targets("bfloat16")
    value, gradient = _value_and_gradient(SparseCrossEntropyFromLogits(), logits, targets)
    assert value.dtype == tf.float32 and gradient.dtype == tf.bfloat16
    # The same logits as float32 values through Keras: the loss is as exact as float32.
    reference = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    expected, expected_gradient = _value_and_gradient(reference, tf.cast(logits, tf.float32), targets)
    np.testing.assert_allclose(value.numpy(), expected.numpy(), rtol=1e-6)
    # The gradient, (softmax - onehot) / 15 tokens, lies within 1/15 of zero; rounded
    # to bfloat16 (8 significant bits) it is off by at most 2^-8 of that.
    np.testing.assert_allclose(tf.cast(gradient, tf.float32).numpy(), expected_gradient.numpy(),
                               atol=2.0**-8 / 15)


def test_the_loss_serializes_and_the_switch_gives_keras_own(monkeypatch):
    restored = keras.losses.deserialize(keras.losses.serialize(SparseCrossEntropyFromLogits()))
    assert isinstance(restored, SparseCrossEntropyFromLogits)
    monkeypatch.delenv("RNN_ZOO_OWN_LOSS", raising=False)
    assert isinstance(language_model_loss(), SparseCrossEntropyFromLogits)
    monkeypatch.setenv("RNN_ZOO_OWN_LOSS", "0")
    assert type(language_model_loss()) is keras.losses.SparseCategoricalCrossentropy
