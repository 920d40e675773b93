"""How far back a loss reaches: the norm of dL_T/dh_t and dL_T/dx_t against the distance T - t.

The gradient that reaches step t from a loss at step T is a product of T - t
Jacobians dh_{s+1}/dh_s, so its norm shrinks (or grows) roughly geometrically
with the distance. Keras runs a recurrent layer's time loop inside the layer,
so the per-step states are not tensors a gradient can be taken against; this
module runs the same cells, with the model's own weights, one step at a time
in Python (all layers, both directions of a bidirectional layer), and takes
the gradient of one position's loss against every step's input and state.
`unroll` reproduces the backbone's output (tested), so what is measured is the
model, not a copy of it.

    flow = gradient_flow(model, token_ids, max_distance=100)   # token_ids: (batch, time), no padding
    flow.hidden_norms[-1]        # top layer: mean ||dL_T/dh_t|| at distance 0, 1, ..., max_distance
    flow.effective_memory()      # first distance where it is below 1e-3 of distance 0 (None: never)

The loss at T is the cross-entropy of the model's own output layer read on the
top layer's output at T: the language model's next-token softmax, the tagger's
tag softmax, and the classifier's dense layer (as "last" pooling reads it,
whatever pooling the model was built with). Targets are the batch's own next
tokens or labels when given, otherwise seeded random ones: a fresh model has
no right answer, and the size of the gradient does not depend on which one it
is told.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from keras import ops

import zoo

EFFECTIVE_MEMORY_THRESHOLD = 1e-3


@dataclass
class GradientFlow:
    """Mean gradient norms by distance, for one model and batch.

    Attributes:
        distances: 0, 1, ..., max_distance.
        input_norms: (max_distance + 1,) mean over rows and end positions of
            ||dL_T/dx_t||, x_t the input of the bottom recurrent layer (the word
            embedding, plus any extra features) at t = T - distance.
        hidden_norms: (num_layers, max_distance + 1) the same for ||dL_T/dh_t||,
            h_t the layer's output at t (both directions of a bidirectional
            layer, concatenated).
        ends: the positions T whose losses were averaged.
        rows: rows of the batch.
        spectral_radii: per recurrent layer and direction, the largest
            |eigenvalue| of the recurrent matrix; SimpleRNN layers only (the
            other cells' recurrent Jacobians depend on their gates).
        description: what was measured (cell, sizes), for reports.
    """

    distances: np.ndarray
    input_norms: np.ndarray
    hidden_norms: np.ndarray
    ends: list[int]
    rows: int
    spectral_radii: list[float] | None = None
    description: dict = field(default_factory=dict)

    @property
    def max_distance(self) -> int:
        return int(self.distances[-1])

    def effective_memory(self, which: str = "hidden", threshold: float = EFFECTIVE_MEMORY_THRESHOLD):
        """First distance at which the norm falls below `threshold` times its value at distance 0.

        `which` is "hidden" (the top layer's h) or "input" (x). None when it
        never does within max_distance (report it as "> max_distance").
        """
        norms = self.hidden_norms[-1] if which == "hidden" else self.input_norms
        return effective_memory(norms, threshold)

    def to_dict(self) -> dict:
        """Plain data for a JSON summary."""
        memory = {which: self.effective_memory(which) for which in ("hidden", "input")}
        return {
            **self.description,
            "rows": self.rows,
            "ends": self.ends,
            "max_distance": self.max_distance,
            "effective_memory_threshold": EFFECTIVE_MEMORY_THRESHOLD,
            "effective_memory": memory,
            "effective_memory_text": {which: format_memory(value, self.max_distance)
                                      for which, value in memory.items()},
            "spectral_radii": self.spectral_radii,
            "input_norms": [float(value) for value in self.input_norms],
            "hidden_norms": [[float(value) for value in layer] for layer in self.hidden_norms],
        }


def effective_memory(norms, threshold: float = EFFECTIVE_MEMORY_THRESHOLD) -> int | None:
    """First index k with norms[k] < threshold * norms[0]; None if there is none."""
    norms = np.asarray(norms, dtype=np.float64)
    below = np.flatnonzero(norms < threshold * norms[0])
    return int(below[0]) if below.size else None


def format_memory(value: int | None, max_distance: int) -> str:
    """"37" or "> 100" (never fell below the threshold within max_distance)."""
    return f"> {max_distance}" if value is None else str(value)


# === Running the cells step by step ===


def _directions(layer) -> list:
    """The cells of one backbone layer: [forward] or [forward, backward]."""
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer.cell, layer.backward_layer.cell]
    return [layer.cell]


def _run_cell(cell, inputs: list, states: list) -> list:
    """Steps `cell` over `inputs` (a list of (batch, features) tensors); its outputs, in order."""
    outputs = []
    for x in inputs:
        h, states = cell(x, states, training=False)
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        outputs.append(h)
    return outputs


def unroll(backbone, x, initial_state=None):
    """The backbone's recurrent layers run one step at a time on inputs `x`.

    Args:
        backbone: A built `zoo.RecurrentBackbone`.
        x: (batch, time, features) inputs of the bottom layer (embedded tokens).
        initial_state: (batch, state_size) packed state; the backbone's own
            initial state (zeros or learned) if None.

    Returns:
        (inputs, hidden): the list of per-step input tensors (what dL/dx_t is
        taken against) and, per layer, the list of per-step outputs h_t
        (batch, output_dim). The top layer's outputs equal the backbone's
        sequence output on unpadded rows, without dropout.
    """
    steps = int(x.shape[1])
    if initial_state is None:
        initial_state = backbone.initial_state(int(x.shape[0]))
    layer_states = backbone.unpack_state(initial_state)
    inputs = [x[:, t] for t in range(steps)]  # each (batch, features)
    current, hidden = inputs, []
    for layer, states in zip(backbone.recurrent_layers, layer_states):
        cells = _directions(layer)
        per_direction = len(states) // len(cells)
        forward = _run_cell(cells[0], current, states[:per_direction])
        if len(cells) == 2:
            # The backward direction reads the sequence reversed; its outputs
            # are put back in time order, as keras.layers.Bidirectional does.
            backward = _run_cell(cells[1], current[::-1], states[per_direction:])[::-1]
            forward = [ops.concatenate([f, b], axis=-1) for f, b in zip(forward, backward)]
        hidden.append(forward)
        current = forward
    return inputs, hidden


def readout_logits(model, top_output):
    """The model's output layer applied to top-layer outputs: the logits its loss is taken on."""
    if isinstance(model, zoo.LanguageModel):
        if model.tie_weights:
            embeddings = model.backbone.embedding.embeddings  # (vocabulary, hidden)
            return ops.matmul(top_output, ops.transpose(embeddings)) + model.output_bias
        return model.output_projection(top_output)
    if isinstance(model, zoo.SequenceTagger):
        return model.tag_projection(top_output)
    if isinstance(model, zoo.SentenceClassifier):
        return model.classifier(top_output)
    raise ValueError(f"Not a zoo model: {type(model).__name__} (expected a LanguageModel, "
                     "SentenceClassifier or SequenceTagger).")


def num_outputs(model) -> int:
    """Width of the model's logits: vocabulary, classes or tags."""
    if isinstance(model, zoo.LanguageModel):
        return model.backbone.vocabulary_size
    if isinstance(model, zoo.SequenceTagger):
        return model.num_tags
    return model.num_classes


def spectral_radii(model) -> list[float] | None:
    """Largest |eigenvalue| of each SimpleRNN recurrent matrix (per layer and direction); None for other cells."""
    if model.backbone.cell != "simple_rnn":
        return None
    radii = []
    for layer in model.backbone.recurrent_layers:
        for cell in _directions(layer):
            matrix = keras.ops.convert_to_numpy(cell.recurrent_kernel).astype(np.float64)
            radii.append(float(np.max(np.abs(np.linalg.eigvals(matrix)))))
    return radii


# === The measurement ===


def gradient_flow(model, token_ids, *, targets=None, max_distance: int | None = None,
                  num_ends: int = 4, char_ids=None, seed: int = 0,
                  progress=None) -> GradientFlow:
    """Mean ||dL_T/dx_t|| and ||dL_T/dh_t|| by distance T - t, over rows and end positions.

    Args:
        model: A zoo LanguageModel, SentenceClassifier or SequenceTagger (any
            cell, depth or direction), fresh or trained.
        token_ids: (batch, time) ids with no padding (a row must be real at
            every step for its distance to mean anything).
        targets: (batch, time) the target id at each position (next token,
            tag; for a classifier the row's label repeated), or None for seeded
            random targets.
        max_distance: Largest distance measured; default time - num_ends.
        num_ends: How many end positions T (the last ones) to average over.
            time must be at least max_distance + num_ends.
        char_ids: (batch, time, chars) for a tagger with a character model;
            its character features are part of x_t (held fixed: the gradient
            is not followed into the character encoder).
        seed: Seeds the random targets.
        progress: Optional callable run once per end position (a tqdm update).

    Raises:
        ValueError: padding in token_ids, or a window too short for
            max_distance and num_ends.
    """
    token_ids = np.asarray(token_ids)
    rows, steps = token_ids.shape
    if (token_ids == 0).any():
        raise ValueError("token_ids contain padding (id 0): give full-length rows.")
    max_distance = steps - num_ends if max_distance is None else int(max_distance)
    if num_ends < 1 or max_distance < 0 or steps < max_distance + num_ends:
        raise ValueError(f"A window of {steps} steps cannot give {num_ends} end position(s) at "
                         f"distances up to {max_distance}: give at least "
                         f"{max_distance + num_ends} steps.")
    if targets is None:
        targets = np.random.default_rng(seed).integers(0, num_outputs(model), size=(rows, steps))
    ends = list(range(steps - num_ends, steps))
    backbone = model.backbone
    if not model.built:
        model.build((None, None))
    extra_features = None
    if getattr(model, "uses_characters", False):
        if char_ids is None:
            raise ValueError("This model spells words with a character model: give char_ids "
                             "(batch, time, chars).")
        extra_features = model.char_encoder(ops.convert_to_tensor(char_ids), training=False)

    with tf.GradientTape(persistent=True) as tape:
        x = backbone.embedding(ops.convert_to_tensor(token_ids))  # (batch, time, embedding)
        if extra_features is not None:
            x = ops.concatenate([x, ops.cast(extra_features, x.dtype)], axis=-1)
        inputs, hidden = unroll(backbone, x)
        losses = {}
        for end in ends:
            logits = readout_logits(model, hidden[-1][end])  # (batch, outputs)
            # Summed over rows: row r's gradient is then its own loss's gradient.
            losses[end] = ops.sum(keras.losses.sparse_categorical_crossentropy(
                ops.convert_to_tensor(targets[:, end]), logits, from_logits=True))

    input_sums = np.zeros(max_distance + 1)
    hidden_sums = np.zeros((len(hidden), max_distance + 1))
    for end in ends:
        window = list(range(end - max_distance, end + 1))  # t, for distance end - t
        gradients = tape.gradient(losses[end], [inputs[t] for t in window]
                                  + [layer[t] for layer in hidden for t in window],
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
        per_step = [_row_norms(g) for g in gradients]  # each (batch,)
        for position, t in enumerate(window):
            distance = end - t
            input_sums[distance] += per_step[position].mean()
            for layer in range(len(hidden)):
                hidden_sums[layer, distance] += per_step[(layer + 1) * len(window) + position].mean()
        if progress is not None:
            progress()
    del tape
    return GradientFlow(distances=np.arange(max_distance + 1), input_norms=input_sums / len(ends),
                        hidden_norms=hidden_sums / len(ends), ends=ends, rows=int(rows),
                        spectral_radii=spectral_radii(model), description=describe(model))


def _row_norms(gradient) -> np.ndarray:
    """||g_r|| for each row r of a (batch, features) gradient, in float64."""
    values = keras.ops.convert_to_numpy(gradient).astype(np.float64)
    return np.sqrt((values ** 2).sum(axis=-1))


def describe(model) -> dict:
    """The model facts a report names: task, cell, gates, sizes."""
    backbone = model.backbone
    task = {zoo.LanguageModel: "language_model", zoo.SentenceClassifier: "classifier",
            zoo.SequenceTagger: "tagger"}[type(model)]
    description = {"task": task, "cell": backbone.cell, "hidden_dim": backbone.hidden_dim,
                   "num_layers": backbone.num_layers, "bidirectional": backbone.bidirectional,
                   "embedding_dim": backbone.embedding_dim}
    if backbone.cell == "gated_lstm":
        description["gates"] = list(backbone.gates)
        description["peepholes"] = backbone.peepholes
    return description
