"""python -m fqsr_ref.evaluate: PSNR/SSIM of a model (or bicubic) on a folder of HR images.

    python -m fqsr_ref.evaluate --bicubic --hr-dir DIR --scale 2
    python -m fqsr_ref.evaluate --checkpoint CKPT --hr-dir DIR --scale 4 --self-ensemble

The protocol is `fqsr_ref.metrics` (Y channel, border crop = scale). Prints one row
per image and the mean. Bad input or out of memory: one line "error: ..." on stderr,
exit code 2; Ctrl-C: "interrupted", exit code 130; never a traceback.
"""
import argparse
import math
import os
import sys

from . import metrics
from .data.resize import SCALES


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line and exit 2, without argparse's usage block
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def build_parser():
    p = _Parser(prog="python -m fqsr_ref.evaluate",
                description="PSNR/SSIM (Y channel, border crop = scale) on a folder of HR images.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", metavar="CKPT", help="model checkpoint to evaluate")
    which.add_argument("--bicubic", action="store_true", help="evaluate the bicubic baseline only")
    which.add_argument("--weights", metavar="W.safetensors",
                       help="float weights of a PyTorch model, as PyTorch computes them (fqsr_ref.importer)")
    p.add_argument("hr_dir_pos", nargs="?", metavar="HR_DIR", help="same as --hr-dir")
    p.add_argument("--hr-dir", metavar="DIR", help="folder of HR images (png/jpg/jpeg/bmp)")
    p.add_argument("--scale", type=int, required=True, help="SR scale: 2, 3 or 4")
    p.add_argument("--self-ensemble", action="store_true", help="x8 self-ensemble of the model")
    p.add_argument("--save-images", metavar="OUT",
                   help="write SR outputs and bicubic | model | HR comparisons here")
    from .importer import add_import_arguments   # --layout, --rgb-range, --res-scale of --weights
    add_import_arguments(p)
    return p


def _fmt(x, digits):
    return "inf" if math.isinf(x) else f"{x:.{digits}f}"


def format_table(rows, mean, with_model):
    """Plain-text table: image, [model PSNR SSIM], bicubic PSNR SSIM, [gain in dB]."""
    width = max(len("image"), *(len(r.name) for r in rows))
    head = ["image".ljust(width)]
    if with_model:
        head += ["PSNR".rjust(8), "SSIM".rjust(7)]
    head += ["bic PSNR".rjust(8), "bic SSIM".rjust(8)]
    if with_model:
        head += ["gain dB".rjust(7)]
    lines = ["  ".join(head)]
    for i, r in enumerate(rows + [mean]):
        if i == len(rows):
            lines.append("-" * len(lines[0]))
        cells = [r.name.ljust(width)]
        if with_model:
            cells += [_fmt(r.psnr, 2).rjust(8), _fmt(r.ssim, 4).rjust(7)]
        cells += [_fmt(r.bicubic_psnr, 2).rjust(8), _fmt(r.bicubic_ssim, 4).rjust(8)]
        if with_model:
            gain = r.psnr - r.bicubic_psnr if math.isfinite(r.psnr - r.bicubic_psnr) else math.nan
            cells += [f"{gain:+.2f}".rjust(7)]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    hr_dir = args.hr_dir or args.hr_dir_pos
    if args.hr_dir and args.hr_dir_pos and args.hr_dir != args.hr_dir_pos:
        parser.error("give the HR folder once (positional or --hr-dir)")
    if hr_dir is None:
        parser.error("the HR folder is required (--hr-dir DIR)")
    if args.scale not in SCALES:
        parser.error(f"--scale must be one of {', '.join(map(str, SCALES))}, got {args.scale}")
    if args.bicubic and args.self_ensemble:
        parser.error("--self-ensemble applies to a model; bicubic is evaluated as is")
    save = args.save_images
    if save is not None and (os.path.exists(save) and not os.path.isdir(save) or os.path.isdir(save)
                             and not os.access(save, os.W_OK | os.X_OK)):
        parser.error(f"--save-images {save} is not a writable folder")
    try:
        sr_fn = None
        if args.checkpoint is not None:
            from .models import load_upscaler  # the trainer's checkpoint format lives there
            sr_fn = load_upscaler(args.checkpoint)
            model_scale = getattr(sr_fn, "scale", args.scale)
            if model_scale != args.scale:
                raise ValueError(f"checkpoint {args.checkpoint} is a x{model_scale} model, "
                                 f"--scale is {args.scale}")
        if args.weights is not None:
            from .importer import describe, float_upscaler, import_from_args
            imported = import_from_args(args, scale=args.scale)
            print(describe(imported), *imported.notes, sep="\n", file=sys.stderr)
            sr_fn = float_upscaler(imported)
        rows, mean = metrics.evaluate_folder(sr_fn, hr_dir, args.scale,
                                             self_ensemble=args.self_ensemble,
                                             save_dir=args.save_images)
    except (ValueError, OSError, ImportError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        sys.stderr.write(f"error: {msg}\n")
        return 2
    except MemoryError:
        sys.stderr.write(f"error: out of memory evaluating the images of {hr_dir} (an image too large?)\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    what = "bicubic" if sr_fn is None else (args.checkpoint or args.weights) + (" (self-ensemble x8)" if args.self_ensemble else "")
    print(f"{what}, x{args.scale}, {len(rows)} images from {hr_dir} (Y channel, crop {args.scale})")
    print(format_table(rows, mean, with_model=sr_fn is not None))
    if args.save_images:
        print(f"images written to {args.save_images}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
