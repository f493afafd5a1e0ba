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

Speed: the products are computed with float32 (float64) BLAS when every partial
sum is provably an integer below 2^24 (2^53) in magnitude, so that every product
and every sum, in any order, is exact; otherwise with an int64 path. The bound
is checked in code (`exact_dtype`).
"""
from __future__ import annotations

import numpy as np

from ..ops.conv import conv2d_forward

from .requant import INT32_MAX, INT32_MIN, acc_bound, acc_dtype, check_codes

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


def int_conv2d(x_codes: np.ndarray, x_bits: int, x_signed: bool,
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
    Computed by the float conv op (shifted GEMMs) in the dtype of `exact_dtype`,
    or as K * K shifted int64 GEMMs: every running sum is a partial sum of the
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
