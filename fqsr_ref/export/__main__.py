"""python -m fqsr_ref.export: write the integer model as ONNX (bit-exact), QDQ or QONNX.

    python -m fqsr_ref.export --vectors vectors/srresnet_x2_4-4-8 --out model.onnx
    python -m fqsr_ref.export --checkpoint runs/tiny/quant.npz --format qdq --out model.qdq.onnx

The model comes from a quantized checkpoint (converted as `infer` converts it) or
from a vector directory (its model.txt and weights/ hold the whole integer model).
Height, width and batch are dynamic. --all-outputs makes every op output and conv
accumulator a graph output too, named and typed as in a vector set, so that
`python -m fqsr_ref.export.run_port` can dump a run for `python -m fqsr_ref.verify`.

Exit status: 0 written; 2 unusable input or a model the form cannot express (one
line "error: ..."); 130 interrupted. The file is written atomically; an existing
--out is replaced only with --overwrite.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import FORMATS, export_model
from ..files import write_atomic
from .common import DEFAULT_OPSET, check_opset, require_onnx


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def build_parser():
    p = _Parser(prog="python -m fqsr_ref.export", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="quantized checkpoint (.npz), as infer takes")
    src.add_argument("--vectors", metavar="DIR", help="the integer model of a vector directory")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="onnx: integer operators, bit-exact (default); qdq: QuantizeLinear/"
                        "DequantizeLinear around float Conv; qonnx: QONNX Quant nodes")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"default {DEFAULT_OPSET}")
    p.add_argument("--all-outputs", action="store_true",
                   help="every op output and conv accumulator is a graph output too")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


def check_out(out: str, overwrite: bool) -> None:
    if not out.endswith(".onnx"):
        raise ValueError(f"--out {out}: give a file name ending in .onnx")
    if os.path.isdir(out):
        raise ValueError(f"--out {out} is a directory")
    if os.path.exists(out) and not overwrite:
        raise ValueError(f"--out {out} exists; give --overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ValueError(f"--out {out}: the folder {folder} does not exist")


def load_model(args):
    """The VectorModel of --checkpoint or --vectors; a conversion error names the file."""
    from ..vectors.sources import from_checkpoint, read_model
    if args.vectors:
        return read_model(args.vectors)
    try:
        return from_checkpoint(args.checkpoint)
    except ValueError as exc:
        hint = (f"; quantize it first: python -m fqsr_ref.quantize --checkpoint {args.checkpoint} "
                f"--bits 8/8/8 --out q.npz") if "not fully quantized" in str(exc) else ""
        message = str(exc) if args.checkpoint in str(exc) else f"--checkpoint {args.checkpoint}: {exc}"
        raise ValueError(message + hint) from None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        require_onnx()
        check_opset(args.opset)
        check_out(args.out, args.overwrite)
        vm = load_model(args)
        model = export_model(vm, args.format, args.opset, args.all_outputs)
        data = model.SerializeToString()
        write_atomic(args.out, lambda f: f.write(data))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    cfg = vm.model.config
    print(f"wrote {args.out}: {args.format} form of the integer {cfg.arch} x{cfg.scale} {cfg.bits} model, "
          f"opset {args.opset}, {len(model.graph.node)} nodes, {len(model.graph.output)} outputs, "
          f"{len(data) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
