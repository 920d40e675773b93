"""Logit processors: the history-dependent rewrites applied before a sampler picks a token."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from serving.generation import samplers
from serving.generation.backends import PAD_ID
from serving.generation.options import GenerationOptions


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
    # One float64 copy that this function owns and rewrites (astype always copies; the
    # penalty, when it applies, makes its own). A second copy here used to cost
    # ~1 ms a step at 64 rows of a 10,000-word vocabulary.
    logits = apply_repetition_penalty(np.asarray(logits).astype(np.float64), histories, options.repetition_penalty)
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
