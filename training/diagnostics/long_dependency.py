"""A synthetic long-dependency task: remember the first token of a noisy sequence.

Each sequence has `length` tokens: the first is one of `num_classes` signal
tokens, the rest are noise drawn uniformly from `num_noise` other tokens, and
the label is which signal token came first. A classifier reading the final
state can only solve it if information survives `length - 1` steps of noise,
and it can only learn to keep it if the gradient from the label reaches step
one: the vanishing-gradient problem in its plainest form (Hochreiter &
Schmidhuber 1997 use the same kind of task). Chance is 1 / num_classes.

    data = first_token_task(1024, length=20, seed=0)
    result = train_on_task("lstm", length=20, steps=200, seed=0)
    result.accuracy          # held-out accuracy after training
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

import zoo
from training.diagnostics.steps import StepTrace, train_steps
from training.diagnostics.variants import parse_variant

NUM_CLASSES = 4
NUM_NOISE = 16


@dataclass
class TaskData:
    token_ids: np.ndarray  # (rows, length) int32, no padding
    labels: np.ndarray     # (rows,) int32 in [0, num_classes)
    vocabulary_size: int


def first_token_task(rows: int, length: int, *, num_classes: int = NUM_CLASSES,
                     num_noise: int = NUM_NOISE, seed: int = 0) -> TaskData:
    """`rows` sequences of `length` tokens; ids 1..num_classes are the signals, the next num_noise the noise."""
    if length < 1 or rows < 1:
        raise ValueError(f"rows and length must be positive, got {rows} and {length}.")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=rows)
    token_ids = rng.integers(num_classes + 1, num_classes + 1 + num_noise, size=(rows, length))
    token_ids[:, 0] = labels + 1  # id 0 is padding
    return TaskData(token_ids.astype("int32"), labels.astype("int32"), num_classes + num_noise + 1)


@dataclass
class TaskResult:
    """One cell trained at one length."""

    variant: str
    length: int
    seed: int
    steps: int
    accuracy: float  # on held-out sequences
    trace: StepTrace

    def to_dict(self) -> dict:
        return {"variant": self.variant, "length": self.length, "seed": self.seed,
                "steps": self.steps, "accuracy": self.accuracy,
                "final_loss": float(np.mean(self.trace.losses[-10:]))}


def train_on_task(variant: str, length: int, *, steps: int = 300, batch_size: int = 32,
                  num_classes: int = NUM_CLASSES, optimizer: str = "adam",
                  hidden_dim: int = 32, embedding_dim: int = 16, learning_rate: float = 1e-2,
                  clip_norm: float | None = 5.0, init_scale: float | None = None,
                  eval_rows: int = 512, seed: int = 0, progress=None) -> TaskResult:
    """Trains a fresh classifier of `variant` (a cell, or gated_lstm:GATES) on the task; held-out accuracy.

    The classifier reads the final hidden state ("last" pooling). `init_scale`
    is the zoo's option (every weight uniform in [-init_scale, init_scale], as
    in Zaremba et al.); None keeps the Keras initializers, whose orthogonal
    recurrent matrix starts a SimpleRNN with spectral radius 1. Every step
    draws a new batch, so the model never sees a sequence twice and the
    held-out accuracy is on sequences it never saw.
    """
    cell, options = parse_variant(variant)
    keras.utils.set_random_seed(seed)
    train = first_token_task(steps * batch_size, length, num_classes=num_classes, seed=seed)
    held_out = first_token_task(eval_rows, length, num_classes=num_classes, seed=seed + 10_000)
    model = zoo.build("classifier", cell=cell, vocabulary_size=train.vocabulary_size,
                      num_classes=num_classes, hidden_dim=hidden_dim, embedding_dim=embedding_dim,
                      pooling="last", init_scale=init_scale, **options)
    batches = ((train.token_ids[i:i + batch_size], train.labels[i:i + batch_size])
               for i in range(0, steps * batch_size, batch_size))
    optimizers = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
    trace = train_steps(model, batches, optimizers[optimizer](learning_rate), clip_norm,
                        progress=progress)
    predicted = np.argmax(keras.ops.convert_to_numpy(model(held_out.token_ids, training=False)), -1)
    accuracy = float((predicted == held_out.labels).mean())
    return TaskResult(variant, length, seed, steps, accuracy, trace)
