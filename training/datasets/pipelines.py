"""tf.data pipelines that turn classification and tagging records into batches.

Batches are right-padded with `PAD_ID` (0) to the longest sentence of that
batch, not of the corpus, so a batch of short sentences stays small; the
models mask padding, as docs/serving_contract.md requires. A tagger with a
character model also gets each word's character ids, padded the same way to
the longest word of the batch. Language-model
batches are different (fixed-length windows of one stream) and live in
`training.lm_batching`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from training.datasets.records import ClassificationData, TaggingData
from training.errors import DataError
from training.vocab import OOV_ID, PAD_ID, LabelVocabulary, Vocabulary


def classification_dataset(
    data: ClassificationData,
    vocab: Vocabulary,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    max_length: int | None = None,
    characters: Vocabulary | None = None,
    max_word_length: int | None = None,
) -> tf.data.Dataset:
    """Batches sentences with their class ids.

    Args:
        data: The sentences and labels.
        vocab: Maps tokens to ids; unknown tokens become `<unk>`.
        batch_size: Sentences per batch; the last batch may be smaller, so
            evaluation sees every sentence.
        shuffle: Reorder the sentences, differently on each pass over the
            dataset (epoch); the sequence of orders depends only on `seed`.
        seed: The shuffle seed.
        max_length: If given, sentences are cut to their first `max_length`
            tokens to bound memory on very long inputs.
        characters: For a classifier with a character model, maps characters
            to ids; None for a word-only classifier.
        max_word_length: With `characters`, the characters kept per word.

    Returns:
        A dataset of `(inputs, labels)`: `inputs` is `int32 [batch, time]`
        token ids right-padded with 0, or with `characters` a dict of
        `token_ids` and `char_ids` (as `tagging_dataset` makes them); labels
        are `int32 [batch]`.

    Raises:
        ValueError: If `batch_size`, `max_length` or (with `characters`)
            `max_word_length` is not positive, or `data` is empty.
    """
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    sentences = [sentence[:max_length] for sentence in data.sentences]
    inputs = [_ragged([vocab.encode(sentence) for sentence in sentences], np.int32)]
    if characters is not None:
        inputs.append(_character_ids(sentences, characters, max_word_length))
    labels = np.asarray(data.labels, dtype=np.int32)
    dataset = _padded_batches(
        inputs,
        labels,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        source=data.source,
    )
    if characters is None:
        return dataset
    return dataset.map(lambda token_ids, char_ids, labels: (
        {"token_ids": token_ids, "char_ids": char_ids}, labels))


def tagging_dataset(
    data: TaggingData,
    vocab: Vocabulary,
    tags: LabelVocabulary,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    characters: Vocabulary | None = None,
    max_word_length: int | None = None,
) -> tf.data.Dataset:
    """Batches sentences with one tag id per token.

    Tag id 0 is a real tag, so padded positions are told apart by the sample
    weight, not the tag id: pass the weight to Keras (`fit` takes
    `(x, y, sample_weight)` tuples) so padding adds nothing to loss or
    accuracy.

    Args:
        data: The sentences and tags.
        vocab: Maps tokens to ids; unknown tokens become `<unk>`.
        tags: Maps tag names to ids.
        batch_size: Sentences per batch; the last batch may be smaller.
        shuffle: Reorder the sentences on each pass, see
            `classification_dataset`.
        seed: The shuffle seed.
        characters: For a tagger with a character model, maps characters to
            ids (unknown ones become `<unk>`); None for a word-only tagger.
        max_word_length: With `characters`, the characters kept per word.

    Returns:
        A dataset of `(inputs, tag_ids, sample_weight)`, each `[batch, time]`:
        `int32` ids right-padded with 0, and `float32` weights that are 1 on
        real tokens and 0 on padding. `inputs` is the token ids, or with
        `characters` a dict of `token_ids` and `char_ids`, `int32 [batch,
        time, chars]` right-padded with 0 on both axes, where `chars` is the
        batch's longest word, at most `max_word_length`.

    Raises:
        DataError: If a tag is not in `tags` (e.g. a dev tag unseen in train).
        ValueError: If `batch_size` is not positive, `data` is empty, or
            `characters` comes without a positive `max_word_length`.
    """
    token_ids = [vocab.encode(sentence) for sentence in data.sentences]
    tag_ids = [tags.encode(sentence_tags) for sentence_tags in data.tags]
    weights = [[1.0] * len(sentence) for sentence in data.sentences]
    columns = [_ragged(tag_ids, np.int32), _ragged(weights, np.float32)]
    inputs = [_ragged(token_ids, np.int32)]
    if characters is not None:
        inputs.append(_character_ids(data.sentences, characters, max_word_length))
    dataset = _padded_batches(
        inputs + columns, None, batch_size, shuffle=shuffle, seed=seed, source=data.source
    )
    if characters is None:
        return dataset
    return dataset.map(
        lambda token_ids, char_ids, tag_ids, weights: (
            {"token_ids": token_ids, "char_ids": char_ids}, tag_ids, weights)
    )


def _character_ids(sentences, characters: Vocabulary, max_word_length: int | None) -> tf.RaggedTensor:
    """`[sentences, None, None]` character ids of each word's first `max_word_length` characters."""
    if max_word_length is None or max_word_length < 1:
        raise ValueError(f"max_word_length must be at least 1, got {max_word_length}")
    return _ragged_words([[characters.encode(word[:max_word_length]) for word in sentence]
                          for sentence in sentences])


def _padded_batches(
    sequence_columns: list[tf.RaggedTensor],
    labels: np.ndarray | None,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    source: str,
) -> tf.data.Dataset:
    """Shuffles and pads parallel per-sentence columns into batches.

    Args:
        sequence_columns: Ragged tensors (see `_ragged`, `_ragged_words`) with
            one row per sentence (ids or weights); the rows of one sentence
            have the same length. Every column is padded with 0: `PAD_ID` for
            tokens and characters, and for tags and weights a value the zero
            weight switches off.
        labels: One scalar per sentence, appended to each element unpadded;
            or None.
        batch_size: Sentences per batch.
        shuffle: Reshuffle on each pass over the dataset.
        seed: The shuffle seed.
        source: Where the data came from, for the error message.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    num_examples = int(sequence_columns[0].nrows())
    if num_examples == 0:
        raise DataError(f"{source}: no sentences to batch")
    # Ragged tensors let tf.data slice the whole corpus in-graph; a Python
    # generator would hold the GIL on every element.
    elements = list(sequence_columns)
    if labels is not None:
        elements.append(tf.constant(labels))
    dataset = tf.data.Dataset.from_tensor_slices(tuple(elements))
    if shuffle:
        # A buffer as large as the corpus gives a uniform shuffle; the corpora
        # here (tens of thousands of sentences) fit in memory many times over.
        dataset = dataset.shuffle(num_examples, seed=seed, reshuffle_each_iteration=True)
    # ragged_batch then to_tensor pads each batch to its own longest row (as
    # padded_batch would, which does not accept ragged elements).
    dataset = dataset.ragged_batch(batch_size).map(
        _pad_ragged, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _pad_ragged(*columns: tf.Tensor | tf.RaggedTensor) -> tuple[tf.Tensor, ...]:
    """Right-pads the ragged columns of a batch with 0 (`PAD_ID` for tokens)."""
    return tuple(
        column.to_tensor(default_value=tf.cast(PAD_ID, column.dtype))
        if isinstance(column, tf.RaggedTensor)
        else column
        for column in columns
    )


def _ragged(rows: list[Sequence[float]], dtype: type) -> tf.RaggedTensor:
    """Stacks variable-length rows into a `[num_rows, None]` ragged tensor."""
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    values = np.fromiter(
        (value for row in rows for value in row), dtype=dtype, count=int(lengths.sum())
    )
    return tf.RaggedTensor.from_row_lengths(values, lengths)


def _ragged_words(sentences: list[list[Sequence[int]]]) -> tf.RaggedTensor:
    """Stacks sentences of words of character ids into `[sentences, None, None]`."""
    words = [word for sentence in sentences for word in sentence]
    characters = _ragged(words, np.int32)  # (words, None)
    sentence_lengths = np.fromiter((len(sentence) for sentence in sentences), dtype=np.int64,
                                   count=len(sentences))
    return tf.RaggedTensor.from_row_lengths(characters, sentence_lengths)


# === Word dropout ===


def word_dropout_rates(sentences: Sequence[Sequence[str]], vocab: Vocabulary, alpha: float) -> np.ndarray:
    """Per token id, the chance that word dropout turns an occurrence into `<unk>`.

    A word seen n times in training is dropped with probability
    alpha / (n + alpha) (Kiperwasser & Goldberg 2016, as used for taggers by
    Plank et al. 2016): rare words often, frequent ones almost never, so the
    model learns what to do with a word it does not know, which is most of
    the unknown words at test time (and, with a character model, to lean on
    the spelling then). Padding and `<unk>` itself are never dropped.
    """
    if alpha < 0:
        raise ValueError(f"word_dropout must be non-negative, got {alpha}")
    counts = np.zeros(len(vocab), dtype=np.float64)
    for sentence in sentences:
        np.add.at(counts, vocab.encode(sentence), 1.0)
    rates = np.where(counts > 0, alpha / np.maximum(counts + alpha, 1e-12), 0.0)
    rates[[PAD_ID, OOV_ID]] = 0.0
    return rates.astype(np.float32)


def with_word_dropout(dataset: tf.data.Dataset, rates: np.ndarray, *, seed: int = 0) -> tf.data.Dataset:
    """`dataset` with each token id replaced by `OOV_ID` at its rate, anew on every pass.

    The elements are those of `classification_dataset` or `tagging_dataset`:
    the token ids come first, alone or as a dict's `token_ids` (character ids
    stay as they are: a dropped word keeps its spelling). The draws are
    stateless, seeded by `seed` and a per-pass random stream, so a run is
    reproducible and each epoch drops other words.
    """
    table = tf.constant(rates)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def drop(element, pair):
        inputs, *rest = element
        token_ids = inputs["token_ids"] if isinstance(inputs, dict) else inputs
        draws = tf.random.stateless_uniform(tf.shape(token_ids), seed=pair)
        dropped = tf.where(draws < tf.gather(table, token_ids), tf.constant(OOV_ID, token_ids.dtype),
                           token_ids)
        inputs = {**inputs, "token_ids": dropped} if isinstance(inputs, dict) else dropped
        return (inputs, *rest)

    return tf.data.Dataset.zip((dataset, seeds)).map(drop, num_parallel_calls=tf.data.AUTOTUNE,
                                                      deterministic=True)
