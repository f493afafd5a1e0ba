"""Throughput of the Numba bit-plane kernel against this machine's popcount peak.

    python tools/bench_bitplane.py [--rows 36864] [--k 576] [--cols 64] [--repeats 7]

For a 4x4-bit and an 8x8-bit product (R_a x K) @ (K x R_b) of random signed codes
it times, in the same run and on the same values:
- the bit-plane kernel (`bitplane_gemm` on packed planes; packing timed apart),
- a float32 BLAS matmul of the codes,
- numpy's integer matmul of the codes (int32; numpy does not use BLAS for it),
and checks that the kernel equals the integer matmul.

Binary operations: R_a * R_b * K * a_bits * b_bits AND + popcount bit-operations.
Peak: cores x clock x 64 bits per cycle (one 64-bit popcount per core per cycle);
a core that issues several POPCNTs per cycle, or AVX-512 VPOPCNTQ, can exceed it.
Timings on a shared machine move a lot between runs: compare within a run.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numba  # noqa: E402

from fqsr_ref.integer.bitplane import bitplane_gemm, pack_planes  # noqa: E402


def clock_mhz() -> tuple[float, str]:
    """Core clock in MHz and where it came from (/proc/cpuinfo "cpu MHz", else lscpu)."""
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", f.read(), re.M)]
        if mhz:
            return max(mhz), '/proc/cpuinfo "cpu MHz" (max over cores)'
    except OSError:
        pass
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    m = re.search(r"CPU max MHz:\s*([\d.]+)", out) or re.search(r"CPU MHz:\s*([\d.]+)", out)
    if m:
        return float(m.group(1)), "lscpu"
    raise RuntimeError("cannot read the CPU clock from /proc/cpuinfo or lscpu")


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time over repeats (after one warm-up call) and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def bench(bits: int, rows: int, k: int, cols: int, repeats: int, peak: float, rng) -> None:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    a = rng.integers(lo, hi + 1, size=(rows, k)).astype(np.int8)
    b = rng.integers(lo, hi + 1, size=(k, cols)).astype(np.int8)

    t_pack, (ap, bp) = timed(lambda: (pack_planes(a, bits, True), pack_planes(b.T, bits, True)), 3)
    t_kernel, acc = timed(lambda: bitplane_gemm(ap, bits, True, bp, bits, True), repeats)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    t_f32, _ = timed(lambda: a32 @ b32, repeats)
    ai, bi = a.astype(np.int32), b.astype(np.int32)
    t_int, ref = timed(lambda: ai @ bi, max(1, repeats // 3))
    if not np.array_equal(acc, ref):
        raise SystemExit(f"error: {bits}x{bits}-bit kernel differs from the integer matmul "
                         f"in {int((acc != ref).sum())} elements")

    ops = rows * cols * k * bits * bits
    print(f"{bits}x{bits} bit, ({rows} x {k}) @ ({k} x {cols}): exact")
    print(f"  bit-plane kernel   {t_kernel * 1e3:9.1f} ms  {ops / t_kernel / 1e9:7.1f} Gbitop/s  "
          f"{100 * ops / t_kernel / peak:5.0f}% of popcount peak")
    print(f"  packing (a and b)  {t_pack * 1e3:9.1f} ms")
    print(f"  float32 BLAS       {t_f32 * 1e3:9.1f} ms  ({2 * rows * k * cols / t_f32 / 1e9:.0f} GFLOP/s)"
          f"  kernel / BLAS = {t_kernel / t_f32:.2f}")
    print(f"  numpy int32 matmul {t_int * 1e3:9.1f} ms  int / kernel = {t_int / t_kernel:.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=36864, help="R_a (e.g. 192 x 192 output pixels)")
    parser.add_argument("--k", type=int, default=576, help="K (e.g. 64 channels x 3 x 3)")
    parser.add_argument("--cols", type=int, default=64, help="R_b (output channels)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 8], help="bit widths (both operands)")
    args = parser.parse_args(argv)
    if min(args.rows, args.k, args.cols, args.repeats) < 1 or not all(1 <= b <= 8 for b in args.bits):
        parser.exit(2, "error: sizes and repeats must be >= 1 and bits in [1, 8]\n")

    mhz, source = clock_mhz()
    cores = numba.get_num_threads()
    peak = cores * mhz * 1e6 * 64
    print(f"clock {mhz:.0f} MHz from {source}; {cores} Numba threads "
          f"({len(os.sched_getaffinity(0))} CPUs available)")
    print(f"popcount peak = {cores} x {mhz:.0f} MHz x 64 bit = {peak / 1e9:.1f} Gbitop/s")
    rng = np.random.default_rng(0)
    for bits in args.bits:
        bench(bits, args.rows, args.k, args.cols, args.repeats, peak, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
