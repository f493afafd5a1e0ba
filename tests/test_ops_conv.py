"""conv2d: forward against the nested-loop twin, gradients against centred differences.

The fast conv has three products ("plans"); each must be exact on every shape,
so the tests force each plan in turn instead of trusting the size heuristic to
reach all three.
"""
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
from gradcheck import assert_grad
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fqsr_ref.ops import conv
from fqsr_ref.ops import conv2d_backward, conv2d_forward, conv2d_reference


@contextmanager
def forced(plan):
    with mock.patch.object(conv, "_plan", lambda c_in, c_out, k: plan), \
            mock.patch.object(conv, "_weight_plan", lambda c_in, c_out, k: plan):
        yield


@st.composite
def conv_case(draw, kernels=(1, 3, 5, 9), max_c=3, max_hw=6):
    k = draw(st.sampled_from(kernels))
    c_cap = 2 if k == 9 else max_c  # keeps finite differences cheap
    return dict(n=draw(st.integers(1, 2)), c_in=draw(st.integers(1, c_cap)),
                c_out=draw(st.integers(1, c_cap)), h=draw(st.integers(1, max_hw)),
                w=draw(st.integers(1, max_hw)), k=k, stride=draw(st.sampled_from((1, 2))),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


def make(case, dtype=np.float64):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c_in"], case["h"], case["w"])).astype(dtype)
    w = rng.standard_normal((case["c_out"], case["c_in"], case["k"], case["k"])).astype(dtype)
    b = rng.standard_normal(case["c_out"]).astype(dtype) if case["bias"] else None
    return x, w, b, rng


ONE_BY_ONE_K9 = dict(n=1, c_in=1, c_out=1, h=1, w=1, k=9, stride=1, bias=True, seed=0)
ODD_STRIDE2 = dict(n=2, c_in=3, c_out=2, h=5, w=3, k=3, stride=2, bias=False, seed=1)


@pytest.mark.parametrize("plan", conv.PLANS)
@settings(max_examples=25)
@given(case=conv_case(max_hw=7))
@example(case=ONE_BY_ONE_K9)
@example(case=ODD_STRIDE2)
def test_forward_matches_loop_twin(plan, case):
    x, w, b, _ = make(case)
    with forced(plan):
        y, _ = conv2d_forward(x, w, b, case["stride"])
    ref = conv2d_reference(x, w, b, case["stride"])
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("plan", conv.PLANS)
@settings(max_examples=12)
@given(case=conv_case(kernels=(1, 3, 5)))
@example(case=ONE_BY_ONE_K9)
@example(case=ODD_STRIDE2)
def test_gradients(plan, case):
    x, w, b, rng = make(case)
    with forced(plan):
        y, cache = conv2d_forward(x, w, b, case["stride"])
        dout = rng.standard_normal(y.shape)
        dx, dw, db = conv2d_backward(dout, cache)

        def loss():
            return np.sum(conv2d_forward(x, w, b, case["stride"])[0] * dout)

        # The loss is linear in each argument, so centred differences are exact
        # for any step; a large step keeps rounding noise far below the tolerance.
        assert_grad("conv2d dx", dx, loss, x, h=0.5)
        assert_grad("conv2d dw", dw, loss, w, h=0.5)
        if b is None:
            assert db is None
        else:
            assert_grad("conv2d db", db, loss, b, h=0.5)


@pytest.mark.parametrize("c_in,c_out,k", [(8, 8, 3), (3, 8, 9), (8, 3, 9), (12, 9, 1), (20, 12, 3)])
def test_default_plans_match_loop_twin(c_in, c_out, k):
    """The size heuristics' own choices, on channel counts that reach each plan."""
    rng = np.random.default_rng(k + c_in)
    x = rng.standard_normal((2, c_in, 5, 4))
    w = rng.standard_normal((c_out, c_in, k, k))
    y, cache = conv2d_forward(x, w)
    np.testing.assert_allclose(y, conv2d_reference(x, w), rtol=1e-12, atol=1e-12)
    # backward of a linear map: <dy, conv(x)> is linear in x, so the adjoint
    # identity <dx, x> = <dy, y> holds exactly up to rounding
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = conv2d_backward(dy, cache)
    np.testing.assert_allclose(np.sum(dx * x), np.sum(dy * y), rtol=1e-10)
    np.testing.assert_allclose(np.sum(dw * w), np.sum(dy * y), rtol=1e-10)


def test_float32_in_float32_out():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 6, 7))
    w = rng.standard_normal((10, 9, 3, 3))
    b = rng.standard_normal(10)
    y64, c64 = conv2d_forward(x, w, b)
    y32, c32 = conv2d_forward(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32))
    assert y32.dtype == np.float32 and y32.flags.c_contiguous
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)
    dy = rng.standard_normal(y64.shape)
    for g32, g64 in zip(conv2d_backward(dy.astype(np.float32), c32), conv2d_backward(dy, c64)):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-3)


def test_backward_leaves_inputs_alone():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 4, 4))
    w = rng.standard_normal((3, 2, 3, 3))
    y, cache = conv2d_forward(x, w)
    dy = rng.standard_normal(y.shape)
    saved = [a.copy() for a in (x, w, dy, cache.x_buf)]
    first = conv2d_backward(dy, cache)
    second = conv2d_backward(dy, cache)
    for before, after in zip(saved, (x, w, dy, cache.x_buf)):
        np.testing.assert_array_equal(before, after)
    for a, b in zip(first[:2], second[:2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("x_shape,w_shape,dtype,words", [
    ((2, 3, 4), (4, 3, 3, 3), np.float64, ["conv2d", "x", "(2, 3, 4)"]),
    ((1, 3, 4, 4), (4, 3, 3), np.float64, ["conv2d", "w", "(4, 3, 3)"]),
    ((1, 3, 4, 4), (4, 2, 3, 3), np.float64, ["conv2d", "channel", "(1, 3, 4, 4)", "(4, 2, 3, 3)"]),
    ((1, 3, 4, 4), (4, 3, 2, 2), np.float64, ["conv2d", "odd", "(4, 3, 2, 2)"]),
    ((1, 3, 4, 4), (4, 3, 3, 3), np.int32, ["conv2d", "int32", "(1, 3, 4, 4)"]),
])
def test_bad_input_names_op_and_shapes(x_shape, w_shape, dtype, words):
    with pytest.raises(ValueError) as err:
        conv2d_forward(np.ones(x_shape, dtype), np.ones(w_shape, dtype))
    for word in words:
        assert word in str(err.value)


def test_bad_arguments():
    x = np.ones((1, 2, 3, 3))
    w = np.ones((2, 2, 3, 3))
    with pytest.raises(ValueError, match="float64.*float32"):
        conv2d_forward(x, w.astype(np.float32))
    with pytest.raises(ValueError, match="stride"):
        conv2d_forward(x, w, stride=3)
    with pytest.raises(ValueError, match=r"bias must be \(2,\)"):
        conv2d_forward(x, w, np.ones(3))
    _, cache = conv2d_forward(x, w, stride=2)
    with pytest.raises(ValueError, match=r"conv2d_backward: dy must be \(1, 2, 2, 2\)"):
        conv2d_backward(np.ones((1, 2, 3, 3)), cache)
