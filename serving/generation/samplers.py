"""Samplers: turn next-token logits into the next token.

A sampler first filters the distribution (temperature, top-k, top-p, min-p,
typical) and then draws one token per row from what is left. Samplers work on
NumPy arrays of shape ``(batch, vocabulary)`` and take one
``numpy.random.Generator`` per row; each row draws exactly one uniform number
from its own generator, so a row's token never depends on which other rows
share the batch.

Samplers live behind a name registry::

    from serving.generation import samplers

    sampler = samplers.get("top_p", top_p=0.9)
    kept = sampler.distribution(logits)          # (batch, vocabulary), filtered and renormalized
    next_tokens = sampler.sample(logits, [np.random.default_rng(0)])   # (batch,) int64

Ties are broken deterministically everywhere: among tokens of equal
probability the lower token id ranks first. History-dependent logit processors
(repetition penalty, n-gram blocking) live in
``serving/generation/logits.py``; they run before the sampler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

NEG_INF = -np.inf

# Cumulative sums of probabilities carry rounding errors of the order of
# vocabulary_size * 1e-16. A prefix whose mass reaches p up to this tolerance
# counts as reaching p, so the boundary token of an exact nucleus is neither
# lost to rounding nor joined by a spurious extra token.
CUMULATIVE_MASS_TOLERANCE = 1e-10


# === Distribution helpers ===


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Returns log-probabilities in float64; ``-inf`` logits stay ``-inf``.

    Args:
        logits: ``(batch, vocabulary)`` scores, ``-inf`` for banned tokens.

    Raises:
        ValueError: if a row has no finite logit (every token is banned) or
            holds ``+inf``/NaN.
    """
    logits = np.asarray(logits, dtype=np.float64)
    maxima = np.max(logits, axis=-1, keepdims=True)  # (batch, 1)
    if not np.all(np.isfinite(maxima)):
        rows = np.flatnonzero(~np.isfinite(maxima[:, 0])).tolist()
        raise ValueError(f"no token is left to choose from in row(s) {rows} (every logit is -inf, or one is "
                         "+inf/NaN); loosen the filters, e.g. no_repeat_ngram_size")
    shifted = logits - maxima
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Returns float64 probabilities, exactly zero where the logit is ``-inf``."""
    return np.exp(log_softmax(logits))


def _ranks(order: np.ndarray) -> np.ndarray:
    """Inverts per-row permutations: ``ranks[b, order[b, i]] = i``."""
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(order.shape[-1])[None, :].repeat(order.shape[0], 0), axis=-1)
    return ranks


def _smallest_prefix_reaching(probabilities: np.ndarray, order: np.ndarray, mass: float) -> np.ndarray:
    """Marks, per row, the shortest prefix of ``order`` whose probability reaches ``mass``.

    Top-p and typical decoding both keep such a set; they differ only in the
    order in which tokens are admitted. The token that crosses the threshold is
    included.

    Args:
        probabilities: ``(batch, vocabulary)`` rows summing to 1.
        order: ``(batch, vocabulary)`` token ids in admission order.
        mass: the mass to reach, in (0, 1].

    Returns:
        A boolean ``(batch, vocabulary)`` mask of the kept tokens.
    """
    cumulative = np.cumsum(np.take_along_axis(probabilities, order, axis=-1), axis=-1)
    # `cumulative` never decreases, so the entries still short of the mass
    # count the tokens before the one that reaches it.
    keep_count = np.sum(cumulative < mass - CUMULATIVE_MASS_TOLERANCE, axis=-1) + 1  # (batch,)
    return _ranks(order) < np.minimum(keep_count, probabilities.shape[-1])[:, None]


def draw(probabilities: np.ndarray, generators: Sequence[np.random.Generator]) -> np.ndarray:
    """Draws one token per row by inverting the cumulative distribution.

    Exactly one ``generator.random()`` call is made per row, so a row's draw
    depends only on its own generator and its own distribution.

    Args:
        probabilities: ``(batch, vocabulary)`` non-negative rows (renormalized here).
        generators: one ``numpy.random.Generator`` per row.

    Returns:
        ``(batch,)`` int64 token ids; a token of probability zero is never drawn.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if generators is None or len(generators) != probabilities.shape[0]:
        raise ValueError(f"sampling needs one numpy.random.Generator per row: {probabilities.shape[0]} rows, "
                         f"got {None if generators is None else len(generators)} generators")
    cumulative = np.cumsum(probabilities, axis=-1)  # (batch, vocabulary)
    tokens = np.empty(probabilities.shape[0], dtype=np.int64)
    for row, generator in enumerate(generators):
        target = generator.random() * cumulative[row, -1]
        token = int(np.searchsorted(cumulative[row], target, side="right"))
        # Rounding can put the target on the total itself; the last token that
        # has any probability is then the right answer.
        tokens[row] = min(token, int(np.flatnonzero(probabilities[row] > 0)[-1]))
    return tokens


def _keep(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The logits where ``mask`` holds, ``-inf`` elsewhere."""
    return np.where(mask, logits, NEG_INF)


def _check_mass(name: str, value: float) -> float:
    """Returns ``value`` as a float if it lies in (0, 1], else raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


# === Samplers ===


class Sampler:
    """Pure (ancestral) sampling: draws from the model's full distribution.

    Subclasses narrow the distribution by overriding :meth:`filter`; drawing
    is shared.
    """

    name = "sample"

    def filter(self, logits: np.ndarray) -> np.ndarray:
        """Returns float64 logits with ``-inf`` for every token this sampler drops."""
        return np.asarray(logits, dtype=np.float64)

    def distribution(self, logits: np.ndarray) -> np.ndarray:
        """The filtered, renormalized ``(batch, vocabulary)`` distribution the draw uses."""
        return softmax(self.filter(logits))

    def sample(self, logits: np.ndarray, generators: Sequence[np.random.Generator]) -> np.ndarray:
        """One token id per row, ``(batch,)`` int64."""
        return draw(self.distribution(logits), generators)

    def get_config(self) -> dict:
        """The constructor arguments: ``get(sampler.name, **sampler.get_config())`` rebuilds it."""
        return {}

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


class Greedy(Sampler):
    """The most likely token (the lowest id among ties); needs no randomness."""

    name = "greedy"

    def filter(self, logits):
        logits = np.asarray(logits, dtype=np.float64)
        mask = np.zeros(logits.shape, dtype=bool)
        mask[np.arange(logits.shape[0]), np.argmax(logits, axis=-1)] = True  # argmax: first maximum
        return _keep(logits, mask)

    def sample(self, logits, generators=None):
        return np.argmax(np.asarray(logits, dtype=np.float64), axis=-1).astype(np.int64)


class Temperature(Sampler):
    """Samples from ``softmax(logits / temperature)``.

    Args:
        temperature: > 0; below 1 sharpens the distribution, above 1 flattens it
            (temperature 0 is the greedy sampler).
    """

    name = "temperature"

    def __init__(self, temperature: float = 1.0):
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r} "
                             "(the greedy sampler is temperature 0)")
        self.temperature = float(temperature)

    def filter(self, logits):
        return scale_by_temperature(logits, self.temperature)

    def get_config(self):
        return {"temperature": self.temperature}


class TopK(Sampler):
    """Samples among the ``top_k`` most likely tokens (Fan et al., 2018).

    Exactly ``top_k`` tokens are kept; among tokens tied at the boundary the
    lower ids win. (Hugging Face keeps every token tied with the k-th one; with
    real-valued logits ties are rare.)

    Args:
        top_k: how many tokens to keep, >= 1.
    """

    name = "top_k"

    def __init__(self, top_k: int = 50):
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        self.top_k = int(top_k)

    def filter(self, logits):
        logits = np.asarray(logits, dtype=np.float64)
        if self.top_k >= logits.shape[-1]:
            return logits
        order = np.argsort(-logits, axis=-1, kind="stable")  # (batch, vocabulary), best first
        return _keep(logits, _ranks(order) < self.top_k)

    def get_config(self):
        return {"top_k": self.top_k}


class TopP(Sampler):
    """Nucleus sampling (Holtzman et al., 2020).

    Keeps the smallest set of most likely tokens whose probability sums to at
    least ``top_p`` -- the token that crosses the threshold is in the set --
    and renormalizes. Tokens enter by decreasing probability, the lower id
    first among ties, so the nucleus is unique.

    Args:
        top_p: the nucleus mass, in (0, 1]; 1 keeps every token.
    """

    name = "top_p"

    def __init__(self, top_p: float = 0.9):
        self.top_p = _check_mass("top_p", top_p)

    def filter(self, logits):
        logits = np.asarray(logits, dtype=np.float64)
        if self.top_p == 1.0:
            return logits
        probabilities = softmax(logits)
        order = np.argsort(-probabilities, axis=-1, kind="stable")
        return _keep(logits, _smallest_prefix_reaching(probabilities, order, self.top_p) & (probabilities > 0))

    def get_config(self):
        return {"top_p": self.top_p}


class MinP(Sampler):
    """Min-p sampling: keeps the tokens with ``p >= min_p * p_max``.

    The cut-off follows the model's confidence: a peaked distribution keeps
    few tokens, a flat one many.

    Args:
        min_p: in [0, 1]; 0 keeps every token, 1 only the most likely one(s).
    """

    name = "min_p"

    def __init__(self, min_p: float = 0.05):
        if isinstance(min_p, bool) or not isinstance(min_p, (int, float)) or not 0.0 <= min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {min_p!r}")
        self.min_p = float(min_p)

    def filter(self, logits):
        logits = np.asarray(logits, dtype=np.float64)
        if self.min_p == 0.0:
            return logits
        probabilities = softmax(logits)
        threshold = self.min_p * np.max(probabilities, axis=-1, keepdims=True)  # (batch, 1)
        return _keep(logits, probabilities >= threshold)

    def get_config(self):
        return {"min_p": self.min_p}


class Typical(Sampler):
    """Locally typical sampling (Meister et al., 2023) with Hugging Face's semantics.

    A token's surprisal ``-log p`` is compared with the entropy ``H`` of the
    distribution; tokens enter by increasing ``|-log p - H|`` (the lower id
    first among ties) until their mass reaches ``typical_p``, the crossing
    token included, and the kept set is renormalized.

    Args:
        typical_p: the mass to keep, in (0, 1]; 1 keeps every token.
    """

    name = "typical"

    def __init__(self, typical_p: float = 0.9):
        self.typical_p = _check_mass("typical_p", typical_p)

    def filter(self, logits):
        logits = np.asarray(logits, dtype=np.float64)
        if self.typical_p == 1.0:
            return logits
        log_probabilities = log_softmax(logits)
        probabilities = np.exp(log_probabilities)
        # Banned tokens (p = 0) add nothing to the entropy and enter last.
        entropy = -np.sum(probabilities * np.where(probabilities > 0, log_probabilities, 0.0),
                          axis=-1, keepdims=True)  # (batch, 1)
        order = np.argsort(np.abs(-log_probabilities - entropy), axis=-1, kind="stable")
        return _keep(logits, _smallest_prefix_reaching(probabilities, order, self.typical_p) & (probabilities > 0))

    def get_config(self):
        return {"typical_p": self.typical_p}


class Chain(Sampler):
    """Several filters in a row, then one draw from what is left.

    Each filter sees the distribution the previous one left, renormalized, as
    in Hugging Face's list of logits warpers.

    Args:
        samplers: the filters, applied first to last.
    """

    name = "chain"

    def __init__(self, samplers: Sequence[Sampler]):
        self.samplers = list(samplers)

    def filter(self, logits):
        filtered = np.asarray(logits, dtype=np.float64)
        for sampler in self.samplers:
            filtered = sampler.filter(filtered)
        return filtered

    def __repr__(self) -> str:
        return f"Chain({self.samplers!r})"


def scale_by_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``logits / temperature`` in float64 (``-inf`` stays ``-inf``)."""
    return np.asarray(logits, dtype=np.float64) / temperature


# === Registry ===

_REGISTRY: dict[str, type[Sampler]] = {
    sampler.name: sampler for sampler in (Greedy, Sampler, Temperature, TopK, TopP, MinP, Typical)
}


def names() -> list[str]:
    """The registered sampler names, sorted."""
    return sorted(_REGISTRY)


def get(name: str, **params) -> Sampler:
    """Builds the sampler registered as ``name``.

    Args:
        name: one of :func:`names`.
        **params: its constructor arguments, named as in Hugging Face
            ``generate()`` (``top_k``, ``top_p``, ``min_p``, ``typical_p``,
            ``temperature``).

    Raises:
        ValueError: an unknown name, or parameters the sampler does not take or
            cannot accept.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown sampler {name!r}. Valid samplers: {', '.join(names())}")
    try:
        return _REGISTRY[name](**params)
    except TypeError as error:
        raise ValueError(f"sampler {name!r} does not take {sorted(params)}: {error}") from None


def from_generation_options(*, do_sample: bool, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                            min_p: float = 0.0, typical_p: float = 1.0) -> Sampler:
    """The sampler Hugging Face-style options describe.

    Filters run in Hugging Face's order -- temperature, top-k, top-p, min-p,
    typical -- and neutral values (temperature 1, top_k 0, top_p 1, min_p 0,
    typical_p 1) add none.

    Args:
        do_sample: False gives the greedy sampler whatever the other options.
        temperature, top_k, top_p, min_p, typical_p: as in ``generate()``.
    """
    if not do_sample:
        return Greedy()
    filters: list[Sampler] = []
    if temperature != 1.0:
        filters.append(Temperature(temperature))
    if top_k:
        filters.append(TopK(top_k))
    if top_p < 1.0:
        filters.append(TopP(top_p))
    if min_p > 0.0:
        filters.append(MinP(min_p))
    if typical_p < 1.0:
        filters.append(Typical(typical_p))
    if not filters:
        return Sampler()
    return filters[0] if len(filters) == 1 else Chain(filters)
