"""A GRU layer whose CPU loop does only the recurrent work, with its own gradient.

The same design as `zoo.fused_lstm`, for Keras' GRU with `reset_after=True`
(its default, and cuDNN's): per step

    [x_z, x_r, x_h] = x_t W + b_in          all steps in one product, before the loop
    [u_z, u_r, u_h] = h_{t-1} U + b_rec      in the loop
    z = sigmoid(x_z + u_z), r = sigmoid(x_r + u_r), n = tanh(x_h + r * u_h)
    h_t = z * h_{t-1} + (1 - z) * n

The backward loop keeps only `dz_t U^T`; the weight and input gradients are
products over the whole window after it. Masks and `go_backwards` behave as in
Keras. Under a mixed policy the products run in bfloat16 and the gates and the
state in float32, as in the LSTM loop: with z near 1 a step moves h by less
than a bfloat16 state can hold. `GRU` is `keras.layers.GRU` taking this path where it applies, and
`RNN_ZOO_FUSED_GRU=0` turns it off.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.fused_lstm import (cast_all, fused_loop_applies, masked_update, product, state_dtype,
                             time_major, window_scan)
from zoo.switches import switched_on

ENVIRONMENT_SWITCH = "RNN_ZOO_FUSED_GRU"


def fused_gru_enabled() -> bool:
    """Whether the fused path is on (`RNN_ZOO_FUSED_GRU` unset, or not 0/false/no/off)."""
    return switched_on(ENVIRONMENT_SWITCH)


def fused_gru(inputs, h0, mask, kernel, recurrent_kernel, bias, *, go_backwards=False):
    """Runs a GRU (reset after the product) over a window, as `keras.layers.GRU` does.

    Args:
        inputs: (batch, time, features); h0: (batch, units).
        mask: (batch, time) booleans, or None for all steps real.
        kernel, recurrent_kernel, bias: Keras' GRU weights, gates in the order
            update, reset, candidate: (features, 3u), (u, 3u), (2, 3u).
        go_backwards: Read the window from its last step to its first.

    Returns:
        (last_output, outputs, [h]) as Keras' backend returns them.
    """
    x, m = time_major(inputs, mask, go_backwards)
    # Products in the inputs' dtype, gates and state in float32 (as fused_lstm's).
    kernel, recurrent_kernel = cast_all(inputs.dtype, kernel, recurrent_kernel)
    bias, h0 = cast_all(state_dtype(inputs.dtype), bias, h0)
    window = _gru_window if mask is not None else _gru_window_unmasked
    outputs, h = window(x, m, h0, kernel, recurrent_kernel, bias[0], bias[1])
    outputs = tf.transpose(tf.cast(outputs, inputs.dtype), [1, 0, 2])
    return outputs[:, -1], outputs, [h]


def _gru_window_function(masked: bool):
    """`_gru_window` for windows with a step mask, or without one (fewer ops per step)."""

    @tf.custom_gradient
    def window(x, m, h0, kernel, recurrent_kernel, input_bias, recurrent_bias):
        steps, batch, features = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        units = tf.shape(recurrent_kernel)[0]
        products, state = x.dtype, h0.dtype
        x_flat = tf.reshape(x, [-1, features])
        x_proj = tf.reshape(tf.cast(tf.matmul(x_flat, kernel), state) + input_bias,
                            [steps, batch, 3 * units])
        m = tf.cast(m, state)

        def step(carry, inputs):
            h, out = carry[:2]
            x_t, keep = inputs if masked else (inputs, None)
            x_z, x_r, x_h = tf.split(x_t, 3, axis=1)
            u = product(h, recurrent_kernel, products) + recurrent_bias
            u_z, u_r, u_h = tf.split(u, 3, axis=1)
            z, r = tf.sigmoid(x_z + u_z), tf.sigmoid(x_r + u_r)
            n = tf.tanh(x_h + r * u_h)
            h_new = z * h + (1 - z) * n
            out_new = h_new if keep is None else masked_update(keep, h_new, out)
            return masked_update(keep, h_new, h), out_new, z, r, n, u_h  # the last four: for the backward pass

        zeros = tf.zeros_like(h0)
        start = (h0, zeros, zeros, zeros, zeros, zeros)
        hs, outs, z, r, n, u_h = window_scan(step, (x_proj, m) if masked else x_proj, start)

        def gradient(d_outputs, d_h):
            h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
            # The gradient reaching each step's new state, dh_t, is all the loop
            # has to find; everything else is dh_t times factors of the forward
            # pass, computed here for all steps at once:
            #   into x W + b_in:   [d_z, d_r, d_n] = dh_t * into_x
            #   into h U + b_rec:  [d_z, d_r, d_n * r] = dh_t * into_u
            #   dh_{t-1} = dh_t * z + [d_z, d_r, d_n * r] U^T
            through_n = (1 - z) * (1 - n * n)           # tanh's
            through_z = (h_prev - n) * z * (1 - z)      # sigmoid's
            through_r = through_n * u_h * r * (1 - r)
            into_x = tf.concat([through_z, through_r, through_n], axis=2)
            into_u = tf.concat([through_z, through_r, through_n * r], axis=2)
            # U^T once, outside the loop: a product with transpose_b inside it ran at
            # half the speed of this plain one at batch 20 (oneDNN, fp32).
            recurrent_kernel_t = tf.transpose(recurrent_kernel)

            def back(carry, inputs):
                dh, d_out, _ = carry  # gradients reaching h_t and out_t from later steps
                if masked:
                    d_output, keep, into_u_t, z_t = inputs
                    d_out_total = d_out + d_output
                    dh_new = keep * (dh + d_out_total)
                else:  # out_t is h_t: one gradient reaches it
                    d_output, into_u_t, z_t = inputs
                    dh_new = dh + d_output
                d_u = tf.concat([dh_new, dh_new, dh_new], axis=1) * into_u_t
                dh_before = dh_new * z_t + product(d_u, recurrent_kernel_t, products)
                if not masked:
                    return dh_before, d_out, dh_new
                return (1 - keep) * dh + dh_before, (1 - keep) * d_out_total, dh_new

            last = (d_h, tf.zeros_like(d_h), tf.zeros_like(d_h))
            elements = (d_outputs, m, into_u, z) if masked else (d_outputs, into_u, z)
            dhs, _, dh_news = window_scan(back, elements, last, reverse=True)
            dh3 = tf.concat([dh_news, dh_news, dh_news], axis=2)
            d_x_flat = tf.reshape(dh3 * into_x, [-1, 3 * units])
            d_u_flat = tf.reshape(dh3 * into_u, [-1, 3 * units])
            d_input_bias = tf.reduce_sum(d_x_flat, axis=0)
            d_recurrent_bias = tf.reduce_sum(d_u_flat, axis=0)
            d_x_flat, d_u_flat = tf.cast(d_x_flat, products), tf.cast(d_u_flat, products)
            d_kernel = tf.matmul(x_flat, d_x_flat, transpose_a=True)
            d_recurrent = tf.matmul(tf.cast(tf.reshape(h_prev, [-1, units]), products), d_u_flat,
                                    transpose_a=True)
            d_inputs = tf.reshape(tf.matmul(d_x_flat, kernel, transpose_b=True), [steps, batch, features])
            return (d_inputs, tf.zeros_like(x[:, :, :1]), dhs[0], d_kernel, d_recurrent,
                    d_input_bias, d_recurrent_bias)

        return (outs, hs[-1]), gradient

    return window


# Time-major GRU over x (T, B, D) with step mask m (T, B, 1): outputs (T, B, U), h.
_gru_window = _gru_window_function(masked=True)
_gru_window_unmasked = _gru_window_function(masked=False)  # m is ignored: every step is real


@keras.saving.register_keras_serializable(package="zoo")
class GRU(keras.layers.GRU):
    """`keras.layers.GRU` with the fused CPU loop of `fused_gru` where it applies."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if self._fused_applies(training):
            state = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
            return fused_gru(sequences, state, mask, self.cell.kernel, self.cell.recurrent_kernel,
                             self.cell.bias, go_backwards=self.go_backwards)
        return super().inner_loop(sequences, initial_state, mask, training=training)

    def _fused_applies(self, training) -> bool:
        return fused_gru_enabled() and self.cell.reset_after and fused_loop_applies(self, training)
