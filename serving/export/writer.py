"""Exports trained zoo models as versioned TensorFlow SavedModels, tokenizer inside.

    runs/<run>/                                 (training/run.py)
      -> export_run / export_model
      -> <export_base>/<model_name>/<version>/
           saved_model.pb, variables/           the signatures of docs/serving_contract.md
                                                (serving.export.signatures)
           assets.extra/zoo.json                what the model is, for tools: task,
                                                tokenizer, vocabulary_size, pad_id, oov_id,
                                                state_size and end_token (LMs), labels,
                                                signatures
           assets.extra/vocabulary.json         the token list the tables were built from
           assets.extra/char_vocabulary.json    the character list (taggers and classifiers
                                                with a character model)
           assets.extra/tf_serving_warmup_requests   one sample request per signature, which
                                                a server replays before it serves the
                                                version (serving.export.warmup_requests)
           config.json, training.json, MODEL_CARD.md     (serving.export.side_files)

A version directory is written under a temporary name and appears in one
`os.rename`, so a server polling `<export_base>/<model_name>/` never loads
half a version.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import keras

import zoo  # also registers the zoo's classes for keras.saving.load_model
from serving.export.side_files import credit_line, write_side_files
from serving.export.signatures import LEVELS, SIGNATURES, save_signatures
from serving.export.warmup_requests import write_warmup_requests
from training.errors import DataError
from training.vocab import OOV_ID, OOV_TOKEN, PAD_ID, PAD_TOKEN, LabelVocabulary, Vocabulary

logger = logging.getLogger(__name__)

# Word-level corpora (PTB) end every line with this token (training/datasets/text.py).
_END_TOKEN = "<eos>"


def export_model(
    model,
    vocabulary,
    *,
    task: str,
    char_vocabulary=None,
    export_base: str | os.PathLike = "saved_models",
    model_name: str,
    version: int | None = None,
    level: str = "word",
    labels=None,
    config: dict | None = None,
    training_info: dict | None = None,
    metrics: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes `model` as `<export_base>/<model_name>/<version>/` for TensorFlow Serving.

    Args:
        model: A zoo model of `task` (LanguageModel, SentenceClassifier or
            SequenceTagger), built.
        vocabulary: The training Vocabulary (anything with `.tokens`, or a
            list of tokens), `<pad>` first and `<unk>` second.
        task: "language_model", "classifier" or "tagger".
        char_vocabulary: The character Vocabulary of a tagger or classifier with
            a character model (the same forms as `vocabulary`); required for one, refused
            for any other model. The signatures spell each token inside the
            graph, so their inputs are those of a word-only model.
        export_base: The model base directory a server watches.
        model_name: The name clients ask for; letters, digits, `_`, `-`, `.`.
        version: The version number; default one more than the largest there.
        level: How text becomes tokens, as in training: "word" or "char".
        labels: Class or tag names in id order (a LabelVocabulary or a list);
            required for classifiers and taggers.
        config: The resolved zoo config, written to config.json; defaults to
            the task, cell and the model's constructor options.
        training_info: How the model was trained (data, training settings,
            command, optionally "license"), written to training.json and the
            model card.
        metrics: Dev metrics of the run, e.g. {"dev": {"perplexity": 114.2}}.
        overwrite: Replace an existing version instead of refusing. The old
            directory is renamed aside just before the new one is renamed in,
            so for that instant a polling server sees neither.

    Returns:
        The version directory.

    Raises:
        ValueError: Unknown task or level, a model of another task, sizes that
            disagree with the vocabulary or labels, a bad model name or
            version, or an existing version without `overwrite`.

    Example:

        path = export_model(model, vocabulary, task="language_model",
                            model_name="ptb_small", level="word")
        served = tf.saved_model.load(str(path))
        served.signatures["tokenize"](text=tf.constant(["the cat"]))
    """
    tokens = list(getattr(vocabulary, "tokens", vocabulary))
    characters = None
    if char_vocabulary is not None:
        characters = list(getattr(char_vocabulary, "tokens", char_vocabulary))
    label_names = None if labels is None else list(getattr(labels, "names", labels))
    _check_export_arguments(model, tokens, task=task, level=level, labels=label_names,
                            model_name=model_name, characters=characters)
    config = dict(config) if config else _default_config(model, task)
    config.setdefault("task", task)

    model_dir = Path(export_base) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = _next_version(model_dir) if version is None else _check_version(version)
    target = model_dir / str(version)
    if target.exists() and not overwrite:
        raise ValueError(f"{target} already exists; pass overwrite=True (--overwrite) to "
                         "replace it, or leave the version out to write the next one.")

    # A name that is not all digits is never taken for a version by a server.
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
    try:
        # mkdtemp makes the directory private (0700); a server running as
        # another user (a TensorFlow Serving container) must be able to read it.
        os.chmod(staging, 0o755)
        signature_names = save_signatures(model, tokens, task=task, level=level,
                                           labels=label_names, characters=characters,
                                           path=staging)
        zoo_info = {"task": task, "tokenizer": level, "vocabulary_size": len(tokens),
                    "pad_id": PAD_ID, "oov_id": OOV_ID}
        if characters is not None:
            zoo_info["char_vocabulary_size"] = len(characters)
            zoo_info["max_word_length"] = int(model.max_word_length)
        if task == "language_model":
            zoo_info["state_size"] = int(model.state_size)
            if level == "word" and _END_TOKEN in tokens:
                zoo_info["end_token"] = _END_TOKEN
        else:
            zoo_info["labels"] = label_names
        zoo_info["signatures"] = list(signature_names)
        write_warmup_requests(staging, model_name=model_name, task=task, tokens=tokens,
                              state_size=zoo_info.get("state_size"))
        write_side_files(staging, config=config, zoo_info=zoo_info, tokens=tokens,
                          characters=characters, training_info=training_info or {},
                          metrics=metrics or {},
                          model_name=model_name, version=version)
        _move_into_place(staging, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("exported %s model %r version %d to %s", task, model_name, version, target)
    return target


def _check_export_arguments(model, tokens, *, task, level, labels, model_name,
                            characters=None):
    model_class = zoo.model_class(task)
    ensemble_of_task = isinstance(model, zoo.Ensemble) and model.task == task
    if not (isinstance(model, model_class) or ensemble_of_task):
        raise ValueError(f"A {task} export needs a {model_class.__name__} (or an Ensemble "
                         f"of them), got {type(model).__name__}.")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", model_name or ""):
        raise ValueError(f"model_name must be letters, digits, '_', '-' or '.', not starting "
                         f"with a symbol (it becomes a directory), got {model_name!r}.")
    vocabulary_size = model.vocabulary_size if ensemble_of_task else model.backbone.vocabulary_size
    _check_vocabulary(tokens, vocabulary_size, "vocabulary", "vocabulary_size")
    if getattr(model, "uses_characters", False):
        if characters is None:
            raise ValueError(f"This {task} has a character model: pass char_vocabulary "
                             "(the run's char_vocabulary.json).")
        _check_vocabulary(characters, model.char_vocabulary_size, "character vocabulary",
                          "char_vocabulary_size")
    elif characters is not None:
        raise ValueError("char_vocabulary is only for a tagger or classifier with a character "
                         "model (char_vocabulary_size > 0).")
    if task == "language_model":
        return
    expected = model.num_classes if task == "classifier" else model.num_tags
    if labels is None:
        raise ValueError(f"A {task} export needs labels (the class or tag names in id order).")
    if len(labels) != expected:
        raise ValueError(f"{len(labels)} labels given but the model predicts {expected}.")


def _check_vocabulary(tokens, expected_size: int, what: str, option: str) -> None:
    """ValueError unless `tokens` starts with pad and unknown and has `expected_size` entries."""
    if tokens[:2] != [PAD_TOKEN, OOV_TOKEN]:
        raise ValueError(f"The {what} must start with {PAD_TOKEN!r} (id {PAD_ID}) and "
                         f"{OOV_TOKEN!r} (id {OOV_ID}), got {tokens[:2]!r}.")
    if len(tokens) != expected_size:
        raise ValueError(f"The {what} has {len(tokens)} tokens but the model's "
                         f"{option} is {expected_size}.")


def _default_config(model, task: str) -> dict:
    options = model.get_config()
    for key in ("name", "trainable", "dtype"):
        options.pop(key, None)
    cell = options.pop("cell", None)
    return {"task": task, "cell": cell, "model": options}


def _next_version(model_dir: Path) -> int:
    versions = [int(entry.name) for entry in model_dir.iterdir()
                if entry.name.isascii() and entry.name.isdigit() and entry.is_dir()]
    return max(versions, default=0) + 1


def _check_version(version) -> int:
    if isinstance(version, bool) or int(version) != version or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}.")
    return int(version)


def _move_into_place(staging: Path, target: Path, *, overwrite: bool) -> None:
    """Renames the finished staging directory to the version directory."""
    retired = None
    if target.exists():
        if not overwrite:
            raise ValueError(f"{target} already exists.")
        retired = Path(tempfile.mkdtemp(prefix=f".old-{target.name}-", dir=target.parent))
        os.rename(target, retired / "version")
    try:
        os.rename(staging, target)
    except OSError as error:
        # Another export took the version between our check and the rename.
        raise ValueError(f"could not create {target}: {error}") from None
    finally:
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)


def export_run(
    run_dir: str | os.PathLike,
    *,
    export_base: str | os.PathLike = "saved_models",
    model_name: str | None = None,
    version: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Exports the model of a training run directory (see training/run.py).

    Args:
        run_dir: Holds model.keras, vocabulary.json, config.json, and
            labels.json (classifier, tagger), char_vocabulary.json (a model with a
            character model) and metrics.json when present.
        export_base: The model base directory.
        model_name: The served name; defaults to the run directory's name.
        version: The version; default one more than the largest there.
        overwrite: Replace an existing version.

    Returns:
        The version directory written.

    Raises:
        ValueError: (training.errors.DataError for bad files) a missing or
            malformed file, or anything export_model refuses.
    """
    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json")
    task = config.get("task")
    if task not in SIGNATURES:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(SIGNATURES)}",
                        path=run_dir / "config.json")
    if config.get("data", {}).get("reverse"):
        raise DataError("this language model reads text right to left (--reverse): it is made to "
                        "start a classifier's backward direction (rnn-zoo-train --init_from), "
                        "not to be served", path=run_dir)
    vocabulary = Vocabulary.load(run_dir / "vocabulary.json")
    labels = None
    if task != "language_model":
        labels = LabelVocabulary.load(run_dir / "labels.json")
    metrics_path = run_dir / "metrics.json"
    metrics = _read_json(metrics_path) if metrics_path.exists() else {}
    model_path = run_dir / "model.keras"
    if not model_path.exists():
        raise DataError("no model.keras: has the run finished?", path=run_dir)
    model = keras.saving.load_model(model_path, compile=False)
    char_vocabulary = None
    if getattr(model, "uses_characters", False):
        char_vocabulary = Vocabulary.load(run_dir / "char_vocabulary.json")

    data = config.get("data") or {}
    training_info = {key: config[key] for key in ("data", "training", "command", "preset",
                                                  "seed", "members") if key in config}
    training_info["run"] = str(run_dir)
    credit = credit_line({}, data)
    if credit:
        training_info["license"] = credit
    return export_model(
        model, vocabulary, task=task, char_vocabulary=char_vocabulary, export_base=export_base,
        model_name=model_name or run_dir.resolve().name, version=version,
        level=data.get("level") or "word", labels=labels, config=config,
        training_info=training_info, metrics=metrics, overwrite=overwrite,
    )


def _read_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("no such file", path=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read: {error}", path=path) from None
    if not isinstance(content, dict):
        raise DataError("expected a JSON object", path=path)
    return content
