"""Quality of generated text: decoding methods compared as in Holtzman et al. (2020).

"The Curious Case of Neural Text Degeneration" compares decoding methods by
statistics of the text they produce, next to the same statistics of human
text. This module does that for the zoo's language models:

    python -m serving.generation_quality --saved_model saved_models/shakespeare_char_lstm/2 \\
        --data ../shared/data/tinyshakespeare --num_prompts 50 --max_new_tokens 200 \\
        --output benchmarks/results/generation_quality_shakespeare

Prompts are the first tokens of lines of the corpus's dev split (never test);
the tokens that follow each prompt in the corpus, as many as the models
generate, are the human reference. Every method continues the same prompts
with the same seed, so a run is reproducible. Generation ignores the model's
end token (`<eos>` is an ordinary token, as it is in the corpus stream), so
every continuation, human or generated, has exactly ``max_new_tokens`` tokens.

The metrics are pure functions on token sequences (any hashable tokens):

- ``repetition_rate``: the share of texts that end in a loop (``loop_at_end``).
- ``distinct_n``: unique n-grams / all n-grams over all texts.
- ``self_bleu``: each text's BLEU-4 against all the others, averaged.
- ``zipf_coefficient``: minus the slope of log count against log rank.
- ``perplexity``: exp of the mean negative log-probability per token.

Units: repetition and perplexity are measured on the model's own tokens
(characters or words). Distinct-n, Self-BLEU and Zipf are measured on words:
the tokens of a word model, or, for a character model, the whitespace-split
words of the text -- character n-grams and character frequencies say little
about lexical diversity.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np

from serving.generate import (BackendError, GenerationError, add_backend_arguments, backend_from_arguments,
                              continuation_logprobs, generate)

logger = logging.getLogger(__name__)

PROG = "python -m serving.generation_quality"

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


# === Prompts and human continuations from the dev split ===


def model_level(backend) -> str:
    """``"word"`` or ``"char"``, from what the model puts between two tokens."""
    if backend.separator == " ":
        return "word"
    if backend.separator == "":
        return "char"
    raise ValueError(f"cannot tell the tokenizer level of a model whose tokens are joined by "
                     f"{backend.separator!r}")


def words_of(backend, token_ids: Sequence[int], level: str) -> list[str]:
    """The words of a token-id sequence: its token strings (word model) or its whitespace-split text (char)."""
    strings = [backend.token_strings[token] for token in token_ids]
    return strings if level == "word" else "".join(strings).split()


def load_dev_tokens(data: str | os.PathLike, level: str, valid_fraction: float = 0.1) -> tuple[list[str], str]:
    """The dev split of a language-model corpus, as (tokens, source), with the training loader.

    ``training.datasets.load_split`` finds ``ptb.valid.txt``/``valid.txt`` in
    a directory, or cuts the last ``valid_fraction`` of ``train.txt`` when
    there is none (tiny-shakespeare), as training did.

    Raises:
        training.errors.DataError (a ValueError): no such path, no dev split, an empty one.
    """
    from training.datasets import load_split

    loaded = load_split("language_model", os.fspath(data), "dev", level=level, valid_fraction=valid_fraction)
    return list(loaded.tokens), loaded.source


def chunk_starts(tokens: Sequence[str], count: int, length: int, line_end: str) -> list[int]:
    """Starts of ``count`` non-overlapping chunks of ``length`` tokens, each at the start of a line.

    A line start is a token right after ``line_end`` that is not itself a
    line end. The chunks are spread evenly over the stream: chunk k starts at
    the first line start at or after ``k * (len(tokens) - length) / count``
    and after the previous chunk.

    Raises:
        ValueError: the stream holds fewer such chunks.
    """
    starts = [index for index in range(1, len(tokens) - length + 1)
              if tokens[index - 1] == line_end and tokens[index] != line_end]
    spacing = (len(tokens) - length) / count
    chosen: list[int] = []
    position = 0
    for k in range(count):
        floor = max(k * spacing, chosen[-1] + length if chosen else 0)
        while position < len(starts) and starts[position] < floor:
            position += 1
        if position == len(starts):
            raise ValueError(f"the dev split ({len(tokens):,} tokens) has room for only {len(chosen)} "
                             f"non-overlapping line-initial chunks of {length} tokens, not {count}; "
                             "ask for fewer prompts or fewer tokens")
        chosen.append(starts[position])
    return chosen


@dataclasses.dataclass
class Reference:
    """Prompts and their human continuations, as model token ids."""

    prompt_ids: list[list[int]]
    human_ids: list[list[int]]
    starts: list[int]
    source: str


def build_reference(backend, tokens: Sequence[str], level: str, num_prompts: int, prompt_tokens: int,
                    continuation_tokens: int, source: str = "") -> Reference:
    """Cuts prompts and human continuations from a dev token stream and tokenizes them with the model.

    Each chunk of ``prompt_tokens + continuation_tokens`` tokens starts at a
    line start (``chunk_starts``); its text goes through the model's own
    ``tokenize`` in one call, which must give one id per corpus token.
    """
    line_end = "<eos>" if level == "word" else "\n"
    length = prompt_tokens + continuation_tokens
    starts = chunk_starts(tokens, num_prompts, length, line_end)
    joiner = " " if level == "word" else ""
    texts = [joiner.join(tokens[start:start + length]) for start in starts]
    ids = backend.tokenize(texts)
    for text, row in zip(texts, ids):
        if len(row) != length:
            raise ValueError(f"the model tokenizes a {length}-token chunk of the corpus into {len(row)} tokens: "
                             f"is it a {level}-level model of this corpus? chunk: {text[:80]!r}")
    return Reference(prompt_ids=[list(row[:prompt_tokens]) for row in ids],
                     human_ids=[list(row[prompt_tokens:]) for row in ids], starts=starts, source=source)


# === The comparison ===


def decoding_methods(level: str, top_k: int | None = None, top_p: float = 0.95,
                     num_beams: int = 4) -> dict[str, dict]:
    """The compared decoding methods: name -> ``generate`` options (plus a display ``label``).

    greedy; beam search with ``num_beams`` beams; pure sampling (the model's
    distribution as it is); top-k sampling; nucleus (top-p) sampling.
    ``top_k`` defaults to Holtzman et al.'s 40 for word models and to 10 for
    character models: a character model's next-character distribution is
    sharp, and 40 of a ~65-character vocabulary would filter almost nothing.
    """
    top_k = top_k if top_k is not None else (40 if level == "word" else 10)
    return {
        "greedy": {"label": "greedy", "do_sample": False},
        "beam": {"label": f"beam search, {num_beams} beams", "do_sample": False, "num_beams": num_beams},
        "sampling": {"label": "pure sampling", "do_sample": True},
        "top_k": {"label": f"top-k, k={top_k}", "do_sample": True, "top_k": top_k},
        "nucleus": {"label": f"nucleus, p={top_p:g}", "do_sample": True, "top_p": top_p},
    }


def _batches(count: int, batch_size: int) -> list[slice]:
    return [slice(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def _examples(backend, prompt_ids: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
              count: int = 3) -> list[dict]:
    """The first few (prompt, continuation) texts, for reading."""
    join = backend.separator.join
    return [{"prompt": join(backend.token_strings[token] for token in prompt),
             "continuation": join(backend.token_strings[token] for token in continuation)}
            for prompt, continuation in list(zip(prompt_ids, continuations))[:count]]


def run_method(backend, prompt_ids: Sequence[Sequence[int]], options: dict, max_new_tokens: int, seed: int,
               batch_size: int, progress=None) -> tuple[list[list[int]], list[list[float]]]:
    """Generates for every prompt with one method; returns (token ids, their model log-probabilities).

    The log-probabilities come from ``continuation_logprobs`` with the prompt
    as context: the model's own log p(token | prompt, tokens before it),
    whatever the decoding did.
    """
    options = {name: value for name, value in options.items() if name != "label"}
    generated: list[list[int]] = []
    logprobs: list[list[float]] = []
    for part in _batches(len(prompt_ids), batch_size):
        prompts = [list(row) for row in prompt_ids[part]]
        result = generate(backend, prompts, max_new_tokens=max_new_tokens, stop_at_end_token=False, seed=seed,
                          **options)
        generated += result.token_ids
        logprobs += continuation_logprobs(backend, prompts, result.token_ids)
        if progress is not None:
            progress.update(len(prompts))
    return generated, logprobs


def human_logprobs(backend, reference: Reference, batch_size: int, progress=None) -> list[list[float]]:
    """The model's log-probabilities of the human continuations, with their prompts as context."""
    logprobs: list[list[float]] = []
    for part in _batches(len(reference.prompt_ids), batch_size):
        logprobs += continuation_logprobs(backend, reference.prompt_ids[part], reference.human_ids[part])
        if progress is not None:
            progress.update(part.stop - part.start)
    return logprobs


def compare_decoding(backend, reference: Reference, methods: dict[str, dict], *, max_new_tokens: int,
                     seed: int = 0, batch_size: int = 50, settings: MetricSettings | None = None,
                     show_progress: bool = True) -> dict[str, dict]:
    """Generates with every method and measures every set of texts, human continuations last.

    Returns:
        name -> metrics (``text_metrics``) plus ``label``, ``options``,
        ``seconds`` and ``examples``; the human row is ``"human"``.
    """
    from tqdm import tqdm

    settings = settings or MetricSettings()
    level = model_level(backend)
    count = len(reference.prompt_ids)
    rows: dict[str, dict] = {}
    with tqdm(total=count * (len(methods) + 1), unit="prompt", file=sys.stderr,
              disable=not show_progress) as progress:
        for name, options in methods.items():
            progress.set_description(name)
            started = time.perf_counter()
            generated, logprobs = run_method(backend, reference.prompt_ids, options, max_new_tokens, seed,
                                             batch_size, progress)
            seconds = time.perf_counter() - started
            words = [words_of(backend, row, level) for row in generated]
            rows[name] = {"label": options.get("label", name), **text_metrics(generated, words, logprobs, settings),
                          "options": {key: value for key, value in options.items() if key != "label"},
                          "seconds": round(seconds, 2),
                          "examples": _examples(backend, reference.prompt_ids, generated)}
        progress.set_description("human")
        logprobs = human_logprobs(backend, reference, batch_size, progress)
        words = [words_of(backend, row, level) for row in reference.human_ids]
        rows["human"] = {"label": "human (dev split)",
                         **text_metrics(reference.human_ids, words, logprobs, settings),
                         "examples": _examples(backend, reference.prompt_ids, reference.human_ids)}
    return rows


# === Report ===


_COLUMNS = (("perplexity", "perplexity", "{:.2f}"), ("repetition", "repetition %", "{:.0%}"),
            ("distinct_1", "distinct-1", "{:.3f}"), ("distinct_2", "distinct-2", "{:.3f}"),
            ("distinct_3", "distinct-3", "{:.3f}"), ("self_bleu", "Self-BLEU-4", "{:.3f}"),
            ("zipf", "Zipf", "{:.2f}"))


def _cell(value: float | None, template: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return template.format(value).rstrip("%")


def markdown_table(rows: dict[str, dict]) -> str:
    """The metrics side by side, one row per method and one for the human text."""
    lines = ["| text | " + " | ".join(title for _, title, _ in _COLUMNS) + " |",
             "|---|" + "---:|" * len(_COLUMNS)]
    for row in rows.values():
        cells = [_cell(row[key], template) for key, _, template in _COLUMNS]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    """The whole Markdown report: what was run, the table, how to read it, examples."""
    setup = report["setup"]
    unit = "characters" if setup["level"] == "char" else "words"
    words = "words" if setup["level"] == "word" else "whitespace-separated words of the text"
    lines = [
        f"# Generation quality: `{setup['model']}`",
        "",
        f"{setup['num_prompts']} prompts of {setup['prompt_tokens']} {unit}, each the start of a line of the dev "
        f"split ({setup['data_source']}); every method continues each prompt by {setup['max_new_tokens']} "
        f"{unit} (the end token does not stop it), seed {setup['seed']}. The human row is what follows each "
        f"prompt in the corpus, {setup['max_new_tokens']} {unit} too.",
        "",
        markdown_table(report["rows"]),
        "",
        "How each column is measured (after Holtzman et al., 2020):",
        "",
        f"- perplexity: the model's perplexity per {unit[:-1]} of the continuations, with the prompt as context.",
        f"- repetition: the share of continuations that end in a loop -- a phrase of at least "
        f"{setup['metrics']['min_phrase_length']} {unit} repeated at least {setup['metrics']['min_repeats']} "
        "times back to back at the very end (counting full copies of any rotation of the phrase, since the "
        f"text stops mid-phrase); loops longer than 1/{setup['metrics']['min_repeats']} of the continuation "
        "cannot be seen, so the rate grows with the length.",
        f"- distinct-n: unique n-grams / all n-grams of the {words}, over all continuations.",
        f"- Self-BLEU-4: BLEU-4 (uniform weights, no smoothing) of each continuation against all the others, "
        f"averaged, over the first {setup['metrics']['self_bleu_max_texts']} continuations; higher means "
        "less diverse. Without smoothing a text that shares no 4-gram with any other scores 0, so short, "
        "diverse texts average near 0.",
        f"- Zipf: minus the slope of log count against log rank of the {words}, least squares over at most the "
        f"{setup['metrics']['zipf_max_ranks']} most frequent types. Samples this small have a long tail of "
        "words seen once, which flattens the fit: compare rows with each other, not with published values.",
        "",
        "First continuation of each method:",
        "",
    ]
    for row in report["rows"].values():
        example = row["examples"][0] if row["examples"] else {"continuation": ""}
        lines.append(f"- {row['label']}: `{_one_line(example['continuation'])}`")
    return "\n".join(lines) + "\n"


def _one_line(text: str, width: int = 160) -> str:
    """A text on one line for Markdown: newlines shown as ⏎, backticks removed, cut to ``width``."""
    text = text.replace("\n", "⏎").replace("`", "'")
    return text if len(text) <= width else text[:width - 1] + "…"


def _json_safe(value):
    """The report with NaN (an undefined metric) as null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_report(report: dict, output: str | os.PathLike) -> tuple[Path, Path, Path]:
    """Writes ``<output>.json`` (undefined metrics as null), ``<output>.md`` and ``<output>.png``.

    Returns:
        The three paths.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path, plot_path = (Path(f"{output}.{suffix}") for suffix in ("json", "md", "png"))
    json_path.write_text(json.dumps(_json_safe(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                         encoding="utf-8")
    markdown_path.write_text(markdown_report(report), encoding="utf-8")
    plot_report(report, plot_path)
    return json_path, markdown_path, plot_path


# The panels of the plot: (metric, title, log scale).
_PLOTTED = (("perplexity", "perplexity (log)", True), ("repetition", "ends in a loop", False),
            ("distinct_2", "distinct-2", False), ("self_bleu", "Self-BLEU-4", False), ("zipf", "Zipf coefficient", False))


def plot_report(report: dict, path: str | os.PathLike) -> None:
    """One panel per metric, a bar per method, the human text's value as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    methods = [name for name in rows if name != "human"]
    human = rows.get("human")
    figure, axes = plt.subplots(1, len(_PLOTTED), figsize=(3.0 * len(_PLOTTED), 3.2), sharey=True)
    for axis, (key, title, log_scale) in zip(axes, _PLOTTED):
        values = [rows[name][key] for name in methods]
        values = [float("nan") if value is None else value for value in values]
        axis.barh(range(len(methods)), values, color="tab:blue")
        if human is not None and human.get(key) is not None and not math.isnan(human[key]):
            axis.axvline(human[key], color="tab:orange", linestyle="--", label="human (dev split)")
        if log_scale:
            axis.set_xscale("log")
        axis.set_title(title)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(methods)), [rows[name]["label"] for name in methods])
    axes[0].invert_yaxis()
    if human is not None:
        axes[-1].legend(loc="lower right", fontsize="small")
    figure.suptitle(f"generation quality: {report['setup']['model']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# === CLI ===


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compare decoding methods (greedy, beam, pure sampling, top-k, nucleus) by the statistics "
                    "of Holtzman et al. (2020): perplexity, repetition, distinct-n, Self-BLEU and Zipf "
                    "coefficient, next to the same statistics of human text from the corpus's dev split.",
        epilog=f"example: {PROG} --saved_model saved_models/shakespeare_char_lstm/2 "
               "--data ../shared/data/tinyshakespeare --num_prompts 50 --max_new_tokens 200 "
               "--output benchmarks/results/generation_quality_shakespeare")
    add_backend_arguments(parser)
    parser.add_argument("--data", required=True,
                        help="the corpus: a directory with ptb.valid.txt/valid.txt, or train.txt whose last "
                             "--valid_fraction is the dev split (tiny-shakespeare), as in training")
    parser.add_argument("--valid_fraction", type=float, default=0.1,
                        help="share of train.txt cut off as dev when there is no dev file (default: 0.1, "
                             "as the shipped models were trained)")
    parser.add_argument("--num_prompts", type=int, default=50, help="prompts per method (default: 50)")
    parser.add_argument("--prompt_tokens", type=int,
                        help="tokens per prompt (default: 100 for character models, 20 for word models)")
    parser.add_argument("--max_new_tokens", type=int, default=200,
                        help="tokens generated per prompt, and the human continuation's length (default: 200)")
    parser.add_argument("--methods", default="greedy,beam,sampling,top_k,nucleus",
                        help="comma-separated subset of greedy,beam,sampling,top_k,nucleus (default: all)")
    parser.add_argument("--num_beams", type=int, default=4, help="beams for beam search (default: 4)")
    parser.add_argument("--top_k", type=int, help="k for top-k (default: 40 for word models, 10 for character)")
    parser.add_argument("--top_p", type=float, default=0.95, help="p for nucleus sampling (default: 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--batch_size", type=int, default=50, help="prompts per generate call (default: 50)")
    parser.add_argument("--min_phrase_length", type=int, default=DEFAULT_MIN_PHRASE_LENGTH,
                        help=f"shortest looping phrase, in tokens (default: {DEFAULT_MIN_PHRASE_LENGTH})")
    parser.add_argument("--min_repeats", type=int, default=DEFAULT_MIN_REPEATS,
                        help=f"copies of the phrase at the end that make a loop (default: {DEFAULT_MIN_REPEATS})")
    parser.add_argument("--self_bleu_max_texts", type=int, default=DEFAULT_SELF_BLEU_MAX_TEXTS,
                        help=f"texts used for Self-BLEU (default: {DEFAULT_SELF_BLEU_MAX_TEXTS})")
    parser.add_argument("--zipf_max_ranks", type=int, default=DEFAULT_ZIPF_MAX_RANKS,
                        help=f"ranks in the Zipf fit (default: {DEFAULT_ZIPF_MAX_RANKS})")
    parser.add_argument("--output", help="write <output>.json and <output>.md (default: print only)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="log progress")
    return parser


_METHOD_NAMES = ("greedy", "beam", "sampling", "top_k", "nucleus")
# Test files are never read here (see ../shared/data/README): human text comes from dev only.
_TEST_FILES = ("ptb.test.txt", "test.txt")


def check_arguments(args: argparse.Namespace) -> list[str]:
    """Raises ValueError for impossible numbers or a missing corpus; returns the method names.

    Runs before the model is loaded, so a typo fails at once.
    """
    for name, low in (("num_prompts", 1), ("max_new_tokens", 1), ("num_beams", 2), ("batch_size", 1),
                      ("seed", 0), ("min_phrase_length", 1), ("min_repeats", 2), ("self_bleu_max_texts", 2),
                      ("zipf_max_ranks", 2), ("prompt_tokens", 1), ("top_k", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise ValueError(f"--{name} must be >= {low}, got {value}")
    if not (math.isfinite(args.top_p) and 0.0 < args.top_p <= 1.0):
        raise ValueError(f"--top_p must be in (0, 1], got {args.top_p}")
    if not 0.0 <= args.valid_fraction < 1.0:
        raise ValueError(f"--valid_fraction must be in [0, 1), got {args.valid_fraction}")
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = sorted(set(methods) - set(_METHOD_NAMES))
    if unknown or not methods:
        raise ValueError(f"unknown --methods {unknown or args.methods!r}; choose from {', '.join(_METHOD_NAMES)}")
    if not os.path.exists(os.path.expanduser(args.data)):
        raise ValueError(f"--data {args.data}: no such file or directory")
    if os.path.basename(os.path.normpath(args.data)) in _TEST_FILES:
        raise ValueError(f"--data {args.data} is a test split, which is held back; give the corpus directory "
                         "or its dev file")
    return methods


def _model_name(args: argparse.Namespace) -> str:
    if args.saved_model:
        return os.path.normpath(args.saved_model)
    return f"{args.model} at {args.server}"


def run(args: argparse.Namespace, methods: list[str]) -> dict:
    """Loads the model and the dev split, runs the comparison and returns the report."""
    backend = backend_from_arguments(args)
    level = model_level(backend)
    prompt_tokens = args.prompt_tokens or (100 if level == "char" else 20)
    tokens, source = load_dev_tokens(args.data, level, args.valid_fraction)
    reference = build_reference(backend, tokens, level, args.num_prompts, prompt_tokens, args.max_new_tokens,
                                source)
    chosen = {name: options for name, options in
              decoding_methods(level, args.top_k, args.top_p, args.num_beams).items() if name in methods}
    settings = MetricSettings(args.min_phrase_length, args.min_repeats, args.self_bleu_max_texts,
                              args.zipf_max_ranks)
    rows = compare_decoding(backend, reference, chosen, max_new_tokens=args.max_new_tokens, seed=args.seed,
                            batch_size=args.batch_size, settings=settings, show_progress=not args.no_progress)
    setup = {"model": _model_name(args), "backend": "in-process SavedModel" if args.saved_model else "gRPC",
             "level": level, "data": os.fspath(args.data), "data_source": source,
             "num_prompts": args.num_prompts, "prompt_tokens": prompt_tokens,
             "max_new_tokens": args.max_new_tokens, "seed": args.seed, "prompt_starts": reference.starts,
             "metrics": dataclasses.asdict(settings),
             "metric_units": {"repetition, perplexity": "model tokens",
                              "distinct-n, Self-BLEU, Zipf": "words" if level == "word" else
                              "whitespace-split words of the generated characters"}}
    return {"setup": setup, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        methods = check_arguments(args)
        report = run(args, methods)
    except (ValueError, OSError, BackendError, GenerationError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    if args.output:
        for path in write_report(report, args.output):
            print(f"wrote {path}", file=sys.stderr)
    print(markdown_table(report["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
