"""Write an fqsr_ref full-precision EDSR checkpoint as a .safetensors file in
EDSR-PyTorch's layout (the inverse of `fqsr_ref.importer`'s edsr layout).

    python tools/export_safetensors.py runs/tiny/fp.npz edsr_tiny.safetensors

The file loads into EDSR-PyTorch's EDSR (n_resblocks, n_feats, scale and rgb_range
as printed; res_scale from the checkpoint) with
`model.load_state_dict(safetensors.torch.load_file(path))`, and into
`python -m fqsr_ref.quantize --weights` and `evaluate --weights`. An EDSR with PReLU
blocks (block_act prelu) is written as the FQSR authors' EDSR with --keyword PReLU
(body.<i>.body.1.weight), which EDSR-PyTorch itself does not build. Only EDSR: the
FQSR SRResNet layout has no conv biases for head, upsampler and tail. PyTorch's EDSR
subtracts the mean before its head's zero padding, so a model trained here with zero
head padding (head_pad "zero") computes slightly differently there on the border (SPEC 5.1).
Exit status 0, or 2 with one line "error: ..." on stderr.
"""
import argparse
import os
import sys

from fqsr_ref.checkpoint import load_checkpoint
from fqsr_ref.importer import export_edsr, save_safetensors


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="fqsr_ref full-precision EDSR checkpoint (.npz)")
    p.add_argument("out", help=".safetensors file to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = p.parse_args(argv)
    try:
        if not args.out.endswith(".safetensors"):
            raise ValueError(f"{args.out}: the name must end in .safetensors")
        if os.path.exists(args.out) and not args.overwrite:
            raise ValueError(f"{args.out} exists; give --overwrite to replace it")
        ckpt = load_checkpoint(args.checkpoint)
        cfg = ckpt.config
        tensors = export_edsr(cfg, ckpt.params, ckpt.state)
        save_safetensors(args.out, tensors, {"fqsr_ref_source": os.path.basename(args.checkpoint)})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {args.out} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    layout = "FQSR EDSR (--keyword PReLU)" if cfg.block_act == "prelu" else "EDSR-PyTorch"
    print(f"wrote {args.out}: {layout} layout, n_resblocks {cfg.blocks}, n_feats {cfg.channels}, "
          f"scale {cfg.scale}, rgb_range {cfg.pixel_range:g}, res_scale {cfg.res_scale:g} "
          f"({len(tensors)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
