"""A training loop that records, at every step, the loss and the global gradient norm before and after clipping.

Keras' `global_clipnorm` clips inside the optimizer, where the norms are not
visible; the diagnostics need them, so this loop clips the gradients itself,
the way training does (`training.clipping`: every gradient scaled by
min(1, clip_norm / global norm), an embedding's repeated rows summed before
the norm), and hands the clipped gradients to an optimizer that does not clip
again.

    trace = train_steps(model, batches, keras.optimizers.SGD(0.5), clip_norm=1.0)
    trace.gradient_norms   # before clipping, one per step
    trace.applied_norms    # after: min(norm, clip_norm)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from training.clipping import clip_by_global_norm, global_norm


@dataclass
class StepTrace:
    """Per-step loss and global gradient norms of one training run."""

    losses: list[float] = field(default_factory=list)
    gradient_norms: list[float] = field(default_factory=list)  # before clipping
    applied_norms: list[float] = field(default_factory=list)   # after clipping
    clip_norm: float | None = None

    def to_dict(self) -> dict:
        return {"clip_norm": self.clip_norm, "losses": self.losses,
                "gradient_norms": self.gradient_norms, "applied_norms": self.applied_norms}


def make_train_step(model, optimizer, clip_norm: float | None = None, loss=None):
    """A compiled step (inputs, targets[, sample_weight]) -> (loss, norm before clipping, norm after).

    Args:
        model: A Keras model returning logits.
        optimizer: A Keras optimizer without clipnorm / global_clipnorm of its
            own (it would clip a second time).
        clip_norm: Clip the gradients to this global norm; None: no clipping.
        loss: A Keras loss; default sparse categorical cross-entropy on logits.

    Raises:
        ValueError: the optimizer clips by itself.
    """
    if optimizer.global_clipnorm or optimizer.clipnorm or optimizer.clipvalue:
        raise ValueError("Give an optimizer that does not clip: this loop clips (clip_norm) "
                         "so that it can record the norms.")
    loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(inputs, targets, sample_weight=None):
        with tf.GradientTape() as tape:
            value = loss(targets, model(inputs, training=True), sample_weight=sample_weight)
        variables = model.trainable_variables
        gradients = tape.gradient(value, variables)
        norm = global_norm(gradients)
        if clip_norm is not None:
            gradients = clip_by_global_norm(gradients, clip_norm)
        optimizer.apply(gradients, variables)
        return value, norm, global_norm(gradients)

    return step


def train_steps(model, batches, optimizer, clip_norm: float | None = None, *, loss=None,
                progress=None) -> StepTrace:
    """Trains `model` on each (inputs, targets[, sample_weight]) of `batches` once; the per-step trace.

    `progress`, if given, is called after every step (a tqdm update).
    """
    step = make_train_step(model, optimizer, clip_norm, loss)
    trace = StepTrace(clip_norm=clip_norm)
    for batch in batches:
        value, norm, applied = step(*batch)
        trace.losses.append(float(value))
        trace.gradient_norms.append(float(norm))
        trace.applied_norms.append(float(applied))
        if progress is not None:
            progress()
    return trace


def first_nonfinite(values) -> int | None:
    """Index of the first NaN or infinite value (a run that blew up), or None."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
    return int(bad[0]) if bad.size else None
