"""ReLU, PReLU, leaky ReLU: gradients, the derivative at 0, dtypes, errors."""
import numpy as np
import pytest
from gradcheck import assert_grad
from hypothesis import given, settings
from hypothesis import strategies as st

from fqsr_ref.ops import (leaky_relu_backward, leaky_relu_forward, prelu_backward,
                          prelu_forward, relu_backward, relu_forward)

H = 1e-3
shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))


def away_from_zero(rng, shape):
    """Standard normal values with |x| >= 0.01.

    The ops are linear on each side of 0, so a centred difference with a step
    H < 0.01 never straddles the kink and is exact up to rounding, which the
    larger step keeps far below the tolerance.
    """
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.01, 0.5, x)


@settings(max_examples=20)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1),
       op=st.sampled_from(["relu", "leaky_relu"]), slope=st.floats(0.01, 0.5))
def test_fixed_slope_gradients(shape, seed, op, slope):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng, shape)
    if op == "relu":
        def fwd(v):
            return relu_forward(v)
        bwd = relu_backward
    else:
        def fwd(v):
            return leaky_relu_forward(v, slope)
        bwd = leaky_relu_backward
    y, cache = fwd(x)
    dout = rng.standard_normal(shape)

    def loss():
        return np.sum(fwd(x)[0] * dout)
    assert_grad(f"{op} dx", bwd(dout, cache), loss, x, h=H)


@settings(max_examples=20)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), shared=st.booleans())
def test_prelu_gradients(shape, seed, shared):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng, shape)
    a = rng.uniform(-0.5, 0.5, 1 if shared else shape[1])
    y, cache = prelu_forward(x, a)
    dout = rng.standard_normal(shape)
    dx, da = prelu_backward(dout, cache)

    def loss():
        return np.sum(prelu_forward(x, a)[0] * dout)
    assert_grad("prelu dx", dx, loss, x, h=H)
    assert da.shape == a.shape
    assert_grad("prelu da", da, loss, a, h=0.5)  # linear in a: any step is exact


def test_values_and_derivative_at_zero():
    """x > 0 takes slope 1; x == 0 takes the other branch (slope 0 / a / leaky slope)."""
    x = np.array([[-2.0, 0.0, 3.0]])
    dy = np.ones_like(x)
    y, cache = relu_forward(x)
    np.testing.assert_array_equal(y, [[0.0, 0.0, 3.0]])
    assert not np.signbit(y).any()  # +0, not -0, for negative inputs
    np.testing.assert_array_equal(relu_backward(dy, cache), [[0.0, 0.0, 1.0]])
    y, cache = leaky_relu_forward(x, 0.2)
    np.testing.assert_array_equal(y, [[-0.4, 0.0, 3.0]])
    np.testing.assert_array_equal(leaky_relu_backward(dy, cache), [[0.2, 0.2, 1.0]])
    y, cache = leaky_relu_forward(x)  # default slope 0.2
    np.testing.assert_array_equal(y, [[-0.4, 0.0, 3.0]])
    xc = x.reshape(1, 3, 1, 1)
    a = np.array([0.25, 0.5, 0.75])
    y, cache = prelu_forward(xc, a)
    np.testing.assert_array_equal(y.ravel(), [-0.5, 0.0, 3.0])
    dx, da = prelu_backward(np.ones_like(xc), cache)
    np.testing.assert_array_equal(dx.ravel(), [0.25, 0.5, 1.0])  # x == 0 (channel 1) -> a
    np.testing.assert_array_equal(da, [-2.0, 0.0, 0.0])


def test_prelu_on_dense_features_and_float32():
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    a = np.array([0.1, 0.2], np.float32)
    y, cache = prelu_forward(x, a)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[-0.1, 2.0], [3.0, -0.8]], rtol=1e-6)
    dx, da = prelu_backward(np.ones_like(x), cache)
    assert dx.dtype == np.float32 and da.dtype == np.float32
    np.testing.assert_allclose(da, [-1.0, -4.0])
    for fwd, bwd in ((relu_forward, relu_backward), (leaky_relu_forward, leaky_relu_backward)):
        y, cache = fwd(x)
        assert y.dtype == np.float32 and bwd(np.ones_like(x), cache).dtype == np.float32


@pytest.mark.parametrize("call,words", [
    (lambda: relu_forward(np.ones((2, 2), np.int64)), ["relu", "int64", "(2, 2)"]),
    (lambda: leaky_relu_forward([1.0, 2.0]), ["leaky_relu", "list"]),
    (lambda: prelu_forward(np.ones((1, 3, 2, 2)), np.ones(2)), ["prelu", "(1, 3, 2, 2)", "(2,)"]),
    (lambda: prelu_forward(np.ones(3), np.ones(1)), ["prelu", "(3,)"]),
    (lambda: prelu_forward(np.ones((1, 2)), np.ones(1, np.float32)), ["prelu", "float32"]),
    (lambda: relu_backward(np.ones(3), relu_forward(np.ones(2))[1]), ["relu_backward", "(3,)", "(2,)"]),
])
def test_bad_input(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for word in words:
        assert word in str(err.value)
