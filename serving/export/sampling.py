"""The next token drawn inside the graph: the `sample` signature's arithmetic.

A language model's `step` returns a whole distribution per row (a 10,000-word
vocabulary is 40 kB of logits a row; at 64 rows 2.6 MB a step to encode, send
and decode). `sample` runs the same step and returns only the drawn token, its
log-probability and the state. The client still owns the randomness: it sends
one uniform number per row, drawn from that row's own generator, and the graph
inverts the cumulative distribution as `serving.generation.samplers` does in
NumPy (float64, lower ids first among ties; the sums in another order, see
`draw`). The same seed therefore gives the same text whichever side draws.

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
    # tokens equal to it as are still missing, in id order. Only rows that ask
    # for it pay, and only for the largest k asked (no full sort).
    filtering = (top_k > 0) & (top_k < vocabulary)  # (batch,)

    def keep_top_k():
        k = tf.where(filtering, top_k, 1)  # (batch,)
        best = tf.math.top_k(scaled, k=tf.reduce_max(k), sorted=True).values
        threshold = tf.gather(best, k - 1, batch_dims=1)[:, None]  # (batch, 1): the k-th value
        above = scaled > threshold
        tied = tf.equal(scaled, threshold)
        missing = k[:, None] - tf.reduce_sum(tf.cast(above, tf.int32), axis=1, keepdims=True)
        kept = above | (tied & (tf.cumsum(tf.cast(tied, tf.int32), axis=1) <= missing))
        kept = kept | ~filtering[:, None]
        return tf.where(kept, scaled, tf.constant(-float("inf"), tf.float64))

    return tf.cond(tf.reduce_any(filtering), keep_top_k, lambda: scaled)


# Tokens per block of the two-level inverse CDF in `draw`.
BLOCK = 128


def draw(filtered, uniforms):
    """(batch,) int64 ids: the inverse of each row's cumulative distribution at its uniform.

    The cumulative sum is taken in two levels, block totals and then inside the
    one block that holds the target, because a scan over the whole vocabulary
    is the slowest op here (3.5 ms for 64 rows of 10,001 against 0.5 ms for a
    sum). The sums are added in another order than NumPy's `cumsum`, which can
    move a boundary by a rounding error (about 1e-16 of the total): a token
    differs from the client's draw only if the uniform falls that close to it.

    Args:
        filtered: float64 (batch, V) logits, -inf for tokens that cannot be drawn.
        uniforms: float64 (batch,) numbers in [0, 1).
    """
    batch, vocabulary = tf.shape(filtered)[0], tf.shape(filtered)[1]
    weights = tf.exp(filtered - tf.reduce_max(filtered, axis=1, keepdims=True))  # (batch, V), unnormalized
    blocks = (vocabulary + BLOCK - 1) // BLOCK
    weights = tf.reshape(tf.pad(weights, [[0, 0], [0, blocks * BLOCK - vocabulary]]), [batch, blocks, BLOCK])
    block_totals = tf.reduce_sum(weights, axis=2)  # (batch, blocks)
    block_cumulative = tf.cumsum(block_totals, axis=1)
    target = uniforms * block_cumulative[:, -1]  # (batch,)

    def last_positive(values):  # (rows, n) -> (rows,) index of the last entry > 0
        positions = tf.range(tf.shape(values)[1])
        return tf.reduce_max(tf.where(values > 0, positions[None, :], -1), axis=1)

    # Rounding can put the target on the total itself: the last block and the
    # last token that have any probability are then the answer.
    block = tf.searchsorted(block_cumulative, target[:, None], side="right")[:, 0]
    block = tf.minimum(block, last_positive(block_totals))
    before = tf.where(block > 0, tf.gather(block_cumulative, tf.maximum(block - 1, 0), batch_dims=1),
                      tf.zeros_like(target))
    inside = tf.gather(weights, block, batch_dims=1)  # (batch, BLOCK)
    cumulative = before[:, None] + tf.cumsum(inside, axis=1)
    offset = tf.searchsorted(cumulative, target[:, None], side="right")[:, 0]
    offset = tf.minimum(offset, last_positive(inside))
    return tf.cast(block * BLOCK + offset, tf.int64)


def sample_next(logits, uniforms, temperature, top_k):
    """The next token per row and its log-probability under the unfiltered model.

    Returns:
        (token_ids int64 (batch,), log_prob float64 (batch,)).
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    pad = tf.one_hot(tf.fill([tf.shape(logits)[0]], PAD_ID), tf.shape(logits)[1], on_value=True,
                     off_value=False)
    # The argmax of the float32 logits is that of their float64 copy (the cast is exact).
    greedy = tf.argmax(tf.where(pad, -float("inf"), logits), axis=1, output_type=tf.int64)  # first maximum
    sampled = temperature > 0
    # An all-greedy batch skips the filters, the exponentials and the sums of every row.
    drawn = tf.cond(tf.reduce_any(sampled),
                    lambda: draw(filter_logits(logits, temperature, top_k), uniforms), lambda: greedy)
    token_ids = tf.where(sampled, drawn, greedy)
    # log p(token) = logit - logsumexp(logits); the sum in float32 (1e-7 relative) is
    # half the price of float64's, and the log-probability is reported, never drawn on.
    normalizer = tf.cast(tf.reduce_logsumexp(logits, axis=1), tf.float64)
    log_prob = tf.cast(tf.gather(logits, token_ids, batch_dims=1), tf.float64) - normalizer
    return token_ids, log_prob
