"""python -m fqsr_ref.train: full-precision pretraining, then quantized fine-tuning.

    python -m fqsr_ref.train --tiny
    python -m fqsr_ref.train --arch srresnet --scale 2 --bits 4/4/8 --train-dir DIV2K_HR \
        --fp-steps 20000 --steps 20000 --out runs/srresnet_448

With quantized bits, one command runs both stages: a full-precision model is
trained (or taken from --init), then quantized (BN folded, DAIA warm-up) and
fine-tuned. Checkpoints: OUT/fp.npz and OUT/quant.npz; --resume continues an
interrupted run. At the end the models and bicubic are scored on the validation
images and OUT/val_crop.png shows bicubic | model | HR.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import tempfile
import time

import numpy as np

from .checkpoint import load_checkpoint
from .data import photos_dir
from .data.dataset import FolderSource, ProceduralSource
from .data.images import list_images, modcrop, read_image, write_image
from .data.resize import bicubic_downscale, bicubic_upscale
from .metrics import evaluate_folder, side_by_side
from .models import ModelConfig, init_model, preset, quantized_start, upscale
from .models.discriminator import disc_init
from .models.srnet import conv_weight_count
from .models.config import ARCHS, BLOCK_ACTS, BN_FOLDS, MAX_BLOCKS, MAX_CHANNELS, SCALES, parse_bits
from .trainer import (DEAD_WINDOW, DeadParameters, StageOptions, TrainingDiverged, check_resumable,
                      format_duration, step_bytes_per_lr_pixel, train_stage)

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

CHECKPOINTS = ("fp.npz", "quant.npz")
LOCK_NAME = ".lock"

# The paper's recipes, from the authors' configs (billhhh/FQSR) and section 5.1:
# HR patch 96 at x2, 192 at x4 (LR 48 either way), batch 16, Adam, L1 on 0..255
# pixels, cosine annealing per iteration over 300 x 1000 iterations; the quantized
# model is fine-tuned from a full-precision checkpoint at the same learning rate.
PAPER = dict(patch=48, batch=16, lr=1e-3, ft_lr=1e-3, fp_steps=300_000, steps=300_000)
PRESETS = {"srresnet": PAPER, "fqsr_lite": PAPER, "srgan": PAPER,
           "edsr": {**PAPER, "lr": 1e-4, "ft_lr": 1e-4}}   # the paper says 5e-5; their config 1e-4

# --tiny: a small fully quantized EDSR-baseline x2 that trains on procedural images
# on a 2-core CPU and beats bicubic on real photographs; batch 8 of 12x12 LR patches
# (in a fixed time, more and smaller steps train the tiny model further). EDSR, not
# SRResNet: at this size SRResNet is 0.3 dB worse in full precision and 2.6 dB at
# 4/4/8 (docs/results.md); `--tiny --arch srresnet` trains it.
TINY = dict(arch="edsr", bits="8/8/8", blocks=2, channels=16, fp_steps=5000, steps=800, batch=8,
            patch=12, lr=3e-3, ft_lr=1e-3, out="runs/tiny")
# --tiny with wt or fm below 8 bits: the same model, fine-tuned longer.
TINY_LOW_BIT = {**TINY, "steps": 10_000, "out": "runs/tiny_low_bit"}


def presets_table() -> str:
    rows = [("preset", "LR patch", "batch", "lr", "fine-tune lr", "fp steps", "steps")]
    named = [(f"--arch {a}", v) for a, v in PRESETS.items()]
    named += [("--tiny", TINY), ("--tiny --bits 4/4/8", TINY_LOW_BIT)]
    rows += [(n, str(v["patch"]), str(v["batch"]), f"{v['lr']:g}", f"{v['ft_lr']:g}",
              str(v["fp_steps"]), str(v["steps"])) for n, v in named]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join(("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths))).rstrip() for r in rows)
    tiny = (f"--tiny also sets --arch {TINY['arch']} --scale 2 --bits {TINY['bits']} "
            f"--blocks {TINY['blocks']} --channels {TINY['channels']} --out {TINY['out']} "
            f"(--out {TINY_LOW_BIT['out']} when --bits has wt or fm below 8)")
    return table + "\n\n" + tiny


def _preset_help(key: str, fmt: str = "{}") -> str:
    """'default X (edsr Y); --tiny Z[, W with --bits below 8]' for a preset option."""
    default = fmt.format(PAPER[key])
    others = sorted({fmt.format(v[key]) for a, v in PRESETS.items() if v[key] != PAPER[key]})
    for value in others:
        archs = " and ".join(a for a, v in PRESETS.items() if fmt.format(v[key]) == value)
        default += f", {archs} {value}"
    tiny = fmt.format(TINY[key])
    if TINY_LOW_BIT[key] != TINY[key]:
        tiny += f", {fmt.format(TINY_LOW_BIT[key])} with --bits below 8"
    return f"default {default}; --tiny {tiny}"


def build_parser():
    """Every option's help states its default (tests/test_cli_contract.py checks it)."""
    arch_blocks = ", ".join(f"{a} {preset(a).blocks}" for a in ARCHS)
    p = argparse.ArgumentParser(
        prog="python -m fqsr_ref.train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets (any option given on the command line wins):\n" + presets_table())
    p.add_argument("--tiny", action="store_true",
                   help="small EDSR x2 on procedural images: 8/8/8 in about 2 minutes; "
                        "with --bits below 8 (e.g. 4/4/8) a longer fine-tuning, under 5 minutes "
                        "(the values it sets are listed below)")
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help=f"default srresnet; --tiny {TINY['arch']}")
    p.add_argument("--scale", type=int, choices=SCALES, default=2,
                   help="upscaling factor (default %(default)s; --tiny 2)")
    p.add_argument("--bits", help="wt/fm/sc, e.g. 4/4/8; 32/32/32 = full precision "
                                  f"(default 32/32/32; --tiny {TINY['bits']})")
    p.add_argument("--grid", choices=("narrow", "dorefa"), default="narrow",
                   help="signed quantization grid (narrow: zero exact, fits M-bit two's complement; "
                        "default %(default)s)")
    p.add_argument("--blocks", type=int, default=None,
                   help=f"residual blocks (default the arch's: {arch_blocks}; --tiny {TINY['blocks']})")
    p.add_argument("--channels", type=int, default=None,
                   help=f"feature channels (default {preset('srresnet').channels}; "
                        f"--tiny {TINY['channels']})")
    p.add_argument("--block-act", choices=BLOCK_ACTS, default=None,
                   help="EDSR: the activation in each residual block, relu (EDSR-baseline) or "
                        "prelu (one slope, the FQSR authors' EDSR with --keyword PReLU; "
                        "default relu, or --init's)")
    p.add_argument("--branch-relu", action=argparse.BooleanOptionalAction, default=None,
                   help="quantized model: Eq. 7's y = Q(x) + ReLU(Q(z)) instead of the plain "
                        "residual add (default: the plain add, see docs/SPEC.md 5.2)")
    p.add_argument("--bn-fold", choices=BN_FOLDS, default=None,
                   help="quantized SRResNet: where BN's per-channel scale goes, into the weights "
                        "before they are quantized (Eq. 6) or into a per-channel requantization "
                        "after the conv (docs/SPEC.md 3.6; default weights)")
    p.add_argument("--requant-image", action="store_true",
                   help="the head conv reads the image requantized to fm bits instead of its "
                        "8-bit codes (default: the 8-bit codes)")
    p.add_argument("--disc-channels", type=int, default=64,
                   help="SRGAN discriminator base channels (default %(default)s)")
    p.add_argument("--disc-stages", type=int, default=4,
                   help="SRGAN discriminator stride-2 stages (default %(default)s)")
    p.add_argument("--train-dir", help="folder of HR training images (default: procedural images)")
    p.add_argument("--val-dir", help="folder of HR validation images (default: the bundled photographs)")
    p.add_argument("--init", help="full-precision checkpoint to fine-tune from, skipping pretraining "
                                  "(default: none, pretrain)")
    p.add_argument("--fp-steps", type=int, default=None,
                   help="full-precision pretraining steps before quantized fine-tuning ("
                        + _preset_help("fp_steps") + ")")
    p.add_argument("--steps", type=int, default=None,
                   help="steps of the final stage: quantized fine-tuning, or full-precision "
                        "training with --bits 32/32/32 (" + _preset_help("steps") + ")")
    p.add_argument("--batch", type=int, default=None, help="batch size (" + _preset_help("batch") + ")")
    p.add_argument("--patch", type=int, default=None,
                   help="LR patch side, HR = patch x scale (" + _preset_help("patch") + ")")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate of full-precision training (" + _preset_help("lr", "{:g}") + ")")
    p.add_argument("--ft-lr", type=float, default=None,
                   help="learning rate of quantized fine-tuning (" + _preset_help("ft_lr", "{:g}") + ")")
    p.add_argument("--fp-pixel-range", type=float, default=1.0,
                   help="pixels in 0..R for full-precision pretraining (default %(default)g, measured "
                        "faster on the tiny model; 255 is the authors'); fine-tuning always uses 0..255")
    p.add_argument("--alpha", type=float, default=0.3,
                   help="SQCL weight (Eq. 9), on 0..255 pixels (default %(default)g)")
    p.add_argument("--warmup-iters", type=int, default=20,
                   help="DAIA warm-up iterations (Eq. 4; default %(default)s)")
    p.add_argument("--strict", action="store_true",
                   help="stop with an error if a parameter never receives a gradient "
                        f"(its first {DEAD_WINDOW} steps after the warm-up; default: a warning)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights and the training batches (default %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=100,
                   help="steps between checkpoints (default %(default)s)")
    p.add_argument("--out", default=None,
                   help=f"output directory (default runs/<arch>_x<scale>; --tiny {TINY['out']}, "
                        f"{TINY_LOW_BIT['out']} with --bits below 8)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out "
                   "(with the same model and training options)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --out holds checkpoints (they are replaced)")
    return p


def resolve(args):
    """Fill in defaults from the presets; what the user gave wins."""
    if args.tiny:
        args.scale = 2
        low_bit = args.bits is not None and min(parse_bits(args.bits)[:2]) < 8
        defaults = TINY_LOW_BIT if low_bit else TINY
    else:
        args.arch = args.arch or "srresnet"
        defaults = dict(PRESETS[args.arch], bits="32/32/32", out=f"runs/{args.arch}_x{args.scale}")
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def stage_options(args, steps, stage):
    return StageOptions(steps=steps, batch=args.batch, patch=args.patch,
                        lr=args.lr if stage == "fp" else args.ft_lr,
                        alpha=args.alpha, warmup=args.warmup_iters, seed=args.seed,
                        checkpoint_every=args.checkpoint_every, stage=stage, strict=args.strict)


def validate(args):
    """Refuse bad numbers before any work: a ValueError naming the option."""
    rules = [("--steps", args.steps, 1), ("--fp-steps", args.fp_steps, 0), ("--batch", args.batch, 1),
             ("--patch", args.patch, 1), ("--checkpoint-every", args.checkpoint_every, 1),
             ("--warmup-iters", args.warmup_iters, 0), ("--alpha", args.alpha, 0),
             ("--blocks", args.blocks, 0), ("--channels", args.channels, 1),
             ("--disc-channels", args.disc_channels, 1), ("--disc-stages", args.disc_stages, 1),
             ("--seed", args.seed, 0)]
    for flag, value, low in rules:
        if value is not None and not value >= low:   # `not >=` also refuses NaN
            raise ValueError(f"{flag} {value:g}: must be >= {low}")
    for flag, value, high in (("--blocks", args.blocks, MAX_BLOCKS), ("--channels", args.channels, MAX_CHANNELS)):
        if value is not None and value > high:
            raise ValueError(f"{flag} {value}: at most {high}")
    for flag, value in (("--lr", args.lr), ("--ft-lr", args.ft_lr), ("--fp-pixel-range", args.fp_pixel_range)):
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{flag} {value:g}: must be a finite number > 0")
    if not math.isfinite(args.alpha):
        raise ValueError(f"--alpha {args.alpha:g}: must be finite")
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite: give one of them")


@contextlib.contextmanager
def locked_out_dir(out):
    """Create --out (ValueError if it cannot be, or is not writable) and hold an
    exclusive lock on OUT/.lock while the run writes into it."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out}: exists and is not a folder")
    try:
        os.makedirs(out, exist_ok=True)
        fd = os.open(os.path.join(out, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot create or write to it ({exc.strerror or exc})") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ValueError(f"--out {out}: another training run is writing into it "
                                 f"(locked: {os.path.join(out, LOCK_NAME)})") from None
        try:   # a folder we can lock in but not write to (e.g. read-only, lock file left behind)
            with tempfile.TemporaryFile(dir=out):
                pass
        except OSError as exc:
            raise ValueError(f"--out {out}: not writable ({exc.strerror or exc})") from None
        yield
    finally:
        os.close(fd)   # releases the lock


def check_init(args, ckpt, fp_cfg):
    """--init: the checkpoint must be a full-precision model of the command line's
    architecture, scale, blocks and channels."""
    given = {"arch": args.arch, "scale": args.scale, "blocks": args.blocks, "channels": args.channels,
             "block_act": args.block_act}
    for field in ("arch", "scale", "blocks", "channels", "block_act"):
        if field == "block_act" and args.block_act is None:
            continue   # taken from the checkpoint
        want, have = getattr(fp_cfg, field), getattr(ckpt.config, field)
        if want != have:
            default = " (the default)" if given[field] is None else ""
            raise ValueError(f"--{field.replace('_', '-')} {want}{default} but {args.init} has {have}")
    if ckpt.config.quantized:
        raise ValueError(f"--init {args.init}: a quantized {ckpt.config.bits} checkpoint; "
                         f"--init takes a full-precision one (its fp.npz)")


def run(args) -> int:
    validate(args)
    if args.block_act not in (None, "relu") and args.arch != "edsr":
        raise ValueError(f"--block-act {args.block_act}: EDSR's option ({args.arch} blocks always have PReLU)")
    if args.bn_fold not in (None, "weights") and args.arch == "edsr":
        raise ValueError(f"--bn-fold {args.bn_fold}: EDSR has no batch norm")
    fp_cfg = preset(args.arch, args.scale, "32/32/32", args.blocks, args.channels, grid=args.grid,
                    pixel_range=args.fp_pixel_range, block_act=args.block_act or "relu")
    q_cfg = dataclasses.replace(
        fp_cfg.with_bits(args.bits), pixel_range=ModelConfig.pixel_range,
        requant_image=args.requant_image, bn_fold=args.bn_fold or ModelConfig.bn_fold,
        branch_relu=ModelConfig.branch_relu if args.branch_relu is None else args.branch_relu)
    val_dir = args.val_dir or photos_dir()
    for path in list_images(val_dir):   # fail now, not after training, on an unusable image
        read_image(path)
    source = FolderSource(args.train_dir, args.scale) if args.train_dir else ProceduralSource()
    if args.train_dir:
        source.eligible_images(args.patch)   # some image must hold a patch, before anything is written
    fp = load_checkpoint(args.init) if args.init else None
    if fp is not None:
        check_init(args, fp, fp_cfg)
        # EDSR's residual scaling and head padding are part of the network --init brings (an
        # import's --res-scale, and the mean padding of every PyTorch EDSR import)
        q_cfg = dataclasses.replace(q_cfg, res_scale=fp.config.res_scale, block_act=fp.config.block_act,
                                    head_pad=fp.config.head_pad)
    check_step_memory(args, fp_cfg, q_cfg, fp)
    with locked_out_dir(args.out):
        existing = [n for n in CHECKPOINTS if os.path.exists(os.path.join(args.out, n))]
        if existing and not (args.resume or args.overwrite):
            raise ValueError(f"--out {args.out} already holds {', '.join(existing)}; "
                             f"continue it with --resume or replace it with --overwrite")
        stages = [] if args.init else [("fp", fp_cfg, args.fp_steps if q_cfg.quantized else args.steps)]
        stages += [("quant", q_cfg, args.steps)] if q_cfg.quantized else []
        if args.resume:   # refuse now, not after an earlier stage has run
            for stage, cfg, steps in stages:
                path = os.path.join(args.out, f"{stage}.npz")
                if os.path.exists(path):
                    check_resumable(load_checkpoint(path), path, cfg,
                                    stage_options(args, steps, stage), q_cfg.quantized)
        if args.overwrite:
            for name in existing:
                os.unlink(os.path.join(args.out, name))
        return train_and_report(args, fp_cfg, q_cfg, source, val_dir, fp)


def initial_model(args, fp_cfg):
    """(params, state) of a new full-precision model; SRGAN's discriminator trains
    beside the generator and lives in its checkpoint."""
    params, state = init_model(fp_cfg, np.random.default_rng(args.seed))
    if fp_cfg.arch == "srgan":
        d_params, d_state = disc_init(np.random.default_rng(args.seed + 1), args.disc_channels, args.disc_stages)
        params, state = {**params, **d_params}, {**state, **d_state}
    return params, state


def check_step_memory(args, fp_cfg, q_cfg, fp) -> None:
    """Refuse --batch x --patch whose training step would not fit in the available memory,
    measured on a one-patch probe step of each stage's model (SPEC 1.1)."""
    from .memory import available_bytes, size_text
    # float32 weights, their gradients and Adam's two moments, before anything is built
    weights = 16 * conv_weight_count(q_cfg)
    if weights > available_bytes():
        raise ValueError(f"--blocks {q_cfg.blocks} --channels {q_cfg.channels}: the weights, gradients and "
                         f"optimizer state alone need about {size_text(weights)}, more than the "
                         f"{size_text(available_bytes())} available")
    params, state = (fp.params, fp.state) if fp is not None else initial_model(args, fp_cfg)
    stages = [] if fp is not None else [(fp_cfg, params, state, "fp")]
    if q_cfg.quantized:
        stages.append((q_cfg, *quantized_start(fp_cfg if fp is None else fp.config, params, state, q_cfg),
                       "quant"))
    per_pixel = max(step_bytes_per_lr_pixel(cfg, p, s, stage_options(args, 1, stage))
                    for cfg, p, s, stage in stages)
    need, have = args.batch * args.patch ** 2 * per_pixel, available_bytes()
    if need > have:
        raise ValueError(f"--batch {args.batch} --patch {args.patch}: a training step needs about "
                         f"{size_text(need)} ({per_pixel / 1024:.0f} KiB per LR pixel, measured), more than "
                         f"the {size_text(have)} available; lower --batch or --patch")


def train_and_report(args, fp_cfg, q_cfg, source, val_dir, fp) -> int:
    print(f"model {q_cfg.arch} x{q_cfg.scale} {q_cfg.blocks} blocks {q_cfg.channels} channels, "
          f"bits {q_cfg.bits}; data {args.train_dir or 'procedural'}; out {args.out}", file=sys.stderr)
    t0 = time.perf_counter()
    models = []
    if fp is None:
        params, state = initial_model(args, fp_cfg)
        fp = train_stage(fp_cfg, params, state, source,
                         stage_options(args, args.fp_steps if q_cfg.quantized else args.steps, "fp"),
                         os.path.join(args.out, "fp.npz"), resume=args.resume)
        models.append(("full precision", fp))
    if q_cfg.quantized:
        # Fine-tuning runs in the authors' pixel units (0..255), whatever the FP stage used.
        params, state = quantized_start(fp.config, fp.params, fp.state, q_cfg)
        q = train_stage(q_cfg, params, state, source, stage_options(args, args.steps, "quant"),
                        os.path.join(args.out, "quant.npz"), resume=args.resume)
        models.append((f"quantized {q_cfg.bits}", q))
    print(f"trained in {format_duration(time.perf_counter() - t0)}", file=sys.stderr)
    report(models, val_dir, args.scale, args.out)
    return 0


def report(models, val_dir, scale, out_dir):
    """Score each model and bicubic on the validation images; save a crop PNG."""
    print(f"\nvalidation on {val_dir} (PSNR/SSIM on Y, {scale}-pixel border cropped):")
    print(f"{'model':<24} {'PSNR':>8} {'SSIM':>7} {'vs bicubic':>11}")
    for i, (name, ckpt) in enumerate(models):
        _, mean = evaluate_folder(lambda lr: upscale(ckpt.config, ckpt.params, ckpt.state, lr),
                                  val_dir, scale)
        if i == 0:
            print(f"{'bicubic':<24} {mean.bicubic_psnr:8.3f} {mean.bicubic_ssim:7.4f}")
        print(f"{name:<24} {mean.psnr:8.3f} {mean.ssim:7.4f} {mean.psnr - mean.bicubic_psnr:+8.3f} dB")
    name, ckpt = models[-1]
    hr = modcrop(read_image(list_images(val_dir)[0])[:96 * scale, :96 * scale], scale)
    lr = bicubic_downscale(hr, scale)
    sr = upscale(ckpt.config, ckpt.params, ckpt.state, lr)
    path = os.path.join(out_dir, "val_crop.png")
    write_image(path, side_by_side([bicubic_upscale(lr, scale), sr, hr]))
    print(f"saved {path} (bicubic | {name} | HR)")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(resolve(args))
    except (TrainingDiverged, DeadParameters) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:   # e.g. the validation crop on a full disk; checkpoints are kept
        print(f"error: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
