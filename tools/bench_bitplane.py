"""The bit-plane engine against the plain engine, and its kernel against the popcount peak.

    OPENBLAS_NUM_THREADS=1 python tools/bench_bitplane.py [--size 256] [--repeats 3] [--quick]

Prints, in one run:
- kernel figures: for every conv shape of SRResNet x2 (head 9x9 3->64, block 3x3 64->64,
  upsampler 3x3 64->256 at LR, tail 9x9 64->3 at HR) on random 8-bit codes at the LR size,
  the time of `bitplane_conv2d` with 1 and 2 kernel threads, in word-operations per second
  (one AND + popcount of two 64-bit words) and as a fraction of the popcount peak of the
  threads used (threads x clock x one 64-bit popcount per cycle; AVX-512 VPOPCNTQ can exceed it);
  each is checked equal to the plain engine;
- the engine ratio: the whole integer model (SRResNet x2, 16 blocks, 64 channels, 8/8/8,
  untrained weights with DAIA intervals; speed hardly depends on the values: only all-zero
  input words, and all-zero weight words of the few-output tail, are skipped) on an LR
  size x size crop of the bundled photo, run as `run_image` runs it (tensors freed once
  read), with the plain engine and with the bit-plane engine at 1 and 2 threads, outputs
  checked identical, ratio bit-plane / plain.
Times are the minimum of repeats; the cases alternate round by round so that load from
other processes falls on all of them alike. Thread counts go through FQSR_BITPLANE_THREADS.
With --profile, also where the time goes: each conv kind of the whole model (conv and its
requantization) in both engines, one thread, and the bit-plane engine's share.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numba  # noqa: E402

from fqsr_ref.integer.bitplane import THREADS_ENV, bitplane_conv2d  # noqa: E402
from fqsr_ref.integer.engine_plain import int_conv2d  # noqa: E402

THREADS = (1, 2)


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


def with_threads(n: int, fn):
    """fn() with FQSR_BITPLANE_THREADS = n (restored after)."""
    old = os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = str(n)
    try:
        return fn()
    finally:
        if old is None:
            del os.environ[THREADS_ENV]
        else:
            os.environ[THREADS_ENV] = old


def alternate(cases: dict, repeats: int) -> dict:
    """Minimum wall time of every case over repeats, the cases interleaved round by round.

    cases: name -> callable. One warm-up call each (Numba compiles on first use)."""
    for fn in cases.values():
        fn()
    best = {name: float("inf") for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def conv_shapes(size: int):
    """(name, C, O, K, input side, input signed) of every conv kind of SRResNet x2."""
    return (("head 9x9 3->64", 3, 64, 9, size, False),
            ("block 3x3 64->64", 64, 64, 3, size, True),
            ("up 3x3 64->256", 64, 256, 3, size, True),
            ("tail 9x9 64->3 (HR)", 64, 3, 9, 2 * size, True))


def kernel_figures(size: int, repeats: int, peak: float, rng) -> None:
    print(f"bit-plane conv kernels, 8x8 bits, LR {size}x{size} (word-op = AND + popcount of 64 bits):")
    for name, c, o, k, side, signed in conv_shapes(size):
        lo, hi = (-128, 127) if signed else (0, 255)
        x = rng.integers(lo, hi + 1, size=(1, c, side, side)).astype(np.int8 if signed else np.uint8)
        w = rng.integers(-128, 128, size=(o, c, k, k)).astype(np.int8)
        expected = int_conv2d(x, 8, signed, w, 8, True)
        cases = {n: (lambda n=n: with_threads(n, lambda: bitplane_conv2d(x, 8, signed, w, 8, True)))
                 for n in THREADS}
        for fn in cases.values():
            if not np.array_equal(fn(), expected):
                raise SystemExit(f"error: {name}: bit-plane conv differs from the plain engine")
        best = alternate(cases, repeats)
        word_ops = side * side * -(-(c * k * k) // 64) * o * 64
        figures = "  ".join(f"{n} thr {best[n] * 1e3:8.1f} ms {word_ops / best[n] / 1e9:5.1f} Gword-op/s "
                            f"({100 * word_ops / best[n] / (n * peak):3.0f}% of peak)" for n in THREADS)
        print(f"  {name:21s} {figures}", flush=True)


def engine_model(size: int):
    """The full SRResNet x2 8/8/8 integer model and LR codes (1, 3, size, size)."""
    from fqsr_ref.data import photos_dir
    from fqsr_ref.data.images import list_images, read_image
    from fqsr_ref.integer.model import convert
    from fqsr_ref.models import cast_floats, preset
    from fqsr_ref.vectors import calibrated_params

    cfg = preset("srresnet", 2, "8/8/8", blocks=16)
    img = read_image(list_images(photos_dir())[0])
    reps = (-(-size // img.shape[0]), -(-size // img.shape[1]), 1)
    img = np.tile(img, reps)[:size, :size]
    codes = np.ascontiguousarray(img.transpose(2, 0, 1)[None])
    x = codes.astype(np.float32) / np.float32(255)
    params, state = calibrated_params(cfg, np.random.default_rng(0), x[:, :, :64, :64])
    return convert(cfg, cast_floats(params, np.float32), state), codes


def engine_figures(size: int, repeats: int) -> dict:
    """Seconds of the whole model per engine (minimum of alternating repeats) and the ratios."""
    from fqsr_ref.integer.run import prepare, run_nhwc

    model, codes = engine_model(size)
    prep = prepare(model)
    x = np.ascontiguousarray(codes.transpose(0, 2, 3, 1))
    outputs = {}

    def run(engine, threads=None):
        # as `run_image` (tools/benchmark.py): tensors freed once no later op reads them
        def go():
            outputs[(engine, threads)] = run_nhwc(prep, x, engine)["image.out"]
        return go if threads is None else (lambda: with_threads(threads, go))

    cases = {"plain": run("plain")}
    cases.update({f"bitplane {n} thr": run("bitplane", n) for n in THREADS})
    best = alternate(cases, repeats)
    ref = outputs[("plain", None)]
    for key, out in outputs.items():
        if not np.array_equal(out, ref):
            raise SystemExit(f"error: engine {key} output differs from the plain engine")
    return {"size": size, "seconds": best,
            "ratios": {name: best[name] / best["plain"] for name in best if name != "plain"}}


def conv_profile(size: int, repeats: int) -> None:
    """Seconds per conv kind (weight shape and input grid) of the whole model, both engines,
    each the minimum over repeats of its summed conv calls (conv, requantization)."""
    import time as _time
    from collections import defaultdict

    from fqsr_ref.integer import run as run_mod

    model, codes = engine_model(size)
    prep = run_mod.prepare(model)
    x = np.ascontiguousarray(codes.transpose(0, 2, 3, 1))
    kinds = {}
    for op in model.ops:
        if hasattr(op, "weight"):
            t = model.tensors[op.input]
            o, c, k, _ = op.weight.shape
            kinds[op.name] = f"{k}x{k} {c}->{o} {'s' if t.signed else 'u'}{t.bits}"
    spent = defaultdict(float)
    originals = {"plain": run_mod._conv_fused, "bitplane": run_mod._conv_bitplane}

    def timed(engine):
        def conv(op, *args, **kwargs):
            t0 = _time.perf_counter()
            y = originals[engine](op, *args, **kwargs)
            spent[(engine, kinds[op.name])] += _time.perf_counter() - t0
            return y
        return conv

    best = defaultdict(lambda: float("inf"))
    try:
        run_mod._conv_fused, run_mod._conv_bitplane = timed("plain"), timed("bitplane")
        for engine in ("plain", "bitplane"):
            run_mod.run_nhwc(prep, x[:, :32, :32], engine)          # compile
        for _ in range(repeats):
            for engine in ("plain", "bitplane"):
                spent.clear()
                t0 = _time.perf_counter()
                run_mod.run_nhwc(prep, x, engine)
                best[(engine, "whole model")] = min(best[(engine, "whole model")], _time.perf_counter() - t0)
                for key, sec in spent.items():
                    best[key] = min(best[key], sec)
    finally:
        run_mod._conv_fused, run_mod._conv_bitplane = originals["plain"], originals["bitplane"]
    count = defaultdict(int)
    for kind in kinds.values():
        count[kind] += 1
    total = best[("bitplane", "whole model")]
    print(f"where the time goes, LR {size}x{size}, one thread (minimum of {repeats} alternating runs):")
    for kind in list(dict.fromkeys(kinds.values())) + ["whole model"]:
        n = f"{count[kind]:2d} x " if kind in count else "     "
        p, b = best[("plain", kind)], best[("bitplane", kind)]
        print(f"  {n}{kind:22s} plain {p:6.2f} s  bit-plane {b:6.2f} s ({100 * b / total:3.0f}%)  "
              f"ratio {b / p:5.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="LR side of the model input")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="kernel figures at LR 64, no engine run")
    parser.add_argument("--profile", action="store_true",
                        help="also the time per conv kind of the whole model, both engines, one thread")
    args = parser.parse_args(argv)
    if args.size < 1 or args.repeats < 1:
        parser.exit(2, "error: --size and --repeats must be >= 1\n")

    mhz, source = clock_mhz()
    peak = mhz * 1e6
    print(f"clock {mhz:.0f} MHz from {source}; Numba may use {numba.config.NUMBA_NUM_THREADS} threads "
          f"({len(os.sched_getaffinity(0))} CPUs available); peak per core = 1 word-op per cycle "
          f"= {peak / 1e9:.1f} Gword-op/s; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    rng = np.random.default_rng(0)
    kernel_figures(64 if args.quick else args.size, args.repeats, peak, rng)
    if args.quick:
        return 0
    if args.profile:
        with_threads(1, lambda: conv_profile(args.size, args.repeats))
    fig = engine_figures(args.size, args.repeats)
    print(f"whole model, SRResNet x2 16 blocks 64 ch 8/8/8, LR {args.size}x{args.size} "
          f"(minimum of {args.repeats} alternating runs, outputs identical):")
    for name, t in fig["seconds"].items():
        ratio = f"   bit-plane / plain = {fig['ratios'][name]:.2f}" if name in fig["ratios"] else ""
        print(f"  {name:16s} {t:7.2f} s{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
