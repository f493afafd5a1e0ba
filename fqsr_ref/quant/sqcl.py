"""SQCL, the self-supervised quantization-aware calibration loss (Eq. 8, 9).

    L_q = mean |Q(v) - v|^p        p = 1 (default) or 2          (Eq. 8)
    L   = L_sr + alpha * sum_q L_q alpha = 0.3, over every quantizer (Eq. 9)

Eq. 8 prints a p-norm; like the authors' released code we use the mean of the p-th
powers, so the term does not grow with the tensor size. The gradient reaches both
v (directly, and through Q by the STE) and the interval I (through Q).
"""
from typing import NamedTuple

import numpy as np

from .quantizer import quantize_backward, quantize_forward

SQCL_ALPHA = 0.3


class SqclCache(NamedTuple):
    diff: np.ndarray  # Q(v) - v
    p: int


def sqcl_forward(qv, v, p=1):
    """Eq. 8: loss = mean |qv - v|^p.

    qv, v: float arrays of one shape and dtype (float32/float64), non-empty.
    Returns (loss, cache); loss is a NumPy scalar of v's dtype.
    """
    if p not in (1, 2):
        raise ValueError(f"sqcl_forward: p must be 1 or 2, got {p!r}")
    qv, v = np.asarray(qv), np.asarray(v)
    if qv.shape != v.shape or qv.dtype != v.dtype or v.dtype not in (np.float32, np.float64):
        raise ValueError(f"sqcl_forward: qv {qv.shape} {qv.dtype} and v {v.shape} {v.dtype} "
                         f"must share shape and a float dtype")
    if v.size == 0:
        raise ValueError("sqcl_forward: empty tensor")
    diff = qv - v
    loss = np.mean(np.abs(diff)) if p == 1 else np.mean(diff * diff)
    return loss, SqclCache(diff, p)


def sqcl_backward(cache, dloss=1.0):
    """Backward of Eq. 8. dloss: scalar upstream gradient (alpha in Eq. 9).

    Returns (dqv, dv), each of v's shape and dtype, dv = -dqv:
        p = 1: dqv = dloss * sign(qv - v) / N   (sign(0) = 0: the subgradient 0 at Q(v) = v)
        p = 2: dqv = dloss * 2 (qv - v) / N
    """
    diff, p = cache
    g = np.sign(diff) if p == 1 else 2 * diff
    dqv = g * diff.dtype.type(dloss / diff.size)
    return dqv, -dqv


class QuantSqclCache(NamedTuple):
    quant: tuple
    sqcl: SqclCache


def quantize_with_sqcl_forward(v, interval, spec, p=1, name="v"):
    """One quantizer with its SQCL term: Eq. 3 then Eq. 8 on (Q(v), v).

    Arguments as quantize_forward, plus p. Returns (qv, codes, loss, cache).
    """
    qv, codes, qcache = quantize_forward(v, interval, spec, name)
    loss, scache = sqcl_forward(qv, v, p)
    return qv, codes, loss, QuantSqclCache(qcache, scache)


def quantize_with_sqcl_backward(dqv, dloss, cache):
    """Gradients of sum(Q(v) * dqv) + dloss * L_q w.r.t. v and I (Eq. 3 STE, Eq. 8).

    dqv: upstream gradient w.r.t. qv (v's shape and dtype); dloss: scalar weight of
    L_q (alpha). The SQCL gradient w.r.t. Q(v) joins dqv before the STE, and its
    gradient w.r.t. v is added after. Returns (dv, dinterval) as quantize_backward.
    """
    dq_sqcl, dv_sqcl = sqcl_backward(cache.sqcl, dloss)
    dv, dinterval = quantize_backward(dqv + dq_sqcl, cache.quant)
    return dv + dv_sqcl, dinterval
