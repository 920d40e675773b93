"""The SavedModel's signatures: the tokenizer as graph ops, and one `tf.function` per signature.

The SavedModel runs with TensorFlow alone: the Keras model's variables and the
vocabulary's lookup tables are tracked by a plain `tf.Module`, and every
signature is a `tf.function` that tokenizes raw text the way training did
(docs/serving_contract.md). `save_signatures` writes them into a directory;
`serving.export.writer` decides which directory.
"""

from __future__ import annotations

import contextlib
import re
import logging
from pathlib import Path
from typing import Sequence

import tensorflow as tf

from serving.export.sampling import sample_next
from training.datasets.sst import BRACKET_ESCAPES
from training.vocab import OOV_ID, PAD_ID

logger = logging.getLogger(__name__)

# Integer inputs are right-padded with PAD_ID (the `<pad>` entry, masked by
# every model); string token inputs with the empty string, never a token.
PAD_STRING = ""

CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
SIGNATURES = {
    "language_model": ("serving_default", "tokenize", "detokenize", "initial_state", "step",
                       "score", "sample"),
    "classifier": ("serving_default", "classify"),
    "tagger": ("serving_default", "tag_tokens"),
}
LEVELS = ("word", "char")

# Every character Python's `str.isspace()` accepts. Training splits text with
# `str.split()`, which splits on all of them, while `tf.strings.split` splits
# on ASCII whitespace only; the signatures map these to a space first so a
# no-break space (U+00A0) separates words at serving time as it did in training.
_PYTHON_WHITESPACE = (
    "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WHITESPACE_PATTERN = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _PYTHON_WHITESPACE) + "]+"


# === The tokenizer inside the graph ===


def _unescape_brackets(tokens):
    """Tokens equal to a bracket escape in any case (`-LRB-`, `-rrb-`) become the bracket."""
    for escape, bracket in BRACKET_ESCAPES.items():
        tokens = tf.strings.regex_replace(tokens, f"^(?i:{re.escape(escape)})$", bracket)
    return tokens


class _Tokenizer(tf.Module):
    """Token <-> id lookup tables and the split training uses, as graph ops.

    Args:
        tokens: The vocabulary in id order; tokens[0] is `<pad>`, tokens[1] `<unk>`.
        level: "word" (whitespace tokens, as `str.split()`) or "char" (code points).
        unescape_brackets: Turn the Penn Treebank's bracket escapes (`-lrb-`,
            ...) into brackets after the split, as the SST readers do in
            training (`training.datasets.sst.unescape_brackets`).
    """

    def __init__(self, tokens: Sequence[str], level: str, unescape_brackets: bool = False):
        super().__init__(name="tokenizer")
        self.unescape_brackets = unescape_brackets
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
        tokens = tf.strings.split(text)
        if self.unescape_brackets:
            tokens = tf.ragged.map_flat_values(_unescape_brackets, tokens)
        return tokens

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
            "score": score, "sample": sampling_signature(step, state_size)}


def sampling_signature(step, state_size: int):
    """The `sample` signature on top of a `step` function (serving.export.sampling)."""
    per_row = lambda dtype, name: tf.TensorSpec([None], dtype, name=name)  # noqa: E731

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.int64, name="token_ids"),
        tf.TensorSpec([None, state_size], tf.float32, name="state"),
        per_row(tf.float64, "uniforms"), per_row(tf.float64, "temperature"),
        per_row(tf.int32, "top_k"),
    ])
    def sample(token_ids, state, uniforms, temperature, top_k):
        rows = tf.shape(token_ids)[0]
        checks = [
            tf.debugging.assert_equal(
                tf.stack([tf.shape(x)[0] for x in (state, uniforms, temperature, top_k)]),
                tf.fill([4], rows),
                message="sample: state, uniforms, temperature and top_k need one entry per row "
                        "of token_ids"),
            tf.debugging.assert_greater_equal(uniforms, tf.constant(0.0, tf.float64),
                                              message="sample: uniforms must lie in [0, 1)"),
            tf.debugging.assert_less(uniforms, tf.constant(1.0, tf.float64),
                                     message="sample: uniforms must lie in [0, 1)"),
            tf.debugging.assert_non_negative(top_k, message="sample: top_k must be 0 (all) or more"),
        ]
        with tf.control_dependencies(checks):
            stepped = step(token_ids, state)
        next_token_id, log_prob = sample_next(stepped["logits"], uniforms, temperature, top_k)
        return {"next_token_id": next_token_id, "log_prob": log_prob, "state": stepped["state"]}

    return sample


def _word_inputs(model, tokenizer: _Tokenizer, char_tokenizer: _Tokenizer | None):
    """(batch, time) tokens -> the model's input: ids, and character ids if it spells."""

    def model_inputs(tokens):
        token_ids = tokenizer.encode_tokens(tokens)  # (batch, time)
        if char_tokenizer is None:
            return token_ids
        char_ids = char_tokenizer.spell(tokens, model.max_word_length)  # (batch, time, chars)
        return {"token_ids": token_ids, "char_ids": char_ids}

    return model_inputs


def _classifier_signatures(model, tokenizer: _Tokenizer, labels: Sequence[str],
                           char_tokenizer: _Tokenizer | None = None) -> dict:
    label_names = tf.constant(list(labels), dtype=tf.string)
    model_inputs = _word_inputs(model, tokenizer, char_tokenizer)

    def probabilities_of(sentences):
        tokens = tokenizer.split(sentences).to_tensor(default_value=PAD_STRING)  # (batch, time)
        inputs = model_inputs(_at_least_one_step(tokens, pad=PAD_STRING))
        logits = model(inputs, training=False)  # (batch, classes)
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
    model_inputs = _word_inputs(model, tokenizer, char_tokenizer)

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


# === Saving ===


def save_signatures(model, tokens, *, task, level, labels, path: Path,
                    characters=None) -> tuple[str, ...]:
    """Saves the SavedModel of `model` with its task's signatures into `path`; returns the signature names."""
    module = tf.Module(name=f"zoo_{task}")
    module.tokenizer = _Tokenizer(tokens, level, unescape_brackets=task == "classifier")
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
        signatures = _classifier_signatures(model, module.tokenizer, labels, char_tokenizer)
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
