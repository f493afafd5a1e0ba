"""python -m fqsr_ref.infer: super-resolve an image with the integer-only model.

    python -m fqsr_ref.infer --checkpoint runs/tiny/quant.npz --image in.png --out out.png

The quantized checkpoint is converted to the integer model (fqsr_ref.integer) and
run with integer arithmetic only; --engine bitplane computes every convolution
with the Numba bit-plane popcount kernel (Eq. 2) instead of exact GEMMs. Both give
the same bits.

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
from .integer.run import ENGINES, run_image


def check_out(out: str) -> None:
    """ValueError (one line naming --out) unless an image can be written to out: a known
    extension, not a directory, in a folder that exists and is writable."""
    ext = os.path.splitext(out)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"--out {out}: the extension must be one of {', '.join(IMAGE_EXTENSIONS)}")
    if os.path.isdir(out):
        raise ValueError(f"--out {out} is a directory; give an image file name")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ValueError(f"--out {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: the folder {folder} is not writable")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fqsr_ref.infer", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="quantized checkpoint (.npz)")
    p.add_argument("--image", required=True, help="low-resolution input image")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--engine", choices=ENGINES, default="plain")
    args = p.parse_args(argv)
    try:
        check_out(args.out)                      # before any work: fail in a second, not after the image
        ckpt = load_checkpoint(args.checkpoint)
        model = convert(ckpt.config, ckpt.params, ckpt.state)
        lr = read_image(args.image)
        t0 = time.perf_counter()
        sr = run_image(model, lr, args.engine)
        seconds = time.perf_counter() - t0
        write_image(args.out, sr)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: out of memory super-resolving {args.image} (try a smaller image)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    cfg = ckpt.config
    print(f"{args.image} {lr.shape[1]}x{lr.shape[0]} -> {args.out} {sr.shape[1]}x{sr.shape[0]}: "
          f"integer {cfg.arch} x{cfg.scale} {cfg.bits}, {args.engine} engine, {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
