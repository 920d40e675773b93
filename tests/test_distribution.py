"""Training under tf.distribute: the strategy flag, true global-norm clipping,
and replicas that train the same weights as one device on the same global batch.

Two replicas sum their halves of the batch's gradient in another order than one
device sums the whole, so weights agree to float32 rounding, not bit for bit:
measured here, 3e-8 after one epoch of the tiny model below. The tolerance,
1e-6, is thirty times that, while the faults it guards against move weights by
far more: clipping each replica's share (Keras' own behaviour) gave 0.2 on the
same run, and a replica reading another's rows breaks the carried state.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo  # noqa: F401  (registers the zoo's classes for load_model)
from training import distribution
from training import run as run_module
from training import train as train_cli
from training.clipping import clip_by_global_norm, global_norm, with_global_norm_clipping

from tiny_corpora import write_conllu, write_sst, write_text

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
WEIGHT_TOLERANCE = 1e-6
# A tiny two-layer LSTM language model whose clipping binds at every step
# (SGD at learning rate 1, clip norm 0.05), so a wrong norm shows at once.
TRAIN_ARGUMENTS = ["--task", "language_model", "--cell", "lstm", "--set", "embedding_dim=8",
                   "--set", "hidden_dim=8", "--set", "num_layers=2", "--batch_size", "4",
                   "--num_steps", "5", "--optimizer", "sgd", "--learning_rate", "1.0",
                   "--clip_norm", "0.05", "--verbose", "0"]


# === Roles and strategies ===


def _tf_config(index, ports=(1111, 2222), chief=False):
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    if chief:
        cluster["chief"] = ["localhost:3333"]
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def test_the_chief_is_worker_0_unless_the_cluster_names_one():
    assert distribution.is_chief(None)
    assert distribution.is_chief(_tf_config(0))
    assert not distribution.is_chief(_tf_config(1))
    assert not distribution.is_chief(_tf_config(0, chief=True))
    chief = json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}})
    assert distribution.is_chief(chief)


def test_workers_other_than_the_chief_write_beside_the_run(tmp_path):
    assert distribution.worker_output_dir(tmp_path / "run", _tf_config(0)) == tmp_path / "run"
    assert distribution.worker_output_dir(tmp_path / "run", _tf_config(1)) == tmp_path / "run.worker-1"


@pytest.mark.parametrize("tf_config, message", [
    ("not json", "TF_CONFIG must be JSON"),
    (json.dumps({"cluster": {}}), "TF_CONFIG must be JSON with a task"),
])
def test_a_malformed_tf_config_is_named(tf_config, message):
    with pytest.raises(ValueError, match=message):
        distribution.cluster_role(tf_config)


def test_multi_worker_without_tf_config_says_what_it_needs(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        distribution.make_strategy("multi_worker")
    with pytest.raises(ValueError, match="Unknown strategy 'ring'"):
        distribution.make_strategy("ring")
    assert distribution.make_strategy("default") is tf.distribute.get_strategy()


def test_the_command_lines_strategies_are_the_trainers():
    assert train_cli._STRATEGIES == distribution.STRATEGIES


def test_a_batch_that_does_not_split_across_replicas_is_refused():
    class TwoReplicas:
        num_replicas_in_sync = 2
    with pytest.raises(ValueError, match="batch_size 5 does not split across 2 replicas"):
        distribution.replica_rows(5, TwoReplicas())
    assert distribution.replica_rows(6, TwoReplicas()) == 3


# === Clipping by the true global norm ===


def test_the_global_norm_adds_repeated_rows_before_squaring():
    # Row 0 twice (an embedding row of a token seen twice) and row 2 once.
    slices = tf.IndexedSlices(tf.constant([[1.0, 2.0], [3.0, 4.0], [0.5, 0.5]]),
                              tf.constant([0, 0, 2]), tf.constant([3, 2]))
    dense = tf.constant([[1.0, 1.0, 1.0]])
    expected = np.sqrt(np.sum(tf.convert_to_tensor(slices).numpy() ** 2) + 3.0)  # rows (4, 6), (.5, .5)
    assert float(global_norm([slices, dense, None])) == pytest.approx(expected, rel=1e-6)
    # Keras' own norm squares the repeats apart: sqrt(1+4+9+16+.5+3) < the true norm.
    assert float(keras.src.optimizers.base_optimizer.global_norm([slices, dense])) < expected - 1


def test_clipping_bounds_the_global_norm_at_the_threshold_and_keeps_slices_sparse():
    slices = tf.IndexedSlices(tf.constant([[3.0, 0.0], [0.0, 4.0]]), tf.constant([1, 1]), tf.constant([5, 2]))
    dense = tf.constant([12.0])
    clipped = clip_by_global_norm([slices, dense, None], 2.0)
    assert isinstance(clipped[0], tf.IndexedSlices) and clipped[2] is None
    assert float(global_norm(clipped)) == pytest.approx(2.0, rel=1e-6)
    unclipped = clip_by_global_norm([dense], 100.0)
    np.testing.assert_array_equal(unclipped[0].numpy(), dense.numpy())


def test_the_clipping_optimizer_saves_as_the_keras_optimizer_it_extends():
    optimizer = with_global_norm_clipping(keras.optimizers.SGD)(learning_rate=0.5, global_clipnorm=1.0)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
    assert type(restored) is keras.optimizers.SGD and restored.global_clipnorm == 1.0


def test_a_training_step_moves_the_weights_by_exactly_the_clip_norm():
    keras.utils.set_random_seed(0)
    embedding = keras.layers.Embedding(6, 3)
    embedding.build((None,))
    optimizer = with_global_norm_clipping(keras.optimizers.SGD)(learning_rate=1.0, global_clipnorm=0.1)
    before = embedding.embeddings.numpy().copy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(embedding(tf.constant([1, 1, 1, 4])) ** 2) * 100.0
    gradients = tape.gradient(loss, embedding.trainable_variables)
    assert isinstance(gradients[0], tf.IndexedSlices)
    optimizer.apply_gradients(zip(gradients, embedding.trainable_variables))
    step = embedding.embeddings.numpy() - before
    assert np.linalg.norm(step) == pytest.approx(0.1, rel=1e-5)
    assert np.count_nonzero(np.abs(step).sum(1)) == 2  # rows 1 and 4 only


# === Replicas train what one device trains ===


def _environment():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _train(data, output_dir, *extra, tf_config=None):
    environment = _environment()
    if tf_config:
        environment["TF_CONFIG"] = tf_config
    return subprocess.Popen([sys.executable, "-m", "training.train", *TRAIN_ARGUMENTS, "--data", str(data),
                             "--output_dir", str(output_dir), *extra],
                            cwd=REPOSITORY_ROOT, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process, timeout=240):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out


def _weights(run_dir):
    return [w.numpy() for w in keras.saving.load_model(run_dir / "model.keras").weights]


def _assert_same_weights(run_a, run_b):
    for a, b in zip(_weights(run_a), _weights(run_b), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=WEIGHT_TOLERANCE)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_text(tmp_path_factory.mktemp("distributed") / "ptb", "ptb.train.txt", "ptb.valid.txt")


def test_two_workers_train_the_weights_one_worker_trains_and_resume_together(corpus, tmp_path):
    ports = _free_ports(2)
    configs = [json.dumps({"cluster": {"worker": [f"localhost:{port}" for port in ports]},
                           "task": {"type": "worker", "index": index}}) for index in range(2)]
    single = _train(corpus, tmp_path / "single", "--epochs", "2")
    for epochs in ("1", "2"):  # the second round resumes both workers from their first epoch
        workers = [_train(corpus, tmp_path / "cluster", "--epochs", epochs, "--strategy", "multi_worker",
                          tf_config=config) for config in configs]
        for process in workers:
            _finish(process)
    _finish(single)
    _assert_same_weights(tmp_path / "single", tmp_path / "cluster")
    _assert_same_weights(tmp_path / "cluster", tmp_path / "cluster.worker-1")
    for name in ("single", "cluster", "cluster.worker-1"):
        with open(tmp_path / name / "history.csv") as history:
            assert [row.split(",")[0] for row in history.read().split()[1:]] == ["0", "1"], name
    single_dev = json.loads((tmp_path / "single" / "metrics.json").read_text())["dev"]
    cluster_dev = json.loads((tmp_path / "cluster" / "metrics.json").read_text())["dev"]
    assert cluster_dev["cross_entropy"] == pytest.approx(single_dev["cross_entropy"], abs=1e-5)


def test_two_replicas_on_one_host_train_the_weights_one_device_trains(corpus, tmp_path):
    # Two logical CPUs stand in for two GPUs: one input pipeline feeding two replicas.
    config = run_module.resolve_config(
        task="language_model", cell="lstm", model={"embedding_dim": 8, "hidden_dim": 8, "num_layers": 2},
        training={"batch_size": 4, "num_steps": 5, "epochs": 1, "optimizer": "sgd",
                  "learning_rate": 1.0, "clip_norm": 0.05},
        data={"source": str(corpus)}, output_dir=str(tmp_path / "mirrored"))
    script = ("import json, sys\nimport tensorflow as tf\n"
              "cpu = tf.config.list_physical_devices('CPU')[0]\n"
              "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
              "from training.run import train\n"
              "strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])\n"
              "assert strategy.num_replicas_in_sync == 2\n"
              "train(json.loads(sys.argv[1]), verbose=0, strategy=strategy)\n")
    mirrored = subprocess.Popen([sys.executable, "-c", script, json.dumps(config)], cwd=REPOSITORY_ROOT,
                                env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    single = _train(corpus, tmp_path / "single", "--epochs", "1")
    _finish(mirrored)
    _finish(single)
    _assert_same_weights(tmp_path / "single", tmp_path / "mirrored")


# A classifier and a tagger without dropout (the replicas' dropout masks would
# differ from one device's), on 64 sentences: 16 global batches of 4.
SENTENCE_TASKS = {
    "classifier": (write_sst, ["--task", "classifier", "--cell", "lstm", "--set", "bidirectional=true"]),
    "tagger": (write_conllu, ["--task", "tagger", "--cell", "gru", "--set", "bidirectional=true"]),
}


@pytest.mark.parametrize("task", SENTENCE_TASKS)
def test_two_workers_train_the_classifier_and_tagger_one_worker_trains(task, tmp_path):
    write, task_arguments = SENTENCE_TASKS[task]
    data = write(tmp_path / "data")
    arguments = [*task_arguments, "--set", "embedding_dim=8", "--set", "hidden_dim=8", "--set", "dropout=0",
                 "--batch_size", "4", "--epochs", "1", "--optimizer", "sgd", "--learning_rate", "0.5",
                 "--clip_norm", "1", "--verbose", "0", "--data", str(data)]

    def start(output_dir, *extra, tf_config=None):
        environment = _environment()
        if tf_config:
            environment["TF_CONFIG"] = tf_config
        return subprocess.Popen([sys.executable, "-m", "training.train", *arguments, "--output_dir",
                                 str(output_dir), *extra], cwd=REPOSITORY_ROOT, env=environment,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    ports = _free_ports(2)
    workers = [start(tmp_path / "cluster", "--strategy", "multi_worker",
                     tf_config=json.dumps({"cluster": {"worker": [f"localhost:{port}" for port in ports]},
                                           "task": {"type": "worker", "index": index}}))
               for index in range(2)]
    for process in workers:
        _finish(process)
    _finish(start(tmp_path / "single"))
    _assert_same_weights(tmp_path / "single", tmp_path / "cluster")
    _assert_same_weights(tmp_path / "cluster", tmp_path / "cluster.worker-1")
    single_dev = json.loads((tmp_path / "single" / "metrics.json").read_text())["dev"]
    cluster_dev = json.loads((tmp_path / "cluster" / "metrics.json").read_text())["dev"]
    assert cluster_dev["accuracy"] == pytest.approx(single_dev["accuracy"], abs=1e-9)
