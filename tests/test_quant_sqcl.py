"""SQCL (Eq. 8, 9): loss values, gradients, and the quantizer + SQCL composition."""
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gradcheck import assert_grad
from fqsr_ref.quant import (SQCL_ALPHA, QuantSpec, quantize_with_sqcl_backward,
                            quantize_with_sqcl_forward, sqcl_backward, sqcl_forward)
from test_quant_quantizer import clip_bounds, frozen_offset, intervals, specs, surrogate


def test_loss_values_and_gradients():
    qv = np.array([1.0, 0.0, -2.0, 0.5])
    v = np.array([0.5, 0.0, -1.0, 1.0])                    # diff 0.5, 0, -1, -0.5
    loss, cache = sqcl_forward(qv, v, p=1)
    assert loss == pytest.approx(0.5)
    dqv, dv = sqcl_backward(cache, 2.0)
    assert dqv.tolist() == [0.5, 0.0, -0.5, -0.5]          # 2 * sign / 4; sign(0) = 0
    assert np.array_equal(dv, -dqv)
    loss, cache = sqcl_forward(qv, v, p=2)
    assert loss == pytest.approx((0.25 + 1 + 0.25) / 4)
    dqv, _ = sqcl_backward(cache)
    assert dqv.tolist() == [0.25, 0.0, -0.5, -0.25]        # 2 * diff / 4
    assert SQCL_ALPHA == 0.3


@settings(max_examples=30)
@given(arrays(np.float64, st.integers(1, 10), elements=st.floats(-3, 3)),
       arrays(np.float64, 10, elements=st.floats(-3, 3)), st.sampled_from([1, 2]))
def test_sqcl_gradient(qv, v, p):
    v = v[:qv.size].copy()
    keep = np.abs(qv - v) > 1e-3                            # away from the kink of |.|
    qv, v = qv[keep].copy(), v[keep]
    if qv.size == 0:
        return
    _, cache = sqcl_forward(qv, v, p)
    dqv, dv = sqcl_backward(cache, 0.7)

    def loss():
        return 0.7 * float(sqcl_forward(qv, v, p)[0])
    assert_grad("dqv", dqv, loss, qv)
    assert_grad("dv", dv, loss, v)


@settings(max_examples=40)
@given(arrays(np.float64, st.integers(1, 12), elements=st.floats(-2.5, 2.5)), intervals, specs,
       st.sampled_from([1, 2]))
@example(np.array([0.6875]), 1.0, QuantSpec(14, True), 1)   # dL/dI = -2e-5, cancelling terms
def test_quantizer_with_sqcl_matches_finite_differences_of_the_surrogate(r, interval, spec, p):
    """d/dv and d/dI of sum(Q(v) * c) + alpha * L_q, Q replaced by the STE surrogate."""
    lo, hi = clip_bounds(spec)
    r = r[(np.abs(r - lo) > 1e-2) & (np.abs(r - hi) > 1e-2)]
    if r.size == 0:
        return
    v = r * interval
    # Q - v is offset * I / n inside (constant sign) and +-I - v outside: no kink of |.|
    # is crossed, so sign(0) = 0 where offset = 0 agrees with the difference quotient.
    offset = frozen_offset(v, interval, spec)
    iv = np.array([interval])
    c = np.cos(np.arange(v.size) + 0.5)
    alpha = SQCL_ALPHA
    qv, codes, lq, cache = quantize_with_sqcl_forward(v, iv, spec, p)
    dv, dinterval = quantize_with_sqcl_backward(c, alpha, cache)

    def loss():
        q = surrogate(v, iv[0], spec, offset)
        return float(np.sum(q * c) + alpha * np.mean(np.abs(q - v) ** p))
    assert lq == pytest.approx(np.mean(np.abs(qv - v) ** p), rel=1e-12)
    h = 1e-3 * interval   # see test_ste_equals_finite_differences_of_the_surrogate
    assert_grad("dv", dv, loss, v, h=h)
    assert_grad("dinterval", dinterval, loss, iv, h=h)


def test_float32_and_identity():
    v = np.linspace(-1, 1, 7, dtype=np.float32)
    qv, _, lq, cache = quantize_with_sqcl_forward(v, np.float32(0.8), QuantSpec(3, True))
    assert lq.dtype == np.float32 and qv.dtype == np.float32
    dv, dinterval = quantize_with_sqcl_backward(np.ones_like(v), SQCL_ALPHA, cache)
    assert dv.dtype == dinterval.dtype == np.float32
    qv, codes, lq, cache = quantize_with_sqcl_forward(v, 0.8, QuantSpec(32, True))
    assert codes is None and lq == 0
    dv, dinterval = quantize_with_sqcl_backward(np.ones_like(v), SQCL_ALPHA, cache)
    assert np.array_equal(dv, np.ones_like(v)) and dinterval == 0


def test_errors():
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        sqcl_forward(np.zeros(2), np.zeros(2), p=3)
    with pytest.raises(ValueError, match="share shape"):
        sqcl_forward(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="share shape"):
        sqcl_forward(np.zeros(2, np.float32), np.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        sqcl_forward(np.zeros(0), np.zeros(0))
