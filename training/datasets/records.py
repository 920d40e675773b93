"""The in-memory records every loader returns, whatever the source.

A local file and a tensorflow-datasets name for the same corpus give the same
record type, so everything after loading (vocabularies, tf.data pipelines,
metrics) has one code path per task. Each record checks on creation that its
parallel lists line up and raises `DataError` if not, so a corrupt source is
caught where it is read, not as a shape error deep in training.
"""

from __future__ import annotations

import dataclasses

from training.errors import DataError

TASKS = ("language_model", "classifier", "tagger")
LEVELS = ("word", "char")


@dataclasses.dataclass(frozen=True)
class ClassificationData:
    """Sentences with one class each, e.g. SST-2 sentiment.

    Attributes:
        sentences: Each sentence as a list of tokens.
        labels: The class id of each sentence, an index into `label_names`.
        label_names: The class names in id order, e.g.
            `["negative", "positive"]`.
        source: Where the data came from (a path or a tfds name and split), for
            logs and model cards.
    """

    sentences: list[list[str]]
    labels: list[int]
    label_names: list[str]
    source: str

    def __post_init__(self):
        if len(self.sentences) != len(self.labels):
            raise DataError(
                f"{self.source}: {len(self.sentences)} sentences but "
                f"{len(self.labels)} labels"
            )
        for index, label in enumerate(self.labels):
            if not 0 <= label < len(self.label_names):
                raise DataError(
                    f"{self.source}: example {index} has label {label}, outside "
                    f"the {len(self.label_names)} classes {self.label_names}"
                )

    def __len__(self) -> int:
        return len(self.sentences)


@dataclasses.dataclass(frozen=True)
class TaggingData:
    """Sentences with one tag per token, e.g. UD part-of-speech tags.

    Attributes:
        sentences: Each sentence as a list of tokens (syntactic words).
        tags: The tag names of each sentence, one per token.
        source: Where the data came from, for logs and model cards.
    """

    sentences: list[list[str]]
    tags: list[list[str]]
    source: str

    def __post_init__(self):
        if len(self.sentences) != len(self.tags):
            raise DataError(
                f"{self.source}: {len(self.sentences)} sentences but "
                f"{len(self.tags)} tag sequences"
            )
        for index, (tokens, tags) in enumerate(zip(self.sentences, self.tags)):
            if len(tokens) != len(tags):
                raise DataError(
                    f"{self.source}: sentence {index} has {len(tokens)} tokens "
                    f"but {len(tags)} tags"
                )

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def num_tokens(self) -> int:
        """The number of tokens over all sentences."""
        return sum(len(tokens) for tokens in self.sentences)


@dataclasses.dataclass(frozen=True)
class LanguageModelData:
    """One long token stream for language modelling.

    Attributes:
        tokens: The corpus as one list: words with `"<eos>"` after each line
            (`level="word"`), or single characters including newlines
            (`level="char"`).
        level: `"word"` or `"char"`.
        source: Where the data came from, for logs and model cards.
    """

    tokens: list[str]
    level: str
    source: str

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(
                f"level must be one of {', '.join(LEVELS)}, got {self.level!r}"
            )

    def __len__(self) -> int:
        return len(self.tokens)
