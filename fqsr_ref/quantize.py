"""python -m fqsr_ref.quantize: post-training quantization (PTQ) of a float model.

    python -m fqsr_ref.quantize --weights edsr_x2.safetensors --bits 8/8/8 --calib-dir DIV2K_HR --out q.npz
    python -m fqsr_ref.quantize --checkpoint runs/tiny/fp.npz --bits 6/6/8 --out q.npz
    python -m fqsr_ref.quantize --weights authors_a8w8o8.safetensors --intervals-from-clip-val --out q.npz

The float model (PyTorch weights read by fqsr_ref.importer, or an fqsr_ref
full-precision checkpoint) gets the quantizer sites of --bits; every interval is
initialised by DAIA (Eq. 4) over --calib-batches forward passes of calibration
patches (LR patches made from the HR images of --calib-dir, or procedural images),
with BN folded into its conv (Eq. 6) as in quantized fine-tuning. The result is a
quantized checkpoint like the one `train` writes: evaluate, infer and vectors take
it as it is. --float-out also writes the float model as an fqsr_ref full-precision
checkpoint, which `train --init` fine-tunes (quantization-aware training).
--intervals-from-clip-val reads the FQSR authors' quantized EDSR instead: the
intervals are the learned clip values of their quantizers (fqsr_ref.clipvals,
docs/SPEC.md 5.5), the widths their level_num, and there is no calibration.

Exit status: 0 success; 2 bad input (one line "error: ..."); 130 interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .importer import add_import_arguments, describe, import_from_args
from .models import ModelConfig, Pass, cast_floats, quantized_start, sr_forward
from .models.config import ARCHS, SCALES, parse_bits

CALIB_BATCHES = 20   # DAIA's l (Eq. 4), the warm-up of quantized training
CALIB_BATCH = 16     # the paper's batch of 48 x 48 LR patches
CALIB_PATCH = 48


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def build_parser():
    p = _Parser(prog="python -m fqsr_ref.quantize", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--weights", metavar="W.safetensors",
                       help="float weights of a PyTorch model (layouts: docs/SPEC.md 5.5; no default: "
                            "give --weights or --checkpoint)")
    which.add_argument("--checkpoint", metavar="FP.npz",
                       help="an fqsr_ref checkpoint in full precision (no default: give --weights or --checkpoint)")
    add_import_arguments(p)
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help="architecture name (default: edsr for the EDSR layouts, srresnet for "
                        "fqsr_srresnet; checked against --checkpoint)")
    p.add_argument("--scale", type=int, choices=SCALES, default=None,
                   help="checked against the model (default: the model's; fqsr_srresnet needs it)")
    p.add_argument("--bits", help="wt/fm/sc of the quantized model, e.g. 8/8/8 or 4/4/8 (required, no default; "
                                  "with --intervals-from-clip-val: read from the file and checked)")
    p.add_argument("--intervals-from-clip-val", action="store_true",
                   help="--weights is the FQSR authors' quantized EDSR: take its quantizers' learned "
                        "clip_val as the intervals (no DAIA; default: calibrate)")
    p.add_argument("--grid", choices=("narrow", "dorefa"), default="narrow",
                   help="signed quantization grid (default %(default)s)")
    p.add_argument("--branch-relu", action="store_true",
                   help="Eq. 7's ReLU on the residual branch (default: the plain add)")
    p.add_argument("--requant-image", action="store_true",
                   help="the head reads the image requantized to fm bits (default: its 8-bit codes)")
    p.add_argument("--calib-dir", metavar="DIR",
                   help="folder of HR images for calibration (default: procedural images)")
    p.add_argument("--calib-batches", type=int, default=CALIB_BATCHES,
                   help="DAIA batches, Eq. 4's l (default %(default)s)")
    p.add_argument("--batch", type=int, default=CALIB_BATCH, help="patches per batch (default %(default)s)")
    p.add_argument("--patch", type=int, default=CALIB_PATCH, help="LR patch side (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration batches (default %(default)s)")
    p.add_argument("--out", required=True, help="quantized checkpoint to write (.npz; required, no default)")
    p.add_argument("--float-out", metavar="FP.npz",
                   help="also write the float model as an fqsr_ref checkpoint in full precision "
                        "(for train --init; default: not written)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out / --float-out if they exist (default: refuse)")
    return p


def calibrate(cfg: ModelConfig, params: dict, state: dict, source, batches: int, batch: int,
              patch: int, seed: int, log=None):
    """DAIA over `batches` forward passes: every site passes its input through and
    records max|v|; after the last pass each interval is the mean (Eq. 4). Every site
    sees the float model's tensor, as in the warm-up of quantized training. Batch k
    is drawn from np.random.default_rng([seed, k]). Runs in float32 like the trainer;
    returns (params, state) as a quantized checkpoint holds them."""
    params, state = cast_floats(params, np.float32), dict(state)
    sites = sorted(k for k in params if k.endswith(".interval"))
    init = {}
    for k in range(batches):
        lr, _ = source.sample(np.random.default_rng([seed, k]), batch, patch, cfg.scale)
        ps = Pass(params, state, cfg, training=True, alpha=0.0, warmup=batches, keep_cache=False)
        sr_forward(ps, cfg, lr)
        state.update(ps.new_state)
        init.update(ps.interval_init)
        if log:
            log(f"calibration batch {k + 1}/{batches}")
    assert sorted(init) == sites, "every interval is set by the last calibration pass"
    params.update({key: np.asarray(value, np.float32) for key, value in init.items()})
    return params, state


def float_model(args):
    """(config, params, state, source description, quantizers) of --weights or --checkpoint;
    quantizers: the authors' (clipvals) with --intervals-from-clip-val, else None."""
    if args.weights is not None:
        imported = import_from_args(args, scale=args.scale, arch=args.arch,
                                    with_quantizers=args.intervals_from_clip_val)
        for note in imported.notes:
            print(note, file=sys.stderr)
        return (imported.config, imported.params, imported.state, describe(imported),
                imported.quantizers if args.intervals_from_clip_val else None)
    ckpt = load_checkpoint(args.checkpoint)
    cfg = ckpt.config
    if cfg.quantized:
        raise ValueError(f"--checkpoint {args.checkpoint}: a quantized {cfg.bits} checkpoint; "
                         f"give a full-precision one")
    for flag, want in (("--arch", args.arch), ("--scale", args.scale)):
        have = getattr(cfg, flag[2:])
        if want is not None and want != have:
            raise ValueError(f"{flag} {want}, but {args.checkpoint} is {have}")
    return cfg, ckpt.params, ckpt.state, os.path.basename(args.checkpoint), None


def check_args(args):
    for flag, value in (("--calib-batches", args.calib_batches), ("--batch", args.batch),
                        ("--patch", args.patch)):
        if value < 1:
            raise ValueError(f"{flag} {value}: must be >= 1")
    if args.intervals_from_clip_val:
        if args.weights is None:
            raise ValueError("--intervals-from-clip-val reads the clip values of --weights (the "
                             "authors' quantized checkpoint as .safetensors)")
        if args.calib_dir:
            raise ValueError("--intervals-from-clip-val does not calibrate: drop --calib-dir")
        if args.bits is not None:
            parse_bits(args.bits)
    elif args.bits is None:
        raise ValueError("--bits is required (e.g. 8/8/8), unless --intervals-from-clip-val reads them")
    wt, fm, sc = parse_bits(args.bits) if args.bits is not None else (8, 8, 8)
    if (wt, fm, sc) == (32, 32, 32):
        raise ValueError(f"--bits {args.bits}: nothing to quantize (give e.g. 8/8/8)")
    if 32 in (wt, fm, sc):
        # the integer model and the vectors need every tensor quantized; evaluate works either way
        print(f"note: --bits {args.bits} leaves some tensors in float: evaluate takes the "
              f"checkpoint, infer and vectors do not", file=sys.stderr)
    for flag, path in (("--out", args.out), ("--float-out", args.float_out)):
        if path is None:
            continue
        if os.path.isdir(path):
            raise ValueError(f"{flag} {path} is a directory; give a .npz file name")
        if os.path.exists(path) and not args.overwrite:
            raise ValueError(f"{flag} {path} exists; give --overwrite to replace it")
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{flag} {path}: cannot create the folder {folder} ({exc.strerror or exc})") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {path}: the folder {folder} is not writable")
    if args.out == args.float_out:
        raise ValueError("--out and --float-out name the same file")
    if args.calib_dir:
        from .data.images import list_images
        list_images(args.calib_dir)   # a missing or empty folder fails now, not after the import


def calibration_source(args, scale):
    from .data.dataset import FolderSource, ProceduralSource

    return FolderSource(args.calib_dir, scale) if args.calib_dir else ProceduralSource()


def clip_val_start(fp_cfg, params, state, quantizers, args):
    """The quantized model whose intervals are the authors' clip values (SPEC 5.5): config,
    params, state (DAIA records complete: count l, max_sum l x interval) and the mapping."""
    from . import clipvals
    from .quant.daia import DAIA_WARMUP

    bits = clipvals.derived_bits(quantizers)
    if args.bits is not None and parse_bits(args.bits) != parse_bits(bits):
        raise ValueError(f"--bits {args.bits}, but the clip values of {args.weights} are {bits} "
                         f"(level_num of quant_weight / quant_activation / eltwise)")
    q_cfg = dataclasses.replace(fp_cfg.with_bits(bits), grid=args.grid, branch_relu=args.branch_relu,
                                requant_image=args.requant_image, pixel_range=ModelConfig.pixel_range)
    q_params, q_state = quantized_start(fp_cfg, params, state, q_cfg)
    intervals, lines = clipvals.site_intervals(q_cfg, quantizers, fp_cfg.pixel_range)
    for site, value in intervals.items():
        q_params[site + ".interval"] = np.asarray(value, np.float32)
        q_state[site + ".daia_count"] = np.asarray(DAIA_WARMUP, np.int64)
        q_state[site + ".daia_max_sum"] = np.asarray(DAIA_WARMUP * float(np.float32(value)), np.float64)
    return q_cfg, cast_floats(q_params, np.float32), q_state, lines


def run(args) -> int:
    check_args(args)
    fp_cfg, params, state, source_name, quantizers = float_model(args)
    t0 = time.perf_counter()
    if quantizers is not None:
        try:
            q_cfg, q_params, q_state, lines = clip_val_start(fp_cfg, params, state, quantizers, args)
        except ValueError as exc:
            raise ValueError(f"{args.weights}: {exc}") from None
        meta = {"step": 0, "ptq": {"source": source_name, "intervals": "clip_val"}}
        how = f"taken from the authors' clip_val ({len(lines)} sites)"
    else:
        lines = []
        q_cfg = dataclasses.replace(fp_cfg.with_bits(args.bits), grid=args.grid, branch_relu=args.branch_relu,
                                    requant_image=args.requant_image, pixel_range=ModelConfig.pixel_range)
        source = calibration_source(args, fp_cfg.scale)   # reads the folder: errors before any work
        # The quantized model works on 0..255 pixels (intervals, alpha in the paper's units).
        q_params, q_state = quantized_start(fp_cfg, params, state, q_cfg)
        q_params, q_state = calibrate(q_cfg, q_params, q_state, source, args.calib_batches, args.batch,
                                      args.patch, args.seed)
        calib = {"dir": args.calib_dir or "procedural", "batches": args.calib_batches, "batch": args.batch,
                 "patch": args.patch, "seed": args.seed}
        meta = {"step": 0, "ptq": {"source": source_name, "calibration": calib}}
        how = (f"set by DAIA over {args.calib_batches} batches of {args.batch} {args.patch}x{args.patch} "
               f"patches from {calib['dir']}")
    save_checkpoint(args.out, Checkpoint(q_cfg, q_params, q_state, {}, meta))
    sites = sum(k.endswith(".interval") for k in q_params)
    print(f"from {source_name}")
    for line in lines:
        print(f"  {line}")
    print(f"{q_cfg.arch} x{q_cfg.scale} {q_cfg.blocks} blocks {q_cfg.channels} channels {q_cfg.bits}: "
          f"{sites} intervals {how} in {time.perf_counter() - t0:.1f} s; wrote {args.out}")
    if args.float_out:
        save_checkpoint(args.float_out, Checkpoint(fp_cfg, cast_floats(params, np.float32),
                                                   cast_floats(state, np.float32), {},
                                                   {"step": 0, "imported": source_name}))
        print(f"wrote {args.float_out} (full precision; fine-tune it with python -m fqsr_ref.train "
              f"--init {args.float_out} --arch {fp_cfg.arch} --scale {fp_cfg.scale} --blocks "
              f"{fp_cfg.blocks} --channels {fp_cfg.channels} --bits {q_cfg.bits} ...)")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory calibrating (try a smaller --batch or --patch)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
