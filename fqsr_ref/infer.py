"""python -m fqsr_ref.infer: super-resolve an image with the integer-only model.

    python -m fqsr_ref.infer --checkpoint runs/tiny/quant.npz --image in.png --out out.png

The quantized checkpoint is converted to the integer model (fqsr_ref.integer) and
run with integer arithmetic only; --engine bitplane computes every convolution
with the Numba bit-plane popcount kernel (Eq. 2) instead of exact GEMMs. Both give
the same bits.
"""
from __future__ import annotations

import argparse
import sys
import time

from .checkpoint import load_checkpoint
from .data.images import read_image, write_image
from .integer.model import convert
from .integer.run import ENGINES, run_image


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fqsr_ref.infer", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="quantized checkpoint (.npz)")
    p.add_argument("--image", required=True, help="low-resolution input image")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--engine", choices=ENGINES, default="plain")
    args = p.parse_args(argv)
    try:
        ckpt = load_checkpoint(args.checkpoint)
        model = convert(ckpt.config, ckpt.params, ckpt.state)
        lr = read_image(args.image)
        t0 = time.perf_counter()
        sr = run_image(model, lr, args.engine)
        seconds = time.perf_counter() - t0
        write_image(args.out, sr)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = ckpt.config
    print(f"{args.image} {lr.shape[1]}x{lr.shape[0]} -> {args.out} {sr.shape[1]}x{sr.shape[0]}: "
          f"integer {cfg.arch} x{cfg.scale} {cfg.bits}, {args.engine} engine, {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
