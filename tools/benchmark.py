"""The benchmark of issue 13: every speed and memory figure as ratios measured in one run.

    OPENBLAS_NUM_THREADS=1 python tools/benchmark.py [--quick]

Model: SRResNet x2, 16 blocks, 64 channels, 8/8/8 (untrained weights, intervals from
one DAIA pass: speed does not depend on the values), on a photograph tiled to size.
Times are the minimum of repeats, the cases interleaved round by round so that load
from other processes falls on all of them alike. Prints:

  1. the integer int16 engine (vpmaddwd) / np.matmul alone and / the plain engine;
     integer plain engine / float32 fake-quant forward of the same model (sr_forward);
     integer plain / the full-precision float32 forward (the project's np.matmul-based
     conv); integer plain / np.matmul alone, one GEMM with each conv's FLOPs (a floor);
  2. bit-plane engine / plain engine (fqsr_ref.integer.run_image, engine "bitplane");
  3. peak memory above the model per LR pixel of the integer plain and int16 engines (the peak
     RSS of a fresh subprocess, minus its value after the model is built and warmed up
     and the peak reset to the current RSS through /proc/self/clear_refs; see peak_rss),
     whole image, at two sizes, and the estimate fqsr_ref.integer.tiling uses;
  4. one DIV2K-sized LR image (1020x678): time and peak, whole and in 256-pixel tiles;
  5. the training step figures of tools/bench_train.py (train_step_figures).

--quick: LR 128x128 for the ratios, 256/384 for memory, no DIV2K run, quick trainer
figures (about 2-3 minutes on 2 loaded cores); the full run takes about 10 minutes.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy: one BLAS thread, as the package
TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(TOOLS, ".."))
import numba  # noqa: E402
import numpy as np  # noqa: E402

from fqsr_ref.data import photos_dir  # noqa: E402
from fqsr_ref.data.images import list_images, read_image  # noqa: E402
from fqsr_ref.integer.model import convert  # noqa: E402
from fqsr_ref.integer.tiling import estimate_bytes, run_image  # noqa: E402
from fqsr_ref.models import Pass, cast_floats, init_model, layer_specs, preset, sr_forward  # noqa: E402

DIV2K_LR = (678, 1020)     # (H, W) of a DIV2K image at x2


def photo(h, w):
    img = read_image(list_images(photos_dir())[0])
    reps = (-(-h // img.shape[0]), -(-w // img.shape[1]), 1)
    return np.ascontiguousarray(np.tile(img, reps)[:h, :w])


def build(blocks=16):
    """(cfg, float32 params, state, integer model) of the benchmark model."""
    from fqsr_ref.vectors import calibrated_params
    cfg = preset("srresnet", 2, "8/8/8", blocks=blocks)
    x = photo(24, 24).transpose(2, 0, 1)[None].astype(np.float64) / 255
    params, state = calibrated_params(cfg, np.random.default_rng(0), x)
    params = cast_floats(params, np.float32)
    return cfg, params, state, convert(cfg, params, state)


def min_seconds(cases, repeats):
    """Minimum wall time of each callable over repeats, interleaved round by round."""
    return {name: wall for name, (wall, _) in min_times(cases, repeats).items()}


def min_times(cases, repeats):
    """(wall, CPU) seconds of each callable's fastest round over repeats, interleaved round
    by round; CPU is the process's CPU time in that round (all its threads), so CPU / wall
    shows how many cores the case really used."""
    for fn in cases.values():
        fn()    # warm-up: Numba compilation, first-touch page faults
    best = {name: (float("inf"), 0.0) for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            if wall < best[name][0]:
                best[name] = (wall, cpu)
    return best


def check_threads(times, threads, slack=0.25):
    """RuntimeError naming every case whose CPU / wall shows more than `threads` cores at
    work: a figure claimed for n threads must not have run on more. (Less is allowed: other
    processes may take a core away.)"""
    over = {name: cpu / wall for name, (wall, cpu) in times.items() if cpu > (threads + slack) * wall}
    if over:
        raise RuntimeError(f"not on {threads} thread(s): " + ", ".join(
            f"{name} CPU / wall {ratio:.2f}" for name, ratio in over.items()))


def forward_gemms(cfg, h, w):
    """(m, k, n) of one float32 GEMM per conv of a forward at LR h x w, with the conv's
    FLOPs in the cheaper layout: im2col (P, C_in K^2) @ (C_in K^2, C_out) when C_in <= C_out,
    else every tap's products at once (P, C_in) @ (C_in, C_out K^2) (the 9x9 tail: an
    im2col of 64 x 81 values per HR pixel would be gigabytes), P = pixels at its resolution."""
    layers = layer_specs(cfg)
    convs = [(s, 1) for s in [layers.head] + [c for pair in layers.blocks for c in pair] + [layers.trunk]]
    f = 1
    for spec, r in zip(layers.up, cfg.upsample_factors):
        convs.append((spec, f))
        f *= r
    convs.append((layers.tail, f))
    shapes = []
    for s, f in convs:
        p, kk = h * w * f * f, s.k * s.k
        shapes.append((p, s.cin * kk, s.cout) if s.cin <= s.cout else (p, s.cin, s.cout * kk))
    return shapes


class GemmFloor:
    """np.matmul (float32) of every conv's GEMM shape: the BLAS time of the convs alone."""

    def __init__(self, shapes):
        rng = np.random.default_rng(0)
        self.work = []
        for shape in sorted(set(shapes)):
            m, k, n = shape
            self.work.append((rng.standard_normal((m, k), dtype=np.float32),
                              rng.standard_normal((k, n), dtype=np.float32),
                              np.empty((m, n), np.float32), shapes.count(shape)))

    def __call__(self):
        for a, b, out, count in self.work:
            for _ in range(count):
                np.matmul(a, b, out=out)


def speed(size, repeats, with_bitplane):
    cfg, params, state, model = build()
    lr = photo(size, size)
    x = lr.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)
    fp_cfg = preset("srresnet", 2, "32/32/32", blocks=cfg.blocks)
    fp_params, fp_state = init_model(fp_cfg, np.random.default_rng(0))
    fp_params = cast_floats(fp_params, np.float32)
    cases = {
        "int16": lambda: run_image(model, lr, "int16"),
        "plain": lambda: run_image(model, lr, "plain"),
        "fakequant": lambda: sr_forward(Pass(params, state, cfg, keep_cache=False), cfg, x),
        "fp32": lambda: sr_forward(Pass(fp_params, fp_state, fp_cfg, keep_cache=False), fp_cfg, x),
        "gemm": GemmFloor(forward_gemms(cfg, size, size)),
    }
    numba.set_num_threads(1)   # the bit-plane kernels' prange: one thread, as every figure here
    times = min_times(cases, repeats)
    if with_bitplane:
        times.update({f"{k}_bp": v for k, v in min_times({
            "plain": cases["plain"], "bitplane": lambda: run_image(model, lr, "bitplane")},
            repeats).items()})
    check_threads(times, 1)
    return {name: wall for name, (wall, _) in times.items()}


def peak_rss():
    """Peak RSS of this process in bytes: VmHWM of /proc/self/status where there is one
    (reset by clear_refs), else ru_maxrss. ru_maxrss alone is not enough in a child:
    Linux keeps the parent's RSS at fork in it (signal_struct maxrss survives exec), so a
    child of a large parent reports the parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_memory(h, w, tile, engine):
    """In a fresh process: peak RSS above the built, warmed-up model of one run."""
    _, _, _, model = build()
    run_image(model, photo(24, 24), engine)                  # compile, touch the code
    lr = photo(h, w)
    try:    # reset the peak to the current RSS (Linux >= 4.0), so building the model does not hide it
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    base = peak_rss()
    t0 = time.perf_counter()
    _, used = run_image(model, lr, engine, tile=tile)
    seconds = time.perf_counter() - t0
    peak = peak_rss()
    print(json.dumps(dict(above=peak - base, seconds=seconds, tile=used,
                          estimate=estimate_bytes(model, h, w, engine))))


def memory(h, w, tile=None, engine="plain"):
    cmd = [sys.executable, os.path.abspath(__file__), "--child-memory", str(h), str(w), "--engine", engine]
    if tile:
        cmd += ["--tile", str(tile)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def trainer(quick):
    try:
        from bench_train import train_step_figures      # tools/bench_train.py (the trainer's own)
    except ImportError as exc:
        return f"unavailable ({exc})"
    return train_step_figures(quick)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, fewer repeats (2-3 minutes)")
    p.add_argument("--no-trainer", action="store_true", help="skip the training step figures")
    p.add_argument("--memory-only", action="store_true", help="only the memory and DIV2K figures")
    p.add_argument("--child-memory", nargs=2, type=int, metavar=("H", "W"), help=argparse.SUPPRESS)
    p.add_argument("--tile", type=int, help=argparse.SUPPRESS)
    p.add_argument("--engine", default="plain", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_memory:
        child_memory(*args.child_memory, args.tile, args.engine)
        return
    size = 128 if args.quick else 256
    repeats = 2 if args.quick else 3
    print(f"SRResNet x2 8/8/8, 16 blocks, 64 channels; OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    rows = []
    t = None if args.memory_only else speed(size, repeats, with_bitplane=True)
    rows += [] if t is None else [
        (f"integer int16 engine (vpmaddwd), LR {size}x{size}", f"{t['int16']:.2f} s", ""),
        ("  / np.matmul alone, one GEMM of each conv's FLOPs", f"{t['int16'] / t['gemm']:.2f}", "<= 0.5"),
        ("  / the plain engine", f"{t['int16'] / t['plain']:.2f}", ""),
        (f"integer plain engine, LR {size}x{size}", f"{t['plain']:.2f} s", ""),
        ("  / float32 fake-quant forward", f"{t['plain'] / t['fakequant']:.2f} "
         f"({t['fakequant']:.2f} s)", "<= 1.0"),
        ("  / full-precision float32 forward", f"{t['plain'] / t['fp32']:.2f} ({t['fp32']:.2f} s)", ""),
        ("  / np.matmul alone, one GEMM of each conv's FLOPs", f"{t['plain'] / t['gemm']:.2f} "
         f"({t['gemm']:.2f} s)", ""),
        (f"bit-plane engine / plain engine, LR {size}x{size}",
         f"{t['bitplane_bp'] / t['plain_bp']:.2f} ({t['bitplane_bp']:.2f} s)", "<= 3"),
    ]
    sizes = (256, 384) if args.quick else (256, 512)
    mem = [memory(s, s) for s in sizes]
    for s, m in zip(sizes, mem):
        rows.append((f"peak above the model, integer plain, LR {s}x{s}",
                     f"{m['above'] / s / s:.0f} B per LR pixel ({m['above'] / 2 ** 20:.0f} MiB; "
                     f"estimate {m['estimate'] / 2 ** 20:.0f} MiB)", "<= 3072"))
        m16 = memory(s, s, engine="int16")
        rows.append((f"peak above the model, integer int16, LR {s}x{s}",
                     f"{m16['above'] / s / s:.0f} B per LR pixel ({m16['above'] / 2 ** 20:.0f} MiB)",
                     "no more than the plain engine's"))
    slope = (mem[1]["above"] - mem[0]["above"]) / (sizes[1] ** 2 - sizes[0] ** 2)
    rows.append(("  growth per LR pixel between the two sizes", f"{slope:.0f} B", ""))
    if not args.quick:
        h, w = DIV2K_LR
        for tile in (None, 256):
            m = memory(h, w, tile)
            rows.append((f"DIV2K LR {w}x{h}, integer plain, {'whole' if tile is None else f'tiles of {tile}'}",
                         f"{m['seconds']:.1f} s, peak above the model {m['above'] / 2 ** 20:.0f} MiB",
                         "< 1 GiB"))
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value}" + (f"   (target {target})" if target else ""))
    if not (args.no_trainer or args.memory_only):
        f = trainer(args.quick)
        if isinstance(f, str):
            print(f"training step figures: {f}")
        else:
            print(f"full-model training step (SRResNet x2 16 blocks, batch 16 of 24x24): float "
                  f"{f['full_float_s']:.3f} s, 8/8/8 {f['full_888_s']:.3f} s; conv GEMMs alone "
                  f"{f['full_gemm_s']:.3f} s; step / GEMM: float {f['full_float_over_gemm']:.2f}, "
                  f"8/8/8 {f['full_888_over_gemm']:.2f}")
            print(f"tiny step (EDSR x2 16 ch 2 blocks, batch 8 of 12x12): float "
                  f"{1e3 * f['tiny_float_s']:.1f} ms, 8/8/8 {1e3 * f['tiny_888_s']:.1f} ms, sampling "
                  f"{1e3 * f['tiny_sampling_s']:.1f} ms")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
