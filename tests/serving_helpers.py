"""Shared helpers for the model-server tests: tiny SavedModels and a real server.

The toy models follow docs/serving_contract.md (signature names, dtypes,
right-padding with 0 / "", masked padding, outputs with a time axis) so the
server is tested against the same conventions the zoo's exporter keeps, without
waiting for a trained model. Their weights come from a seeded generator, so
version 1 and version 2 of a model give different, reproducible outputs.

Reuse from other test modules:

    from serving_helpers import build_toy_models, running_server, free_port

    models_root = build_toy_models(tmp_path)          # lm/, classifier/, tagger/
    with running_server(model_base_dir=models_root) as server:
        stub = server.prediction_stub()
"""

import contextlib
import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np

logger = logging.getLogger(__name__)

# === Comparing float32 outputs ===

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7
# Tolerance for "equal to float32 rounding": 64 units in the last place of the
# tensor's scale (max(1, max |expected|)), about 7.6e-6 for logits of size ~1.
# Running the same graph on another batch size lets the matrix-product kernels
# (oneDNN, Eigen) block and vectorise the reductions differently, and that
# reorders float32 sums: a length-n dot product can then move by up to about
# (n - 1) * eps of the sum of |terms| (Higham, Accuracy and Stability of
# Numerical Algorithms, 2nd ed., section 3.1). The toy models reduce over at
# most 4 + 3 terms per step and carry the state through at most 8 steps of a
# tanh recurrence (contractive), so differences stay within a few tens of eps
# of the output's scale; seen: a relative difference of 3.5e-6 (about 30 eps)
# on one AMD EPYC machine, none at all on another. A real bug (a padded position counted, a row
# swapped) moves outputs by 1e-2 or more, far outside this.
FLOAT32_ULPS = 64


def assert_float32_close(actual, expected, err_msg="", ulps=FLOAT32_ULPS):
    """Equal up to float32 rounding: `ulps` units of eps of the tensor's scale (see above)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (err_msg, actual.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    tolerance = ulps * FLOAT32_EPS
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * scale, err_msg=err_msg)


# === Toy model settings ===

LANGUAGE_MODEL_NAME = "lm"
CLASSIFIER_NAME = "classifier"
TAGGER_NAME = "tagger"

TOY_VOCABULARY = (
    "<pad>", "<unk>", "the", "a", "cat", "dog", "sat", "ran", "on", "mat",
    "good", "bad", "movie", "very", "is", "not",
)
TOY_CLASS_NAMES = ("negative", "positive")
TOY_TAG_NAMES = ("DET", "NOUN", "VERB", "ADP", "ADJ", "ADV")
TOY_EMBEDDING_DIM = 4
TOY_STATE_SIZE = 3
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"

_REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parent.parent


# === Toy SavedModels ===


def _seeded_matrix(generator: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """Returns float32 weights small enough that tanh/softmax stay well-conditioned."""
    return generator.normal(0.0, 0.7, size=shape).astype(np.float32)


def _make_language_model_module(tf):
    """Builds the toy language model: an Elman RNN over a fixed word vocabulary."""
    vocabulary_size = len(TOY_VOCABULARY)

    class ToyLanguageModel(tf.Module):
        """Word-level SimpleRNN language model with the contract's six signatures."""

        def __init__(self):
            super().__init__()
            words = tf.constant(TOY_VOCABULARY[2:])
            ids = tf.range(2, vocabulary_size, dtype=tf.int64)
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(words, ids), default_value=1)
            self.words = tf.Variable(list(TOY_VOCABULARY), trainable=False)
            self.embedding = tf.Variable(tf.zeros([vocabulary_size, TOY_EMBEDDING_DIM]))
            self.input_kernel = tf.Variable(tf.zeros([TOY_EMBEDDING_DIM, TOY_STATE_SIZE]))
            self.recurrent_kernel = tf.Variable(tf.zeros([TOY_STATE_SIZE, TOY_STATE_SIZE]))
            self.bias = tf.Variable(tf.zeros([TOY_STATE_SIZE]))
            self.output_kernel = tf.Variable(tf.zeros([TOY_STATE_SIZE, vocabulary_size]))
            self.output_bias = tf.Variable(tf.zeros([vocabulary_size]))

        def set_weights(self, seed: int) -> None:
            generator = np.random.default_rng(seed)
            for variable in (self.embedding, self.input_kernel, self.recurrent_kernel,
                             self.bias, self.output_kernel, self.output_bias):
                variable.assign(_seeded_matrix(generator, variable.shape))

        def _tokenize(self, text):
            words = tf.strings.split(text)
            ids = tf.ragged.map_flat_values(self.table.lookup, words)
            return ids.to_tensor(default_value=0), ids.row_lengths()

        def _unroll(self, token_ids, state):
            """Runs the RNN over right-padded ids; padding leaves the state as it is."""
            mask = tf.not_equal(token_ids, 0)  # (batch, time)
            embedded = tf.gather(self.embedding, token_ids)  # (batch, time, embedding)
            batch_size = tf.shape(token_ids)[0]
            zero_logits = tf.zeros([batch_size, vocabulary_size])

            def cell(carry, inputs):
                previous_state, last_logits, _ = carry
                features, row_mask = inputs
                candidate = tf.tanh(features @ self.input_kernel
                                    + previous_state @ self.recurrent_kernel + self.bias)
                logits = candidate @ self.output_kernel + self.output_bias
                row_mask = row_mask[:, None]
                return (tf.where(row_mask, candidate, previous_state),
                        tf.where(row_mask, logits, last_logits),
                        tf.where(row_mask, logits, zero_logits))

            states, last_logits, step_logits = tf.scan(
                cell,
                (tf.transpose(embedded, [1, 0, 2]), tf.transpose(mask)),
                initializer=(state, zero_logits, zero_logits))
            # Prepending the initial values makes an empty time axis come out right.
            final_state = tf.concat([state[None], states], axis=0)[-1]
            final_logits = tf.concat([zero_logits[None], last_logits], axis=0)[-1]
            return final_state, final_logits, tf.transpose(step_logits, [1, 0, 2])

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name="token_ids")])
        def serving_default(self, token_ids):
            state = tf.zeros([tf.shape(token_ids)[0], TOY_STATE_SIZE])
            _, _, logits = self._unroll(token_ids, state)
            return {"logits": logits}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def tokenize(self, text):
            token_ids, lengths = self._tokenize(text)
            return {"token_ids": token_ids, "lengths": lengths}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name="token_ids")])
        def detokenize(self, token_ids):
            words = tf.ragged.boolean_mask(tf.gather(self.words, token_ids),
                                           tf.not_equal(token_ids, 0))
            return {"text": tf.strings.reduce_join(words, axis=1, separator=" ")}

        @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="batch_size")])
        def initial_state(self, batch_size):
            return {"state": tf.zeros([batch_size, TOY_STATE_SIZE])}

        @tf.function(input_signature=[
            tf.TensorSpec([None, None], tf.int64, name="token_ids"),
            tf.TensorSpec([None, TOY_STATE_SIZE], tf.float32, name="state")])
        def step(self, token_ids, state):
            new_state, logits, _ = self._unroll(token_ids, state)
            return {"logits": logits, "state": new_state}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def score(self, text):
            token_ids, _ = self._tokenize(text)
            state = tf.zeros([tf.shape(token_ids)[0], TOY_STATE_SIZE])
            _, _, logits = self._unroll(token_ids, state)
            log_probabilities = tf.nn.log_softmax(logits[:, :-1])
            targets = token_ids[:, 1:]
            target_log_probabilities = tf.gather(log_probabilities, targets, batch_dims=2)
            mask = tf.not_equal(targets, 0)
            log_prob = tf.reduce_sum(tf.where(mask, target_log_probabilities, 0.0), axis=1)
            return {"log_prob": log_prob,
                    "num_tokens": tf.reduce_sum(tf.cast(mask, tf.int64), axis=1)}

        def signatures(self):
            return {name: getattr(self, name) for name in (
                "serving_default", "tokenize", "detokenize", "initial_state", "step", "score")}

    return ToyLanguageModel()


def _make_classifier_module(tf):
    """Builds the toy sentence classifier: masked mean of embeddings, then softmax."""
    vocabulary_size = len(TOY_VOCABULARY)
    num_classes = len(TOY_CLASS_NAMES)

    class ToyClassifier(tf.Module):
        """Bag-of-words classifier with `serving_default` and a Classify-method `classify`."""

        def __init__(self):
            super().__init__()
            words = tf.constant(TOY_VOCABULARY[2:])
            ids = tf.range(2, vocabulary_size, dtype=tf.int64)
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(words, ids), default_value=1)
            self.class_names = tf.Variable(list(TOY_CLASS_NAMES), trainable=False)
            self.embedding = tf.Variable(tf.zeros([vocabulary_size, TOY_EMBEDDING_DIM]))
            self.kernel = tf.Variable(tf.zeros([TOY_EMBEDDING_DIM, num_classes]))
            self.bias = tf.Variable(tf.zeros([num_classes]))

        def set_weights(self, seed: int) -> None:
            generator = np.random.default_rng(seed)
            for variable in (self.embedding, self.kernel, self.bias):
                variable.assign(_seeded_matrix(generator, variable.shape))

        def _probabilities(self, sentences):
            words = tf.strings.split(sentences)
            token_ids = tf.ragged.map_flat_values(self.table.lookup, words).to_tensor(0)
            mask = tf.cast(tf.not_equal(token_ids, 0), tf.float32)[:, :, None]
            embedded = tf.gather(self.embedding, token_ids) * mask  # (batch, time, embedding)
            count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
            pooled = tf.reduce_sum(embedded, axis=1) / count  # (batch, embedding)
            return tf.nn.softmax(pooled @ self.kernel + self.bias)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
        def serving_default(self, sentences):
            probabilities = self._probabilities(sentences)
            label_id = tf.argmax(probabilities, axis=1)
            return {"probabilities": probabilities, "label_id": label_id,
                    "label": tf.gather(self.class_names, label_id)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            features = tf.io.parse_example(
                inputs, {"text": tf.io.FixedLenFeature([], tf.string, default_value="")})
            scores = self._probabilities(features["text"])
            classes = tf.tile(self.class_names[None], [tf.shape(inputs)[0], 1])
            return {"scores": scores, "classes": classes}

        def signatures(self):
            return {"serving_default": self.serving_default, "classify": self.classify}

    return ToyClassifier()


def _make_tagger_module(tf):
    """Builds the toy sequence tagger: an independent softmax over tags per token."""
    vocabulary_size = len(TOY_VOCABULARY)
    num_tags = len(TOY_TAG_NAMES)

    class ToyTagger(tf.Module):
        """Per-token tagger with `serving_default` (sentences) and `tag_tokens` (tokens)."""

        def __init__(self):
            super().__init__()
            words = tf.constant(TOY_VOCABULARY[2:])
            ids = tf.range(2, vocabulary_size, dtype=tf.int64)
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(words, ids), default_value=1)
            self.tag_names = tf.Variable(list(TOY_TAG_NAMES), trainable=False)
            self.embedding = tf.Variable(tf.zeros([vocabulary_size, TOY_EMBEDDING_DIM]))
            self.kernel = tf.Variable(tf.zeros([TOY_EMBEDDING_DIM, num_tags]))

        def set_weights(self, seed: int) -> None:
            generator = np.random.default_rng(seed)
            for variable in (self.embedding, self.kernel):
                variable.assign(_seeded_matrix(generator, variable.shape))

        def _tag(self, tokens):
            mask = tf.not_equal(tokens, "")  # (batch, time)
            token_ids = tf.where(mask, self.table.lookup(tokens), tf.zeros_like(tokens, tf.int64))
            probabilities = tf.nn.softmax(tf.gather(self.embedding, token_ids) @ self.kernel)
            tag_ids = tf.argmax(probabilities, axis=2)
            return {
                "tokens": tokens,
                "tags": tf.where(mask, tf.gather(self.tag_names, tag_ids), ""),
                "probabilities": tf.where(mask, tf.reduce_max(probabilities, axis=2), 0.0),
                "lengths": tf.reduce_sum(tf.cast(mask, tf.int64), axis=1),
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
        def serving_default(self, sentences):
            return self._tag(tf.strings.split(sentences).to_tensor(default_value=""))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="tokens")])
        def tag_tokens(self, tokens):
            return self._tag(tokens)

        def signatures(self):
            return {"serving_default": self.serving_default, "tag_tokens": self.tag_tokens}

    return ToyTagger()


_MODEL_FACTORIES = {
    LANGUAGE_MODEL_NAME: _make_language_model_module,
    CLASSIFIER_NAME: _make_classifier_module,
    TAGGER_NAME: _make_tagger_module,
}


def _mark_classify_signature(tf, export_dir: pathlib.Path) -> None:
    """Gives the `classify` signature Classify's method name.

    `tf.saved_model.save` writes every signature with the Predict method name;
    TF Serving's Classify API only runs signatures whose method_name is
    `tensorflow/serving/classify`. TensorFlow's MethodNameUpdater rewrites
    saved_model.pb in place; loading ignores method names, so the model loads
    as before.
    """
    updater = tf.compat.v1.saved_model.signature_def_utils.MethodNameUpdater(str(export_dir))
    updater.replace_method_name(signature_key="classify", method_name=CLASSIFY_METHOD_NAME,
                                tags=tf.saved_model.SERVING)
    updater.save()


def save_toy_model(model_name: str, export_dir: os.PathLike, seed: int) -> pathlib.Path:
    """Exports one toy model (`lm`, `classifier` or `tagger`) to `export_dir`.

    Args:
        model_name: One of the keys of the toy model table.
        export_dir: The version directory to write (must not exist yet).
        seed: Seed of the weights; use the version number so versions differ.

    Returns:
        The export directory.
    """
    import tensorflow as tf

    if model_name not in _MODEL_FACTORIES:
        raise ValueError(f"unknown toy model {model_name!r}; expected one of {sorted(_MODEL_FACTORIES)}")
    module = _MODEL_FACTORIES[model_name](tf)
    module.set_weights(seed)
    export_dir = pathlib.Path(export_dir)
    tf.saved_model.save(module, str(export_dir), signatures=module.signatures())
    if model_name == CLASSIFIER_NAME:
        _mark_classify_signature(tf, export_dir)
    return export_dir


def build_toy_models(root: os.PathLike, versions: Sequence[int] = (1, 2)) -> pathlib.Path:
    """Writes `root/<model>/<version>/` for the three toy models, once per root.

    A marker file makes a second call with the same root free, so several test
    modules can share one cache directory (building takes a few seconds).

    Args:
        root: Directory that receives one sub-directory per model.
        versions: Version numbers to export; each uses its number as the seed.

    Returns:
        `root` as a path.
    """
    root = pathlib.Path(root)
    marker = root / ".complete"
    if marker.exists():
        return root
    for model_name in _MODEL_FACTORIES:
        for version in versions:
            save_toy_model(model_name, root / model_name / str(version), seed=version)
    marker.write_text("ok\n")
    return root


def session_toy_models(tmp_path_factory) -> pathlib.Path:
    """The toy models, built once per pytest session (pass pytest's `tmp_path_factory`).

    Treat the result as read-only; copy it (`shutil.copytree`) to change it.
    """
    return build_toy_models(tmp_path_factory.getbasetemp() / "toy_models")


def copy_version_atomically(source: os.PathLike, base_path: os.PathLike, version: int) -> pathlib.Path:
    """Copies a version directory in as exporters do: to a temporary name, then rename.

    The server only sees complete versions this way, as with a real export.
    """
    base_path = pathlib.Path(base_path)
    temporary = pathlib.Path(tempfile.mkdtemp(prefix=".incoming-", dir=base_path))
    shutil.copytree(source, temporary, dirs_exist_ok=True)
    target = base_path / str(version)
    os.rename(temporary, target)
    return target


def predict_request(model: str, signature: str = "", **inputs):
    """A `PredictRequest` for `model`'s `signature` (default: the server's default) with numpy `inputs`."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


def run_saved_model(export_dir: os.PathLike, signature_name: str, **inputs) -> dict:
    """Runs a signature of a SavedModel in this process; the reference for server values."""
    import tensorflow as tf

    loaded = _loaded_models.get(str(export_dir))
    if loaded is None:
        loaded = tf.saved_model.load(str(export_dir))
        _loaded_models[str(export_dir)] = loaded
    function = loaded.signatures[signature_name]
    tensors = {name: tf.constant(value, dtype=function.structured_input_signature[1][name].dtype)
               for name, value in inputs.items()}
    return {name: tensor.numpy() for name, tensor in function(**tensors).items()}


_loaded_models: dict = {}


# === Certificates for TLS tests (made with the openssl command, so no dependency is added) ===


def _openssl(*arguments, cwd):
    import subprocess

    subprocess.run(["openssl", *arguments], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificate_authority(directory: os.PathLike, name: str) -> dict:
    """A self-signed CA (EC P-256, valid one day): {"cert": path, "key": path}."""
    directory = pathlib.Path(directory)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", cert, "-days", "1", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    return {"cert": cert, "key": key}


def make_signed_certificate(directory: os.PathLike, name: str, authority: dict, usage: str) -> dict:
    """A certificate for 127.0.0.1 and localhost signed by `authority`; `usage` is serverAuth or clientAuth."""
    directory = pathlib.Path(directory)
    cert, key, request = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"
                          "basicConstraints=CA:FALSE\n")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", request, "-subj", f"/CN={name}", cwd=directory)
    _openssl("x509", "-req", "-in", request, "-CA", authority["cert"], "-CAkey", authority["key"],
             "-CAcreateserial", "-out", cert, "-days", "1", "-extfile", extensions, cwd=directory)
    return {"cert": cert, "key": key}


def write_ssl_config(path: os.PathLike, server: dict, custom_ca: os.PathLike | None = None,
                     client_verify: bool = False) -> pathlib.Path:
    """Writes a tensorflow.serving.SSLConfig text proto holding the PEM text, as TF Serving reads it."""
    import json

    fields = {"server_key": pathlib.Path(server["key"]).read_text(),
              "server_cert": pathlib.Path(server["cert"]).read_text()}
    if custom_ca is not None:
        fields["custom_ca"] = pathlib.Path(custom_ca).read_text()
    lines = [f"{name}: {json.dumps(value)}" for name, value in fields.items()]  # JSON escapes are text-proto escapes
    lines.append(f"client_verify: {'true' if client_verify else 'false'}")
    path = pathlib.Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


# === Reading HTTP answers off a raw socket (framing tests send bytes as they are) ===


def read_http_response(reader):
    """(status, JSON body, headers) of the next answer on a connection's one buffered reader.

    One reader for the whole connection, so bytes of the next answer read
    ahead with this one are not lost (as they would be with one
    http.client.HTTPResponse per answer).
    """
    import http.client
    import json

    status_line = reader.readline().decode("latin-1")
    assert status_line.startswith("HTTP/1.1 "), status_line
    headers = http.client.parse_headers(reader)
    payload = reader.read(int(headers["Content-Length"]))
    return int(status_line.split()[1]), json.loads(payload), headers



# === A real server process (the library's launcher, run from the repository root) ===

from serving.server.launch import ServerProcess, free_port, stop_server, wait_for_health  # noqa: E402
from serving.server.launch import running_server as _running_server  # noqa: E402


@contextlib.contextmanager
def running_server(**options) -> Iterator[ServerProcess]:
    """`serving.server.launch.running_server` with the repository root as default working directory."""
    options.setdefault("cwd", _REPOSITORY_ROOT)
    with _running_server(**options) as server:
        yield server


__all__ = ["ServerProcess", "build_toy_models", "copy_version_atomically", "free_port",
           "make_certificate_authority", "make_signed_certificate", "predict_request", "read_http_response",
           "run_saved_model",
           "running_server", "save_toy_model", "session_toy_models", "stop_server", "wait_for_health",
           "write_ssl_config"]
