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

import os

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from .engine_plain import bias_bound, check_bias, conv_geometry, gemm_shapes
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
    out = np.empty((bits, r, -(-k // WORD_BITS)), dtype=np.uint64)
    _pack_rows(np.ascontiguousarray(codes), bits, out)
    return out


@njit(cache=True)
def _pack_rows(codes, bits, out):
    """out[m, r, w] = sum_b bit m of codes[r, 64 w + b] << b (zeros past K).

    A code is widened to int64 first (sign extension for signed dtypes), whose bits
    0..bits-1 are the two's complement pattern whatever dtype holds the code.
    """
    n_rows, k = codes.shape
    n_words = out.shape[2]
    one = np.uint64(1)
    for r in range(n_rows):
        row = codes[r]
        for w in range(n_words):
            first = w * 64
            count = min(k - first, 64)
            for m in range(bits):
                shift = np.uint64(m)
                word = np.uint64(0)
                for b in range(count):
                    word |= ((np.uint64(np.int64(row[first + b])) >> shift) & one) << np.uint64(b)
                out[m, r, w] = word


# Few output channels: from this output width (stride 1, C a multiple of 64) the kernel
# that vectorises across a row's output pixels is used, else the word-innermost one.
PIXELS_MIN_WIDTH = 16
# Threads for the kernels: 1 unless FQSR_BITPLANE_THREADS asks for more. On the 2 shared
# cores (tools/bench_bitplane.py) 2 threads took 0.57x the time of 1 when idle, but under
# other processes' load they ranged from 0.67x to 1.7x: 1 is never the slow choice.
THREADS_ENV = "FQSR_BITPLANE_THREADS"
# Output pixels per parallel chunk: each chunk allocates its row and count buffers once.
CHUNK_PIXELS = 256
# Longest row: its popcount per plane pair (<= row bits) fits the int32 counters, and
# |acc| <= row bits * 2^(16 + 16) (16-bit operands) fits int64.
MAX_ROW_BITS = 1 << 30


def kernel_threads() -> int:
    """Threads the bit-plane kernels use: $FQSR_BITPLANE_THREADS (default 1), at most Numba's."""
    raw = os.environ.get(THREADS_ENV, "")
    if not raw:
        return 1
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{THREADS_ENV}: expected an integer >= 1, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"{THREADS_ENV}: expected an integer >= 1, got {raw!r}")
    return min(n, numba.config.NUMBA_NUM_THREADS)


@njit(inline="always")
def _gather_row(xp, img, iy0, ix0, k, c_bits, row):
    """Pack the im2col row of one output pixel from packed pixels, in the kernel.

    xp: uint64 (A, N, H, W, CW) pixel planes (`pack_planes` of the NHWC pixel rows, c_bits
    channels, bits past them 0). row: uint64 (A, NW), NW = ceil(k * k * c_bits / 64),
    receives bit (ky * k + kx) * c_bits + c of plane m = bit c of pixel (iy0 + ky, ix0 + kx);
    taps outside the image stay 0 (code 0).
    """
    n_a, _, h, w, cw = xp.shape
    nw = row.shape[1]
    row[:] = 0
    for ky in range(k):
        iy = iy0 + ky
        if iy < 0 or iy >= h:
            continue
        for kx in range(k):
            ix = ix0 + kx
            if ix < 0 or ix >= w:
                continue
            pos = (ky * k + kx) * c_bits
            word, bit = pos >> 6, pos & 63
            if bit == 0:
                for m in range(n_a):
                    for c in range(cw):
                        row[m, word + c] |= xp[m, img, iy, ix, c]
            else:
                lo, hi = np.uint64(bit), np.uint64(64 - bit)
                for m in range(n_a):
                    for c in range(cw):
                        v = xp[m, img, iy, ix, c]
                        row[m, word + c] |= v << lo
                        if word + c + 1 < nw:
                            row[m, word + c + 1] |= v >> hi


@njit(parallel=True, cache=True)
def _conv_columns(xp, c_bits, k, stride, pad, h_out, w_out, bt, pair_w, init, n_chunks, out):
    """Bit-plane conv, output columns innermost (vectorised across O x planes).

    xp: uint64 (A, N, H, W, CW); bt: uint64 (NW, B, O) weight rows packed like the
    input rows; pair_w: int64 (A, B); init: int64 (O,) the accumulators' start (the bias
    or 0); out: (N * h_out * w_out, O), written, int64 or a dtype the accumulators fit.
    Per output pixel and input plane m, the popcounts of every plane pair (m, p) are
    summed over the row's words in int32 counters, then weighted once by pair_w[m, p].
    """
    n_a = xp.shape[0]
    nw, n_b, n_o = bt.shape
    n_pix = out.shape[0]
    flat = bt.reshape(nw, n_b * n_o)
    for chunk in prange(n_chunks):
        row = np.empty((n_a, nw), dtype=np.uint64)
        cnt = np.empty(n_b * n_o, dtype=np.int32)
        acc = np.empty(n_o, dtype=np.int64)
        for q in range(chunk * n_pix // n_chunks, (chunk + 1) * n_pix // n_chunks):
            img, rest = divmod(q, h_out * w_out)
            oy, ox = divmod(rest, w_out)
            _gather_row(xp, img, oy * stride - pad, ox * stride - pad, k, c_bits, row)
            acc[:] = init
            for m in range(n_a):
                r = row[m]
                cnt[:] = 0
                w0 = 0
                while w0 + 4 <= nw:          # four words per pass over the counters
                    a0, a1, a2, a3 = r[w0], r[w0 + 1], r[w0 + 2], r[w0 + 3]
                    if a0 | a1 | a2 | a3:    # all-zero words add nothing
                        b0, b1, b2, b3 = flat[w0], flat[w0 + 1], flat[w0 + 2], flat[w0 + 3]
                        for j in range(n_b * n_o):
                            cnt[j] += np.int32(popcount64(a0 & b0[j]) + popcount64(a1 & b1[j])
                                               + popcount64(a2 & b2[j]) + popcount64(a3 & b3[j]))
                    w0 += 4
                while w0 < nw:
                    a0 = r[w0]
                    if a0:
                        b0 = flat[w0]
                        for j in range(n_b * n_o):
                            cnt[j] += np.int32(popcount64(a0 & b0[j]))
                    w0 += 1
                for p in range(n_b):
                    s = pair_w[m, p]
                    for j in range(n_o):
                        acc[j] += s * cnt[p * n_o + j]
            for j in range(n_o):
                out[q, j] = acc[j]      # the bound proves it fits out's dtype


@njit(parallel=True, cache=True)
def _conv_words(xp, c_bits, k, stride, pad, h_out, w_out, b, pair_w, init, n_chunks, out):
    """Bit-plane conv, row words innermost (vectorised reduction): for few output columns.

    As `_conv_columns`, with b: uint64 (B, O, NW).
    """
    n_a = xp.shape[0]
    n_b, n_o, nw = b.shape
    n_pix = out.shape[0]
    for chunk in prange(n_chunks):
        row = np.empty((n_a, nw), dtype=np.uint64)
        for q in range(chunk * n_pix // n_chunks, (chunk + 1) * n_pix // n_chunks):
            img, rest = divmod(q, h_out * w_out)
            oy, ox = divmod(rest, w_out)
            _gather_row(xp, img, oy * stride - pad, ox * stride - pad, k, c_bits, row)
            for j in range(n_o):
                acc = init[j]
                for m in range(n_a):
                    r = row[m]
                    for p in range(n_b):
                        bj = b[p, j]
                        count = 0
                        for w in range(nw):
                            count += popcount64(r[w] & bj[w])
                        acc += pair_w[m, p] * count
                out[q, j] = acc


@njit(parallel=True, cache=True)
def _conv_pixels(xq, k, pad, h_out, w_out, b, pair_w, init, out):
    """Bit-plane conv, output pixels of a row innermost (vectorised): for few output
    channels, stride 1 and C a multiple of 64, where a row word is a whole pixel word.

    xq: uint64 (A, N, H, CW, W), the pixel words with x last (contiguous); b: uint64
    (B, O, NW) weight rows; out: int64 (N * h_out * w_out, O), written. Per output row,
    channel and plane pair, the popcounts over all taps and words are summed in int32
    counters (one per output pixel), then weighted once by pair_w[m, p].
    """
    n_a, n_img, h, cw, w = xq.shape
    n_b, n_o, nw = b.shape
    for line in prange(n_img * h_out):
        img, oy = divmod(np.int64(line), h_out)        # prange's index may be unsigned
        cnt = np.empty(w_out, dtype=np.int32)
        acc = np.empty((n_o, w_out), dtype=np.int64)
        for j in range(n_o):
            acc[j] = init[j]
        for j in range(n_o):
            for m in range(n_a):
                for p in range(n_b):
                    cnt[:] = 0
                    for ky in range(k):
                        iy = oy + ky - pad
                        if iy < 0 or iy >= h:
                            continue
                        for kx in range(k):
                            shift = kx - pad                 # input x = output x + shift
                            lo, hi = max(0, -shift), min(w_out, w - shift)
                            for c in range(cw):
                                bw = b[p, j, (ky * k + kx) * cw + c]
                                if bw == 0:
                                    continue
                                # Slices indexed from 0: no negative-index handling, so it vectorises.
                                src = xq[m, img, iy, c, lo + shift:hi + shift]
                                dst = cnt[lo:hi]
                                for i in range(hi - lo):
                                    dst[i] += np.int32(popcount64(src[i] & bw))
                    s = pair_w[m, p]
                    for ox in range(w_out):
                        acc[j, ox] += s * cnt[ox]
        base = line * w_out
        for ox in range(w_out):
            for j in range(n_o):
                out[base + ox, j] = acc[j, ox]


def _planes_conv(xp, c_bits, k, stride, pad, h_out, w_out, w_rows, pair_w, init=None,
                 dtype=np.int64) -> np.ndarray:
    """Run a kernel: pixel planes xp (A, N, H, W, CW), weight row planes (B, O, NW) -> (pixels, O).

    init: int64 (O,) every accumulator starts from (the bias), or None for 0. The kernels
    accumulate in int64 and store in dtype, which the caller has proven the results fit."""
    n_b, n_o, nw = w_rows.shape
    init = np.zeros(n_o, dtype=np.int64) if init is None else init.astype(np.int64)
    if WORD_BITS * nw > MAX_ROW_BITS:
        raise ValueError(f"bitplane: a row of {nw} words exceeds {MAX_ROW_BITS // WORD_BITS} "
                         "(the int32 plane-pair counters and int64 accumulators would overflow)")
    n_pix = xp.shape[1] * h_out * w_out
    out = np.empty((n_pix, n_o), dtype=dtype)
    if n_pix == 0 or n_o == 0:
        return out
    threads = kernel_threads()
    n_chunks = max(1, min(n_pix, -(-n_pix // CHUNK_PIXELS)))
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        if n_o >= WIDE_MIN_COLUMNS:
            _conv_columns(xp, c_bits, k, stride, pad, h_out, w_out,
                          np.ascontiguousarray(w_rows.transpose(2, 0, 1)), pair_w, init, n_chunks, out)
        elif stride == 1 and c_bits % WORD_BITS == 0 and w_out >= PIXELS_MIN_WIDTH:
            _conv_pixels(np.ascontiguousarray(xp.transpose(0, 1, 2, 4, 3)), k, pad, h_out, w_out,
                         np.ascontiguousarray(w_rows), pair_w, init, out)
        else:
            _conv_words(xp, c_bits, k, stride, pad, h_out, w_out,
                        np.ascontiguousarray(w_rows), pair_w, init, n_chunks, out)
    finally:
        numba.set_num_threads(previous)
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
    # Rows of a as a column of 1-pixel images: the conv kernel with K = 1 copies their words.
    n_a, rows, nw = a_planes.shape
    xp = np.ascontiguousarray(a_planes).reshape(n_a, 1, rows, 1, nw)
    return _planes_conv(xp, WORD_BITS * nw, 1, 1, 0, rows, 1, b_planes, pair_w)


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
    acc = codes_dot if aa * ab == 1 else aa * ab * codes_dot     # no copy for plain grids
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
    int_conv2d (same dtype). `bitplane_conv2d_nhwc` is the same on channels-last
    arrays, without the layout copies.
    """
    conv_geometry("bitplane_conv2d", x_codes, w_codes, stride)
    acc, dtype = _conv_nhwc(x_codes.transpose(0, 2, 3, 1), x_bits, x_signed, w_codes, w_bits, w_signed,
                            bias, stride, x_dorefa, w_dorefa)
    return acc.transpose(0, 3, 1, 2).astype(dtype, order="C")


def bitplane_conv2d_nhwc(x_codes: np.ndarray, x_bits: int, x_signed: bool,
                         w_codes: np.ndarray, w_bits: int, w_signed: bool,
                         bias: np.ndarray | None = None, stride: int = 1,
                         *, x_dorefa: bool = False, w_dorefa: bool = False) -> np.ndarray:
    """`bitplane_conv2d` on channels-last codes: x (N, H, W, C) -> (N, H_out, W_out, O).

    w_codes stays (O, C, K, K). The channels of each pixel are packed once (`pack_planes`
    of the NHWC pixel rows; a C-contiguous x is read in place); the kernel builds each
    output pixel's im2col row from them: K * K * C bits, bit (ky * K + kx) * C + c, so that
    a 3-channel layer fills whole words. A tap outside the image is code 0. Weights are
    packed in the same order (SPEC 6.7).
    """
    acc, dtype = _conv_nhwc(x_codes, x_bits, x_signed, w_codes, w_bits, w_signed, bias, stride,
                            x_dorefa, w_dorefa)
    return acc.astype(dtype, copy=False)


def _conv_nhwc(x_codes, x_bits, x_signed, w_codes, w_bits, w_signed, bias, stride, x_dorefa, w_dorefa):
    """The accumulators (N, H_out, W_out, O) and the dtype they are returned in (int64 with
    dorefa terms, else already that dtype)."""
    if not isinstance(x_codes, np.ndarray) or x_codes.ndim != 4:
        raise ValueError(f"bitplane_conv2d: expected x (N, H, W, C), got {getattr(x_codes, 'shape', None)}")
    pad, h_out, w_out = conv_geometry("bitplane_conv2d", x_codes.transpose(0, 3, 1, 2), w_codes, stride)
    n, h, w, c = x_codes.shape
    o, _, k, _ = w_codes.shape
    b = check_bias("bitplane_conv2d", bias, o)
    x_aff = _affine(x_bits, x_signed, x_dorefa)
    w_aff = _affine(w_bits, w_signed, w_dorefa)
    check_codes("bitplane_conv2d x", x_codes, x_bits, x_signed)
    check_codes("bitplane_conv2d w", w_codes, w_bits, w_signed)
    pair_w = np.outer(plane_weights(x_bits, x_signed), plane_weights(w_bits, w_signed))

    xp = _pack_pixels(x_codes, x_bits, x_signed)                                   # (A, N, H, W, CW)
    w_rows = pack_planes(w_codes.transpose(0, 2, 3, 1).reshape(o, k * k * c), w_bits, w_signed)
    dtype = acc_dtype(acc_bound(c * k * k, x_bits, x_signed, w_bits, w_signed, bias_bound(b),
                                a_dorefa=x_dorefa, w_dorefa=w_dorefa))
    plain_grids = not (x_aff[1] or w_aff[1])
    # Without dorefa terms the accumulator is the dot product plus the bias: the kernel starts
    # from the bias and stores the result in its final dtype.
    dot = _planes_conv(xp, c, k, stride, pad, h_out, w_out, w_rows, pair_w,
                       b if plain_grids else None, dtype if plain_grids else np.int64)
    dot = dot.reshape(n, h_out, w_out, o)

    # Dorefa terms: sums over the valid (unpadded) positions of each window.
    x_window_sum = w_window_sum = count = None
    if w_aff[1]:
        xs = x_codes.sum(axis=3, dtype=np.int64)                                   # (N, H, W)
        x_window_sum = sum(_tap_view(xs, ky - pad, kx - pad, stride, h_out, w_out)
                           for ky in range(k) for kx in range(k))[..., None]        # (N, Ho, Wo, 1)
    if x_aff[1]:
        ones = np.ones((h, w), dtype=np.int64)
        valid = np.stack([_tap_view(ones, ky - pad, kx - pad, stride, h_out, w_out)
                          for ky in range(k) for kx in range(k)], axis=-1)          # (Ho, Wo, K*K)
        w_tap_sum = w_codes.sum(axis=1, dtype=np.int64).reshape(o, k * k)
        w_window_sum = valid @ w_tap_sum.T                                          # (Ho, Wo, O)
        count = c * valid.sum(axis=-1, keepdims=True)                               # (Ho, Wo, 1)
    acc = dot
    if not plain_grids:
        acc = _affine_combine(dot, x_aff, w_aff, x_window_sum, w_window_sum, count)
        if b is not None:
            acc = acc + b
    return acc, dtype


def _tap_view(x: np.ndarray, dy: int, dx: int, stride: int, h_out: int, w_out: int) -> np.ndarray:
    """x (..., H, W) read at (oy * stride + dy, ox * stride + dx), 0 outside: (..., h_out, w_out)."""
    h, w = x.shape[-2:]
    pad = max(0, -dy, -dx, stride * (h_out - 1) + dy - h + 1, stride * (w_out - 1) + dx - w + 1)
    xp = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(pad, pad), (pad, pad)])
    y0, x0 = dy + pad, dx + pad
    return xp[..., y0:y0 + stride * (h_out - 1) + 1:stride, x0:x0 + stride * (w_out - 1) + 1:stride]
