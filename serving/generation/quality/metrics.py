"""The metrics of generated text, as pure functions on token sequences (any hashable tokens).

- ``repetition_rate``: the share of texts that end in a loop (``loop_at_end``).
- ``distinct_n``: unique n-grams / all n-grams over all texts.
- ``self_bleu``: each text's BLEU-4 against all the others, averaged.
- ``zipf_coefficient``: minus the slope of log count against log rank.
- ``perplexity``: exp of the mean negative log-probability per token.

``text_metrics`` measures one set of texts with all of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Hashable, Sequence

import numpy as np

# Token sequences: lists of ids or of strings, anything hashable.
Tokens = Sequence[Hashable]

# The rule for "ends in a loop" (see `loop_at_end`).
DEFAULT_MIN_PHRASE_LENGTH = 2
DEFAULT_MIN_REPEATS = 3
# Self-BLEU compares every pair of texts; the first this many are used.
DEFAULT_SELF_BLEU_MAX_TEXTS = 100
# Zipf's law is fitted over this many of the most frequent types.
DEFAULT_ZIPF_MAX_RANKS = 5000
BLEU_MAX_ORDER = 4
DISTINCT_ORDERS = (1, 2, 3)


# === Metrics on token sequences ===


def ngrams(tokens: Tokens, n: int) -> list[tuple]:
    """The n-grams of one sequence, in order (none when it is shorter than n)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [tuple(tokens[start:start + n]) for start in range(len(tokens) - n + 1)]


def loop_at_end(tokens: Tokens, min_phrase_length: int = DEFAULT_MIN_PHRASE_LENGTH,
                min_repeats: int = DEFAULT_MIN_REPEATS) -> tuple[int, int] | None:
    """The loop a sequence ends in, as (phrase length, full repeats), or None.

    The rule: a sequence ends in a loop when some phrase of at least
    ``min_phrase_length`` tokens occurs at least ``min_repeats`` times in a
    row, back to back, at the very end. Formally, for a period p >=
    ``min_phrase_length`` let L be the length of the longest suffix with
    period p (``tokens[i] == tokens[i + p]`` throughout it); the sequence
    loops when ``L // p >= min_repeats``. The smallest such p is returned
    with ``L // p``.

    Consequences worth knowing:

    - Generation stops at a length, not at a phrase boundary, so the phrase
      may be any rotation of the loop: "x a b c a b c a b c a" ends in three
      copies of "b c a" (while "x a b c a b c a b" holds only two full copies
      of "c a b" and does not loop).
    - A shorter period counts through its multiples: one token repeated
      counts once it fills ``min_repeats`` copies of a ``min_phrase_length``
      phrase (with the defaults, the same token 6 times in a row).
    - A loop longer than ``len(tokens) / min_repeats`` cannot be seen, so
      the rate depends on the generation length.
    """
    if min_phrase_length < 1 or min_repeats < 2:
        raise ValueError(f"need min_phrase_length >= 1 and min_repeats >= 2, got {min_phrase_length}, "
                         f"{min_repeats}")
    size = len(tokens)
    for period in range(min_phrase_length, size // min_repeats + 1):
        periodic = period  # the last `period` tokens trivially have this period
        while periodic < size and tokens[size - 1 - periodic] == tokens[size - 1 - periodic + period]:
            periodic += 1
        if periodic // period >= min_repeats:
            return period, periodic // period
    return None


def repetition_rate(sequences: Sequence[Tokens], min_phrase_length: int = DEFAULT_MIN_PHRASE_LENGTH,
                    min_repeats: int = DEFAULT_MIN_REPEATS) -> float:
    """The share of sequences that end in a loop (``loop_at_end``); NaN for no sequences."""
    if not sequences:
        return float("nan")
    looping = sum(loop_at_end(tokens, min_phrase_length, min_repeats) is not None for tokens in sequences)
    return looping / len(sequences)


def distinct_n(sequences: Sequence[Tokens], n: int) -> float:
    """Distinct-n (Li et al., 2016): unique n-grams / all n-grams, over all sequences together.

    N-grams do not cross from one sequence to the next. NaN when no sequence
    has n tokens.
    """
    grams = [gram for tokens in sequences for gram in ngrams(tokens, n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def clipped_matches(hypothesis: Tokens, references: Sequence[Tokens], n: int) -> tuple[int, int]:
    """BLEU's modified n-gram precision, as (clipped matches, hypothesis n-grams).

    Each hypothesis n-gram counts at most as often as it occurs in the one
    reference that has it most often (Papineni et al., 2002).
    """
    counts = Counter(ngrams(hypothesis, n))
    most = Counter()
    for reference in references:
        for gram, count in Counter(ngrams(reference, n)).items():
            if gram in counts and count > most[gram]:
                most[gram] = count
    return sum(min(count, most[gram]) for gram, count in counts.items()), sum(counts.values())


def closest_reference_length(hypothesis_length: int, reference_lengths: Sequence[int]) -> int:
    """The reference length closest to the hypothesis's; the shorter one on a tie."""
    return min(reference_lengths, key=lambda length: (abs(length - hypothesis_length), length))


def brevity_penalty(hypothesis_length: int, reference_length: int) -> float:
    """1 for a hypothesis longer than the reference, else exp(1 - r / c) (0 for an empty one)."""
    if hypothesis_length == 0:
        return 0.0
    if hypothesis_length > reference_length:
        return 1.0
    return math.exp(1.0 - reference_length / hypothesis_length)


def _bleu_from_matches(matches: Sequence[tuple[int, int]], hypothesis_length: int,
                       reference_length: int) -> float:
    """BLEU from (clipped matches, total) per order: brevity penalty times the geometric mean precision."""
    if any(total == 0 or matched == 0 for matched, total in matches):
        return 0.0
    log_precision = sum(math.log(matched / total) for matched, total in matches) / len(matches)
    return brevity_penalty(hypothesis_length, reference_length) * math.exp(log_precision)


def bleu(hypothesis: Tokens, references: Sequence[Tokens], max_order: int = BLEU_MAX_ORDER) -> float:
    """Sentence BLEU with uniform weights over orders 1..``max_order``, without smoothing.

    Clipped n-gram precisions (``clipped_matches``), their geometric mean, and
    the brevity penalty against the closest reference length. Without
    smoothing, a hypothesis with no matching n-gram of some order -- or too
    short to have one -- scores 0.
    """
    if not references:
        raise ValueError("BLEU needs at least one reference")
    matches = [clipped_matches(hypothesis, references, n) for n in range(1, max_order + 1)]
    reference_length = closest_reference_length(len(hypothesis), [len(reference) for reference in references])
    return _bleu_from_matches(matches, len(hypothesis), reference_length)


def _most_excluding_one(counters: Sequence[Counter]) -> dict:
    """Per n-gram: (highest count, the text that has it, second highest count) over the texts.

    The most any text other than text i has of a gram is then the highest
    count, or the second highest when text i is the one with the highest.
    """
    best: dict = {}
    for index, counts in enumerate(counters):
        for gram, count in counts.items():
            top, owner, second = best.get(gram, (0, -1, 0))
            if count > top:
                best[gram] = (count, index, top)
            elif count > second:
                best[gram] = (top, owner, count)
    return best


def self_bleu(sequences: Sequence[Tokens], max_order: int = BLEU_MAX_ORDER,
              max_texts: int | None = DEFAULT_SELF_BLEU_MAX_TEXTS) -> float:
    """Self-BLEU (Zhu et al., 2018): each text's BLEU against all the others as references, averaged.

    Equal to ``mean(bleu(text, others))``; computed from shared n-gram tables
    so the cost grows with the number of texts, not its square. Only the first
    ``max_texts`` texts take part, as hypotheses and as references (None: all).
    1 when all texts are the same, 0 when no two share a ``max_order``-gram.
    NaN for fewer than two texts.
    """
    texts = list(sequences)[:max_texts] if max_texts is not None else list(sequences)
    if len(texts) < 2:
        return float("nan")
    lengths = [len(text) for text in texts]
    counters_by_order = [[Counter(ngrams(text, n)) for text in texts] for n in range(1, max_order + 1)]
    tables = [_most_excluding_one(counters) for counters in counters_by_order]
    scores = []
    for index, text in enumerate(texts):
        matches = []
        for counters, table in zip(counters_by_order, tables):
            matched = 0
            for gram, count in counters[index].items():
                top, owner, second = table[gram]
                matched += min(count, second if owner == index else top)
            matches.append((matched, sum(counters[index].values())))
        others = lengths[:index] + lengths[index + 1:]
        scores.append(_bleu_from_matches(matches, len(text), closest_reference_length(len(text), others)))
    return float(np.mean(scores))


def zipf_coefficient(sequences: Sequence[Tokens], max_ranks: int = DEFAULT_ZIPF_MAX_RANKS) -> float:
    """The exponent s of Zipf's law, count ~ rank ** -s, fitted to the token counts.

    Counts all tokens of all sequences, sorts the counts from the most
    frequent type down, keeps the first ``max_ranks`` ranks, and fits
    ``log(count) = a - s * log(rank)`` by least squares; returns s (positive
    for a falling curve). Holtzman et al. report s = 0.93 for human text
    (WebText, GPT-2 tokens, large samples). Small samples have a long tail of
    types seen once, which flattens the fit; compare texts of the same size.
    NaN for fewer than two types.
    """
    counts = sorted(Counter(token for tokens in sequences for token in tokens).values(), reverse=True)[:max_ranks]
    if len(counts) < 2:
        return float("nan")
    ranks = np.arange(1, len(counts) + 1, dtype=np.float64)
    slope, _ = np.polyfit(np.log(ranks), np.log(np.asarray(counts, dtype=np.float64)), 1)
    return float(-slope)


def perplexity(logprobs: Sequence[Sequence[float]]) -> float:
    """exp(-(sum of log-probabilities) / (number of tokens)) over all sequences; NaN for no tokens."""
    total = sum(len(values) for values in logprobs)
    if total == 0:
        return float("nan")
    return float(math.exp(-sum(sum(values) for values in logprobs) / total))


@dataclasses.dataclass
class MetricSettings:
    """The knobs of the metrics (the report records them)."""

    min_phrase_length: int = DEFAULT_MIN_PHRASE_LENGTH
    min_repeats: int = DEFAULT_MIN_REPEATS
    self_bleu_max_texts: int = DEFAULT_SELF_BLEU_MAX_TEXTS
    zipf_max_ranks: int = DEFAULT_ZIPF_MAX_RANKS


def text_metrics(tokens: Sequence[Tokens], words: Sequence[Tokens], logprobs: Sequence[Sequence[float]],
                 settings: MetricSettings) -> dict:
    """Every metric of one set of texts.

    Args:
        tokens: the model tokens of each text (repetition).
        words: the words of each text (distinct-n, Self-BLEU, Zipf).
        logprobs: the model's log-probability of each token (perplexity).
        settings: the metric knobs.
    """
    metrics = {"perplexity": perplexity(logprobs),
               "repetition": repetition_rate(tokens, settings.min_phrase_length, settings.min_repeats)}
    for n in DISTINCT_ORDERS:
        metrics[f"distinct_{n}"] = distinct_n(words, n)
    metrics["self_bleu"] = self_bleu(words, BLEU_MAX_ORDER, settings.self_bleu_max_texts)
    metrics["zipf"] = zipf_coefficient(words, settings.zipf_max_ranks)
    metrics["texts"] = len(tokens)
    metrics["mean_tokens"] = float(np.mean([len(row) for row in tokens])) if tokens else float("nan")
    metrics["mean_words"] = float(np.mean([len(row) for row in words])) if words else float("nan")
    return metrics
