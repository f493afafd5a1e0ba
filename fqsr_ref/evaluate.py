"""python -m fqsr_ref.evaluate: PSNR/SSIM of a model (or bicubic) on a folder of HR images.

    python -m fqsr_ref.evaluate --bicubic --hr-dir DIR --scale 2
    python -m fqsr_ref.evaluate --checkpoint CKPT --hr-dir DIR --scale 4 --self-ensemble

The protocol is `fqsr_ref.metrics` (Y channel, border crop = scale). Prints one row
per image and the mean. Bad input or out of memory: one line "error: ..." on stderr,
exit code 2; Ctrl-C: "interrupted", exit code 130; never a traceback.

Memory: the float model's forward keeps about 6 float32 copies of every layer's
output, so an image whose forward would exceed --memory-budget (default: half the
memory available at start) is super-resolved in tiles with a halo of the model's
receptive field. The float forward is not bit-identical when tiled (BLAS sums in
another order), so a tiled image's PSNR can differ in the last digits; the integer
model's tiles are exact (`python -m fqsr_ref.infer`). An image too large to score
even so (bicubic and the metrics on the HR image) is refused up front with the size
it needs.
"""
import argparse
import math
import os
import sys
from fractions import Fraction

import numpy as np

from . import metrics
from .memory import available_bytes, size_text, traced_peak
from .data.images import list_images
from .data.resize import SCALES

MIN_TILE = 16
SCORE_BYTES_PER_HR_PIXEL = 160     # bicubic, Y planes and SSIM maps in float64 (measured ~100)
PROBE = 48                         # LR side of the image whose forward is measured
PROBE_MARGIN = 1.5                 # measured per-pixel peaks vary ~10 % with the size


def config_radius(cfg) -> int:
    """Receptive-field radius in LR pixels of the float graph (SPEC 6.9's rule on
    layer_specs: K // 2 per conv on the longest path, at the conv's resolution)."""
    from .models import layer_specs
    L = layer_specs(cfg)
    r = Fraction(L.head.k // 2) + sum(Fraction(c.k // 2) for pair in L.blocks for c in pair)
    r += Fraction(L.trunk.k // 2)
    f = 1
    for spec, factor in zip(L.up, cfg.upsample_factors):
        r += Fraction(spec.k // 2, f)
        f *= factor
    return math.ceil(r + Fraction(L.tail.k // 2, f))


def forward_bytes_per_pixel(upscale) -> int:
    """Bytes per LR pixel of upscale (lr uint8 -> sr uint8), measured: the peak of the
    arrays a PROBE x PROBE forward allocates (tracemalloc sees NumPy's), times
    PROBE_MARGIN. The probe runs twice and the second is measured, so that first-call
    work (compilation, caches) is not counted. The inference forward keeps a few layers
    alive, not all, so the peak follows the widest layers (SRResNet x2 16x64: 7.2-7.5 KB
    per LR pixel traced at 48 to 96 pixels a side; 8.0 KB of peak RSS at 256)."""
    probe = np.zeros((PROBE, PROBE, 3), np.uint8)
    peak = traced_peak(lambda: upscale(probe))
    return math.ceil(PROBE_MARGIN * peak / PROBE ** 2)


def image_size(path):
    """(width, height) from the file header, or None (the reader then reports the problem)."""
    try:
        from PIL import Image
        with Image.open(path) as im:
            return im.size
    except Exception:   # noqa: BLE001 - any undecodable file is read_image's to report
        return None


def check_sizes(hr_dir, scale, budget):
    """ValueError (one line) for the first image whose scoring alone exceeds the budget."""
    for path in list_images(hr_dir):
        size = image_size(path)
        if size is None:
            continue
        need = SCORE_BYTES_PER_HR_PIXEL * size[0] * size[1]
        if need > budget:
            raise ValueError(f"{path}: a {size[0]}x{size[1]} image needs about {size_text(need)} to score, "
                             f"above the memory budget of {size_text(budget)} (--memory-budget)")


def tiled_upscaler(upscale, cfg, budget, tiled_log):
    """lr (H, W, 3) uint8 -> SR uint8 by upscale (the float model of cfg), in tiles when
    the forward of the whole image would not fit the budget beside the scoring of its
    HR image. tiled_log receives the tile side of every tiled call."""
    per_px, halo, s = forward_bytes_per_pixel(upscale), config_radius(cfg), cfg.scale

    def sr_fn(lr):
        h, w = lr.shape[:2]
        room = budget - SCORE_BYTES_PER_HR_PIXEL * h * w * s * s
        if per_px * h * w <= room:
            return upscale(lr)
        side = math.isqrt(max(room, 0) // per_px) - 2 * halo
        if side < MIN_TILE:
            need = per_px * (MIN_TILE + 2 * halo) ** 2 + budget - room
            raise ValueError(f"a {w}x{h} LR image needs about {size_text(need)} even in tiles, "
                             f"above the memory budget of {size_text(budget)} (--memory-budget)")
        tiled_log.append(side)
        out = np.empty((s * h, s * w, 3), np.uint8)
        for y0 in range(0, h, side):
            y1, iy0 = min(h, y0 + side), max(0, y0 - halo)
            iy1 = min(h, y1 + halo)
            for x0 in range(0, w, side):
                x1, ix0 = min(w, x0 + side), max(0, x0 - halo)
                ix1 = min(w, x1 + halo)
                sr = np.asarray(upscale(np.ascontiguousarray(lr[iy0:iy1, ix0:ix1])))
                out[s * y0:s * y1, s * x0:s * x1] = sr[s * (y0 - iy0):s * (y1 - iy0),
                                                       s * (x0 - ix0):s * (x1 - ix0)]
        return out

    sr_fn.scale = s
    return sr_fn


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
    p.add_argument("--overwrite", action="store_true",
                   help="with --save-images: replace images of the same names already there")
    p.add_argument("--memory-budget", metavar="SIZE",
                   help="bytes a model forward and the scoring of one image may use (K/M/G "
                        "suffixes); larger forwards run in tiles; default: half the available memory")
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
    if save is not None:
        try:   # created now, so that a read-only file system is refused before any work
            os.makedirs(save, exist_ok=True)
        except OSError as exc:
            parser.error(f"--save-images {save}: cannot create the folder ({exc.strerror or exc})")
        if not os.access(save, os.W_OK | os.X_OK):
            parser.error(f"--save-images {save} is not a writable folder")
        if os.path.isdir(hr_dir) and not args.overwrite:
            try:
                existing = [out for path in list_images(hr_dir)
                            for out in metrics.saved_images(save, path, args.scale) if os.path.exists(out)]
            except ValueError:
                existing = []    # the folder's own problem is reported below
            if existing:
                parser.error(f"--save-images {save} already holds {existing[0]}"
                             f"{f' and {len(existing) - 1} more' if len(existing) > 1 else ''}; "
                             f"give --overwrite to replace them")
    tiled = []
    try:
        from .infer import parse_bytes
        budget = available_bytes() // 2 if args.memory_budget is None else parse_bytes(args.memory_budget)
        sr_fn = None
        if args.checkpoint is not None:
            from .checkpoint import load_upscaler
            sr_fn = load_upscaler(args.checkpoint)
            model_scale = getattr(sr_fn, "scale", args.scale)
            if model_scale != args.scale:
                raise ValueError(f"checkpoint {args.checkpoint} is a x{model_scale} model, "
                                 f"--scale is {args.scale}")
            if getattr(sr_fn, "config", None) is not None:
                sr_fn = tiled_upscaler(sr_fn, sr_fn.config, budget, tiled)
        if os.path.isdir(hr_dir):
            check_sizes(hr_dir, args.scale, budget)
        if args.weights is not None:
            from .importer import describe, float_upscaler, import_from_args
            imported = import_from_args(args, scale=args.scale)
            sr_fn = tiled_upscaler(float_upscaler(imported), imported.config, budget, tiled)
            sr_fn.description = describe(imported)
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
    what = "bicubic" if sr_fn is None else getattr(sr_fn, "description", args.checkpoint) + (" (self-ensemble x8)" if args.self_ensemble else "")
    print(f"{what}, x{args.scale}, {len(rows)} images from {hr_dir} (Y channel, crop {args.scale})")
    print(format_table(rows, mean, with_model=sr_fn is not None))
    if tiled:
        print(f"{len(tiled)} forward(s) ran in tiles (of {min(tiled)} LR pixels or more) to fit the memory "
              f"budget of {size_text(budget)}; tiled float forwards may differ in the last bits")
    if args.save_images:
        print(f"images written to {args.save_images}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
