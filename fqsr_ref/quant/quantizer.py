"""The learnable-interval quantizer of Eq. 3, its straight-through backward, and rounding.

One quantizer covers one tensor (per-tensor interval I, "privatized" per layer).
Three grids, all with value = code * I / n:

    unsigned   codes q in [0, n],   n = 2^M - 1,      value q * I / n          (Eq. 3)
    narrow     codes q in [-n, n],  n = 2^(M-1) - 1,  value q * I / n          (signed)
    dorefa     codes k in [0, n],   n = 2^M - 1,      value (2k - n) * I / n   (signed)

"narrow" is the signed default: zero is a level and a code fits M-bit two's
complement. Eq. 3 as printed uses 2^M - 1 levels per side for signed data, which
needs M + 1 bits. "dorefa" is the grid of the authors' released code: 2^M levels,
no zero, and at M = 1 it is binary +-I (so 1-bit signed data must use it).
M = 32 means full precision: the quantizer is the identity.

Rounding is round half up, floor(t + 1/2), computed exactly (round_half_up).

quantize_forward and quantize_backward run one compiled pass each (Numba) that does
per element exactly the NumPy operations written in their docstrings, in v's dtype
and in the same order (no fast-math): results are equal bit for bit to the plain
NumPy twins quantize_forward_reference and quantize_backward_reference.
"""
from typing import NamedTuple

import numpy as np
from numba import njit

GRIDS = ("narrow", "dorefa")
IDENTITY_BITS = 32


def round_half_up(t):
    """floor(t + 1/2), exact for every finite float; keeps dtype.

    t: float array or scalar (float32 or float64). Returns the same dtype and shape.
    floor(t + 0.5) is wrong where t + 0.5 itself rounds: for the largest float below
    0.5 (gives 1, not 0) and for odd integers near 2^52 (2^52 + 1 gives 2^52 + 2).
    Here f = floor(t) is exact, and the comparison t - f >= 0.5 decides correctly:
    t - f is exact whenever |t| >= 1 or t >= 0 (a multiple of ulp(t) below 1) and for
    t in [-1, -1/2]; for t in (-1/2, 0) the true difference exceeds 1/2, and rounding
    to nearest cannot bring it below the representable 1/2.
    """
    f = np.floor(t)
    return f + (t - f >= 0.5)


class QuantSpec(NamedTuple):
    """What a quantizer produces: bits M (1..16, or 32 = identity), signedness, grid.

    grid is "narrow" (default) or "dorefa"; it only matters for signed data.
    QuantSpec(1, True, "narrow") is invalid (the narrow grid has a single level, 0,
    at M = 1); 1-bit signed data is binary, QuantSpec(1, True, "dorefa").
    Construct freely; every function validates with validate_spec.
    """
    bits: int
    signed: bool
    grid: str = "narrow"


class QuantCache(NamedTuple):
    """What quantize_backward needs; references to the forward's arrays, no copies."""
    v: np.ndarray
    qv: np.ndarray
    interval: np.ndarray      # 0-d, v's dtype: the value the forward used
    interval_shape: tuple     # () for a scalar, else the caller's array shape
    interval_dtype: np.dtype  # the caller's dtype (v's dtype for a Python scalar)
    spec: QuantSpec


def validate_spec(spec, where="quantizer"):
    """Return spec if it is a valid QuantSpec, else raise ValueError naming `where`."""
    if not isinstance(spec, QuantSpec):
        raise ValueError(f"{where}: spec must be a QuantSpec, got {type(spec).__name__} {spec!r}")
    bits, signed, grid = spec
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)):
        raise ValueError(f"{where}: bits must be an int in 1..16 or 32, got {bits!r}")
    if not (1 <= bits <= 16 or bits == IDENTITY_BITS):
        raise ValueError(f"{where}: bits must be in 1..16 or 32 (identity), got {bits}")
    if not isinstance(signed, (bool, np.bool_)):
        raise ValueError(f"{where}: signed must be a bool, got {signed!r}")
    if grid not in GRIDS:
        raise ValueError(f"{where}: grid must be one of {GRIDS}, got {grid!r}")
    if signed and grid == "narrow" and bits == 1:
        raise ValueError(f"{where}: the narrow grid needs bits >= 2 (at 1 bit its only level "
                         f"is 0); use grid='dorefa' for binary +-I signed data")
    return spec


def levels(spec):
    """(n, qmin, qmax) of an M-bit grid: codes lie in [qmin, qmax], value = code * I / n.

    For "dorefa" the codes are k in [0, n] and value = (2k - n) * I / n.
    Python ints. bits = 32 has no code range (ValueError).
    """
    bits, signed, grid = validate_spec(spec, "levels")
    if bits == IDENTITY_BITS:
        raise ValueError("levels: bits=32 is the identity quantizer and has no code range")
    if signed and grid == "narrow":
        n = 2 ** (bits - 1) - 1
        return n, -n, n
    n = 2 ** bits - 1
    return n, 0, n


def _clip_bounds(spec):
    """Clip range of v / I: [-1, 1] for signed data, [0, 1] for unsigned (Eq. 3)."""
    return (-1.0, 1.0) if spec.signed else (0.0, 1.0)


def _float_dtype(a, what):
    dtype = np.asarray(a).dtype
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{what} must be float32 or float64, got {dtype}")
    return dtype


def _interval_scalar(interval, dtype, where):
    """The interval as a positive finite 0-d array of `dtype`, its shape and its dtype.

    Accepts a Python/NumPy scalar or a 0-d/1-element float ndarray. The interval is
    one per-tensor scalar, so a master copy in float64 may drive a float32 tensor:
    the value used is the interval rounded to `dtype` (checked positive and finite
    there), and its gradient goes back in the interval's own dtype.
    """
    if isinstance(interval, np.ndarray):
        if interval.size != 1 or interval.dtype not in (np.float32, np.float64):
            raise ValueError(f"{where}: interval must be a scalar or 1-element float array "
                             f"(per-tensor), got shape {interval.shape} {interval.dtype}")
        shape, own_dtype = interval.shape, interval.dtype
    elif isinstance(interval, (bool, np.bool_)) or not isinstance(
            interval, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where}: interval must be a positive finite scalar, got {interval!r}")
    else:
        shape, own_dtype = (), np.dtype(dtype)
    with np.errstate(over="ignore"):
        value = np.asarray(interval, dtype=dtype).reshape(())
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{where}: interval must be positive and finite in {np.dtype(dtype)}, "
                         f"got {interval!r}")
    return value, shape, own_dtype


def scale(interval, spec):
    """I / n: the value of one code step (twice that on the dorefa grid).

    interval: positive finite scalar or 1-element float array. Returns a NumPy scalar
    of the interval's dtype (float64 for a Python scalar).
    """
    n, _, _ = levels(spec)
    own = isinstance(interval, (np.ndarray, np.floating))
    dtype = interval.dtype if own else np.dtype(np.float64)
    value, _, _ = _interval_scalar(interval, dtype, "scale")
    return value / dtype.type(n)


def _values(codes, step, spec, n):
    """codes * step on narrow/unsigned grids, (2k - n) * step on the dorefa grid."""
    signed_codes = 2 * codes - n if (spec.signed and spec.grid == "dorefa") else codes
    return signed_codes.astype(step.dtype) * step


def dequantize(codes, interval, spec):
    """Values of integer codes (Eq. 3 after rounding): value = code * I / n.

    codes: integer array of any shape (dorefa: k in [0, n]). interval as in scale().
    Returns the interval's float dtype (float64 for a Python scalar). Equal bit for
    bit to the qv that quantize_forward returns with the same interval and dtype.
    """
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"dequantize: codes must be integers, got {codes.dtype}")
    n, qmin, qmax = levels(spec)
    if codes.size and (codes.min() < qmin or codes.max() > qmax):
        raise ValueError(f"dequantize: codes outside [{qmin}, {qmax}] for {spec}: "
                         f"min {codes.min()}, max {codes.max()}")
    # int64 so that 2k - n cannot wrap for narrow integer dtypes.
    return _values(codes.astype(np.int64), scale(interval, spec), spec, n)


def quantize_forward(v, interval, spec, name="v"):
    """Eq. 3: Q(v) = round_half_up(clip(v / I, lo, hi) * n) * I / n, per tensor.

    v: float32/float64 array, any shape, no NaN (inf clips to the bound).
    interval: the learnable I > 0, a scalar or 0-d/1-element float array (a float64
        master copy is rounded to v's dtype; see _interval_scalar).
    spec: QuantSpec. name: the tensor's name, used in error messages.
    Returns (qv, codes, cache): qv like v (dtype, shape); codes int32 of v's shape
    (dorefa: k in [0, n], computed from t = (clip(v / I, -1, 1) + 1) / 2 * n);
    for bits = 32, qv = v.copy() bit for bit and codes = None.
    The float expression is fixed: r = v / I, t = clip(r) * n, q = round_half_up(t),
    qv = q * (I / n), all in v's dtype.
    """
    where = f"quantize_forward({name})"
    spec = validate_spec(spec, where)
    if not isinstance(v, np.ndarray):
        raise ValueError(f"{where}: v must be a numpy array, got {type(v).__name__}")
    dtype = _float_dtype(v, f"{where}: v")
    interval_value, interval_shape, interval_dtype = _interval_scalar(interval, dtype, where)
    if spec.bits == IDENTITY_BITS:
        if np.isnan(v).any():
            raise ValueError(f"{where}: v contains {int(np.isnan(v).sum())} NaN of "
                             f"{v.size} elements")
        qv = v.copy()
        return qv, None, QuantCache(v, qv, interval_value, interval_shape, interval_dtype, spec)
    n, _, _ = levels(spec)
    lo, hi = _clip_bounds(spec)
    flat = np.ascontiguousarray(v).reshape(-1)
    codes, qv = np.empty(flat.size, np.int32), np.empty_like(flat)
    nans = _quantize_kernel(flat, _constants(dtype, interval_value, lo, hi, n),
                            spec.signed and spec.grid == "dorefa", n, codes, qv)
    if nans:
        raise ValueError(f"{where}: v contains {nans} NaN of {v.size} elements")
    qv, codes = qv.reshape(v.shape), codes.reshape(v.shape)
    return qv, codes, QuantCache(v, qv, interval_value, interval_shape, interval_dtype, spec)


def _constants(dtype, interval, lo, hi, n):
    """The kernels' scalars in v's dtype, so that every operation stays in it:
    [I, lo, hi, n, I / n, 0, 1/2, 1, 2]."""
    t = dtype.type
    return np.array([interval, lo, hi, n, interval / t(n), 0, 0.5, 1, 2], dtype=dtype)


@njit(cache=True)
def _quantize_kernel(v, k, dorefa, n, codes, qv):
    """quantize_forward_reference's operations per element; returns the NaN count."""
    interval, lo, hi, levels_f, step, zero, half, one, two = k
    nans = 0
    for i in range(v.size):
        x = v[i]
        if x != x:
            nans += 1
            codes[i] = 0
            qv[i] = zero
            continue
        r = x / interval
        c = lo if r < lo else (hi if r > hi else r)   # np.clip (+-0 give the same codes)
        t = (c + one) / two * levels_f if dorefa else c * levels_f
        f = np.floor(t)
        q = f + (one if t - f >= half else zero)      # round_half_up
        code = np.int32(q)
        codes[i] = code
        qv[i] = 2 * code - n if dorefa else code      # exact in v's dtype
        qv[i] = qv[i] * step
    return nans


def quantize_forward_reference(v, interval, spec, name="v"):
    """Plain NumPy twin of quantize_forward (tests compare the two)."""
    where = f"quantize_forward({name})"
    spec = validate_spec(spec, where)
    if not isinstance(v, np.ndarray):
        raise ValueError(f"{where}: v must be a numpy array, got {type(v).__name__}")
    dtype = _float_dtype(v, f"{where}: v")
    interval_value, interval_shape, interval_dtype = _interval_scalar(interval, dtype, where)
    if np.isnan(v).any():
        raise ValueError(f"{where}: v contains {int(np.isnan(v).sum())} NaN of {v.size} elements")
    if spec.bits == IDENTITY_BITS:
        qv = v.copy()
        return qv, None, QuantCache(v, qv, interval_value, interval_shape, interval_dtype, spec)
    n, _, _ = levels(spec)
    lo, hi = _clip_bounds(spec)
    c = np.clip(v / interval_value, lo, hi)
    if spec.signed and spec.grid == "dorefa":
        t = (c + 1) / 2 * dtype.type(n)
    else:
        t = c * dtype.type(n)
    codes = round_half_up(t).astype(np.int32)
    qv = _values(codes, interval_value / dtype.type(n), spec, n)
    return qv, codes, QuantCache(v, qv, interval_value, interval_shape, interval_dtype, spec)


def ste_grads(v, qv, interval, spec):
    """Per-element STE derivatives (dQ/dv, dQ/dI) of Eq. 3 in v's dtype.

    With r = v / I and the clip range [lo, hi] inclusive:
        inside  (lo <= r <= hi):  dQ/dv = 1,  dQ/dI = (Q(v) - v) / I
        r > hi:                   dQ/dv = 0,  dQ/dI = hi  (= +1)
        r < lo:                   dQ/dv = 0,  dQ/dI = lo  (-1 signed, 0 unsigned)
    These are the exact derivatives of the surrogate in which round(t) is replaced
    by t + (round(t0) - t0), with the rounding offset frozen at the point t0.
    """
    lo, hi = _clip_bounds(spec)
    r = v / interval
    inside = (r >= lo) & (r <= hi)
    dq_dv = inside.astype(v.dtype)
    bound = np.where(r > hi, v.dtype.type(hi), v.dtype.type(lo))
    dq_di = np.where(inside, (qv - v) / interval, bound)
    return dq_dv, dq_di


def quantize_backward(dqv, cache):
    """STE backward of Eq. 3 (formulas in ste_grads).

    dqv: gradient w.r.t. qv, v's shape and dtype. Returns (dv, dinterval): dv like v,
    dinterval = sum(dqv * dQ/dI), summed in v's dtype, with the interval's shape and
    dtype (0-d of v's dtype for a Python scalar). For bits = 32: dv = dqv (a copy),
    dinterval = 0.
    """
    v, qv, interval, interval_shape, interval_dtype, spec = cache
    dqv = np.asarray(dqv)
    if dqv.shape != v.shape or dqv.dtype != v.dtype:
        raise ValueError(f"quantize_backward: dqv {dqv.shape} {dqv.dtype} does not match "
                         f"v {v.shape} {v.dtype}")
    if spec.bits == IDENTITY_BITS:
        return dqv.copy(), np.zeros(interval_shape, dtype=interval_dtype)
    lo, hi = _clip_bounds(spec)
    flat = [np.ascontiguousarray(a).reshape(-1) for a in (v, qv, dqv)]
    dv, prod = np.empty_like(flat[0]), np.empty_like(flat[0])
    _ste_kernel(*flat, _constants(v.dtype, interval, lo, hi, 1), dv, prod)
    # summed by NumPy (pairwise, in v's dtype) as in quantize_backward_reference
    dinterval = np.sum(prod.reshape(v.shape), dtype=v.dtype)
    return dv.reshape(v.shape), np.full(interval_shape, dinterval, dtype=interval_dtype)


@njit(cache=True)
def _ste_kernel(v, qv, dqv, k, dv, prod):
    """dv = dqv * dQ/dv and prod = dqv * dQ/dI per element, as ste_grads computes them."""
    interval, lo, hi, _, _, zero, _, one, _ = k
    for i in range(v.size):
        r = v[i] / interval
        inside = r >= lo and r <= hi
        dv[i] = dqv[i] * (one if inside else zero)
        if inside:
            di = (qv[i] - v[i]) / interval
        else:
            di = hi if r > hi else lo
        prod[i] = dqv[i] * di


def quantize_backward_reference(dqv, cache):
    """Plain NumPy twin of quantize_backward (tests compare the two)."""
    v, qv, interval, interval_shape, interval_dtype, spec = cache
    dqv = np.asarray(dqv)
    if dqv.shape != v.shape or dqv.dtype != v.dtype:
        raise ValueError(f"quantize_backward: dqv {dqv.shape} {dqv.dtype} does not match "
                         f"v {v.shape} {v.dtype}")
    if spec.bits == IDENTITY_BITS:
        return dqv.copy(), np.zeros(interval_shape, dtype=interval_dtype)
    dq_dv, dq_di = ste_grads(v, qv, interval, spec)
    dinterval = np.sum(dqv * dq_di, dtype=v.dtype)
    return dqv * dq_dv, np.full(interval_shape, dinterval, dtype=interval_dtype)
