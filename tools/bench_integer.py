"""Benchmark: integer-only inference against the float fake-quant forward (issue 6).

Prints, for a full SRResNet x2 8/8/8 (16 blocks, 64 channels) on a 256x256 input:
the float32 fake-quantized forward, the integer model with the plain engine and
with the bit-plane engine, each as the median of a few runs in this process, and
their ratios. Then the bit-plane kernel's throughput on the network's largest
GEMM as a fraction of this machine's popcount peak (cores x clock x 64 bits per
cycle). Timings on a shared machine move 1.3-2x between runs: compare within a run.

    python tools/bench_integer.py [--size 256] [--blocks 16] [--repeat 3]
"""
import argparse
import os
import time

import numpy as np

from fqsr_ref.data import photos_dir
from fqsr_ref.data.images import list_images, read_image
from fqsr_ref.integer.bitplane import bitplane_gemm, pack_planes
from fqsr_ref.integer.model import convert
from fqsr_ref.integer.run import run_ops
from fqsr_ref.models import Pass, cast_floats, preset, sr_forward
from fqsr_ref.vectors import calibrated_params


def median_time(fn, repeat):
    fn()  # warm-up: Numba compiles on first call
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def clock_hz():
    with open("/proc/cpuinfo") as f:
        mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
    return (max(mhz) if mhz else 2500.0) * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    cfg = preset("srresnet", 2, "8/8/8", blocks=args.blocks)
    img = read_image(list_images(photos_dir())[0])
    img = np.tile(img, (2, 2, 1))[:args.size, :args.size]
    codes = np.ascontiguousarray(img.transpose(2, 0, 1)[None])
    x = codes.astype(np.float32) / np.float32(255)
    # Untrained weights with intervals from one DAIA pass: speed does not depend on them.
    params, state = calibrated_params(cfg, np.random.default_rng(0), x[:, :, :64, :64])
    params = cast_floats(params, np.float32)
    model = convert(cfg, params, state)

    print(f"SRResNet x2 8/8/8, {cfg.blocks} blocks, {cfg.channels} channels, input {args.size}x{args.size}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    t_float = median_time(lambda: sr_forward(Pass(params, state, cfg), cfg, x), args.repeat)
    t_plain = median_time(lambda: run_ops(model, codes, "plain"), args.repeat)
    t_bits = median_time(lambda: run_ops(model, codes, "bitplane"), args.repeat)
    print(f"  float32 fake-quant forward  {t_float:8.2f} s   1.00")
    print(f"  integer, plain engine       {t_plain:8.2f} s   {t_plain / t_float:.2f} x float")
    print(f"  integer, bit-plane engine   {t_bits:8.2f} s   {t_bits / t_float:.2f} x float")

    # The network's dominant GEMM: a 3x3 64->64 conv, K = 576, at 8 x 8 bits.
    rng = np.random.default_rng(0)
    rows, k, cols = args.size * args.size, 9 * cfg.channels, cfg.channels
    a = rng.integers(-127, 128, (rows, k))
    b = rng.integers(-127, 128, (cols, k))
    pa, pb = pack_planes(a, 8, True), pack_planes(b, 8, True)
    t_kernel = median_time(lambda: bitplane_gemm(pa, 8, True, pb, 8, True), args.repeat)
    bit_ops = rows * cols * k * 8 * 8
    cores = os.cpu_count() or 1
    peak = cores * clock_hz() * 64
    print(f"bit-plane kernel, {rows}x{k} @ {k}x{cols}, 8x8 bits: {t_kernel * 1e3:.1f} ms, "
          f"{bit_ops / t_kernel / 1e9:.0f} Gbit-op/s = {bit_ops / t_kernel / peak:.0%} of the popcount "
          f"peak ({cores} cores x {clock_hz() / 1e9:.2f} GHz x 64 bits)")


if __name__ == "__main__":
    main()
