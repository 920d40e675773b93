"""Metrics: perplexity for language models, per-tag accuracy for taggers."""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
from keras import ops


def perplexity(mean_cross_entropy: float) -> float:
    """exp(mean cross-entropy in nats per token); inf when that overflows."""
    try:
        return math.exp(mean_cross_entropy)
    except OverflowError:
        return float("inf")


@keras.saving.register_keras_serializable(package="training")
class Perplexity(keras.metrics.Metric):
    """exp of the mean per-token cross-entropy over everything seen so far.

    Averaging the cross-entropy over tokens first and exponentiating once is
    the definition (Zaremba et al. 2014, eq. for PPL); averaging per-batch
    perplexities instead would overweight bad batches.
    """

    def __init__(self, name="perplexity", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        cross_entropy = keras.losses.sparse_categorical_crossentropy(
            y_true, y_pred, from_logits=True
        )  # (batch, time)
        if sample_weight is None:
            sample_weight = ops.ones_like(cross_entropy)
        sample_weight = ops.cast(sample_weight, cross_entropy.dtype)
        self.total.assign_add(ops.sum(cross_entropy * sample_weight))
        self.count.assign_add(ops.sum(sample_weight))

    def update_from_mean(self, mean_cross_entropy, count):
        """Adds `count` tokens whose mean cross-entropy is already known.

        A trainer that has just computed the loss (the same mean over the
        same tokens) passes it here rather than have `update_state` run the
        softmax over the whole vocabulary a second time.
        """
        count = ops.cast(count, self.count.dtype)
        self.total.assign_add(ops.cast(mean_cross_entropy, self.total.dtype) * count)
        self.count.assign_add(count)

    def result(self):
        return ops.exp(self.total / ops.maximum(self.count, 1.0))

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


def per_tag_accuracy(
    gold: Sequence[Sequence[int]], predicted: Sequence[Sequence[int]], tag_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Accuracy for each gold tag: {tag: {"accuracy": a, "count": n}}.

    Args:
        gold, predicted: Tag ids per sentence (same lengths, no padding).
        tag_names: Name of each tag id.
    """
    gold_flat = np.concatenate([np.asarray(row, dtype=np.int64) for row in gold]) if gold else np.zeros(0, np.int64)
    predicted_flat = (
        np.concatenate([np.asarray(row, dtype=np.int64) for row in predicted]) if predicted else np.zeros(0, np.int64)
    )
    if gold_flat.shape != predicted_flat.shape:
        raise ValueError("gold and predicted tag sequences differ in length.")
    result = {}
    for tag_id, name in enumerate(tag_names):
        selected = gold_flat == tag_id
        count = int(selected.sum())
        if count:
            correct = int((predicted_flat[selected] == tag_id).sum())
            result[name] = {"accuracy": correct / count, "count": count}
    return result
