"""Fully connected layer (the SRGAN discriminator's head)."""
from typing import NamedTuple

import numpy as np

from ._checks import check_float, check_rank, describe


class DenseCache(NamedTuple):
    x: np.ndarray
    w: np.ndarray
    has_bias: bool


def dense_forward(x, w, b=None):
    """y = x @ w.T + b.

    x: (N, F_in); w: (F_out, F_in); b: (F_out,) or None; one float dtype.
    Returns y (N, F_out) and the cache.
    """
    op = "dense"
    arrays = dict(x=x, w=w) if b is None else dict(x=x, w=w, b=b)
    check_float(op, **arrays)
    check_rank(op, "x", x, 2, "2-D (N, F_in)")
    check_rank(op, "w", w, 2, "2-D (F_out, F_in)")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: feature mismatch, x {x.shape} has F_in={x.shape[1]}, "
                         f"w {w.shape} expects F_in={w.shape[1]}")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"{op}: b must be ({w.shape[0]},), got {describe(b)}")
    y = x @ w.T
    if b is not None:
        y += b
    return y, DenseCache(x, w, b is not None)


def dense_backward(dy, cache):
    """dy: (N, F_out) -> dx (N, F_in), dw (F_out, F_in), db (F_out,) or None."""
    x, w, has_bias = cache
    check_float("dense_backward", dy=dy, x=x)
    if dy.shape != (x.shape[0], w.shape[0]):
        raise ValueError(f"dense_backward: dy must be {(x.shape[0], w.shape[0])}, got {dy.shape}")
    return dy @ w, dy.T @ x, (dy.sum(axis=0) if has_bias else None)
