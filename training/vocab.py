"""Token and label vocabularies shared by training and export.

`Vocabulary` maps input tokens (words or characters) to ids with the two
reserved entries every zoo model relies on: id 0 is `<pad>`, so right-padded
batches can be masked, and id 1 is `<unk>`, so unseen tokens still have an id
(see docs/serving_contract.md). `LabelVocabulary` maps output classes or tags
to ids; it has no reserved entries because a model never predicts padding.

Both are saved as small UTF-8 JSON files so an export can turn them into lookup
tables without importing this package.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import Iterable, Sequence
from typing import TypeVar

from training.errors import DataError

logger = logging.getLogger(__name__)

PAD_TOKEN = "<pad>"
OOV_TOKEN = "<unk>"
PAD_ID = 0
OOV_ID = 1

# How many names an error message lists before it stops; a 10,000-word
# vocabulary in a message helps nobody.
_MAX_NAMES_IN_MESSAGE = 20

_Table = TypeVar("_Table", bound="_IdTable")


class _IdTable:
    """Distinct non-empty strings numbered from 0: what both vocabularies share.

    Subclasses set `_FILE_KEY`, the JSON key their file stores the list under,
    and `_ENTRY`, what an entry is called in messages.
    """

    _FILE_KEY = "entries"
    _ENTRY = "entry"

    def __init__(self, entries: Sequence[str]):
        entries = list(entries)
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            if not isinstance(entry, str) or not entry:
                raise ValueError(
                    f"{self._ENTRY} {index} must be a non-empty string, got {entry!r}"
                )
            if entry in seen:
                raise ValueError(
                    f"{self._ENTRY} {entry!r} appears more than once (again at {index})"
                )
            seen.add(entry)
        self._entries = entries
        self._ids = {entry: index for index, entry in enumerate(entries)}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry: object) -> bool:
        return entry in self._ids

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._entries == other._entries

    __hash__ = None  # Equal by content, and not meant as a dict key.

    def _entry(self, index: int) -> str:
        """Returns entry `index`, or raises ValueError if it is out of range."""
        index = int(index)
        # Negative ids would silently wrap around in list indexing.
        if not 0 <= index < len(self._entries):
            raise ValueError(
                f"id {index} is outside the vocabulary of size {len(self._entries)}"
            )
        return self._entries[index]

    def save(self, path: str | os.PathLike) -> None:
        """Writes the entries as UTF-8 JSON, one per line for readable diffs."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump({self._FILE_KEY: self._entries}, file, ensure_ascii=False, indent=0)
            file.write("\n")

    @classmethod
    def load(cls: type[_Table], path: str | os.PathLike) -> _Table:
        """Reads a file written by `save`.

        Raises:
            DataError: If the file is missing, not JSON of the right shape, or
                its list is not valid for this class.
        """
        try:
            with open(path, encoding="utf-8") as file:
                content = json.load(file)
        except FileNotFoundError:
            raise DataError("no such file", path=path) from None
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read: {error}", path=path) from None
        except json.JSONDecodeError as error:
            raise DataError(
                f"not valid JSON: {error.msg}", path=path, line_number=error.lineno
            ) from None
        if not isinstance(content, dict) or not isinstance(content.get(cls._FILE_KEY), list):
            raise DataError(
                f'expected a JSON object {{"{cls._FILE_KEY}": [...]}}', path=path
            )
        try:
            return cls(content[cls._FILE_KEY])
        except ValueError as error:
            raise DataError(str(error), path=path) from None


class Vocabulary(_IdTable):
    """A fixed map between tokens and integer ids.

    `tokens[0]` is `PAD_TOKEN` and `tokens[1]` is `OOV_TOKEN`; the rest are
    corpus tokens, most frequent first when made by `build`. Encoding an
    unknown token gives `OOV_ID` rather than failing, because text at serving
    time always holds words the training corpus did not.

    Args:
        tokens: Every entry in id order, starting with `PAD_TOKEN`, `OOV_TOKEN`.

    Raises:
        ValueError: If the first two entries are not the pad and unknown
            tokens, an entry repeats, or an entry is not a non-empty string
            (the empty string pads string inputs at serving time, so it cannot
            also be a token).

    Example:

    >>> vocab = Vocabulary.build([["a", "b", "a"]])
    >>> vocab.tokens
    ['<pad>', '<unk>', 'a', 'b']
    >>> vocab.encode(["a", "zebra"])
    [2, 1]
    """

    _FILE_KEY = "tokens"
    _ENTRY = "token"

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tokens[:2] != [PAD_TOKEN, OOV_TOKEN]:
            raise ValueError(
                f"a vocabulary must start with {PAD_TOKEN!r} (id {PAD_ID}) and "
                f"{OOV_TOKEN!r} (id {OOV_ID}), got {tokens[:2]!r}"
            )
        super().__init__(tokens)

    @classmethod
    def build(
        cls,
        sequences: Iterable[Sequence[str]],
        min_count: int = 1,
        max_size: int | None = None,
    ) -> Vocabulary:
        """Builds the vocabulary of a corpus, most frequent tokens first.

        Build it from the training split only: tokens seen only in dev or test
        must map to `<unk>`, as they will for real users.

        The order is pad, unk, then descending count with ties broken
        alphabetically, so the same corpus always gives the same ids. A corpus
        token equal to `<unk>` (PTB writes rare words that way) is the
        reserved entry, not a second one.

        Args:
            sequences: Token sequences, e.g. sentences, or one long token list
                wrapped in a list.
            min_count: Tokens seen fewer times than this are left out.
            max_size: The most entries, counting pad and unk; the least
                frequent tokens beyond it are left out.

        Returns:
            The vocabulary.

        Raises:
            ValueError: If `min_count` < 1 or `max_size` < 2.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        if max_size is not None and max_size < 2:
            raise ValueError(
                f"max_size counts {PAD_TOKEN!r} and {OOV_TOKEN!r}, so it must be "
                f"at least 2, got {max_size}"
            )
        counts: collections.Counter[str] = collections.Counter()
        for sequence in sequences:
            counts.update(sequence)
        if PAD_TOKEN in counts:
            # The model masks id 0, so these tokens will be invisible to it.
            logger.warning(
                "the corpus contains %d %r tokens; they encode to the padding "
                "id %d and are masked out",
                counts[PAD_TOKEN],
                PAD_TOKEN,
                PAD_ID,
            )
        for reserved in (PAD_TOKEN, OOV_TOKEN):
            counts.pop(reserved, None)
        # An empty string cannot be a token (it pads string inputs); a
        # whitespace tokenizer never makes one, but a caller's list might.
        counts.pop("", None)
        ranked = sorted(
            (token for token, count in counts.items() if count >= min_count),
            key=lambda token: (-counts[token], token),
        )
        if max_size is not None:
            ranked = ranked[: max_size - 2]
        return cls([PAD_TOKEN, OOV_TOKEN, *ranked])

    @property
    def tokens(self) -> list[str]:
        """Every entry in id order (a copy)."""
        return list(self._entries)

    def __repr__(self) -> str:
        preview = ", ".join(repr(token) for token in self._entries[:5])
        more = ", ..." if len(self._entries) > 5 else ""
        return f"Vocabulary(size={len(self)}, tokens=[{preview}{more}])"

    def token_to_id(self, token: str) -> int:
        """Returns the id of `token`, or `OOV_ID` if it is not in the vocabulary."""
        return self._ids.get(token, OOV_ID)

    def id_to_token(self, index: int) -> str:
        """Returns the token with id `index`.

        Raises:
            ValueError: If `index` is not in `[0, len(self))`.
        """
        return self._entry(index)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Returns the id of each token; unknown tokens become `OOV_ID`."""
        ids = self._ids
        return [ids.get(token, OOV_ID) for token in tokens]

    def decode(self, ids: Sequence[int], skip_pad: bool = True) -> list[str]:
        """Returns the token of each id, by default leaving out padding.

        Args:
            ids: Token ids (Python or NumPy integers).
            skip_pad: Leave out `PAD_ID`, so a right-padded row decodes to just
                its tokens.

        Raises:
            ValueError: If an id is outside the vocabulary.
        """
        return [
            self._entry(index) for index in ids if not (skip_pad and index == PAD_ID)
        ]


class LabelVocabulary(_IdTable):
    """A fixed map between class or tag names and ids `0 .. len - 1`.

    Unlike `Vocabulary` there is no pad or unknown entry: every id is a real
    class, e.g. `["negative", "positive"]` or the 17 UPOS tags, in the order
    given. Padded tag positions in a batch reuse id 0 and are switched off
    with a zero sample weight instead.

    Args:
        names: The names in id order.

    Raises:
        ValueError: If `names` is empty, a name repeats, or a name is not a
            non-empty string.
    """

    _FILE_KEY = "names"
    _ENTRY = "name"

    def __init__(self, names: Sequence[str]):
        names = list(names)
        if not names:
            raise ValueError("a label vocabulary needs at least one name")
        super().__init__(names)

    @classmethod
    def build(
        cls, sequences_or_labels: Iterable[str] | Iterable[Sequence[str]]
    ) -> LabelVocabulary:
        """Builds the sorted set of names seen in labels or tag sequences.

        Args:
            sequences_or_labels: Either one label per example
                (`["positive", "negative", ...]`) or one tag sequence per
                sentence (`[["DET", "NOUN"], ...]`).

        Returns:
            The vocabulary, names sorted so the ids do not depend on the order
            of the corpus.
        """
        names: set[str] = set()
        for item in sequences_or_labels:
            if isinstance(item, str):
                names.add(item)
            else:
                names.update(item)
        return cls(sorted(names))

    @property
    def names(self) -> list[str]:
        """Every name in id order (a copy)."""
        return list(self._entries)

    def __repr__(self) -> str:
        return f"LabelVocabulary({self._entries!r})"

    def encode(self, names: Sequence[str]) -> list[int]:
        """Returns the id of each name.

        Raises:
            DataError: If a name is not in the vocabulary, e.g. a dev tag never
                seen in training.
        """
        ids = self._ids
        try:
            return [ids[name] for name in names]
        except KeyError as error:
            known = ", ".join(self._entries[:_MAX_NAMES_IN_MESSAGE])
            more = ", ..." if len(self._entries) > _MAX_NAMES_IN_MESSAGE else ""
            raise DataError(
                f"unknown label {error.args[0]!r}; the {len(self._entries)} known "
                f"labels are: {known}{more}"
            ) from None

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Returns the name of each id.

        Raises:
            ValueError: If an id is outside `[0, len(self))`.
        """
        return [self._entry(index) for index in ids]
