"""The gated LSTM cell against a NumPy transcription of its equations."""

import itertools

import keras
import numpy as np
import pytest

from zoo.cells import GATES, GatedLSTMCell, make_recurrent_layer, normalize_gates

UNITS, INPUT_DIM, BATCH, TIME = 5, 3, 2, 6
GATE_SUBSETS = [
    subset for size in range(4) for subset in itertools.combinations(GATES, size)
]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_gated_lstm(x, weights, gates, peepholes):
    """The equations of the issue, written out step by step with NumPy."""
    blocks = [b for b in ("input", "forget", "candidate", "output") if b == "candidate" or b in gates]
    kernel, recurrent, bias = weights[:3]
    peephole = dict(zip([g for g in GATES if g in gates], weights[3:])) if peepholes else {}
    batch, time, _ = x.shape
    h = np.zeros((batch, UNITS))
    c = np.zeros((batch, UNITS))
    outputs = []
    for t in range(time):
        z = x[:, t] @ kernel + h @ recurrent + bias
        pre = {b: z[:, i * UNITS:(i + 1) * UNITS] for i, b in enumerate(blocks)}

        def gate(name, cell):
            value = pre[name] + (peephole[name] * cell if name in peephole else 0.0)
            return sigmoid(value)

        content = np.tanh(pre["candidate"])
        if "input" in gates:
            content = gate("input", c) * content
        carried = gate("forget", c) * c if "forget" in gates else c
        c = carried + content
        h = np.tanh(c)
        if "output" in gates:
            h = gate("output", c) * h
        outputs.append(h)
    return np.stack(outputs, axis=1), h, c


def random_weights(cell, rng):
    return [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in cell.weights]


@pytest.mark.parametrize("peepholes", [False, True])
@pytest.mark.parametrize("gates", GATE_SUBSETS, ids=lambda g: "+".join(g) or "none")
def test_gated_cell_matches_numpy_equations(gates, peepholes):
    rng = np.random.default_rng(len(gates) * 2 + peepholes)
    x = rng.normal(size=(BATCH, TIME, INPUT_DIM)).astype("float32")
    layer = keras.layers.RNN(
        GatedLSTMCell(UNITS, gates=gates, peepholes=peepholes),
        return_sequences=True,
        return_state=True,
    )
    layer.build((None, None, INPUT_DIM))
    weights = random_weights(layer.cell, rng)
    layer.cell.set_weights(weights)
    outputs, h, c = layer(x)
    expected_outputs, expected_h, expected_c = numpy_gated_lstm(x, weights, gates, peepholes)
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, expected_h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c, expected_c, rtol=1e-5, atol=1e-5)


def test_all_gates_without_peepholes_equals_keras_lstm():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(BATCH, TIME, INPUT_DIM)).astype("float32")
    reference = keras.layers.LSTM(UNITS, return_sequences=True)
    reference.build((None, None, INPUT_DIM))
    weights = random_weights(reference, rng)
    reference.set_weights(weights)

    gated = keras.layers.RNN(GatedLSTMCell(UNITS, gates="all"), return_sequences=True)
    gated.build((None, None, INPUT_DIM))
    gated.set_weights(weights)
    np.testing.assert_allclose(gated(x), reference(x), rtol=1e-5, atol=1e-6)


def test_gateless_cell_has_only_candidate_weights_and_accumulates():
    cell = GatedLSTMCell(UNITS, gates="none", peepholes=True)
    layer = keras.layers.RNN(cell, return_state=True)
    layer.build((None, None, INPUT_DIM))
    assert cell.kernel.shape == (INPUT_DIM, UNITS)
    assert cell.peephole_weights == {}  # no gates, nothing to peep from
    # Zero weights and bias 0.5: each step adds tanh(0.5) to c.
    cell.set_weights([np.zeros((INPUT_DIM, UNITS)), np.zeros((UNITS, UNITS)), np.full(UNITS, 0.5)])
    _, h, c = layer(np.zeros((1, 4, INPUT_DIM), dtype="float32"))
    np.testing.assert_allclose(c, np.full((1, UNITS), 4 * np.tanh(0.5)), rtol=1e-6)
    np.testing.assert_allclose(h, np.tanh(c), rtol=1e-6)


def test_forget_bias_starts_at_one_like_keras():
    cell = GatedLSTMCell(UNITS, gates=("forget", "output"))
    keras.layers.RNN(cell).build((None, None, INPUT_DIM))
    bias = cell.bias.numpy().reshape(3, UNITS)  # blocks: forget, candidate, output
    np.testing.assert_array_equal(bias, [[1.0] * UNITS, [0.0] * UNITS, [0.0] * UNITS])


def test_gate_specs_normalize():
    assert normalize_gates("all") == GATES
    assert normalize_gates("none") == ()
    assert normalize_gates("output+input") == ("input", "output")
    assert normalize_gates(["forget"]) == ("forget",)
    with pytest.raises(ValueError, match="Valid gates: input, forget, output"):
        normalize_gates("input+remember")


def test_cell_config_round_trip():
    cell = GatedLSTMCell(UNITS, gates="input+forget", peepholes=True, name="gated")
    clone = GatedLSTMCell.from_config(cell.get_config())
    assert clone.get_config() == cell.get_config()
    assert clone.gates == ("input", "forget") and clone.peepholes


def test_gate_options_rejected_for_keras_cells_and_recurrent_dropout_for_gated():
    with pytest.raises(ValueError, match="options of the gated_lstm cell"):
        make_recurrent_layer("lstm", 4, gates="input")
    with pytest.raises(ValueError, match="recurrent_dropout is not supported"):
        make_recurrent_layer("gated_lstm", 4, recurrent_dropout=0.1)
    with pytest.raises(ValueError, match="Valid cells: simple_rnn, lstm, gru, gated_lstm"):
        make_recurrent_layer("transformer", 4)
