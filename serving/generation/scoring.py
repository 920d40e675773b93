"""Scoring: the model's log-probabilities of given continuations, and the perplexity of texts."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from serving.generation import samplers
from serving.generation.options import GenerationOptions
from serving.generation.rows import Prompt, encode_prompts, feed_prompts


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
    _, context_ids, _ = encode_prompts(backend, [contexts[index] for index in rows], GenerationOptions())
    targets = [[int(token) for token in continuations[index]] for index in rows]
    logits, state = feed_prompts(backend, context_ids)
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
