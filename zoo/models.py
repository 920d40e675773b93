"""Task heads on the recurrent backbone: language model, classifier, tagger.

Every head outputs logits (losses use `from_logits=True`; the exported
signatures apply the softmax), takes the backbone's options as constructor
arguments and echoes them in `get_config()`, so a model saves to and loads from
a `.keras` file with nothing but `import zoo`.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from zoo.backbone import RecurrentBackbone
from zoo.characters import MAX_WORD_LENGTH, CharacterEncoder
from zoo.names import POOLINGS


class _RecurrentModel(keras.Model):
    """Shared plumbing: owns a RecurrentBackbone built from the backbone options."""

    def __init__(
        self,
        vocabulary_size: int,
        cell: str = "lstm",
        embedding_dim: int = 128,
        hidden_dim: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        learned_initial_state: bool = False,
        gates: str | Sequence[str] = "all",
        peepholes: bool = False,
        init_scale: float | None = None,
        extra_feature_dim: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.backbone = RecurrentBackbone(
            vocabulary_size=vocabulary_size,
            cell=cell,
            embedding_dim=embedding_dim,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            learned_initial_state=learned_initial_state,
            gates=gates,
            peepholes=peepholes,
            init_scale=init_scale,
            extra_feature_dim=extra_feature_dim,
            name="backbone",
        )

    @property
    def state_size(self) -> int:
        return self.backbone.state_size

    def initial_state(self, batch_size):
        """(batch, state_size): the zero or learned state sequences start from."""
        return self.backbone.initial_state(batch_size)

    def get_config(self):
        config = super().get_config()
        backbone_config = self.backbone.get_config()
        # extra_feature_dim follows from the head's own options (the tagger's
        # character encoder), so it is not one of the model's options.
        for key in ("name", "trainable", "dtype", "extra_feature_dim"):
            backbone_config.pop(key, None)
        config.update(backbone_config)
        return config


class _SpellingModel(_RecurrentModel):
    """A word-level model that may also spell every word out (classifier, tagger).

    With a character model (char_vocabulary_size > 0, Plank, Søgaard & Goldberg
    2016) a CharacterEncoder reads each word's characters and its features are
    concatenated to the word embedding; the model is then called with a dict
    `{"token_ids": (batch, time), "char_ids": (batch, time, chars)}`. Without
    one it takes the token ids alone.

    Args:
        char_vocabulary_size: Number of character ids (0 is padding, 1 an
            unknown character); 0 means no character model.
        char_embedding_dim: Size of the character vectors.
        char_hidden_dim: Units per direction of the character BiRNN, which runs
            the model's own cell type.
        max_word_length: Characters kept per word.
        **backbone_options: See RecurrentBackbone.
    """

    def __init__(self, vocabulary_size: int, char_vocabulary_size: int = 0,
                 char_embedding_dim: int = 32, char_hidden_dim: int = 64,
                 max_word_length: int = MAX_WORD_LENGTH, **kwargs):
        if int(char_vocabulary_size) != char_vocabulary_size or char_vocabulary_size < 0:
            raise ValueError("char_vocabulary_size must be 0 (no character model) or a "
                             f"positive integer, got {char_vocabulary_size!r}.")
        uses_characters = char_vocabulary_size > 0
        extra_feature_dim = 2 * int(char_hidden_dim) if uses_characters else 0
        super().__init__(vocabulary_size, extra_feature_dim=extra_feature_dim, **kwargs)
        self.char_vocabulary_size = int(char_vocabulary_size)
        self.char_embedding_dim = int(char_embedding_dim)
        self.char_hidden_dim = int(char_hidden_dim)
        self.max_word_length = int(max_word_length)
        self.char_encoder = None
        if uses_characters:
            self.char_encoder = CharacterEncoder(
                self.char_vocabulary_size,
                cell=self.backbone.cell,
                embedding_dim=self.char_embedding_dim,
                hidden_dim=self.char_hidden_dim,
                max_word_length=self.max_word_length,
                gates=self.backbone.gates,
                peepholes=self.backbone.peepholes,
                name="char_encoder",
            )

    @property
    def uses_characters(self) -> bool:
        """Whether the model spells words out (and so takes a dict input)."""
        return self.char_encoder is not None

    def _build_backbone(self):
        # Token ids are (batch, time) whatever the input's structure, so the
        # sublayers are built from their own sizes, not from the input shape.
        self.backbone.build((None, None))
        if self.uses_characters:
            self.char_encoder.build((None, None, None))

    def _encode(self, inputs, training=None):
        """(token_ids, sequence, state): the backbone run on the words and their spelling."""
        token_ids, char_ids = self._split_inputs(inputs)
        char_features = None
        if self.uses_characters:
            # (batch, time, 2 * char_hidden_dim)
            char_features = self.char_encoder(char_ids, training=training)
        sequence, state = self.backbone(token_ids, extra_features=char_features, training=training)
        return token_ids, sequence, state

    def _split_inputs(self, inputs):
        """(token_ids, char_ids or None); ValueError if they do not fit the model."""
        if isinstance(inputs, dict):
            token_ids, char_ids = inputs["token_ids"], inputs.get("char_ids")
        else:
            token_ids, char_ids = inputs, None
        kind = self._KIND
        if self.uses_characters and char_ids is None:
            raise ValueError(f'This {kind} has a character model: call it with '
                             '{"token_ids": (batch, time), "char_ids": (batch, time, chars)}.')
        if not self.uses_characters and char_ids is not None:
            raise ValueError(f"This {kind} has no character model (char_vocabulary_size=0); "
                             "it takes token ids only.")
        return token_ids, char_ids

    def get_config(self):
        config = super().get_config()
        config.update({
            "char_vocabulary_size": self.char_vocabulary_size,
            "char_embedding_dim": self.char_embedding_dim,
            "char_hidden_dim": self.char_hidden_dim,
            "max_word_length": self.max_word_length,
        })
        return config


@keras.saving.register_keras_serializable(package="zoo")
class LanguageModel(_RecurrentModel):
    """Predicts the next token at every step: a softmax over the vocabulary.

    Args:
        tie_weights: Use the transposed embedding as the output matrix (Press &
            Wolf 2017; Inan et al. 2017). Needs embedding_dim == hidden_dim.
        **backbone_options: See RecurrentBackbone (bidirectional is refused: a
            language model may not see the future).

    Example:

        model = LanguageModel(vocabulary_size=10_001, hidden_dim=200, embedding_dim=200,
                              num_layers=2, tie_weights=True)
        logits, state = model(token_ids, return_state=True)     # (B, T, V), (B, S)
        logits, state = model(next_ids, initial_state=state, return_state=True)
    """

    def __init__(self, vocabulary_size: int, tie_weights: bool = False, **kwargs):
        if kwargs.get("bidirectional"):
            raise ValueError(
                "A language model cannot be bidirectional: it would see the tokens it predicts."
            )
        kwargs.pop("bidirectional", None)
        super().__init__(vocabulary_size, **kwargs)
        self.tie_weights = bool(tie_weights)
        if self.tie_weights and self.backbone.embedding_dim != self.backbone.hidden_dim:
            raise ValueError(
                "tie_weights needs embedding_dim == hidden_dim, got "
                f"{self.backbone.embedding_dim} and {self.backbone.hidden_dim}."
            )
        if not self.tie_weights:
            self.output_projection = keras.layers.Dense(vocabulary_size, name="output_projection")

    def build(self, token_ids_shape):
        self.backbone.build(token_ids_shape)
        if self.tie_weights:
            self.output_bias = self.add_weight(
                shape=(self.backbone.vocabulary_size,), initializer="zeros", name="output_bias"
            )
        else:
            self.output_projection.build((None, None, self.backbone.output_dim))
        self.built = True

    def call(self, token_ids, initial_state=None, return_state=False, training=None):
        """Logits (batch, time, vocabulary) and, with return_state, the new state."""
        sequence, state = self.backbone(token_ids, initial_state=initial_state, training=training)
        if self.tie_weights:
            embeddings = self.backbone.embedding.embeddings  # (vocabulary, hidden)
            logits = ops.matmul(sequence, ops.transpose(embeddings)) + self.output_bias
        else:
            logits = self.output_projection(sequence)  # (batch, time, vocabulary)
        if return_state:
            return logits, state
        return logits

    def get_config(self):
        config = super().get_config()
        config.pop("bidirectional", None)
        config["tie_weights"] = self.tie_weights
        return config


@keras.saving.register_keras_serializable(package="zoo")
class SentenceClassifier(_SpellingModel):
    """One label per sentence: pool the backbone's outputs, then a dense layer.

    Args:
        num_classes: Number of labels.
        pooling: "last" (final hidden state of each direction, taken at each
            row's real end), "mean" or "max" over the real time steps.
        **options: The character model's (see _SpellingModel; none unless
            char_vocabulary_size > 0, and then the classifier takes a dict
            input) and the backbone's (see RecurrentBackbone).
    """

    _KIND = "classifier"

    def __init__(self, vocabulary_size: int, num_classes: int = 2, pooling: str = "last", **kwargs):
        super().__init__(vocabulary_size, **kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {pooling!r}. Valid poolings: {', '.join(POOLINGS)}.")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.pooling = pooling
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier")

    def build(self, inputs_shape=None):
        self._build_backbone()
        self.classifier.build((None, self.backbone.output_dim))
        self.built = True

    def call(self, inputs, training=None):
        """Logits (batch, num_classes).

        Args:
            inputs: (batch, time) token ids, or a dict with "token_ids" and,
                for a character model, "char_ids" (batch, time, chars).
        """
        token_ids, sequence, state = self._encode(inputs, training=training)
        mask = ops.expand_dims(ops.cast(ops.not_equal(token_ids, 0), sequence.dtype), -1)
        if self.pooling == "last":
            pooled = self.backbone.top_hidden(state)  # (batch, output_dim)
        elif self.pooling == "mean":
            total = ops.sum(sequence * mask, axis=1)
            pooled = total / ops.maximum(ops.sum(mask, axis=1), 1.0)
        else:
            # Padding must never win the max: push it far below any real value.
            pooled = ops.max(sequence + (mask - 1.0) * 1e9, axis=1)
        return self.classifier(pooled)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "pooling": self.pooling})
        return config


@keras.saving.register_keras_serializable(package="zoo")
class SequenceTagger(_SpellingModel):
    """One tag per token: a softmax over tags at every step.

    With a character model (char_vocabulary_size > 0, Plank, Søgaard & Goldberg
    2016) every word is also spelled out by a CharacterEncoder, whose features
    are concatenated to the word embedding; the model is then called with a
    dict `{"token_ids": (batch, time), "char_ids": (batch, time, chars)}`.
    Without one it takes the token ids alone, as before.

    Args:
        num_tags: Number of tags (17 for UD UPOS).
        **options: The character model's (see _SpellingModel) and the
            backbone's (see RecurrentBackbone; bidirectional taggers are the
            usual choice, Plank et al. 2016).

    Example:

        tagger = SequenceTagger(vocabulary_size=20_000, num_tags=17, bidirectional=True,
                                char_vocabulary_size=100)
        logits = tagger({"token_ids": token_ids, "char_ids": char_ids})  # (B, T, 17)
    """

    _KIND = "tagger"

    def __init__(self, vocabulary_size: int, num_tags: int = 17, **kwargs):
        super().__init__(vocabulary_size, **kwargs)
        if int(num_tags) < 1:
            raise ValueError(f"num_tags must be positive, got {num_tags}.")
        self.num_tags = int(num_tags)
        self.tag_projection = keras.layers.Dense(self.num_tags, name="tag_projection")

    def build(self, inputs_shape=None):
        self._build_backbone()
        self.tag_projection.build((None, None, self.backbone.output_dim))
        self.built = True

    def call(self, inputs, training=None):
        """Logits (batch, time, num_tags).

        Args:
            inputs: (batch, time) token ids, or a dict with "token_ids" and,
                for a character model, "char_ids" (batch, time, chars).
        """
        _, sequence, _ = self._encode(inputs, training=training)
        return self.tag_projection(sequence)

    def get_config(self):
        config = super().get_config()
        config["num_tags"] = self.num_tags
        return config
