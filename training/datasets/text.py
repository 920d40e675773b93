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
    data: LanguageModelData, split: str, valid_fraction: float
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

    Returns:
        The part of `data` for `split`; its `source` says which part.
    """
    boundary = int(len(data.tokens) * (1.0 - valid_fraction))
    if split == "train":
        start, end = 0, boundary
        part = f"first {100 * (1.0 - valid_fraction):g}%"
    else:
        start, end = boundary, len(data.tokens)
        part = f"last {100 * valid_fraction:g}%"
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
