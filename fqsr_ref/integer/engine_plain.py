"""Plain integer engine: exact GEMM and "same" convolution on integer codes.

This is the readable ground truth for the bit-plane engine (bitplane.py), which
must be bit-identical to it. Both engines share one calling convention: every
operand comes with its bit width and signedness, so the accumulator dtype is
proven from bit widths and fan-in (`requant.acc_bound`), never from the data.

Operand grids (docs/SPEC.md, "integer"):
- unsigned: codes in [0, 2^M - 1], integer value = code;
- signed (narrow grid, or any M-bit two's complement code): value = code;
- dorefa: unsigned codes k in [0, n], n = 2^M - 1, integer value = 2k - n.
  Here the plain engine maps codes to values and multiplies values; the
  bit-plane engine multiplies the codes and applies the affine correction, so
  the two engines check each other.

Padding of the convolution is by VALUE 0 (never by a code): for unsigned and
signed codes that is code 0; a dorefa tensor has no code for 0, so a padded
tap contributes nothing at all (the authors' code pads the float tensor with 0
before quantizing it, which turns padding into +I/n; this project does not).

Speed (`prepare_conv`, `conv_strips`, docs/SPEC.md 6.6): the convolution runs on
channels-last codes in horizontal strips of output rows (bounded working memory,
whatever the image size), as float32 BLAS GEMMs on chunks of the reduction whose
proven |partial sum| bound is below 2^24 (so every float operation is exact); the
chunks are summed as integers. Where no float32 chunk can be exact (e.g. 16-bit
codes), the exact path of `int_conv2d_exact` (float64 below 2^53, else int64).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from numba import njit
from scipy.linalg import blas

from ..ops.conv import conv2d_forward

from .requant import INT32_MAX, INT32_MIN, acc_bound, acc_dtype, check_codes, operand_max_abs

F32_EXACT_LIMIT = 1 << 24
F64_EXACT_LIMIT = 1 << 53


def operand_values(name: str, codes: np.ndarray, bits: int, signed: bool, dorefa: bool) -> np.ndarray:
    """Checked integer values (int64, same shape) of an operand given as codes."""
    if dorefa and signed:
        raise ValueError(f"{name}: a dorefa operand stores unsigned codes k in [0, 2^M - 1]; "
                         "pass signed=False")
    check_codes(name, codes, bits, signed)
    values = codes.astype(np.int64)
    if dorefa:
        values = 2 * values - ((1 << bits) - 1)
    return values


def exact_dtype(bound: int) -> type:
    """The cheapest dtype in which a GEMM whose |partial sums| <= bound is exact.

    bound: a proven bound on sum_k |a_ik * b_kj|, which bounds every product
    and every partial sum of every output, whatever order BLAS sums in. Below
    2^24 (2^53) each of them is an integer that float32 (float64) represents
    exactly, so every float operation is exact: np.float32, np.float64. Otherwise
    numpy's int64 matmul (no BLAS), exact for bound < 2^63. Tests lower the limits
    to force the slower paths.
    """
    if bound < F32_EXACT_LIMIT:
        assert bound < 1 << 24, "a float32 GEMM is exact only below 2^24"
        return np.float32
    if bound < F64_EXACT_LIMIT:
        assert bound < 1 << 53, "a float64 GEMM is exact only below 2^53"
        return np.float64
    if bound > np.iinfo(np.int64).max:
        raise ValueError(f"exact_dtype: accumulator bound {bound} does not fit int64")
    return np.int64


def check_bias(name: str, bias, n_out: int) -> np.ndarray | None:
    """None, or the int32 bias as int64 (n_out,); ValueError on shape or range."""
    if bias is None:
        return None
    if not isinstance(bias, np.ndarray) or bias.dtype.kind not in "iu" or bias.shape != (n_out,):
        raise ValueError(f"{name}: bias must be an integer array of shape ({n_out},), got "
                         f"{getattr(bias, 'dtype', type(bias))} {getattr(bias, 'shape', '')}")
    if bias.size and (int(bias.min()) < INT32_MIN or int(bias.max()) > INT32_MAX):
        raise ValueError(f"{name}: bias values [{int(bias.min())}, {int(bias.max())}] do not fit int32")
    return bias.astype(np.int64)


def bias_bound(bias: np.ndarray | None) -> int:
    return 0 if bias is None or bias.size == 0 else int(np.abs(bias).max())


def gemm_shapes(name: str, a_codes: np.ndarray, b_codes: np.ndarray) -> None:
    if (not isinstance(a_codes, np.ndarray) or not isinstance(b_codes, np.ndarray)
            or a_codes.ndim != 2 or b_codes.ndim != 2 or a_codes.shape[1] != b_codes.shape[0]):
        raise ValueError(f"{name}: expected a (M, K) and b (K, N), got "
                         f"{getattr(a_codes, 'shape', None)} and {getattr(b_codes, 'shape', None)}")


def conv_geometry(name: str, x_codes: np.ndarray, w_codes: np.ndarray, stride: int) -> tuple[int, int, int]:
    """Check NCHW / OIHW shapes; return (pad, H_out, W_out) of the "same" conv.

    pad = K // 2 on every side (K odd), H_out = (H - 1) // stride + 1.
    """
    if (not isinstance(x_codes, np.ndarray) or not isinstance(w_codes, np.ndarray)
            or x_codes.ndim != 4 or w_codes.ndim != 4):
        raise ValueError(f"{name}: expected x (N, C, H, W) and w (O, C, K, K), got "
                         f"{getattr(x_codes, 'shape', None)} and {getattr(w_codes, 'shape', None)}")
    _, c, h, w = x_codes.shape
    o, cw, kh, kw = w_codes.shape
    if cw != c or kh != kw or kh % 2 == 0:
        raise ValueError(f"{name}: weight shape {w_codes.shape} does not fit input {x_codes.shape} "
                         "(need w (O, C, K, K) with K odd)")
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"{name}: stride must be an int >= 1, got {stride!r}")
    return kh // 2, (h - 1) // stride + 1, (w - 1) // stride + 1


def window(xp: np.ndarray, ky: int, kx: int, stride: int, h_out: int, w_out: int) -> np.ndarray:
    """View of the padded channels-last array xp (..., Hp, Wp, C) read by tap (ky, kx).

    Element [..., oy, ox, :] is xp[..., oy * stride + ky, ox * stride + kx, :].
    """
    return xp[..., ky:ky + stride * (h_out - 1) + 1:stride, kx:kx + stride * (w_out - 1) + 1:stride, :]


def pad_spatial(x: np.ndarray, pad: int) -> np.ndarray:
    """Zero-pad the two axes before the last (channels-last H, W) by pad each side."""
    widths = [(0, 0)] * x.ndim
    widths[-3] = widths[-2] = (pad, pad)
    return np.pad(x, widths)


def int_gemm(a_codes: np.ndarray, a_bits: int, a_signed: bool,
             b_codes: np.ndarray, b_bits: int, b_signed: bool,
             *, a_dorefa: bool = False, b_dorefa: bool = False) -> np.ndarray:
    """Exact integer product of two code matrices.

    a_codes: integer (M, K), b_codes: integer (K, N), codes within their
    (bits, signed) ranges. Returns value(a) @ value(b) as (M, N), dtype
    `acc_dtype(acc_bound(K, ...))` (int32 when the bound proves it fits).
    """
    gemm_shapes("int_gemm", a_codes, b_codes)
    av = operand_values("int_gemm a", a_codes, a_bits, a_signed, a_dorefa)
    bv = operand_values("int_gemm b", b_codes, b_bits, b_signed, b_dorefa)
    bound = acc_bound(a_codes.shape[1], a_bits, a_signed, b_bits, b_signed,
                      a_dorefa=a_dorefa, w_dorefa=b_dorefa)
    dt = exact_dtype(bound)
    return np.matmul(av.astype(dt), bv.astype(dt)).astype(acc_dtype(bound))


def int_conv2d_exact(x_codes: np.ndarray, x_bits: int, x_signed: bool,
               w_codes: np.ndarray, w_bits: int, w_signed: bool,
               bias: np.ndarray | None = None, stride: int = 1,
               *, x_dorefa: bool = False, w_dorefa: bool = False) -> np.ndarray:
    """Accumulators of a "same" convolution on codes (before requantization).

    x_codes: integer (N, C, H, W); w_codes: integer (O, C, K, K), K odd;
    bias: int32 (O,) at the accumulator scale, or None. Padding K // 2 by value
    0 on every side; output (N, O, H_out, W_out) with H_out = (H - 1) // stride
    + 1, dtype `acc_dtype(acc_bound(C * K * K, ..., max|bias|))`:
        acc[n, o, oy, ox] = bias[o] + sum_{c, ky, kx}
            value(w)[o, c, ky, kx] * value(x)[n, c, oy * stride + ky - pad, ox * stride + kx - pad]
    This is the general path (any stride, dorefa operands); `int_conv2d` takes the
    strip path when it applies. Computed by the float conv op (shifted GEMMs) in
    the dtype of `exact_dtype`, or as K * K shifted int64 GEMMs: every running sum is a partial sum of the
    dot product, so the bound that makes one GEMM exact covers the whole sum.
    """
    pad, h_out, w_out = conv_geometry("int_conv2d", x_codes, w_codes, stride)
    n, c, _, _ = x_codes.shape
    o, _, k, _ = w_codes.shape
    b = check_bias("int_conv2d", bias, o)
    xv = operand_values("int_conv2d x", x_codes, x_bits, x_signed, x_dorefa)
    wv = operand_values("int_conv2d w", w_codes, w_bits, w_signed, w_dorefa)
    product_bound = acc_bound(c * k * k, x_bits, x_signed, w_bits, w_signed,
                              a_dorefa=x_dorefa, w_dorefa=w_dorefa)
    dt = exact_dtype(product_bound)
    if dt != np.int64:
        # The float conv (shifted GEMMs, no im2col copy) on the integer values: exact,
        # since every product and partial sum is an integer below the dtype's limit.
        acc = conv2d_forward(xv.astype(dt), wv.astype(dt), None, stride)[0].astype(np.int64)
    else:
        xp = pad_spatial(xv.transpose(0, 2, 3, 1), pad)   # value 0 at every padded tap
        wt = wv.transpose(2, 3, 1, 0)                      # (K, K, C, O)
        acc = np.zeros((n, h_out, w_out, o), dtype=dt)
        for ky in range(k):
            for kx in range(k):
                acc += window(xp, ky, kx, stride, h_out, w_out) @ wt[ky, kx]
        acc = acc.transpose(0, 3, 1, 2)
    if b is not None:
        acc = acc + b[:, None, None]
    return np.ascontiguousarray(acc, dtype=acc_dtype(product_bound + bias_bound(b)))


def int_conv2d(x_codes: np.ndarray, x_bits: int, x_signed: bool,
               w_codes: np.ndarray, w_bits: int, w_signed: bool,
               bias: np.ndarray | None = None, stride: int = 1,
               *, x_dorefa: bool = False, w_dorefa: bool = False) -> np.ndarray:
    """Accumulators of a "same" convolution on codes; the contract of `int_conv2d_exact`.

    Stride 1 without dorefa operands runs the strip path of the integer model
    (`conv_strips`, float32 chunks where exact); everything else `int_conv2d_exact`.
    """
    if stride != 1 or x_dorefa or w_dorefa:
        return int_conv2d_exact(x_codes, x_bits, x_signed, w_codes, w_bits, w_signed, bias, stride,
                                x_dorefa=x_dorefa, w_dorefa=w_dorefa)
    conv_geometry("int_conv2d", x_codes, w_codes, stride)
    o = w_codes.shape[0]
    b = check_bias("int_conv2d", bias, o)
    check_codes("int_conv2d x", x_codes, x_bits, x_signed)
    check_codes("int_conv2d w", w_codes, w_bits, w_signed)
    plan = prepare_conv(w_codes, x_bits, x_signed, w_bits, w_signed)
    dt = acc_dtype(plan.bound + bias_bound(b))
    n, _, h, w = x_codes.shape
    acc = np.empty((n, h, w, o), dtype=dt)
    bias64 = np.zeros(o, np.int64) if b is None else b

    def store(i, h0, h1, a):
        acc[i, h0:h1] = a[:, :w].astype(np.int64) + bias64
    conv_strips(np.ascontiguousarray(x_codes.transpose(0, 2, 3, 1)), x_bits, x_signed, plan, store)
    return np.ascontiguousarray(acc.transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------
# The strip path: channels-last codes, float32 chunks proven exact, bounded memory
# ---------------------------------------------------------------------------

# Float32 working memory of one strip (grid, stacked taps, GEMM output); the strip
# height follows from it, so a conv's temporaries do not grow with the image.
STRIP_BYTES = 16 << 20


class ConvPlan(NamedTuple):
    """How `conv_strips` computes one conv (weights fixed, so prepared once).

    kind: "shift" (K*K accumulating GEMMs on shifted views of a zero-padded grid),
    "stack_in" (few input channels: the K*K taps stacked, one GEMM), "stack_out"
    (few output channels: one GEMM gives every tap's products, summed shifted),
    or "exact" (no float32 chunk can be exact: `int_conv2d_exact`).
    chunks: reduction ranges (of taps for "shift", of stacked rows tap-major for
    "stack_in") each with a proven |partial sum| bound below 2^24.
    """
    kind: str
    k: int
    cin: int
    cout: int
    chunks: tuple
    weights: np.ndarray   # float32, laid out for kind (see prepare_conv)
    w_codes: np.ndarray   # OIHW codes (the exact path)
    w_bits: int
    w_signed: bool
    bound: int            # proven max |acc| without bias: C*K*K*max|x|*max|w| (SPEC 6.5)


def _chunks(term_bounds: np.ndarray, limit: int):
    """Split consecutive reduction terms into ranges whose bound stays below limit.

    term_bounds: (T, O) int64, the bound of term t's contribution to output o
    (max|x| * sum of |w| over the channels the term covers). A range's bound is
    max over o of the sum over its terms. None if one term alone reaches limit.
    """
    chunks, start, running = [], 0, np.zeros(term_bounds.shape[1], np.int64)
    for t in range(term_bounds.shape[0]):
        if int(term_bounds[t].max()) >= limit:
            return None
        if int((running + term_bounds[t]).max()) >= limit:
            chunks.append((start, t))
            start, running = t, np.zeros_like(running)
        running += term_bounds[t]
    chunks.append((start, term_bounds.shape[0]))
    return tuple(chunks)


def prepare_conv(w_codes: np.ndarray, x_bits: int, x_signed: bool, w_bits: int,
                 w_signed: bool = True) -> ConvPlan:
    """The plan of a stride-1 conv of (x_bits, x_signed) codes by (w_bits, w_signed) weights.

    The float32 exactness bound of a chunk of the reduction is max over outputs o of
    max|x| * sum over the chunk of |w[o, c, ky, kx]| (the weights are known): every
    product and every partial sum of the chunk, in any summation order, is an integer
    of at most that magnitude, exact in float32 when below 2^24 (SPEC 6.6).
    """
    o, c, k, _ = w_codes.shape
    a = operand_max_abs(x_bits, x_signed)
    wv = w_codes.astype(np.int64)
    absw = np.abs(wv) * a                                   # (O, C, K, K)
    bound = acc_bound(c * k * k, x_bits, x_signed, w_bits, w_signed)
    limit = F32_EXACT_LIMIT
    taps = wv.transpose(2, 3, 1, 0).reshape(k * k, c, o)    # (tap, C, O)
    if k > 1 and c < 8 and c < o:
        # stacked rows r = tap * C + channel; the chunks split them
        chunks = _chunks(absw.transpose(2, 3, 1, 0).reshape(k * k * c, o), limit)
        kind, weights = "stack_in", taps.reshape(k * k * c, o)
    elif k > 1 and o <= 16 and o < c:
        # each tap's products are summed in float32 over C, the taps in int64
        per_tap = absw.sum(axis=1).transpose(1, 2, 0).reshape(k * k, o)
        chunks = None if int(per_tap.max()) >= limit else ((0, k * k),)
        kind, weights = "stack_out", taps.transpose(1, 0, 2).reshape(c, k * k * o)   # (C, tap * O + o)
    else:
        chunks = _chunks(absw.sum(axis=1).transpose(1, 2, 0).reshape(k * k, o), limit)
        kind, weights = "shift", taps
    if chunks is None:
        kind = "exact"
    return ConvPlan(kind, k, c, o, chunks, np.ascontiguousarray(weights, dtype=np.float32),
                    w_codes, w_bits, w_signed, bound)


def _strip_rows(width: int, bytes_per_pixel: int) -> int:
    return max(1, STRIP_BYTES // max(1, width * bytes_per_pixel))


@njit(cache=True)
def _stack_taps(x, h0, h1, k, out):
    """out[(y - h0) * W + x_, t * C + c] = x[y + ky - p, x_ + kx - p, c] (0 outside the image),
    t = ky * K + kx: the K*K taps of each output pixel of rows [h0, h1) side by side."""
    height, width, chans = x.shape
    pad = k // 2
    for y in range(h0, h1):
        for xx in range(width):
            row = (y - h0) * width + xx
            for ky in range(k):
                iy = y + ky - pad
                for kx in range(k):
                    ix = xx + kx - pad
                    base = (ky * k + kx) * chans
                    if 0 <= iy < height and 0 <= ix < width:
                        for ch in range(chans):
                            out[row, base + ch] = x[iy, ix, ch]
                    else:
                        for ch in range(chans):
                            out[row, base + ch] = 0.0


@njit(cache=True)
def _sum_shifted_taps(part, first_row, height, h0, h1, k, cout, out):
    """out[y - h0, x_, o] = sum over taps inside the image of
    int64(part[t * cout + o, (y + ky - p - first_row) * W + x_ + kx - p]):
    the stack_out plan's per-tap products (exact integers in float32, one row of part per
    tap and output channel) summed in int64, a row at a time so the loop vectorises."""
    width = out.shape[1]
    pad = k // 2
    row = np.empty(width, np.int64)
    for y in range(h0, h1):
        for o in range(cout):
            row[:] = 0
            for ky in range(k):
                iy = y + ky - pad
                if iy < 0 or iy >= height:
                    continue
                base = (iy - first_row) * width - pad
                for kx in range(k):
                    src = part[(ky * k + kx) * cout + o]
                    lo, hi = max(0, pad - kx), min(width, width + pad - kx)
                    for xx in range(lo, hi):
                        row[xx] += np.int64(src[base + xx + kx])
            for xx in range(width):
                out[y - h0, xx, o] = row[xx]


@njit(cache=True)
def _add_into(acc, part):
    """acc += int(part), element by element (a finished float32 chunk into the integer sum)."""
    a, p = acc.reshape(-1), part.reshape(-1)
    for i in range(a.size):
        a[i] += np.int64(p[i])


def fill_strip(body: np.ndarray, image: np.ndarray, h0: int, h1: int, pad: int) -> None:
    """The zero-padded grid rows of output rows [h0, h1): body (span, Wq, C') gets image
    (H, W, C) rows h0 - pad .. h1 + pad - 1 in its first W columns and C channels, zero
    rows where they fall outside the image (the columns and channels beyond stay as the
    caller zeroed them)."""
    h, w, c = image.shape
    r0, r1 = h0 - pad, h1 + pad                 # grid rows, some outside the image
    lo, hi = max(0, r0), min(h, r1)
    body[:lo - r0] = 0
    body[lo - r0:hi - r0, :w, :c] = image[lo:hi]
    body[hi - r0:r1 - r0] = 0


def conv_strips(x: np.ndarray, x_bits: int, x_signed: bool, plan: ConvPlan,
                emit: Callable[[int, int, int, np.ndarray], None]) -> None:
    """Run a stride-1 "same" conv on channels-last codes x (N, H, W, C), strip by strip.

    For each image i and strip of output rows [h0, h1), calls emit(i, h0, h1, acc)
    with acc (h1 - h0, W', O), W' >= W, C-contiguous: acc[:, :W] are the exact
    accumulators without bias (float32 holding integers when there is one chunk,
    else int32/int64; columns from W on are padding), valid only during the call.
    The emitter requantizes (the integer model) or stores (int_conv2d).
    """
    n, h, w, c = x.shape
    k, o, pad = plan.k, plan.cout, plan.k // 2
    if plan.kind == "exact":
        acc = int_conv2d_exact(x.transpose(0, 3, 1, 2), x_bits, x_signed, plan.w_codes, plan.w_bits,
                               plan.w_signed)
        for i in range(n):
            emit(i, 0, h, np.ascontiguousarray(acc[i].transpose(1, 2, 0)))
        return
    int_dt = acc_dtype(plan.bound)
    if plan.kind == "stack_in":
        rows = min(h, _strip_rows(w, 4 * (k * k * c + o)))
        stacked = np.empty((rows * w, k * k * c), np.float32)
        out = np.empty((rows * w, o), np.float32)
        for i in range(n):
            for h0 in range(0, h, rows):
                h1 = min(h, h0 + rows)
                m = (h1 - h0) * w
                _stack_taps(x[i], h0, h1, k, stacked)
                if len(plan.chunks) == 1:
                    np.matmul(stacked[:m], plan.weights, out=out[:m])
                    emit(i, h0, h1, out[:m].reshape(h1 - h0, w, o))
                    continue
                total = np.zeros((m, o), int_dt)
                for r0, r1 in plan.chunks:
                    np.matmul(stacked[:m, r0:r1], plan.weights[r0:r1], out=out[:m])
                    _add_into(total, out[:m])
                emit(i, h0, h1, total.reshape(h1 - h0, w, o))
        return
    if plan.kind == "stack_out":
        rows = min(h, _strip_rows(w, 4 * (c + k * k * o)))
        span = rows + 2 * pad
        xs = np.empty((span * w, c), np.float32)
        acc = np.empty((rows, w, o), int_dt)
        w_rows = np.ascontiguousarray(plan.weights.T)          # (K*K*O, C)
        for i in range(n):
            for h0 in range(0, h, rows):
                h1 = min(h, h0 + rows)
                r0, r1 = max(0, h0 - pad), min(h, h1 + pad)
                m = (r1 - r0) * w
                xs[:m] = x[i, r0:r1].reshape(m, c)
                part = np.matmul(w_rows, xs[:m].T)               # (K*K*O, m): a row per tap and output
                _sum_shifted_taps(part, r0, h, h0, h1, k, o, acc)
                emit(i, h0, h1, acc[:h1 - h0])
        return
    # "shift": a zero-padded grid of the strip's input rows, rows of Wq = W + pad
    # columns (the pad zeros after a row are the left padding of the next), a guard
    # of pad zeros before and after; output (y, x_) at grid column j reads tap
    # (ky, kx) at column j + (ky - pad) * Wq + (kx - pad), a contiguous (L, C) slice.
    wq = w + pad
    rows = min(h, _strip_rows(wq, 4 * (c + o)))
    span = rows + 2 * pad
    grid = np.zeros((span * wq + 2 * pad, c), np.float32)
    body = grid[pad:pad + span * wq].reshape(span, wq, c)
    out = np.empty((rows * wq, o), np.float32)
    sgemm = blas.get_blas_funcs("gemm", dtype=np.float32)
    offsets = [(ky - pad) * wq + (kx - pad) for ky in range(k) for kx in range(k)]
    wt = [np.asfortranarray(t.T) for t in plan.weights]          # (O, C) per tap
    for i in range(n):
        for h0 in range(0, h, rows):
            h1 = min(h, h0 + rows)
            fill_strip(body, x[i], h0, h1, pad)
            m = (h1 - h0) * wq
            start = pad + pad * wq                      # grid index of output row h0, column 0
            res = out[:m]
            total = None if len(plan.chunks) == 1 else np.zeros((m, o), int_dt)
            for t0, t1 in plan.chunks:
                for t in range(t0, t1):
                    view = grid[start + offsets[t]:start + offsets[t] + m]
                    # Fortran views: res.T (O, L) = wt (O, C) @ view.T (C, L) (+ res.T): no copies
                    res = sgemm(1.0, wt[t], view.T, beta=0.0 if t == t0 else 1.0, c=res.T,
                                overwrite_c=1).T
                if total is not None:
                    _add_into(total, res)
            acc = res if total is None else total
            emit(i, h0, h1, acc.reshape(h1 - h0, wq, o))
