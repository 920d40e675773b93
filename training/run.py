"""One training run, start to finish: data, vocabulary, model, fit, evaluation, files.

`resolve_config` merges a preset (or task defaults) with the user's overrides
into one plain dict; `train` runs it and leaves a run directory behind:

    <output_dir>/
      config.json       the resolved config (what `serving.export` needs to rebuild inputs)
      vocabulary.json   built from the train split only
      char_vocabulary.json  the characters of the train split's words (taggers
                        and classifiers with a character model)
      labels.json       class or tag names (classifier, tagger)
      model.keras       the trained model (`keras.saving.load_model` after `import zoo`)
      metrics.json      dev metrics after training
      history.csv       per-epoch metrics; curves.png, the same as a plot
      tensorboard/      TensorBoard logs
      checkpoint.weights.h5, backup/   resume state (see below)

      run.json          what the run was made from: its config and fingerprints of
                        its train and dev splits (`training.run_directory`)

Interrupting a run and starting the same command again resumes from the last
finished epoch (Keras `BackupAndRestore`); the vocabulary is reloaded, not
rebuilt, so ids stay the same. Another corpus or config into a used directory
stops with `RunDirectoryError` instead of mixing the two.

A tagger or classifier has a character model (Plank et al. 2016) when its
model options set any of `char_embedding_dim`, `char_hidden_dim`,
`max_word_length` (the `ewt_char_bilstm` and `sst_char_bilstm` presets do);
`char_vocabulary_size` is filled in from the character vocabulary, as
`vocabulary_size` is from the word vocabulary.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import zoo
from training import distribution, run_directory, warm_start
from training.clipping import with_global_norm_clipping
from training.precision import compute_in_float32, dtype_policy, resolve_precision
from training.datasets import classification_dataset, load_split, tagging_dataset
from training.datasets.pipelines import with_word_dropout, word_dropout_rates
from training.losses import language_model_loss
from training.language_model import CarriedStateReset, CarriedStateTrainer, evaluate_language_model
from training.lm_batching import lm_dataset
from training.metrics import per_tag_accuracy
from training.plots import PlotHistory, plot_history
from training.schedules import zaremba_learning_rate
from training.vocab import LabelVocabulary, Vocabulary
from zoo.cells import check_cell_type
from zoo.characters import MAX_WORD_LENGTH

logger = logging.getLogger(__name__)

TASK_TRAINING_DEFAULTS = {
    "language_model": {"batch_size": 20, "num_steps": 35, "epochs": 5, "optimizer": "adam",
                       "learning_rate": 1e-3, "clip_norm": 5.0},
    "classifier": {"batch_size": 32, "epochs": 5, "optimizer": "adam", "learning_rate": 1e-3,
                   "clip_norm": 5.0, "early_stopping_patience": 2},
    "tagger": {"batch_size": 32, "epochs": 5, "optimizer": "adam", "learning_rate": 1e-3,
               "clip_norm": 5.0, "early_stopping_patience": 2},
}
TRAINING_KEYS = ("batch_size", "num_steps", "epochs", "optimizer", "learning_rate", "lr_decay",
                 "decay_start_epoch", "clip_norm", "early_stopping_patience", "sum_loss_over_time",
                 "precision", "word_dropout", "init_from", "init_layers")
DATA_KEYS = ("source", "dev_source", "level", "tag_column", "valid_fraction", "valid_start", "data_dir",
             "download", "max_train", "max_dev", "vocabulary_min_count", "vocabulary_max_size",
             "reverse")
# Model options that ask a tagger for a character model.
CHARACTER_OPTIONS = ("char_vocabulary_size", "char_embedding_dim", "char_hidden_dim",
                     "max_word_length")
OPTIMIZERS = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adagrad": keras.optimizers.Adagrad,
    "rmsprop": keras.optimizers.RMSprop,
}


def resolve_config(
    *,
    preset: str | None = None,
    task: str | None = None,
    cell: str | None = None,
    model: dict | None = None,
    training: dict | None = None,
    data: dict | None = None,
    output_dir: str | None = None,
    seed: int = 0,
) -> dict:
    """Merges a preset or task defaults with overrides into one validated config.

    Raises:
        ValueError: no preset and no task, a task that contradicts the preset,
            unknown training or data keys, unknown model options.
    """
    base = zoo.get_preset(preset) if preset else None
    if base is None and task is None:
        raise ValueError("Give a --preset or a --task (one of: " + ", ".join(zoo.TASKS) + ").")
    if base is not None and task is not None and task != base["task"]:
        raise ValueError(f"Preset {preset!r} is a {base['task']} preset, not {task!r}.")
    task = task or base["task"]
    zoo.model_class(task)  # raises on an unknown task

    model_options = copy.deepcopy(base["model"]) if base else {}
    model_options.update(model or {})
    cell = cell or model_options.pop("cell", None) or "lstm"
    model_options.pop("cell", None)
    unknown = sorted(set(model_options) - set(zoo.valid_options(task)))
    if unknown:
        raise ValueError(f"Unknown model option(s) {unknown} for {task}. "
                         f"Valid options: {', '.join(zoo.valid_options(task))}.")
    zoo.check_option_values(task, model_options)
    check_cell_type(cell)

    training_options = dict(TASK_TRAINING_DEFAULTS[task])
    training_options.update(base["training"] if base else {})
    training_options.update({k: v for k, v in (training or {}).items() if v is not None})
    _reject_unknown("training", training_options, TRAINING_KEYS)
    resolve_precision(training_options.get("precision", "float32"))  # raises on an unknown one
    if task == "language_model" and training_options.get("word_dropout"):
        raise ValueError("word_dropout is for classifiers and taggers; a language model's inputs "
                         "are its targets too.")
    if training_options.get("init_from"):
        if task == "language_model":
            raise ValueError("init_from starts a classifier or tagger from language models; "
                             "to continue a language model, run its command again.")
        training_options["init_from"] = [str(path) for path in training_options["init_from"]]
    else:
        training_options.pop("init_from", None)
        if training_options.get("init_layers") is not None:
            raise ValueError("init_layers says how many recurrent layers --init_from copies; "
                             "give --init_from too.")
    if training_options.get("init_layers") is not None and training_options["init_layers"] < 0:
        raise ValueError(f"init_layers must be 0 or more, got {training_options['init_layers']}.")
    if training_options["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {training_options['optimizer']!r}. "
                         f"Valid optimizers: {', '.join(OPTIMIZERS)}.")

    data_options = {"level": "word", "tag_column": "upos", "valid_fraction": 0.1}
    if base:
        data_options["level"] = base.get("data", {}).get("level", "word")
        data_options["source"] = base.get("data", {}).get("tfds")
        if base.get("data", {}).get("valid_start"):
            data_options["valid_start"] = base["data"]["valid_start"]
    data_options.update({k: v for k, v in (data or {}).items() if v is not None})
    _reject_unknown("data", data_options, DATA_KEYS)
    if data_options.get("reverse") and task != "language_model":
        raise ValueError("reverse (reading text right to left) is for language models, which "
                         "then start the backward direction of a classifier or tagger (--init_from).")
    if not data_options.get("reverse"):
        data_options.pop("reverse", None)
    if not data_options.get("source"):
        raise ValueError("No data source: give --data (a local file or directory, or a "
                         "tensorflow-datasets name).")

    name = preset or f"{task}_{cell}"
    return {
        "task": task,
        "preset": preset,
        "cell": cell,
        "model": model_options,
        "training": training_options,
        "data": data_options,
        "seed": int(seed),
        "output_dir": str(output_dir or Path("runs") / name),
    }


def _reject_unknown(kind, options, valid):
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"Unknown {kind} option(s) {unknown}. Valid options: {', '.join(valid)}.")


# === Data ===


@dataclass
class PreparedData:
    """The splits of a run, encoded, with their vocabularies."""

    vocabulary: Vocabulary
    labels: LabelVocabulary | None
    train: object
    dev: object
    char_vocabulary: Vocabulary | None = None  # taggers and classifiers with a character model


def uses_characters(config: dict) -> bool:
    """Whether the run's tagger or classifier spells words out: a character option
    is set, and char_vocabulary_size is not set to 0 (which switches the character
    model off)."""
    model = config["model"]
    if config["task"] not in ("tagger", "classifier") or model.get("char_vocabulary_size") == 0:
        return False
    return any(option in model for option in CHARACTER_OPTIONS)


def max_word_length(config: dict) -> int:
    """Characters kept per word by a character tagger (the model's default if unset)."""
    return int(config["model"].get("max_word_length", MAX_WORD_LENGTH))


def load_splits(config: dict):
    """The train and dev splits of a run's data, as the config limits them."""
    task, data = config["task"], config["data"]
    options = {"level": data["level"], "tag_column": data["tag_column"],
               "valid_fraction": data["valid_fraction"], "valid_start": data.get("valid_start"),
               "data_dir": data.get("data_dir"),
               "download": bool(data.get("download"))}
    train = load_split(task, data["source"], "train", **options)
    if data.get("dev_source"):
        # An explicit dev file is read whole, never cut into train and dev parts.
        dev = load_split(task, data["dev_source"], "dev", **{**options, "valid_fraction": 0.0})
    elif task != "language_model" and Path(data["source"]).is_file():
        raise ValueError(f"{data['source']} is a single file: give its dev split with --dev_data "
                         "(or --data a directory holding both splits).")
    else:
        dev = load_split(task, data["source"], "dev", **options)
    train, dev = _limit(train, data.get("max_train")), _limit(dev, data.get("max_dev"))
    if data.get("reverse"):
        # Right to left: each split's stream read from its end (sentences reversed, and their
        # order too); a language model of it predicts each word from the words after it.
        train, dev = (dataclasses.replace(split, tokens=split.tokens[::-1]) for split in (train, dev))
    return train, dev


def load_data(config: dict, run_dir: Path | None = None, splits=None) -> PreparedData:
    """The splits and their vocabularies: built from the train split, or reloaded from `run_dir`.

    Pass `run_dir` only for a run that is resuming or finished (its vocabularies
    are then the ones the model was trained with); `splits` skips reading the
    data again when the caller has it.
    """
    task, data = config["task"], config["data"]
    train, dev = splits if splits is not None else load_splits(config)

    vocabulary_path = run_dir / "vocabulary.json" if run_dir else None
    if vocabulary_path and vocabulary_path.exists():
        vocabulary = Vocabulary.load(vocabulary_path)
    else:
        sequences = [train.tokens] if task == "language_model" else train.sentences
        vocabulary = Vocabulary.build(sequences, min_count=data.get("vocabulary_min_count") or 1,
                                      max_size=data.get("vocabulary_max_size"))
    labels = None
    if task == "classifier":
        labels = LabelVocabulary(train.label_names)
    elif task == "tagger":
        labels_path = run_dir / "labels.json" if run_dir else None
        if labels_path and labels_path.exists():
            labels = LabelVocabulary.load(labels_path)
        else:
            labels = LabelVocabulary.build(train.tags)
    char_vocabulary = None
    if uses_characters(config):
        char_vocabulary = _character_vocabulary(train.sentences, run_dir)
    return PreparedData(vocabulary, labels, train, dev, char_vocabulary)


def _character_vocabulary(sentences, run_dir: Path | None) -> Vocabulary:
    """The characters of the train split's words (reloaded when resuming)."""
    path = run_dir / "char_vocabulary.json" if run_dir else None
    if path and path.exists():
        return Vocabulary.load(path)
    # Every character seen counts, however rare: a character the vocabulary
    # leaves out is only `<unk>`, and spelling is what the model is for.
    return Vocabulary.build(list(word) for sentence in sentences for word in sentence)


def _limit(split, limit):
    """The first `limit` sentences (or tokens, for language models) of a split."""
    if not limit:
        return split
    fields = ("tokens", "sentences", "labels", "tags")
    return dataclasses.replace(
        split, **{name: getattr(split, name)[:limit] for name in fields if hasattr(split, name)})


def make_datasets(config: dict, prepared: PreparedData, *, shuffle_train: bool = True):
    """tf.data pipelines for train and dev, as the task needs them."""
    task, training = config["task"], config["training"]
    batch_size, vocabulary = training["batch_size"], prepared.vocabulary
    if task == "language_model":
        steps = training["num_steps"]
        train_ids = vocabulary.encode(prepared.train.tokens)
        dev_ids = vocabulary.encode(prepared.dev.tokens)
        return lm_dataset(train_ids, batch_size, steps), lm_dataset(dev_ids, batch_size, steps)
    if task == "classifier":
        make = lambda split, shuffle: classifier_dataset(  # noqa: E731
            config, prepared, split, batch_size, shuffle=shuffle)
    else:
        make = lambda split, shuffle: tagger_dataset(  # noqa: E731
            config, prepared, split, batch_size, shuffle=shuffle)
    train = make(prepared.train, shuffle_train)
    if training.get("word_dropout"):  # alpha of alpha / (count + alpha); dev is never dropped
        rates = word_dropout_rates(prepared.train.sentences, vocabulary, training["word_dropout"])
        train = with_word_dropout(train, rates, seed=config["seed"])
    return train, make(prepared.dev, False)


def classifier_dataset(config: dict, prepared: PreparedData, split, batch_size: int, *,
                       shuffle: bool = False):
    """A classification split as batches, with character ids when the classifier spells words."""
    return classification_dataset(split, prepared.vocabulary, batch_size, shuffle=shuffle,
                                  seed=config["seed"], characters=prepared.char_vocabulary,
                                  max_word_length=max_word_length(config))


def tagger_dataset(config: dict, prepared: PreparedData, split, batch_size: int, *,
                   shuffle: bool = False):
    """A tagging split as batches, with character ids when the tagger spells words."""
    return tagging_dataset(split, prepared.vocabulary, prepared.labels, batch_size,
                           shuffle=shuffle, seed=config["seed"],
                           characters=prepared.char_vocabulary,
                           max_word_length=max_word_length(config))


# === Model ===


def build_model(config: dict, prepared: PreparedData):
    """The zoo model for the config, sized to the data's vocabulary and labels."""
    options = dict(config["model"])
    options["vocabulary_size"] = len(prepared.vocabulary)
    if config["task"] == "classifier":
        options["num_classes"] = len(prepared.labels)
    elif config["task"] == "tagger":
        options["num_tags"] = len(prepared.labels)
    if prepared.char_vocabulary is not None:
        options["char_vocabulary_size"] = len(prepared.char_vocabulary)
    return zoo.build(config["task"], cell=config["cell"], **options)


def compile_for_training(model, config: dict, strategy: tf.distribute.Strategy | None = None):
    """Wraps language models for carried state; compiles with the config's optimizer.

    Call it inside `strategy.scope()` when training under a strategy.

    Returns:
        The keras.Model to call `fit` on (the model itself, or its trainer).
    """
    training = config["training"]
    if strategy is not None and config["task"] == "language_model":
        distribution.replica_rows(training["batch_size"], strategy)  # the streams must split evenly
    # Clipping by the global norm of all gradients, as Zaremba et al. do (and
    # as Keras' own clipping does not quite: see training.clipping).
    optimizer = with_global_norm_clipping(OPTIMIZERS[training["optimizer"]])(
        learning_rate=training["learning_rate"],
        global_clipnorm=training.get("clip_norm"),
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if config["task"] == "language_model":
        trainer = CarriedStateTrainer(model, batch_size=training["batch_size"],
                                      sum_loss_over_time=training.get("sum_loss_over_time", False))
        # The vocabulary-wide softmax written out: half the time of TensorFlow's
        # fused kernel, same values (training.losses).
        trainer.compile(optimizer=optimizer, loss=language_model_loss())  # it reports perplexity itself
        return trainer
    accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.build((None, None))  # BackupAndRestore needs built weights before fit
    trainable = model
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        trainable = distribution.MultiWorkerTrainer(model)  # what Keras' fit needs there
    if config["task"] == "tagger":
        # Padding positions carry sample weight 0: weighted metrics skip them.
        trainable.compile(optimizer=optimizer, loss=loss, weighted_metrics=[accuracy])
    else:
        trainable.compile(optimizer=optimizer, loss=loss, metrics=[accuracy])
    return trainable


EPOCH_SECONDS_FILE = "epoch_seconds.json"
INIT_REPORT = "init_from.json"  # what --init_from copied, written when the run first starts


class EpochSeconds(keras.callbacks.Callback):
    """Writes each epoch's wall-clock seconds to `epoch_seconds.json`, so a resumed run's total time is known."""

    def __init__(self, path: Path):
        super().__init__()
        self._path = path

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        seconds = read_epoch_seconds(self._path.parent)
        seconds[str(epoch)] = round(time.time() - self._started, 1)
        _write_json(self._path, dict(sorted(seconds.items(), key=lambda item: int(item[0]))))


def read_epoch_seconds(run_dir: Path) -> dict:
    """{epoch index (a string): seconds} of the epochs run so far, over every resume; {} if none recorded."""
    path = Path(run_dir) / EPOCH_SECONDS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def make_callbacks(config: dict, run_dir: Path) -> list:
    """Resume, checkpoints, logs, plots, the learning-rate schedule, early stopping."""
    training, task = config["training"], config["task"]
    title = config["preset"] or f"{task} ({config['cell']})"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        EpochSeconds(run_dir / EPOCH_SECONDS_FILE),
        keras.callbacks.ModelCheckpoint(str(run_dir / "checkpoint.weights.h5"), save_weights_only=True),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        PlotHistory(run_dir / "history.csv", run_dir / "curves.png", title),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard")),
    ]
    if training.get("lr_decay") and training.get("decay_start_epoch"):
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, _: zaremba_learning_rate(epoch, training["learning_rate"],
                                                   training["lr_decay"], training["decay_start_epoch"])))
    if task == "language_model":
        callbacks.append(CarriedStateReset())
    elif training.get("early_stopping_patience"):
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=training["early_stopping_patience"],
            restore_best_weights=True))
    return callbacks


# === Evaluation ===


def evaluate(model, config: dict, prepared: PreparedData, split) -> dict:
    """Dev metrics of a trained model: perplexity, accuracy, per-tag accuracy."""
    task, training = config["task"], config["training"]
    vocabulary = prepared.vocabulary
    if task == "language_model":
        return evaluate_language_model(model, vocabulary.encode(split.tokens),
                                       batch_size=training["batch_size"],
                                       num_steps=training["num_steps"])
    if task == "classifier":
        dataset = classifier_dataset(config, prepared, split, 256)
        predictions = np.concatenate([np.argmax(model(x, training=False), -1) for x, _ in dataset])
        gold = np.asarray(split.labels)
        return {"accuracy": float((predictions == gold).mean()), "examples": int(len(gold))}
    dataset = tagger_dataset(config, prepared, split, 256)
    predicted = []
    for inputs, _, _ in dataset:
        best = np.argmax(model(inputs, training=False), -1)
        token_ids = inputs["token_ids"] if isinstance(inputs, dict) else inputs
        lengths = (np.asarray(token_ids) != 0).sum(1)
        predicted.extend(row[:length].tolist() for row, length in zip(best, lengths))
    gold = [prepared.labels.encode(tags) for tags in split.tags]
    correct = sum(int((np.asarray(g) == np.asarray(p)).sum()) for g, p in zip(gold, predicted))
    total = sum(len(g) for g in gold)
    return {"accuracy": correct / total, "tokens": total,
            "per_tag": per_tag_accuracy(gold, predicted, prepared.labels.names)}


# === The run ===


def train(config: dict, *, verbose="auto", overwrite: bool = False,
          strategy: str | tf.distribute.Strategy = "default") -> dict:
    """Trains, evaluates and saves one run. Returns the metrics written to metrics.json.

    The run directory must be new, empty or hold this same run (see
    `training.run_directory`): the same config on the same data resumes from
    the last finished epoch. `overwrite` replaces whatever the directory held.
    A run stopped before its first epoch finished leaves nothing behind.

    `strategy` is a name from `training.distribution.STRATEGIES` or a
    `tf.distribute.Strategy`; under a multi-worker strategy the workers other
    than the chief write their run beside it (`training.distribution`).

    Raises:
        RunDirectoryError: the directory holds another run and `overwrite` is not set.
        ValueError: a strategy that cannot be set up, or a batch that does not
            split across its replicas.
    """
    if isinstance(strategy, str):
        strategy = distribution.make_strategy(strategy)
    run_dir = Path(config["output_dir"])
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        run_dir = distribution.worker_output_dir(run_dir, os.environ.get("TF_CONFIG"))
    keras.utils.set_random_seed(config["seed"])
    started = time.time()
    if config["training"].get("init_from"):
        warm_start.check_sources(config["training"]["init_from"])  # before reading any data
    splits = load_splits(config)
    wanted = run_directory.identity(config, *splits)
    resuming = run_directory.prepare(run_dir, wanted, overwrite=overwrite)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train_in(run_dir, config, splits, wanted, resuming=resuming, started=started,
                         verbose=verbose, strategy=strategy)
    except BaseException:
        if not run_directory.is_resumable(run_dir):
            # Nothing finished: leave nothing that a later run could take for its own.
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                run_directory.clear(run_dir)
        raise


def _train_in(run_dir: Path, config: dict, splits, wanted: dict, *, resuming: bool, started: float,
              verbose, strategy: tf.distribute.Strategy) -> dict:
    run_directory.write_identity(run_dir, wanted)
    # Vocabularies come from the run directory only when resuming, so that ids
    # stay those of the saved epochs; a fresh run builds them from its train split.
    prepared = load_data(config, run_dir if resuming else None, splits=splits)
    prepared.vocabulary.save(run_dir / "vocabulary.json")
    if prepared.labels is not None:
        prepared.labels.save(run_dir / "labels.json")
    if prepared.char_vocabulary is not None:
        prepared.char_vocabulary.save(run_dir / "char_vocabulary.json")
    config = {**config, "command": " ".join(shlex.quote(a) for a in sys.argv)}
    _write_json(run_dir / "config.json", config)
    logger.info("data: vocabulary %d%s, %s", len(prepared.vocabulary),
                f", characters {len(prepared.char_vocabulary)}" if prepared.char_vocabulary else "",
                "resuming from backup" if resuming else "fresh run")

    precision = resolve_precision(config["training"].get("precision", "float32"))
    with strategy.scope(), dtype_policy(precision):
        model = build_model(config, prepared)
        trainable = compile_for_training(model, config, strategy)
        if config["training"].get("init_from") and not resuming:
            # A resumed run's weights come from its backup; the report from its first start.
            report = warm_start.initialize_from(model, prepared.vocabulary,
                                                config["training"]["init_from"],
                                                layers=config["training"].get("init_layers"))
            _write_json(run_dir / INIT_REPORT, report)
            logger.info("started from %s", "; ".join(
                f"{entry['run']} ({entry['direction']}: layers {entry['layers']}"
                + (f", {entry['words_copied']} of {report['words']} word vectors" if "words_copied" in entry else "")
                + ")" for entry in report["runs"]))
    train_data, dev_data = make_datasets(config, prepared)
    if config["task"] == "language_model" and strategy.num_replicas_in_sync > 1:
        # Each replica keeps its own rows of the streams, batch after batch.
        batch_size = config["training"]["batch_size"]
        train_data, dev_data = (
            distribution.streams_for_replicas(lambda data=data: data, batch_size, strategy)
            for data in (train_data, dev_data))
    trainable.fit(train_data, validation_data=dev_data, epochs=config["training"]["epochs"],
                  callbacks=make_callbacks(config, run_dir), verbose=verbose, shuffle=False)

    if precision != "float32":
        compute_in_float32(model)  # evaluated, saved and served in float32
        logger.info("trained in %s; evaluated and saved in float32", precision)
    epoch_seconds = read_epoch_seconds(run_dir)  # every epoch's time, over resumes
    metrics = {"dev": evaluate(model, config, prepared, prepared.dev),
               "train_seconds": round(sum(epoch_seconds.values()) if epoch_seconds else time.time() - started, 1),
               "parameters": int(model.count_params()),
               "data": {"source": config["data"]["source"], "train_size": _size(prepared.train),
                        "dev_size": _size(prepared.dev)}}
    if (run_dir / INIT_REPORT).exists():
        metrics["init_from"] = json.loads((run_dir / INIT_REPORT).read_text(encoding="utf-8"))
    model.save(run_dir / "model.keras")
    _write_json(run_dir / "metrics.json", metrics)
    if (run_dir / "history.csv").exists():
        plot_history(run_dir / "history.csv", run_dir / "curves.png", config["preset"] or config["task"])
    logger.info("dev metrics: %s", {k: v for k, v in metrics["dev"].items() if k != "per_tag"})
    return metrics


def _size(split) -> int:
    return len(split.tokens) if hasattr(split, "tokens") else len(split.sentences)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
