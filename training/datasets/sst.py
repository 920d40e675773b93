"""Stanford Sentiment Treebank (binary) files.

Two layouts hold the same task:

- `stsa.binary.*` (Kim 2014; Tai et al. 2015): one sentence per line,
  `<label 0/1> <tokenized sentence>`;
- GLUE's `SST-2/*.tsv`: a header naming the columns (`sentence<TAB>label`),
  then one tab-separated row per phrase.

The layout is told apart by the first line, not the file name, so a renamed
file still reads correctly. Sentences are already tokenized in both, so
tokens are the whitespace-separated words.

The two layouts write brackets differently: the stsa files keep the Penn
Treebank's escapes (`-lrb-`, `-rrb-`), GLUE's phrases the brackets
themselves. A model trained on the phrases would read every escaped bracket of
a dev sentence as `<unk>`, so the readers turn the escapes into brackets, and
the exported classifier's tokenizer does the same to what clients send
(`serving.export.signatures`).
"""

from __future__ import annotations

import os

from training.datasets.records import ClassificationData
from training.datasets.text import read_lines, shorten
from training.errors import DataError

SST_LABEL_NAMES = ["negative", "positive"]

# The Penn Treebank's bracket escapes, in any case, and the brackets they stand for.
BRACKET_ESCAPES = {"-lrb-": "(", "-rrb-": ")", "-lsb-": "[", "-rsb-": "]", "-lcb-": "{", "-rcb-": "}"}

# Label strings as both layouts write them, mapped to ids into SST_LABEL_NAMES.
_LABEL_IDS = {"0": 0, "1": 1}


def read_sst_file(path: str | os.PathLike) -> ClassificationData:
    """Reads a binary SST file in either the stsa or the GLUE tsv layout.

    Blank lines are skipped.

    Args:
        path: The file.

    Returns:
        The sentences with labels 0 (negative) and 1 (positive).

    Raises:
        DataError: If the file cannot be read or a line is malformed (the
            message gives `path:line`).
    """
    lines = read_lines(path)
    if lines and "sentence" in lines[0].split("\t"):
        sentences, labels = _parse_glue_tsv(path, lines)
    else:
        sentences, labels = _parse_stsa(path, lines)
    return ClassificationData(
        sentences=sentences,
        labels=labels,
        label_names=list(SST_LABEL_NAMES),
        source=os.fspath(path),
    )


def unescape_brackets(tokens: list[str]) -> list[str]:
    """`tokens` with each Penn Treebank bracket escape (`-LRB-`, `-rrb-`, ...) made the bracket."""
    return [BRACKET_ESCAPES.get(token.lower(), token) for token in tokens]


def _parse_stsa(
    path: str | os.PathLike, lines: list[str]
) -> tuple[list[list[str]], list[int]]:
    """Parses `<label> <sentence>` lines."""
    sentences, labels = [], []
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or fields[0] not in _LABEL_IDS:
            raise DataError(
                "expected '<label> <sentence>' with label 0 or 1, got "
                f"{shorten(line)!r}",
                path=path,
                line_number=line_number,
            )
        labels.append(_LABEL_IDS[fields[0]])
        sentences.append(unescape_brackets(fields[1].split()))
    return sentences, labels


def _parse_glue_tsv(
    path: str | os.PathLike, lines: list[str]
) -> tuple[list[list[str]], list[int]]:
    """Parses a GLUE tsv: a header line, then tab-separated rows."""
    header = lines[0].split("\t")
    if "label" not in header:
        # GLUE's test.tsv (`index<TAB>sentence`) has no labels to train on.
        raise DataError(
            f"the header {lines[0]!r} has no 'label' column; expected "
            "'sentence<TAB>label' as in GLUE's SST-2 train.tsv and dev.tsv",
            path=path,
            line_number=1,
        )
    sentence_column, label_column = header.index("sentence"), header.index("label")
    sentences, labels = [], []
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if (
            len(fields) != len(header)
            or fields[label_column] not in _LABEL_IDS
            or not fields[sentence_column].strip()
        ):
            raise DataError(
                f"expected {len(header)} tab-separated columns "
                f"({', '.join(header)}) with label 0 or 1 and a sentence, got "
                f"{shorten(line)!r}",
                path=path,
                line_number=line_number,
            )
        labels.append(_LABEL_IDS[fields[label_column]])
        sentences.append(unescape_brackets(fields[sentence_column].split()))
    return sentences, labels
