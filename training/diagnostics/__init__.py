"""Vanishing and exploding gradients, measured on zoo models (`rnn-zoo-diagnose`).

- `gradient_flow`: the norm of dL_T/dh_t and dL_T/dx_t against the distance
  T - t, the effective memory, and a SimpleRNN's spectral radius.
- `steps`: a training loop that records the global gradient norm before and
  after clipping at every step.
- `long_dependency`: the first-token task, trained per cell and length.
- `clipping`: the exploding case, trained with and without clipping.
- `initial_state`: zero against learned initial state on a real task.
- `sources`, `plots`, `report`, `cli`: models and batches from presets or runs,
  the figures, the JSON and Markdown summaries, the command.

The modules import TensorFlow; this package file does not, so the command
line can parse its arguments first.
"""
