"""`load_split`: one entry point from a task, a source and a split to a record.

A source is a local file, a local directory laid out as the corpus is
distributed, or a tensorflow-datasets name. Local paths win: a directory
called `glue/sst2` next to the working directory is read as files.

Directory layouts, by task (the first name found is used):

    classifier      train  stsa.binary.train, glue_train.tsv, train.tsv
                    dev    stsa.binary.dev, dev.tsv
                    test   stsa.binary.test, test.tsv
    tagger          train  *-ud-train.conllu
                    dev    *-ud-dev.conllu
                    test   *-ud-test.conllu
    language_model  train  ptb.train.txt, train.txt
                    dev    ptb.valid.txt, valid.txt
                    test   ptb.test.txt, test.txt

A directory with a sentiment corpus or a treebank and no language-model file
gives a language model its sentences as text (labels and tags dropped; dev from
the dev sentences), for pretraining on the task's own text (`--init_from`).

A language-model directory without a dev file (tiny-shakespeare comes as one
`train.txt`) has its dev split cut from the end of the train file (see
`training.datasets.text.hold_out_tail`). A language-model file given directly
is treated as such a directory unless a dev file sits beside it (`ptb.train.txt`
next to `ptb.valid.txt` is read whole) or it is one; `valid_fraction=0` reads
any file whole.
"""

from __future__ import annotations

import glob
import logging
import os
import time

from training.datasets.conllu import TAG_COLUMNS, read_conllu_file
from training.datasets.records import (
    LEVELS,
    TASKS,
    ClassificationData,
    LanguageModelData,
    TaggingData,
)
from training.datasets.sst import read_sst_file
from training.datasets.text import EOS_TOKEN, hold_out_tail, read_language_model_file
from training.datasets.tfds_source import load_tfds_split
from training.errors import DataError

logger = logging.getLogger(__name__)

# Every accepted split name, mapped to the one the loaders use.
SPLIT_ALIASES = {
    "train": "train",
    "dev": "dev",
    "valid": "dev",
    "validation": "dev",
    "test": "test",
}

# File names (glob patterns for UD, whose files start with the treebank name)
# looked for in a directory, by task and split, in order of preference.
_SPLIT_FILES = {
    "classifier": {
        "train": ("stsa.binary.train", "glue_train.tsv", "train.tsv"),
        "dev": ("stsa.binary.dev", "dev.tsv"),
        "test": ("stsa.binary.test", "test.tsv"),
    },
    "tagger": {
        "train": ("*-ud-train.conllu",),
        "dev": ("*-ud-dev.conllu",),
        "test": ("*-ud-test.conllu",),
    },
    "language_model": {
        "train": ("ptb.train.txt", "train.txt"),
        "dev": ("ptb.valid.txt", "valid.txt"),
        "test": ("ptb.test.txt", "test.txt"),
    },
}


def load_split(
    task: str,
    source: str | os.PathLike,
    split: str,
    *,
    level: str = "word",
    tag_column: str = "upos",
    valid_fraction: float = 0.1,
    valid_start: str | None = None,
    data_dir: str | None = None,
    download: bool = False,
) -> ClassificationData | TaggingData | LanguageModelData:
    """Loads one split of a corpus for a task.

    Args:
        task: One of `TASKS`: `"language_model"`, `"classifier"`, `"tagger"`.
        source: A local file (read whole whatever `split` says, except for
            language-model text, below), a local directory (the split's file
            is found by its standard name, see the module doc), or a
            tensorflow-datasets name such as `glue/sst2`.
        split: `"train"`, `"dev"` (also `"valid"`, `"validation"`) or `"test"`.
        level: For the language model, `"word"` (whitespace tokens plus
            `"<eos>"` per line) or `"char"`.
        tag_column: For the tagger, `"upos"` or `"xpos"`.
        valid_fraction: For language-model text without a dev file (a
            directory with only `train.txt`, or a file with no
            `valid.txt`/`ptb.valid.txt` beside it): the share of tokens at the
            end that forms dev; train is the rest. For `"test"` a file is read
            whole. 0 turns the cut off: a directory then has train only, and a
            file is read whole for every split.
        valid_start: With such a cut, a regular expression for the line dev
            starts with: the cut moves forward to the first line that matches
            (`training.datasets.text.hold_out_tail`). Not used for
            tensorflow-datasets names, whose splits are their own.
        data_dir: Where tensorflow-datasets keeps prepared data.
        download: For a tfds name: let tfds download missing data. Off by
            default so training never starts a download by surprise.

    Returns:
        A `ClassificationData`, `TaggingData` or `LanguageModelData` by task.

    Raises:
        DataError: For an unknown task, split, level or tag column, a missing
            path, a directory without the split's file, a malformed line, an
            empty split, or a tfds name that is unknown or not downloaded.
    """
    split = _check_arguments(task, split, level, tag_column, valid_fraction)
    source = os.path.expanduser(os.fspath(source))
    started = time.perf_counter()
    if os.path.exists(source):
        data = _load_local(task, source, split, level, tag_column, valid_fraction, valid_start)
    elif os.path.isabs(source) or source.startswith("."):
        raise DataError("no such file or directory", path=source)
    else:
        data = load_tfds_split(
            task,
            source,
            split,
            level=level,
            tag_column=tag_column,
            data_dir=data_dir,
            download=download,
        )
    if len(data) == 0:
        raise DataError(f"{data.source}: the {split} split is empty")
    logger.info(
        "loaded %s %s split from %s: %s in %.2f s",
        task,
        split,
        data.source,
        _describe(data),
        time.perf_counter() - started,
    )
    return data


def _check_arguments(
    task: str, split: str, level: str, tag_column: str, valid_fraction: float
) -> str:
    """Validates the options of `load_split`; returns the canonical split name."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if split not in SPLIT_ALIASES:
        raise DataError(
            f"unknown split {split!r}; valid splits: {', '.join(SPLIT_ALIASES)}"
        )
    if level not in LEVELS:
        raise DataError(f"unknown level {level!r}; valid levels: {', '.join(LEVELS)}")
    if tag_column not in TAG_COLUMNS:
        raise DataError(
            f"unknown tag_column {tag_column!r}; valid: {', '.join(TAG_COLUMNS)}"
        )
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    return SPLIT_ALIASES[split]


def _load_local(
    task: str,
    source: str,
    split: str,
    level: str,
    tag_column: str,
    valid_fraction: float,
    valid_start: str | None = None,
) -> ClassificationData | TaggingData | LanguageModelData:
    """Loads a split from a local file or directory."""
    if task == "language_model":
        return _load_local_text(source, split, level, valid_fraction, valid_start)
    if os.path.isdir(source):
        path = _find_split_file(task, source, split)
        if path is None:
            raise _no_split_file(task, source, split, _SPLIT_FILES[task][split])
    else:
        path = source
    if task == "classifier":
        return read_sst_file(path)
    return read_conllu_file(path, tag_column)


def _load_local_text(
    source: str, split: str, level: str, valid_fraction: float, valid_start: str | None = None
) -> LanguageModelData:
    """Loads a language-model split, cutting dev from train where there is none.

    A directory without a dev file, or a file with no dev file beside it
    (and not itself named as a dev or test file), gives train = the first
    `1 - valid_fraction` of the text and dev = the rest. A file with
    `valid_fraction` 0 is read whole for every split, so a caller with its own
    dev file under any name can pass both files directly.
    """
    task = "language_model"
    if os.path.isdir(source) and _find_split_file(task, source, "train") is None:
        for corpus in ("classifier", "tagger"):
            if _find_split_file(corpus, source, "train") is not None:
                return _sentences_as_text(corpus, source, split, level)
    if os.path.isdir(source):
        carve = split != "test" and _find_split_file(task, source, "dev") is None
        path = _find_split_file(task, source, "train" if carve else split)
        if path is None:
            looked_for = _SPLIT_FILES[task][split] + (_SPLIT_FILES[task]["train"] if carve else ())
            raise _no_split_file(task, source, split, looked_for)
        if carve and split == "dev" and valid_fraction == 0.0:
            raise DataError(
                f"no dev file, and valid_fraction is 0 so none is cut from {path}",
                path=source,
            )
    else:
        path = source
        carve = split != "test" and valid_fraction > 0.0 and not _has_dev_file(source)
    data = read_language_model_file(path, level)
    if carve and valid_fraction > 0.0:
        return hold_out_tail(data, split, valid_fraction, valid_start)
    return data


def _sentences_as_text(corpus: str, directory: str, split: str, level: str) -> LanguageModelData:
    """A classifier's or tagger's sentences, labels and tags dropped, as language-model text.

    Dai & Le (2015) pretrain on the task's own text: a directory with a
    sentiment corpus (`stsa.binary.train` or the GLUE file) or a treebank
    (`*-ud-train.conllu`) and no language-model file gives its sentences, one
    per line, read as the classifier or tagger reads them (brackets unescaped,
    syntactic words), and the dev file's for dev.
    """
    path = _find_split_file(corpus, directory, split)
    if path is None:
        raise _no_split_file("language_model", directory, split, _SPLIT_FILES[corpus][split])
    sentences = read_sst_file(path).sentences if corpus == "classifier" else read_conllu_file(path).sentences
    if level == "char":
        tokens = list("".join(" ".join(words) + "\n" for words in sentences))
    else:
        tokens = [token for words in sentences for token in (*words, EOS_TOKEN)]
    return LanguageModelData(tokens=tokens, level=level, source=os.fspath(path))


def _has_dev_file(path: str) -> bool:
    """Tells whether a language-model file is, or sits beside, a dev file."""
    directory, name = os.path.split(os.path.abspath(path))
    standard = _SPLIT_FILES["language_model"]
    if name in standard["dev"] or name in standard["test"]:
        return True
    return _find_split_file("language_model", directory, "dev") is not None


def _no_split_file(
    task: str, directory: str, split: str, looked_for: tuple[str, ...]
) -> DataError:
    """Returns the error for a directory that lacks the split's file."""
    return DataError(
        f"no {split} file for the {task} task in this directory; "
        f"looked for: {', '.join(looked_for)}",
        path=directory,
    )


def _find_split_file(task: str, directory: str, split: str) -> str | None:
    """Returns the file for `split` in `directory`, or None if there is none.

    Raises:
        DataError: If a pattern matches more than one file, e.g. two UD
            treebanks in one directory.
    """
    for pattern in _SPLIT_FILES[task][split]:
        matches = sorted(
            path
            for path in glob.glob(os.path.join(glob.escape(directory), pattern))
            if os.path.isfile(path)
        )
        if len(matches) > 1:
            names = ", ".join(os.path.basename(match) for match in matches)
            raise DataError(
                f"more than one {split} file matches {pattern!r}: {names}; "
                "pass the file itself",
                path=directory,
            )
        if matches:
            return matches[0]
    return None


def _describe(data: ClassificationData | TaggingData | LanguageModelData) -> str:
    """Returns the size of a record in words, for the log."""
    if isinstance(data, LanguageModelData):
        unit = "characters" if data.level == "char" else "tokens"
        return f"{len(data):,} {unit}"
    if isinstance(data, TaggingData):
        return f"{len(data):,} sentences, {data.num_tokens:,} words"
    return f"{len(data):,} sentences"
