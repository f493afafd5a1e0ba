"""What the vectors record per op beyond its tensors (SPEC 6, vectors/README).

The values an op clamps (saturation counts), the products it rounds and their
exact ties (coverage), and the bit-plane partials of one output element of a
conv (Eq. 2): its im2col row and the accumulator rebuilt from the popcounts.
"""
from __future__ import annotations

import numpy as np

from ..integer.bitplane import plane_weights
from ..integer.model import AddOp, ConvOp, RequantOp
from ..integer.requant import multiply_by_quantized_multiplier, rounding_right_shift


def unclamped(op, codes: dict, acc: np.ndarray | None) -> np.ndarray:
    """The int64 values of an op's output before the saturating clamp (SPEC, integer)."""
    x = None if isinstance(op, ConvOp) else codes[op.input].astype(np.int64)
    if isinstance(op, ConvOp):
        acc = acc.astype(np.int64)
        pos = multiply_by_quantized_multiplier(acc, op.multiplier, op.shift)
        neg = multiply_by_quantized_multiplier(op.neg_sign * acc, op.neg_multiplier, op.neg_shift)
        return np.where(acc >= 0, pos, neg)
    if isinstance(op, RequantOp):
        return multiply_by_quantized_multiplier(x, op.multiplier, op.shift)
    if isinstance(op, AddOp):
        b = codes[op.branch].astype(np.int64)
        if op.branch_relu:
            b = np.maximum(b, 0)
        return rounding_right_shift(x * op.multiplier + b * op.branch_multiplier, 31 - op.shift)
    raise ValueError(f"vectors: op {op.name!r} of kind {op.kind!r} has no clamp")


def rounding_operands(op, codes: dict, acc: np.ndarray | None):
    """[(p, n)]: the int64 products an op rounds, round_half_up(p / 2^n) (SPEC 6.4),
    each with its shift n; the elements of p are those the rule applies to."""
    if isinstance(op, ConvOp):
        acc = acc.astype(np.int64)
        return [(acc[acc >= 0] * op.multiplier, 31 - op.shift),
                (op.neg_sign * acc[acc < 0] * op.neg_multiplier, 31 - op.neg_shift)]
    x = codes[op.input].astype(np.int64)
    if isinstance(op, RequantOp):
        return [(x * op.multiplier, 31 - op.shift)]
    b = codes[op.branch].astype(np.int64)
    if op.branch_relu:
        b = np.maximum(b, 0)
    return [(x * op.multiplier + b * op.branch_multiplier, 31 - op.shift)]


def coverage(op, codes: dict, acc: np.ndarray | None) -> dict:
    """What one op's vectors exercise: exact rounding ties (p / 2^n an odd multiple of
    1/2) of both signs; negative accumulators (a conv's negative side: PReLU's second
    multiplier); non-zero and negative branch codes of an add (its branch and ReLU)."""
    tie_pos = tie_neg = 0
    for p, n in rounding_operands(op, codes, acc):
        if n > 0:
            tie = (p & np.int64((1 << n) - 1)) == (1 << (n - 1))
            tie_pos += int((tie & (p > 0)).sum())
            tie_neg += int((tie & (p < 0)).sum())
    c = dict(ties_positive=tie_pos, ties_negative=tie_neg)
    if isinstance(op, ConvOp):
        c["negative_acc"] = int((acc < 0).sum())
    if isinstance(op, AddOp):
        b = codes[op.branch]
        c.update(branch_nonzero=int((b != 0).sum()), branch_negative=int((b < 0).sum()))
    return c


def rebuild_accumulator(pop: np.ndarray, a_signed: bool, b_signed: bool, bias: int) -> int:
    """bias + sum_{m,p} w_a[m] w_b[p] P[m, p]: the accumulator from its popcounts."""
    wa = plane_weights(pop.shape[0], a_signed)
    wb = plane_weights(pop.shape[1], b_signed)
    return int(bias) + int(wa @ pop @ wb)


def plane_element(shape) -> tuple:
    """The documented output element of every conv: n = 0, o = 0, the centre pixel."""
    _, _, h, w = shape
    return 0, 0, h // 2, w // 2


def im2col_row(x: np.ndarray, k: int, n: int, y: int, x0: int, pad_value=None) -> np.ndarray:
    """Input codes read by output pixel (n, y, x0) of a K x K "same" conv, ordered
    (c, ky, kx) like a flattened OIHW weight row; padded taps are 0, or pad_value[c]."""
    p = k // 2
    xp = np.pad(x[n], ((0, 0), (p, p), (p, p)))
    if pad_value is not None:
        inside = np.pad(np.ones(x.shape[2:], bool), p)
        xp = np.where(inside, xp, np.asarray(pad_value, xp.dtype).reshape(-1, 1, 1))
    return np.ascontiguousarray(xp[:, y:y + k, x0:x0 + k].reshape(-1))
