"""The recurrent backbone every zoo model is built on.

    token ids (batch, time)
      -> Embedding, id 0 is padding and masked
      -> [concatenate extra per-token features]     (e.g. character features)
      -> Dropout                                    (Zaremba et al. 2014)
      -> [recurrent layer -> Dropout] x num_layers  (optionally bidirectional)
      -> sequence (batch, time, hidden * directions), final state (batch, state_size)

The state of all layers crosses the backbone's boundary as ONE float tensor per
sequence row, packed layer by layer from the bottom, forward before backward,
h before c. That one tensor is what the language model's `step` signature takes
and returns, and what a generation client carries, reorders or copies.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf
from keras import ops

from zoo.cells import make_bidirectional, check_cell_type, make_recurrent_layer, normalize_gates, state_sizes
from zoo.switches import switched_on

PAD_ID = 0


@keras.saving.register_keras_serializable(package="zoo")
class Embedding(keras.layers.Embedding):
    """`keras.layers.Embedding` that reads only the rows it looks up.

    Keras' layer reads the whole table and gathers from the copy. Once an
    optimizer has updated a table row by row (a sparse gradient, as every
    embedding gets), TensorFlow copies the whole table at each such read, 26 MB
    at Zaremba's medium shape: 6 ms of a 224 ms training step on a 2-core Xeon
    (op-level trace). A gather on the variable itself (`ResourceGather`) reads
    the rows it needs. Weights, config and gradients are the Keras layer's;
    `RNN_ZOO_EMBEDDING_GATHER=0` in the environment reads as Keras does.
    """

    def call(self, inputs):
        if not switched_on("RNN_ZOO_EMBEDDING_GATHER"):
            return super().call(inputs)
        if inputs.dtype not in ("int32", "int64"):
            inputs = ops.cast(inputs, "int32")
        outputs = tf.nn.embedding_lookup(self.embeddings.value, inputs)
        return ops.cast(outputs, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="zoo")
class RecurrentBackbone(keras.layers.Layer):
    """Embedding plus stacked recurrent layers, with padding masked.

    Args:
        vocabulary_size: Number of token ids (id 0 is padding).
        cell: "simple_rnn", "lstm", "gru" or "gated_lstm".
        embedding_dim: Size of the word vectors.
        hidden_dim: Units per recurrent layer and direction.
        num_layers: Number of stacked recurrent layers.
        bidirectional: Run every layer in both directions and concatenate.
        dropout: Dropout on the non-recurrent connections: after the embedding
            and after every recurrent layer (Zaremba et al. 2014).
        recurrent_dropout: Dropout on the recurrent connections (Keras cells).
        learned_initial_state: Start from a trainable state instead of zeros.
        gates, peepholes: Options of the gated_lstm cell.
        init_scale: If set, every weight starts uniform in [-init_scale,
            init_scale], as in Zaremba et al.; otherwise the Keras defaults.
        extra_feature_dim: Width of the per-token features `call` takes as
            `extra_features` and concatenates after the word embedding (0: none).
            A task head sets it from its own feature layer (the tagger's
            character encoder); it is not a user option.

    Example:

        backbone = RecurrentBackbone(vocabulary_size=100, cell="gru", hidden_dim=32)
        sequence, state = backbone(token_ids)  # (B, T, 32), (B, 32)
    """

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
        _check_positive(vocabulary_size=vocabulary_size, embedding_dim=embedding_dim,
                        hidden_dim=hidden_dim, num_layers=num_layers)
        if int(extra_feature_dim) != extra_feature_dim or extra_feature_dim < 0:
            raise ValueError(f"extra_feature_dim must be a non-negative integer, "
                             f"got {extra_feature_dim!r}.")
        _check_rate(dropout=dropout, recurrent_dropout=recurrent_dropout)
        self.vocabulary_size = int(vocabulary_size)
        self.cell = check_cell_type(cell)
        self.embedding_dim = int(embedding_dim)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.bidirectional = bool(bidirectional)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.learned_initial_state = bool(learned_initial_state)
        self.gates = normalize_gates(gates)
        self.peepholes = bool(peepholes)
        self.init_scale = None if init_scale is None else float(init_scale)
        self.extra_feature_dim = int(extra_feature_dim)

        # === Layers ===
        initializer = None
        if self.init_scale is not None:
            initializer = keras.initializers.RandomUniform(-self.init_scale, self.init_scale)
        self.embedding = Embedding(
            self.vocabulary_size,
            self.embedding_dim,
            embeddings_initializer=initializer or "uniform",
            name="embedding",
        )
        self.dropouts = [
            keras.layers.Dropout(self.dropout, name=f"dropout_{index}")
            for index in range(self.num_layers + 1)
        ]
        self.recurrent_layers = []
        for index in range(self.num_layers):
            layer = make_recurrent_layer(
                self.cell,
                self.hidden_dim,
                recurrent_dropout=self.recurrent_dropout,
                gates=self.gates,
                peepholes=self.peepholes,
                initializer=initializer,
                name=f"{self.cell}_{index}",
            )
            if self.bidirectional:
                layer = make_bidirectional(layer, name=f"bidirectional_{index}")
            self.recurrent_layers.append(layer)

    # === Shapes of the packed state ===

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_dim(self) -> int:
        """Width of the sequence output: hidden_dim times the directions."""
        return self.hidden_dim * self.directions

    @property
    def layer_state_sizes(self) -> list[list[int]]:
        """Per layer, the sizes of its state tensors in packing order."""
        per_direction = state_sizes(self.cell, self.hidden_dim)
        return [per_direction * self.directions for _ in range(self.num_layers)]

    @property
    def state_size(self) -> int:
        """Width of the packed state tensor."""
        return sum(sum(sizes) for sizes in self.layer_state_sizes)

    def pack_state(self, layer_states: list[list]) -> "keras.KerasTensor":
        """Concatenates per-layer state lists into one (batch, state_size) tensor."""
        return ops.concatenate([tensor for states in layer_states for tensor in states], axis=-1)

    def unpack_state(self, state) -> list[list]:
        """Splits a (batch, state_size) tensor into per-layer state lists."""
        layer_states, offset = [], 0
        for sizes in self.layer_state_sizes:
            tensors = []
            for size in sizes:
                tensors.append(state[:, offset:offset + size])
                offset += size
            layer_states.append(tensors)
        return layer_states

    def top_hidden(self, state):
        """The top layer's final h of each direction, concatenated: (batch, output_dim).

        With padding masked, the forward h is taken after each row's last real
        token and the backward h after its first, which is what "classify from
        the last hidden state" means for rows of different lengths.
        """
        top = self.unpack_state(state)[-1]
        per_direction = len(top) // self.directions
        return ops.concatenate(top[::per_direction], axis=-1)

    # === Forward ===

    def build(self, token_ids_shape):
        self.embedding.build(token_ids_shape)
        width = self.embedding_dim + self.extra_feature_dim
        for layer in self.recurrent_layers:
            layer.build((None, None, width))
            width = self.output_dim
        if self.learned_initial_state:
            self.initial_state_vector = self.add_weight(
                shape=(self.state_size,), initializer="zeros", name="initial_state"
            )
        self.built = True

    def initial_state(self, batch_size):
        """The state a sequence starts from: (batch, state_size) zeros or learned."""
        if self.learned_initial_state:
            return ops.tile(ops.expand_dims(self.initial_state_vector, 0), [batch_size, 1])
        return ops.zeros((batch_size, self.state_size), dtype=self.compute_dtype)

    def call(self, token_ids, initial_state=None, extra_features=None, training=None):
        """Runs the backbone.

        Args:
            token_ids: (batch, time) integer ids, right-padded with 0. They
                alone decide the mask.
            initial_state: Optional (batch, state_size) packed state; defaults to
                `initial_state(batch)`.
            extra_features: (batch, time, extra_feature_dim) floats, required
                when extra_feature_dim > 0 and refused otherwise.
            training: Whether dropout is active.

        Returns:
            (sequence, state): (batch, time, output_dim) outputs and the packed
            state after each row's last real token.
        """
        if self.extra_feature_dim and extra_features is None:
            raise ValueError(f"This backbone needs extra_features of width "
                             f"{self.extra_feature_dim} (batch, time, {self.extra_feature_dim}).")
        if extra_features is not None and not self.extra_feature_dim:
            raise ValueError("This backbone was built without extra features "
                             "(extra_feature_dim=0); do not pass extra_features.")
        mask = ops.not_equal(token_ids, PAD_ID)  # (batch, time)
        if initial_state is None:
            initial_state = self.initial_state(ops.shape(token_ids)[0])
        layer_states = self.unpack_state(initial_state)

        x = self.embedding(token_ids)  # (batch, time, embedding)
        if extra_features is not None:
            x = ops.concatenate([x, ops.cast(extra_features, x.dtype)], axis=-1)
        x = self.dropouts[0](x, training=training)  # (batch, time, embedding + extra)
        final_states = []
        for index, layer in enumerate(self.recurrent_layers):
            x, *states = layer(
                x, mask=mask, initial_state=layer_states[index], training=training
            )  # (batch, time, output_dim)
            final_states.append(states)
            x = self.dropouts[index + 1](x, training=training)
        return x, self.pack_state(final_states)

    def compute_mask(self, token_ids, mask=None):
        return ops.not_equal(token_ids, PAD_ID)

    # === Config ===

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "cell": self.cell,
                "embedding_dim": self.embedding_dim,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "bidirectional": self.bidirectional,
                "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout,
                "learned_initial_state": self.learned_initial_state,
                "gates": list(self.gates),
                "peepholes": self.peepholes,
                "init_scale": self.init_scale,
                "extra_feature_dim": self.extra_feature_dim,
            }
        )
        return config


def _check_positive(**values):
    for name, value in values.items():
        if int(value) != value or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_rate(**values):
    for name, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
