"""Clipping by the global norm of all gradients, as Zaremba et al. and PyTorch's
`clip_grad_norm_` do, where Keras' own `global_clipnorm` gets two cases wrong.

- **Repeated rows of a sparse gradient.** An embedding's gradient arrives as
  `tf.IndexedSlices`, one row per token of the batch, the same row as often as
  its token occurs. Keras squares those rows before adding up the repeats, so
  a batch with "the" forty times counts forty small squares where the true
  gradient has one large row: the norm comes out too small and clipping lets
  through more than the threshold. Keras then multiplies the slices by the
  clipping factor as a dense tensor, turning a few hundred rows into a full
  vocabulary-by-width update every step. Here the repeats are summed first
  (only the rows the batch touched) and the slices stay slices.
- **Several replicas.** Under a `tf.distribute` strategy Keras clips each
  replica's share of the gradient before the shares are summed, which is not
  the clipping of the global batch's gradient. Here the shares are summed
  first, the sum is clipped, and each replica hands the optimizer an equal
  part of it (which the optimizer's own sum turns back into the clipped sum).

`with_global_norm_clipping(keras.optimizers.SGD)` is SGD doing both; it saves
as the optimizer it extends, so a saved model loads without this module.
"""

from __future__ import annotations

import functools

import tensorflow as tf


def dense_rows(gradient):
    """An IndexedSlices gradient with its repeated rows summed (unique indices)."""
    unique, positions = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, positions, tf.shape(unique)[0])
    return tf.IndexedSlices(values, unique, gradient.dense_shape)


def global_norm(gradients) -> tf.Tensor:
    """The L2 norm of all gradients together, as if every one were dense."""
    squares = []
    for gradient in gradients:
        if gradient is None:
            continue
        if isinstance(gradient, tf.IndexedSlices):
            gradient = dense_rows(gradient).values
        # l2_loss is sum(g**2) / 2 in one pass, without a tensor of squares.
        squares.append(2.0 * tf.nn.l2_loss(tf.cast(gradient, tf.float32)))
    return tf.sqrt(tf.add_n(squares))


def clip_by_global_norm(gradients, clip_norm: float):
    """`gradients` scaled by min(1, clip_norm / global norm); slices stay slices.

    A non-finite norm gives NaN gradients, as Keras' and TensorFlow's clipping
    do, so that a diverged step is seen rather than hidden.
    """
    norm = global_norm(gradients)
    scale = clip_norm * tf.minimum(1.0 / norm, 1.0 / clip_norm) + (norm - norm)
    clipped = []
    for gradient in gradients:
        if gradient is None:
            clipped.append(None)
        elif isinstance(gradient, tf.IndexedSlices):
            values = gradient.values * tf.cast(scale, gradient.values.dtype)
            clipped.append(tf.IndexedSlices(values, gradient.indices, gradient.dense_shape))
        else:
            clipped.append(gradient * tf.cast(scale, gradient.dtype))
    return clipped


class _GlobalNormClipping:
    """Overrides a Keras optimizer's clipping with `clip_by_global_norm`."""

    def _clip_gradients(self, grads):
        if not self.global_clipnorm:
            return super()._clip_gradients(grads)
        context = tf.distribute.get_replica_context()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if context is None or replicas == 1:
            return clip_by_global_norm(grads, self.global_clipnorm)
        dense = [None if g is None else tf.convert_to_tensor(g) for g in grads]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, dense)
        return [None if g is None else g / replicas
                for g in clip_by_global_norm(summed, self.global_clipnorm)]


@functools.cache
def with_global_norm_clipping(optimizer_class: type) -> type:
    """`optimizer_class` clipping by the true global norm (see the module notes).

    The subclass keeps the base class's name and module, so that a model
    compiled with it saves (and loads) as an ordinary Keras optimizer.
    """
    return type(optimizer_class.__name__, (_GlobalNormClipping, optimizer_class),
                {"__module__": optimizer_class.__module__,
                 "__qualname__": optimizer_class.__qualname__,
                 "__doc__": optimizer_class.__doc__})
