"""What the fused-loop tests share: the shapes, the masks and the comparison.

Each test compares a fused loop with the Keras layer it replaces, both in
float32: they add the same products in other orders (a window's input
projection at once, weight gradients summed over the window in one product),
so they agree to float32 rounding of sums of up to T*B terms, not bit for bit:
1e-5 relative to each tensor's scale.
"""

import numpy as np

B, T, D, U = 3, 6, 5, 4
MASKS = {
    "none": None,
    "right padding": np.array([[1] * 6, [1] * 4 + [0] * 2, [1] + [0] * 5], bool),
    "left padding and an empty row": np.array([[0, 0, 1, 1, 1, 1], [1] * 6, [0] * 6], bool),
}


def scale_close(actual, expected, name="", rtol=1e-5):
    """`actual` equals `expected` to `rtol` of the larger of 1 and expected's largest magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale, err_msg=name)
