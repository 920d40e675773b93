"""Training on several devices or machines with `tf.distribute`.

`rnn-zoo-train --strategy` picks one of three strategies:

- `default`: one device, no distribution (what every run did before);
- `mirrored`: `tf.distribute.MirroredStrategy`, every GPU of this host (or the
  CPU when there is none), one replica each;
- `multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy` across hosts,
  each host started with the same command and a `TF_CONFIG` naming the cluster
  and its own place in it (see the README's "Scaling out").

The global batch is split across replicas; gradients are summed across them
before the optimizer steps, so R replicas of B/R rows take the step one device
takes on B rows. Two things Keras does not do on its own:

- **The language model's streams stay contiguous.** Row j of every batch
  continues row j of the batch before (`training.lm_batching`). Replica r owns
  rows [r*B/R, (r+1)*B/R) of every batch, from the first to the last, and
  carries its own recurrent state for them (`streams_for_replicas`,
  `CarriedStateTrainer`); Keras' own splitting would hand the batches of a
  stream to different replicas.
- **Global-norm clipping clips the global gradient.** Keras clips each
  replica's share of the gradient before summing the shares;
  `training.clipping` sums them first and clips the sum.

Workers other than the chief write their run directory beside the chief's
(`<output_dir>.worker-<index>`): every worker keeps its own resume state and
logs, and only the chief's directory is the run to export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy for `--strategy name`.

    Raises:
        ValueError: an unknown name, `multi_worker` without a `TF_CONFIG`, or a
            multi-worker strategy asked for after TensorFlow has run ops in this
            process (its collectives are configured at start-up only).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy multi_worker needs TF_CONFIG: the cluster's workers and this "
                             "one's place among them (see the README, 'Scaling out').")
        cluster_role(os.environ["TF_CONFIG"])  # a clear error for a malformed TF_CONFIG
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise ValueError("--strategy multi_worker must be set up before TensorFlow runs any "
                             f"operation in this process: {error}") from error
    raise ValueError(f"Unknown strategy {name!r}. Valid strategies: {', '.join(STRATEGIES)}.")


def cluster_role(tf_config: str | None) -> tuple[str | None, int]:
    """(task type, task index) from a `TF_CONFIG` value; (None, 0) without one.

    Raises:
        ValueError: TF_CONFIG is not JSON or names no task.
    """
    if not tf_config:
        return None, 0
    try:
        config = json.loads(tf_config)
        task = config["task"]
        return str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG must be JSON with a task {{\"type\": ..., \"index\": ...}} "
                         f"and a cluster: {error}") from error


def is_chief(tf_config: str | None) -> bool:
    """Whether this process is the cluster's chief: the `chief` task, or worker 0
    when the cluster has no chief (as `MultiWorkerMirroredStrategy` decides)."""
    if not tf_config:
        return True
    task_type, index = cluster_role(tf_config)
    cluster = json.loads(tf_config).get("cluster", {})
    if task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and "chief" not in cluster


def worker_output_dir(output_dir: str | Path, tf_config: str | None) -> Path:
    """Where this worker writes its run: the run directory itself on the chief,
    `<output_dir>.worker-<index>` on the other workers."""
    output_dir = Path(output_dir)
    if is_chief(tf_config):
        return output_dir
    task_type, index = cluster_role(tf_config)
    return output_dir.with_name(f"{output_dir.name}.{task_type}-{index}")


def replica_rows(batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """Rows of the global batch each replica takes.

    Raises:
        ValueError: the batch does not split evenly across the replicas.
    """
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"batch_size {batch_size} does not split across {replicas} replicas: "
                         f"give a multiple of {replicas}.")
    return batch_size // replicas


def streams_for_replicas(make_dataset, batch_size: int, strategy: tf.distribute.Strategy):
    """Distributes language-model batches so that replica r always gets the same rows.

    Args:
        make_dataset: () -> the `(inputs, targets)` dataset of global batches
            (`training.lm_batching.lm_dataset`), built on each worker.
        batch_size: Rows of a global batch (the number of streams).

    Returns:
        A distributed dataset for `fit`: replica r receives rows
        [r*b, (r+1)*b) of every batch, b = batch_size / replicas.
    """
    replicas = strategy.num_replicas_in_sync
    rows = replica_rows(batch_size, strategy)

    def per_input_pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        # One input pipeline per worker; a worker feeds its replicas one element
        # each in turn, so its replicas' slices go out in replica order.
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local * rows

        def slices(inputs, targets):
            # (batch, steps) -> (local replicas, rows, steps)
            take = lambda t: tf.reshape(t[first:first + local * rows], (local, rows, -1))  # noqa: E731
            return take(inputs), take(targets)

        return make_dataset().map(slices).unbatch()

    return strategy.distribute_datasets_from_function(per_input_pipeline)


# === Keras' fit under MultiWorkerMirroredStrategy ===


def is_multi_worker() -> bool:
    """Whether the strategy in scope is a `MultiWorkerMirroredStrategy`."""
    return isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)


def step_outputs_for_fit(results: dict) -> dict:
    """A train or test step's metrics, in the shape Keras' fit can gather across workers.

    Under `MultiWorkerMirroredStrategy` Keras concatenates the replicas' step
    outputs along axis 0, which fails on scalars (tensorflow/tensorflow#72388):
    there each figure becomes a vector of one. Every replica holds the same
    figures, as metrics are summed across replicas when they update.
    Elsewhere the results pass unchanged.
    """
    if not is_multi_worker():
        return results
    return tf.nest.map_structure(lambda value: tf.reshape(value, [1]), results)


def zeros_like_batches_of(iterator):
    """A batch of zeros with the structure and dtypes of the batches `iterator` gives.

    Keras builds a model's metrics under a strategy from a first batch that it
    averages across the replicas, which `MultiWorkerMirroredStrategy` cannot do
    for integer token ids; any batch of the right dtypes and ranks builds the
    same variables. Unknown dimensions become 1.
    """
    spec = iterator._distributed_dataset.element_spec  # Keras' TFEpochIterator

    def zeros(part):
        part = getattr(part, "_component_specs", [part])[0]  # a PerReplicaSpec: its first replica's
        return tf.zeros([1 if size is None else size for size in part.shape], part.dtype)

    return tf.nest.map_structure(zeros, spec)


class MultiWorkerTrainer(keras.Model):
    """Trains a classifier or tagger with Keras' own steps under `MultiWorkerMirroredStrategy`.

    It adds only what `fit` needs there (`step_outputs_for_fit`,
    `zeros_like_batches_of`); the wrapped model is what gets evaluated, saved
    and exported. The language model's `CarriedStateTrainer` does the same.
    """

    def __init__(self, model: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.trained = model
        self.built = model.built  # its weights are the model's

    def call(self, inputs, training=None):
        return self.trained(inputs, training=training)

    def train_step(self, data):
        return step_outputs_for_fit(super().train_step(data))

    def test_step(self, data):
        return step_outputs_for_fit(super().test_step(data))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            iterator, data_batch = None, zeros_like_batches_of(iterator)
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
