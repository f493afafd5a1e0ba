"""ReLU, PReLU and leaky ReLU, forward and backward.

All three are f(x) = x for x > 0 and f(x) = slope * x otherwise (slope 0 for
ReLU, a learnt slope for PReLU, a fixed one for leaky ReLU). The derivative at
exactly x = 0 takes the x <= 0 branch: d f / d x = slope there (0 for ReLU),
because the branch test is `x > 0`, as in PyTorch. Float32 or float64; outputs
and gradients keep the dtype and are new arrays.
"""
from typing import NamedTuple

import numpy as np

from . import _fused
from ._checks import check_float, check_rank


class MaskCache(NamedTuple):
    positive: np.ndarray  # bool, x > 0
    slope: float


class PReLUCache(NamedTuple):
    x: np.ndarray
    a: np.ndarray


def _slope_forward(op, x, slope):
    check_float(op, x=x)
    positive = x > 0
    return np.where(positive, x, _scaled(x, slope)), MaskCache(positive, slope)


def _slope_backward(op, dy, cache):
    check_float(op, dy=dy)
    if dy.shape != cache.positive.shape:
        raise ValueError(f"{op}: dy {dy.shape} does not match the forward input "
                         f"{cache.positive.shape}")
    return np.where(cache.positive, dy, _scaled(dy, cache.slope))


def _scaled(a, slope):
    """slope * a in a's dtype; a true +0 for slope 0 (0 * -x would be -0.0)."""
    return a * a.dtype.type(slope) if slope else np.zeros_like(a)


def relu_forward(x):
    """y = max(x, 0). x: any shape, float32/float64. Returns (y, cache)."""
    return _slope_forward("relu", x, 0.0)


def relu_backward(dy, cache):
    """dx = dy where x > 0, else 0 (also at x = 0)."""
    return _slope_backward("relu_backward", dy, cache)


def leaky_relu_forward(x, slope=0.2):
    """y = x if x > 0 else slope * x. x: any shape, float32/float64. Returns (y, cache)."""
    return _slope_forward("leaky_relu", x, float(slope))


def leaky_relu_backward(dy, cache):
    """dx = dy where x > 0, else slope * dy (also at x = 0)."""
    return _slope_backward("leaky_relu_backward", dy, cache)


def prelu_forward(x, a):
    """PReLU with a learnt slope: y = x if x > 0 else a[c] * x.

    x: (N, C, ...) float32/float64, channels on axis 1.
    a: (1,) one slope shared by all channels, or (C,) one per channel; x's dtype.
    Returns (y, cache). One compiled pass (ops._fused), equal bit for bit to
    prelu_forward_reference.
    """
    _check_prelu(x, a)
    x3 = _fused.as_ncm(x)
    y = np.empty_like(x3)
    _fused.prelu_apply(x3, np.ascontiguousarray(a), y)
    return y.reshape(x.shape), PReLUCache(x, a)


def _check_prelu(x, a):
    op = "prelu"
    check_float(op, x=x, a=a)
    check_rank(op, "x", x, tuple(range(2, 9)), "(N, C, ...) with at least 2 axes")
    if a.ndim != 1 or a.shape[0] not in (1, x.shape[1]):
        raise ValueError(f"{op}: slope a must be (1,) or (C,) = ({x.shape[1]},) "
                         f"for x {x.shape}, got a {a.shape}")


def prelu_forward_reference(x, a):
    """Plain NumPy twin of prelu_forward (tests compare the two)."""
    _check_prelu(x, a)
    y = np.where(x > 0, x, _broadcast(a, x.ndim) * x)
    return y, PReLUCache(x, a)


def prelu_backward(dy, cache):
    """Returns dx (shape of x) and da (shape of a): da sums dy * x over x <= 0.

    One compiled pass: dx equal bit for bit to prelu_backward_reference, da summed
    in float64 (NumPy sums pairwise in x's dtype: equal to rounding).
    """
    x, a = cache
    _check_prelu_backward(dy, x)
    dy3 = _fused.as_ncm(dy)
    dx = np.empty_like(dy3)
    da = _fused.prelu_grads(dy3, _fused.as_ncm(x), np.ascontiguousarray(a), dx)
    da = np.array([da.sum()]) if a.shape[0] == 1 else da
    return dx.reshape(x.shape), da.astype(x.dtype)


def _check_prelu_backward(dy, x):
    op = "prelu_backward"
    check_float(op, dy=dy, x=x)
    if dy.shape != x.shape:
        raise ValueError(f"{op}: dy {dy.shape} does not match x {x.shape}")


def prelu_backward_reference(dy, cache):
    """Plain NumPy twin of prelu_backward (tests compare the two)."""
    x, a = cache
    _check_prelu_backward(dy, x)
    positive = x > 0
    dx = np.where(positive, dy, _broadcast(a, x.ndim) * dy)
    contrib = np.where(positive, 0, dy * x)
    if a.shape[0] == 1:
        da = np.array([contrib.sum()], dtype=x.dtype)
    else:
        da = contrib.sum(axis=(0,) + tuple(range(2, x.ndim))).astype(x.dtype, copy=False)
    return dx, da


def _broadcast(a, ndim):
    """(1,) or (C,) -> shape (1, C, 1, ...) to multiply an (N, C, ...) tensor."""
    return a.reshape((1, -1) + (1,) * (ndim - 2))
