"""L1 and MSE losses (mean over every element) and the residual add.

The loss is a 0-d value of the input dtype. Backward takes the cache first and
the upstream gradient dloss (default 1.0, the loss being the graph's output).
"""
from typing import NamedTuple

import numpy as np

from ._checks import check_float, check_same_shape


class LossCache(NamedTuple):
    diff: np.ndarray  # pred - target


class AddCache(NamedTuple):
    shape: tuple


def _diff(op, pred, target):
    check_float(op, pred=pred, target=target)
    check_same_shape(op, pred=pred, target=target)
    if pred.size == 0:
        raise ValueError(f"{op}: empty tensors, pred {pred.shape}")
    return pred - target


def l1_forward(pred, target):
    """mean |pred - target|. pred, target: same shape and float dtype. Returns (loss, cache)."""
    diff = _diff("l1", pred, target)
    return np.abs(diff).mean(dtype=diff.dtype), LossCache(diff)


def l1_backward(cache, dloss=1.0):
    """dpred = dloss * sign(pred - target) / size; the subgradient at equality is 0."""
    diff = cache.diff
    return np.sign(diff) * diff.dtype.type(dloss / diff.size)


def mse_forward(pred, target):
    """mean (pred - target)^2. pred, target: same shape and float dtype. Returns (loss, cache)."""
    diff = _diff("mse", pred, target)
    return np.square(diff).mean(dtype=diff.dtype), LossCache(diff)


def mse_backward(cache, dloss=1.0):
    """dpred = dloss * 2 * (pred - target) / size."""
    diff = cache.diff
    return diff * diff.dtype.type(2.0 * dloss / diff.size)


def add_forward(a, b):
    """Residual add y = a + b. a, b: same shape, same float dtype. Returns (y, cache)."""
    check_float("add", a=a, b=b)
    check_same_shape("add", a=a, b=b)
    return a + b, AddCache(a.shape)


def add_backward(dy, cache):
    """Returns (da, db), both equal to dy, as two new arrays so that a caller may
    accumulate into one without touching the other or dy."""
    check_float("add_backward", dy=dy)
    if dy.shape != cache.shape:
        raise ValueError(f"add_backward: dy {dy.shape} does not match the forward {cache.shape}")
    return dy.copy(), dy.copy()
