"""Language-model training with truncated backpropagation through time.

Zaremba et al. (2014) cut the corpus into `batch_size` contiguous streams and
walk them `num_steps` tokens at a time; the recurrent state at the end of one
batch is where the next batch starts, so the model sees dependencies longer
than `num_steps` while gradients stop at the batch edge. `CarriedStateTrainer`
wraps a zoo `LanguageModel` to do that inside `keras.Model.fit`: it keeps the
state in non-trainable variables, one for training and one for evaluation, and
`CarriedStateReset` puts the state back to the start at each epoch and each
evaluation.

Under a `tf.distribute` strategy each replica owns a fixed slice of the
streams (`training.distribution.streams_for_replicas`) and carries the state of
those rows only, in its own copy of the state variables.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from training.distribution import step_outputs_for_fit
from training.lm_batching import lm_dataset, num_batches
from training.metrics import Perplexity, perplexity


class CarriedStateTrainer(keras.Model):
    """Trains a zoo LanguageModel with its state carried across batches.

    Args:
        language_model: A built or unbuilt `zoo.LanguageModel`.
        batch_size: The number of streams (fixed: row j of every batch
            continues row j of the previous one).
        sum_loss_over_time: Take gradients of the cross-entropy summed over the
            window's time steps (and averaged over the batch), as Zaremba et
            al.'s code does, instead of Keras' mean over all tokens. With SGD at
            learning rate 1 this is what the paper's hyperparameters assume:
            the per-token mean makes every step num_steps times smaller. The
            reported loss stays the per-token mean either way.

    The wrapped model is what gets saved and exported; the trainer only adds
    the carried state. The state variables hold all `batch_size` rows whatever
    the number of replicas (so a run resumes under another strategy); each
    replica has its own copy and reads and writes only its own rows of it. `reset_state()` starts every stream again from the
    model's initial state (zeros, or the learned state, which then receives
    gradients from the first batch after a reset).
    """

    def __init__(self, language_model, batch_size: int, sum_loss_over_time: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.language_model = language_model
        self.batch_size = int(batch_size)
        self.sum_loss_over_time = bool(sum_loss_over_time)
        size = language_model.state_size
        self.train_state = self._replica_variable((self.batch_size, size), "float32", "train_state")
        self.eval_state = self._replica_variable((self.batch_size, size), "float32", "eval_state")
        # True right after a reset: the step then starts from the model's
        # initial state instead of the carried one.
        self.train_at_start = self._replica_variable((), "bool", "train_at_start")
        self.eval_at_start = self._replica_variable((), "bool", "eval_at_start")
        self.perplexity = Perplexity()  # see compile()

        self.build((self.batch_size, None))

    def compile(self, *args, metrics=None, **kwargs):
        """As `keras.Model.compile`; the trainer reports the perplexity itself.

        Its `Perplexity` is fed from the loss, which already is the batch's
        mean cross-entropy per token, so no second softmax over the vocabulary
        runs (at the medium shape that softmax is a twentieth of a training
        step). A `Perplexity` passed in `metrics` is dropped as a duplicate.
        """
        others = [metric for metric in metrics or [] if not isinstance(metric, Perplexity)]
        super().compile(*args, metrics=others or None, **kwargs)

    @staticmethod
    def _replica_variable(shape, dtype, name):
        # One copy per replica (ON_READ), none of them summed with the others; a
        # read outside the replicas (saving a backup) sees the first replica's.
        return keras.Variable(
            initializer="ones" if dtype == "bool" else "zeros", shape=shape, dtype=dtype,
            trainable=False, synchronization="on_read", aggregation="only_first_replica", name=name)

    def build(self, token_ids_shape):
        if not self.language_model.built:
            self.language_model.build(token_ids_shape)
        self.built = True

    def call(self, token_ids, training=None):
        return self.language_model(token_ids, training=training)

    def reset_state(self, which: str = "both") -> None:
        """Marks the train and/or eval streams as starting again."""
        if which in ("train", "both"):
            self.train_at_start.assign(True)
        if which in ("eval", "both"):
            self.eval_at_start.assign(True)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy, Keras builds the optimizer and metrics from a sample
        # batch that it makes by averaging the replicas' first batches, which
        # MultiWorkerMirroredStrategy cannot do for int32 token ids. Any batch of
        # token ids builds the same variables: hand Keras one of zeros instead.
        if iterator is not None:
            tokens = tf.zeros((self.batch_size, 1), tf.int32)
            iterator, data_batch = None, (tokens, tokens)
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _replica_rows(self):
        """(first row, rows) of the streams this replica trains on."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        rows = self.batch_size // replicas
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return replica * rows, rows

    def _start_state(self, carried, at_start):
        first, rows = self._replica_rows()
        # The state is kept in float32 whatever the model computes in (a
        # bfloat16 policy): that is where the stream's memory lives.
        initial = tf.cast(self.language_model.initial_state(rows), carried.dtype)
        return tf.where(at_start, initial, carried[first:first + rows])

    def _carry(self, carried, new_state):
        """Writes this replica's rows of the state back; the other rows stay as they are."""
        first, rows = self._replica_rows()
        new_state = tf.cast(new_state, carried.dtype)
        carried.assign(tf.concat([carried[:first], new_state, carried[first + rows:]], axis=0))

    def train_step(self, data):
        token_ids, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            state = self._start_state(self.train_state, self.train_at_start)
            logits, new_state = self.language_model(
                token_ids, initial_state=state, return_state=True, training=True
            )  # (batch, time, vocabulary), (batch, state)
            # Keras scales the loss by 1/replicas, so the replicas' gradients sum
            # to the gradient of the global batch's mean loss.
            loss = self.compute_loss(x=token_ids, y=targets, y_pred=logits, training=True)
            objective = loss
            if self.sum_loss_over_time:
                objective = loss * tf.cast(tf.shape(token_ids)[1], loss.dtype)
        variables = self.trainable_variables
        gradients = tape.gradient(objective, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        # The state moves on; the gradient stops at the batch edge (truncated BPTT).
        self._carry(self.train_state, tf.stop_gradient(new_state))
        self.train_at_start.assign(False)
        return self._update_metrics(loss, targets, logits)

    def test_step(self, data):
        token_ids, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        state = self._start_state(self.eval_state, self.eval_at_start)
        logits, new_state = self.language_model(
            token_ids, initial_state=state, return_state=True, training=False
        )
        loss = self.compute_loss(x=token_ids, y=targets, y_pred=logits, training=False)
        self._carry(self.eval_state, new_state)
        self.eval_at_start.assign(False)
        return self._update_metrics(loss, targets, logits)

    def _update_metrics(self, loss, targets, logits):
        # The loss is the per-token mean over this replica's rows, which Keras
        # scaled by 1/replicas: unscaled, it is what the loss metric and the
        # perplexity need, without a second softmax over the vocabulary.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        mean_cross_entropy = loss * tf.cast(replicas, loss.dtype)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(mean_cross_entropy)
            elif isinstance(metric, Perplexity):
                metric.update_from_mean(mean_cross_entropy, tf.size(targets))
            else:
                metric.update_state(targets, logits)
        return step_outputs_for_fit({metric.name: metric.result() for metric in self.metrics})


class CarriedStateReset(keras.callbacks.Callback):
    """Restarts the training streams each epoch and the eval streams each evaluation."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.reset_state("train")

    def on_test_begin(self, logs=None):
        self.model.reset_state("eval")


def evaluate_language_model(model, token_ids, *, batch_size: int = 10, num_steps: int = 35) -> dict:
    """Mean cross-entropy and perplexity of `model` on a token-id stream.

    The stream is evaluated the way it is trained: `batch_size` contiguous
    streams, the state carried across windows of `num_steps`. The tail that
    does not fill a window is dropped (at most batch_size * (num_steps + 1)
    tokens).

    Returns:
        {"cross_entropy": nats per token, "perplexity": exp of it, "tokens": n}
    """
    token_ids = np.asarray(token_ids)
    batch_size = min(batch_size, max(1, (len(token_ids) - 1) // (num_steps + 1)))
    if num_batches(len(token_ids), batch_size, num_steps) == 0:
        raise ValueError(
            f"{len(token_ids)} tokens are too few to evaluate with num_steps={num_steps}."
        )

    @tf.function(reduce_retracing=True)
    def window_loss(inputs, targets, state):
        logits, new_state = model(inputs, initial_state=state, return_state=True, training=False)
        cross_entropy = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        return tf.reduce_sum(cross_entropy), new_state

    state = model.initial_state(batch_size)
    total, count = 0.0, 0
    for inputs, targets in lm_dataset(token_ids, batch_size, num_steps):
        loss_sum, state = window_loss(inputs, targets, state)
        total += float(loss_sum)
        count += int(np.prod(targets.shape))
    mean = total / count
    return {"cross_entropy": mean, "perplexity": perplexity(mean), "tokens": count}
