"""Dense layer: gradients for x, w, b; dtypes; errors."""
import numpy as np
import pytest
from gradcheck import assert_grad
from hypothesis import given, settings
from hypothesis import strategies as st

from fqsr_ref.ops import dense_backward, dense_forward


@settings(max_examples=20)
@given(n=st.integers(1, 3), f_in=st.integers(1, 5), f_out=st.integers(1, 4),
       bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_gradients(n, f_in, f_out, bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, f_in))
    w = rng.standard_normal((f_out, f_in))
    b = rng.standard_normal(f_out) if bias else None
    y, cache = dense_forward(x, w, b)
    np.testing.assert_allclose(y, x @ w.T + (0 if b is None else b), rtol=1e-12)
    dout = rng.standard_normal(y.shape)
    dx, dw, db = dense_backward(dout, cache)

    def loss():
        return np.sum(dense_forward(x, w, b)[0] * dout)
    assert_grad("dense dx", dx, loss, x, h=0.5)  # linear in each argument: exact
    assert_grad("dense dw", dw, loss, w, h=0.5)
    if b is None:
        assert db is None
    else:
        assert_grad("dense db", db, loss, b, h=0.5)


def test_float32_in_float32_out():
    x = np.ones((2, 3), np.float32)
    w = np.ones((4, 3), np.float32)
    y, cache = dense_forward(x, w, np.zeros(4, np.float32))
    assert y.dtype == np.float32
    assert all(g.dtype == np.float32 for g in dense_backward(np.ones_like(y), cache))


@pytest.mark.parametrize("x,w,b,words", [
    (np.ones((2, 3, 1)), np.ones((4, 3)), None, ["dense", "x", "(2, 3, 1)"]),
    (np.ones((2, 3)), np.ones((4, 2)), None, ["dense", "(2, 3)", "(4, 2)"]),
    (np.ones((2, 3)), np.ones((4, 3)), np.ones(3), ["dense", "(4,)", "(3,)"]),
    (np.ones((2, 3), np.int8), np.ones((4, 3), np.int8), None, ["dense", "int8"]),
])
def test_bad_input(x, w, b, words):
    with pytest.raises(ValueError) as err:
        dense_forward(x, w, b)
    for word in words:
        assert word in str(err.value)
