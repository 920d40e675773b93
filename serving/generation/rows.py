"""Prompts and rows: what the sampling loop, beam search and scoring share.

A prompt becomes ids (text prompts after the model's start token); each
returned sequence is a `Row` that collects its tokens and text and decides
when it is finished (`Stops`); finished rows become a `GenerationResult`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence, Union

from serving.generation.backends import OOV_ID, pad_rows
from serving.generation.options import GenerationOptions, GenerationResult

logger = logging.getLogger(__name__)

# A prompt is text, or token ids taken as they are (no tokenization).
Prompt = Union[str, Sequence[int]]


class Row:
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

    def copy(self) -> "Row":
        twin = Row(self.prompt, self.prompt_ids, self.generator)
        twin.tokens, twin.logprobs, twin.ends = list(self.tokens), list(self.logprobs), list(self.ends)
        twin.text, twin.emitted, twin.score = self.text, self.emitted, self.score
        return twin

    @property
    def history(self) -> list[int]:
        return self.prompt_ids + self.tokens

    def append(self, token: int, logprob: float, backend, stops: "Stops", min_new_tokens: int) -> None:
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

    def release(self, stops: "Stops") -> str:
        """The text that can be streamed now.

        While the row runs, a suffix that could still grow into a stop string
        is held back, so a stop string split over several tokens never leaks.
        """
        end = len(self.text) if self.finish_reason else len(self.text) - stops.held_back(self.text)
        piece = self.text[self.emitted:end]
        self.emitted = max(self.emitted, end)
        return piece


@dataclasses.dataclass
class Stops:
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


def encode_prompts(backend, prompts: Sequence[Prompt], options: GenerationOptions):
    """Prompt texts, prompt ids (text prompts after the start token) and the stop conditions.

    Text prompts are tokenized in one call and fed after the model's start
    token (see ``serving.generation``); id prompts are taken as given.
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
    stops = Stops(stop_ids, end_id, [item for item in options.stop if isinstance(item, str)])
    return texts, ids, stops


def feed_prompts(backend, prompt_ids: Sequence[Sequence[int]]):
    """The whole batch of prompts in one step call, from the initial state: (logits, state)."""
    return backend.step(pad_rows(prompt_ids), backend.initial_state(len(prompt_ids)))


def result_from_rows(rows: Sequence[Row], options: GenerationOptions, scores=None) -> GenerationResult:
    """The GenerationResult of finished rows (``scores``: beam search's, one per row)."""
    return GenerationResult(
        prompts=[row.prompt for row in rows], texts=[row.text for row in rows],
        token_ids=[list(row.tokens) for row in rows], finish_reasons=[row.finish_reason for row in rows],
        logprobs=[list(row.logprobs) for row in rows] if options.return_logprobs else None, scores=scores)
