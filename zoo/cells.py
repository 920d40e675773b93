"""Recurrent cells: the Keras layers by name, and the zoo's gate-selectable LSTM.

The zoo builds every model from one backbone whose cell type is a string. Three
names map to the Keras layers (`simple_rnn`, `lstm`, `gru`: cuDNN's kernels for
LSTM and GRU on a GPU; on a CPU the zoo's three run their own fused loops,
`zoo/fused_simple_rnn.py`, `zoo/fused_lstm.py` and `zoo/fused_gru.py`); `gated_lstm` is the zoo's own cell, an LSTM
whose input, forget and output gates can each be switched off, with or without
peephole connections, for reproducing gate-ablation studies.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import keras
from keras import ops

from zoo.fused_gru import GRU
from zoo.fused_lstm import LSTM
from zoo.fused_simple_rnn import SimpleRNN
from zoo.names import CELL_TYPES, GATES

# Keras packs the LSTM blocks of its kernels in the order i, f, c, o; the gated
# cell keeps that order for the blocks it has, so weights transfer one to one.
_BLOCK_ORDER = ("input", "forget", "candidate", "output")


def check_cell_type(cell: str) -> str:
    """Returns `cell` if it names a known cell type, else raises ValueError."""
    if cell not in CELL_TYPES:
        raise ValueError(
            f"Unknown cell {cell!r}. Valid cells: {', '.join(CELL_TYPES)}."
        )
    return cell


def normalize_gates(gates: str | Iterable[str] | None) -> tuple[str, ...]:
    """Turns a gate spec into a sorted tuple of gate names.

    Accepts an iterable of names, a string joined by `+` or `,` (`"input+output"`),
    `"all"`, or `"none"` / `""` / `None` for the gateless cell.
    """
    if gates is None:
        return ()
    if isinstance(gates, str):
        text = gates.strip().lower()
        if text in ("", "none"):
            return ()
        if text == "all":
            return GATES
        gates = [part.strip() for part in text.replace(",", "+").split("+")]
    names = tuple(gates)
    unknown = [name for name in names if name not in GATES]
    if unknown:
        raise ValueError(
            f"Unknown gate(s) {unknown}. Valid gates: {', '.join(GATES)} "
            "(or 'all' / 'none')."
        )
    return tuple(gate for gate in GATES if gate in names)


def state_sizes(cell: str, units: int) -> list[int]:
    """Sizes of the state tensors one layer of `cell` carries: [h] or [h, c]."""
    check_cell_type(cell)
    if cell in ("lstm", "gated_lstm"):
        return [units, units]
    return [units]


@keras.saving.register_keras_serializable(package="zoo")
class GatedLSTMCell(keras.layers.Layer):
    """An LSTM cell whose input, forget and output gates can be switched off.

    With no gates the cell accumulates content and squashes it:

        c_t = c_{t-1} + tanh(W_xc x_t + W_hc h_{t-1} + b_c)
        h_t = tanh(c_t)

    Each gate, when present, is a sigmoid of the input, the previous output and
    (with peepholes) the cell:

        i_t = σ(W_xi x_t + W_hi h_{t-1} + w_ci ⊙ c_{t-1} + b_i)   scales the new content
        f_t = σ(W_xf x_t + W_hf h_{t-1} + w_cf ⊙ c_{t-1} + b_f)   scales c_{t-1}
        o_t = σ(W_xo x_t + W_ho h_{t-1} + w_co ⊙ c_t + b_o)       h_t = o_t ⊙ tanh(c_t)

    Peephole weights are diagonal (one vector per gate, Gers & Schmidhuber 2000).
    With all three gates and no peepholes this is exactly `keras.layers.LSTM`
    (same kernel layout: blocks i, f, c, o), which the tests check.

    Args:
        units: Size of h and c.
        gates: Which gates the cell has: an iterable of "input", "forget",
            "output", or "all" / "none" / "input+output".
        peepholes: Whether gates also see the cell (w_c* terms above).
        unit_forget_bias: Start the forget-gate bias at 1, as Keras' LSTM does
            (Jozefowicz et al. 2015), so early training does not forget.
        kernel_initializer, recurrent_initializer, bias_initializer,
        peephole_initializer: Keras initializers for the weights.

    Example:

        cell = GatedLSTMCell(50, gates="input+output", peepholes=True)
        layer = keras.layers.RNN(cell, return_sequences=True)
        outputs = layer(keras.random.normal((2, 7, 25)))  # (2, 7, 50)
    """

    def __init__(
        self,
        units: int,
        gates: str | Sequence[str] = "all",
        peepholes: bool = False,
        unit_forget_bias: bool = True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        peephole_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(units) <= 0:
            raise ValueError(f"units must be a positive integer, got {units}.")
        self.units = int(units)
        self.gates = normalize_gates(gates)
        self.peepholes = bool(peepholes)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.peephole_initializer = keras.initializers.get(peephole_initializer)
        self.blocks = tuple(
            block for block in _BLOCK_ORDER if block == "candidate" or block in self.gates
        )
        self.state_size = [self.units, self.units]
        self.output_size = self.units

    # === Layers ===

    def build(self, input_shape):
        input_dim = input_shape[-1]
        width = len(self.blocks) * self.units
        self.kernel = self.add_weight(
            shape=(input_dim, width), initializer=self.kernel_initializer, name="kernel"
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, width),
            initializer=self.recurrent_initializer,
            name="recurrent_kernel",
        )
        self.bias = self.add_weight(
            shape=(width,), initializer=self._bias_initializer(), name="bias"
        )
        self.peephole_weights = {}
        if self.peepholes:
            for gate in self.gates:
                self.peephole_weights[gate] = self.add_weight(
                    shape=(self.units,),
                    initializer=self.peephole_initializer,
                    name=f"peephole_{gate}",
                )

    def _bias_initializer(self):
        if not (self.unit_forget_bias and "forget" in self.gates):
            return self.bias_initializer
        base = self.bias_initializer
        forget_index = self.blocks.index("forget")
        units = self.units
        blocks = len(self.blocks)

        def initializer(shape, dtype=None):
            parts = [base((units,), dtype=dtype) for _ in range(blocks)]
            parts[forget_index] = ops.ones((units,), dtype=dtype)
            return ops.concatenate(parts)

        return initializer

    def call(self, inputs, states, training=False):
        h_previous, c_previous = states[0], states[1]
        # (batch, blocks * units): every block's input and recurrent terms at once.
        z = (
            ops.matmul(inputs, self.kernel)
            + ops.matmul(h_previous, self.recurrent_kernel)
            + self.bias
        )
        pre = dict(zip(self.blocks, ops.split(z, len(self.blocks), axis=-1)))

        new_content = ops.tanh(pre["candidate"])  # (batch, units)
        if "input" in self.gates:
            new_content = self._gate("input", pre, c_previous) * new_content
        carried = c_previous
        if "forget" in self.gates:
            carried = self._gate("forget", pre, c_previous) * c_previous
        c = carried + new_content  # (batch, units)

        h = ops.tanh(c)
        if "output" in self.gates:
            # The output gate peeks at the new cell c_t, the others at c_{t-1}.
            h = self._gate("output", pre, c) * h
        return h, [h, c]

    def _gate(self, gate, pre, cell):
        value = pre[gate]
        if self.peepholes:
            value = value + self.peephole_weights[gate] * cell
        return ops.sigmoid(value)

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, self.units), dtype=self.compute_dtype),
            ops.zeros((batch_size, self.units), dtype=self.compute_dtype),
        ]

    # === Config ===

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "gates": list(self.gates),
                "peepholes": self.peepholes,
                "unit_forget_bias": self.unit_forget_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": keras.initializers.serialize(
                    self.recurrent_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "peephole_initializer": keras.initializers.serialize(
                    self.peephole_initializer
                ),
            }
        )
        return config


def make_recurrent_layer(
    cell: str,
    units: int,
    *,
    recurrent_dropout: float = 0.0,
    gates: str | Sequence[str] = "all",
    peepholes: bool = False,
    initializer=None,
    name: str | None = None,
) -> keras.layers.Layer:
    """Builds one recurrent layer of type `cell` returning sequences and states.

    Args:
        cell: One of CELL_TYPES.
        units: Hidden size.
        recurrent_dropout: Dropout on the recurrent connections (Gal & Ghahramani
            2016: one mask per sequence), supported by the Keras cells.
        gates, peepholes: Options of the `gated_lstm` cell; any other cell
            rejects non-default values so a typo does not silently do nothing.
        initializer: If given, used for input and recurrent kernels (Zaremba et
            al. 2014 initialize every weight uniformly in [-scale, scale]).
        name: Layer name.
    """
    check_cell_type(cell)
    kernels = {}
    if initializer is not None:
        kernels = {"kernel_initializer": initializer, "recurrent_initializer": initializer}
    common = {"return_sequences": True, "return_state": True, "name": name}
    if cell == "gated_lstm":
        if recurrent_dropout:
            raise ValueError(
                "recurrent_dropout is not supported by the gated_lstm cell; use "
                "dropout (between layers) or one of simple_rnn, lstm, gru."
            )
        return keras.layers.RNN(
            GatedLSTMCell(units, gates=gates, peepholes=peepholes, **kernels), **common
        )
    if tuple(normalize_gates(gates)) != GATES or peepholes:
        raise ValueError(
            f"gates and peepholes are options of the gated_lstm cell, not {cell!r}."
        )
    layer_class = {
        "simple_rnn": SimpleRNN,  # keras.layers.SimpleRNN with a fused CPU loop (zoo/fused_simple_rnn.py)
        "lstm": LSTM,  # keras.layers.LSTM with a fused CPU loop (zoo/fused_lstm.py)
        "gru": GRU,  # keras.layers.GRU with a fused CPU loop (zoo/fused_gru.py)
    }[cell]
    return layer_class(units, recurrent_dropout=recurrent_dropout, **kernels, **common)


def make_bidirectional(layer: keras.layers.Layer, name: str) -> keras.layers.Bidirectional:
    """``keras.layers.Bidirectional`` around ``layer``, keeping ``layer`` alive.

    Bidirectional rebuilds both directions from ``layer``'s config and then
    drops it. While a ``.keras`` file loads, Keras matches the objects it
    serializes by ``id()`` (its object-sharing scope), so a template freed here
    can hand its id to the next one, which is then taken for the earlier layer:
    the load fails now and then with "Forward layer and backward layer should
    have different `go_backwards` value" (seen with two bidirectional layers in
    one model, about 2% of loads). A plain reference, which Keras does not
    track, keeps each template's id unique for the wrapper's lifetime.
    """
    wrapper = keras.layers.Bidirectional(layer, name=name)
    object.__setattr__(wrapper, "_zoo_template", layer)
    return wrapper

