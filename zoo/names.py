"""The zoo's vocabulary of names: tasks, cells, gates, poolings.

Plain data with no imports, so a command line can offer these as choices in
`--help` without importing Keras and TensorFlow (see `training.cli`).
"""

TASKS = ("language_model", "classifier", "tagger")
CELL_TYPES = ("simple_rnn", "lstm", "gru", "gated_lstm")
GATES = ("input", "forget", "output")
POOLINGS = ("last", "mean", "max")
