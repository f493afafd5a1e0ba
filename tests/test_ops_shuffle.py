"""Pixel shuffle: index arithmetic, inverse, gradient."""
import numpy as np
import pytest
from gradcheck import assert_grad
from hypothesis import given, settings
from hypothesis import strategies as st

from fqsr_ref.ops import pixel_shuffle_backward, pixel_shuffle_forward, pixel_unshuffle

shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4),
                   st.integers(1, 4), st.sampled_from((1, 2, 3, 4)))


@given(shape=shapes, dtype=st.sampled_from((np.float32, np.float64, np.int8, np.int32)))
def test_shuffle_matches_index_formula(shape, dtype):
    """y[n, c, h*r + i, w*r + j] = x[n, c*r*r + i*r + j, h, w], element by element."""
    n, c, h, w, r = shape
    x = np.arange(n * c * r * r * h * w).reshape(n, c * r * r, h, w).astype(dtype)
    y, _ = pixel_shuffle_forward(x, r)
    assert y.shape == (n, c, h * r, w * r) and y.dtype == x.dtype
    for b in range(n):
        for ch in range(c):
            for out_y in range(h * r):
                for out_x in range(w * r):
                    i, j = out_y % r, out_x % r
                    assert y[b, ch, out_y, out_x] == x[b, ch * r * r + i * r + j,
                                                       out_y // r, out_x // r]


def depth_input(shape, seed):
    """A float64 (N, C*r*r, H, W) input for the drawn shape, and its generator."""
    n, c, h, w, r = shape
    rng = np.random.default_rng(seed)
    return rng, rng.standard_normal((n, c * r * r, h, w))


@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_unshuffle_inverts_shuffle(shape, seed):
    n, c, h, w, r = shape
    rng, x = depth_input(shape, seed)
    y, _ = pixel_shuffle_forward(x, r)
    np.testing.assert_array_equal(pixel_unshuffle(y, r), x)
    z = rng.standard_normal((n, c, h * r, w * r))
    np.testing.assert_array_equal(pixel_shuffle_forward(pixel_unshuffle(z, r), r)[0], z)


@settings(max_examples=15)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_gradient(shape, seed):
    r = shape[-1]
    rng, x = depth_input(shape, seed)
    y, cache = pixel_shuffle_forward(x, r)
    dout = rng.standard_normal(y.shape)
    dx = pixel_shuffle_backward(dout, cache)

    def loss():
        return np.sum(pixel_shuffle_forward(x, r)[0] * dout)
    assert_grad("pixel_shuffle dx", dx, loss, x, h=0.5)  # linear: any step is exact


def test_outputs_are_new_arrays():
    x = np.ones((1, 1, 2, 2), np.float32)
    y, cache = pixel_shuffle_forward(x, 1)
    assert y.dtype == np.float32 and not np.shares_memory(x, y)
    assert not np.shares_memory(pixel_shuffle_backward(y, cache), y)


@pytest.mark.parametrize("call,words", [
    (lambda: pixel_shuffle_forward(np.ones((1, 6, 2, 2)), 2), ["pixel_shuffle", "(1, 6, 2, 2)", "4"]),
    (lambda: pixel_shuffle_forward(np.ones((6, 2, 2)), 2), ["pixel_shuffle", "(6, 2, 2)"]),
    (lambda: pixel_shuffle_forward(np.ones((1, 4, 2, 2)), 0), ["pixel_shuffle", "r"]),
    (lambda: pixel_shuffle_forward(np.ones((1, 4, 2, 2), bool), 2), ["pixel_shuffle", "bool"]),
    (lambda: pixel_unshuffle(np.ones((1, 1, 4, 3)), 2), ["pixel_unshuffle", "(1, 1, 4, 3)"]),
])
def test_bad_input(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for word in words:
        assert word in str(err.value)
