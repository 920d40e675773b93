"""The language models the generation loop can drive: over gRPC, in this process, or in memory.

    backend = GrpcBackend("localhost:8500", "shakespeare_char_lstm")
    backend = SavedModelBackend("saved_models/shakespeare_char_lstm/3")
    backend = KerasBackend(model, vocabulary, level="char")

Each speaks the contract's language-model signatures (`tokenize`,
`detokenize`, `initial_state`, `step`, `score`; docs/serving_contract.md), so
the loop never knows which one it drives. TensorFlow and the gRPC stubs are
imported when a backend is made, not when this module is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from serving.client.connection import add_connection_arguments, security_from_arguments

# The contract's reserved ids: right-padding and the unknown token.
PAD_ID = 0
OOV_ID = 1


class BackendError(RuntimeError):
    """A backend call failed (over gRPC: the server refused the call or could not be reached)."""


class LanguageModelBackend(Protocol):
    """What the loop needs from a language model: the contract's LM signatures.

    Attributes:
        token_strings: every token's text, by id (read once from `detokenize`).
        separator: what the model's `detokenize` puts between two tokens (" "
            for word models, "" for character models).
        end_token: the token that ends a sentence (`"<eos>"`) or None.

    A backend may also have `score(texts) -> [(log_prob, num_tokens), ...]`
    (the `score` signature); `score()` steps through the text without it. One
    whose `can_sample` is true also has `sample(token_ids, state, uniforms,
    temperature, top_k) -> (next ids, log-probs, state)` (the `sample`
    signature), which the loop uses where it draws the same tokens.
    """

    token_strings: list[str]
    separator: str
    end_token: str | None

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without padding."""

    def initial_state(self, batch_size: int) -> np.ndarray:
        """The start state, float32 (batch, state_size)."""

    def step(self, token_ids: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feeds int64 (batch, k) ids, right-padded with 0: returns (logits (batch, vocabulary), state)."""


# The `sample` signature's inputs beyond `step`'s (serving.export.sampling).
SAMPLE_SIGNATURE = "sample"


def _sample_inputs(token_ids, state, uniforms, temperature, top_k) -> dict[str, np.ndarray]:
    return {"token_ids": np.asarray(token_ids, dtype=np.int64), "state": np.asarray(state, dtype=np.float32),
            "uniforms": np.asarray(uniforms, dtype=np.float64),
            "temperature": np.asarray(temperature, dtype=np.float64),
            "top_k": np.asarray(top_k, dtype=np.int32)}


def _unpad(token_ids: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Rows of a right-padded id matrix, cut to their lengths."""
    return [row[:length].tolist() for row, length in zip(np.asarray(token_ids), np.asarray(lengths))]


def pad_rows(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """Right-pads id rows with 0 into an int64 (batch, max(1, longest)) matrix."""
    padded = np.zeros((len(rows), max([1] + [len(row) for row in rows])), dtype=np.int64)
    for index, row in enumerate(rows):
        padded[index, :len(row)] = row
    return padded


# Rows per detokenize call when reading the vocabulary: well under a server's
# --max_batch_size (1024 by default), so a 10k-word vocabulary takes 40 calls.
VOCABULARY_ROWS_PER_CALL = 256


def _vocabulary_from_detokenize(detokenize_rows: Callable, vocabulary_size: int) -> list[str]:
    """Every token's text, read from the model itself, one row per token, a few hundred rows a call."""
    ids = np.arange(vocabulary_size, dtype=np.int64).reshape(-1, 1)
    strings = []
    for start in range(0, vocabulary_size, VOCABULARY_ROWS_PER_CALL):
        strings.extend(detokenize_rows(ids[start:start + VOCABULARY_ROWS_PER_CALL]))
    return strings


def _separator(token_strings: Sequence[str], detokenize_rows: Callable) -> str:
    """What the model puts between two tokens: detokenize two ordinary tokens and look between them."""
    first, second = 2, 3  # 0 is <pad> (dropped by detokenize), 1 is <unk>
    text = detokenize_rows(np.array([[first, second]], dtype=np.int64))[0]
    return text[len(token_strings[first]): len(text) - len(token_strings[second])]


class SavedModelBackend:
    """A zoo language-model SavedModel loaded in this process, with TensorFlow alone.

    Args:
        path: a version directory, e.g. ``saved_models/shakespeare_char_lstm/3``.
        use_sample_signature: let the model draw tokens with its `sample`
            signature when it has one (the same tokens as drawing here).

    Raises:
        ValueError: the path holds no SavedModel, or not a language model.
    """

    def __init__(self, path, use_sample_signature: bool = True):
        import tensorflow as tf

        self._tf = tf
        self.path = Path(path)
        if not (self.path / "saved_model.pb").exists():
            raise ValueError(f"{self.path} holds no saved_model.pb; give a version directory "
                             "such as saved_models/<model>/<version>")
        self._signatures = tf.saved_model.load(str(self.path)).signatures
        missing = {"tokenize", "detokenize", "initial_state", "step"} - set(self._signatures)
        if missing:
            raise ValueError(f"{self.path} is not a zoo language model: no {sorted(missing)} signature(s)")
        info_path = self.path / "assets.extra" / "zoo.json"
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
        vocabulary_size = int(self._signatures["step"].structured_outputs["logits"].shape[-1])
        self.token_strings = _vocabulary_from_detokenize(self._detokenize_rows, vocabulary_size)
        self.separator = _separator(self.token_strings, self._detokenize_rows)
        self.end_token = info.get("end_token")
        self.can_sample = use_sample_signature and SAMPLE_SIGNATURE in self._signatures

    @property
    def vocabulary_size(self) -> int:
        return len(self.token_strings)

    def _call(self, signature_name: str, **inputs) -> dict:
        try:
            return self._signatures[signature_name](**inputs)
        except self._tf.errors.OpError as error:
            raise BackendError(f"{signature_name} on {self.path} failed: {error.message}") from error

    def _detokenize_rows(self, rows: np.ndarray) -> list[str]:
        output = self._call("detokenize", token_ids=self._tf.constant(rows, self._tf.int64))
        return [text.decode("utf-8") for text in output["text"].numpy()]

    def detokenize(self, rows: Sequence[Sequence[int]]) -> list[str]:
        return self._detokenize_rows(pad_rows(rows))

    def tokenize(self, texts):
        output = self._call("tokenize", text=self._tf.constant(list(texts), self._tf.string))
        return _unpad(output["token_ids"].numpy(), output["lengths"].numpy())

    def initial_state(self, batch_size):
        return self._call("initial_state", batch_size=self._tf.constant(batch_size, self._tf.int32))["state"].numpy()

    def step(self, token_ids, state):
        output = self._call("step", token_ids=self._tf.constant(token_ids, self._tf.int64),
                            state=self._tf.constant(state, self._tf.float32))
        return output["logits"].numpy(), output["state"].numpy()

    def sample(self, token_ids, state, uniforms, temperature, top_k):
        """`step`, then one token per row drawn in the graph: (next ids (batch,), log-probs, state)."""
        inputs = {name: self._tf.constant(value) for name, value in
                  _sample_inputs(token_ids, state, uniforms, temperature, top_k).items()}
        output = self._call(SAMPLE_SIGNATURE, **inputs)
        return output["next_token_id"].numpy(), output["log_prob"].numpy(), output["state"].numpy()

    def score(self, texts):
        if "score" not in self._signatures:
            raise NotImplementedError(f"{self.path} has no score signature")
        output = self._call("score", text=self._tf.constant(list(texts), self._tf.string))
        return list(zip(output["log_prob"].numpy().tolist(), output["num_tokens"].numpy().tolist()))


class GrpcBackend:
    """A zoo language model behind a TensorFlow Serving gRPC endpoint.

    Calls `Predict` with the `tokenize`, `detokenize`, `initial_state`, `step`
    and `score` signatures through the official stubs (`serving.client`); every
    call has a deadline. Works with this project's server and with
    `tensorflow_model_server` alike.

    Args:
        target: host:port of the server.
        model_name: the served model.
        version: a version number (default: the latest).
        timeout_seconds: deadline of each call.
        security: TLS files and bearer token (`serving.client.connection.ConnectionSecurity`), or None.
        use_sample_signature: let the server draw tokens with the model's
            `sample` signature when it has one: one int64 per row comes back
            instead of a row of logits (the same tokens as drawing here).

    Raises:
        BackendError: the model cannot be read from the server, or is not a
            language model.
    """

    def __init__(self, target: str, model_name: str, version: int | None = None, timeout_seconds: float = 30.0,
                 security=None, use_sample_signature: bool = True):
        from serving.client import ServingClient

        self.target, self.model_name, self.version = target, model_name, version
        self.client = ServingClient(target, timeout_seconds=timeout_seconds, security=security)
        try:
            signatures = self.client.get_model_metadata(model_name, version)
        except Exception as error:  # ServingClientError: not served, server down, deadline
            raise BackendError(f"cannot read {model_name} at {target}: {error}") from error
        missing = {"tokenize", "detokenize", "initial_state", "step"} - set(signatures)
        if missing:
            raise BackendError(f"{model_name} at {target} is not a zoo language model: "
                               f"no {sorted(missing)} signature(s)")
        vocabulary_size = signatures["step"].outputs["logits"].tensor_shape.dim[-1].size
        if vocabulary_size <= 0:  # not in the metadata: ask the model (a padding row gives zero logits)
            vocabulary_size = self.step(np.zeros((1, 1), np.int64), self.initial_state(1))[0].shape[-1]
        self.token_strings = _vocabulary_from_detokenize(self._detokenize_rows, vocabulary_size)
        self.separator = _separator(self.token_strings, self._detokenize_rows)
        # The exporter names `<eos>` as the end token of word models whose vocabulary has it.
        self.end_token = "<eos>" if self.separator == " " and "<eos>" in self.token_strings else None
        self.can_sample = use_sample_signature and SAMPLE_SIGNATURE in signatures

    @property
    def vocabulary_size(self) -> int:
        return len(self.token_strings)

    def _predict(self, signature_name: str, inputs: dict) -> dict[str, np.ndarray]:
        from serving.client import ServingClientError

        try:
            return self.client.predict(self.model_name, inputs, signature_name=signature_name,
                                       version=self.version).outputs
        except ServingClientError as error:
            raise BackendError(f"{signature_name} on {self.model_name} at {self.target} failed: {error}") from error

    def _detokenize_rows(self, rows):
        texts = self._predict("detokenize", {"token_ids": np.asarray(rows, dtype=np.int64)})["text"]
        return [text.decode("utf-8") for text in texts]

    def detokenize(self, rows: Sequence[Sequence[int]]) -> list[str]:
        return self._detokenize_rows(pad_rows(rows))

    def tokenize(self, texts):
        outputs = self._predict("tokenize", {"text": np.array([text.encode("utf-8") for text in texts],
                                                               dtype=object)})
        return _unpad(outputs["token_ids"], outputs["lengths"])

    def initial_state(self, batch_size):
        return self._predict("initial_state", {"batch_size": np.array(batch_size, dtype=np.int32)})["state"]

    def step(self, token_ids, state):
        outputs = self._predict("step", {"token_ids": np.asarray(token_ids, dtype=np.int64),
                                         "state": np.asarray(state, dtype=np.float32)})
        return outputs["logits"], outputs["state"]

    def sample(self, token_ids, state, uniforms, temperature, top_k):
        """`step`, then one token per row drawn by the server: (next ids (batch,), log-probs, state)."""
        outputs = self._predict(SAMPLE_SIGNATURE, _sample_inputs(token_ids, state, uniforms, temperature, top_k))
        return outputs["next_token_id"], outputs["log_prob"], outputs["state"]

    def score(self, texts):
        outputs = self._predict("score", {"text": np.array([text.encode("utf-8") for text in texts],
                                                            dtype=object)})
        return list(zip(outputs["log_prob"].tolist(), outputs["num_tokens"].tolist()))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "GrpcBackend":
        return self

    def __exit__(self, *exception_info) -> None:
        self.close()


class KerasBackend:
    """A zoo language model in memory with its training Vocabulary (notebooks, tests).

    Tokenizes like the exporter: whitespace words or characters.

    Args:
        model: a zoo language model (``model(ids, initial_state=..., return_state=True)``).
        vocabulary: its training ``training.vocab.Vocabulary`` (id 0 ``<pad>``, 1 ``<unk>``).
        level: ``"word"`` or ``"char"``.
    """

    def __init__(self, model, vocabulary, level: str = "word"):
        if level not in ("word", "char"):
            raise ValueError(f"level must be 'word' or 'char', got {level!r}")
        self.model, self.vocabulary, self.level = model, vocabulary, level
        self.token_strings = list(vocabulary.tokens)
        self.separator = " " if level == "word" else ""
        self.end_token = "<eos>" if level == "word" and "<eos>" in self.token_strings else None

    @property
    def vocabulary_size(self) -> int:
        return len(self.token_strings)

    def tokenize(self, texts):
        return [self.vocabulary.encode(text.split() if self.level == "word" else list(text)) for text in texts]

    def initial_state(self, batch_size):
        return np.asarray(self.model.initial_state(batch_size))

    def step(self, token_ids, state):
        token_ids = np.asarray(token_ids)
        logits, new_state = self.model(token_ids, initial_state=state, return_state=True)
        lengths = (token_ids != PAD_ID).sum(axis=1)  # (batch,)
        last = np.asarray(logits)[np.arange(len(token_ids)), np.maximum(lengths - 1, 0)]  # (batch, vocabulary)
        last[lengths == 0] = 0.0  # the contract: an all-padding row gives zero logits
        return last, np.asarray(new_state)


# === The flags that pick a backend (shared by the generation commands) ===


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that pick a model: --server/--model/--version/--timeout or --saved_model."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--server", default="localhost:8500", help="gRPC host:port (default: localhost:8500)")
    source.add_argument("--saved_model", help="run in this process from a SavedModel version directory")
    parser.add_argument("--model", help="served model name (with --server)")
    parser.add_argument("--version", type=int, help="served version (default: the latest)")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline per gRPC call, seconds (default: 30)")
    add_connection_arguments(parser)


def backend_from_arguments(args: argparse.Namespace):
    """The backend the --server/--saved_model flags describe."""
    if args.saved_model:
        return SavedModelBackend(args.saved_model)
    if not args.model:
        raise ValueError("--model is required with --server")
    return GrpcBackend(args.server, args.model, args.version, timeout_seconds=args.timeout,
                       security=security_from_arguments(args))
