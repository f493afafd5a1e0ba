"""Benchmark conv2d forward/backward against float32 np.matmul of the same GEMM size.

    python tools/bench_conv.py [--repeats 7] [--batch 16] [--size 48]

For each case prints forward and backward milliseconds (medians), the achieved
GFLOP/s (2*N*H*W*C_out*C_in*K*K flops per pass; backward counts 2 passes: dx
and dw), the GFLOP/s of one float32 np.matmul (N*H*W x C_in*K*K) @
(C_in*K*K x C_out) measured in the same run, and the ratio of forward+backward
throughput to it. The issue's target is a ratio of 0.5 or more.

Timings on a shared machine move between runs: compare only within one run
(the three timings are interleaved for that reason). OPENBLAS_NUM_THREADS=1 in
the environment measures one core, which is steadier when other processes
compete for the cores.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fqsr_ref.ops.conv import conv2d_backward, conv2d_forward  # noqa: E402


def medians_ms(fns, repeats):
    """Median wall time of each callable; the calls are interleaved round by round
    so that load from other processes falls on all of them alike."""
    for fn in fns:
        fn()  # warm-up: first-touch page faults, BLAS thread start
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [1e3 * float(np.median(t)) for t in times]


def bench(n, c_in, c_out, size, k, repeats, rng):
    x = rng.standard_normal((n, c_in, size, size), dtype=np.float32)
    w = rng.standard_normal((c_out, c_in, k, k), dtype=np.float32) * 0.05
    b = np.zeros(c_out, dtype=np.float32)
    y, cache = conv2d_forward(x, w, b)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    flops = 2.0 * n * size * size * c_out * c_in * k * k

    a = rng.standard_normal((n * size * size, c_in * k * k), dtype=np.float32)
    m = rng.standard_normal((c_in * k * k, c_out), dtype=np.float32)
    fwd, bwd, gemm = medians_ms([lambda: conv2d_forward(x, w, b),
                                 lambda: conv2d_backward(dy, cache),
                                 lambda: np.matmul(a, m)], repeats)

    def gflops(ms, passes=1):
        return passes * flops / ms / 1e6

    total = gflops(fwd + bwd, 3)
    print(f"conv {k}x{k} {c_in}->{c_out}, N={n}, {size}x{size} (float32)")
    print(f"  forward  {fwd:8.2f} ms  {gflops(fwd):7.1f} GFLOP/s")
    print(f"  backward {bwd:8.2f} ms  {gflops(bwd, 2):7.1f} GFLOP/s")
    print(f"  fwd+bwd  {fwd + bwd:8.2f} ms  {total:7.1f} GFLOP/s")
    print(f"  np.matmul ({n * size * size}x{c_in * k * k} @ {c_in * k * k}x{c_out}) "
          f"{gemm:8.2f} ms  {gflops(gemm):7.1f} GFLOP/s")
    print(f"  ratio fwd+bwd / matmul: {total / gflops(gemm):.2f}  "
          f"(forward {gflops(fwd) / gflops(gemm):.2f}, "
          f"backward {gflops(bwd, 2) / gflops(gemm):.2f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=48)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 1 or args.size < 1:
        parser.exit(2, "error: --repeats, --batch and --size must be positive\n")
    rng = np.random.default_rng(0)
    for c_in, c_out, k in ((64, 64, 3), (3, 64, 9)):
        bench(args.batch, c_in, c_out, args.size, k, args.repeats, rng)


if __name__ == "__main__":
    main()
