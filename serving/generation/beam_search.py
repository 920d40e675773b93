"""Beam search: ``num_beams`` running beams per prompt, the state rows reordered to follow them."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from serving.generation import samplers
from serving.generation.backends import BackendError
from serving.generation.logits import process_logits
from serving.generation.options import GenerationError, GenerationOptions, GenerationResult
from serving.generation.rows import Row, encode_prompts, feed_prompts, result_from_rows


class _Hypotheses:
    """The best finished sequences of one prompt's beam search (at most ``num_beams``)."""

    def __init__(self, num_beams: int, options: GenerationOptions):
        self.num_beams, self.options = num_beams, options
        self.items: list[tuple[float, Row]] = []  # (length-penalized score, row), best first

    def penalized(self, score: float, length: int) -> float:
        return score / (max(length, 1) ** self.options.length_penalty)

    def add(self, row: Row, length: int) -> None:
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


def search(backend, prompts, options: GenerationOptions) -> Iterator[tuple[int, str]]:
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
    texts, prompt_ids, stops = encode_prompts(backend, prompts, options)
    beams_per_prompt = options.num_beams
    hypotheses = [_Hypotheses(beams_per_prompt, options) for _ in prompts]
    if options.max_new_tokens == 0:
        for text, ids, found in zip(texts, prompt_ids, hypotheses):
            row = Row(text, ids)
            row.finish_reason = "length"
            found.add(row, 0)
        return [found.items for found in hypotheses]
    try:
        logits, state = feed_prompts(backend, prompt_ids)
    except BackendError as error:
        raise GenerationError(f"beam search failed while feeding the prompts (0 new tokens): {error}") from error
    beams = [Row(text, ids) for text, ids in zip(texts, prompt_ids)]  # one live beam per prompt to start
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
    yield  # pragma: no cover -- makes this a generator, like the sampling loop


def result_from_hypotheses(found: Sequence[Sequence[tuple[float, Row]]],
                           options: GenerationOptions) -> GenerationResult:
    """The best ``num_return_sequences`` hypotheses of each prompt, with their scores."""
    best = [item for items in found for item in items[:options.num_return_sequences]]
    return result_from_rows([row for _, row in best], options, scores=[float(score) for score, _ in best])
