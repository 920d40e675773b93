"""Tests for training.datasets: file formats, directory layouts, tfds, batching.

Every fixture is a few lines written to tmp_path, so each test states the
exact records it expects. tfds code paths run under tfds.testing.mock_data,
which replaces downloads with generated examples.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from training.datasets import (
    TASKS,
    ClassificationData,
    LanguageModelData,
    TaggingData,
    classification_dataset,
    load_split,
    tagging_dataset,
)
from training.datasets.conllu import read_conllu_file
from training.datasets.sst import read_sst_file
from training.datasets.text import read_language_model_file
from training.errors import DataError
from training.vocab import LabelVocabulary, Vocabulary


def write(directory, name: str, text: str) -> str:
    """Writes a UTF-8 fixture file and returns its path."""
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8", newline="") as file:
        file.write(text)
    return path


STSA_TEXT = "1 a gripping , funny film\n0 dull .\n\n1 wow\n"
GLUE_TEXT = "sentence\tlabel\nhide new secretions \t0\nthe greatest musicians \t1\n"

# Sentence 1 has a multiword token (2-3) and an empty node (4.1), both skipped.
CONLLU_TEXT = (
    "# sent_id = 1\n"
    "# text = I don't know.\n"
    "1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t_\t_\n"
    "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_\n"
    "3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_\n"
    "4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_\n"
    "4.1\tknow\tknow\tVERB\tVB\t_\t_\t_\t4:conj\tCopyOf=4\n"
    "5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_\n"
    "\n"
    "# sent_id = 2\n"
    "1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_\n"
    "2\t!\t!\tPUNCT\t.\t_\t1\tpunct\t_\t_\n"
)


# === SST ===


def test_stsa_file_gives_exact_records(tmp_path):
    path = write(tmp_path, "stsa.binary.train", STSA_TEXT)
    data = read_sst_file(path)
    assert data == ClassificationData(
        sentences=[["a", "gripping", ",", "funny", "film"], ["dull", "."], ["wow"]],
        labels=[1, 0, 1],
        label_names=["negative", "positive"],
        source=path,
    )


@pytest.mark.parametrize("name, text", [
    ("stsa.binary.dev", "1 a film -lrb- at last -RRB- -lsb- x -rsb- -lcb- y -rcb- -lrb-ish\n"),
    ("dev.tsv", "sentence\tlabel\na film -lrb- at last -RRB- -lsb- x -rsb- -lcb- y -rcb- -lrb-ish\t1\n"),
])
def test_sst_readers_turn_bracket_escapes_into_brackets(tmp_path, name, text):
    # The stsa files write the Penn Treebank's escapes, GLUE's phrases the brackets.
    data = read_sst_file(write(tmp_path, name, text))
    assert data.sentences == [["a", "film", "(", "at", "last", ")", "[", "x", "]", "{", "y", "}", "-lrb-ish"]]


@pytest.mark.parametrize(
    "bad_line, line_number",
    [("2 bad label", 3), ("1", 3), ("positive great film", 3)],
)
def test_stsa_bad_line_names_file_and_line(tmp_path, bad_line, line_number):
    path = write(tmp_path, "stsa.binary.train", f"1 good\n0 bad\n{bad_line}\n1 more\n")
    with pytest.raises(DataError) as caught:
        read_sst_file(path)
    assert str(caught.value) == (
        f"{path}:{line_number}: expected '<label> <sentence>' with label 0 or 1, "
        f"got {bad_line!r}"
    )
    assert caught.value.path == path and caught.value.line_number == line_number


def test_glue_tsv_is_detected_by_its_header(tmp_path):
    # The name says nothing; the header line decides the layout.
    path = write(tmp_path, "phrases.txt", GLUE_TEXT)
    data = read_sst_file(path)
    assert data.sentences == [["hide", "new", "secretions"], ["the", "greatest", "musicians"]]
    assert data.labels == [0, 1]
    assert data.label_names == ["negative", "positive"]


def test_glue_tsv_columns_are_found_by_name(tmp_path):
    path = write(tmp_path, "dev.tsv", "label\tsentence\n1\tfine work\n")
    assert read_sst_file(path).sentences == [["fine", "work"]]
    assert read_sst_file(path).labels == [1]


def test_glue_tsv_bad_row_and_unlabelled_header(tmp_path):
    bad_row = write(tmp_path, "train.tsv", "sentence\tlabel\nok\t1\nno label here\n")
    with pytest.raises(DataError, match=rf"^{bad_row}:3: expected 2 tab-separated"):
        read_sst_file(bad_row)
    test_file = write(tmp_path, "test.tsv", "index\tsentence\n0\tsome phrase\n")
    with pytest.raises(DataError, match=rf"^{test_file}:1: the header .* no 'label' column"):
        read_sst_file(test_file)


# === CoNLL-U ===


def test_conllu_skips_comments_multiword_tokens_and_empty_nodes(tmp_path):
    # No blank line after the last sentence: it must still be read.
    path = write(tmp_path, "x-ud-train.conllu", CONLLU_TEXT)
    data = read_conllu_file(path)
    assert data == TaggingData(
        sentences=[["I", "do", "n't", "know", "."], ["Yes", "!"]],
        tags=[["PRON", "AUX", "PART", "VERB", "PUNCT"], ["INTJ", "PUNCT"]],
        source=path,
    )
    assert data.num_tokens == 7
    xpos = read_conllu_file(path, tag_column="xpos")
    assert xpos.tags == [["PRP", "VBP", "RB", "VB", "."], ["UH", "."]]


def test_conllu_wrong_column_count_names_file_and_line(tmp_path):
    lines = CONLLU_TEXT.split("\n")
    lines[6] = "4\tknow\tknow\tVERB\tVB\t_\t0\troot"  # Line 7: 8 columns.
    path = write(tmp_path, "bad.conllu", "\n".join(lines))
    with pytest.raises(DataError, match=rf"^{path}:7: expected 10 tab-separated columns, got 8"):
        read_conllu_file(path)


def test_conllu_non_integer_id_and_unknown_tag_column(tmp_path):
    path = write(tmp_path, "bad.conllu", "\n\nx\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n")
    with pytest.raises(DataError, match=rf"^{path}:3: expected a word id"):
        read_conllu_file(path)
    with pytest.raises(ValueError, match="upos, xpos"):
        read_conllu_file(path, tag_column="deprel")


# === Plain text ===


def test_word_level_text_ends_each_line_with_eos(tmp_path):
    path = write(tmp_path, "ptb.train.txt", " the cat <unk> \n\n a dog\n   \n")
    data = read_language_model_file(path, "word")
    assert data == LanguageModelData(
        tokens=["the", "cat", "<unk>", "<eos>", "a", "dog", "<eos>"], level="word", source=path
    )


def test_char_level_text_keeps_newlines_and_normalizes_line_ends(tmp_path):
    path = write(tmp_path, "train.txt", "Hi!\r\nYo\rX\n")
    assert read_language_model_file(path, "char").tokens == list("Hi!\nYo\nX\n")


def test_invalid_utf8_names_the_line(tmp_path):
    path = os.path.join(tmp_path, "ptb.train.txt")
    with open(path, "wb") as file:
        file.write(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(DataError, match=rf"^{path}:3: not valid UTF-8"):
        load_split("language_model", path, "test")


# === load_split: arguments and errors ===


def test_missing_path_is_reported(tmp_path):
    missing = os.path.join(tmp_path, "nowhere", "stsa.binary.train")
    with pytest.raises(DataError, match=f"^{missing}: no such file or directory$"):
        load_split("classifier", missing, "train")


def test_unknown_task_lists_the_valid_ones(tmp_path):
    with pytest.raises(DataError, match="unknown task 'parser'; valid tasks: "
                       "language_model, classifier, tagger"):
        load_split("parser", str(tmp_path), "train")
    assert TASKS == ("language_model", "classifier", "tagger")


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"split": "holdout"}, "unknown split 'holdout'"),
        ({"level": "byte"}, "unknown level 'byte'"),
        ({"tag_column": "deprel"}, "unknown tag_column 'deprel'"),
        ({"valid_fraction": 1.0}, r"valid_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_options_raise_data_error(tmp_path, arguments, message):
    options = {"split": "train", **arguments}
    split = options.pop("split")
    with pytest.raises(DataError, match=message):
        load_split("language_model", str(tmp_path), split, **options)


def test_empty_split_is_an_error(tmp_path):
    path = write(tmp_path, "stsa.binary.dev", "\n\n")
    with pytest.raises(DataError, match=f"^{path}: the dev split is empty$"):
        load_split("classifier", path, "dev")


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# === load_split: directory layouts ===


def test_sst_directory_prefers_stsa_files(tmp_path):
    write(tmp_path, "stsa.binary.train", STSA_TEXT)
    write(tmp_path, "stsa.binary.dev", "0 meh\n")
    write(tmp_path, "glue_train.tsv", GLUE_TEXT)
    train = load_split("classifier", str(tmp_path), "train")
    assert train.source.endswith("stsa.binary.train") and len(train) == 3
    for alias in ("dev", "valid", "validation"):
        dev = load_split("classifier", str(tmp_path), alias)
        assert dev.sentences == [["meh"]] and dev.labels == [0]


def test_glue_directory_uses_glue_train_and_dev_tsv(tmp_path):
    write(tmp_path, "glue_train.tsv", GLUE_TEXT)
    write(tmp_path, "dev.tsv", "sentence\tlabel\nit 's fine \t1\n")
    train = load_split("classifier", str(tmp_path), "train")
    assert train.source.endswith("glue_train.tsv") and train.labels == [0, 1]
    dev = load_split("classifier", str(tmp_path), "dev")
    assert dev.sentences == [["it", "'s", "fine"]] and dev.labels == [1]


def test_directory_without_the_split_file_lists_what_was_looked_for(tmp_path):
    write(tmp_path, "stsa.binary.train", STSA_TEXT)
    with pytest.raises(DataError) as caught:
        load_split("classifier", str(tmp_path), "dev")
    assert str(caught.value) == (
        f"{tmp_path}: no dev file for the classifier task in this directory; "
        "looked for: stsa.binary.dev, dev.tsv"
    )


def test_ptb_directory(tmp_path):
    write(tmp_path, "ptb.train.txt", " a b\n c\n")
    write(tmp_path, "ptb.valid.txt", " b a\n")
    assert load_split("language_model", str(tmp_path), "train").tokens == [
        "a", "b", "<eos>", "c", "<eos>"
    ]
    assert load_split("language_model", str(tmp_path), "valid").tokens == ["b", "a", "<eos>"]
    with pytest.raises(DataError, match="looked for: ptb.test.txt, test.txt"):
        load_split("language_model", str(tmp_path), "test")


def test_ud_directory_finds_files_by_suffix(tmp_path):
    write(tmp_path, "en_tiny-ud-train.conllu", CONLLU_TEXT)
    write(tmp_path, "en_tiny-ud-dev.conllu", "1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n")
    train = load_split("tagger", str(tmp_path), "train", tag_column="xpos")
    assert train.tags[1] == ["UH", "."]
    dev = load_split("tagger", str(tmp_path), "dev")
    assert dev.sentences == [["Hi"]] and dev.tags == [["INTJ"]]
    write(tmp_path, "fr_tiny-ud-train.conllu", CONLLU_TEXT)
    with pytest.raises(DataError, match="more than one train file .* en_tiny-ud-train.conllu, "
                       "fr_tiny-ud-train.conllu"):
        load_split("tagger", str(tmp_path), "train")


def test_char_directory_without_valid_file_cuts_dev_from_the_end(tmp_path):
    text = "First Citizen:\nYo\n"  # 18 characters.
    write(tmp_path, "train.txt", text)
    # Boundary int(18 * 0.75) = 13.
    train = load_split("language_model", str(tmp_path), "train", level="char", valid_fraction=0.25)
    dev = load_split("language_model", str(tmp_path), "dev", level="char", valid_fraction=0.25)
    assert train.tokens == list(text[:13]) and dev.tokens == list(text[13:])
    assert train.level == dev.level == "char"
    # With the default 0.1: int(18 * 0.9) = 16.
    assert "".join(load_split("language_model", str(tmp_path), "dev", level="char").tokens) == "o\n"
    # 0 keeps the whole text for train and leaves no dev split.
    whole = load_split("language_model", str(tmp_path), "train", level="char", valid_fraction=0.0)
    assert whole.tokens == list(text)
    with pytest.raises(DataError, match="valid_fraction is 0"):
        load_split("language_model", str(tmp_path), "dev", level="char", valid_fraction=0.0)


PLAYS = ("ISABELLA:\nHark how I'll bribe you.\n\nANGELO:\nHow? bribe me?\n\n"
         "SLY:\nI'll pheeze you, in faith.\n\nHostess:\nA pair of stocks, you rogue!\n\n"
         "SLY:\nYe are a baggage.\n")


def test_dev_can_start_at_a_line_that_begins_a_document(tmp_path):
    write(tmp_path, "train.txt", PLAYS)
    options = {"level": "char", "valid_fraction": 0.75, "valid_start": "^SLY:$"}
    train = load_split("language_model", str(tmp_path), "train", **options)
    dev = load_split("language_model", str(tmp_path), "dev", **options)
    # int(len * 0.25) falls in ISABELLA's line; dev moves on to the first SLY: after it.
    first_sly = PLAYS.index("SLY:")
    assert int(len(PLAYS) * 0.25) < first_sly
    assert "".join(train.tokens) == PLAYS[:first_sly] and "".join(dev.tokens) == PLAYS[first_sly:]
    assert "from the line matching '^SLY:$'" in dev.source
    # Past the first match, the next one is taken.
    late = load_split("language_model", str(tmp_path), "dev", level="char", valid_fraction=0.2,
                      valid_start="^SLY:$")  # the cut at 124, the second SLY: at 132
    assert "".join(late.tokens) == PLAYS[PLAYS.rindex("SLY:"):]
    # Word level: lines are the words between <eos> tokens.
    words = load_split("language_model", str(tmp_path), "dev", level="word", valid_fraction=0.75,
                       valid_start="^SLY:$")
    assert words.tokens[:3] == ["SLY:", "<eos>", "I'll"] and words.tokens.count("SLY:") == 2
    # No valid_start (or ''): the plain cut.
    plain = load_split("language_model", str(tmp_path), "dev", level="char", valid_fraction=0.75,
                       valid_start="")
    assert "".join(plain.tokens) == PLAYS[int(len(PLAYS) * 0.25):]


def test_a_valid_start_that_cannot_cut_says_so(tmp_path, caplog):
    write(tmp_path, "train.txt", PLAYS)
    with pytest.raises(DataError, match="not a regular expression"):
        load_split("language_model", str(tmp_path), "dev", level="char", valid_start="(")
    # A pattern no line matches (a preset's, on another corpus): the plain cut, said out loud.
    with caplog.at_level("WARNING"):
        dev = load_split("language_model", str(tmp_path), "dev", level="char", valid_start="^PROSPERO:$")
    assert "".join(dev.tokens) == PLAYS[int(len(PLAYS) * 0.9):]
    assert "no line matched '^PROSPERO:$'" in dev.source
    assert "matches valid_start '^PROSPERO:$'" in caplog.text


def test_char_directory_valid_file_takes_precedence(tmp_path):
    write(tmp_path, "train.txt", "abcdefghij")
    write(tmp_path, "valid.txt", "xyz")
    assert load_split("language_model", str(tmp_path), "train", level="char").tokens == list(
        "abcdefghij"
    )
    assert load_split("language_model", str(tmp_path), "dev", level="char").tokens == list("xyz")


def test_language_model_file_is_split_like_a_train_only_directory(tmp_path):
    path = write(tmp_path, "corpus.txt", "abcdefghij")
    assert load_split("language_model", path, "train", level="char").tokens == list("abcdefghi")
    assert load_split("language_model", path, "dev", level="char").tokens == ["j"]
    assert load_split("language_model", path, "test", level="char").tokens == list("abcdefghij")
    # valid_fraction 0: a caller with its own dev file gets every file whole.
    for split in ("train", "dev"):
        whole = load_split("language_model", path, split, level="char", valid_fraction=0.0)
        assert whole.tokens == list("abcdefghij")


def test_language_model_file_with_a_dev_file_beside_it_is_read_whole(tmp_path):
    train = write(tmp_path, "ptb.train.txt", "a b c d e f g h i j\n")
    valid = write(tmp_path, "ptb.valid.txt", "k l m n o p q r s t\n")
    assert len(load_split("language_model", train, "train").tokens) == 11
    assert len(load_split("language_model", valid, "dev").tokens) == 11


def test_classification_and_tagging_files_ignore_the_split(tmp_path):
    sst = write(tmp_path, "my_sentences.txt", "0 no\n")
    assert load_split("classifier", sst, "train") == load_split("classifier", sst, "dev")
    ud = write(tmp_path, "mine.conllu", CONLLU_TEXT)
    assert load_split("tagger", ud, "test").tags[1] == ["INTJ", "PUNCT"]


# === tensorflow-datasets ===


def test_tfds_glue_sst2_under_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        for split in ("train", "dev"):
            data = load_split("classifier", "glue/sst2", split, data_dir=str(tmp_path))
            assert isinstance(data, ClassificationData)
            assert len(data.sentences) == len(data.labels) == 6
            assert data.label_names == ["negative", "positive"]
            assert set(data.labels) <= {0, 1}
            assert all(isinstance(token, str) for tokens in data.sentences for token in tokens)
            assert all(tokens for tokens in data.sentences)
    assert data.source == "tfds:glue/sst2:validation"  # GLUE calls dev "validation".


def test_tfds_tiny_shakespeare_under_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=1):
        data = load_split("language_model", "tiny_shakespeare", "dev", level="char",
                          data_dir=str(tmp_path))
    assert isinstance(data, LanguageModelData)
    assert data.level == "char" and data.source == "tfds:tiny_shakespeare:validation"
    # The mock's text is 10 to 19 characters from " abcdefghij".
    assert 10 <= len(data.tokens) < 20
    assert set(data.tokens) <= set(" abcdefghij")


def ud_mock(examples: list[dict[str, list]], requested_splits: list[str]):
    """Returns an `as_dataset_fn` for mock_data yielding the given UD examples.

    mock_data's own generator gives every sequence feature its own random
    length, which no real UD example has, so UD tests supply aligned examples
    in the builder's real feature encoding (UPOS as class ids, the rest text).
    """

    def as_dataset(self, split, **kwargs):
        requested_splits.append(str(split))
        upos_names = self.info.features["upos"].feature.names
        rows = [
            {**example, "upos": [upos_names.index(tag) for tag in example["upos"]]}
            for example in examples
        ]
        signature = {
            "tokens": tf.TensorSpec([None], tf.string),
            "upos": tf.TensorSpec([None], tf.int64),
            "xpos": tf.TensorSpec([None], tf.string),
            "head": tf.TensorSpec([None], tf.string),
        }
        return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=signature)

    return as_dataset


def test_tfds_ud_drops_multiword_tokens_and_empty_nodes(tmp_path):
    # "I don't know ." as tfds stores it: the multiword token (upos "_") and
    # an empty node (no head) sit among the words.
    example = {
        "tokens": ["I", "don't", "do", "n't", "know", "know", "."],
        "upos": ["PRON", "_", "AUX", "PART", "VERB", "VERB", "PUNCT"],
        "xpos": ["PRP", "None", "VBP", "RB", "VB", "VB", "."],
        "head": ["4", "None", "4", "4", "0", "None", "4"],
    }
    requested: list[str] = []
    with tfds.testing.mock_data(as_dataset_fn=ud_mock([example], requested)):
        upos = load_split("tagger", "universal_dependencies/en_ewt", "dev", data_dir=str(tmp_path))
        xpos = load_split("tagger", "universal_dependencies/en_ewt", "train",
                          tag_column="xpos", data_dir=str(tmp_path))
    assert requested == ["dev", "train"]  # UD calls its dev split "dev".
    assert upos == TaggingData(
        sentences=[["I", "do", "n't", "know", "."]],
        tags=[["PRON", "AUX", "PART", "VERB", "PUNCT"]],
        source="tfds:universal_dependencies/en_ewt:dev",
    )
    assert xpos.tags == [["PRP", "VBP", "RB", "VB", "."]]


def test_tfds_ud_random_examples_from_the_feature_spec(tmp_path):
    builder = tfds.builder("universal_dependencies/en_ewt", data_dir=str(tmp_path))
    upos_names = builder.info.features["upos"].feature.names
    random = np.random.default_rng(0)
    examples = []
    for _ in range(8):
        length = int(random.integers(1, 12))
        examples.append({
            "tokens": [f"w{index}" for index in random.integers(0, 100, length)],
            "upos": [upos_names[index] for index in random.integers(0, len(upos_names), length)],
            "xpos": ["NN"] * length,
            "head": [str(index) for index in random.integers(0, length + 1, length)],
        })
    with tfds.testing.mock_data(as_dataset_fn=ud_mock(examples, [])):
        data = load_split("tagger", "universal_dependencies/en_ewt", "train",
                          data_dir=str(tmp_path))
    assert isinstance(data, TaggingData)
    words_per_example = [sum(tag != "_" for tag in example["upos"]) for example in examples]
    assert [len(tokens) for tokens in data.sentences] == [n for n in words_per_example if n]
    assert all(len(tokens) == len(tags) for tokens, tags in zip(data.sentences, data.tags))
    assert {tag for tags in data.tags for tag in tags} <= set(upos_names) - {"_"}


def test_tfds_misaligned_sequences_raise(tmp_path):
    # mock_data's generator gives tokens and upos different random lengths.
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(DataError, match="example 0 has sequences of different lengths"):
            load_split("tagger", "universal_dependencies/en_ewt", "train", data_dir=str(tmp_path))


def test_tfds_unknown_name(tmp_path):
    with pytest.raises(DataError) as caught:
        load_split("classifier", "no_such_dataset_xyz", "train", data_dir=str(tmp_path))
    message = str(caught.value)
    assert message.startswith("'no_such_dataset_xyz' is neither a local path (no such file or "
                              "directory) nor a known tensorflow-datasets dataset")
    assert "\n" not in message  # Not tfds's list of every dataset.


def _fake_downloads(monkeypatch, download):
    """Replaces tfds' download manager's fetch, so that download=True runs offline."""
    monkeypatch.setattr(tfds.download.DownloadManager, "download", lambda self, url: download(url))


def test_tfds_download_path_prepares_and_loads_offline(tmp_path, monkeypatch):
    # The path `--data tiny_shakespeare --download` takes: tfds builds the
    # dataset (this needs importlib_resources, which tfds 4.9.10 does not
    # declare) from what the download manager fetched, here a local file.
    text = "ROMEO:\nBut soft, what light.\n" * 50
    (tmp_path / "input.txt").write_text(text, encoding="utf-8")
    fetched = []
    _fake_downloads(monkeypatch, lambda url: fetched.append(url) or str(tmp_path / "input.txt"))
    data = load_split("language_model", "tiny_shakespeare", "train", level="char",
                      data_dir=str(tmp_path / "tfds"), download=True)
    assert fetched == ["https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"]
    assert data.source == "tfds:tiny_shakespeare:train"
    # tfds keeps the first 90% of the characters as its train split.
    assert "".join(data.tokens).replace("\n", "") in text.replace("\n", "")
    assert len(data.tokens) >= int(len(text) * 0.8)


def test_tfds_download_without_a_network_is_one_clear_error(tmp_path, monkeypatch):
    def offline(url):
        raise OSError(f"Max retries exceeded with url: {url} (Name or service not known)")

    _fake_downloads(monkeypatch, offline)
    with pytest.raises(DataError, match="could not download .*'tiny_shakespeare'.*local copy"):
        load_split("language_model", "tiny_shakespeare", "train", level="char",
                   data_dir=str(tmp_path / "tfds"), download=True)


def test_tfds_not_downloaded_suggests_a_local_path(tmp_path):
    with pytest.raises(DataError, match="'tiny_shakespeare' is not downloaded.*local copy"):
        load_split("language_model", "tiny_shakespeare", "train", level="char",
                   data_dir=str(tmp_path))


def test_tfds_dataset_without_the_task_features(tmp_path):
    with pytest.raises(DataError, match="cannot be read for the tagger task: it has no feature "
                       "'tokens', 'upos'"):
        load_split("tagger", "tiny_shakespeare", "train", data_dir=str(tmp_path))


# === Pipelines ===


@pytest.fixture
def classification_data() -> ClassificationData:
    return ClassificationData(
        sentences=[["a", "b", "c"], ["b"], ["c", "zzz"]],
        labels=[1, 0, 1],
        label_names=["negative", "positive"],
        source="fixture",
    )


def test_classification_batches_are_padded_per_batch(classification_data):
    vocab = Vocabulary(["<pad>", "<unk>", "a", "b", "c"])
    batches = list(classification_dataset(classification_data, vocab, batch_size=2))
    assert len(batches) == 2
    (ids_0, labels_0), (ids_1, labels_1) = batches
    assert ids_0.dtype == labels_0.dtype == tf.int32
    np.testing.assert_array_equal(ids_0, [[2, 3, 4], [3, 0, 0]])
    np.testing.assert_array_equal(labels_0, [1, 0])
    np.testing.assert_array_equal(ids_1, [[4, 1]])  # "zzz" is unknown; T is this batch's longest.
    np.testing.assert_array_equal(labels_1, [1])


def test_classification_max_length_truncates(classification_data):
    vocab = Vocabulary(["<pad>", "<unk>", "a", "b", "c"])
    (ids, _), = list(classification_dataset(classification_data, vocab, 3, max_length=2))
    np.testing.assert_array_equal(ids, [[2, 3], [3, 0], [4, 1]])


def test_shuffle_is_deterministic_by_seed_and_changes_each_epoch():
    tokens = [f"t{index}" for index in range(20)]
    data = ClassificationData(
        sentences=[[token] for token in tokens],
        labels=[index % 2 for index in range(20)],
        label_names=["negative", "positive"],
        source="fixture",
    )
    vocab = Vocabulary(["<pad>", "<unk>", *tokens])

    def epoch_orders(dataset, epochs=2):
        return [
            [int(row) for ids, _ in dataset for row in ids[:, 0].numpy()] for _ in range(epochs)
        ]

    first = epoch_orders(classification_dataset(data, vocab, 4, shuffle=True, seed=7))
    again = epoch_orders(classification_dataset(data, vocab, 4, shuffle=True, seed=7))
    other = epoch_orders(classification_dataset(data, vocab, 4, shuffle=True, seed=8))
    unshuffled = epoch_orders(classification_dataset(data, vocab, 4), epochs=1)[0]
    assert first == again
    assert first[0] != first[1]  # A new order each epoch.
    assert first[0] != other[0]
    assert unshuffled == list(range(2, 22))
    assert sorted(first[0]) == sorted(first[1]) == unshuffled


def test_tagging_batches_have_padded_tags_and_zero_weights():
    data = TaggingData(
        sentences=[["the", "dog", "barks"], ["hi"]],
        tags=[["DET", "NOUN", "VERB"], ["INTJ"]],
        source="fixture",
    )
    vocab = Vocabulary.build(data.sentences)  # barks 2, dog 3, hi 4, the 5
    tags = LabelVocabulary.build(data.tags)  # DET 0, INTJ 1, NOUN 2, VERB 3
    (token_ids, tag_ids, weights), = list(tagging_dataset(data, vocab, tags, batch_size=4))
    assert (token_ids.dtype, tag_ids.dtype, weights.dtype) == (tf.int32, tf.int32, tf.float32)
    np.testing.assert_array_equal(token_ids, [[5, 3, 2], [4, 0, 0]])
    np.testing.assert_array_equal(tag_ids, [[0, 2, 3], [1, 0, 0]])
    np.testing.assert_array_equal(weights, [[1, 1, 1], [1, 0, 0]])


def test_tagging_batches_with_characters_pad_and_cut_words():
    data = TaggingData(
        sentences=[["the", "dog", "barks"], ["hi"], ["Zürich"]],
        tags=[["DET", "NOUN", "VERB"], ["INTJ"], ["PROPN"]],
        source="fixture",
    )
    vocab = Vocabulary.build(data.sentences[:2])
    tags = LabelVocabulary.build(data.tags)
    characters = Vocabulary.build(list(word) for word in ["the", "dog", "barks", "hi"])
    batches = list(tagging_dataset(data, vocab, tags, batch_size=2, characters=characters,
                                   max_word_length=4))
    (inputs, tag_ids, weights), (last_inputs, _, _) = batches
    assert sorted(inputs) == ["char_ids", "token_ids"] and inputs["char_ids"].dtype == tf.int32
    np.testing.assert_array_equal(inputs["token_ids"], [vocab.encode(["the", "dog", "barks"]),
                                                        vocab.encode(["hi", "<pad>", "<pad>"])])
    np.testing.assert_array_equal(weights, [[1, 1, 1], [1, 0, 0]])
    spell = lambda word: characters.encode(word) + [0] * (4 - len(word))  # noqa: E731
    np.testing.assert_array_equal(inputs["char_ids"], [
        [spell("the"), spell("dog"), spell("bark")],  # "barks" is cut to 4 characters
        [spell("hi"), [0] * 4, [0] * 4],  # padding words have no characters
    ])
    # A batch is as wide as its longest (cut) word; unseen characters are <unk>.
    assert spell("Züri")[:2] == [1, 1]
    np.testing.assert_array_equal(last_inputs["char_ids"], [[spell("Züri")]])
    with pytest.raises(ValueError, match="max_word_length"):
        tagging_dataset(data, vocab, tags, batch_size=2, characters=characters, max_word_length=0)


def test_tagging_unknown_tag_and_bad_batch_size():
    data = TaggingData(sentences=[["x"]], tags=[["SYM"]], source="fixture")
    vocab = Vocabulary.build(data.sentences)
    with pytest.raises(DataError, match="unknown label 'SYM'"):
        tagging_dataset(data, vocab, LabelVocabulary(["NOUN"]), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        tagging_dataset(data, vocab, LabelVocabulary(["SYM"]), batch_size=0)


def test_records_reject_misaligned_lists():
    with pytest.raises(DataError, match="2 sentences but 1 labels"):
        ClassificationData([["a"], ["b"]], [0], ["negative", "positive"], "fixture")
    with pytest.raises(DataError, match="label 2, outside the 2 classes"):
        ClassificationData([["a"]], [2], ["negative", "positive"], "fixture")
    with pytest.raises(DataError, match="sentence 0 has 2 tokens but 1 tags"):
        TaggingData([["a", "b"]], [["X"]], "fixture")


# === Word dropout ===


def test_word_dropout_rates_follow_alpha_over_count_plus_alpha():
    from training.datasets.pipelines import word_dropout_rates

    vocab = Vocabulary(["<pad>", "<unk>", "the", "cat", "rare", "unseen"])
    sentences = [["the", "cat"], ["the", "the", "rare"], ["cat", "zebra"]]  # zebra: <unk>
    rates = word_dropout_rates(sentences, vocab, alpha=0.25)
    np.testing.assert_allclose(rates, [0, 0, 0.25 / 3.25, 0.25 / 2.25, 0.25 / 1.25, 0], rtol=1e-6)
    with pytest.raises(ValueError, match="non-negative"):
        word_dropout_rates(sentences, vocab, alpha=-1)


def test_word_dropout_drops_at_each_words_rate_anew_each_pass_and_keeps_the_spelling():
    from training.datasets.pipelines import with_word_dropout

    vocab = Vocabulary(["<pad>", "<unk>", "often", "seldom"])
    characters = Vocabulary(["<pad>", "<unk>", "o", "f", "t", "e", "n", "s", "l", "d", "m"])
    data = TaggingData(sentences=[["often", "seldom", "often"]] * 200, tags=[["A", "B", "A"]] * 200,
                       source="mem")
    base = tagging_dataset(data, vocab, LabelVocabulary(["A", "B"]), 50, characters=characters,
                           max_word_length=8)
    rates = np.array([0, 0, 0.1, 0.5], np.float32)
    dropped = with_word_dropout(base, rates, seed=3)
    passes = [list(dropped.as_numpy_iterator()) for _ in range(2)]
    clean = list(base.as_numpy_iterator())
    ids = np.concatenate([inputs["token_ids"] for inputs, _, _ in passes[0]])  # (200, 3)
    expected_ids = np.concatenate([inputs["token_ids"] for inputs, _, _ in clean])
    # Binomial: 400 'often' at 0.1 and 200 'seldom' at 0.5; 5 standard deviations either way.
    often, seldom = expected_ids == 2, expected_ids == 3
    assert abs((ids[often] == 1).mean() - 0.1) < 5 * np.sqrt(0.1 * 0.9 / often.sum())
    assert abs((ids[seldom] == 1).mean() - 0.5) < 5 * np.sqrt(0.25 / seldom.sum())
    assert set(np.unique(ids[often])) <= {1, 2} and set(np.unique(ids[seldom])) <= {1, 3}
    for (inputs, tags, weights), (clean_inputs, clean_tags, clean_weights) in zip(passes[0], clean):
        np.testing.assert_array_equal(inputs["char_ids"], clean_inputs["char_ids"])  # spelling kept
        np.testing.assert_array_equal(tags, clean_tags)
        np.testing.assert_array_equal(weights, clean_weights)
    second = np.concatenate([inputs["token_ids"] for inputs, _, _ in passes[1]])
    assert not np.array_equal(ids, second), "each pass draws anew"
    again = np.concatenate([inputs["token_ids"] for inputs, _, _ in with_word_dropout(base, rates, seed=3)])
    np.testing.assert_array_equal(ids, again)  # and a run is reproducible
