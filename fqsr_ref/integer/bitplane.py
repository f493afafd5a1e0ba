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
POPCNT instruction (or VPOPCNTQ where AVX-512 has it and the loop vectorises). The
two hot inner loops (`_popcount_block`, `_popcount_taps`) are written as LLVM vector
IR so that their running sums stay in registers across the row's words: AND, popcount,
add per 8 words, nothing else (generic vector IR, lowered for whatever CPU runs it).
"""
from __future__ import annotations

import os

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .engine_plain import bias_bound, check_bias, conv_geometry, gemm_shapes
from .requant import acc_bound, acc_dtype, check_codes, code_range

WORD_BITS = 64
# Below this many output channels the lanes kernel's 64-lane blocks would be mostly
# zero lanes; the pixels or word-innermost kernel is used instead.
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
    _pack_codes(np.ascontiguousarray(codes), bits, out)
    return out


def _pack_codes(codes: np.ndarray, bits: int, out: np.ndarray) -> None:
    """out[m, r, w] = the packed plane words of C-contiguous codes (R, K) (as `pack_planes`).

    One-byte codes with K a multiple of 8 go through `_pack_bytes` (8 codes per load),
    others through the bit loop `_pack_rows`."""
    r, k = codes.shape
    if codes.dtype.itemsize == 1 and k % 8 == 0 and bits <= 8:
        _pack_bytes(codes.view(np.uint64), bits, out.view(np.uint8))
    else:
        _pack_rows(codes, bits, out)


@njit(cache=True)
def _pack_bytes(groups, bits, out_bytes):
    """`_pack_rows` for one-byte codes read 8 at a time: groups uint64 (R, K / 8), byte i
    of group g is code 8 g + i (little-endian), its bits 0..7 the code's two's complement
    pattern; out_bytes: uint8 (bits, R, 8 NW), the bytes of the plane words. Bit m of the 8
    codes of a group is byte g of the plane (word g // 8, bits 8 (g % 8) ...), gathered by
    a multiply: byte i's bit 0 times 2^(56 - 7 i) lands on bit 56 + i, no two partial
    products overlapping there. Vectorises across the groups."""
    n_rows, n_groups = groups.shape
    ones = np.uint64(0x0101010101010101)
    gather = np.uint64(0x0102040810204080)
    for m in range(bits):
        shift = np.uint64(m)
        for r in range(n_rows):
            row, dst = groups[r], out_bytes[m, r]
            for g in range(n_groups):
                dst[g] = np.uint8((((row[g] >> shift) & ones) * gather) >> np.uint64(56))
            dst[n_groups:] = 0


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
# Output pixels per parallel chunk: each chunk allocates its row and total buffers once.
CHUNK_PIXELS = 256
# Longest row: |acc| <= row bits * 2^(16 + 16) (16-bit operands) fits int64.
MAX_ROW_BITS = 1 << 30


def kernel_threads(env: str = THREADS_ENV) -> int:
    """Threads an engine's kernels use: $env (FQSR_BITPLANE_THREADS here; default 1), at
    most Numba's."""
    raw = os.environ.get(env, "")
    if not raw:
        return 1
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{env}: expected an integer >= 1, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"{env}: expected an integer >= 1, got {raw!r}")
    return min(n, numba.config.NUMBA_NUM_THREADS)


@njit(inline="always")
def _or_bits(src, s, dst, d, n):
    """dst bits [d, d + n) |= src bits [s, s + n); bit i of a word array is bit i % 64 of
    word i // 64; src bits past its last word read as 0."""
    i = 0
    if (s | d) & 63 == 0:                # word-aligned (C a multiple of 64): whole words
        ws, wd = s >> 6, d >> 6
        for j in range(min(n >> 6, src.shape[0] - ws)):
            dst[wd + j] |= src[ws + j]
        i = n & ~63                      # src words past its end are 0: nothing to add
    while i < n:
        take = min(64, n - i)
        w, b = (s + i) >> 6, (s + i) & 63
        if w >= src.shape[0]:
            return
        v = src[w] >> np.uint64(b)
        if b and w + 1 < src.shape[0]:
            v |= src[w + 1] << np.uint64(64 - b)
        if take < 64:
            v &= (np.uint64(1) << np.uint64(take)) - np.uint64(1)
        w, b = (d + i) >> 6, (d + i) & 63
        dst[w] |= v << np.uint64(b)
        if b and b + take > 64:
            dst[w + 1] |= v >> np.uint64(64 - b)
        i += take


@njit(inline="always")
def _gather_row(strips, img, iy0, x0, k, c_bits, row):
    """Pack the im2col row of one output pixel from packed image rows, in the kernel.

    strips: uint64 (A, N, H, SW) image rows (`_pack_strips`): bit (x + pad) * c_bits + c of
    row y, plane m = bit m of pixel (y, x) channel c; pad pixels of zeros on the left.
    row: uint64 (A, NW), NW = ceil(k * k * c_bits / 64), receives bit (ky * k + kx) * c_bits + c
    of plane m = bit c of pixel (iy0 + ky, x0 - pad + kx), i.e. for every ky the k * c_bits
    bits of strip row iy0 + ky from bit x0 * c_bits; rows outside the image stay 0 (code 0).
    """
    n_a, _, h, _ = strips.shape
    row[:] = 0
    seg = k * c_bits
    for ky in range(k):
        iy = iy0 + ky
        if iy < 0 or iy >= h:
            continue
        for m in range(n_a):
            _or_bits(strips[m, img, iy], x0 * c_bits, row[m], ky * seg, seg)


def _pack_strips(codes_nhwc: np.ndarray, bits: int, pad: int) -> np.ndarray:
    """Image rows of channels-last codes packed as bit strips: uint64 (bits, N, H, SW),
    `pack_planes` of the rows (N H, (pad + W) C) of the codes with pad zero pixels (code 0:
    all planes 0) on the left of every row. Taps past the right end read the zero bits
    past the strip (`_or_bits`)."""
    n, h, w, c = codes_nhwc.shape
    lead = pad * c // WORD_BITS
    if pad * c % WORD_BITS:              # the padding ends inside a word: pack padded codes
        codes_nhwc, lead = np.pad(codes_nhwc, ((0, 0), (0, 0), (pad, 0), (0, 0))), 0
    rows = np.ascontiguousarray(codes_nhwc).reshape(n * h, -1)
    out = np.empty((bits, n * h, lead + -(-rows.shape[1] // WORD_BITS)), dtype=np.uint64)
    out[:, :, :lead] = 0
    _pack_codes(rows, bits, out[:, :, lead:])
    return out.reshape(bits, n, h, -1)


# Lanes of one block of the lanes kernel: vectors of 8 words, (plane p, output o) pairs.
# 8 vectors: 8 running sums and 8 totals stay in the 32 AVX-512 registers.
LANE_VECTORS = 8
BLOCK_LANES = 8 * LANE_VECTORS


@intrinsic
def _popcount_block(typingctx, row, wt, tot, a_w):
    """tot[l] = sum_m a_w[m] sum_w popcount(row[m, w] & wt[w, l]) for the BLOCK_LANES lanes l.

    row: uint64 (A, NW) a pixel's row planes; wt: uint64 (NW, BLOCK_LANES); tot: int64
    (BLOCK_LANES,), written; a_w: int64 (A,) the row's plane weights; all C-contiguous.
    Written as LLVM vectors so that the running sums and totals stay in registers over
    the words and planes (AND, popcount, add per 8 lanes; VPOPCNTQ on AVX-512); all-zero
    row words are skipped. int64 arithmetic wraps, so the result is exact whenever the
    true sum fits.
    """
    arrays = (row, wt, tot, a_w)
    if not all(isinstance(a, types.Array) and a.layout == "C" for a in arrays) \
            or [a.ndim for a in arrays] != [2, 2, 1, 1] or tot.dtype != types.int64 or a_w.dtype != types.int64:
        return None
    sig = types.void(row, wt, tot, a_w)

    def codegen(context, builder, signature, args):
        rowa, wta, tota, awa = (context.make_array(t)(context, builder, v) for t, v in zip(signature.args, args))
        i64, i32 = ir.IntType(64), ir.IntType(32)
        vec = ir.VectorType(i64, 8)
        zero = ir.Constant(vec, [0] * 8)
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec]), "llvm.ctpop.v8i64")

        def splat(x):
            one = builder.insert_element(ir.Constant(vec, ir.Undefined), x, i32(0))
            return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(i32, 8), [0] * 8))

        def lanes(ptr, v):
            return builder.bitcast(builder.gep(ptr, [i64(8 * v)]), vec.as_pointer())

        sums = [cgutils.alloca_once_value(builder, zero) for _ in range(LANE_VECTORS)]
        totals = [cgutils.alloca_once_value(builder, zero) for _ in range(LANE_VECTORS)]
        for t in totals:
            builder.store(zero, t)
        n_a, nw = cgutils.unpack_tuple(builder, rowa.shape, 2)
        with cgutils.for_range(builder, n_a) as plane:
            for acc in sums:
                builder.store(zero, acc)
            first = builder.mul(plane.index, nw)
            with cgutils.for_range(builder, nw) as word_loop:
                word = builder.load(builder.gep(rowa.data, [builder.add(first, word_loop.index)]))
                with builder.if_then(builder.icmp_unsigned("!=", word, i64(0)), likely=True):
                    x = splat(word)
                    base = builder.gep(wta.data, [builder.mul(word_loop.index, i64(BLOCK_LANES))])
                    for v, acc in enumerate(sums):
                        b = builder.load(lanes(base, v), align=8)
                        builder.store(builder.add(builder.load(acc), builder.call(ctpop, [builder.and_(b, x)])), acc)
            scale = splat(builder.load(builder.gep(awa.data, [plane.index])))
            for acc, t in zip(sums, totals):
                builder.store(builder.add(builder.load(t), builder.mul(builder.load(acc), scale)), t)
        for v, t in enumerate(totals):
            builder.store(builder.load(t), lanes(tota.data, v), align=8)
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True, cache=True)
def _conv_lanes(strips, c_bits, k, stride, pad, h_out, w_out, wt, a_w, lane_w, n_o, init, n_chunks, out):
    """Bit-plane conv, lanes (p, o) innermost: per output pixel, every block of BLOCK_LANES
    weight rows against each input plane of the pixel's row (`_popcount_block`).

    strips: uint64 (A, N, H, SW) (`_pack_strips`); wt: uint64 (n_blocks, NW, BLOCK_LANES), lane
    l = p * n_o + o of all blocks is plane p of output o's weight row (lanes past B * O are 0);
    a_w: int64 (A,) and lane_w: int64 (B,) the plane weights; init: int64 (O,) the accumulators'
    start; out: (N * h_out * w_out, O), written. tot[l] = sum_m a_w[m] popcount sums, then
    out[o] = init[o] + sum_p lane_w[p] tot[p * n_o + o].
    """
    n_a = strips.shape[0]
    n_blocks, nw, _ = wt.shape
    n_b = lane_w.shape[0]
    n_pix = out.shape[0]
    for chunk in prange(n_chunks):
        row = np.empty((n_a, nw), dtype=np.uint64)
        tot = np.empty(n_blocks * BLOCK_LANES, dtype=np.int64)
        acc = np.empty(n_o, dtype=np.int64)
        for q in range(chunk * n_pix // n_chunks, (chunk + 1) * n_pix // n_chunks):
            img, rest = divmod(q, h_out * w_out)
            oy, ox = divmod(rest, w_out)
            _gather_row(strips, img, oy * stride - pad, ox * stride, k, c_bits, row)
            for blk in range(n_blocks):
                _popcount_block(row, wt[blk], tot[blk * BLOCK_LANES:(blk + 1) * BLOCK_LANES], a_w)
            acc[:] = init
            for p in range(n_b):
                s = lane_w[p]
                for j in range(n_o):
                    acc[j] += s * tot[p * n_o + j]
            for j in range(n_o):
                out[q, j] = acc[j]      # the bound proves it fits out's dtype


@njit(parallel=True, cache=True)
def _conv_words(strips, c_bits, k, stride, pad, h_out, w_out, b, pair_w, init, n_chunks, out):
    """Bit-plane conv, row words innermost (vectorised reduction): for few output channels.

    As `_conv_lanes`, with b: uint64 (B, O, NW) the weight rows and pair_w: int64 (A, B) the
    plane-pair weights.
    """
    n_a = strips.shape[0]
    n_b, n_o, nw = b.shape
    n_pix = out.shape[0]
    for chunk in prange(n_chunks):
        row = np.empty((n_a, nw), dtype=np.uint64)
        for q in range(chunk * n_pix // n_chunks, (chunk + 1) * n_pix // n_chunks):
            img, rest = divmod(q, h_out * w_out)
            oy, ox = divmod(rest, w_out)
            _gather_row(strips, img, oy * stride - pad, ox * stride, k, c_bits, row)
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


# Output pixels of one tile of the pixels kernel: 4 vectors of 8.
PIXEL_VECTORS = 4
PIXEL_TILE = 8 * PIXEL_VECTORS


@intrinsic
def _popcount_taps(typingctx, x, wrow, iy0, x0, k, tot, weight):
    """tot[i] += weight * sum over taps of popcount(x[iy, c, x0 + i + kx] & wrow[(ky k + kx) CW + c])
    for the PIXEL_TILE output pixels i of a tile, iy = iy0 + ky over the rows inside [0, H).

    x: uint64 (H, CW, WP) one plane of an image's pixel words, x (padded) last; wrow: uint64
    (K K CW,) one plane of one output's weight row; tot: int64 (PIXEL_TILE,); all
    C-contiguous. The per-pixel sums stay in registers over every tap and word (LLVM
    vectors: AND with the broadcast weight word, popcount, add); all-zero weight words are
    skipped. int64 arithmetic wraps: exact whenever the true sum fits.
    """
    arrays = (x, wrow, tot)
    if not all(isinstance(a, types.Array) and a.layout == "C" for a in arrays) \
            or [a.ndim for a in arrays] != [3, 1, 1] or tot.dtype != types.int64:
        return None
    sig = types.void(x, wrow, types.int64, types.int64, types.int64, tot, types.int64)

    def codegen(context, builder, signature, args):
        xa = context.make_array(signature.args[0])(context, builder, args[0])
        wa = context.make_array(signature.args[1])(context, builder, args[1])
        ta = context.make_array(signature.args[5])(context, builder, args[5])
        iy0, x0, k, weight = args[2], args[3], args[4], args[6]
        i64, i32 = ir.IntType(64), ir.IntType(32)
        vec = ir.VectorType(i64, 8)
        zero = ir.Constant(vec, [0] * 8)
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec]), "llvm.ctpop.v8i64")

        def splat(v):
            one = builder.insert_element(ir.Constant(vec, ir.Undefined), v, i32(0))
            return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(i32, 8), [0] * 8))

        def lanes(ptr, offset):
            return builder.bitcast(builder.gep(ptr, [offset]), vec.as_pointer())

        sums = [cgutils.alloca_once_value(builder, zero) for _ in range(PIXEL_VECTORS)]
        for acc in sums:
            builder.store(zero, acc)
        h, cw, wp = cgutils.unpack_tuple(builder, xa.shape, 3)
        with cgutils.for_range(builder, k) as ky_loop:
            iy = builder.add(iy0, ky_loop.index)
            inside = builder.and_(builder.icmp_signed(">=", iy, i64(0)), builder.icmp_signed("<", iy, h))
            with builder.if_then(inside):
                with cgutils.for_range(builder, k) as kx_loop:
                    tap = builder.mul(builder.add(builder.mul(ky_loop.index, k), kx_loop.index), cw)
                    with cgutils.for_range(builder, cw) as c_loop:
                        bw = builder.load(builder.gep(wa.data, [builder.add(tap, c_loop.index)]))
                        with builder.if_then(builder.icmp_unsigned("!=", bw, i64(0)), likely=True):
                            b = splat(bw)
                            first = builder.add(builder.mul(builder.add(builder.mul(iy, cw), c_loop.index), wp),
                                                builder.add(x0, kx_loop.index))
                            for v, acc in enumerate(sums):
                                a = builder.load(lanes(xa.data, builder.add(first, i64(8 * v))), align=8)
                                builder.store(builder.add(builder.load(acc), builder.call(ctpop, [builder.and_(a, b)])),
                                              acc)
        scale = splat(weight)
        for v, acc in enumerate(sums):
            dst = lanes(ta.data, i64(8 * v))
            builder.store(builder.add(builder.load(dst, align=8), builder.mul(builder.load(acc), scale)), dst, align=8)
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True, cache=True)
def _conv_pixels(xq, k, pad, h_out, w_out, b, a_w, b_w, init, out):
    """Bit-plane conv, output pixels of a row in the lanes: for few output channels, stride 1
    and C a multiple of 64, where a row word is a whole pixel word.

    xq: uint64 (A, N, H, CW, WP), the pixel words with x last, x shifted right by pad (zero
    pixels before and after: WP >= tiles * PIXEL_TILE + K - 1); b: uint64 (B, O, NW) weight
    rows; a_w (A,), b_w (B,) plane weights; out: (N * h_out * w_out, O), written. Per output
    row, channel and plane pair, every tile's popcounts over all taps and words are summed
    in registers (`_popcount_taps`), then weighted once by a_w[m] b_w[p].
    """
    n_a, n_img, h, cw, wp = xq.shape
    n_b, n_o, nw = b.shape
    n_tiles = -(-w_out // PIXEL_TILE)
    for line in prange(n_img * h_out):
        img, oy = divmod(np.int64(line), h_out)        # prange's index may be unsigned
        tot = np.empty(n_tiles * PIXEL_TILE, dtype=np.int64)
        for j in range(n_o):
            tot[:] = init[j]
            for m in range(n_a):
                for p in range(n_b):
                    for t in range(n_tiles):
                        _popcount_taps(xq[m, img], b[p, j], oy - pad, t * PIXEL_TILE, k,
                                       tot[t * PIXEL_TILE:(t + 1) * PIXEL_TILE], a_w[m] * b_w[p])
            for ox in range(w_out):
                out[line * w_out + ox, j] = tot[ox]


def _planes_conv(strips, c_bits, k, stride, pad, h_out, w_out, w_rows, a_w, b_w, init=None,
                 dtype=np.int64) -> np.ndarray:
    """Run a kernel: image row strips (A, N, H, SW) (`_pack_strips`), weight row planes
    (B, O, NW), plane weights a_w (A,), b_w (B,) -> (pixels, O).

    init: int64 (O,) every accumulator starts from (the bias), or None for 0. The kernels
    accumulate in int64 and store in dtype, which the caller has proven the results fit."""
    n_b, n_o, nw = w_rows.shape
    init = np.zeros(n_o, dtype=np.int64) if init is None else init.astype(np.int64)
    if WORD_BITS * nw > MAX_ROW_BITS:
        raise ValueError(f"bitplane: a row of {nw} words exceeds {MAX_ROW_BITS // WORD_BITS} "
                         "(the int64 accumulators could overflow)")
    n_pix = strips.shape[1] * h_out * w_out
    out = np.empty((n_pix, n_o), dtype=dtype)
    if n_pix == 0 or n_o == 0:
        return out
    threads = kernel_threads()
    n_chunks = max(1, min(n_pix, -(-n_pix // CHUNK_PIXELS)))
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        if n_o >= WIDE_MIN_COLUMNS:
            _conv_lanes(strips, c_bits, k, stride, pad, h_out, w_out, _lane_blocks(w_rows), a_w, b_w, n_o,
                        init, n_chunks, out)
        elif stride == 1 and c_bits % WORD_BITS == 0 and w_out >= PIXELS_MIN_WIDTH:
            a, n, h, _ = strips.shape
            cw = c_bits // WORD_BITS
            xq = np.zeros((a, n, h, cw, -(-w_out // PIXEL_TILE) * PIXEL_TILE + k - 1), dtype=np.uint64)
            xq[..., :pad + w_out] = strips.reshape(a, n, h, -1, cw).transpose(0, 1, 2, 4, 3)
            _conv_pixels(xq, k, pad, h_out, w_out, np.ascontiguousarray(w_rows), a_w, b_w, init, out)
        else:
            _conv_words(strips, c_bits, k, stride, pad, h_out, w_out,
                        np.ascontiguousarray(w_rows), np.outer(a_w, b_w), init, n_chunks, out)
    finally:
        numba.set_num_threads(previous)
    return out


def _lane_blocks(w_rows: np.ndarray) -> np.ndarray:
    """Weight row planes (B, O, NW) as the lanes kernel reads them: (n_blocks, NW, BLOCK_LANES),
    lane l = p * O + o of the blocks in order, zero lanes past B * O."""
    n_b, n_o, nw = w_rows.shape
    lanes = w_rows.reshape(n_b * n_o, nw)
    n_blocks = -(-(n_b * n_o) // BLOCK_LANES)
    padded = np.zeros((n_blocks * BLOCK_LANES, nw), dtype=np.uint64)
    padded[:n_b * n_o] = lanes
    return np.ascontiguousarray(padded.reshape(n_blocks, BLOCK_LANES, nw).transpose(0, 2, 1))


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
    _check_planes(a_planes, a_bits, a_signed, b_planes, b_bits, b_signed)
    # Rows of a as a column of 1-pixel images: the conv kernel with K = 1 copies their words.
    n_a, rows, nw = a_planes.shape
    strips = np.ascontiguousarray(a_planes).reshape(n_a, 1, rows, nw)
    return _planes_conv(strips, WORD_BITS * nw, 1, 1, 0, rows, 1, b_planes,
                        plane_weights(a_bits, a_signed), plane_weights(b_bits, b_signed))


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
    strips = _pack_strips(x_codes, x_bits, pad)                                 # (A, N, H, SW)
    w_rows = pack_planes(w_codes.transpose(0, 2, 3, 1).reshape(o, k * k * c), w_bits, w_signed)
    dtype = acc_dtype(acc_bound(c * k * k, x_bits, x_signed, w_bits, w_signed, bias_bound(b),
                                a_dorefa=x_dorefa, w_dorefa=w_dorefa))
    plain_grids = not (x_aff[1] or w_aff[1])
    # Without dorefa terms the accumulator is the dot product plus the bias: the kernel starts
    # from the bias and stores the result in its final dtype.
    dot = _planes_conv(strips, c, k, stride, pad, h_out, w_out, w_rows, plane_weights(x_bits, x_signed),
                       plane_weights(w_bits, w_signed), b if plain_grids else None,
                       dtype if plain_grids else np.int64)
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
