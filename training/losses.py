"""The language models' training loss: softmax cross-entropy over the vocabulary, written out.

A word language model's loss reads a (tokens, vocabulary) matrix of logits,
700 x 10,000 for Zaremba's medium shape, and the gradient writes one back.
TensorFlow's fused kernel for it (`SparseSoftmaxCrossEntropyWithLogits`) took
27% of a Zaremba-small training step on a 2-core Xeon (14 of 53 ms, from an
op-level trace). The same arithmetic as a few whole-matrix operations takes
a third to a half as long there (loss and gradient, two threads: 400 x 10,000
logits 14.6 against 6.2 ms, 700 x 10,000 31.8 against 12.8; on one thread the
fused kernel is no faster, so it is not a matter of threads) and gives the
same values: the loss is logsumexp(logits) - logits[target], and its gradient
softmax(logits) - onehot(target), from the exponentials the forward pass kept.

`RNN_ZOO_OWN_LOSS=0` in the environment trains with Keras' own loss instead.

The arithmetic is float32 whatever the logits' dtype (under the bfloat16 policy
the logits arrive in bfloat16): the loss and the softmax are where precision
matters. The gradient goes back in the logits' dtype.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.switches import switched_on


ENVIRONMENT_SWITCH = "RNN_ZOO_OWN_LOSS"


def own_loss_enabled() -> bool:
    """Whether language models train with this loss (`RNN_ZOO_OWN_LOSS` unset, or not 0/false/no/off)."""
    return switched_on(ENVIRONMENT_SWITCH)


def language_model_loss() -> keras.losses.Loss:
    """The loss a language model trains with: this module's, or Keras' own where switched off."""
    if own_loss_enabled():
        return SparseCrossEntropyFromLogits()
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@tf.custom_gradient
def _cross_entropy_rows(logits, targets):
    """Per-row cross-entropy of (n, v) logits against n target ids, float32."""
    logits32 = tf.cast(logits, tf.float32)
    peak = tf.reduce_max(logits32, axis=1, keepdims=True)
    exponentials = tf.exp(logits32 - peak)
    total = tf.reduce_sum(exponentials, axis=1, keepdims=True)
    losses = tf.squeeze(tf.math.log(total) + peak, axis=1) - tf.gather(logits32, targets, batch_dims=1)

    def gradient(d_losses):
        # (softmax - onehot) * d in one pass over the matrix, then the targets' entries
        # alone (a one-hot matrix would be two more passes).
        d_logits = exponentials * (d_losses[:, None] / total)
        rows = tf.range(tf.shape(targets)[0], dtype=targets.dtype)
        d_logits = tf.tensor_scatter_nd_sub(d_logits, tf.stack([rows, targets], axis=1), d_losses)
        return tf.cast(d_logits, logits.dtype), None

    return losses, gradient


def sparse_cross_entropy_from_logits(targets, logits):
    """What `keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)`
    gives, one loss per target, float32.

    Args:
        targets: integer ids, any shape S.
        logits: S + (vocabulary,).
    """
    targets = tf.cast(targets, tf.int32)
    vocabulary = tf.shape(logits)[-1]
    rows = _cross_entropy_rows(tf.reshape(logits, [-1, vocabulary]), tf.reshape(targets, [-1]))
    return tf.reshape(rows, tf.shape(targets))


@keras.saving.register_keras_serializable(package="zoo")
class SparseCrossEntropyFromLogits(keras.losses.Loss):
    """`keras.losses.SparseCategoricalCrossentropy(from_logits=True)` computed as above."""

    def __init__(self, name="sparse_categorical_crossentropy", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return sparse_cross_entropy_from_logits(y_true, y_pred)
