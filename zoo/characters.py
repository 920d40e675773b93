"""Character-aware word features: each word spelled out by a small bidirectional RNN.

    char ids (batch, time, chars), id 0 is padding, id 1 an unknown character
      -> reshape to one row per word         (batch * time, chars)
      -> Embedding, padding masked
      -> Bidirectional recurrent layer, final state of each direction
      -> concatenate, zero for words with no characters, reshape back
      -> (batch, time, 2 * hidden)

Plank, Søgaard & Goldberg (2016) concatenate these features to the word
embedding before the sentence-level BiLSTM, so a word the word vocabulary does
not know (`<unk>`) still carries its spelling: capitals, digits, suffixes.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from zoo.backbone import PAD_ID, _check_positive
from zoo.cells import make_bidirectional, check_cell_type, make_recurrent_layer, normalize_gates

# Characters kept per word by default; longer words (URLs, e-mail addresses)
# are cut, which keeps the batch's character axis short.
MAX_WORD_LENGTH = 24


@keras.saving.register_keras_serializable(package="zoo")
class CharacterEncoder(keras.layers.Layer):
    """Turns the characters of every word into one vector per word.

    Args:
        vocabulary_size: Number of character ids (0 is padding, 1 unknown).
        cell: The recurrent cell, as for RecurrentBackbone.
        embedding_dim: Size of the character vectors.
        hidden_dim: Units per direction; the output is twice as wide.
        max_word_length: Characters kept per word; the rest are ignored, here
            and in the data pipelines and exports that feed the encoder.
        gates, peepholes: Options of the gated_lstm cell.
        pack_words: Run the character RNN on the real words only, gathered
            out of the (batch, time) grid and scattered back (the default).
            In a batch of sentences most slots are padding (two thirds in UD
            EWT batches of 32), so this saves most of the encoder's work; the
            results are the same. False runs every slot, which keeps every
            shape static (for compilers that need that).

    Example:

        encoder = CharacterEncoder(vocabulary_size=80, hidden_dim=64)
        features = encoder(char_ids)  # (B, T, C) -> (B, T, 128)
    """

    def __init__(
        self,
        vocabulary_size: int,
        cell: str = "lstm",
        embedding_dim: int = 32,
        hidden_dim: int = 64,
        max_word_length: int = MAX_WORD_LENGTH,
        gates: str | Sequence[str] = "all",
        peepholes: bool = False,
        pack_words: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive(char_vocabulary_size=vocabulary_size, char_embedding_dim=embedding_dim,
                        char_hidden_dim=hidden_dim, max_word_length=max_word_length)
        self.vocabulary_size = int(vocabulary_size)
        self.cell = check_cell_type(cell)
        self.embedding_dim = int(embedding_dim)
        self.hidden_dim = int(hidden_dim)
        self.max_word_length = int(max_word_length)
        self.gates = normalize_gates(gates)
        self.peepholes = bool(peepholes)
        self.pack_words = bool(pack_words)

        # === Layers ===
        self.embedding = keras.layers.Embedding(
            self.vocabulary_size, self.embedding_dim, name="char_embedding"
        )
        self.recurrent = make_bidirectional(
            make_recurrent_layer(self.cell, self.hidden_dim, gates=self.gates,
                                 peepholes=self.peepholes, name=f"char_{self.cell}"),
            name="char_bidirectional",
        )

    @property
    def output_dim(self) -> int:
        """Width of a word's features: the final h of both directions."""
        return 2 * self.hidden_dim

    def build(self, char_ids_shape=None):
        self.embedding.build((None, None))
        self.recurrent.build((None, None, self.embedding_dim))
        self.built = True

    def call(self, char_ids, training=None):
        """(batch, time, chars) ids -> (batch, time, output_dim) features."""
        char_ids = char_ids[:, :, : self.max_word_length]
        shape = ops.shape(char_ids)
        batch, time, length = shape[0], shape[1], shape[2]
        words = ops.reshape(char_ids, (batch * time, length))  # (words, chars)
        has_chars = ops.any(ops.not_equal(words, PAD_ID), axis=1)  # (words,)
        if self.pack_words:
            # The real words only; a batch without any keeps one padding row,
            # so the RNN never sees an empty batch.
            index = ops.cond(ops.any(has_chars),
                             lambda: ops.cast(ops.where(has_chars)[0], "int32"),
                             lambda: ops.zeros((1,), dtype="int32"))
            features = self._spell(ops.take(words, index, axis=0), training)  # (real, output_dim)
            features = ops.scatter(ops.expand_dims(index, 1), features, (batch * time, self.output_dim))
        else:
            features = self._spell(words, training)  # (words, output_dim)
        features = features * ops.expand_dims(ops.cast(has_chars, features.dtype), -1)
        return ops.reshape(features, (batch, time, self.output_dim))

    def _spell(self, words, training=None):
        """(words, chars) ids -> (words, output_dim): the final h of both directions."""
        # A word with no characters (a padding position) would be a fully
        # masked row, which the cuDNN kernels refuse; it runs its first
        # (padding) step instead, and the caller zeroes its features.
        first = ops.expand_dims(ops.equal(ops.arange(ops.shape(words)[1]), 0), 0)  # (1, chars)
        mask = ops.logical_or(ops.not_equal(words, PAD_ID), first)
        x = self.embedding(words)  # (words, chars, embedding)
        _, *states = self.recurrent(x, mask=mask, training=training)
        # Bidirectional returns the forward states, then the backward ones; h first.
        forward_h, backward_h = states[0], states[len(states) // 2]
        return ops.concatenate([forward_h, backward_h], axis=-1)

    # === Config ===

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "cell": self.cell,
                "embedding_dim": self.embedding_dim,
                "hidden_dim": self.hidden_dim,
                "max_word_length": self.max_word_length,
                "gates": list(self.gates),
                "peepholes": self.peepholes,
                "pack_words": self.pack_words,
            }
        )
        return config
