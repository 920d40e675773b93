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

POOLINGS = ("last", "mean", "max")


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
        for key in ("name", "trainable", "dtype"):
            backbone_config.pop(key, None)
        config.update(backbone_config)
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
class SentenceClassifier(_RecurrentModel):
    """One label per sentence: pool the backbone's outputs, then a dense layer.

    Args:
        num_classes: Number of labels.
        pooling: "last" (final hidden state of each direction, taken at each
            row's real end), "mean" or "max" over the real time steps.
        **backbone_options: See RecurrentBackbone.
    """

    def __init__(self, vocabulary_size: int, num_classes: int = 2, pooling: str = "last", **kwargs):
        super().__init__(vocabulary_size, **kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {pooling!r}. Valid poolings: {', '.join(POOLINGS)}.")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.pooling = pooling
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier")

    def build(self, token_ids_shape):
        self.backbone.build(token_ids_shape)
        self.classifier.build((None, self.backbone.output_dim))
        self.built = True

    def call(self, token_ids, training=None):
        """Logits (batch, num_classes)."""
        sequence, state = self.backbone(token_ids, training=training)
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
class SequenceTagger(_RecurrentModel):
    """One tag per token: a softmax over tags at every step.

    Args:
        num_tags: Number of tags (17 for UD UPOS).
        **backbone_options: See RecurrentBackbone (bidirectional taggers are the
            usual choice, Plank et al. 2016).
    """

    def __init__(self, vocabulary_size: int, num_tags: int = 17, **kwargs):
        super().__init__(vocabulary_size, **kwargs)
        if int(num_tags) < 1:
            raise ValueError(f"num_tags must be positive, got {num_tags}.")
        self.num_tags = int(num_tags)
        self.tag_projection = keras.layers.Dense(self.num_tags, name="tag_projection")

    def build(self, token_ids_shape):
        self.backbone.build(token_ids_shape)
        self.tag_projection.build((None, None, self.backbone.output_dim))
        self.built = True

    def call(self, token_ids, training=None):
        """Logits (batch, time, num_tags)."""
        sequence, _ = self.backbone(token_ids, training=training)
        return self.tag_projection(sequence)

    def get_config(self):
        config = super().get_config()
        config["num_tags"] = self.num_tags
        return config
