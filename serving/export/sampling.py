"""The next token drawn inside the graph: the `sample` signature's arithmetic.

A language model's `step` returns a whole distribution per row (a 10,000-word
vocabulary is 40 kB of logits a row; at 64 rows 2.6 MB a step to encode, send
and decode). `sample` runs the same step and returns only the drawn token, its
log-probability and the state. The client still owns the randomness: it sends
one uniform number per row, drawn from that row's own generator, and the graph
inverts the cumulative distribution exactly as `serving.generation.samplers`
does in NumPy (float64, lower ids first among ties). The same seed therefore
gives the same text whichever side draws.

    filtered = logits / temperature, the top_k best kept (0: all), <pad> never
    p        = softmax(filtered)                      float64
    token    = first id whose cumulative p exceeds uniform * total
    greedy   = temperature 0: the argmax, the uniform is ignored
"""

from __future__ import annotations

import tensorflow as tf

from training.vocab import PAD_ID


def filter_logits(logits, temperature, top_k):
    """float64 (batch, V) logits scaled by temperature, -inf outside each row's top_k and at <pad>.

    Args:
        logits: (batch, V) float32 scores.
        temperature: (batch,) float64; rows at 0 or below are greedy (not scaled here).
        top_k: (batch,) int32; 0 (or >= V) keeps every token.
    """
    logits = tf.cast(logits, tf.float64)
    vocabulary = tf.shape(logits)[1]
    pad = tf.one_hot(tf.fill([tf.shape(logits)[0]], PAD_ID), vocabulary, on_value=True,
                     off_value=False)
    logits = tf.where(pad, tf.constant(-float("inf"), tf.float64), logits)
    scaled = logits / tf.where(temperature > 0, temperature, tf.ones_like(temperature))[:, None]

    # Top-k with exactly k tokens kept, the lower ids winning a tie at the
    # boundary (samplers.TopK): everything above the k-th value, then as many
    # tokens equal to it as are still missing, in id order.
    k = tf.where((top_k > 0) & (top_k < vocabulary), top_k, vocabulary)  # (batch,)
    largest_k = tf.maximum(tf.reduce_max(k), 1)
    best = tf.math.top_k(scaled, k=tf.minimum(largest_k, vocabulary), sorted=True).values
    threshold = tf.gather(best, k - 1, batch_dims=1)[:, None]  # (batch, 1): the k-th value
    above = scaled > threshold
    tied = tf.equal(scaled, threshold)
    missing = k[:, None] - tf.reduce_sum(tf.cast(above, tf.int32), axis=1, keepdims=True)
    kept = above | (tied & (tf.cumsum(tf.cast(tied, tf.int32), axis=1) <= missing))
    return tf.where(kept, scaled, tf.constant(-float("inf"), tf.float64))


def draw(filtered, uniforms):
    """(batch,) int64 ids: the inverse of each row's cumulative distribution at its uniform.

    Args:
        filtered: float64 (batch, V) logits, -inf for tokens that cannot be drawn.
        uniforms: float64 (batch,) numbers in [0, 1).
    """
    shifted = filtered - tf.reduce_max(filtered, axis=1, keepdims=True)
    probabilities = tf.exp(shifted - tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=1,
                                                                keepdims=True)))
    cumulative = tf.cumsum(probabilities, axis=1)  # (batch, V)
    target = uniforms[:, None] * cumulative[:, -1:]
    token = tf.searchsorted(cumulative, target, side="right")[:, 0]
    # Rounding can put the target on the total itself: the last token that has
    # any probability is then the answer.
    positive = tf.cast(probabilities > 0, tf.int32)
    vocabulary = tf.shape(probabilities)[1]
    last_positive = vocabulary - 1 - tf.argmax(tf.reverse(positive, axis=[1]), axis=1,
                                               output_type=tf.int32)
    return tf.cast(tf.minimum(token, last_positive), tf.int64)


def sample_next(logits, uniforms, temperature, top_k):
    """The next token per row and its log-probability under the unfiltered model.

    Returns:
        (token_ids int64 (batch,), log_prob float64 (batch,)).
    """
    filtered = filter_logits(logits, temperature, top_k)
    greedy = tf.argmax(filtered, axis=1, output_type=tf.int64)  # first maximum
    sampled = temperature > 0
    # An all-greedy batch skips the softmax and cumulative sum of every row.
    drawn = tf.cond(tf.reduce_any(sampled), lambda: draw(filtered, uniforms), lambda: greedy)
    token_ids = tf.where(sampled, drawn, greedy)
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float64), axis=1)
    log_prob = tf.gather(log_probs, token_ids, batch_dims=1)
    return token_ids, log_prob
