"""An LSTM layer whose CPU loop does only the recurrent work, with its own gradient.

Keras runs an LSTM on a CPU as a generic loop over time steps: each step
multiplies its input by the kernel and its state by the recurrent kernel, and
TensorFlow's automatic gradient of that loop does four small products per step
(the two input gradients and the two weight gradients). Only two of those six
products depend on the previous step. `fused_lstm` keeps those two in the loop
and moves the other four out, where they are a few large matrix products over
the whole window, which a CPU runs several times faster than many products of
one batch each (the way cuDNN and PyTorch's CPU LSTM work):

    forward   Z_x = X W + b                      one product, all steps
              z_t = Z_x[t] + h_{t-1} U           in the loop
    backward  dz_t, dh_{t-1} = dz_t U^T          in the loop
              dW = X^T dZ, dU = H_{-1}^T dZ,     one product each, all steps
              db = sum dZ, dX = dZ W^T

The gradient is written out by hand (`tf.custom_gradient`) and tested against
TensorFlow's gradient of the Keras loop. The semantics are Keras' own, masks
included: a masked step keeps the state and repeats the previous output (zero
before the first real step), `go_backwards` reads the window from its end and
returns outputs in the order it read them.

Under a mixed policy the products run in bfloat16 and the rest of the loop
in float32: the gates, the cell state, the outputs it carries and their
gradients. A bfloat16 cell state loses the small increments an LSTM adds to it
step after step; with Adam that stalled a Zaremba-small language model at
valid perplexity 798 where float32 reached 400 (200k tokens, one epoch); with
float32 gates and state it reaches 398.

`LSTM` is `keras.layers.LSTM` taking this path where it applies (no GPU, the
default activations, no dropout inside the layer while training, not
unrolled) and Keras' own everywhere else; its weights, config and saved
models are the Keras layer's. `RNN_ZOO_FUSED_LSTM=0` in the environment turns
it off.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from zoo.switches import switched_on

ENVIRONMENT_SWITCH = "RNN_ZOO_FUSED_LSTM"
UNROLL_SWITCH = "RNN_ZOO_UNROLL_STEPS"
FLOAT32_STATE_SWITCH = "RNN_ZOO_FLOAT32_STATE"
DEFAULT_UNROLL_STEPS = 64


def fused_lstm_enabled() -> bool:
    """Whether the fused path is on (`RNN_ZOO_FUSED_LSTM` unset, or not 0/false/no/off)."""
    return switched_on(ENVIRONMENT_SWITCH)


def fused_lstm(inputs, h0, c0, mask, kernel, recurrent_kernel, bias, *, go_backwards=False):
    """Runs an LSTM over a window, as `keras.layers.LSTM` with the default activations does.

    Args:
        inputs: (batch, time, features).
        h0, c0: (batch, units) initial state.
        mask: (batch, time) booleans, or None for all steps real.
        kernel, recurrent_kernel, bias: Keras' LSTM weights, gates in the order
            input, forget, cell, output: (features, 4u), (u, 4u), (4u,).
        go_backwards: Read the window from its last step to its first.

    Returns:
        (last_output, outputs, [h, c]) as Keras' backend returns them:
        outputs (batch, time, units) in the order the steps were read.
    """
    x, m = time_major(inputs, mask, go_backwards)
    # Products in the inputs' dtype (bfloat16 under a mixed policy); the gates, the
    # cell state and the outputs the loop carries in float32 (see the module notes).
    kernel, recurrent_kernel = cast_all(inputs.dtype, kernel, recurrent_kernel)
    bias, h0, c0 = cast_all(state_dtype(inputs.dtype), bias, h0, c0)
    window = _lstm_window if mask is not None else _lstm_window_unmasked
    outputs, h, c = window(x, m, h0, c0, kernel, recurrent_kernel, bias)
    outputs = tf.transpose(tf.cast(outputs, inputs.dtype), [1, 0, 2])  # (batch, time, units)
    return outputs[:, -1], outputs, [h, c]


def state_dtype(dtype):
    """The dtype a loop keeps its gates and state in: float32 when its products run in
    a 16-bit type. A bfloat16 cell state has 8 significant bits: at 4.0 it moves in steps
    of 1/32, so the small updates an LSTM's cell accumulates over a window vanish.
    `RNN_ZOO_FLOAT32_STATE=0` keeps them in the products' dtype (for benchmarks only)."""
    dtype = tf.as_dtype(dtype)
    if dtype.size < 4 and switched_on(FLOAT32_STATE_SWITCH):
        return tf.float32
    return dtype


def product(a, b, dtype, **options):
    """`tf.matmul` of `a` and `b` with both operands in `dtype`, the result in `a`'s dtype."""
    return tf.cast(tf.matmul(tf.cast(a, dtype), tf.cast(b, dtype), **options), a.dtype)


def unroll_limit() -> int:
    """The longest window the fused loops unroll (`RNN_ZOO_UNROLL_STEPS`; 0: never unroll)."""
    value = os.environ.get(UNROLL_SWITCH, "").strip()
    try:
        return max(0, int(value)) if value else DEFAULT_UNROLL_STEPS
    except ValueError:
        raise ValueError(f"{UNROLL_SWITCH} must be a whole number of steps (0: never unroll), "
                         f"not {value!r}") from None


def window_scan(step, elements, initializer, *, reverse=False):
    """`tf.scan(step, elements, initializer, reverse=reverse)`, unrolled when the window is short.

    A window whose length is known when the graph is built (a language model's
    truncated-BPTT windows are) and at most `unroll_limit()` steps is written
    out step by step: TensorFlow's while loop costs some tens of microseconds a
    step in frame bookkeeping, which is a large share of a step whose products
    take a few hundred (batch 20, 200 units). Longer windows, and windows of a
    length that varies from batch to batch (padded sentences), take `tf.scan`.
    The result is the same either way: every carry, stacked over time in the
    elements' order.
    """
    flat = tf.nest.flatten(elements)
    steps = flat[0].shape[0]
    if steps is None or steps > unroll_limit():
        return tf.scan(step, elements, initializer=initializer, reverse=reverse)
    per_step = [tf.unstack(element, num=steps) for element in flat]
    carries = [None] * steps
    carry = initializer
    for t in (reversed(range(steps)) if reverse else range(steps)):
        carry = step(carry, tf.nest.pack_sequence_as(elements, [element[t] for element in per_step]))
        carries[t] = carry
    return tf.nest.map_structure(lambda *values: tf.stack(values), *carries)


def time_major(inputs, mask, go_backwards: bool):
    """(time, batch, features) inputs and a (time, batch, 1) step mask of their dtype,
    in the order the steps are read."""
    x = tf.transpose(inputs, [1, 0, 2])
    if mask is None:
        m = tf.ones(tf.shape(x)[:2], dtype=inputs.dtype)
    else:
        m = tf.transpose(tf.cast(mask, inputs.dtype))  # cast first: oneDNN transposes no booleans
    if go_backwards:
        x, m = tf.reverse(x, [0]), tf.reverse(m, [0])
    return x, m[:, :, None]


def cast_all(dtype, *tensors):
    """The weights and states as tensors of the inputs' dtype (bfloat16 under a mixed policy)."""
    return [tf.cast(tf.convert_to_tensor(tensor), dtype) for tensor in tensors]


def fused_loop_applies(layer, training) -> bool:
    """What a fused loop needs of a Keras recurrent layer, whichever the cell: no GPU
    (cuDNN's kernel is faster there), the default activations, a bias, no unrolling,
    and no dropout inside the layer while training."""
    cell = layer.cell
    # A SimpleRNN cell has no recurrent activation: nothing to check there.
    recurrent_activation = getattr(cell, "recurrent_activation", keras.activations.sigmoid)
    return (not tf.config.list_logical_devices("GPU")
            and cell.use_bias and not layer.unroll and not layer.zero_output_for_mask
            and cell.activation is keras.activations.tanh
            and recurrent_activation is keras.activations.sigmoid
            and not (training and (cell.dropout or cell.recurrent_dropout)))


def masked_update(keep, new, old):
    """A masked loop's update: `new` where the step is real (keep 1), `old` where masked."""
    return new if keep is None else keep * new + (1 - keep) * old


def _lstm_window_function(masked: bool):
    """`_lstm_window` for windows with a step mask, or without one (fewer ops per step)."""

    @tf.custom_gradient
    def window(x, m, h0, c0, kernel, recurrent_kernel, bias):
        # x, kernel and recurrent_kernel in the products' dtype; bias, h0, c0 and
        # everything the loop carries in the state's (float32 under a mixed policy).
        steps, batch, features = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        units = tf.shape(recurrent_kernel)[0]
        products, state = x.dtype, h0.dtype
        x_flat = tf.reshape(x, [-1, features])
        z_x = tf.reshape(tf.cast(tf.matmul(x_flat, kernel), state) + bias, [steps, batch, 4 * units])
        m = tf.cast(m, state)

        def step(carry, inputs):
            h, c, out, _, _, _ = carry
            z_in, keep = inputs if masked else (inputs, None)
            z = z_in + product(h, recurrent_kernel, products)
            # One sigmoid over all four gates (the cell gate's is not used)
            # costs less than three calls on a quarter each.
            sig = tf.sigmoid(z)
            i, f, _, o = tf.split(sig, 4, axis=1)
            g = tf.tanh(tf.split(z, 4, axis=1)[2])
            c_new = f * c + i * g
            tanh_c = tf.tanh(c_new)
            h_new = o * tanh_c
            # A masked step keeps the state and repeats the previous output.
            out_new = h_new if keep is None else masked_update(keep, h_new, out)
            return masked_update(keep, h_new, h), masked_update(keep, c_new, c), out_new, sig, g, tanh_c

        zeros = tf.zeros_like(h0)
        start = (h0, c0, zeros, tf.zeros([batch, 4 * units], state), zeros, zeros)
        hs, cs, outs, sigs, gs, tanh_cs = window_scan(step, (z_x, m) if masked else z_x, start)

        def gradient(d_outputs, d_h, d_c):
            h_prev = tf.concat([h0[None], hs[:-1]], axis=0)  # the state each step started from
            c_prev = tf.concat([c0[None], cs[:-1]], axis=0)
            # Every factor of the backward step that depends on the forward pass
            # only, for all steps at once, so that the loop does a few products:
            #   dc_t = dc + dh_t * o (1 - tanh(c)^2)
            #   dz_t = [dc_t, dc_t, dc_t, dh_t] * local     (gates i, f, g, o)
            i, f, _, o = tf.split(sigs, 4, axis=2)
            local = tf.concat([gs * i * (1 - i), c_prev * f * (1 - f), i * (1 - gs * gs),
                               tanh_cs * o * (1 - o)], axis=2)
            through_c = o * (1 - tanh_cs * tanh_cs)
            # U^T once, outside the loop: the product with transpose_b inside it ran at
            # half the speed of this plain one at the medium shape (20x2600 by 2600x650,
            # oneDNN, fp32): 91 against 44 ms for 35 steps.
            recurrent_kernel_t = tf.transpose(recurrent_kernel)

            def back(carry, inputs):
                dh, dc, d_out, _ = carry  # gradients reaching h_t, c_t and out_t from later steps
                if masked:
                    d_output, keep, local_t, through_c_t, f_t = inputs
                    d_out_total = d_out + d_output
                    dh_new = keep * (dh + d_out_total)
                    dc_new = keep * dc + dh_new * through_c_t
                else:  # out_t is h_t: one gradient reaches it
                    d_output, local_t, through_c_t, f_t = inputs
                    dh_new = dh + d_output
                    dc_new = dc + dh_new * through_c_t
                dz = tf.concat([dc_new, dc_new, dc_new, dh_new], axis=1) * local_t
                dh_before = product(dz, recurrent_kernel_t, products)
                dc_before = dc_new * f_t
                if not masked:
                    return dh_before, dc_before, d_out, dz
                return ((1 - keep) * dh + dh_before, (1 - keep) * dc + dc_before,
                        (1 - keep) * d_out_total, dz)

            last = (d_h, d_c, tf.zeros_like(d_h), tf.zeros([batch, 4 * units], state))
            elements = (d_outputs, local, through_c, f)
            if masked:
                elements = (d_outputs, m, local, through_c, f)
            dhs, dcs, _, dzs = window_scan(back, elements, last, reverse=True)
            dz_flat = tf.reshape(dzs, [-1, 4 * units])
            d_bias = tf.reduce_sum(dz_flat, axis=0)
            dz_flat = tf.cast(dz_flat, products)
            d_kernel = tf.matmul(x_flat, dz_flat, transpose_a=True)
            d_recurrent = tf.matmul(tf.cast(tf.reshape(h_prev, [-1, units]), products), dz_flat,
                                    transpose_a=True)
            d_x = tf.reshape(tf.matmul(dz_flat, kernel, transpose_b=True), [steps, batch, features])
            return d_x, tf.zeros_like(x[:, :, :1]), dhs[0], dcs[0], d_kernel, d_recurrent, d_bias

        return (outs, hs[-1], cs[-1]), gradient

    return window


# Time-major LSTM over x (T, B, D) with step mask m (T, B, 1): outputs (T, B, U), h, c.
_lstm_window = _lstm_window_function(masked=True)
_lstm_window_unmasked = _lstm_window_function(masked=False)  # m is ignored: every step is real


@keras.saving.register_keras_serializable(package="zoo")
class LSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` with the fused CPU loop of `fused_lstm` where it applies."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if self._fused_applies(training):
            return fused_lstm(sequences, initial_state[0], initial_state[1], mask, self.cell.kernel,
                              self.cell.recurrent_kernel, self.cell.bias, go_backwards=self.go_backwards)
        return super().inner_loop(sequences, initial_state, mask, training=training)

    def _fused_applies(self, training) -> bool:
        return fused_lstm_enabled() and fused_loop_applies(self, training)
