"""The autograd-free trainer: one stage of training (full precision or quantized).

A step: sample a batch -> sr_forward -> L1 + alpha * SQCL (Eq. 9) -> sr_backward
-> Adam with a per-iteration cosine-annealed learning rate -> DAIA interval
initialisation where a warm-up just finished (Eq. 4).

The L1 loss is taken in the model's pixel units (0..255 by default, as the
authors' code), so alpha = 0.3 weighs SQCL as it did in the paper's runs.
A parameter whose gradient stays exactly zero through the first steps (after the
DAIA warm-up) is named in a warning, or stops the run with strict=True: a
gradient check proves a gradient right, not that it ever flows.

Everything a step depends on (parameters, state, Adam moments, the generator's
bit state, the step number) is in the checkpoint, so a run killed at any point
and resumed from its last checkpoint ends with the same parameters as a run that
was never interrupted (on the same machine).
"""
from __future__ import annotations

import ctypes
import math
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import current_process, get_all_start_methods, get_context

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint, remove_stale_temporaries, save_checkpoint
from .data.dataset import ProceduralSource
from .models import Pass, cast_floats, sr_backward, sr_forward
from .models.srgan import srgan_step
from .memory import traced_peak
from .models.config import ModelConfig
from .ops import l1_backward, l1_forward
from .optim import adam_init, adam_step, cosine_lr
from .quant import DAIA_MIN_INTERVAL


@dataclass(frozen=True)
class StageOptions:
    steps: int
    batch: int = 16
    patch: int = 24          # LR patch side; the HR patch is patch * scale
    lr: float = 1e-3
    alpha: float = 0.3       # SQCL weight (Eq. 9)
    warmup: int = 20         # DAIA warm-up iterations l (Eq. 4)
    seed: int = 0
    checkpoint_every: int = 100   # steps between checkpoints (also one at the end)
    stage: str = "fp"
    strict: bool = False     # a parameter that never receives a gradient is an error


# Steps, after the DAIA warm-up, through which every parameter must receive a
# non-zero gradient at least once.
DEAD_WINDOW = 50


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN/inf; the last good checkpoint is kept."""


class CheckpointWriteError(ValueError):
    """A checkpoint could not be written (disk full, ...); the previous one is intact."""


class DeadParameters(RuntimeError):
    """strict: parameters whose gradient was exactly zero through the watch window."""


class DeadWatch:
    """Names the parameters whose gradient is exactly zero at every step of a window."""

    def __init__(self, keys, end_step: int):
        self.dead = set(keys)
        self.end_step = end_step

    def update(self, step: int, grads: dict):
        """Record one step's gradients; returns the dead names when the window closes."""
        if not self.dead or step >= self.end_step:
            return []
        self.dead = {k for k in self.dead if k not in grads or not np.any(grads[k])}
        return sorted(self.dead) if step + 1 == self.end_step else []


def train_step(cfg: ModelConfig, params, state, lr_batch, hr_batch, opts: StageOptions):
    """One forward and backward pass.

    Returns (losses, grads, new_state, interval_init): losses a dict of floats
    ("total" first), grads keyed like params, the state entries that changed, and
    the intervals whose DAIA warm-up ended in this step.
    """
    alpha = opts.alpha if cfg.quantized else 0.0
    if cfg.arch == "srgan":
        losses, grads, new_state, interval_init = srgan_step(
            cfg, params, state, lr_batch, hr_batch, alpha, opts.warmup)
        return ({"total": losses["generator"], "pixel": losses["pixel"],
                 "adversarial": losses["adversarial"], "sqcl": losses["sqcl"],
                 "discriminator": losses["discriminator"]}, grads, new_state, interval_init)
    ps = Pass(params, state, cfg, training=True, alpha=alpha, warmup=opts.warmup)
    sr, cache = sr_forward(ps, cfg, lr_batch)
    pixel, lcache = l1_forward(sr, hr_batch)
    # L1 in pixel units (the authors' loss on 0..255 images).
    units = cfg.pixel_range
    sr_backward(ps, l1_backward(lcache) * sr.dtype.type(units), cache)
    pixel = units * float(pixel)
    losses = {"total": pixel + ps.sqcl, "pixel": pixel, "sqcl": ps.sqcl}
    return losses, ps.grads, ps.new_state, ps.interval_init


STAGE_IDS = {"fp": 0, "quant": 1}
PROBE_PATCH = 16      # LR side of the probe step that measures a step's memory
PROBE_MARGIN = 1.5    # allocator slack and the batch buffers, over the traced peak


def step_bytes_per_lr_pixel(cfg: ModelConfig, params, state, opts: StageOptions) -> int:
    """Peak bytes per LR pixel of one training step, measured: the arrays a step of one
    PROBE_PATCH x PROBE_PATCH patch allocates (tracemalloc; the second of two steps, so
    that compilation is not counted), times PROBE_MARGIN. A step's caches grow with
    batch x patch^2, so this bounds --batch and --patch before any real allocation."""
    probe = StageOptions(steps=1, batch=1, patch=PROBE_PATCH, alpha=opts.alpha, warmup=opts.warmup)
    lr, hr = ProceduralSource().sample(np.random.default_rng(0), 1, PROBE_PATCH, cfg.scale)
    params = cast_floats(params, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        peak = traced_peak(lambda: train_step(cfg, params, state, lr, hr, probe))
    return math.ceil(PROBE_MARGIN * peak / PROBE_PATCH ** 2)


def batch_for_step(source, opts: StageOptions, scale: int, step: int):
    """The training batch of a step: a pure function of (seed, stage, step).

    Every step draws from its own generator, so a resumed run needs no generator
    state to see the same batches.
    """
    rng = np.random.default_rng([opts.seed, STAGE_IDS.get(opts.stage, 2), step])
    return source.sample(rng, opts.batch, opts.patch, scale)


def reuse_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for the next step instead of returning it.

    A training step allocates and frees hundreds of megabytes of temporaries (conv
    grids, layer caches). By default glibc serves every block above 128 KB-32 MB by a
    fresh mmap and unmaps it on free, so each step pays the kernel to map and zero
    every page again: about 56,000 page faults and a fifth of the full model's step.
    Raising the mmap and trim thresholds keeps those blocks in the heap, reused from
    step to step (the process keeps its peak memory). Process-wide; does nothing but
    return False where there is no glibc mallopt.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30) and mallopt(m_trim_threshold, (1 << 31) - 1))


class BatchStream:
    """The batches of steps start .. opts.steps - 1, in order: (step, lr, hr).

    While the caller trains on one batch, a worker samples the next. A batch is a
    pure function of (seed, stage, step) (batch_for_step), so prefetching changes
    no batch and a resumed run sees the same ones. prefetch: "thread" (NumPy and
    BLAS release the GIL for most of a step, but sampling procedural images is
    mostly Python and holds it), "process" (a forked process samples on another
    core: _SamplingProcess) or None (sample in line). Use it as a context
    manager: leaving the block (normally, by an exception or a break) stops the
    worker.
    """

    def __init__(self, source, opts: StageOptions, scale: int, start: int,
                 prefetch: str | None = "thread"):
        if prefetch not in ("thread", "process", None):
            raise ValueError(f"BatchStream: prefetch must be 'thread', 'process' or None, "
                             f"got {prefetch!r}")
        self.source, self.opts, self.scale = source, opts, scale
        self.start = start
        if prefetch == "process":
            # fork: no re-import of the caller's __main__ (spawn would need the
            # caller to guard it), and a start in milliseconds
            self.pool = _SamplingProcess(source, opts, scale)
        else:
            self.pool = ThreadPoolExecutor(max_workers=1) if prefetch else None

    def _fetch(self, step):
        if self.pool is None:
            return _Ready(batch_for_step(self.source, self.opts, self.scale, step))
        return self.pool.submit(batch_for_step, self.source, self.opts, self.scale, step)

    def __iter__(self):
        steps = range(self.start, self.opts.steps)
        pending = self._fetch(steps[0]) if steps else None
        for step in steps:
            lr, hr = pending.result()
            pending = self._fetch(step + 1) if step + 1 < self.opts.steps else None
            yield step, lr, hr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return False


# A process worker is worth its start-up from this many steps of a procedural
# source on (short runs, the tests' among them, keep the thread).
PROCESS_PREFETCH_STEPS = 200


def prefetch_mode(source, steps: int) -> str:
    """How train_stage prefetches: a process for a long run on procedural images
    (their sampling is mostly Python and holds the GIL) on Linux (fork, and a
    death signal for the worker: _die_with_parent), else a thread. A daemonic
    process (a multiprocessing.Pool worker, as in reproduce.py --jobs 2) may not
    start children: it keeps the thread."""
    if (isinstance(source, ProceduralSource) and steps >= PROCESS_PREFETCH_STEPS
            and sys.platform.startswith("linux") and "fork" in get_all_start_methods()
            and not current_process().daemon):
        return "process"
    return "thread"


class _SamplingProcess:
    """One forked process that samples batch_for_step(source, opts, scale, step) on
    request, over a pipe: the source goes to it once (by the fork), then only step
    numbers and batches travel, and the trainer runs no helper thread (a
    ProcessPoolExecutor's would compete with its loop for the GIL). One request
    at a time; submit(step).result() is the batch."""

    def __init__(self, source, opts: StageOptions, scale: int):
        ctx = get_context("fork")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_sampling_loop, daemon=True,
                                   args=(child, source, opts, scale, os.getpid()))
        self.process.start()
        child.close()
        self.pending = False

    def submit(self, fn, source, opts, scale, step):
        self.conn.send(step)
        self.pending = True
        return self

    def result(self):
        ok, value = self.conn.recv()
        self.pending = False
        if not ok:
            raise value
        return value

    def shutdown(self, wait=True, cancel_futures=True):
        try:
            if self.pending:   # take the batch in flight, or the worker blocks sending it
                self.conn.recv()
            self.conn.send(None)
        except (OSError, EOFError):   # the worker is already gone
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _sampling_loop(conn, source, opts, scale, parent_pid):
    """The sampling process: a batch for every step number received, until None."""
    _die_with_parent(parent_pid)
    while True:
        try:
            step = conn.recv()
        except EOFError:
            return
        if step is None:
            return
        try:
            reply = (True, batch_for_step(source, opts, scale, step))
        except Exception as exc:   # raised again in the trainer by result()
            reply = (False, exc)
        try:
            conn.send(reply)
        except OSError:   # the trainer closed its end
            return


def _die_with_parent(parent_pid: int):
    """In the sampling process: be killed when the trainer dies, even by kill -9;
    leave Ctrl-C to the trainer.

    Otherwise the worker, blocked on a pipe whose write end it inherited, would
    live on and keep the --out directory's lock (also inherited), so that
    --resume would find the directory locked.
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    # Ctrl-C reaches the whole process group: the trainer handles it (one line)
    # and stops the worker, which must not print a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != parent_pid:   # the trainer died before prctl took effect
        os._exit(1)


class _Ready:
    """A finished result with the interface of a Future (no prefetching)."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# The options a resumed stage must share with the run that wrote its checkpoint:
# they fix the batches and the learning-rate schedule (checkpoint_every and strict
# do not change the result).
RESUME_OPTIONS = ("steps", "batch", "patch", "lr", "alpha", "warmup", "seed")


def option_flag(field: str, stage: str, quantized_run: bool = True) -> str:
    """The train command's flag for a StageOptions field of a stage."""
    if field == "steps":
        return "--fp-steps" if stage == "fp" and quantized_run else "--steps"
    if field == "lr":
        return "--lr" if stage == "fp" else "--ft-lr"
    return {"warmup": "--warmup-iters"}.get(field, "--" + field)


def check_resumable(ckpt: Checkpoint, path: str, cfg: ModelConfig, opts: StageOptions,
                    quantized_run: bool = True):
    """ValueError (one line, naming the option) unless the checkpoint at path was
    written by a run of this model and these training options."""
    stored = ckpt.meta.get("options")
    stored = stored if isinstance(stored, dict) else {}
    if ckpt.config != cfg or stored.get("stage") != opts.stage:
        differ = [f for f in ModelConfig.__dataclass_fields__
                  if getattr(ckpt.config, f) != getattr(cfg, f)]
        why = f"its model differs in {', '.join(differ)}" if differ else \
            f"it is a {stored.get('stage')!r} stage checkpoint, not {opts.stage!r}"
        raise ValueError(f"checkpoint {path}: it was written by another run ({why}); "
                         f"cannot resume {cfg.bits} {opts.stage} from it")
    for field in RESUME_OPTIONS:
        want, have = getattr(opts, field), stored.get(field)
        if have != want:
            flag = option_flag(field, opts.stage, quantized_run)
            raise ValueError(f"--resume: {flag} {_show(want)} but {path} was written with "
                             f"{_show(have) if have is not None else 'no record of it'}; "
                             f"resume with the same options")


def _show(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g}"
    return repr(value)


def train_stage(cfg: ModelConfig, params: dict, state: dict, source, opts: StageOptions,
                out_path: str, resume: bool = False, log=None, report_every_s: float = 2.0,
                stop_after=None) -> Checkpoint:
    """Train one stage and return its final checkpoint (also written to out_path).

    params/state: the starting model (float64 arrays), ignored when resuming from
    out_path. source: a data source with .sample(rng, batch, lr_patch, scale).
    stop_after: stop (as if killed) after this many steps; for tests.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    reuse_freed_memory()
    remove_stale_temporaries(out_path)
    if resume and os.path.exists(out_path):
        ckpt = load_checkpoint(out_path)
        check_resumable(ckpt, out_path, cfg, opts)
        params, state, adam = ckpt.params, ckpt.state, ckpt.adam
        start = int(ckpt.meta["step"])
        log(f"{opts.stage}: resuming {out_path} at step {start}/{opts.steps}")
    else:
        # Training runs in float32; the master copy of every parameter is float32 too.
        params = cast_floats(params, np.float32)
        adam = adam_init(params)
        start = 0

    def checkpoint(step):
        # The batches are a function of (seed, stage, step): see batch_for_step.
        meta = {"step": step, "options": asdict(opts)}
        ckpt = Checkpoint(cfg, params, state, adam, meta)
        try:
            save_checkpoint(out_path, ckpt)
        except OSError as exc:   # a full disk, a folder gone read-only: the old file is intact
            kept = f"the previous {out_path} is kept" if os.path.exists(out_path) else "nothing was written"
            raise CheckpointWriteError(f"{opts.stage}: cannot write the checkpoint {out_path} at step {step} "
                                       f"({exc.strerror or exc}); {kept}") from None
        return ckpt

    state, adam = dict(state), dict(adam)
    last = checkpoint(start) if start == 0 else None
    t0, last_report, done = time.perf_counter(), 0.0, 0
    interval_keys = [k for k in params if k.endswith(".interval")]
    # The watch covers the first steps of a stage; a resumed run already passed them.
    watch = DeadWatch(params if start == 0 else (), (opts.warmup if cfg.quantized else 0) + DEAD_WINDOW)
    prefetch = prefetch_mode(source, opts.steps - start)
    with BatchStream(source, opts, cfg.scale, start, prefetch) as stream:
        for step, lr_batch, hr_batch in stream:
            with np.errstate(over="ignore", invalid="ignore"):   # divergence is caught below
                losses, grads, new_state, interval_init = train_step(cfg, params, state, lr_batch,
                                                                     hr_batch, opts)
            bad = [k for k, g in grads.items() if not np.all(np.isfinite(g))]
            if not math.isfinite(losses["total"]) or bad:
                what = f"gradient of {bad[0]}" if bad else f"loss {losses['total']}"
                raise TrainingDiverged(
                    f"{opts.stage}: training diverged at step {step + 1} ({what} is not finite); "
                    f"the last good checkpoint is {out_path}; try a lower --lr")
            dead = watch.update(step, grads)
            for key in dead:
                log(f"warning: {opts.stage}: parameter {key} has had a zero gradient at every one "
                    f"of the first {step + 1} steps; it is not learning")
            if dead and opts.strict:
                raise DeadParameters(f"{opts.stage}: {len(dead)} parameter(s) never received a "
                                     f"gradient in the first {step + 1} steps (--strict): "
                                     f"{', '.join(dead)}")
            lr_now = cosine_lr(step, opts.steps, opts.lr)
            params, adam = adam_step(params, grads, adam, lr_now)
            for key in interval_keys:
                # Eq. 3 needs I > 0. Activation intervals in pixel units (0..255) sit far
                # from 0, but a weight interval is as small as its weights (a branch whose
                # BN gamma is still near 0 folds to near-zero weights) and Adam moves it by
                # about lr whatever its size: keep it on the positive side.
                params[key] = np.asarray(np.maximum(params[key], np.float32(DAIA_MIN_INTERVAL)))
            state.update(new_state)
            for key, value in interval_init.items():
                params[key] = np.asarray(value, dtype=np.float32)
            done += 1

            now = time.perf_counter() - t0
            if now - last_report >= report_every_s or step + 1 == opts.steps:
                last_report = now
                rate = done / max(now, 1e-9)
                left = (opts.steps - step - 1) / max(rate, 1e-9)
                parts = " ".join(f"{k} {v:.5f}" for k, v in losses.items() if k != "total")
                log(f"{opts.stage} step {step + 1}/{opts.steps}  "
                    f"loss {losses['total']:.5f} ({parts})  lr {lr_now:.2e}  "
                    f"{rate:.2f} steps/s  left {format_duration(left)}")
            if (step + 1) % opts.checkpoint_every == 0 or step + 1 == opts.steps:
                last = checkpoint(step + 1)
            if stop_after is not None and done >= stop_after:
                break
    return last if last is not None else load_checkpoint(out_path)
