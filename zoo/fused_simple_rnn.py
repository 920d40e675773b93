"""A SimpleRNN layer whose CPU loop does only the recurrent work, with its own gradient.

The same design as `zoo.fused_lstm`, for Keras' SimpleRNN (Elman's network):

    a_t = x_t W + b + h_{t-1} U,   h_t = tanh(a_t)

The input projection of every step is one product before the loop; the loop
adds `h_{t-1} U` and the tanh. The backward loop keeps only `da_t U^T`:

    da_t = (dh_t) (1 - h_t^2),   dh_{t-1} = da_t U^T (+ what reaches h_{t-1} from outside)

and the weight and input gradients are products over the whole window after it.
Keras runs its SimpleRNN as a generic loop over its cell, with the input product
in every step and TensorFlow's gradient of that loop. Masks and `go_backwards`
behave as in Keras. `SimpleRNN` is `keras.layers.SimpleRNN` taking this path
where it applies (no GPU, tanh, a bias, no dropout inside the layer while
training, not unrolled), and `RNN_ZOO_FUSED_SIMPLE_RNN=0` turns it off.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.fused_lstm import cast_all, fused_loop_applies, masked_update, time_major, window_scan
from zoo.switches import switched_on

ENVIRONMENT_SWITCH = "RNN_ZOO_FUSED_SIMPLE_RNN"


def fused_simple_rnn_enabled() -> bool:
    """Whether the fused path is on (`RNN_ZOO_FUSED_SIMPLE_RNN` unset, or not 0/false/no/off)."""
    return switched_on(ENVIRONMENT_SWITCH)


def fused_simple_rnn(inputs, h0, mask, kernel, recurrent_kernel, bias, *, go_backwards=False):
    """Runs a SimpleRNN (tanh) over a window, as `keras.layers.SimpleRNN` does.

    Args:
        inputs: (batch, time, features); h0: (batch, units).
        mask: (batch, time) booleans, or None for all steps real.
        kernel, recurrent_kernel, bias: Keras' SimpleRNN weights: (features, u), (u, u), (u,).
        go_backwards: Read the window from its last step to its first.

    Returns:
        (last_output, outputs, [h]) as Keras' backend returns them.
    """
    x, m = time_major(inputs, mask, go_backwards)
    kernel, recurrent_kernel, bias, h0 = cast_all(inputs.dtype, kernel, recurrent_kernel, bias, h0)
    window = _simple_rnn_window if mask is not None else _simple_rnn_window_unmasked
    outputs, h = window(x, m, h0, kernel, recurrent_kernel, bias)
    outputs = tf.transpose(outputs, [1, 0, 2])
    return outputs[:, -1], outputs, [h]


def _simple_rnn_window_function(masked: bool):
    """`_simple_rnn_window` for windows with a step mask, or without one (fewer ops per step)."""

    @tf.custom_gradient
    def window(x, m, h0, kernel, recurrent_kernel, bias):
        steps, batch, features = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        units = tf.shape(recurrent_kernel)[0]
        x_flat = tf.reshape(x, [-1, features])
        x_proj = tf.reshape(tf.matmul(x_flat, kernel) + bias, [steps, batch, units])

        def step(carry, inputs):
            h, out, _ = carry
            x_t, keep = inputs if masked else (inputs, None)
            h_new = tf.tanh(x_t + tf.matmul(h, recurrent_kernel))
            out_new = h_new if keep is None else masked_update(keep, h_new, out)
            return masked_update(keep, h_new, h), out_new, h_new  # h_new: for the backward pass

        zeros = tf.zeros_like(h0)
        hs, outs, h_news = window_scan(step, (x_proj, m) if masked else x_proj, (h0, zeros, zeros))

        def gradient(d_outputs, d_h):
            h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
            through_tanh = 1 - h_news * h_news  # for all steps at once
            # U^T once, outside the loop (see zoo.fused_lstm).
            recurrent_kernel_t = tf.transpose(recurrent_kernel)

            def back(carry, inputs):
                dh, d_out, _ = carry  # gradients reaching h_t and out_t from later steps
                if masked:
                    d_output, keep, through_tanh_t = inputs
                    d_out_total = d_out + d_output
                    da = keep * (dh + d_out_total) * through_tanh_t
                    dh_before = tf.matmul(da, recurrent_kernel_t)
                    return (1 - keep) * dh + dh_before, (1 - keep) * d_out_total, da
                d_output, through_tanh_t = inputs  # out_t is h_t: one gradient reaches it
                da = (dh + d_output) * through_tanh_t
                return tf.matmul(da, recurrent_kernel_t), d_out, da

            last = (d_h, tf.zeros_like(d_h), tf.zeros_like(d_h))
            elements = (d_outputs, m, through_tanh) if masked else (d_outputs, through_tanh)
            dhs, _, das = window_scan(back, elements, last, reverse=True)
            da_flat = tf.reshape(das, [-1, units])
            d_kernel = tf.matmul(x_flat, da_flat, transpose_a=True)
            d_recurrent = tf.matmul(tf.reshape(h_prev, [-1, units]), da_flat, transpose_a=True)
            d_inputs = tf.reshape(tf.matmul(da_flat, kernel, transpose_b=True), [steps, batch, features])
            return (d_inputs, tf.zeros_like(m), dhs[0], d_kernel, d_recurrent,
                    tf.reduce_sum(da_flat, axis=0))

        return (outs, hs[-1]), gradient

    return window


# Time-major SimpleRNN over x (T, B, D) with step mask m (T, B, 1): outputs (T, B, U), h.
_simple_rnn_window = _simple_rnn_window_function(masked=True)
_simple_rnn_window_unmasked = _simple_rnn_window_function(masked=False)  # m is ignored: every step is real


@keras.saving.register_keras_serializable(package="zoo")
class SimpleRNN(keras.layers.SimpleRNN):
    """`keras.layers.SimpleRNN` with the fused CPU loop of `fused_simple_rnn` where it applies."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if self._fused_applies(training):
            state = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
            return fused_simple_rnn(sequences, state, mask, self.cell.kernel, self.cell.recurrent_kernel,
                                    self.cell.bias, go_backwards=self.go_backwards)
        return super().inner_loop(sequences, initial_state, mask, training=training)

    def _fused_applies(self, training) -> bool:
        return fused_simple_rnn_enabled() and fused_loop_applies(self, training)
