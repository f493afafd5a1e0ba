"""Integer arithmetic rules of the integer-only model (docs/SPEC.md, "integer").

Everything a port must reproduce bit for bit outside the dot products lives here:
the code ranges of each grid, the worst-case accumulator bound and the
accumulator dtype it proves, the derivation of a real multiplier as an int32
multiplier and a shift, and requantization with a single round-half-up rounding
followed by a saturating clamp.

Rounding is round half up, floor(t + 1/2), everywhere (the project rule). It
lives in one named function, `rounding_right_shift`, never in an inline shift.

Each vectorised function has a plain Python-int twin (`*_reference`) that the
tests compare it with.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1
MAX_CODE_BITS = 16
# quantize_multiplier accepts reals in [2^-32, 2^31): shift in [-31, 31], so the
# total right shift n = 31 - shift lies in [0, 62] (see requantize's proof).
MIN_SHIFT = -31
MAX_SHIFT = 31


# ---------------------------------------------------------------------------
# Code ranges and accumulator bounds
# ---------------------------------------------------------------------------

def _check_bits(name: str, bits: int) -> None:
    if not (isinstance(bits, (int, np.integer)) and 1 <= bits <= MAX_CODE_BITS):
        raise ValueError(f"{name}: bits must be an int in [1, {MAX_CODE_BITS}], got {bits!r}")


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """Inclusive range of an M-bit code: signed is two's complement.

    Unsigned: [0, 2^M - 1]. Signed: [-2^(M-1), 2^(M-1) - 1]. The narrow grid
    (codes in [-(2^(M-1)-1), 2^(M-1)-1]) is a subset of the signed range; the
    engines accept the whole two's complement range so a port's M-bit register
    is covered, including -2^(M-1).
    """
    _check_bits("code_range", bits)
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def operand_max_abs(bits: int, signed: bool, dorefa: bool = False) -> int:
    """Largest |integer value| an M-bit operand can take in a dot product.

    Unsigned: 2^M - 1. Signed (two's complement): 2^(M-1). Dorefa: codes k are
    unsigned in [0, n], n = 2^M - 1, and the integer value is 2k - n, so
    |value| <= n = 2^M - 1.
    """
    if dorefa and signed:
        raise ValueError("operand_max_abs: a dorefa operand stores unsigned codes k; signed must be False")
    lo, hi = code_range(bits, signed)
    return max(-lo, hi)


def acc_bound(fan_in: int, a_bits: int, a_signed: bool, w_bits: int, w_signed: bool,
              bias_bound: int = 0, *, a_dorefa: bool = False, w_dorefa: bool = False) -> int:
    """Worst-case |accumulator| of a dot product of length fan_in plus a bias.

    bound = fan_in * max|a| * max|w| + bias_bound, with max|.| from
    `operand_max_abs`. Every partial sum of the dot product (in any order) is
    bounded by the same number, which is what the float64 path of the plain
    engine relies on. Returns a Python int (no overflow).
    """
    if fan_in < 0 or bias_bound < 0:
        raise ValueError(f"acc_bound: fan_in and bias_bound must be >= 0, got {fan_in}, {bias_bound}")
    return (int(fan_in) * operand_max_abs(a_bits, a_signed, a_dorefa)
            * operand_max_abs(w_bits, w_signed, w_dorefa) + int(bias_bound))


def acc_dtype(bound: int) -> type:
    """np.int32 if |acc| <= bound fits int32, else np.int64; ValueError beyond int64."""
    if bound < 0:
        raise ValueError(f"acc_dtype: bound must be >= 0, got {bound}")
    if bound <= INT32_MAX:
        return np.int32
    if bound <= INT64_MAX:
        return np.int64
    raise ValueError(f"acc_dtype: accumulator bound {bound} does not fit int64")


def code_dtype(qmin: int, qmax: int) -> type:
    """The storage dtype of codes in [qmin, qmax] (SPEC 1): the first of int8, uint8,
    int16, int32 that holds the range (the 8-bit image is uint8, 4- and 8-bit signed
    codes int8)."""
    if qmin > qmax:
        raise ValueError(f"code_dtype: empty code range [{qmin}, {qmax}]")
    for dt in (np.int8, np.uint8, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= qmin and qmax <= info.max:
            return dt
    raise ValueError(f"code_dtype: code range [{qmin}, {qmax}] does not fit int32")


def check_codes(name: str, codes: np.ndarray, bits: int, signed: bool) -> None:
    """ValueError unless codes is an integer array whose values fit (bits, signed)."""
    if not isinstance(codes, np.ndarray) or codes.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected an integer ndarray of codes, got "
                         f"{getattr(codes, 'dtype', type(codes))}")
    lo, hi = code_range(bits, signed)
    if codes.size:
        cmin, cmax = int(codes.min()), int(codes.max())
        if cmin < lo or cmax > hi:
            kind = "signed" if signed else "unsigned"
            raise ValueError(f"{name}: codes span [{cmin}, {cmax}], outside the {bits}-bit "
                             f"{kind} range [{lo}, {hi}]")


# ---------------------------------------------------------------------------
# Multiplier derivation
# ---------------------------------------------------------------------------

def quantize_multiplier(real: float) -> tuple[int, int]:
    """Represent real > 0 as M * 2^(shift - 31) with M an int32 in [2^30, 2^31 - 1].

    Like TFLite's QuantizeMultiplier: frexp(real) = f * 2^e with f in [1/2, 1),
    M = round_half_up(f * 2^31), shift = e; if the rounding reaches 2^31, M is
    halved to 2^30 and shift incremented. Round half up equals TFLite's round
    half away from zero here because f > 0. The rounding is done on the exact
    binary fraction of `real` (Python ints), so |M * 2^(shift-31) - real| <=
    2^(shift-32) <= 2^-31 * real.

    real == 0 gives (0, 0) (requantize then outputs 0). Supported: real in
    [2^-32, 2^31) after rounding, i.e. shift in [-31, 31]; smaller reals would
    zero every int32 accumulator and larger ones saturate every non-zero one,
    so both mean a broken model and raise ValueError, as do negative and
    non-finite reals.
    """
    real = float(real)
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"quantize_multiplier: real multiplier must be finite and >= 0, got {real!r}")
    if real == 0.0:
        return 0, 0
    f, e = math.frexp(real)
    num, den = f.as_integer_ratio()              # f = num / den exactly, den a power of two
    m = (2 * num * (1 << 31) + den) // (2 * den)  # floor(f * 2^31 + 1/2), exact
    if m == 1 << 31:
        m, e = 1 << 30, e + 1
    if not MIN_SHIFT <= e <= MAX_SHIFT:
        raise ValueError(f"quantize_multiplier: real multiplier {real!r} gives shift {e}, outside "
                         f"[{MIN_SHIFT}, {MAX_SHIFT}] (reals in [2^-32, 2^31) are supported)")
    return int(m), int(e)


# ---------------------------------------------------------------------------
# Rounding, rescaling, saturation
# ---------------------------------------------------------------------------

def rounding_right_shift(x, n: int):
    """floor(x / 2^n + 1/2): arithmetic right shift by n >= 0 rounding half up.

    x is a Python int or an int64 ndarray; the caller guarantees that
    x + 2^(n-1) does not overflow (requantize proves it). n = 0 returns x.
    """
    if n < 0:
        raise ValueError(f"rounding_right_shift: shift must be >= 0, got {n}")
    if n == 0:
        return x
    if isinstance(x, np.ndarray):
        return (x + np.int64(1 << (n - 1))) >> np.int64(n)
    return (x + (1 << (n - 1))) >> n


def _check_multiplier(multiplier: int, shift: int) -> None:
    if not (0 <= multiplier <= INT32_MAX):
        raise ValueError(f"requantize: multiplier must be in [0, 2^31 - 1], got {multiplier}")
    if not (MIN_SHIFT <= shift <= MAX_SHIFT):
        raise ValueError(f"requantize: shift must be in [{MIN_SHIFT}, {MAX_SHIFT}], got {shift}")


def multiply_by_quantized_multiplier(acc: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """round_half_up(acc * multiplier / 2^n) with n = 31 - shift, exact, no clamp.

    acc: integer ndarray (any shape), values within int64. multiplier in
    [0, 2^31 - 1], shift in [-31, 31] (what `quantize_multiplier` returns), so
    n is in [0, 62]. Returns int64, same shape.

    Exact for every accumulator (SPEC 6.4, the product-width rule): where
    max|acc| * M + 2^(n-1) < 2^63 in int64 directly; else, for max|acc| < 2^46 and
    n >= 16, with the 16-bit split of M (`split_requant`) in int64; else on Python
    ints. ValueError only if a result itself leaves int64.
    """
    _check_multiplier(multiplier, shift)
    if not isinstance(acc, np.ndarray) or acc.dtype.kind not in "iu":
        raise ValueError(f"requantize: acc must be an integer ndarray, got {getattr(acc, 'dtype', type(acc))}")
    n = 31 - shift
    amax = max(-int(acc.min()), int(acc.max())) if acc.size else 0
    if amax <= INT64_MAX and product_bits(amax, multiplier, shift) <= 64:
        return rounding_right_shift(acc.astype(np.int64) * np.int64(multiplier), n)
    if split_exact(amax, shift):
        return split_requant(acc.astype(np.int64), multiplier, n)
    out = [rounding_right_shift(int(a) * multiplier, n) for a in acc.ravel().tolist()]
    if out and max(-min(out), max(out)) > INT64_MAX:
        raise ValueError(f"requantize: max|acc| = {amax} with multiplier {multiplier} and shift {shift} "
                         f"gives results beyond int64")
    return np.array(out, dtype=np.int64).reshape(acc.shape)


def saturate(x: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """Clamp int64 values to [qmin, qmax] and store them as `code_dtype(qmin, qmax)`."""
    dt = code_dtype(qmin, qmax)
    return np.clip(x, qmin, qmax).astype(dt)


def requantize(acc: np.ndarray, multiplier: int, shift: int, qmin: int, qmax: int) -> np.ndarray:
    """Codes = clamp(round_half_up(acc * M * 2^(shift - 31)), qmin, qmax).

    acc: integer ndarray (int32 or int64 accumulators), any shape. multiplier,
    shift: from `quantize_multiplier`. Returns codes of dtype
    `code_dtype(qmin, qmax)`, same shape. Single rounding, then a saturating
    clamp; no zero point (every grid of this project has its zero at code 0).
    """
    return saturate(multiply_by_quantized_multiplier(acc, multiplier, shift), qmin, qmax)


def requantize_reference(acc: np.ndarray, multiplier: int, shift: int, qmin: int, qmax: int) -> np.ndarray:
    """Loop twin of `requantize` on Python ints (divmod, no shifts)."""
    n = 31 - shift
    out = np.empty(acc.shape, dtype=code_dtype(qmin, qmax))
    for idx, a in np.ndenumerate(acc):
        p = int(a) * multiplier
        q, r = divmod(p, 2 ** n)     # p = q * 2^n + r, 0 <= r < 2^n
        v = q + (1 if 2 * r >= 2 ** n else 0)
        out[idx] = min(max(v, qmin), qmax)
    return out


# ---------------------------------------------------------------------------
# The product width (SPEC 6.4): what a port needs for acc * M + 2^(n-1)
# ---------------------------------------------------------------------------
# Requantization is defined exactly for every accumulator within the proven bound. The
# product acc * M + 2^(n-1) of a conv needs PRODUCT_BITS = bit_length(acc_bound * M +
# 2^(n-1)) + 1 signed bits (the wider of PReLU's two sides); up to 64 a port multiplies
# in int64. Beyond, it uses 128-bit products or splits M = Mh 2^16 + Ml (0 <= Ml < 2^16):
#     floor((acc M + 2^(n-1)) / 2^n) = floor((acc Mh + floor((acc Ml + 2^(n-1)) / 2^16)) / 2^(n-16)),
# exact in int64 while |acc| < 2^46 and n >= 16 (acc Ml + 2^(n-1) < 2^62 + 2^61; acc Mh < 2^61).
# A model where neither holds is refused at conversion (check_product).

SPLIT_BITS = 16
SPLIT_ACC_LIMIT = 1 << 46      # |acc| below this: the split's int64 products are exact


def product_bits(bound: int, multiplier: int, shift: int) -> int:
    """Signed width of bound * M + 2^(n-1), n = 31 - shift: the widest intermediate of
    requantizing any |x| <= bound (SPEC 6.4)."""
    n = 31 - shift
    return (int(bound) * int(multiplier) + ((1 << (n - 1)) if n else 0)).bit_length() + 1


def split_exact(bound: int, shift: int) -> bool:
    """Is the 16-bit split of M exact in int64 for every |x| <= bound?"""
    return int(bound) < SPLIT_ACC_LIMIT and 31 - shift >= SPLIT_BITS


def split_requant(x: np.ndarray, multiplier: int, n: int) -> np.ndarray:
    """round_half_up(x * M / 2^n) by the 16-bit split of M, int64 (|x| < 2^46, n >= 16)."""
    mh, ml = np.int64(multiplier >> SPLIT_BITS), np.int64(multiplier & 0xFFFF)
    inner = (x * ml + np.int64(1 << (n - 1))) >> np.int64(SPLIT_BITS)
    return (x * mh + inner) >> np.int64(n - SPLIT_BITS)


def op_product_bits(op, tensors: dict) -> int:
    """PRODUCT_BITS of a requantizing op (conv, requant, add; duck-typed on op.kind):
    conv: both sides' acc_bound * M + 2^(n-1); requant: max|x| * M + 2^(n-1); add:
    max|a| M_a + max|b'| M_b + 2^(n-1), b' the branch after Eq. 7's ReLU."""
    if op.kind == "conv":
        return max(product_bits(op.acc_bound, op.multiplier, op.shift),
                   product_bits(op.acc_bound, op.neg_multiplier, op.neg_shift))
    x = tensors[op.input]
    if op.kind == "requant":
        return product_bits(max(-x.qmin, x.qmax), op.multiplier, op.shift)
    if op.kind == "add":
        b = tensors[op.branch]
        b_max = max(0 if op.branch_relu else -b.qmin, b.qmax)
        n = 31 - op.shift
        total = max(-x.qmin, x.qmax) * op.multiplier + b_max * op.branch_multiplier
        return (total + ((1 << (n - 1)) if n else 0)).bit_length() + 1
    raise ValueError(f"op_product_bits: {op.kind!r} op {op.name!r} does not requantize")


def check_product(name: str, bound: int, multiplier: int, shift: int) -> bool:
    """True if requantizing |x| <= bound needs the split (products beyond 64 bits), False
    if int64 products suffice; ValueError if neither int64 nor the split is exact."""
    _check_multiplier(multiplier, shift)
    bits = product_bits(bound, multiplier, shift)
    if bits <= 64:
        return False
    if split_exact(bound, shift):
        return True
    raise ValueError(f"{name}: requantization products need {bits} bits (bound {bound} x multiplier "
                     f"{multiplier} + 2^{30 - shift}); beyond 64 bits the 16-bit split of the multiplier "
                     f"is exact only for bounds below 2^46 and right shifts n = 31 - shift >= 16 "
                     f"(here n = {31 - shift}): refused (SPEC 6.4)")


def check_op_product(op, tensors: dict) -> int:
    """The conversion's check of an op's product width (ValueError as check_product);
    returns PRODUCT_BITS (None for a shuffle). Adds and requants of codes (|x| < 2^16)
    always fit 64 bits."""
    if op.kind == "shuffle":
        return None
    if op.kind == "conv":
        check_product(op.name, op.acc_bound, op.multiplier, op.shift)
        check_product(op.name + " (acc < 0)", op.acc_bound, op.neg_multiplier, op.neg_shift)
    elif op.kind == "requant":
        x = tensors[op.input]
        check_product(op.name, max(-x.qmin, x.qmax), op.multiplier, op.shift)
    bits = op_product_bits(op, tensors)
    if bits > 64 and op.kind == "add":
        raise ValueError(f"{op.name}: the add's products need {bits} bits, beyond int64 (SPEC 6.8)")
    return bits


# ---------------------------------------------------------------------------
# Fused requantization (the hot path of the plain engine)
# ---------------------------------------------------------------------------
# One compiled pass per op: read the accumulator (float32 holding an exact integer, or
# int32/int64), add the bias, multiply, rounding right shift, clamp, write the code dtype.
# The arithmetic is the int64 arithmetic of `requantize` on scalars; nothing is checked
# here: `check_fused_requant` / `check_product` prove the product width once per op (at
# conversion and in run.prepare), and the accumulators and codes are correct by
# construction. Products beyond 64 bits take the 16-bit split (`_rq_split`). Loop twins: `requantize_reference`,
# `requantize_conv_reference`.

def check_fused_requant(name: str, acc_bound_: int, multiplier: int, shift: int) -> None:
    """ValueError unless acc_bound * M + 2^(n-1) < 2^63 (n = 31 - shift): then the fused
    kernels' int64 arithmetic is exact for every |acc| <= acc_bound (SPEC 6.4)."""
    _check_multiplier(multiplier, shift)
    bits = product_bits(acc_bound_, multiplier, shift)
    if bits > 64:
        raise ValueError(f"{name}: accumulator bound {acc_bound_} with multiplier {multiplier} and shift "
                         f"{shift} needs {bits} bits; int64 arithmetic would overflow")


@njit(cache=True, inline="always")
def _rq(acc, multiplier, n):
    """round_half_up(acc * multiplier / 2^n) on int64 scalars (n in [0, 62])."""
    p = acc * multiplier
    if n == 0:
        return p
    return (p + (np.int64(1) << (n - 1))) >> n


@njit(cache=True, inline="always")
def _rq_split(acc, multiplier, n):
    """round_half_up(acc * multiplier / 2^n) by the 16-bit split of M (|acc| < 2^46, n >= 16)."""
    inner = (acc * (multiplier & 0xFFFF) + (np.int64(1) << (n - 1))) >> 16
    return (acc * (multiplier >> 16) + inner) >> (n - 16)


@njit(cache=True)
def requant_conv_kernel(acc, bias, m_pos, n_pos, m_neg, n_neg, neg_sign, qmin, qmax, out, split_pos, split_neg):
    """out[r, w, o] = clamp(rq(a, M+, n+)) for a >= 0, clamp(rq(sign * a, M-, n-)) for a < 0,
    a = int64(acc[r, w, o]) + bias[o]. acc: (R, W', O) float32 (exact integers), int32 or
    int64 with W' >= W (the plain engine passes its grid rows with their padding columns,
    contiguous: then the loop vectorises; a strided view is 30x slower); bias: int64 (O,);
    out: (R, W, O) of the code dtype. A side whose products pass 64 bits (split_pos,
    split_neg; SPEC 6.4) uses the 16-bit split of its multiplier, exact for |a| < 2^46 and
    n >= 16 (check_product); the flags are loop-invariant, so the int64 path is unchanged."""
    rows, width, chans = out.shape
    for r in range(rows):
        for w in range(width):
            for o in range(chans):
                a = np.int64(acc[r, w, o]) + bias[o]
                if a >= 0:
                    y = _rq_split(a, m_pos, n_pos) if split_pos else _rq(a, m_pos, n_pos)
                else:
                    y = _rq_split(neg_sign * a, m_neg, n_neg) if split_neg else _rq(neg_sign * a, m_neg, n_neg)
                out[r, w, o] = min(max(y, qmin), qmax)


@njit(cache=True)
def add_kernel(a, b, m_a, m_b, n, branch_relu, qmin, qmax, out):
    """out = clamp(round_half_up((a * M_a + b' * M_b) / 2^n)), b' = max(b, 0) with Eq. 7's
    ReLU; flat arrays of codes (|a|, |b| < 2^15, M < 2^31: the sum is below 2^47)."""
    for i in range(out.size):
        bv = np.int64(b[i])
        if branch_relu and bv < 0:
            bv = 0
        total = np.int64(a[i]) * m_a + bv * m_b
        if n > 0:
            total = (total + (np.int64(1) << (n - 1))) >> n
        out[i] = min(max(total, qmin), qmax)


def requantize_conv(acc: np.ndarray, bias: np.ndarray, pos: tuple, neg: tuple, qmin: int, qmax: int,
                    out: np.ndarray | None = None, split: tuple = (False, False)) -> np.ndarray:
    """Fused conv requantization (bias, PReLU's two multipliers, clamp) of acc (R, W', O).

    pos = (M+, shift+), neg = (M-, shift-, sign) as in `ConvOp`; the caller has checked
    the product width with `check_product`: split = (positive side, negative side) says
    which side needs the 16-bit split (products beyond 64 bits). Returns codes (R, W, O) of
    `code_dtype(qmin, qmax)`, written into out when given (then W = out.shape[1] <= W':
    acc's columns from W on are ignored), else W = W'."""
    if out is None:
        out = np.empty(acc.shape, dtype=code_dtype(qmin, qmax))
    if acc.ndim != 3 or out.ndim != 3 or acc.shape[0] != out.shape[0] or acc.shape[2] != out.shape[2] \
            or acc.shape[1] < out.shape[1]:
        raise ValueError(f"requantize_conv: acc {acc.shape} does not cover out {out.shape}")
    requant_conv_kernel(acc, bias, np.int64(pos[0]), np.int64(31 - pos[1]), np.int64(neg[0]),
                        np.int64(31 - neg[1]), np.int64(neg[2]), np.int64(qmin), np.int64(qmax), out,
                        bool(split[0]), bool(split[1]))
    return out


def requantize_fused(codes: np.ndarray, multiplier: int, shift: int, qmin: int, qmax: int) -> np.ndarray:
    """`requantize` of codes (any shape, |code| < 2^31) in one compiled pass, unchecked."""
    out = np.empty(codes.shape, dtype=code_dtype(qmin, qmax))
    flat = np.ascontiguousarray(codes).reshape(1, -1, 1)
    requantize_conv(flat, np.zeros(1, np.int64), (multiplier, shift), (multiplier, shift, 1),
                    qmin, qmax, out.reshape(1, -1, 1))
    return out


def add_fused(a: np.ndarray, b: np.ndarray, m_a: int, m_b: int, shift: int, branch_relu: bool,
              qmin: int, qmax: int) -> np.ndarray:
    """The skip add of SPEC 6.8 in one compiled pass: a, b codes of one shape."""
    out = np.empty(a.shape, dtype=code_dtype(qmin, qmax))
    add_kernel(np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1), np.int64(m_a),
               np.int64(m_b), np.int64(31 - shift), bool(branch_relu), np.int64(qmin), np.int64(qmax),
               out.reshape(-1))
    return out


def requantize_conv_reference(acc, bias, pos, neg, qmin, qmax):
    """Loop twin of `requantize_conv` on Python ints (divmod, no shifts)."""
    out = np.empty(acc.shape, dtype=code_dtype(qmin, qmax))
    for idx in np.ndindex(*acc.shape):
        a = int(acc[idx]) + int(bias[idx[-1]])
        m, shift, sign = (pos[0], pos[1], 1) if a >= 0 else neg
        q, r = divmod(sign * a * m, 2 ** (31 - shift))
        v = q + (1 if 2 * r >= 2 ** (31 - shift) else 0)
        out[idx] = min(max(v, qmin), qmax)
    return out


def add_reference(a, b, m_a, m_b, shift, branch_relu, qmin, qmax):
    """Loop twin of `add_fused` on Python ints."""
    out = np.empty(a.shape, dtype=code_dtype(qmin, qmax))
    n = 31 - shift
    for idx in np.ndindex(*a.shape):
        bv = int(b[idx])
        if branch_relu:
            bv = max(bv, 0)
        q, r = divmod(int(a[idx]) * m_a + bv * m_b, 2 ** n)
        out[idx] = min(max(q + (1 if 2 * r >= 2 ** n else 0), qmin), qmax)
    return out
