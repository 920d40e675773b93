"""The comparison: prompts and human continuations from the dev split, every decoding method run on them.

Prompts are the first tokens of lines of the corpus's dev split (never test);
the tokens that follow each prompt in the corpus, as many as the models
generate, are the human reference. Every method continues the same prompts
with the same seed, so a run is reproducible. Generation ignores the model's
end token (`<eos>` is an ordinary token, as it is in the corpus stream), so
every continuation, human or generated, has exactly ``max_new_tokens`` tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from serving.generation import continuation_logprobs, generate
from serving.generation.quality.metrics import MetricSettings, text_metrics


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


def load_dev_tokens(data: str | os.PathLike, level: str, valid_fraction: float = 0.1,
                    valid_start: str | None = None) -> tuple[list[str], str]:
    """The dev split of a language-model corpus, as (tokens, source), with the training loader.

    ``training.datasets.load_split`` finds ``ptb.valid.txt``/``valid.txt`` in
    a directory, or cuts the last ``valid_fraction`` of ``train.txt`` when
    there is none (tiny-shakespeare), as training did; with ``valid_start``
    dev begins at the first line after that mark matching the expression.

    Raises:
        training.errors.DataError (a ValueError): no such path, no dev split, an empty one.
    """
    from training.datasets import load_split

    loaded = load_split("language_model", os.fspath(data), "dev", level=level, valid_fraction=valid_fraction,
                        valid_start=valid_start)
    return list(loaded.tokens), loaded.source


def recorded_valid_start(saved_model: str | os.PathLike | None) -> str | None:
    """Where the model's dev region started in training (``valid_start`` in its training.json), or None.

    A character model trained with a dev region that starts at a given line
    must be compared on that region: the text before it was its training text.
    """
    if not saved_model:
        return None
    record = Path(saved_model) / "training.json"
    if not record.is_file():
        return None
    return (json.loads(record.read_text()).get("data") or {}).get("valid_start")


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
