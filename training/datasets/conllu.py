"""CoNLL-U files (Universal Dependencies) read as part-of-speech tagging data.

CoNLL-U (https://universaldependencies.org/format.html) has one word per line
in ten tab-separated columns, sentences separated by blank lines, and `#`
comment lines. Tagging works on syntactic words, so two kinds of line are
skipped:

- multiword tokens, id `3-4` (`don't` over the words `do` and `n't`), which
  have no tag of their own; their words follow on lines of their own;
- empty nodes, id `5.1`, which stand for elided words of the enhanced graph
  and are not in the text.
"""

from __future__ import annotations

import os

from training.datasets.records import TaggingData
from training.datasets.text import read_lines, shorten
from training.errors import DataError

# 0-based columns: ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC.
_NUM_COLUMNS = 10
_ID_COLUMN = 0
_FORM_COLUMN = 1
TAG_COLUMNS = {"upos": 3, "xpos": 4}


def read_conllu_file(path: str | os.PathLike, tag_column: str = "upos") -> TaggingData:
    """Reads the words and tags of every sentence in a CoNLL-U file.

    Args:
        path: The file, e.g. `en_ewt-ud-train.conllu`.
        tag_column: `"upos"` (column 4, the 17 universal tags) or `"xpos"`
            (column 5, the treebank's own tags, Penn Treebank tags for EWT).

    Returns:
        One sentence per CoNLL-U sentence, with its words and their tags.

    Raises:
        ValueError: If `tag_column` is not `"upos"` or `"xpos"`.
        DataError: If the file cannot be read or a word line does not have
            ten columns with an integer id (the message gives `path:line`).
    """
    tag_index = _tag_index(tag_column)
    sentences: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    word_tags: list[str] = []
    for line_number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            if words:
                sentences.append(words)
                tags.append(word_tags)
                words, word_tags = [], []
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != _NUM_COLUMNS:
            raise DataError(
                f"expected {_NUM_COLUMNS} tab-separated columns, got "
                f"{len(fields)}: {shorten(line)!r}",
                path=path,
                line_number=line_number,
            )
        word_id = fields[_ID_COLUMN]
        if "-" in word_id or "." in word_id:
            continue  # A multiword token or an empty node, see the module doc.
        if not word_id.isdigit():
            raise DataError(
                f"expected a word id such as 7, 3-4 or 5.1, got {word_id!r}",
                path=path,
                line_number=line_number,
            )
        words.append(fields[_FORM_COLUMN])
        word_tags.append(fields[tag_index])
    if words:  # The last sentence of a file without a final blank line.
        sentences.append(words)
        tags.append(word_tags)
    return TaggingData(sentences=sentences, tags=tags, source=os.fspath(path))


def _tag_index(tag_column: str) -> int:
    """Returns the column index of `tag_column`, or raises ValueError."""
    try:
        return TAG_COLUMNS[tag_column]
    except KeyError:
        raise ValueError(
            f"tag_column must be one of {', '.join(TAG_COLUMNS)}, got {tag_column!r}"
        ) from None
