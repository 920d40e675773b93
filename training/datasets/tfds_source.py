"""Loading splits from tensorflow-datasets into the zoo's records.

Users with internet access can name a tfds dataset instead of a local path:
`glue/sst2` for sentiment, `universal_dependencies/en_ewt` for tagging,
`tiny_shakespeare` for a character language model, or any other tfds dataset
whose features fit the task:

- classifier: a text feature `sentence` (or `text`) and a `ClassLabel`
  feature `label`;
- tagger: a sequence feature `tokens` and a sequence feature named by
  `tag_column` (`upos`, `xpos`), of class labels or strings;
- language model: a text feature `text`; the examples are joined with
  newlines and tokenized like a local text file.

tensorflow_datasets is imported inside the functions because importing it
costs time and most runs read local files.
"""

from __future__ import annotations

from typing import Any

from training.datasets.records import (
    ClassificationData,
    LanguageModelData,
    TaggingData,
)
from training.datasets.sst import unescape_brackets
from training.datasets.text import tokens_from_text
from training.errors import DataError

# What tfds builders call the development split, in order of preference.
_DEV_SPLIT_NAMES = ("validation", "dev", "valid")

# Builders whose development split is called "dev". Needed only when tfds does
# not know a builder's splits yet (the data is not prepared, or under
# tfds.testing.mock_data); otherwise the split list is read from the builder.
_BUILDERS_WITH_DEV_SPLIT = ("universal_dependencies", "xtreme_pos")

# The UPOS value of a CoNLL-U multiword-token line, and the HEAD value tfds
# stores (`str(None)`) for lines without a head: multiword tokens and empty
# nodes. Words always have a head in UD, so these mark the lines that
# `training.datasets.conllu` skips in local files.
_NO_TAG = "_"
_NO_HEAD = ("None", "_")


def load_tfds_split(
    task: str,
    name: str,
    split: str,
    *,
    level: str = "word",
    tag_column: str = "upos",
    data_dir: str | None = None,
    download: bool = False,
) -> ClassificationData | TaggingData | LanguageModelData:
    """Loads one split of a tensorflow-datasets dataset as a zoo record.

    Args:
        task: `"classifier"`, `"tagger"` or `"language_model"`.
        name: A name `tfds.builder` knows, with an optional config, e.g.
            `glue/sst2`.
        split: `"train"`, `"dev"` or `"test"`; `"dev"` is mapped to the
            dataset's own name for it (`validation` for most, `dev` for UD).
        level: For the language model, `"word"` or `"char"`.
        tag_column: For the tagger, the tag feature to read.
        data_dir: Where tfds keeps prepared data; `None` for its default.
        download: Let tfds download and prepare the data if it is not there.
            Off by default so that a training run never starts a large
            download, or hangs on a machine without internet access.

    Returns:
        The split as the task's record.

    Raises:
        DataError: If `name` is not a tfds dataset, its data is not prepared,
            it has no such split, or its features do not fit `task`.
    """
    import tensorflow_datasets as tfds

    builder = _get_builder(name, data_dir)
    tfds_split = _tfds_split_name(builder, split)
    features = builder.info.features
    source = f"tfds:{name}:{tfds_split}"
    _check_features(task, name, features, tag_column)
    try:
        dataset = tfds.load(
            name, split=tfds_split, data_dir=data_dir, download=download
        )
    except AssertionError as error:
        # tfds asserts that prepared data exists when download=False.
        raise DataError(
            f"the tensorflow-datasets dataset {name!r} is not downloaded "
            f"({_first_line(error)}). Prepare it where there is internet "
            f"access (`tfds build {name}`, or `download=True`), or pass the "
            "path of a local copy of the corpus files instead"
        ) from None
    except OSError as error:
        # requests' ConnectionError and tfds' download errors are OSErrors.
        raise DataError(
            f"could not download the tensorflow-datasets dataset {name!r} "
            f"({_first_line(error)}). Prepare it where there is internet "
            f"access (`tfds build {name}`) and pass --data_dir, or pass the "
            "path of a local copy of the corpus files instead"
        ) from None
    except ValueError as error:
        available = ", ".join(builder.info.splits.keys()) or "unknown"
        raise DataError(
            f"the tensorflow-datasets dataset {name!r} has no split "
            f"{tfds_split!r} (its splits: {available}): {_first_line(error)}"
        ) from None
    examples = tfds.as_numpy(dataset)
    if task == "classifier":
        return _classification_data(examples, features, source)
    if task == "tagger":
        return _tagging_data(examples, features, tag_column, source)
    return _language_model_data(examples, level, source)


def _get_builder(name: str, data_dir: str | None) -> Any:
    """Returns `tfds.builder(name)`, or raises DataError if tfds has no such name."""
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except (tfds.core.DatasetNotFoundError, ValueError, AssertionError) as error:
        # DatasetNotFoundError lists every tfds dataset; its first line says enough.
        raise DataError(
            f"{name!r} is neither a local path (no such file or directory) "
            f"nor a known tensorflow-datasets dataset: {_first_line(error)}"
        ) from None


def _tfds_split_name(builder: Any, split: str) -> str:
    """Maps the zoo's split name to the one `builder` uses."""
    if split != "dev":
        return split
    known = set(builder.info.splits.keys())
    for candidate in _DEV_SPLIT_NAMES:
        if candidate in known:
            return candidate
    return "dev" if builder.name in _BUILDERS_WITH_DEV_SPLIT else "validation"


def _check_features(task: str, name: str, features: Any, tag_column: str) -> None:
    """Raises DataError if the dataset lacks the features `task` reads."""
    if task == "classifier":
        needed = [_text_feature_name(features) or "sentence", "label"]
    elif task == "tagger":
        needed = ["tokens", tag_column]
    else:
        needed = ["text"]
    missing = [feature for feature in needed if feature not in features]
    if missing:
        raise DataError(
            f"the tensorflow-datasets dataset {name!r} cannot be read for the "
            f"{task} task: it has no feature {', '.join(map(repr, missing))} "
            f"(its features: {', '.join(features.keys())})"
        )


def _text_feature_name(features: Any) -> str | None:
    """Returns the sentence feature of a classification dataset, if any."""
    for candidate in ("sentence", "text"):
        if candidate in features:
            return candidate
    return None


def _classification_data(
    examples: Any, features: Any, source: str
) -> ClassificationData:
    """Converts examples with a sentence and a class label."""
    import tensorflow_datasets as tfds

    label_feature = features["label"]
    if not isinstance(label_feature, tfds.features.ClassLabel):
        raise DataError(
            f"{source}: the 'label' feature is {type(label_feature).__name__}, "
            "expected a ClassLabel"
        )
    text_feature = _text_feature_name(features)
    sentences, labels = [], []
    for index, example in enumerate(examples):
        label = int(example["label"])
        if label < 0:
            # GLUE's test splits hide their labels as -1.
            raise DataError(
                f"{source}: example {index} has label {label}; this split has "
                "no labels (GLUE keeps its test labels private), use train or dev"
            )
        sentences.append(unescape_brackets(_decode(example[text_feature]).split()))
        labels.append(label)
    return ClassificationData(
        sentences=sentences,
        labels=labels,
        label_names=list(label_feature.names),
        source=source,
    )


def _tagging_data(
    examples: Any, features: Any, tag_column: str, source: str
) -> TaggingData:
    """Converts CoNLL-U examples, keeping only syntactic words.

    tfds keeps multiword-token and empty-node lines in its sequences; they are
    dropped here (see `_NO_TAG`, `_NO_HEAD`) so that a tfds split and the
    local file give the same words.
    """
    tag_names = _class_names(features[tag_column])
    upos_names = _class_names(features["upos"]) if "upos" in features else None
    sentences, tags = [], []
    for index, example in enumerate(examples):
        tokens = [_decode(token) for token in example["tokens"]]
        tag_values = _tag_strings(example[tag_column], tag_names)
        columns = {"tokens": tokens, tag_column: tag_values}
        if upos_names is not None:
            columns["upos"] = _tag_strings(example["upos"], upos_names)
        if "head" in example:
            columns["head"] = [_decode(head) for head in example["head"]]
        lengths = {column: len(values) for column, values in columns.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(
                f"{source}: example {index} has sequences of different lengths "
                f"{lengths}; expected one entry per word in each"
            )
        # Without a upos feature, the tag column itself marks multiword tokens.
        keep = [
            position
            for position in range(len(tokens))
            if _is_syntactic_word(
                columns.get("upos", tag_values)[position],
                columns["head"][position] if "head" in columns else None,
            )
        ]
        if not keep:
            continue
        sentences.append([tokens[position] for position in keep])
        # tfds writes a missing XPOS as str(None); local files write "_".
        tags.append(
            [
                _NO_TAG if tag_values[position] == "None" else tag_values[position]
                for position in keep
            ]
        )
    return TaggingData(sentences=sentences, tags=tags, source=source)


def _is_syntactic_word(upos: str, head: str | None) -> bool:
    """Tells words from multiword tokens and empty nodes in a tfds UD example."""
    return upos != _NO_TAG and (head is None or head not in _NO_HEAD)


def _language_model_data(
    examples: Any, level: str, source: str
) -> LanguageModelData:
    """Joins the `text` of every example, one example per line, and tokenizes."""
    text = "\n".join(_decode(example["text"]) for example in examples)
    return LanguageModelData(
        tokens=tokens_from_text(text, level), level=level, source=source
    )


def _class_names(feature: Any) -> list[str] | None:
    """Returns the names of a (sequence of) ClassLabel feature, else None."""
    import tensorflow_datasets as tfds

    inner = getattr(feature, "feature", feature)  # Unwrap Sequence(...).
    if isinstance(inner, tfds.features.ClassLabel):
        return list(inner.names)
    return None


def _tag_strings(values: Any, class_names: list[str] | None) -> list[str]:
    """Turns a tag sequence (class ids or byte strings) into tag names."""
    if class_names is not None:
        return [class_names[int(value)] for value in values]
    return [_decode(value) for value in values]


def _decode(value: bytes | str) -> str:
    """Returns a tfds text value as str (tfds.as_numpy gives UTF-8 bytes)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _first_line(error: BaseException) -> str:
    """Returns the first line of an exception message."""
    message = str(error).strip()
    return message.splitlines()[0] if message else type(error).__name__
