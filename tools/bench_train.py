"""Benchmark a training step (tiny and full model, float and 8/8/8) against np.matmul.

    OPENBLAS_NUM_THREADS=1 python tools/bench_train.py [--quick]

Prints, in one run (minimum of repeats, the cases interleaved round by round so
that load from other processes falls on all of them alike):
  - the tiny model's step (`--tiny`: EDSR x2, 16 channels, 2 blocks, batch 8 of
    12x12 LR patches) in float and 8/8/8, and how long sampling one batch takes;
  - the full model's step (SRResNet x2, 16 blocks, 64 channels, batch 16 of
    24x24) in float and 8/8/8;
  - the pure GEMM time of the full model's convs: float32 np.matmul of the
    forward, dx and dw products of every conv (the head's dx included, as the
    trainer computes it), and the ratio step / GEMM.
A step is what train_stage does per step: the batch (through the trainer's
prefetching BatchStream), forward, loss, backward and the Adam update. The
8/8/8 steps run after the DAIA warm-up (every quantizer active). Like
train_stage, it first lets malloc keep freed memory (trainer.reuse_freed_memory),
process-wide.

tools/benchmark.py calls train_step_figures(quick) and prints its dict.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fqsr_ref.data.dataset import ProceduralSource  # noqa: E402
from fqsr_ref.models import cast_floats, init_model, layer_specs, preset, quantized_start  # noqa: E402
from fqsr_ref.optim import adam_init, adam_step  # noqa: E402
from fqsr_ref.quant import DAIA_MIN_INTERVAL  # noqa: E402
from benchmark import check_threads, min_times  # noqa: E402  (tools/benchmark.py)
from fqsr_ref.trainer import (BatchStream, StageOptions, batch_for_step, prefetch_mode,  # noqa: E402
                             reuse_freed_memory, train_step)

TINY = dict(arch="edsr", blocks=2, channels=16, batch=8, patch=12)
FULL = dict(arch="srresnet", blocks=16, channels=64, batch=16, patch=24)


class StepCase:
    """A model ready to train: every call runs `steps` training steps."""

    def __init__(self, arch, blocks, channels, batch, patch, bits, steps):
        fp_cfg = preset(arch, 2, "32/32/32", blocks, channels)
        params, state = init_model(fp_cfg, np.random.default_rng(0))
        self.cfg = fp_cfg.with_bits(bits)
        if self.cfg.quantized:
            params, state = quantized_start(fp_cfg, params, state, self.cfg)
        self.params = cast_floats(params, np.float32)
        self.state = state
        self.opts = StageOptions(steps=10 ** 6, batch=batch, patch=patch, warmup=1)
        self.source = ProceduralSource()
        self.steps = steps
        if self.cfg.quantized:
            # one warm-up step: DAIA sets every interval, later steps quantize
            lr, hr = batch_for_step(self.source, self.opts, 2, 0)
            _, _, new_state, init = train_step(self.cfg, self.params, self.state, lr, hr, self.opts)
            self.state = {**self.state, **new_state}
            self.params.update({k: np.asarray(v, np.float32) for k, v in init.items()})
        self.adam = adam_init(self.params)
        self.intervals = [k for k in self.params if k.endswith(".interval")]
        # batches as train_stage streams them in a long run, from step 1 on
        self.stream = BatchStream(self.source, self.opts, 2, 1,
                                  prefetch_mode(self.source, self.opts.steps))
        self.batches = iter(self.stream)

    def __call__(self):
        for _ in range(self.steps):
            _, lr, hr = next(self.batches)
            _, grads, new_state, _ = train_step(self.cfg, self.params, self.state, lr, hr,
                                                self.opts)
            self.params, self.adam = adam_step(self.params, grads, self.adam, 1e-4)
            for key in self.intervals:   # as train_stage: keep I > 0
                self.params[key] = np.asarray(np.maximum(self.params[key],
                                                         np.float32(DAIA_MIN_INTERVAL)))
            self.state = {**self.state, **new_state}

    def close(self):
        self.stream.__exit__(None, None, None)


def conv_gemms(cfg, batch, patch):
    """(m, k, n) of every float32 GEMM one training step's convs amount to:
    forward (C_out x C_in K^2) @ (C_in K^2 x P), dx (C_in x C_out K^2) @ (C_out K^2 x P)
    and dw (C_out x P) @ (P x C_in K^2), P = batch * H * W at the conv's resolution."""
    layers = layer_specs(cfg)
    side = {}
    convs = [layers.head] + [c for pair in layers.blocks for c in pair] + [layers.trunk]
    for spec in convs:
        side[spec.name] = patch
    size = patch
    for spec, r in zip(layers.up, cfg.upsample_factors):
        side[spec.name] = size
        size *= r
    side[layers.tail.name] = size
    gemms = []
    for spec in convs + list(layers.up) + [layers.tail]:
        p = batch * side[spec.name] ** 2
        kk = spec.k * spec.k
        gemms += [(spec.cout, spec.cin * kk, p), (spec.cin, spec.cout * kk, p),
                  (spec.cout, p, spec.cin * kk)]
    return gemms


class GemmCase:
    """np.matmul of the given (m, k, n) shapes, each in its faster orientation
    (C = A @ B or C.T = B.T @ A.T: OpenBLAS serves some thin shapes, m = 3 for
    instance, far better one way round); identical shapes timed once, counted."""

    def __init__(self, gemms):
        rng = np.random.default_rng(0)
        self.work = []
        for shape in sorted(set(gemms)):
            m, k, n = shape
            ways = []
            for rows, inner, cols in ((m, k, n), (n, k, m)):
                a = rng.standard_normal((rows, inner), dtype=np.float32)
                b = rng.standard_normal((inner, cols), dtype=np.float32)
                ways.append((a, b, np.empty((rows, cols), np.float32)))
            best = min(ways, key=lambda way: min(_seconds(np.matmul, *way) for _ in range(3)))
            self.work.append(best + (gemms.count(shape),))

    def __call__(self):
        for a, b, out, count in self.work:
            for _ in range(count):
                np.matmul(a, b, out=out)


def _seconds(fn, *args):
    t0 = time.perf_counter()
    fn(*args[:2], out=args[2])
    return time.perf_counter() - t0


def sampling_seconds(case, repeats):
    best = float("inf")
    for step in range(repeats):
        t0 = time.perf_counter()
        batch_for_step(case.source, case.opts, 2, step)
        best = min(best, time.perf_counter() - t0)
    return best


def train_step_figures(quick: bool = False) -> dict:
    """Seconds per training step (min of repeats) and the conv GEMM time, one run.

    Keys: tiny_float_s, tiny_888_s, tiny_sampling_s, full_float_s, full_888_s,
    full_gemm_s, full_float_over_gemm, full_888_over_gemm, load_average (the
    machine's 1-minute load at the end: figures taken under load are slower).
    quick: fewer repeats (about 20 s instead of about a minute).
    """
    reuse_freed_memory()   # as train_stage does
    tiny_steps = 10 if quick else 25
    repeats = 2 if quick else 4
    tiny_float = StepCase(**TINY, bits="32/32/32", steps=tiny_steps)
    cases = {
        "tiny_float_s": tiny_float,
        "tiny_888_s": StepCase(**TINY, bits="8/8/8", steps=tiny_steps),
        "full_float_s": StepCase(**FULL, bits="32/32/32", steps=1),
        "full_888_s": StepCase(**FULL, bits="8/8/8", steps=1),
        "full_gemm_s": GemmCase(conv_gemms(preset("srresnet", 2), FULL["batch"], FULL["patch"])),
    }
    try:
        times = min_times(cases, repeats)
        check_threads(times, 1)   # one thread claimed: the step and its GEMMs
        best = {name: wall for name, (wall, _) in times.items()}
    finally:
        for case in cases.values():
            if isinstance(case, StepCase):
                case.close()
    for key in ("tiny_float_s", "tiny_888_s"):
        best[key] /= tiny_steps
    figures = dict(best)
    figures["tiny_sampling_s"] = sampling_seconds(tiny_float, 10 if quick else 30)
    figures["full_float_over_gemm"] = best["full_float_s"] / best["full_gemm_s"]
    figures["full_888_over_gemm"] = best["full_888_s"] / best["full_gemm_s"]
    figures["load_average"] = os.getloadavg()[0]   # other processes on the machine
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    f = train_step_figures(args.quick)
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"load average {f['load_average']:.1f} on {os.cpu_count()} cores")
    print(f"tiny step (EDSR x2 16 ch 2 blocks, batch 8 of 12x12): "
          f"float {1e3 * f['tiny_float_s']:.1f} ms, 8/8/8 {1e3 * f['tiny_888_s']:.1f} ms "
          f"(sampling a batch alone: {1e3 * f['tiny_sampling_s']:.1f} ms)")
    print(f"full step (SRResNet x2 16 blocks 64 ch, batch 16 of 24x24): "
          f"float {f['full_float_s']:.3f} s, 8/8/8 {f['full_888_s']:.3f} s")
    print(f"full model conv GEMMs alone (np.matmul float32, fwd + dx + dw): {f['full_gemm_s']:.3f} s")
    print(f"ratio step / GEMM: float {f['full_float_over_gemm']:.2f}, "
          f"8/8/8 {f['full_888_over_gemm']:.2f}")


if __name__ == "__main__":
    main()
