"""Plain-text files: reading them, and turning text into language-model tokens.

`read_text` is the one place local files are opened, so every format reports
a missing file or bad UTF-8 the same way. The tokenization follows the corpora
the zoo trains on:

- word level, the Penn Treebank convention of Mikolov and Zaremba et al.
  (2014): whitespace tokens of each line, then `"<eos>"` for the line end;
- character level, as in char-rnn and nanoGPT: every character, newlines
  included, so the model learns where lines break.
"""

from __future__ import annotations

import logging
import os
import re

from training.datasets.records import LEVELS, LanguageModelData
from training.errors import DataError

logger = logging.getLogger(__name__)

EOS_TOKEN = "<eos>"

# Long lines are cut in error messages; the line number finds the rest.
_MAX_LINE_IN_MESSAGE = 80


def read_text(path: str | os.PathLike) -> str:
    """Reads a UTF-8 text file, with `\\r\\n` and `\\r` line ends made `\\n`.

    Normalizing line ends keeps a file edited on Windows from adding a `\\r`
    character to a character-level vocabulary.

    Args:
        path: The file.

    Returns:
        The whole text.

    Raises:
        DataError: If the file does not exist, is a directory, cannot be read,
            or is not UTF-8 (the message gives the line of the first bad byte).
    """
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        raise DataError("no such file", path=path) from None
    except IsADirectoryError:
        raise DataError("is a directory, expected a file", path=path) from None
    except OSError as error:
        raise DataError(f"cannot read: {error.strerror}", path=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line_number = raw.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"not valid UTF-8 (byte {raw[error.start]:#04x})",
            path=path,
            line_number=line_number,
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_lines(path: str | os.PathLike) -> list[str]:
    """Returns the lines of a UTF-8 text file without their line ends.

    Lines are split on `\\n` only: `str.splitlines` would also split on
    characters such as U+2028 or U+0085 that can occur inside a sentence, and
    the reported line numbers would then disagree with an editor's.
    """
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # The final newline ends the last line; it adds no line.
    return lines


def shorten(line: str) -> str:
    """Cuts a quoted input line to a length that fits an error message."""
    if len(line) <= _MAX_LINE_IN_MESSAGE:
        return line
    return line[: _MAX_LINE_IN_MESSAGE - 3] + "..."


def tokens_from_text(text: str, level: str) -> list[str]:
    """Splits text into language-model tokens.

    Args:
        text: The corpus text.
        level: `"word"`: each non-empty line's whitespace tokens followed by
            `EOS_TOKEN`; `"char"`: every character, newlines included.

    Returns:
        The tokens in corpus order.

    Raises:
        ValueError: If `level` is not one of `LEVELS`.
    """
    if level == "char":
        return list(text)
    if level == "word":
        tokens: list[str] = []
        for line in text.split("\n"):
            words = line.split()
            if words:  # Blank lines carry no sentence, so no <eos> either.
                tokens.extend(words)
                tokens.append(EOS_TOKEN)
        return tokens
    raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")


def read_language_model_file(
    path: str | os.PathLike, level: str
) -> LanguageModelData:
    """Reads a plain-text corpus file into one token stream.

    Args:
        path: The file, e.g. `ptb.train.txt` or tiny-shakespeare's `train.txt`.
        level: `"word"` or `"char"`, see `tokens_from_text`.

    Returns:
        The whole file as one record.
    """
    tokens = tokens_from_text(read_text(path), level)
    return LanguageModelData(tokens=tokens, level=level, source=os.fspath(path))


def hold_out_tail(
    data: LanguageModelData, split: str, valid_fraction: float, valid_start: str | None = None
) -> LanguageModelData:
    """Cuts a validation split from the end of a corpus that has none.

    Train is the first `1 - valid_fraction` of the tokens and dev the rest,
    the way nanoGPT and tensorflow-datasets split tiny-shakespeare; taking
    the end rather than random lines keeps both parts contiguous text, which
    truncated backpropagation through time needs. At character level the
    tokens are characters, so the cut is at an exact character position:
    `int(num_characters * (1 - valid_fraction))`.

    Args:
        data: The whole corpus.
        split: `"train"` or `"dev"`.
        valid_fraction: The share of tokens held out for dev, in [0, 1).
        valid_start: A regular expression for the line dev starts with, or
            None. The cut then moves forward from the fraction's position to
            the first line that matches, so that dev begins a document of its
            own instead of inside one that train holds the start of
            (tiny-shakespeare's last 10% begins inside Measure for Measure;
            the `shakespeare_char` presets start dev at The Taming of the
            Shrew's first line, `SLY:`). If no line matches, the cut stays at
            the fraction, and a warning and the split's `source` say so.

    Returns:
        The part of `data` for `split`; its `source` says which part.

    Raises:
        DataError: `valid_start` is not a regular expression. (When no line
            matches it, the cut stays at the fraction, with a warning.)
    """
    boundary = int(len(data.tokens) * (1.0 - valid_fraction))
    described = (f"first {100 * (1.0 - valid_fraction):g}%", f"last {100 * valid_fraction:g}%")
    start_line = _next_line_matching(data, boundary, valid_start) if valid_start else None
    if start_line is not None:
        boundary = start_line
        share = 100 * boundary / len(data.tokens)
        described = (f"first {share:.2f}%", f"last {100 - share:.2f}%, from the line matching {valid_start!r}")
    elif valid_start:
        # A preset's pattern on a corpus other than its own: the plain cut, said out loud.
        logger.warning("no line of %s after the %s mark matches valid_start %r: dev is the %s",
                       data.source, described[0], valid_start, described[1])
        described = (described[0], f"{described[1]}; no line matched {valid_start!r}")
    if split == "train":
        start, end = 0, boundary
        part = described[0]
    else:
        start, end = boundary, len(data.tokens)
        part = described[1]
    logger.info(
        "no separate validation file: %s is tokens [%d, %d) of %s",
        split,
        start,
        end,
        data.source,
    )
    tokens = data.tokens[start:end]
    return LanguageModelData(
        tokens=tokens, level=data.level, source=f"{data.source} ({part})"
    )


def _next_line_matching(data: LanguageModelData, position: int, pattern: str) -> int | None:
    """The token index where the first line at or after token `position` that matches `pattern`
    starts, or None if no line does."""
    try:
        expression = re.compile(pattern)
    except re.error as error:
        raise DataError(f"valid_start {pattern!r} is not a regular expression: {error}") from None
    if data.level == "char":
        text = "".join(data.tokens)
        line_start = text.rfind("\n", 0, position) + 1
        for line in re.finditer(r"(?m)^.*$", text[line_start:]):
            if line_start + line.start() >= position and expression.search(line.group()):
                return line_start + line.start()
    else:  # lines are the words between <eos> tokens
        start = 0
        for index, token in enumerate(data.tokens + [EOS_TOKEN]):
            if token != EOS_TOKEN:
                continue
            if start >= position and expression.search(" ".join(data.tokens[start:index])):
                return start
            start = index + 1
    return None
