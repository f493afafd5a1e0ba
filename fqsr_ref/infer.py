"""python -m fqsr_ref.infer: super-resolve an image with the integer-only model.

    python -m fqsr_ref.infer --checkpoint runs/tiny/quant.npz --image in.png --out out.png

The quantized checkpoint is converted to the integer model (fqsr_ref.integer) and
run with integer arithmetic only. The default engine, int16, computes the body's
convolutions with the CPU's integer dot-product instruction (vpmaddwd, AVX2) and the
rest with exact GEMMs; --engine plain uses exact GEMMs throughout, --engine bitplane
the Numba bit-plane popcount kernel (Eq. 2). All three give the same bits.

Any image size runs in bounded memory: when the run would need more than
--memory-budget (default 1G), the image is computed in square tiles of LR pixels,
each with a halo of the model's receptive field, which gives the same bytes as the
whole-image run (docs/SPEC.md 6.9); --tile N forces tiles of N pixels.

Exit status: 0 success; 2 bad input (a checkpoint, image or --out that cannot be
used, out of memory), one line "error: ..." on stderr, checked before any work
where it can be; 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from .checkpoint import load_checkpoint
from .data.images import IMAGE_EXTENSIONS, read_image, write_image
from .integer.model import convert
from .integer.run import DEFAULT_ENGINE, ENGINES
from .integer.tiling import DEFAULT_MEMORY_BUDGET, run_image

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """'1G', '512M', '2.5G', '1000000' -> bytes (binary units); ValueError otherwise."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    try:
        value = float(t[:len(t) - len(unit)])
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"--memory-budget {text}: expected a positive size such as 1G, 512M or 2000000")
    return int(value * _UNITS[unit])


def check_out(out: str, image: str | None = None, overwrite: bool = False) -> None:
    """ValueError (one line naming --out) unless an image can be written to out: a known
    extension, not a directory, in a folder that exists and is writable; not the input
    image; an existing file only with overwrite."""
    ext = os.path.splitext(out)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"--out {out}: the extension must be one of {', '.join(IMAGE_EXTENSIONS)}")
    if os.path.isdir(out):
        raise ValueError(f"--out {out} is a directory; give an image file name")
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--out {out}: {folder} is a file, not a folder")
    if not os.path.isdir(folder):
        raise ValueError(f"--out {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: the folder {folder} is not writable")
    if image is not None and os.path.exists(out) and os.path.exists(image) and os.path.samefile(out, image):
        raise ValueError(f"--out {out} is the input image; give another file name")
    if os.path.exists(out) and not overwrite:
        raise ValueError(f"--out {out} exists; give --overwrite to replace it")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fqsr_ref.infer", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="quantized checkpoint (.npz)")
    p.add_argument("--image", required=True, help="low-resolution input image")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                   help="int16 (the CPU's vpmaddwd; the plain engine where it has no AVX2), plain "
                        "or bitplane; the same bits (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--tile", type=int, metavar="N",
                   help="compute in tiles of N x N LR pixels (same output bytes); default: only "
                        "when the image would exceed --memory-budget")
    p.add_argument("--memory-budget", default="1G", metavar="SIZE",
                   help=f"bytes a run may use before it is tiled (K/M/G suffixes; default 1G = "
                        f"{DEFAULT_MEMORY_BUDGET})")
    args = p.parse_args(argv)
    try:
        if args.tile is not None and args.tile < 1:
            raise ValueError(f"--tile {args.tile}: must be a positive number of LR pixels")
        budget = parse_bytes(args.memory_budget)
        check_out(args.out, args.image, args.overwrite)   # before any work: fail in a second, not after the image
        ckpt = load_checkpoint(args.checkpoint)
        model = convert(ckpt.config, ckpt.params, ckpt.state)
        lr = read_image(args.image)
        t0 = time.perf_counter()
        sr, tile = run_image(model, lr, args.engine, tile=args.tile, budget=budget)
        seconds = time.perf_counter() - t0
        write_image(args.out, sr)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: out of memory super-resolving {args.image} (try a smaller --tile or --memory-budget)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    cfg = ckpt.config
    print(f"{args.image} {lr.shape[1]}x{lr.shape[0]} -> {args.out} {sr.shape[1]}x{sr.shape[0]}: "
          f"integer {cfg.arch} x{cfg.scale} {cfg.bits}, {args.engine} engine, "
          f"{'whole image' if tile is None else f'tiles of {tile} LR pixels'}, {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
