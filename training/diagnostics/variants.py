"""Model variants by name: a cell, or the gated LSTM with a gate subset ("gated_lstm:input+output").

Plain Python with no TensorFlow, so the command line can check `--variants`
before it imports anything heavy.
"""

from __future__ import annotations

from training.cli import zoo_catalog

# The cells the reports compare by default: the three Keras cells, the gated
# LSTM with all gates, and its gateless accumulator (c_t = c_{t-1} + tanh(...)).
DEFAULT_VARIANTS = ("simple_rnn", "lstm", "gru", "gated_lstm", "gated_lstm:none")


def parse_variant(variant: str) -> tuple[str, dict]:
    """"lstm" -> ("lstm", {}); "gated_lstm:input+output" -> ("gated_lstm", {"gates": "input+output"}).

    A gated_lstm variant without ":GATES" has all three gates (the zoo's default).

    Raises:
        ValueError: an unknown cell or gate, or gates on another cell.
    """
    catalog = zoo_catalog()
    cell, _, gates = variant.partition(":")
    if cell not in catalog.CELL_TYPES:
        raise ValueError(f"Unknown cell {cell!r} in {variant!r}. Valid cells: "
                         f"{', '.join(catalog.CELL_TYPES)} (gated_lstm:GATES for a gate subset, "
                         "e.g. gated_lstm:none or gated_lstm:input+forget).")
    if not gates:
        return cell, {}
    if cell != "gated_lstm":
        raise ValueError(f"Only gated_lstm takes gates ({variant!r}).")
    names = [] if gates in ("none", "") else (list(catalog.GATES) if gates == "all"
                                               else gates.replace(",", "+").split("+"))
    unknown = [name for name in names if name not in catalog.GATES]
    if unknown:
        raise ValueError(f"Unknown gate(s) {unknown} in {variant!r}. Valid gates: "
                         f"{', '.join(catalog.GATES)} (or all / none).")
    return cell, {"gates": gates}
