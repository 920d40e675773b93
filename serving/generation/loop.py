"""The generation loop: greedy decoding and sampling, and the entry points `generate` and `stream_generate`.

Each prompt is fed once -- the whole batch in one `step` call -- then one
token per live row per step; the state the backend returns is carried to the
next call. A row that finishes leaves the batch. Beam search
(`serving.generation.beam_search`) runs behind the same entry points.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterator, Sequence

import numpy as np

from serving.generation import beam_search, samplers
from serving.generation.backends import PAD_ID, BackendError
from serving.generation.logits import process_logits
from serving.generation.options import GenerationError, GenerationOptions, GenerationResult
from serving.generation.rows import Prompt, Row, encode_prompts, feed_prompts, result_from_rows


def _row_generator(seed: int | None, prompt: str, sequence: int) -> np.random.Generator:
    """The random stream of a prompt's ``sequence``-th returned row (see ``serving.generation``)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([seed, zlib.crc32(prompt.encode("utf-8")), sequence])


def _progress(rows: Sequence[Row]) -> str:
    return ", ".join(f"row {index}: {len(row.tokens)}" for index, row in enumerate(rows))


# === Sampling and greedy loop ===


# The `sample` signature pays for itself when a step's logits are large: over
# gRPC at 64 rows of PTB's 10,001 words (640k floats, 2.6 MB) it gave 1.5x the
# tokens/s of sending logits, while at one row (10k floats) or with a 67-char
# vocabulary its fixed cost in the graph made it 8-15% slower
# (benchmarks/results/generation_speed.md). Steps with fewer logits than this
# use `step`; both draw the same tokens, so the loop may switch at any step.
SAMPLE_SIGNATURE_MIN_LOGITS = 65_536


def _model_draws(backend, options: GenerationOptions, stop_ids) -> bool:
    """Whether the model's `sample` signature draws exactly what the client would.

    It applies temperature and top-k and never draws `<pad>`; the other
    filters and every history-dependent rewrite (``process_logits``) need the
    logits here.
    """
    return bool(getattr(backend, "can_sample", False)) and (
        options.repetition_penalty == 1.0 and not options.no_repeat_ngram_size
        and options.top_p == 1.0 and options.min_p == 0.0 and options.typical_p == 1.0
        and not (options.min_new_tokens and stop_ids))


def _sample_loop(backend, prompts, options: GenerationOptions) -> Iterator[tuple[int, str]]:
    """Greedy decoding or sampling; yields (row, text) pieces and returns the finished rows."""
    texts, prompt_ids, stops = encode_prompts(backend, prompts, options)
    sampler = samplers.from_generation_options(
        do_sample=options.sampling, temperature=options.temperature, top_k=options.top_k, top_p=options.top_p,
        min_p=options.min_p, typical_p=options.typical_p)
    rows = [Row(text, ids, _row_generator(options.seed, text, sequence))
            for text, ids in zip(texts, prompt_ids) for sequence in range(options.num_return_sequences)]
    if options.max_new_tokens == 0:
        for row in rows:
            row.finish_reason = "length"
        return rows
    try:
        logits, state = feed_prompts(backend, prompt_ids)
    except BackendError as error:
        raise GenerationError(f"generation failed while feeding the prompts (0 new tokens): {error}",
                              [0] * len(rows)) from error
    # Each prompt was fed once; its returned sequences start from copies of its state row.
    copies = np.repeat(np.arange(len(prompt_ids)), options.num_return_sequences)
    logits, state = np.asarray(logits)[copies], np.asarray(state)[copies]
    active = list(range(len(rows)))  # the rows still generating, in the order of `logits` and `state`
    # After the prompts, the model's `sample` signature can draw each token
    # itself from the uniform number the row's generator gives (the same draw
    # the sampler here makes), so a step returns ids instead of logits.
    model_draws = _model_draws(backend, options, stops.token_ids)
    drawn = None  # (tokens, logprobs) the model drew in the last call
    while active:
        current = [rows[index] for index in active]
        if drawn is not None:
            tokens, logprobs = drawn
            if not options.return_logprobs:
                logprobs = np.full(len(current), np.nan)
        else:
            processed = process_logits(logits, [row.history for row in current],
                                       [len(row.tokens) for row in current], options, stops.token_ids)
            tokens = sampler.sample(processed, [row.generator for row in current])  # (live,)
            if options.return_logprobs:
                logprobs = samplers.log_softmax(logits)[np.arange(len(current)), tokens]
            else:  # not returned: skip a full log-softmax of (rows, vocabulary) per step
                logprobs = np.full(len(current), np.nan)
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
            if model_draws and len(still) * backend.vocabulary_size >= SAMPLE_SIGNATURE_MIN_LOGITS:
                live = [current[position] for position in still]
                uniforms = [row.generator.random() for row in live] if options.sampling else [0.0] * len(live)
                next_tokens, next_logprobs, state = backend.sample(
                    tokens[still].reshape(-1, 1), np.asarray(state)[still], uniforms,
                    [options.temperature if options.sampling else 0.0] * len(live),
                    [options.top_k if options.sampling else 0] * len(live))
                drawn = (np.asarray(next_tokens, dtype=np.int64), np.asarray(next_logprobs, dtype=np.float64))
            else:
                logits, state = backend.step(tokens[still].reshape(-1, 1), np.asarray(state)[still])
                drawn = None
        except BackendError as error:
            raise GenerationError(f"generation stopped after these new tokens per row ({_progress(rows)}): "
                                  f"{error}", [len(row.tokens) for row in rows]) from error
    return rows


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
        found = yield from beam_search.search(backend, prompts, settings)
        result = beam_search.result_from_hypotheses(found, settings)
        for index, text in enumerate(result.texts):
            if text:
                yield index, text
    else:
        rows = yield from _sample_loop(backend, prompts, settings)
        result = result_from_rows(rows, settings)
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
