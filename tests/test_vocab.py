"""Tests for training.vocab: ids, ordering, unknown tokens and files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.errors import DataError
from training.vocab import (
    OOV_ID,
    OOV_TOKEN,
    PAD_ID,
    PAD_TOKEN,
    LabelVocabulary,
    Vocabulary,
)


# === Vocabulary.build ===


def test_build_orders_by_count_then_alphabetically():
    sequences = [["b", "a", "c", "a"], ["c", "d", "a", "b"], ["e"]]
    # Counts: a 3, b 2, c 2, d 1, e 1 -> ties b/c and d/e broken alphabetically.
    vocab = Vocabulary.build(sequences)
    assert vocab.tokens == [PAD_TOKEN, OOV_TOKEN, "a", "b", "c", "d", "e"]
    assert vocab.tokens[PAD_ID] == "<pad>" and vocab.tokens[OOV_ID] == "<unk>"


def test_build_does_not_depend_on_corpus_order():
    forward = Vocabulary.build([["x", "y", "z", "y"]])
    backward = Vocabulary.build([["y", "z", "y", "x"]])
    assert forward == backward
    assert forward.tokens == [PAD_TOKEN, OOV_TOKEN, "y", "x", "z"]


def test_build_min_count_drops_rare_tokens():
    vocab = Vocabulary.build([["a", "a", "a", "b", "b", "c"]], min_count=2)
    assert vocab.tokens == [PAD_TOKEN, OOV_TOKEN, "a", "b"]


def test_build_max_size_counts_pad_and_unk():
    vocab = Vocabulary.build([["a", "a", "a", "b", "b", "c"]], max_size=4)
    assert len(vocab) == 4
    assert vocab.tokens == [PAD_TOKEN, OOV_TOKEN, "a", "b"]
    assert Vocabulary.build([["a"]], max_size=2).tokens == [PAD_TOKEN, OOV_TOKEN]


def test_build_maps_corpus_unk_to_the_reserved_id():
    # PTB writes rare words as <unk>; it must not become a second entry.
    vocab = Vocabulary.build([["the", "<unk>", "<unk>", "<unk>", "cat"]])
    assert vocab.tokens == [PAD_TOKEN, OOV_TOKEN, "cat", "the"]
    assert vocab.encode(["<unk>", "cat"]) == [OOV_ID, 2]


@pytest.mark.parametrize("arguments", [{"min_count": 0}, {"max_size": 1}])
def test_build_rejects_bad_limits(arguments):
    with pytest.raises(ValueError):
        Vocabulary.build([["a"]], **arguments)


# === Encoding and decoding ===


def test_encode_and_decode_with_unknown_tokens_and_padding():
    vocab = Vocabulary(["<pad>", "<unk>", "the", "cat"])
    assert vocab.encode(["the", "dog", "cat"]) == [2, OOV_ID, 3]
    assert vocab.token_to_id("dog") == OOV_ID
    assert vocab.id_to_token(3) == "cat"
    assert vocab.decode([2, 1, 3, 0, 0]) == ["the", "<unk>", "cat"]
    assert vocab.decode([2, 0], skip_pad=False) == ["the", "<pad>"]
    assert vocab.decode(np.array([3, 2], dtype=np.int64)) == ["cat", "the"]
    assert "cat" in vocab and "dog" not in vocab
    assert len(vocab) == 4


@pytest.mark.parametrize("index", [4, -1])
def test_out_of_range_ids_raise(index):
    vocab = Vocabulary(["<pad>", "<unk>", "the", "cat"])
    with pytest.raises(ValueError, match=f"id {index}"):
        vocab.id_to_token(index)
    with pytest.raises(ValueError):
        vocab.decode([2, index])


def test_tokens_property_is_a_copy():
    vocab = Vocabulary(["<pad>", "<unk>", "a"])
    vocab.tokens.append("b")
    assert vocab.tokens == ["<pad>", "<unk>", "a"]


@pytest.mark.parametrize(
    "tokens, message",
    [
        (["<unk>", "<pad>", "a"], "must start with"),
        (["<pad>", "a"], "must start with"),
        ([], "must start with"),
        (["<pad>", "<unk>", "a", "b", "a"], "'a' appears more than once"),
        (["<pad>", "<unk>", "<pad>"], "appears more than once"),
        (["<pad>", "<unk>", ""], "non-empty string"),
        (["<pad>", "<unk>", 7], "non-empty string"),
    ],
)
def test_invalid_token_lists_raise_value_error(tokens, message):
    with pytest.raises(ValueError, match=message):
        Vocabulary(tokens)


# === Files ===


def test_save_load_round_trip_keeps_unicode(tmp_path):
    vocab = Vocabulary.build([["naïve", "café", "日本", "café"]])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"tokens": vocab.tokens}
    assert "café" in path.read_text(encoding="utf-8")  # Written as UTF-8, not \\u escapes.
    loaded = Vocabulary.load(path)
    assert loaded == vocab
    assert loaded.encode(["café", "naïve", "?"]) == vocab.encode(["café", "naïve", "?"])


def test_load_reports_bad_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        Vocabulary.load(tmp_path / "missing.json")
    wrong_shape = tmp_path / "wrong.json"
    wrong_shape.write_text('{"names": ["a"]}', encoding="utf-8")
    with pytest.raises(DataError, match=r'wrong.json: expected a JSON object \{"tokens"'):
        Vocabulary.load(wrong_shape)
    not_a_vocabulary = tmp_path / "bad.json"
    not_a_vocabulary.write_text('{"tokens": ["a", "b"]}', encoding="utf-8")
    with pytest.raises(DataError, match="bad.json: a vocabulary must start with"):
        Vocabulary.load(not_a_vocabulary)
    broken = tmp_path / "broken.json"
    broken.write_text('{"tokens":\n ["<pad>",', encoding="utf-8")
    with pytest.raises(DataError, match="broken.json:2: not valid JSON"):
        Vocabulary.load(broken)


# === LabelVocabulary ===


def test_label_vocabulary_keeps_the_given_order():
    labels = LabelVocabulary(["negative", "positive"])
    assert labels.names == ["negative", "positive"]
    assert len(labels) == 2
    assert labels.encode(["positive", "negative", "positive"]) == [1, 0, 1]
    assert labels.decode([0, 1]) == ["negative", "positive"]


def test_label_vocabulary_build_from_labels_and_from_tag_sequences():
    assert LabelVocabulary.build(["pos", "neg", "pos"]).names == ["neg", "pos"]
    tags = LabelVocabulary.build([["NOUN", "VERB"], ["DET", "NOUN"], []])
    assert tags.names == ["DET", "NOUN", "VERB"]
    assert tags.encode(["VERB", "DET"]) == [2, 0]


def test_label_vocabulary_rejects_unknown_names_and_ids():
    tags = LabelVocabulary(["DET", "NOUN"])
    with pytest.raises(DataError, match="unknown label 'VERB'.*DET, NOUN"):
        tags.encode(["DET", "VERB"])
    with pytest.raises(ValueError, match="id 2"):
        tags.decode([2])


@pytest.mark.parametrize("names", [[], ["a", "a"], ["a", ""]])
def test_invalid_label_lists_raise_value_error(names):
    with pytest.raises(ValueError):
        LabelVocabulary(names)


def test_label_vocabulary_save_load_round_trip(tmp_path):
    tags = LabelVocabulary(["ADJ", "NOUN", "PUNCT"])
    path = tmp_path / "tags.json"
    tags.save(path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"names": ["ADJ", "NOUN", "PUNCT"]}
    assert LabelVocabulary.load(path) == tags
