"""Bit-plane integer engine: dot products as weighted popcounts (Eq. 1-2).

An M-bit code is the sum of its bit planes, code = sum_m s_m 2^m bit_m, with
s_m = +1 except for the top plane of a two's complement (signed) code, whose
weight is -2^(M-1). A dot product of two codes vectors is therefore

    sum_k a_k b_k = sum_{m, p} s_m s_p 2^(m+p) popcount(a_m AND b_p)      (Eq. 2)

where a_m is the bit-plane vector of a. Planes are packed along K into uint64
words (bit b of word w holds element 64 w + b; the tail of the last word is
zero), so one AND and one popcount handle 64 elements.

Dorefa operands (codes k, value 2k - n, n = 2^M - 1) go through the kernel as
unsigned codes; the affine correction then adds the terms in n (see
`_affine_combine`). Padding contributes value 0 for every grid, as in the plain
engine (engine_plain.py), to which this engine is bit-identical.

The Numba kernels count bits with LLVM's ctpop intrinsic, which compiles to the
POPCNT instruction (or VPOPCNTQ where AVX-512 has it and the loop vectorises).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from .engine_plain import (bias_bound, check_bias, conv_geometry, gemm_shapes, pad_spatial,
                           window)
from .requant import acc_bound, acc_dtype, check_codes, code_range

WORD_BITS = 64
# Below this many output columns the column-vectorised kernel wastes its SIMD
# lanes; the word-innermost kernel is then faster (tools/bench_bitplane.py).
WIDE_MIN_COLUMNS = 8


@intrinsic
def popcount64(typingctx, x):
    """Number of set bits of a uint64, as int64 (LLVM ctpop)."""
    if not (isinstance(x, types.Integer) and x.bitwidth == 64 and not x.signed):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(types.uint64), codegen


def plane_weights(bits: int, signed: bool) -> np.ndarray:
    """Weights s_m 2^m of the bit planes, int64 (bits,); top plane -2^(bits-1) if signed."""
    code_range(bits, signed)  # validates bits
    w = np.array([1 << m for m in range(bits)], dtype=np.int64)
    if signed:
        w[-1] = -w[-1]
    return w


def pack_planes(codes: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Bit planes of codes packed along K into uint64 words.

    codes: integer (R, K) within the (bits, signed) range. Returns uint64
    (bits, R, ceil(K / 64)); bit b of word w of plane m, row r is bit m of the
    two's complement pattern (code & (2^bits - 1)) of codes[r, 64 w + b]; bits
    past K are 0.
    """
    if not isinstance(codes, np.ndarray) or codes.ndim != 2:
        raise ValueError(f"pack_planes: expected codes (R, K), got {getattr(codes, 'shape', type(codes))}")
    check_codes("pack_planes", codes, bits, signed)
    r, k = codes.shape
    n_words = -(-k // WORD_BITS)
    if 8 * codes.dtype.itemsize < bits:      # e.g. 12-bit codes held in int8: sign-extend first
        codes = codes.astype(np.int32)
    # The unsigned view of a signed code at least `bits` wide holds its two's complement pattern.
    # Contiguous rows first: a transposed NHWC view would make packbits stride across memory.
    pattern = np.ascontiguousarray(codes).view(np.dtype(f"u{codes.dtype.itemsize}"))
    packed = np.zeros((bits, r, 8 * n_words), dtype=np.uint8)     # little-endian bytes of the words
    for m in range(bits):
        packed[m, :, :-(-k // 8)] = np.packbits((pattern & (1 << m)) != 0, axis=-1, bitorder="little")
    return packed.view("<u8").astype(np.uint64, copy=False).reshape(bits, r, n_words)


@njit(parallel=True, cache=True)
def _kernel_wide(a, bt, pair_w):
    """a: uint64 (A, Ra, W); bt: uint64 (W, B, Rb); pair_w: int64 (A, B) -> int64 (Ra, Rb).

    The innermost loop runs over output columns j, contiguous in bt, so LLVM
    vectorises AND + popcount across columns.
    """
    n_a, rows, n_words = a.shape
    n_b, cols = bt.shape[1], bt.shape[2]
    out = np.zeros((rows, cols), dtype=np.int64)
    for i in prange(rows):
        for m in range(n_a):
            for p in range(n_b):
                s = pair_w[m, p]
                for w in range(n_words):
                    word = a[m, i, w]
                    for j in range(cols):
                        out[i, j] += s * popcount64(word & bt[w, p, j])
    return out


@njit(parallel=True, cache=True)
def _kernel_narrow(a, b, pair_w):
    """a: uint64 (A, Ra, W); b: uint64 (B, Rb, W); pair_w: int64 (A, B) -> int64 (Ra, Rb).

    Words innermost: one popcount sum per plane pair, then one multiply.
    """
    n_a, rows, n_words = a.shape
    n_b, cols = b.shape[0], b.shape[1]
    out = np.zeros((rows, cols), dtype=np.int64)
    for i in prange(rows):
        for j in range(cols):
            acc = 0
            for m in range(n_a):
                for p in range(n_b):
                    count = 0
                    for w in range(n_words):
                        count += popcount64(a[m, i, w] & b[p, j, w])
                    acc += pair_w[m, p] * count
            out[i, j] = acc
    return out


def _check_planes(a_planes, a_bits, a_signed, b_planes, b_bits, b_signed) -> np.ndarray:
    for name, planes, bits in (("a_planes", a_planes, a_bits), ("b_planes", b_planes, b_bits)):
        if not isinstance(planes, np.ndarray) or planes.dtype != np.uint64 or planes.ndim != 3 \
                or planes.shape[0] != bits:
            raise ValueError(f"bitplane_gemm: {name} must be uint64 ({bits}, R, W), got "
                             f"{getattr(planes, 'dtype', type(planes))} {getattr(planes, 'shape', '')}")
    if a_planes.shape[2] != b_planes.shape[2]:
        raise ValueError(f"bitplane_gemm: word counts differ: a_planes {a_planes.shape}, b_planes {b_planes.shape}")
    return np.outer(plane_weights(a_bits, a_signed), plane_weights(b_bits, b_signed))


def bitplane_gemm(a_planes: np.ndarray, a_bits: int, a_signed: bool,
                  b_planes: np.ndarray, b_bits: int, b_signed: bool) -> np.ndarray:
    """Dot products of every row of a with every row of b from packed planes (Eq. 2).

    a_planes: uint64 (a_bits, R_a, W), b_planes: uint64 (b_bits, R_b, W), both
    from `pack_planes`. Returns int64 (R_a, R_b): out[i, j] = sum_k a[i, k] b[j, k]
    = sum_{m,p} s_m s_p 2^(m+p) popcount(a_m[i] & b_p[j]). Exact: |out| <=
    64 W 2^(a_bits + b_bits) < 2^63.
    """
    pair_w = _check_planes(a_planes, a_bits, a_signed, b_planes, b_bits, b_signed)
    a = np.ascontiguousarray(a_planes)
    if b_planes.shape[1] >= WIDE_MIN_COLUMNS:
        return _kernel_wide(a, np.ascontiguousarray(b_planes.transpose(2, 0, 1)), pair_w)
    return _kernel_narrow(a, np.ascontiguousarray(b_planes), pair_w)


def bitplane_gemm_reference(a_planes: np.ndarray, a_bits: int, a_signed: bool,
                            b_planes: np.ndarray, b_bits: int, b_signed: bool) -> np.ndarray:
    """Loop twin of `bitplane_gemm`: a loop over plane pairs, popcount by np.bitwise_count."""
    pair_w = _check_planes(a_planes, a_bits, a_signed, b_planes, b_bits, b_signed)
    out = np.zeros((a_planes.shape[1], b_planes.shape[1]), dtype=np.int64)
    for m in range(a_bits):
        for p in range(b_bits):
            both = a_planes[m][:, None, :] & b_planes[p][None, :, :]
            out += pair_w[m, p] * np.bitwise_count(both).sum(axis=-1, dtype=np.int64)
    return out


def bitplane_partials(a_row_codes: np.ndarray, b_col_codes: np.ndarray,
                      a_bits: int, a_signed: bool, b_bits: int, b_signed: bool) -> np.ndarray:
    """Per-plane-pair popcounts of one dot product, for checking a bit-serial datapath.

    a_row_codes, b_col_codes: integer (K,). Returns int64 (a_bits, b_bits) with
    P[m, p] = popcount(a_m AND b_p) = #{k : bit m of a_k and bit p of b_k are 1}
    (two's complement bits), so that sum_k a_k b_k = sum_{m,p} s_m s_p 2^(m+p) P[m, p].
    """
    if (not isinstance(a_row_codes, np.ndarray) or not isinstance(b_col_codes, np.ndarray)
            or a_row_codes.ndim != 1 or a_row_codes.shape != b_col_codes.shape):
        raise ValueError(f"bitplane_partials: expected two (K,) code vectors, got "
                         f"{getattr(a_row_codes, 'shape', None)} and {getattr(b_col_codes, 'shape', None)}")
    check_codes("bitplane_partials a", a_row_codes, a_bits, a_signed)
    check_codes("bitplane_partials b", b_col_codes, b_bits, b_signed)
    a_bit = (a_row_codes.astype(np.int64)[None, :] >> np.arange(a_bits)[:, None]) & 1   # (a_bits, K)
    b_bit = (b_col_codes.astype(np.int64)[None, :] >> np.arange(b_bits)[:, None]) & 1   # (b_bits, K)
    return a_bit @ b_bit.T


def _affine(bits: int, signed: bool, dorefa: bool) -> tuple[int, int]:
    """(alpha, beta) with integer value = alpha * code + beta."""
    if dorefa:
        if signed:
            raise ValueError("bitplane: a dorefa operand stores unsigned codes k; pass signed=False")
        return 2, -((1 << bits) - 1)
    return 1, 0


def _affine_combine(codes_dot, a_aff, b_aff, a_sum, b_sum, count):
    """sum over valid k of (alpha_a a_k + beta_a)(alpha_b b_k + beta_b).

    codes_dot = sum a_k b_k, a_sum = sum a_k, b_sum = sum b_k, count = number
    of valid k, all over the same valid (unpadded) positions and broadcastable.
    A term whose beta is 0 is skipped and its sum may be None, so a plain x
    plain product is codes_dot alone.
    """
    (aa, ba), (ab, bb) = a_aff, b_aff
    acc = aa * ab * codes_dot
    if bb:
        acc = acc + aa * bb * a_sum
    if ba:
        acc = acc + ba * ab * b_sum
    if ba and bb:
        acc = acc + ba * bb * count
    return acc


def bitplane_matmul(a_codes: np.ndarray, a_bits: int, a_signed: bool,
                    b_codes: np.ndarray, b_bits: int, b_signed: bool,
                    *, a_dorefa: bool = False, b_dorefa: bool = False) -> np.ndarray:
    """Same contract as engine_plain.int_gemm, computed by the bit-plane kernel.

    a_codes: integer (M, K), b_codes: integer (K, N). Returns (M, N) with dtype
    `acc_dtype(acc_bound(K, ...))`, bit-identical to int_gemm.
    """
    gemm_shapes("bitplane_matmul", a_codes, b_codes)
    a_aff = _affine(a_bits, a_signed, a_dorefa)
    b_aff = _affine(b_bits, b_signed, b_dorefa)
    k = a_codes.shape[1]
    dot = bitplane_gemm(pack_planes(a_codes, a_bits, a_signed), a_bits, a_signed,
                        pack_planes(b_codes.T, b_bits, b_signed), b_bits, b_signed)
    acc = _affine_combine(dot, a_aff, b_aff,
                          a_codes.sum(axis=1, dtype=np.int64)[:, None],
                          b_codes.sum(axis=0, dtype=np.int64)[None, :], k)
    return acc.astype(acc_dtype(acc_bound(k, a_bits, a_signed, b_bits, b_signed,
                                          a_dorefa=a_dorefa, w_dorefa=b_dorefa)))


def _pack_pixels(codes_nhwc: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Pack the channels of every pixel: integer (..., C) -> uint64 (bits, ..., ceil(C / 64))."""
    lead = codes_nhwc.shape[:-1]
    planes = pack_planes(codes_nhwc.reshape(-1, codes_nhwc.shape[-1]), bits, signed)
    return planes.reshape((bits,) + lead + (planes.shape[-1],))


def bitplane_conv2d(x_codes: np.ndarray, x_bits: int, x_signed: bool,
                    w_codes: np.ndarray, w_bits: int, w_signed: bool,
                    bias: np.ndarray | None = None, stride: int = 1,
                    *, x_dorefa: bool = False, w_dorefa: bool = False) -> np.ndarray:
    """Same contract as engine_plain.int_conv2d, computed by the bit-plane kernel.

    x_codes: integer (N, C, H, W); w_codes: integer (O, C, K, K), K odd; bias:
    int32 (O,) or None. Returns (N, O, H_out, W_out), bit-identical to
    int_conv2d (same dtype).

    im2col is done on packed words, not on codes: the channels of each pixel are
    packed into ceil(C / 64) words, and the row of output pixel (oy, ox) is the
    K * K taps' words side by side (tap-major, then channel word). A padded tap
    is all-zero words, i.e. code 0. Weights are packed in the same order.
    """
    pad, h_out, w_out = conv_geometry("bitplane_conv2d", x_codes, w_codes, stride)
    n, c, h, w = x_codes.shape
    o, _, k, _ = w_codes.shape
    b = check_bias("bitplane_conv2d", bias, o)
    x_aff = _affine(x_bits, x_signed, x_dorefa)
    w_aff = _affine(w_bits, w_signed, w_dorefa)
    check_codes("bitplane_conv2d x", x_codes, x_bits, x_signed)
    check_codes("bitplane_conv2d w", w_codes, w_bits, w_signed)

    xp = pad_spatial(_pack_pixels(x_codes.transpose(0, 2, 3, 1), x_bits, x_signed), pad)
    taps = [window(xp, ky, kx, stride, h_out, w_out) for ky in range(k) for kx in range(k)]
    x_cols = np.stack(taps, axis=-2).reshape(x_bits, n * h_out * w_out, -1)
    w_rows = _pack_pixels(w_codes.transpose(0, 2, 3, 1), w_bits, w_signed).reshape(w_bits, o, -1)
    dot = bitplane_gemm(x_cols, x_bits, x_signed, w_rows, w_bits, w_signed)
    dot = dot.reshape(n, h_out, w_out, o).transpose(0, 3, 1, 2)

    # Dorefa terms: sums over the valid (unpadded) positions of each window.
    x_window_sum = w_window_sum = count = None
    if w_aff[1]:
        xs = pad_spatial(x_codes.sum(axis=1, dtype=np.int64)[..., None], pad)
        x_window_sum = sum(window(xs, ky, kx, stride, h_out, w_out)[..., 0]
                           for ky in range(k) for kx in range(k))[:, None]          # (N, 1, Ho, Wo)
    if x_aff[1]:
        ones = pad_spatial(np.ones((h, w, 1), dtype=np.int64), pad)
        valid = np.stack([window(ones, ky, kx, stride, h_out, w_out)[..., 0]
                          for ky in range(k) for kx in range(k)])                   # (K*K, Ho, Wo)
        w_tap_sum = w_codes.sum(axis=1, dtype=np.int64).reshape(o, k * k)
        w_window_sum = np.tensordot(w_tap_sum, valid, axes=(1, 0))                 # (O, Ho, Wo)
        count = c * valid.sum(axis=0)                                               # (Ho, Wo)
    acc = _affine_combine(dot, x_aff, w_aff, x_window_sum, w_window_sum, count)
    if b is not None:
        acc = acc + b[None, :, None, None]
    bound = acc_bound(c * k * k, x_bits, x_signed, w_bits, w_signed, bias_bound(b),
                      a_dorefa=x_dorefa, w_dorefa=w_dorefa)
    return acc.astype(acc_dtype(bound))
