"""What a generate call takes and gives: its options, its result and its error."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Sequence

import numpy as np

from serving.generation.backends import PAD_ID

logger = logging.getLogger(__name__)


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
            (``serving.generation.samplers``), applied in that order when sampling.
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
        seed: makes sampling reproducible (see ``serving.generation``).
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


class GenerationError(RuntimeError):
    """Generation stopped part-way because the backend failed.

    Attributes:
        tokens_generated: per output row, how many new tokens it had when the
            failure happened.
    """

    def __init__(self, message: str, tokens_generated: Sequence[int] = ()):
        super().__init__(message)
        self.tokens_generated = list(tokens_generated)
