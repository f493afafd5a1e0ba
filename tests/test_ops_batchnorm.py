"""Batch norm 2d: gradients in both modes, statistics, running-stat update, errors."""
import numpy as np
import pytest
from gradcheck import assert_grad
from hypothesis import given, settings
from hypothesis import strategies as st

from fqsr_ref.ops import batchnorm_backward, batchnorm_forward


@st.composite
def bn_case(draw, training):
    n = draw(st.integers(1, 3))
    h = draw(st.integers(1, 3))
    w = draw(st.integers(2 if training and n * h == 1 else 1, 3))  # training needs M >= 2
    return (n, draw(st.integers(1, 3)), h, w), draw(st.integers(0, 2**32 - 1))


def make(shape, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    params = [rng.uniform(0.5, 1.5, c), rng.standard_normal(c),
              rng.standard_normal(c), rng.uniform(0.5, 2.0, c)]
    return rng, x, [p.astype(dtype) for p in params]


@pytest.mark.parametrize("training", [True, False])
@settings(max_examples=20)
@given(data=st.data())
def test_gradients(training, data):
    shape, seed = data.draw(bn_case(training))
    rng, x, (gamma, beta, rmean, rvar) = make(shape, seed)
    y, cache, _, _ = batchnorm_forward(x, gamma, beta, rmean, rvar, training)
    dout = rng.standard_normal(shape)
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)

    def loss():
        return np.sum(batchnorm_forward(x, gamma, beta, rmean, rvar, training)[0] * dout)
    # The step must be small against each channel's spread sigma (x_hat bends on
    # that scale: truncation error ~(h / sigma)^2), and the rounding noise of the
    # loss, ~1e-15 / h ~ 1e-11 here, sets a floor: elements of dx below 1e-4
    # (against |dx| ~ 1 typically) cannot be checked to 1e-6 relative and compare
    # as equal. They occur with M = 2 values a channel, where x_hat = +-1 almost
    # whatever x is, and by cancellation elsewhere.
    # In evaluation mode BN is affine in x: any step is exact (and a channel with
    # one value has spread 0).
    step = 1e-4 * min(1.0, float(x.std(axis=(0, 2, 3)).min())) if training else 0.5
    assert_grad(f"batchnorm dx (training={training})", dx, loss, x, h=step, atol=1e-4)
    assert_grad("batchnorm dgamma", dgamma, loss, gamma, h=0.5)  # linear: exact
    assert_grad("batchnorm dbeta", dbeta, loss, beta, h=0.5)


def test_training_statistics_and_running_update():
    rng, x, (gamma, beta, rmean, rvar) = make((4, 3, 5, 2), 7)
    saved = [a.copy() for a in (x, rmean, rvar)]
    y, _, new_mean, new_var = batchnorm_forward(x, gamma, beta, rmean, rvar, True,
                                                momentum=0.25, eps=1e-3)
    mu = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(new_mean, 0.75 * rmean + 0.25 * mu, rtol=1e-12)
    unbiased = x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(new_var, 0.75 * rvar + 0.25 * unbiased, rtol=1e-12)
    # normalisation uses the biased variance
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), beta, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), gamma**2 * var / (var + 1e-3), rtol=1e-10)
    for before, after in zip(saved, (x, rmean, rvar)):
        np.testing.assert_array_equal(before, after)  # nothing mutated


def test_eval_uses_running_stats_and_returns_them_unchanged():
    _, x, (gamma, beta, rmean, rvar) = make((1, 2, 1, 1), 8)  # M = 1 is fine in eval
    y, _, new_mean, new_var = batchnorm_forward(x, gamma, beta, rmean, rvar, False)
    expect = gamma[:, None, None] * (x - rmean[:, None, None]) / np.sqrt(
        rvar[:, None, None] + 1e-5) + beta[:, None, None]
    np.testing.assert_allclose(y, expect, rtol=1e-12)
    np.testing.assert_array_equal(new_mean, rmean)
    np.testing.assert_array_equal(new_var, rvar)
    assert not np.shares_memory(new_mean, rmean) and not np.shares_memory(new_var, rvar)


@pytest.mark.parametrize("training", [True, False])
def test_float32_in_float32_out(training):
    rng, x, params = make((2, 3, 4, 4), 9, np.float32)
    y, cache, new_mean, new_var = batchnorm_forward(x, *params, training)
    grads = batchnorm_backward(rng.standard_normal(x.shape).astype(np.float32), cache)
    for a in (y, new_mean, new_var, *grads):
        assert a.dtype == np.float32


@pytest.mark.parametrize("shape,params_c,kwargs,words", [
    ((2, 3, 4), 3, {}, ["batchnorm", "(2, 3, 4)"]),
    ((2, 3, 4, 4), 2, {}, ["batchnorm", "gamma", "(2,)", "(2, 3, 4, 4)"]),
    ((1, 3, 1, 1), 3, {}, ["batchnorm", "one value", "(1, 3, 1, 1)"]),
    ((2, 3, 4, 4), 3, {"dtype": np.int16}, ["batchnorm", "int16"]),
])
def test_bad_input(shape, params_c, kwargs, words):
    dtype = kwargs.get("dtype", np.float64)
    x = np.ones(shape, dtype)
    p = np.ones(params_c, np.float64 if dtype == np.int16 else dtype)
    with pytest.raises(ValueError) as err:
        batchnorm_forward(x, p, p, p, p, True)
    for word in words:
        assert word in str(err.value)
