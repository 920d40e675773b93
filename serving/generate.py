"""Text generation: the autoregressive loop that carries the recurrent state.

    from serving.generate import GrpcBackend, SavedModelBackend, generate, stream_generate

    backend = GrpcBackend("localhost:8500", "shakespeare_char_lstm")     # or SavedModelBackend(path)
    result = generate(backend, ["ROMEO:", "JULIET:"], max_new_tokens=200, top_p=0.95, seed=1)
    print(result.full_texts[0])
    for row, piece in stream_generate(backend, ["ROMEO:"], max_new_tokens=200, seed=1):
        print(piece, end="", flush=True)

One loop, several backends: the model server over gRPC, a SavedModel loaded in
this process, or a Keras model in memory. Each prompt is fed once -- the whole
batch of prompts in one `step` call, rows right-padded with 0 -- and then one
token per live row per step; the state the backend returns is carried to the
next call and the prefix is never sent again, so the server keeps no
per-client state (docs/serving_contract.md). A row that finishes leaves the
batch: its state row is sliced away and it is never sent again.

Rules worth knowing:

- Seeds: row j of a prompt's `num_return_sequences` draws from
  `numpy.random.default_rng([seed, crc32(prompt text), j])`, never from its
  position in the batch, so the same prompt and seed give the same text in any
  batch, and two different prompts do not share random draws.
- Text prompts start at a text boundary: the model's initial state is fed the
  model's end token first (`<eos>` for word models, which ends every training
  line) or else a newline (character models), then the prompt. The models were
  trained with the state carried across lines, so that boundary is what they
  saw before every line; from the bare initial state a PTB model predicts
  `<eos>` after "the company said" (logit 14.5 against 11.7 for "it" once the
  boundary is fed). The start token is context only, never part of the output.
  An empty prompt is the start token alone. Token-id prompts are fed exactly
  as given. A model with neither an end token nor a newline starts text
  prompts from the bare initial state, and an empty prompt raises ValueError.
- Out-of-vocabulary words or characters become `<unk>` (id 1), with a warning.
- Stopping: at `max_new_tokens`; at the model's end token (`stop_at_end_token`);
  at a stop token id (neither is part of the output); or right before a stop
  string, cut exactly, also when it spans several tokens or begins mid-token.
  A stop string counts once `min_new_tokens` tokens exist and ends in the
  newest token; stop tokens are held back (logit -inf) until then.
- The padding id 0 is never generated.
- Log-probabilities are the model's own, log p(token | context), before any
  penalty, temperature or filter.
- `num_beams=1` is greedy decoding (or sampling); beam search never samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import zlib
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence, Union

import numpy as np

from serving import samplers

logger = logging.getLogger(__name__)

PAD_ID = 0
OOV_ID = 1

# A prompt is text, or token ids taken as they are (no tokenization).
Prompt = Union[str, Sequence[int]]


# === Errors ===


class BackendError(RuntimeError):
    """A backend call failed (over gRPC: the server refused the call or could not be reached)."""


class GenerationError(RuntimeError):
    """Generation stopped part-way because the backend failed.

    Attributes:
        tokens_generated: per output row, how many new tokens it had when the
            failure happened.
    """

    def __init__(self, message: str, tokens_generated: Sequence[int] = ()):
        super().__init__(message)
        self.tokens_generated = list(tokens_generated)


# === Backends ===


class LanguageModelBackend(Protocol):
    """What the loop needs from a language model: the contract's LM signatures.

    Attributes:
        token_strings: every token's text, by id (read once from `detokenize`).
        separator: what the model's `detokenize` puts between two tokens (" "
            for word models, "" for character models).
        end_token: the token that ends a sentence (`"<eos>"`) or None.

    A backend may also have `score(texts) -> [(log_prob, num_tokens), ...]`
    (the `score` signature); `score()` steps through the text without it.
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


def _unpad(token_ids: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Rows of a right-padded id matrix, cut to their lengths."""
    return [row[:length].tolist() for row, length in zip(np.asarray(token_ids), np.asarray(lengths))]


def _pad(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """Right-pads id rows with 0 into an int64 (batch, max(1, longest)) matrix."""
    padded = np.zeros((len(rows), max([1] + [len(row) for row in rows])), dtype=np.int64)
    for index, row in enumerate(rows):
        padded[index, :len(row)] = row
    return padded


def _vocabulary_from_detokenize(detokenize_rows: Callable, vocabulary_size: int) -> list[str]:
    """Every token's text, read from the model itself in one detokenize call."""
    return detokenize_rows(np.arange(vocabulary_size, dtype=np.int64).reshape(-1, 1))


def _separator(token_strings: Sequence[str], detokenize_rows: Callable) -> str:
    """What the model puts between two tokens: detokenize two ordinary tokens and look between them."""
    first, second = 2, 3  # 0 is <pad> (dropped by detokenize), 1 is <unk>
    text = detokenize_rows(np.array([[first, second]], dtype=np.int64))[0]
    return text[len(token_strings[first]): len(text) - len(token_strings[second])]


class SavedModelBackend:
    """A zoo language-model SavedModel loaded in this process, with TensorFlow alone.

    Args:
        path: a version directory, e.g. ``saved_models/shakespeare_char_lstm/2``.

    Raises:
        ValueError: the path holds no SavedModel, or not a language model.
    """

    def __init__(self, path):
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
        return self._detokenize_rows(_pad(rows))

    def tokenize(self, texts):
        output = self._call("tokenize", text=self._tf.constant(list(texts), self._tf.string))
        return _unpad(output["token_ids"].numpy(), output["lengths"].numpy())

    def initial_state(self, batch_size):
        return self._call("initial_state", batch_size=self._tf.constant(batch_size, self._tf.int32))["state"].numpy()

    def step(self, token_ids, state):
        output = self._call("step", token_ids=self._tf.constant(token_ids, self._tf.int64),
                            state=self._tf.constant(state, self._tf.float32))
        return output["logits"].numpy(), output["state"].numpy()

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

    Raises:
        BackendError: the model cannot be read from the server, or is not a
            language model.
    """

    def __init__(self, target: str, model_name: str, version: int | None = None, timeout_seconds: float = 30.0):
        from serving.client import ServingClient

        self.target, self.model_name, self.version = target, model_name, version
        self.client = ServingClient(target, timeout_seconds=timeout_seconds)
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
        return self._detokenize_rows(_pad(rows))

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


# === Options and results ===


@dataclasses.dataclass
class GenerationOptions:
    """Generation parameters, named and meant as in Hugging Face ``generate()``.

    Attributes:
        max_new_tokens: most tokens to generate per row (>= 0).
        min_new_tokens: stop tokens are held back, and stop strings ignored,
            until a row has this many tokens.
        do_sample: sample (True) or take the most likely token (False). None
            (the default) samples unless ``num_beams > 1`` -- unlike Hugging
            Face, whose default is greedy.
        temperature, top_k, top_p, min_p, typical_p: the sampling filters
            (``serving.samplers``), applied in that order when sampling.
        repetition_penalty: CTRL's penalty on every token of the prompt and
            the output so far (1: none).
        no_repeat_ngram_size: n > 0 forbids any n-gram to occur twice.
        num_beams: > 1 for beam search.
        length_penalty: beam score = sum of log-probs / length ** length_penalty.
        early_stopping: beam search stops a prompt when it has ``num_beams``
            finished hypotheses (True), when no running beam can beat them by
            Hugging Face's heuristic (False), or when none can beat them at all
            ("never").
        num_return_sequences: sequences per prompt (sampling or beam search).
        stop: stop token ids (int) and stop strings (str).
        stop_at_end_token: the model's end token (``<eos>``) ends a row.
        seed: makes sampling reproducible (see the module docstring).
        return_logprobs: also return each token's model log-probability.
    """

    max_new_tokens: int = 100
    min_new_tokens: int = 0
    do_sample: bool | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    stop: Sequence[str | int] = ()
    stop_at_end_token: bool = True
    seed: int | None = None
    return_logprobs: bool = False

    @property
    def sampling(self) -> bool:
        """Whether rows are sampled (else greedy or beam search)."""
        return self.num_beams == 1 if self.do_sample is None else bool(self.do_sample)

    def check(self) -> None:
        """Raises ValueError for impossible parameters; called before any backend call."""
        _integer("max_new_tokens", self.max_new_tokens, 0)
        _integer("min_new_tokens", self.min_new_tokens, 0)
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens ({self.min_new_tokens}) exceeds max_new_tokens "
                             f"({self.max_new_tokens})")
        _number("temperature", self.temperature)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r} (use do_sample=False for greedy)")
        _integer("top_k", self.top_k, 0)
        _number("top_p", self.top_p)
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        _number("min_p", self.min_p)
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p!r}")
        _number("typical_p", self.typical_p)
        if not 0.0 < self.typical_p <= 1.0:
            raise ValueError(f"typical_p must be in (0, 1], got {self.typical_p!r}")
        _number("repetition_penalty", self.repetition_penalty)
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        _integer("no_repeat_ngram_size", self.no_repeat_ngram_size, 0)
        _integer("num_beams", self.num_beams, 1)
        _number("length_penalty", self.length_penalty)
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        _integer("num_return_sequences", self.num_return_sequences, 1)
        if self.num_beams > 1 and self.do_sample:
            raise ValueError("beam search here is deterministic: do_sample=True needs num_beams=1")
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError(f"num_return_sequences ({self.num_return_sequences}) cannot exceed "
                             f"num_beams ({self.num_beams})")
        if self.num_beams == 1 and not self.sampling and self.num_return_sequences > 1:
            raise ValueError(f"greedy decoding gives one sequence per prompt, not num_return_sequences="
                             f"{self.num_return_sequences}; sample (do_sample=True) or use num_beams")
        if isinstance(self.stop, (str, int)):
            raise ValueError(f"stop must be a list of token ids and strings, got {self.stop!r}")
        for item in self.stop:
            if isinstance(item, str):
                if not item:
                    raise ValueError("stop strings must not be empty")
            elif isinstance(item, bool) or not isinstance(item, (int, np.integer)) or item <= PAD_ID:
                raise ValueError(f"stop token ids must be integers > 0, got {item!r}")
        if self.seed is not None:
            _integer("seed", self.seed, 0)
        if not self.sampling and any((self.temperature != 1.0, self.top_k, self.top_p < 1.0, self.min_p > 0.0,
                                      self.typical_p < 1.0)):
            logger.warning("temperature/top_k/top_p/min_p/typical_p only apply when sampling; ignored here")


def _integer(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@dataclasses.dataclass
class GenerationResult:
    """What ``generate`` returns: one entry per returned sequence, prompt-major.

    Sequence ``i`` belongs to prompt ``i // num_return_sequences``; with beam
    search a prompt's sequences come best first.

    Attributes:
        prompts: the prompt of each sequence (as text).
        texts: the generated continuation exactly as streamed: word models
            start it with a space when the prompt is not empty, so
            ``prompt + text`` is the whole text.
        token_ids: the generated token ids (end/stop tokens and the tokens of
            a stop string excluded).
        finish_reasons: "length", "end" (the model's end token) or "stop" (a
            stop token id or string).
        logprobs: per generated token, the model's log p(token | context),
            when asked for.
        scores: beam search only: each sequence's length-penalized score.
    """

    prompts: list[str]
    texts: list[str]
    token_ids: list[list[int]]
    finish_reasons: list[str]
    logprobs: list[list[float]] | None = None
    scores: list[float] | None = None

    @property
    def full_texts(self) -> list[str]:
        """Prompt followed by continuation, per sequence."""
        return [prompt + text for prompt, text in zip(self.prompts, self.texts)]


# === Logit processors ===


def apply_repetition_penalty(logits: np.ndarray, histories: Sequence[Sequence[int]], penalty: float) -> np.ndarray:
    """CTRL's repetition penalty (Keskar et al., 2019), as Hugging Face applies it.

    For every token already in a row's history (prompt and output), a positive
    logit is divided by ``penalty`` and a negative one multiplied by it, so with
    ``penalty > 1`` a seen token always loses probability.
    """
    if penalty == 1.0:
        return logits
    logits = np.array(logits, dtype=np.float64)
    for row, history in enumerate(histories):
        seen = np.unique(np.asarray(history, dtype=np.int64))
        if seen.size:
            values = logits[row, seen]
            logits[row, seen] = np.where(values > 0, values / penalty, values * penalty)
    return logits


def banned_ngram_tokens(history: Sequence[int], size: int) -> set[int]:
    """Tokens that would complete an n-gram of ``size`` already in ``history``.

    The last ``size - 1`` tokens are the current prefix; every token that
    followed the same prefix earlier is banned (with size 1: every token seen).
    """
    if size <= 0 or len(history) < size:
        return set()
    prefix = tuple(history[len(history) - size + 1:]) if size > 1 else ()
    return {int(history[start + size - 1]) for start in range(len(history) - size + 1)
            if tuple(history[start:start + size - 1]) == prefix}


def process_logits(logits: np.ndarray, histories: Sequence[Sequence[int]], generated_counts: Sequence[int],
                   options: GenerationOptions, stop_ids: set[int]) -> np.ndarray:
    """Every history-dependent rewrite of the logits, before the sampler.

    Repetition penalty, then n-gram blocking, then stop tokens held back until
    ``min_new_tokens``, then the padding id removed. Returns new float64 logits.
    """
    logits = apply_repetition_penalty(np.asarray(logits, dtype=np.float64), histories, options.repetition_penalty)
    logits = np.array(logits, dtype=np.float64)
    if options.no_repeat_ngram_size:
        for row, history in enumerate(histories):
            banned = banned_ngram_tokens(history, options.no_repeat_ngram_size)
            if banned:
                logits[row, sorted(banned)] = samplers.NEG_INF
    if options.min_new_tokens and stop_ids:
        early = [row for row, count in enumerate(generated_counts) if count < options.min_new_tokens]
        if early:
            logits[np.ix_(early, sorted(stop_ids))] = samplers.NEG_INF
    logits[:, PAD_ID] = samplers.NEG_INF  # padding is never a next token
    return logits


# === Rows: tokens, text and stopping ===


class _Row:
    """One sequence being generated: its tokens, its text and whether it is finished.

    Attributes:
        text: the continuation so far, exactly as it will be returned.
        ends: per token, where its text ends in ``text``.
        emitted: how many characters of ``text`` have been streamed.
        score: beam search: the sum of processed log-probabilities.
    """

    def __init__(self, prompt: str, prompt_ids: list[int], generator=None):
        self.prompt, self.prompt_ids, self.generator = prompt, prompt_ids, generator
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.ends: list[int] = []
        self.text = ""
        self.emitted = 0
        self.score = 0.0
        self.finish_reason: str | None = None

    def copy(self) -> "_Row":
        twin = _Row(self.prompt, self.prompt_ids, self.generator)
        twin.tokens, twin.logprobs, twin.ends = list(self.tokens), list(self.logprobs), list(self.ends)
        twin.text, twin.emitted, twin.score = self.text, self.emitted, self.score
        return twin

    @property
    def history(self) -> list[int]:
        return self.prompt_ids + self.tokens

    def append(self, token: int, logprob: float, backend, stops: "_Stops", min_new_tokens: int) -> None:
        """Adds a generated token and decides whether the row is finished.

        A stop or end token finishes the row and is not added. A stop string
        finishes it once ``min_new_tokens`` tokens exist, if a match ends in
        the new token's text: the text is cut right before the match and only
        the tokens wholly before the cut are kept.
        """
        if token in stops.token_ids:
            self.finish_reason = "end" if token == stops.end_id else "stop"
            return
        before = len(self.text)
        separator = backend.separator if (self.tokens or self.prompt) else ""
        self.text += separator + backend.token_strings[token]
        self.tokens.append(token)
        self.logprobs.append(logprob)
        self.ends.append(len(self.text))
        if stops.strings and len(self.tokens) >= min_new_tokens:
            cut = stops.find(self.text, new_from=before)
            if cut is not None:
                keep = sum(end <= cut for end in self.ends)
                del self.tokens[keep:], self.logprobs[keep:], self.ends[keep:]
                self.text = self.text[:cut]
                self.finish_reason = "stop"

    def release(self, stops: "_Stops") -> str:
        """The text that can be streamed now.

        While the row runs, a suffix that could still grow into a stop string
        is held back, so a stop string split over several tokens never leaks.
        """
        end = len(self.text) if self.finish_reason else len(self.text) - stops.held_back(self.text)
        piece = self.text[self.emitted:end]
        self.emitted = max(self.emitted, end)
        return piece


@dataclasses.dataclass
class _Stops:
    """The stop conditions of one generate call."""

    token_ids: set[int]
    end_id: int | None
    strings: list[str]

    def find(self, text: str, new_from: int) -> int | None:
        """Start of the earliest stop string match that ends after ``new_from``, or None."""
        starts = []
        for stop in self.strings:
            start = text.find(stop, max(0, new_from - len(stop) + 1))
            if start >= 0:
                starts.append(start)
        return min(starts) if starts else None

    def held_back(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.strings:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


# === Prompts ===


def _encode_prompts(backend, prompts: Sequence[Prompt], options: GenerationOptions):
    """Prompt texts, prompt ids (text prompts after the start token) and the stop conditions.

    Text prompts are tokenized in one call and fed after the model's start
    token (see the module docstring); id prompts are taken as given.
    """
    texts = [prompt if isinstance(prompt, str) else "" for prompt in prompts]
    ids: list[list[int]] = [[] if isinstance(prompt, str) else [int(token) for token in prompt]
                            for prompt in prompts]
    text_rows = [index for index, prompt in enumerate(prompts) if isinstance(prompt, str)]
    if text_rows:
        for index, row in zip(text_rows, backend.tokenize([texts[index] for index in text_rows])):
            ids[index] = list(row)
            unknown = row.count(OOV_ID) - texts[index].count("<unk>")
            if unknown > 0:
                logger.warning("prompt %d (%r): %d token(s) outside the vocabulary are fed as <unk>",
                               index, texts[index][:60], unknown)
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            texts[index] = backend.separator.join(backend.token_strings[token] for token in ids[index])
    strings = backend.token_strings
    start = next((strings.index(candidate) for candidate in (backend.end_token, "\n")
                  if candidate and candidate in strings), None)
    for index, row in enumerate(ids):
        if start is not None and isinstance(prompts[index], str):
            ids[index] = [start] + row
        elif not row:
            raise ValueError(f"prompt {index} is empty and the model has neither an end token nor a newline "
                             "to start from; give a non-empty prompt")
    end_id = strings.index(backend.end_token) if backend.end_token in strings else None
    stop_ids = {int(item) for item in options.stop if not isinstance(item, str)}
    if options.stop_at_end_token and end_id is not None:
        stop_ids.add(end_id)
    stops = _Stops(stop_ids, end_id, [item for item in options.stop if isinstance(item, str)])
    return texts, ids, stops


def _feed_prompts(backend, prompt_ids: Sequence[Sequence[int]]):
    """The whole batch of prompts in one step call, from the initial state: (logits, state)."""
    return backend.step(_pad(prompt_ids), backend.initial_state(len(prompt_ids)))


def _row_generator(seed: int | None, prompt: str, sequence: int) -> np.random.Generator:
    """The random stream of a prompt's ``sequence``-th returned row (see the module docstring)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([seed, zlib.crc32(prompt.encode("utf-8")), sequence])


def _progress(rows: Sequence[_Row]) -> str:
    return ", ".join(f"row {index}: {len(row.tokens)}" for index, row in enumerate(rows))


# === Sampling and greedy loop ===


def _sample_loop(backend, prompts, options: GenerationOptions) -> Iterator[tuple[int, str]]:
    """Greedy decoding or sampling; yields (row, text) pieces and returns the finished rows."""
    texts, prompt_ids, stops = _encode_prompts(backend, prompts, options)
    sampler = samplers.from_generation_options(
        do_sample=options.sampling, temperature=options.temperature, top_k=options.top_k, top_p=options.top_p,
        min_p=options.min_p, typical_p=options.typical_p)
    rows = [_Row(text, ids, _row_generator(options.seed, text, sequence))
            for text, ids in zip(texts, prompt_ids) for sequence in range(options.num_return_sequences)]
    if options.max_new_tokens == 0:
        for row in rows:
            row.finish_reason = "length"
        return rows
    try:
        logits, state = _feed_prompts(backend, prompt_ids)
    except BackendError as error:
        raise GenerationError(f"generation failed while feeding the prompts (0 new tokens): {error}",
                              [0] * len(rows)) from error
    # Each prompt was fed once; its returned sequences start from copies of its state row.
    copies = np.repeat(np.arange(len(prompt_ids)), options.num_return_sequences)
    logits, state = np.asarray(logits)[copies], np.asarray(state)[copies]
    active = list(range(len(rows)))  # the rows still generating, in the order of `logits` and `state`
    while active:
        current = [rows[index] for index in active]
        processed = process_logits(logits, [row.history for row in current], [len(row.tokens) for row in current],
                                   options, stops.token_ids)
        tokens = sampler.sample(processed, [row.generator for row in current])  # (live,)
        logprobs = samplers.log_softmax(logits)[np.arange(len(current)), tokens]
        still = []
        for position, (index, row) in enumerate(zip(active, current)):
            row.append(int(tokens[position]), float(logprobs[position]), backend, stops, options.min_new_tokens)
            if row.finish_reason is None and len(row.tokens) >= options.max_new_tokens:
                row.finish_reason = "length"
            piece = row.release(stops)
            if piece:
                yield index, piece
            if row.finish_reason is None:
                still.append(position)
        if not still:
            break
        # Finished rows leave the batch: only the live rows' tokens and state go on.
        active = [active[position] for position in still]
        try:
            logits, state = backend.step(tokens[still].reshape(-1, 1), np.asarray(state)[still])
        except BackendError as error:
            raise GenerationError(f"generation stopped after these new tokens per row ({_progress(rows)}): "
                                  f"{error}", [len(row.tokens) for row in rows]) from error
    return rows


# === Beam search ===


class _Hypotheses:
    """The best finished sequences of one prompt's beam search (at most ``num_beams``)."""

    def __init__(self, num_beams: int, options: GenerationOptions):
        self.num_beams, self.options = num_beams, options
        self.items: list[tuple[float, _Row]] = []  # (length-penalized score, row), best first

    def penalized(self, score: float, length: int) -> float:
        return score / (max(length, 1) ** self.options.length_penalty)

    def add(self, row: _Row, length: int) -> None:
        self.items.append((self.penalized(row.score, length), row))
        self.items.sort(key=lambda item: -item[0])  # stable: earlier hypotheses win ties
        del self.items[self.num_beams:]

    def is_done(self, best_running_score: float, length: int) -> bool:
        """Whether no running beam needs to go on (Hugging Face's rule for ``early_stopping``)."""
        if len(self.items) < self.num_beams:
            return False
        if self.options.early_stopping is True:
            return True
        if self.options.early_stopping == "never" and self.options.length_penalty > 0:
            # Log-probabilities are <= 0: the longest possible beam has the best bound.
            length = self.options.max_new_tokens
        return self.items[-1][0] >= self.penalized(best_running_score, length)


def _beam_search(backend, prompts, options: GenerationOptions) -> Iterator[tuple[int, str]]:
    """Beam search; returns, per prompt, its ``num_beams`` best (score, row) hypotheses, best first.

    Each prompt keeps ``num_beams`` running beams; every step expands them all,
    keeps the best ``2 * num_beams`` candidates, files the ones that end (end
    or stop token, stop string) as hypotheses when they rank among the first
    ``num_beams`` (as Hugging Face does), and continues with the best
    ``num_beams`` others. The state rows are reordered and copied to follow the
    surviving beams; a prompt that is done leaves the batch. Scores use the
    processed log-probabilities (after penalties); temperature and sampling
    filters do not apply.
    """
    texts, prompt_ids, stops = _encode_prompts(backend, prompts, options)
    beams_per_prompt = options.num_beams
    hypotheses = [_Hypotheses(beams_per_prompt, options) for _ in prompts]
    if options.max_new_tokens == 0:
        for text, ids, found in zip(texts, prompt_ids, hypotheses):
            row = _Row(text, ids)
            row.finish_reason = "length"
            found.add(row, 0)
        return [found.items for found in hypotheses]
    try:
        logits, state = _feed_prompts(backend, prompt_ids)
    except BackendError as error:
        raise GenerationError(f"beam search failed while feeding the prompts (0 new tokens): {error}") from error
    beams = [_Row(text, ids) for text, ids in zip(texts, prompt_ids)]  # one live beam per prompt to start
    owners = list(range(len(prompts)))  # the prompt of each beam, in the order of `logits` and `state`
    for step in range(options.max_new_tokens):
        length = step + 1  # tokens each candidate has generated, its last one included
        processed = process_logits(logits, [beam.history for beam in beams], [step] * len(beams), options,
                                   stops.token_ids)
        log_probs = samplers.log_softmax(processed)  # (beams, vocabulary)
        model_log_probs = samplers.log_softmax(logits)
        vocabulary_size = log_probs.shape[-1]
        next_beams, next_owners, parents = [], [], []
        for prompt in sorted(set(owners)):
            rows = [index for index, owner in enumerate(owners) if owner == prompt]
            candidates = (np.array([beams[index].score for index in rows])[:, None] + log_probs[rows]).ravel()
            order = np.argsort(-candidates, kind="stable")[: 2 * beams_per_prompt]  # ties: earlier beam, lower id
            chosen = []
            for rank, flat in enumerate(order):
                if not np.isfinite(candidates[flat]):
                    break
                beam_position, token = divmod(int(flat), vocabulary_size)
                parent = rows[beam_position]
                child = beams[parent].copy()
                child.score = float(candidates[flat])
                child.append(token, float(model_log_probs[parent, token]), backend, stops, options.min_new_tokens)
                if child.finish_reason is not None:
                    if rank < beams_per_prompt:
                        hypotheses[prompt].add(child, length)
                    continue
                chosen.append((child, parent))
                if len(chosen) == beams_per_prompt:
                    break
            if not chosen or hypotheses[prompt].is_done(max(child.score for child, _ in chosen), length):
                continue  # this prompt is done: its beams leave the batch
            for child, parent in chosen:
                next_beams.append(child)
                next_owners.append(prompt)
                parents.append(parent)
        if step == options.max_new_tokens - 1:
            for beam, owner in zip(next_beams, next_owners):
                beam.finish_reason = "length"
                hypotheses[owner].add(beam, length)
            break
        if not next_beams:
            break
        beams, owners = next_beams, next_owners
        # Reorder and copy the state rows to follow the surviving beams.
        tokens = np.array([[beam.tokens[-1]] for beam in beams], dtype=np.int64)
        try:
            logits, state = backend.step(tokens, np.asarray(state)[parents])
        except BackendError as error:
            raise GenerationError(f"beam search stopped after {length} new tokens per beam: {error}",
                                  [length] * len(prompts) * options.num_return_sequences) from error
    return [found.items for found in hypotheses]
    yield  # pragma: no cover -- makes this a generator, like _sample_loop


# === Entry points ===


def stream_generate(backend, prompts: Sequence[Prompt], *,
                    on_result: Callable[[GenerationResult], None] | None = None,
                    **options) -> Iterator[tuple[int, str]]:
    """Yields (row, text piece) as tokens are produced; rows are prompt-major.

    The pieces of a row, joined, are exactly its ``GenerationResult.texts``
    entry. Beam search yields each sequence whole at the end (beams change
    until the search is over).

    Args:
        backend: a ``LanguageModelBackend``.
        prompts: texts, or token-id lists fed as they are.
        on_result: receives the ``GenerationResult`` when generation ends.
        **options: ``GenerationOptions`` fields.

    Raises:
        ValueError: impossible parameters (before any backend call).
        GenerationError: the backend failed part-way (says how far it got).
    """
    settings = GenerationOptions(**options)
    settings.check()
    prompts = _check_prompts(prompts)
    if settings.num_beams > 1:
        found = yield from _beam_search(backend, prompts, settings)
        result = _beam_result(found, settings)
        for index, text in enumerate(result.texts):
            if text:
                yield index, text
    else:
        rows = yield from _sample_loop(backend, prompts, settings)
        result = _result(rows, settings)
    if on_result is not None:
        on_result(result)


def _check_prompts(prompts) -> list[Prompt]:
    """The prompts as a list; ValueError (before any backend call) for anything else."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, not one string")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given")
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            continue
        if not all(isinstance(token, (int, np.integer)) and not isinstance(token, bool) and token > PAD_ID
                   for token in prompt):
            raise ValueError(f"prompt {index} must be text or a list of token ids > 0, got {prompt!r}")
    return prompts


def _result(rows: Sequence[_Row], options: GenerationOptions, scores=None) -> GenerationResult:
    return GenerationResult(
        prompts=[row.prompt for row in rows], texts=[row.text for row in rows],
        token_ids=[list(row.tokens) for row in rows], finish_reasons=[row.finish_reason for row in rows],
        logprobs=[list(row.logprobs) for row in rows] if options.return_logprobs else None, scores=scores)


def _beam_result(found: Sequence[Sequence[tuple[float, _Row]]], options: GenerationOptions) -> GenerationResult:
    best = [item for items in found for item in items[:options.num_return_sequences]]
    return _result([row for _, row in best], options, scores=[float(score) for score, _ in best])


def generate(backend, prompts: Sequence[Prompt], **options) -> GenerationResult:
    """Generates continuations of ``prompts``.

    Args:
        backend: a ``LanguageModelBackend`` (``GrpcBackend``, ``SavedModelBackend``, ``KerasBackend``).
        prompts: texts, or token-id lists fed as they are.
        **options: ``GenerationOptions`` fields, named as in Hugging Face
            ``generate()``: max_new_tokens, min_new_tokens, do_sample,
            temperature, top_k, top_p, min_p, typical_p, repetition_penalty,
            no_repeat_ngram_size, num_beams, length_penalty, early_stopping,
            num_return_sequences, stop, stop_at_end_token, seed, return_logprobs.

    Returns:
        A ``GenerationResult``, one entry per returned sequence.

    Raises:
        ValueError: impossible parameters, before any backend call.
        GenerationError: the backend failed part-way; the message says how
            many tokens each row had.
    """
    results = []
    for _ in stream_generate(backend, prompts, on_result=results.append, **options):
        pass
    return results[0]


def continuation_logprobs(backend, contexts: Sequence[Prompt], continuations: Sequence[Sequence[int]]
                          ) -> list[list[float]]:
    """The model's log p(token | context, tokens before it) for each continuation token.

    Teacher forcing with the same batching as generation: the contexts are fed
    at once (an empty one starts from the start token, as in ``generate``),
    then one continuation token per live row per step.

    Args:
        backend: a ``LanguageModelBackend``.
        contexts: texts or token-id lists.
        continuations: token ids to score after each context.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    results: list[list[float]] = [[] for _ in continuations]
    rows = [index for index, continuation in enumerate(continuations) if len(continuation)]
    if not rows:
        return results
    _, context_ids, _ = _encode_prompts(backend, [contexts[index] for index in rows], GenerationOptions())
    targets = [[int(token) for token in continuations[index]] for index in rows]
    logits, state = _feed_prompts(backend, context_ids)
    active = list(range(len(rows)))  # positions in `rows`, in the order of `logits` and `state`
    position = 0
    while True:
        log_probs = samplers.log_softmax(logits)
        for batch_row, row in enumerate(active):
            results[rows[row]].append(float(log_probs[batch_row, targets[row][position]]))
        still = [batch_row for batch_row, row in enumerate(active) if position + 1 < len(targets[row])]
        if not still:
            return results
        feed = np.array([[targets[active[batch_row]][position]] for batch_row in still], dtype=np.int64)
        logits, state = backend.step(feed, np.asarray(state)[still])
        active = [active[batch_row] for batch_row in still]
        position += 1


def score(backend, texts: Sequence[str]) -> list[dict]:
    """Log-probability, tokens scored and perplexity of each text under the model.

    As the contract's ``score`` signature: the first token is context, tokens
    2..n are scored from the initial state. Uses the backend's ``score`` when
    it has one (one call), else steps through the texts in one batch.

    Returns:
        Per text, ``{"log_prob", "num_tokens", "perplexity"}`` (perplexity is
        NaN when no token was scored).
    """
    texts = list(texts)
    pairs = None
    if callable(getattr(backend, "score", None)):
        try:
            pairs = backend.score(texts)
        except NotImplementedError:  # a SavedModel exported without the score signature
            pairs = None
    if pairs is None:
        ids = backend.tokenize(texts)
        log_probs = continuation_logprobs(backend, [row[:1] for row in ids],
                                          [row[1:] if row else [] for row in ids])
        pairs = [(sum(values), len(values)) for values in log_probs]
    return [{"log_prob": float(log_prob), "num_tokens": int(count),
             "perplexity": float(np.exp(-log_prob / count)) if count else float("nan")}
            for log_prob, count in pairs]


# === CLI ===


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that pick a model: --server/--model/--version/--timeout or --saved_model."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--server", default="localhost:8500", help="gRPC host:port (default: localhost:8500)")
    source.add_argument("--saved_model", help="run in this process from a SavedModel version directory")
    parser.add_argument("--model", help="served model name (with --server)")
    parser.add_argument("--version", type=int, help="served version (default: the latest)")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline per gRPC call, seconds (default: 30)")


def backend_from_arguments(args: argparse.Namespace):
    """The backend the --server/--saved_model flags describe."""
    if args.saved_model:
        return SavedModelBackend(args.saved_model)
    if not args.model:
        raise ValueError("--model is required with --server")
    return GrpcBackend(args.server, args.model, args.version, timeout_seconds=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.generate",
        description="Generate text from a zoo language model over gRPC (or in this process), "
                    "streaming tokens as they come.",
        epilog='example: python -m serving.generate --model shakespeare_char_lstm "ROMEO:" '
               "--max_new_tokens 200 --top_p 0.95 --seed 1")
    parser.add_argument("prompts", nargs="*", help="prompts (default: one empty prompt)")
    parser.add_argument("--prompts_file", help="a file with one prompt per line: batch mode, with a progress bar")
    parser.add_argument("--batch_size", type=int, default=32, help="prompts per generate call in batch mode")
    add_backend_arguments(parser)
    defaults = GenerationOptions()
    for name in ("max_new_tokens", "min_new_tokens", "top_k", "no_repeat_ngram_size", "num_beams",
                 "num_return_sequences", "seed"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name),
                            help=f"as in Hugging Face generate() (default: {getattr(defaults, name)})")
    for name in ("temperature", "top_p", "min_p", "typical_p", "repetition_penalty", "length_penalty"):
        parser.add_argument(f"--{name}", type=float, default=getattr(defaults, name),
                            help=f"as in Hugging Face generate() (default: {getattr(defaults, name)})")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--do_sample", action="store_true", default=None, help="sample (default unless beams)")
    sampling.add_argument("--greedy", dest="do_sample", action="store_false", default=None,
                          help="the most likely token at each step (do_sample=False)")
    parser.add_argument("--early_stopping", choices=["true", "false", "never"], default="false",
                        help="beam search stopping rule (default: false, Hugging Face's heuristic)")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--stop_token_id", type=int, action="append", default=[], help="stop token id (repeatable)")
    parser.add_argument("--ignore_end_token", action="store_true", help="do not stop at the model's <eos>")
    parser.add_argument("--logprobs", action="store_true", help="print each row with its token log-probabilities "
                                                                "as a JSON line")
    parser.add_argument("--score", action="store_true",
                        help="score the prompts instead of generating: log-probability, tokens scored and "
                             "perplexity of each, as JSON lines")
    parser.add_argument("--verbose", action="store_true", help="log progress")
    return parser


def _options_from_arguments(args: argparse.Namespace) -> dict:
    options = {name: getattr(args, name) for name in (
        "max_new_tokens", "min_new_tokens", "top_k", "no_repeat_ngram_size", "num_beams", "num_return_sequences",
        "seed", "temperature", "top_p", "min_p", "typical_p", "repetition_penalty", "length_penalty", "do_sample")}
    options["early_stopping"] = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    options["stop"] = list(args.stop) + list(args.stop_token_id)
    options["stop_at_end_token"] = not args.ignore_end_token
    options["return_logprobs"] = args.logprobs
    return options


class _RowPrinter:
    """Streams several rows to one terminal: each line is prefixed with its row.

    A row's text is printed a line at a time (or every ``width`` characters
    when it has no newline), so rows interleave readably.
    """

    def __init__(self, out, width: int = 72):
        self.out, self.width = out, width
        self.pending: dict[int, str] = {}

    def add(self, row: int, piece: str) -> None:
        text = self.pending.get(row, "") + piece
        while "\n" in text or len(text) >= self.width:
            cut = text.index("\n") + 1 if "\n" in text[:self.width] else self.width
            self.out.write(f"[{row}] {text[:cut].rstrip(chr(10))}\n")
            text = text[cut:]
        self.pending[row] = text
        self.out.flush()

    def finish(self) -> None:
        for row, text in sorted(self.pending.items()):
            if text:
                self.out.write(f"[{row}] {text}\n")
        self.pending.clear()


def _print_logprobs(result: GenerationResult, first_row: int = 0) -> None:
    for index, (text, tokens, logprobs) in enumerate(zip(result.full_texts, result.token_ids, result.logprobs)):
        print(json.dumps({"row": first_row + index, "text": text, "token_ids": tokens, "logprobs": logprobs}))


def _run_interactive(backend, prompts: list[str], options: dict) -> None:
    """Streams the rows of a few prompts to stdout as tokens come."""
    results: list[GenerationResult] = []
    stream = stream_generate(backend, prompts, on_result=results.append, **options)
    if len(prompts) * options["num_return_sequences"] == 1:
        print(prompts[0], end="", flush=True)
        for _, piece in stream:
            print(piece, end="", flush=True)
        print()
    else:
        printer = _RowPrinter(sys.stdout)
        per_prompt = options["num_return_sequences"]
        started = set()
        for row, piece in stream:
            if row not in started:  # each row starts with its prompt
                started.add(row)
                piece = prompts[row // per_prompt] + piece
            printer.add(row, piece)
        printer.finish()
    if options["return_logprobs"]:
        _print_logprobs(results[0])


def _run_batches(backend, prompts: list[str], options: dict, batch_size: int) -> None:
    """Generates for many prompts, a batch at a time, with a progress bar on stderr."""
    from tqdm import tqdm

    row = 0
    with tqdm(total=len(prompts), desc="prompts", unit="prompt", file=sys.stderr) as progress:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            result = generate(backend, batch, **options)
            if options["return_logprobs"]:
                _print_logprobs(result, row)
            else:
                for offset, text in enumerate(result.full_texts):
                    print(f"--- [{row + offset}] ---\n{text}")
            row += len(result.texts)
            progress.update(len(batch))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    prompts = list(args.prompts)
    if args.prompts_file:
        prompts += Path(args.prompts_file).read_text(encoding="utf-8").splitlines()
    prompts = prompts or [""]
    options = _options_from_arguments(args)
    try:
        GenerationOptions(**options).check()
        if args.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
        backend = backend_from_arguments(args)
        if args.score:
            for text, scored in zip(prompts, score(backend, prompts)):
                print(json.dumps({"text": text, **scored}))
        elif args.prompts_file:
            _run_batches(backend, prompts, options, args.batch_size)
        else:
            _run_interactive(backend, prompts, options)
    except (ValueError, OSError, BackendError, GenerationError) as error:
        print(f"{build_parser().prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
