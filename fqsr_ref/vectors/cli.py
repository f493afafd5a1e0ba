"""Golden test vectors: every tensor of an integer-only model, written for ports.

    python -m fqsr_ref.vectors --out DIR [--checkpoint CKPT | --model VECDIR | --untrained | --corner BITS]
                               [--bits 4/4/8] [--image IMG] [--size 16] [--hdl [awkward]] [--awkward]
    python -m fqsr_ref.vectors --regenerate VECDIR [--out DIR] [--add-formats FORMATS] [--hdl] [--awkward]
    python -m fqsr_ref.vectors --check VECDIR
    python -m fqsr_ref.vectors --stream VECDIR --pe P --simd S [--tile-rows T] [--stimulus S] --out DIR

The command line (run by __main__.py): a usage error, unusable input (a manifest of
the wrong structure included) or running out of memory is one line on stderr and
exit code 2 (so is a set that would need more memory than the machine has
available, refused before any work); Ctrl-C exits 130; --check exits 1 when the rebuilt set differs from
the stored one.
"""
from __future__ import annotations

import argparse
import sys

from ..memory import available_bytes
from .build import build_vectors, estimate_bytes, regenerate
from .encodings import FORMATS
from .hdl import HDL_FORMAT
from .sources import (BUNDLED_BITS, bundled_model, corner_vector_model, from_checkpoint, read_model,
                      untrained_model)
from .stimuli import AWKWARD, DEFAULT_CROP_ORIGIN, DEFAULT_PHOTO, awkward_stimuli, default_photo, default_stimuli
from .store import check_out, compare_tree, write_tree


def build_parser():
    p = argparse.ArgumentParser(prog="python -m fqsr_ref.vectors", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="vector directory to write (replaced atomically)")
    p.add_argument("--checkpoint", help="quantized checkpoint (.npz) to convert; default: the bundled model")
    p.add_argument("--model", metavar="VECDIR",
                   help="take the integer model from this vector directory (its stimuli are not read: "
                        "the new set gets the standard ones; --regenerate keeps them)")
    p.add_argument("--untrained", action="store_true",
                   help="build the untrained tiny model of --bits (how the bundled sets were first made)")
    p.add_argument("--bits", default="4/4/8", choices=BUNDLED_BITS, help="which bundled model (default 4/4/8)")
    p.add_argument("--corner", metavar="BITS",
                   help="build the constructed corner model of BITS (fqsr_ref/corner.py: every "
                        "rounding ratio a power of two, so exact ties occur), e.g. 4/4/8 or 16/16/16")
    p.add_argument("--image", help=f"image for the natural stimulus (default: photos/{DEFAULT_PHOTO})")
    p.add_argument("--crop", default=None, help="ROW,COL of the natural crop (default: "
                   f"{DEFAULT_CROP_ORIGIN[0]},{DEFAULT_CROP_ORIGIN[1]} for the default photo, else centred)")
    p.add_argument("--size", type=int, default=16, help="natural crop side (default 16)")
    p.add_argument("--stimulus-size", type=int, default=8, help="side of the synthetic stimuli (default 8)")
    p.add_argument("--formats", default="npy,bin,hex", help="formats of the natural stimulus")
    p.add_argument("--stimulus-formats", default="bin,hex",
                   help="formats of the synthetic stimuli (default bin,hex)")
    p.add_argument("--hdl", nargs="?", const="all", choices=("all", "awkward"),
                   help="also write the hardware kit: .mem memories at the code's own width (elements, "
                        "NHWC / OHWI words, bit-plane words) and parameter headers (per op .svh, per "
                        "stimulus params.h) for the natural crop and the --awkward stimuli (the square "
                        "synthetic ones too if --stimulus-formats has mem); '--hdl awkward': for the "
                        "--awkward stimuli only, not the natural crop (a smaller set); vectors/README.md")
    p.add_argument("--awkward", action="store_true",
                   help="add the stimuli of awkward shapes: " +
                        ", ".join(f"{n} {'x'.join(map(str, s))}" for n, (s, _) in AWKWARD.items()) +
                        " (N x C x H x W)")
    p.add_argument("--regenerate", metavar="VECDIR",
                   help="rebuild VECDIR from its own model and inputs (into --out, default VECDIR); with "
                        "--hdl and --awkward it gains the kit and the awkward stimuli")
    p.add_argument("--add-formats", metavar="FORMATS", default="",
                   help="with --regenerate: formats every stimulus gains (a comma list of npy, bin, hex, "
                        "mem; mem brings hex, which the plane partials need), e.g. hex for the synthetic "
                        "stimuli of an older set")
    p.add_argument("--stream", metavar="VECDIR",
                   help="write the stream-order vectors of VECDIR into --out: every tensor as raster-order "
                        "AXI-Stream beats (--simd / --pe channels a beat, TUSER, TLAST), skip FIFO depths, "
                        "per-op .stream.svh, and with --tile-rows the strips with their halos "
                        "(vectors/README.md, 'Stream-order vectors')")
    p.add_argument("--pe", type=int, default=None, help="with --stream: channels a beat of what an op writes")
    p.add_argument("--simd", type=int, default=None, help="with --stream: channels a beat of what a conv reads")
    p.add_argument("--tile-rows", type=int, default=None, help="with --stream: strips of this many LR rows")
    p.add_argument("--stimulus", action="append", default=None,
                   help="with --stream: only this stimulus (repeatable; default every one)")
    p.add_argument("--check", metavar="VECDIR",
                   help="rebuild VECDIR in memory and compare byte for byte; exit 1 if it differs")
    return p


def parse_formats(text: str) -> tuple:
    """A comma list of formats; mem brings hex (the kit's plane partials are .hex files)."""
    formats = set(f.strip() for f in text.split(",") if f.strip())
    if not formats or not formats <= set(FORMATS + (HDL_FORMAT,)):
        raise ValueError(f"formats {text!r}: expected a comma list of {FORMATS + (HDL_FORMAT,)}")
    return tuple(sorted(formats | ({"hex"} if HDL_FORMAT in formats else set())))


# options of a new set that --regenerate (which keeps the set's own model and stimuli) cannot use
NEW_SET_ONLY = ("checkpoint", "model", "untrained", "corner", "image", "crop", "size", "stimulus_size",
                "formats", "stimulus_formats", "bits")


def check_regenerate_options(args, parser) -> None:
    given = [name for name in NEW_SET_ONLY if getattr(args, name) != parser.get_default(name)]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise ValueError(f"{flag} makes a new set; --regenerate keeps {args.regenerate}'s own model and "
                         f"stimuli (a new set from its model: --model {args.regenerate} ... --out DIR)")


def check_memory(vm, stimuli_shapes) -> None:
    """ValueError (exit 2, before any work) when the set would need more than the machine has."""
    need, have = estimate_bytes(vm.model, stimuli_shapes), available_bytes()
    if need > have:
        raise ValueError(f"vectors: this set would need about {need / 2**30:.1f} GiB of memory and "
                         f"{have / 2**30:.1f} GiB are available; use a smaller --size / --stimulus-size")


def natural_image(args):
    from ..data.images import read_image
    if args.image is None:
        image = default_photo()
        origin = DEFAULT_CROP_ORIGIN
    else:
        image = read_image(args.image)
        origin = ((image.shape[0] - args.size) // 2, (image.shape[1] - args.size) // 2)
    if args.crop is not None:
        try:
            origin = tuple(int(v) for v in args.crop.split(","))
            assert len(origin) == 2 and min(origin) >= 0
        except (ValueError, AssertionError):
            raise ValueError(f"--crop {args.crop!r}: expected ROW,COL, two integers >= 0") from None
    return image, origin


def run_stream(args) -> int:
    from .stream import STREAM_INDEX, stream_files
    if not args.out:
        raise ValueError("--stream needs --out DIR (a new directory, or one written by --stream)")
    if args.pe is None or args.simd is None:
        raise ValueError("--stream needs --pe P and --simd S (channels a beat)")
    check_out(args.out, STREAM_INDEX)
    files = stream_files(args.stream, args.pe, args.simd, args.tile_rows, args.stimulus)
    out = write_tree(args.out, files, STREAM_INDEX)
    beats = sum(text.count(b"\n") for path, text in files.items() if path.endswith(".mem"))
    print(f"wrote {out}: {sum(p.endswith('.mem') for p in files)} streams, {beats} beats, "
          f"PE {args.pe}, SIMD {args.simd}" + (f", strips of {args.tile_rows} rows" if args.tile_rows else ""))
    return 0


def run(args) -> int:
    if args.stream:
        return run_stream(args)
    if any(v is not None for v in (args.pe, args.simd, args.tile_rows, args.stimulus)):
        raise ValueError("--pe, --simd, --tile-rows and --stimulus go with --stream VECDIR")
    if args.regenerate:
        check_regenerate_options(args, build_parser())
    if args.check:
        diff = compare_tree(args.check, regenerate(args.check))
        for rel in diff:
            print(f"differs: {rel}")
        print(f"{args.check}: {'byte-identical' if not diff else f'{len(diff)} files differ'}")
        return 1 if diff else 0
    if args.add_formats and not args.regenerate:
        raise ValueError("--add-formats needs --regenerate VECDIR")
    if args.regenerate:
        check_out(args.out or args.regenerate)
        add = parse_formats(args.add_formats) if args.add_formats else ()
        files = regenerate(args.regenerate, add, hdl=args.hdl, awkward=args.awkward)
        out = write_tree(args.out or args.regenerate, files)
        kit = sum(1 for path in files if path.endswith((".mem", ".svh")))
        print(f"wrote {out}" + (f" (hardware kit: {kit} .mem and .svh files)" if kit else ""))
        return 0
    if not args.out:
        raise ValueError("--out DIR is required (or --regenerate / --check)")
    if min(args.size, args.stimulus_size) < 1:
        raise ValueError(f"--size {args.size} and --stimulus-size {args.stimulus_size} must be >= 1")
    if args.hdl == "awkward" and not args.awkward:
        raise ValueError("--hdl awkward writes the kit for the --awkward stimuli only: add --awkward")
    check_out(args.out)
    if args.checkpoint:
        vm = from_checkpoint(args.checkpoint)
    elif args.corner:
        vm = corner_vector_model(args.corner)
    elif args.untrained:
        vm = untrained_model(args.bits)
    else:
        vm = read_model(args.model) if args.model else bundled_model(args.bits)
    formats, stimulus_formats = parse_formats(args.formats), parse_formats(args.stimulus_formats)
    awkward_formats = stimulus_formats
    if args.hdl:      # the kit for the natural crop and the awkward shapes; the squares: --stimulus-formats
        if args.hdl == "all":
            formats = tuple(sorted(set(formats) | {"hex", HDL_FORMAT}))
        awkward_formats = tuple(sorted(set(stimulus_formats) | {"hex", HDL_FORMAT}))
    shapes = [((1, 3, args.size, args.size), formats)] + \
        [((1, 3, args.stimulus_size, args.stimulus_size), stimulus_formats)] * 4 + \
        ([(shape, awkward_formats) for shape, _ in AWKWARD.values()] if args.awkward else [])
    check_memory(vm, shapes)
    image, origin = natural_image(args)
    stimuli = default_stimuli(image, args.size, args.stimulus_size, formats, stimulus_formats, origin)
    if args.awkward:
        stimuli += awkward_stimuli(awkward_formats)
    out = write_tree(args.out, build_vectors(vm, stimuli))
    print(f"wrote {out}: {vm.model.config.arch} x{vm.model.config.scale} {vm.model.config.bits}, "
          f"{len(vm.model.ops)} ops, stimuli {', '.join(s.name for s in stimuli)}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory building the vectors (try a smaller --size / --stimulus-size)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
