"""Exports trained zoo models as TensorFlow SavedModels, tokenizer inside.

    runs/<run>/                                 (training/run.py)
      -> export_run / export_model
      -> <export_base>/<model_name>/<version>/
           saved_model.pb, variables/           the signatures of docs/serving_contract.md
           assets.extra/zoo.json                what the model is, for tools: task,
                                                tokenizer, vocabulary_size, pad_id, oov_id,
                                                state_size and end_token (LMs), labels,
                                                signatures
           assets.extra/vocabulary.json         the token list the tables were built from
           assets.extra/char_vocabulary.json    the character list (taggers with a
                                                character model)
           config.json, training.json, MODEL_CARD.md

The SavedModel runs with TensorFlow alone: the Keras model's variables and the
vocabulary's lookup tables are tracked by a plain `tf.Module`, and every
signature is a `tf.function` that tokenizes raw text the way training did. A
version directory appears in one `os.rename`, so a server polling
`<export_base>/<model_name>/` never loads half a version.

    python -m serving.export --run runs/ptb_small --model_name ptb_small
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import keras
import tensorflow as tf

import zoo  # also registers the zoo's classes for keras.saving.load_model
from training.errors import DataError
from training.vocab import OOV_ID, OOV_TOKEN, PAD_ID, PAD_TOKEN, LabelVocabulary, Vocabulary

logger = logging.getLogger(__name__)

# Integer inputs are right-padded with PAD_ID (the `<pad>` entry, masked by
# every model); string token inputs with the empty string, never a token.
PAD_STRING = ""

CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
SIGNATURES = {
    "language_model": ("serving_default", "tokenize", "detokenize", "initial_state", "step",
                       "score"),
    "classifier": ("serving_default", "classify"),
    "tagger": ("serving_default", "tag_tokens"),
}
LEVELS = ("word", "char")
# Word-level corpora (PTB) end every line with this token (training/datasets/text.py).
_END_TOKEN = "<eos>"

# Every character Python's `str.isspace()` accepts. Training splits text with
# `str.split()`, which splits on all of them, while `tf.strings.split` splits
# on ASCII whitespace only; the signatures map these to a space first so a
# no-break space (U+00A0) separates words at serving time as it did in training.
_PYTHON_WHITESPACE = (
    "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WHITESPACE_PATTERN = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _PYTHON_WHITESPACE) + "]+"

# Credit lines for corpora whose licence asks to be named wherever a model
# trained on them is published; matched against the run's data source.
_DATA_CREDITS = {
    ("ud_english_ewt", "en_ewt"): (
        "Trained on the Universal Dependencies English Web Treebank (UD_English-EWT), "
        "licensed under CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)."
    ),
}


# === The tokenizer inside the graph ===


class _Tokenizer(tf.Module):
    """Token <-> id lookup tables and the split training uses, as graph ops.

    Args:
        tokens: The vocabulary in id order; tokens[0] is `<pad>`, tokens[1] `<unk>`.
        level: "word" (whitespace tokens, as `str.split()`) or "char" (code points).
    """

    def __init__(self, tokens: Sequence[str], level: str):
        super().__init__(name="tokenizer")
        keys = tf.constant(list(tokens), dtype=tf.string)
        ids = tf.range(len(tokens), dtype=tf.int64)
        self.level = level
        self.token_to_id = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, ids), default_value=OOV_ID
        )
        # Ids outside the vocabulary read as `<unk>` rather than failing the request.
        self.id_to_token = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(ids, keys), default_value=tokens[OOV_ID]
        )

    def split(self, text):
        """(batch,) strings -> ragged (batch, None) tokens."""
        if self.level == "char":
            # read_text() turns \r\n and \r into \n before training sees a character.
            text = tf.strings.regex_replace(text, "\r\n?", "\n")
            return tf.strings.unicode_split(text, "UTF-8")
        text = tf.strings.regex_replace(text, _WHITESPACE_PATTERN, " ")
        return tf.strings.split(text)

    def encode(self, text):
        """(batch,) strings -> ids (batch, time) right-padded with 0, lengths (batch,)."""
        tokens = self.split(text)
        ids = tf.ragged.map_flat_values(self.token_to_id.lookup, tokens)
        return ids.to_tensor(default_value=PAD_ID), tf.cast(tokens.row_lengths(), tf.int64)

    def encode_tokens(self, tokens):
        """(batch, time) strings padded with "" -> ids (batch, time) padded with 0."""
        ids = self.token_to_id.lookup(tokens)
        return tf.where(tf.equal(tokens, PAD_STRING), tf.constant(PAD_ID, tf.int64), ids)

    def spell(self, tokens, max_word_length: int):
        """(batch, time) strings padded with "" -> character ids (batch, time, chars).

        For a character vocabulary: each token's code points, as Python's
        `list(word)` gives them in training, looked up (unknown ones become
        `<unk>`), right-padded with 0 to the longest token and cut to
        `max_word_length`; padding tokens have no characters. The character
        axis is at least 1 long, so a batch of padding still has a shape the
        model can reshape.
        """
        characters = tf.strings.unicode_split(tokens, "UTF-8")  # (batch, time, None)
        ids = tf.ragged.map_flat_values(self.token_to_id.lookup, characters)
        ids = ids.to_tensor(default_value=PAD_ID)[:, :, :max_word_length]
        missing = tf.maximum(0, 1 - tf.shape(ids)[2])
        return tf.pad(ids, [[0, 0], [0, 0], [0, missing]], constant_values=PAD_ID)

    def decode(self, token_ids):
        """(batch, time) ids -> (batch,) text, pad ids left out."""
        tokens = tf.ragged.boolean_mask(
            self.id_to_token.lookup(token_ids), tf.not_equal(token_ids, PAD_ID)
        )
        separator = "" if self.level == "char" else " "
        return tf.strings.reduce_join(tokens, axis=-1, separator=separator)


# === Signatures per task ===


def _at_least_one_step(token_ids, pad=PAD_ID):
    """Pads a (batch, 0) input to (batch, 1) so the recurrent loop has a step to mask."""
    missing = tf.maximum(0, 1 - tf.shape(token_ids)[1])
    return tf.pad(token_ids, [[0, 0], [0, missing]], constant_values=pad)


def _last_positions(token_ids):
    """(batch,) index of each row's last non-pad token, -1 for an all-pad row."""
    positions = tf.range(1, tf.shape(token_ids)[1] + 1, dtype=tf.int32)  # (time,)
    ends = tf.reduce_max(tf.where(tf.not_equal(token_ids, PAD_ID), positions, 0), axis=1)
    return ends - 1


def _language_model_signatures(model, tokenizer: _Tokenizer) -> dict:
    state_size = int(model.state_size)
    ids_spec = tf.TensorSpec([None, None], tf.int64, name="token_ids")

    @tf.function(input_signature=[ids_spec])
    def serving_default(token_ids):
        padded = _at_least_one_step(token_ids)
        time = tf.shape(token_ids)[1]
        logits = model(padded, training=False)[:, :time]  # (batch, time, vocabulary)
        real = tf.not_equal(token_ids, PAD_ID)[:, :, None]
        return {"logits": tf.where(real, logits, tf.zeros_like(logits))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def tokenize(text):
        token_ids, lengths = tokenizer.encode(text)
        return {"token_ids": token_ids, "lengths": lengths}

    @tf.function(input_signature=[ids_spec])
    def detokenize(token_ids):
        return {"text": tokenizer.decode(token_ids)}

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="batch_size")])
    def initial_state(batch_size):
        return {"state": tf.convert_to_tensor(model.initial_state(batch_size))}

    @tf.function(
        input_signature=[ids_spec, tf.TensorSpec([None, state_size], tf.float32, name="state")]
    )
    def step(token_ids, state):
        padded = _at_least_one_step(token_ids)
        logits, new_state = model(padded, initial_state=state, return_state=True,
                                  training=False)  # (batch, k, vocabulary), (batch, state)
        last = _last_positions(padded)  # (batch,)
        has_tokens = tf.greater_equal(last, 0)[:, None]
        logits = tf.gather(logits, tf.maximum(last, 0), batch_dims=1)  # (batch, vocabulary)
        # The model already leaves a masked row's state alone; `where` makes an
        # all-pad row's state bit-for-bit the one the client sent.
        return {
            "logits": tf.where(has_tokens, logits, tf.zeros_like(logits)),
            "state": tf.where(has_tokens, new_state, state),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def score(text):
        token_ids, lengths = tokenizer.encode(text)
        token_ids = _at_least_one_step(token_ids)
        logits = model(token_ids, training=False)  # (batch, time, vocabulary)
        # Position t predicts token t + 1; the first token is given, not scored.
        log_probs = tf.nn.log_softmax(logits[:, :-1])
        targets = token_ids[:, 1:]  # (batch, time - 1)
        picked = tf.gather(log_probs, targets, batch_dims=2)  # (batch, time - 1)
        picked = tf.where(tf.not_equal(targets, PAD_ID), picked, tf.zeros_like(picked))
        return {"log_prob": tf.reduce_sum(picked, axis=1),
                "num_tokens": tf.maximum(lengths - 1, 0)}

    return {"serving_default": serving_default, "tokenize": tokenize,
            "detokenize": detokenize, "initial_state": initial_state, "step": step,
            "score": score}


def _classifier_signatures(model, tokenizer: _Tokenizer, labels: Sequence[str]) -> dict:
    label_names = tf.constant(list(labels), dtype=tf.string)

    def probabilities_of(sentences):
        token_ids, _ = tokenizer.encode(sentences)
        logits = model(_at_least_one_step(token_ids), training=False)  # (batch, classes)
        return tf.nn.softmax(logits, axis=-1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def serving_default(sentences):
        probabilities = probabilities_of(sentences)
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {"probabilities": probabilities, "label_id": label_id,
                "label": tf.gather(label_names, label_id)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(inputs):
        # TF Serving's Classify API sends serialized tf.Examples under "inputs"
        # and reads "scores" and "classes" back.
        features = tf.io.parse_example(
            inputs, {"text": tf.io.FixedLenFeature([], tf.string, default_value="")}
        )
        scores = probabilities_of(features["text"])
        classes = tf.tile(label_names[None, :], [tf.shape(scores)[0], 1])
        return {"scores": scores, "classes": classes}

    return {"serving_default": serving_default, "classify": classify}


def _tagger_signatures(model, tokenizer: _Tokenizer, labels: Sequence[str],
                       char_tokenizer: _Tokenizer | None = None) -> dict:
    tag_names = tf.constant(list(labels), dtype=tf.string)

    def model_inputs(tokens):
        """The model's input for (batch, time) tokens: ids, and character ids if it spells."""
        token_ids = tokenizer.encode_tokens(tokens)  # (batch, time)
        if char_tokenizer is None:
            return token_ids
        char_ids = char_tokenizer.spell(tokens, model.max_word_length)  # (batch, time, chars)
        return {"token_ids": token_ids, "char_ids": char_ids}

    def tag(tokens):
        real = tf.not_equal(tokens, PAD_STRING)  # (batch, time)
        time = tf.shape(tokens)[1]
        inputs = model_inputs(_at_least_one_step(tokens, pad=PAD_STRING))
        logits = model(inputs, training=False)[:, :time]
        probabilities = tf.nn.softmax(logits, axis=-1)  # (batch, time, tags)
        tag_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            "tokens": tokens,
            "tags": tf.where(real, tf.gather(tag_names, tag_ids), PAD_STRING),
            "probabilities": tf.where(real, tf.reduce_max(probabilities, axis=-1), 0.0),
            "lengths": tf.reduce_sum(tf.cast(real, tf.int64), axis=1),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def serving_default(sentences):
        return tag(tokenizer.split(sentences).to_tensor(default_value=PAD_STRING))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="tokens")])
    def tag_tokens(tokens):
        return tag(tokens)

    return {"serving_default": serving_default, "tag_tokens": tag_tokens}


@contextlib.contextmanager
def _portable_recurrent_kernels(model):
    """Traces LSTM and GRU layers with their generic loop instead of cuDNN.

    On a machine with a GPU, Keras traces `CudnnRNN` ops into the graph: they
    have no CPU kernel, and they assert that no row is all padding, which a
    `step` call with an idle row is. The generic loop runs everywhere.
    """
    layers = [layer for layer in model._flatten_layers(include_self=False)
              if getattr(layer, "use_cudnn", None) not in (None, False)]
    saved = [layer.use_cudnn for layer in layers]
    for layer in layers:
        layer.use_cudnn = False
    try:
        yield
    finally:
        for layer, value in zip(layers, saved):
            layer.use_cudnn = value


# === Export ===


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
        char_vocabulary: The character Vocabulary of a tagger with a character
            model (the same forms as `vocabulary`); required for one, refused
            for any other model. The signatures spell each token inside the
            graph, so their inputs are those of a word-only tagger.
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
        signature_names = _save_signatures(model, tokens, task=task, level=level,
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
        _write_side_files(staging, config=config, zoo_info=zoo_info, tokens=tokens,
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
    if not isinstance(model, model_class):
        raise ValueError(f"A {task} export needs a {model_class.__name__}, "
                         f"got {type(model).__name__}.")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", model_name or ""):
        raise ValueError(f"model_name must be letters, digits, '_', '-' or '.', not starting "
                         f"with a symbol (it becomes a directory), got {model_name!r}.")
    _check_vocabulary(tokens, model.backbone.vocabulary_size, "vocabulary", "vocabulary_size")
    if getattr(model, "uses_characters", False):
        if characters is None:
            raise ValueError("This tagger has a character model: pass char_vocabulary "
                             "(the run's char_vocabulary.json).")
        _check_vocabulary(characters, model.char_vocabulary_size, "character vocabulary",
                          "char_vocabulary_size")
    elif characters is not None:
        raise ValueError("char_vocabulary is only for a tagger with a character model "
                         "(char_vocabulary_size > 0).")
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


def _save_signatures(model, tokens, *, task, level, labels, path: Path,
                     characters=None) -> tuple[str, ...]:
    """Saves the SavedModel into `path`; returns the signature names."""
    module = tf.Module(name=f"zoo_{task}")
    module.tokenizer = _Tokenizer(tokens, level)
    char_tokenizer = None
    if characters is not None:
        module.char_tokenizer = char_tokenizer = _Tokenizer(characters, "char")
    # The model's variables, tracked so the checkpoint holds them; the Keras
    # object itself stays out of the SavedModel (no custom objects at load).
    # Track the tf.Variables the traced functions capture (`.value`), not the
    # Keras wrappers: with the wrappers, TF1-style loaders (`saved_model_cli
    # run`, TensorFlow Serving's C++ server) restore variables the graph never
    # reads and fail with "Could not find variable" (keras-team/keras#20096).
    module.model_variables = [variable.value for variable in model.variables]
    if task == "language_model":
        signatures = _language_model_signatures(model, module.tokenizer)
    elif task == "classifier":
        signatures = _classifier_signatures(model, module.tokenizer, labels)
    else:
        signatures = _tagger_signatures(model, module.tokenizer, labels, char_tokenizer)
    if tuple(signatures) != SIGNATURES[task]:
        raise RuntimeError(f"signatures {tuple(signatures)} disagree with {SIGNATURES[task]}")

    with _portable_recurrent_kernels(model):
        concrete = {name: function.get_concrete_function()
                    for name, function in signatures.items()}
        for name, function in signatures.items():
            setattr(module, name, function)  # also callable as `loaded.step(...)`
        tf.saved_model.save(module, str(path), signatures=concrete)

    if task == "classifier":
        _set_method_name(path, "classify", CLASSIFY_METHOD_NAME)
    return tuple(signatures)


def _set_method_name(path: Path, signature_name: str, method_name: str) -> None:
    """Rewrites one SignatureDef's method name in saved_model.pb.

    `tf.saved_model.save` gives every signature `tensorflow/serving/predict`;
    TF Serving's Classify API only runs signatures named for it.
    """
    updater = tf.compat.v1.saved_model.signature_def_utils.MethodNameUpdater(str(path))
    updater.replace_method_name(signature_key=signature_name, method_name=method_name,
                                tags=tf.saved_model.SERVING)
    updater.save()
    _refresh_fingerprint(path)


def _refresh_fingerprint(path: Path) -> None:
    """Recomputes fingerprint.pb, whose checksums cover the saved_model.pb just changed."""
    fingerprint = path / "fingerprint.pb"
    try:
        from tensorflow.python.saved_model import fingerprinting_utils

        fingerprinting_utils.write_fingerprint(str(path))
    except (ImportError, AttributeError, ValueError) as error:
        # The fingerprint is optional; a stale one would misreport the model.
        logger.warning("could not refresh %s (%s); removing it", fingerprint, error)
        fingerprint.unlink(missing_ok=True)


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


# === Files beside the SavedModel ===


def _write_side_files(directory: Path, *, config, zoo_info, tokens, training_info, metrics,
                      model_name, version, characters=None) -> None:
    extra = directory / "assets.extra"
    extra.mkdir(exist_ok=True)
    _write_json(extra / "zoo.json", zoo_info)
    _write_json(extra / "vocabulary.json", {"tokens": tokens})
    if characters is not None:
        _write_json(extra / "char_vocabulary.json", {"tokens": characters})
    _write_json(directory / "config.json", config)
    _write_json(directory / "training.json", {**training_info, "metrics": metrics})
    card = _model_card(model_name=model_name, version=version, config=config,
                       zoo_info=zoo_info, training_info=training_info, metrics=metrics)
    (directory / "MODEL_CARD.md").write_text(card, encoding="utf-8")


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


_CELL_NAMES = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU",
               "gated_lstm": "gated LSTM"}
_TASK_DESCRIPTIONS = {
    "language_model": "a recurrent language model: it gives the probability of the next "
                      "token given the tokens before it, and generates text one token at a time",
    "classifier": "a recurrent sentence classifier: one label per sentence",
    "tagger": "a recurrent sequence tagger: one tag per whitespace-separated token",
}
_INTENDED_USE = {
    "language_model": "Generating text in the style of the training corpus, scoring how "
                      "likely a text is under it (perplexity), and teaching or benchmarking "
                      "recurrent language models.",
    "classifier": "Labelling short English sentences like those of the training data "
                  "(e.g. movie-review sentiment), and benchmarking recurrent classifiers.",
    "tagger": "Tagging tokenized English sentences like those of the training data (e.g. "
              "universal part-of-speech tags), and benchmarking recurrent taggers.",
}
_LIMITS = {
    "language_model": "It knows only its training corpus: its vocabulary is closed (unseen "
                      "words become `<unk>`), its text can be fluent and false, and it "
                      "repeats the biases of the corpus. Do not treat generated text as fact.",
    "classifier": "Accuracy holds only for text like the training data; other domains, "
                  "sarcasm, negation scope and long documents degrade it. Scores are not "
                  "calibrated probabilities. Do not use it for decisions about people.",
    "tagger": "Accuracy holds only for text like the training data; unseen words are all "
              "`<unk>` to it (no character model), so rare and new words are tagged worst.",
}
_CHARACTER_TAGGER_LIMITS = (
    "Accuracy holds only for text like the training data; unseen words are `<unk>` to "
    "its word vocabulary, and it tags them from their spelling (a character model) and "
    "context, so rare and new words are still tagged worse than frequent ones.")


def _model_card(*, model_name, version, config, zoo_info, training_info, metrics) -> str:
    task = zoo_info["task"]
    model_options = config.get("model") or {}
    data = training_info.get("data") or config.get("data") or {}
    lines = [f"# {model_name} (version {version})", ""]
    cell = config.get("cell")
    lines += [f"An rnn-zoo model ({_CELL_NAMES.get(cell, cell or 'recurrent')} cells): "
              f"{_TASK_DESCRIPTIONS[task]}.", ""]

    lines += ["## Model", ""]
    lines += [f"- Task: `{task}`"]
    if config.get("preset"):
        lines += [f"- Preset: `{config['preset']}`"]
    lines += [f"- Cell: `{config.get('cell')}`"]
    for key in sorted(model_options):
        lines += [f"- {key}: `{model_options[key]}`"]
    splits = {"word": "whitespace-separated tokens, case kept", "char": "Unicode characters"}
    lines += [f"- Tokenizer: {zoo_info['tokenizer']} level ({splits[zoo_info['tokenizer']]}), "
              f"vocabulary of {zoo_info['vocabulary_size']} entries "
              f"(id {PAD_ID} `{PAD_TOKEN}`, id {OOV_ID} `{OOV_TOKEN}`)"]
    if "char_vocabulary_size" in zoo_info:
        lines += [f"- Character model: each token's first {zoo_info['max_word_length']} "
                  f"characters, from a vocabulary of {zoo_info['char_vocabulary_size']} entries "
                  f"(id {PAD_ID} `{PAD_TOKEN}`, id {OOV_ID} `{OOV_TOKEN}`), spelled inside the graph"]
    if "state_size" in zoo_info:
        lines += [f"- Recurrent state: {zoo_info['state_size']} floats per sequence"]
        if zoo_info.get("end_token"):
            lines += [f"- Sentence end: the corpus marks it with `{zoo_info['end_token']}`; "
                      "the tokenizer does not add it, so append it to a text to score a "
                      "whole sentence, and stop generating when it comes"]
    if zoo_info.get("labels"):
        lines += [f"- Labels: {', '.join(f'`{name}`' for name in zoo_info['labels'])}"]
    lines += [""]

    lines += ["## Data", ""]
    lines += [f"- Source: `{data.get('source', 'not recorded')}`"]
    if data.get("dev_source"):
        lines += [f"- Dev source: `{data['dev_source']}`"]
    size_info = (metrics or {}).get("data") or {}
    for key in ("train_size", "dev_size"):
        if key in size_info:
            lines += [f"- {key.replace('_', ' ').capitalize()}: {size_info[key]}"]
    lines += [""]

    lines += ["## Training", ""]
    training = training_info.get("training") or config.get("training") or {}
    for key in sorted(training):
        lines += [f"- {key}: `{training[key]}`"]
    command = training_info.get("command") or config.get("command")
    if command:
        lines += ["", "Command:", "", f"    {command}"]
    if not training and not command:
        lines += ["Not recorded."]
    lines += [""]

    lines += ["## Dev metrics", ""]
    dev = (metrics or {}).get("dev") or {}
    shown = {key: value for key, value in dev.items() if not isinstance(value, (dict, list))}
    if shown:
        lines += [f"- {key}: {_format_number(value)}" for key, value in sorted(shown.items())]
    else:
        lines += ["Not recorded."]
    lines += [""]

    lines += ["## Intended use", "", _INTENDED_USE[task], ""]
    limits = _CHARACTER_TAGGER_LIMITS if "char_vocabulary_size" in zoo_info else _LIMITS[task]
    lines += ["## Limits", "", limits, ""]

    credit = _credit_line(training_info, data)
    if credit:
        lines += ["## Data licence", "", credit, ""]

    lines += ["## Serving", ""]
    lines += ["A TensorFlow SavedModel for TensorFlow Serving or the rnn-zoo server; it runs "
              "with TensorFlow alone. Signatures (see docs/serving_contract.md): "
              + ", ".join(f"`{name}`" for name in zoo_info["signatures"]) + ".", ""]
    return "\n".join(lines)


def _format_number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _credit_line(training_info: dict, data: dict) -> str | None:
    """The data's licence credit: given in training_info, or known for its source."""
    for source in (training_info, data):
        for key in ("license", "licence", "credit"):
            if source.get(key):
                return str(source[key])
    names = " ".join(str(data.get(key) or "") for key in ("source", "dev_source")).lower()
    for patterns, credit in _DATA_CREDITS.items():
        if any(pattern in names for pattern in patterns):
            return credit
    return None


# === Training runs and the command line ===


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
            labels.json (classifier, tagger), char_vocabulary.json (tagger with a
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
                                                  "seed") if key in config}
    training_info["run"] = str(run_dir)
    credit = _credit_line({}, data)
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


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m serving.export`: exports a training run; prints the version directory."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.export",
        description="Export a trained zoo model (a training run directory) as a TensorFlow "
                    "SavedModel in TensorFlow Serving's <base>/<name>/<version>/ layout, "
                    "with the tokenizer inside.",
    )
    parser.add_argument("--run", required=True,
                        help="training run directory holding model.keras, vocabulary.json, "
                             "config.json (and labels.json, metrics.json)")
    parser.add_argument("--model_name", required=True,
                        help="the name clients ask the server for; becomes a directory")
    parser.add_argument("--export_base", default="saved_models",
                        help="model base directory the server watches (default: saved_models)")
    parser.add_argument("--version", type=int, default=None,
                        help="version number (default: one more than the largest there)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the version if it exists instead of refusing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = export_run(args.run, export_base=args.export_base, model_name=args.model_name,
                          version=args.version, overwrite=args.overwrite)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
