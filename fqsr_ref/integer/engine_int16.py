"""The int16 engine: conv accumulators on the CPU's integer dot-product instruction.

x86's `vpmaddwd` (AVX2) multiplies sixteen pairs of int16 and adds each pair into one
int32: 16 exact multiply-adds per instruction, twice the float32 FMA's 8. Where the CPU
has AVX-VNNI or AVX512-VNNI, LLVM folds the add that follows into `vpdpwssd`. The codes
of an FQSR model (8-bit and below, the image and pad-shifted inputs 9 bits) are int16
values, so every product is exact and a pair's sum (at most 2 * 2^15 * 2^15 = 2^31 only
for two 16-bit minima, which an int32 accumulator bound excludes) fits int32.
(`vpmaddubsw`, the uint8 x int8 form, saturates its int16 pair sums: not exact.)

Layout (docs/SPEC.md 6.6). The strip of input rows is a zero-padded channels-last grid
of int16, as the plain engine's "shift" plan builds in float32: rows of Wq = W + pad
columns, the pad zeros after a row are the left padding of the next, so output position
j reads tap (ky, kx) at grid row j + (ky - pad) * Wq + (kx - pad), its C channels
contiguous. Channels are padded to an even count (a zero channel), output channels to a
multiple of 16. The weights are packed once per conv as (O / 16, K*K, C / 2, 16, 2):
for one block of 16 output channels, one tap and one channel pair, 32 int16 = two
256-bit vectors, each 8 output channels x the pair. The kernel keeps a tile of 4
positions x 16 output channels in eight int32 vectors; per channel pair it loads the two
weight vectors, broadcasts each position's pair (one 32-bit load), and issues eight
`vpmaddwd` + adds. The accumulators are exact integers (int32 wraps modulo 2^32 and the
final sum is proven below 2^31 by acc_bound, so even the order of the partial sums does
not matter), equal to the plain engine's bit for bit.

The engine takes a conv when the host has AVX2 (llvmlite's host features), its
accumulators are int32 (SPEC 6.5) and the plain engine would use its "shift" plan (many
input and output channels: the body convs, the upsamplers); the head (3 input channels)
and the tail (3 outputs) keep the plain engine's stacked plans, and a conv whose bound
needs int64 runs on the plain engine. Tiles of positions are split over
$FQSR_INT16_THREADS threads (default 1).
"""
from __future__ import annotations

import sys
from typing import Callable, NamedTuple

import numpy as np
from llvmlite import binding, ir
import numba
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .bitplane import kernel_threads
from .engine_plain import STRIP_BYTES, ConvPlan, fill_strip

TILE = 4          # output positions per kernel tile
BLOCK = 16        # output channels per kernel tile (two vectors of 8 int32)
# Threads of the kernel: 1 unless FQSR_INT16_THREADS asks for more (as the bit-plane
# engine's FQSR_BITPLANE_THREADS and OpenBLAS's one thread: on shared cores one thread is
# never the slow choice).
THREADS_ENV = "FQSR_INT16_THREADS"


def host_has_madd() -> bool:
    """True when this CPU has AVX2 (vpmaddwd on 256-bit vectors), from LLVM's view of it,
    and Numba compiles for it (NUMBA_CPU_NAME unset or "host", or its features name avx2)."""
    cpu, features = numba.config.CPU_NAME, numba.config.CPU_FEATURES or ""
    if cpu not in (None, "", "host") and "+avx2" not in features:
        return False
    try:
        host = binding.get_host_cpu_features()
    except RuntimeError:   # not x86, or LLVM cannot tell
        return False
    return bool(host.get("avx2", False))


HOST_HAS_MADD = host_has_madd()
_NOTED = set()


def note_once(message: str) -> None:
    """One line on stderr, once per process for each message."""
    if message not in _NOTED:
        _NOTED.add(message)
        print(f"note: {message}", file=sys.stderr)


I16, I32, I64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
V16I16, V8I32 = ir.VectorType(I16, 16), ir.VectorType(I32, 8)


@intrinsic
def _madd_tiles(typingctx, grid, offsets, weights, block, first_tile, n_tiles, out):
    """Tiles [first_tile, first_tile + n_tiles) of output block `block` of a strip.
    grid: int16 (rows, C'), C' even; offsets: int64 (K*K,), the grid element index of each
    tap for position 0; weights: the packed int16 of the module docs; out: int32
    (positions, O'). out[p, 16 block + o] = sum over taps t and channels c of
    grid.flat[offsets[t] + p C' + c] * w[block, t, c // 2, o, c % 2]."""
    if any(not isinstance(a, types.Array) or a.layout != "C" for a in (grid, offsets, weights, out)):
        return None   # flat indexing: C-contiguous arrays only
    sig = types.void(grid, offsets, weights, types.int64, types.int64, types.int64, out)

    def codegen(context, builder, signature, args):
        arrays = [context.make_array(ty)(context, builder, value)
                  for ty, value in zip(signature.args, args) if isinstance(ty, types.Array)]
        grid_a, offsets_a, weights_a, out_a = arrays
        block, first_tile, n_tiles = args[3:6]
        chans = cgutils.unpack_tuple(builder, grid_a.shape)[1]
        n_taps = cgutils.unpack_tuple(builder, offsets_a.shape)[0]
        out_chans = cgutils.unpack_tuple(builder, out_a.shape)[1]
        module = builder.module
        madd = module.globals.get("llvm.x86.avx2.pmadd.wd") or ir.Function(
            module, ir.FunctionType(V8I32, [V16I16, V16I16]), "llvm.x86.avx2.pmadd.wd")
        grid_p, offsets_p, out_p = grid_a.data, offsets_a.data, out_a.data
        weights_p = builder.bitcast(weights_a.data, V16I16.as_pointer())
        pairs = builder.lshr(chans, I64(1))
        accs = [cgutils.alloca_once(builder, V8I32) for _ in range(2 * TILE)]   # registers after SROA
        zero = ir.Constant(V8I32, None)
        with cgutils.for_range(builder, n_tiles) as tile:
            for acc in accs:
                builder.store(zero, acc)
            p0 = builder.mul(builder.add(first_tile, tile.index), I64(TILE))
            with cgutils.for_range(builder, n_taps) as tap:
                offset = builder.load(builder.gep(offsets_p, [tap.index]))
                rows = [builder.add(offset, builder.mul(builder.add(p0, I64(q)), chans)) for q in range(TILE)]
                w_first = builder.mul(builder.add(builder.mul(block, n_taps), tap.index), pairs)
                with cgutils.for_range(builder, pairs) as pair:
                    wi = builder.mul(builder.add(w_first, pair.index), I64(2))
                    w = [builder.load(builder.gep(weights_p, [builder.add(wi, I64(h))]), align=2)
                         for h in range(2)]
                    c = builder.mul(pair.index, I64(2))
                    for q in range(TILE):
                        at = builder.bitcast(builder.gep(grid_p, [builder.add(rows[q], c)]), I32.as_pointer())
                        both = builder.insert_element(zero, builder.load(at, align=2), I32(0))
                        both = builder.bitcast(builder.shuffle_vector(both, both, zero), V16I16)  # broadcast
                        for h in range(2):
                            acc = accs[2 * q + h]
                            builder.store(builder.add(builder.load(acc), builder.call(madd, [both, w[h]])), acc)
            for q in range(TILE):
                first = builder.add(builder.mul(builder.add(p0, I64(q)), out_chans), builder.mul(block, I64(BLOCK)))
                for h in range(2):
                    dst = builder.gep(out_p, [builder.add(first, I64(8 * h))])
                    builder.store(builder.load(accs[2 * q + h]), builder.bitcast(dst, V8I32.as_pointer()), align=4)
        return context.get_dummy_value()
    return sig, codegen


@njit(parallel=True, cache=True)
def _madd_tiles_parallel(grid, offsets, weights, out, parts):
    n_tiles = out.shape[0] // TILE
    blocks = weights.shape[0]
    for part in prange(parts * blocks):
        block, k = part // parts, part % parts
        t0, t1 = n_tiles * k // parts, n_tiles * (k + 1) // parts
        _madd_tiles(grid, offsets, weights, block, t0, t1 - t0, out)


def _madd_strip(grid, offsets, weights, out):
    """out (positions, O') int32 = the accumulators of every position of the strip (positions
    a multiple of TILE); the tiles of each output block split over kernel_threads threads."""
    threads = kernel_threads(THREADS_ENV)
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        _madd_tiles_parallel(grid, offsets, weights, out, min(threads, out.shape[0] // TILE) or 1)
    finally:
        numba.set_num_threads(previous)


def madd_strip_reference(grid, offsets, weights, positions):
    """Loop twin of _madd_strip on Python-sized integers: (positions, O') int64."""
    blocks, taps, pairs = weights.shape[:3]
    g = grid.reshape(-1).astype(np.int64)
    w = weights.astype(np.int64).transpose(1, 2, 4, 0, 3).reshape(taps, 2 * pairs, blocks * BLOCK)
    out = np.zeros((positions, blocks * BLOCK), np.int64)
    for t in range(taps):
        for p in range(positions):
            start = offsets[t] + p * grid.shape[1]
            out[p] += g[start:start + 2 * pairs] @ w[t]
    return out


class Int16Plan(NamedTuple):
    """A conv the int16 engine runs: weights packed once (see the module docs)."""
    k: int
    cin: int      # C, and the grid's even channel count C'
    chans: int
    cout: int
    weights: np.ndarray   # int16 (O' / 16, K*K, C' / 2, 16, 2)


def prepare_int16(plan: ConvPlan, acc_dtype: str) -> Int16Plan | None:
    """The int16 plan of a conv the plain engine planned as `plan`, or None where the
    plain engine keeps it: no AVX2, accumulators beyond int32, or a stacked plan."""
    if not HOST_HAS_MADD or acc_dtype != "int32" or plan.kind != "shift":
        return None
    o, c, k, _ = plan.w_codes.shape
    chans, blocks = c + c % 2, -(-o // BLOCK)
    w = np.zeros((blocks * BLOCK, chans, k, k), np.int16)
    w[:o, :c] = plan.w_codes
    # (O', C', K, K) -> (O'/16, 16, C'/2, 2, K*K) -> (O'/16, K*K, C'/2, 16, 2)
    packed = w.reshape(blocks, BLOCK, chans // 2, 2, k * k).transpose(0, 4, 2, 1, 3)
    return Int16Plan(k, c, chans, o, np.ascontiguousarray(packed))


def conv_strips_int16(x: np.ndarray, plan: Int16Plan, emit: Callable[[int, int, int, np.ndarray], None]) -> None:
    """`engine_plain.conv_strips`'s contract on the int16 kernel: for each image and strip
    of output rows [h0, h1), emit(i, h0, h1, acc) with acc (h1 - h0, W', O) int32 exact
    accumulators without bias (columns from W on are padding), valid during the call.
    x: channels-last codes (N, H, W, C) whose values fit int16."""
    n, h, w, c = x.shape
    k, pad, blocks = plan.k, plan.k // 2, plan.weights.shape[0]
    wq = w + pad
    out_chans = blocks * BLOCK
    rows = min(h, max(1, STRIP_BYTES // (wq * (2 * plan.chans + 4 * out_chans))))
    span = rows + 2 * pad
    positions = -(-rows * wq // TILE) * TILE
    # the grid: pad zeros, span rows of Wq, then room for the last tile's overhang
    grid = np.zeros((pad + span * wq + pad + TILE, plan.chans), np.int16)
    body = grid[pad:pad + span * wq].reshape(span, wq, plan.chans)
    out = np.empty((positions, out_chans), np.int32)
    start = pad + pad * wq                     # grid row of output row h0, column 0
    offsets = np.array([(start + (ky - pad) * wq + (kx - pad)) * plan.chans
                        for ky in range(k) for kx in range(k)], np.int64)
    for i in range(n):
        for h0 in range(0, h, rows):
            h1 = min(h, h0 + rows)
            fill_strip(body, x[i], h0, h1, pad)
            m = -(-(h1 - h0) * wq // TILE) * TILE
            _madd_strip(grid, offsets, plan.weights, out[:m])
            acc = out[:(h1 - h0) * wq].reshape(h1 - h0, wq, out_chans)
            emit(i, h0, h1, acc if out_chans == plan.cout else acc[..., :plan.cout])
