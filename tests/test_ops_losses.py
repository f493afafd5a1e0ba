"""L1, MSE and the residual add: values, gradients, dtypes, errors."""
import numpy as np
import pytest
from gradcheck import assert_grad
from hypothesis import given, settings
from hypothesis import strategies as st

from fqsr_ref.ops import (add_backward, add_forward, l1_backward, l1_forward, mse_backward,
                          mse_forward)

shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))
LOSSES = {"l1": (l1_forward, l1_backward), "mse": (mse_forward, mse_backward)}


@settings(max_examples=20)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), name=st.sampled_from(sorted(LOSSES)),
       dloss=st.floats(0.1, 3.0))
def test_loss_gradients(shape, seed, name, dloss):
    forward, backward = LOSSES[name]
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal(shape)
    target = rng.standard_normal(shape)
    # keep |pred - target| >= 0.01 so the L1 kink is never straddled
    target = np.where(np.abs(pred - target) < 0.01, pred + 0.5, target)
    loss, cache = forward(pred, target)
    dpred = backward(cache, dloss)

    def scaled():
        return dloss * forward(pred, target)[0]
    # L1 is linear and MSE quadratic between kinks: centred differences with a
    # step below the kink distance are exact up to rounding
    assert_grad(f"{name} dpred", dpred, scaled, pred, h=1e-3)


def test_loss_values_and_l1_subgradient_at_equality():
    pred = np.array([[1.0, 2.0, 3.0, 4.0]])
    target = np.array([[1.0, 0.0, 4.0, 8.0]])
    loss, cache = l1_forward(pred, target)
    assert loss == pytest.approx((0 + 2 + 1 + 4) / 4)
    np.testing.assert_array_equal(l1_backward(cache), [[0.0, 0.25, -0.25, -0.25]])
    loss, cache = mse_forward(pred, target)
    assert loss == pytest.approx((0 + 4 + 1 + 16) / 4)
    np.testing.assert_allclose(mse_backward(cache, 2.0), [[0.0, 2.0, -1.0, -4.0]])


def test_float32_in_float32_out():
    pred = np.linspace(-1, 1, 12, dtype=np.float32).reshape(1, 3, 2, 2)
    target = np.zeros_like(pred)
    for forward, backward in LOSSES.values():
        loss, cache = forward(pred, target)
        assert loss.dtype == np.float32 and backward(cache).dtype == np.float32
    y, cache = add_forward(pred, target)
    assert y.dtype == np.float32
    assert all(g.dtype == np.float32 for g in add_backward(y, cache))


@settings(max_examples=15)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_add_gradients(shape, seed):
    rng = np.random.default_rng(seed)
    a, b, dout = (rng.standard_normal(shape) for _ in range(3))
    y, cache = add_forward(a, b)
    np.testing.assert_array_equal(y, a + b)
    da, db = add_backward(dout, cache)

    def loss():
        return np.sum(add_forward(a, b)[0] * dout)
    assert_grad("add da", da, loss, a, h=0.5)  # linear: any step is exact
    assert_grad("add db", db, loss, b, h=0.5)


def test_add_gradients_are_separate_arrays():
    dy = np.ones((1, 1, 2, 2))
    da, db = add_backward(dy, add_forward(dy, dy)[1])
    da += 1
    np.testing.assert_array_equal(db, dy)
    np.testing.assert_array_equal(dy, np.ones((1, 1, 2, 2)))


@pytest.mark.parametrize("call,words", [
    (lambda: l1_forward(np.ones((1, 3)), np.ones((1, 4))), ["l1", "(1, 3)", "(1, 4)"]),
    (lambda: mse_forward(np.ones(3, np.int32), np.ones(3, np.int32)), ["mse", "int32"]),
    (lambda: mse_forward(np.ones(3), np.ones(3, np.float32)), ["mse", "float64", "float32"]),
    (lambda: add_forward(np.ones((2, 3)), np.ones((3, 2))), ["add", "(2, 3)", "(3, 2)"]),
    (lambda: add_backward(np.ones(4), add_forward(np.ones(3), np.ones(3))[1]),
     ["add_backward", "(4,)", "(3,)"]),
])
def test_bad_input(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for word in words:
        assert word in str(err.value)
