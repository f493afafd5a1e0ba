"""Cost model of section 4.3: OPs and peak memory (Table 2), and module shares.

Definitions (docs/SPEC.md, section 8, says why each one is chosen and how far
Table 2 is reproduced):

- Only multiplications count. A conv with C_in inputs, C_out outputs, a K x K
  kernel and an H_out x W_out output costs MACs = C_in * K * K * C_out * H_out *
  W_out, padding included. Batch norm is folded into the conv (Eq. 6), PReLU and
  ReLU fold into requantization, the adds and pixel shuffles multiply nothing.
- A conv is low-bit when both wt and fm are below 32. Each conv reads its input
  at fm bits, except the head of a low-bit model: it reads the image as its
  8-bit codes (an 8 x wt-bit conv), or at fm bits with `requant_image=True`
  (the model's ModelConfig.requant_image; the FP model is unchanged).
- Section 4.3 writes OPs = BOPs/64 * M + FLOPs; Table 2 applies it as
  OPs = MACs * M / 64 for an M-bit layer (8/8/8 costs 1/8 of FP, 6/6/8 6/64,
  4/4/x 4/64). Per conv we take M = max(wt, bits it reads): max(wt, fm), and
  max(wt, 8) for the head. FLOPs are the MACs of the full-precision convs.
  `bops` is the usual bit-operation count, the sum over low-bit convs of
  MACs * wt * (bits it reads), reported beside it.
- The paper's uniform M is what `requant_image=True` gives; Table 2 is
  reproduced with it. By default the head's M is max(wt, 8), not max(wt, fm):
  the head costs more when wt and fm are both below 8 (less when fm is above
  both wt and 8). At 4/4/x its M is 8, not 4, so SRResNet x2 4/4/8 costs 62.987 G
  (62.315 with requant_image, Table 2: 62.314), +0.672 G = head MACs * 4/64,
  +1.08 % on the paper's figure; x4 4/4/8 23.969 -> 24.137 G (+0.168 G, +0.70 %).
  6/6/8 gains half that (x2 93.473 -> 93.809 G), 8/8/x nothing. bops of x2
  4/4/8: 15952.663 -> 16124.745 G (the head's doubles).
- Peak memory as the paper states it: the feature maps of three convolutional
  layers alive at once (the long skip, the short skip and the main trunk), each
  C x H_lr x W_lr at sc bits; one map at fm bits for SRResNet w/o M, which has
  no skip. `live_peak_bits` is a second, stricter figure: the largest sum of the
  tensors alive while any one op of the graph runs.
- Modules (Eq. 5): E is the head conv; M the residual blocks, the conv after the
  trunk and the long-skip add; R the upsampler convs and the tail conv.

The image: `lr_size` is (width, height) of the low-resolution input; Table 2
uses the DIV2K validation image, 2040x1356 at HR, so 1020x678 at x2 and 510x339
at x4 (the default for each scale).
"""
from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from typing import NamedTuple

from .models.config import parse_bits

ARCHS = ("srresnet", "srgan", "edsr", "fqsr_lite", "srresnet_wo_m")
SCALES = (2, 3, 4)
DEFAULT_BLOCKS = {"srresnet": 16, "srgan": 16, "edsr": 16, "fqsr_lite": 10, "srresnet_wo_m": 0}
DEFAULT_CHANNELS = 64
DIV2K_HR_SIZE = (2040, 1356)  # (width, height) of the image Table 2 is computed on
MODULES = ("E", "M", "R")

# Table 2 (SRResNet backbone): (arch, scale, "wt/fm/sc") -> (OPs in G, Memo in MB).
# The DoReFa 8/8/8 row has the FQSR 8/8/8 costs and SRResNet_Bin the FP costs.
PAPER_TABLE2 = {
    ("srresnet", 2, "32/32/32"): (997.018, 531.117),
    ("srresnet_wo_m", 2, "32/32/32"): (155.749, 177.039),
    ("srresnet", 2, "4/4/8"): (62.314, 132.779),
    ("srresnet", 2, "4/4/32"): (62.314, 531.117),
    ("srresnet", 2, "6/6/8"): (93.470, 132.779),
    ("srresnet", 2, "8/8/8"): (124.627, 132.779),
    ("srresnet", 2, "8/8/32"): (124.627, 531.117),
    ("fqsr_lite", 2, "6/6/8"): (63.894, 132.779),
    ("srresnet", 4, "32/32/32"): (383.487, 132.777),
    ("srresnet_wo_m", 4, "32/32/32"): (173.175, 44.260),
    ("srresnet", 4, "4/4/8"): (23.968, 33.194),
    ("srresnet", 4, "4/4/32"): (23.968, 132.777),
    ("srresnet", 4, "6/6/8"): (35.952, 33.194),
    ("srresnet", 4, "8/8/8"): (47.936, 33.194),
    ("srresnet", 4, "8/8/32"): (47.936, 132.777),
    ("fqsr_lite", 4, "6/6/8"): (28.558, 33.194),
}

# Introduction: share (%) of the FP model's multiplications in E and R together.
PAPER_SHARES_ER = {("srresnet", 2): 15.6, ("edsr", 2): 11.4,
                   ("srresnet", 4): 45.1, ("edsr", 4): 38.7}


class LayerCost(NamedTuple):
    """One op of the graph, in execution order.

    kind: "conv" or "add". module: "E", "M" or "R". For a conv, c_in/c_out/kernel
    and (out_h, out_w) are those of the conv itself (before any pixel shuffle
    that follows it); for an add they are (C, C, 0) and the operand size.
    macs: multiplications. bits: the M of OPs = MACs * M / 64, i.e.
    max(wt, read_bits) for a low-bit conv, 32 for a full-precision conv, 0 for
    an add. ops: this op's share of OPs (Fraction, exact). read_bits: the bits
    the conv reads its input at (fm; 8 for the head of a low-bit model unless
    requant_image), 0 for an add. live_bits: bits of every tensor alive while the op runs (inputs, output,
    tensors held for a later add).
    """
    name: str
    kind: str
    module: str
    c_in: int
    c_out: int
    kernel: int
    out_h: int
    out_w: int
    macs: int
    bits: int
    ops: Fraction
    live_bits: int
    read_bits: int = 0


class CostReport(NamedTuple):
    """Cost of one model on one image; exact integers, floats derived from them.

    lr_size: (width, height). bits: (wt, fm, sc). layers: tuple of LayerCost.
    macs: all multiplications; macs_by_module: {"E", "M", "R"} -> multiplications.
    flops: multiplications of full-precision convs. bops: sum over low-bit convs
    of MACs * wt * read_bits (fm; 8 for the head unless requant_image). ops:
    FLOPs + sum of MACs * M / 64, M = max(wt, read_bits) per conv (section 4.3,
    as Table 2 applies it). peak_maps, peak_memory_bits: the paper's peak memory
    (maps of C x H_lr x W_lr). live_peak_bits: the largest live set of the graph.
    requant_image: the head reads the image requantized to fm bits.
    """
    arch: str
    scale: int
    bits: tuple
    lr_size: tuple
    blocks: int
    channels: int
    layers: tuple
    macs: int
    macs_by_module: dict
    flops: int
    bops: int
    ops: Fraction
    peak_maps: int
    peak_memory_bits: int
    live_peak_bits: int
    requant_image: bool = False

    @property
    def ops_g(self) -> float:
        return float(self.ops / 10**9)

    @property
    def peak_memory_mb(self) -> float:
        return self.peak_memory_bits / 8 / 10**6

    @property
    def live_peak_mb(self) -> float:
        return self.live_peak_bits / 8 / 10**6

    def share(self, modules: str) -> float:
        """Fraction of all multiplications in the given modules, e.g. "ER"."""
        return sum(self.macs_by_module[m] for m in modules) / self.macs

    @property
    def shares(self) -> dict:
        """{"E", "M", "R"} -> fraction of all multiplications."""
        return {m: self.share(m) for m in MODULES}

    @property
    def share_er(self) -> float:
        """E and R together: the introduction's 15.6 %, 45.1 %, ..."""
        return self.share("ER")


def parse_size(text: str) -> tuple:
    """'1020x678' -> (1020, 678): width x height, both positive."""
    parts = str(text).lower().split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"cost: lr size {text!r}: expected WxH, e.g. 1020x678") from None
    if width < 1 or height < 1:
        raise ValueError(f"cost: lr size {text!r}: width and height must be >= 1")
    return width, height


def default_lr_size(scale: int) -> tuple:
    """The DIV2K image of Table 2 at this scale: 2040x1356 divided by the scale
    (rounded down, as the bicubic LR images of DIV2K are)."""
    return DIV2K_HR_SIZE[0] // scale, DIV2K_HR_SIZE[1] // scale


class _Graph:
    """The op list of a model, with the tensors each op reads and writes.

    A tensor is known by name, with its shape (C, H, W) and its bits.
    """

    def __init__(self, wt: int, fm: int, image: str, c: int, h: int, w: int, bits: int):
        # Table 2 applies OPs = MACs * M / 64 with M the layer's bit width:
        # M = max(wt, bits the conv reads) for a low-bit conv, else 32 (FLOPs).
        self.wt, self.fm = wt, fm
        self.low_bit = wt < 32 and fm < 32
        self.shapes = {}    # name -> (C, H, W)
        self.bits = {}      # name -> bits of one element
        self.ops = []       # (name, kind, module, geometry, macs, read bits, inputs, output)
        self._set(image, c, h, w, bits)

    def conv(self, name, module, src, dst, c_out, kernel, dst_bits, shuffle=1, read_bits=None):
        """A 'same' conv of src (C_in, H, W) to C_out channels; a pixel shuffle
        by `shuffle` may follow, which moves data and multiplies nothing.
        read_bits: the bits the conv reads src at (default fm)."""
        c_in, h, w = self.shapes[src]
        macs = c_in * kernel * kernel * c_out * h * w
        read_bits = self.fm if read_bits is None else read_bits
        self.ops.append((name, "conv", module, (c_in, c_out, kernel, h, w), macs, read_bits,
                         (src,), dst))
        self._set(dst, c_out // (shuffle * shuffle), h * shuffle, w * shuffle, dst_bits)

    def add(self, name, module, a, b, dst, dst_bits):
        c, h, w = self.shapes[a]
        assert self.shapes[b] == (c, h, w), f"cost graph: add {name}: {self.shapes[b]} vs {(c, h, w)}"
        self.ops.append((name, "add", module, (c, c, 0, h, w), 0, 0, (a, b), dst))
        self._set(dst, c, h, w, dst_bits)

    def _set(self, name, c, h, w, bits):
        self.shapes[name] = (c, h, w)
        self.bits[name] = bits

    def layers(self) -> list:
        """LayerCost rows with the live set of each op: a tensor lives from the
        op that writes it (or the start, for the image) to the last op that
        reads it; the final output lives to the end; nothing is done in place."""
        first = {name: -1 for name in self.shapes}
        last = dict(first)
        for i, (_, _, _, _, _, _, inputs, output) in enumerate(self.ops):
            first[output] = i
            last[output] = max(last[output], i)
            for t in inputs:
                last[t] = max(last[t], i)
        final = self.ops[-1][-1]
        last[final] = len(self.ops) - 1
        rows = []
        for i, (name, kind, module, geo, macs, read_bits, _, _) in enumerate(self.ops):
            live = sum(self.bits[t] * c * h * w for t, (c, h, w) in self.shapes.items()
                       if first[t] <= i <= last[t])
            if kind != "conv":
                bits = 0
            else:
                bits = max(self.wt, read_bits) if self.low_bit else 32
            ops = Fraction(macs * bits, 64) if bits < 32 else Fraction(macs)
            rows.append(LayerCost(name, kind, module, *geo, macs=macs, bits=bits, ops=ops,
                                  live_bits=live, read_bits=read_bits))
        return rows


def _build(arch, scale, wt, fm, sc, lr_size, blocks, channels, requant_image=False) -> _Graph:
    """The op list of one architecture, C channels, B blocks, scale s.

    SRResNet (srgan, fqsr_lite): 9x9 head 3->C (+PReLU); B blocks of conv3x3,
    BN, PReLU, conv3x3, BN, add; conv3x3 + BN after the trunk, added to the
    head output (long skip); per x2 stage conv3x3 C->4C, shuffle 2, PReLU (x3:
    one stage C->9C, shuffle 3; x4: two x2 stages); 9x9 tail C->3 at HR.
    EDSR-baseline: the same with a 3x3 head and tail, ReLU (or the authors' PReLU,
    block_act: the same cost, both fold into requantization), no BN, no upsampler
    activation. SRResNet w/o M: head, upsampler, tail. BN folds into its conv.
    The head of a low-bit model reads the image's 8-bit codes, or the image
    requantized to fm bits with requant_image; every other conv reads fm bits.
    """
    width, height = lr_size
    quantized = (wt, fm, sc) != (32, 32, 32)
    image_bits = 8 if quantized else 32  # the image enters and leaves as 8-bit codes
    edsr = arch == "edsr"
    has_m = arch != "srresnet_wo_m"
    kernel = 3 if edsr else 9
    c = channels
    stream_bits = sc if has_m else fm  # the residual stream is a skip tensor
    g = _Graph(wt, fm, "image", 3, height, width, image_bits)
    head_reads = 8 if (wt < 32 and fm < 32 and not requant_image) else fm
    g.conv("head", "E", "image", "head.out", c, kernel, stream_bits, read_bits=head_reads)
    x = "head.out"
    if has_m:
        for i in range(blocks):
            p = f"blocks.{i}"
            g.conv(f"{p}.conv1", "M", x, f"{p}.conv1.out", c, 3, fm)
            g.conv(f"{p}.conv2", "M", f"{p}.conv1.out", f"{p}.conv2.out", c, 3, fm)
            g.add(f"{p}.add", "M", x, f"{p}.conv2.out", f"{p}.out", sc)
            x = f"{p}.out"
        g.conv("trunk_conv", "M", x, "trunk_conv.out", c, 3, fm)
        g.add("long_skip.add", "M", "head.out", "trunk_conv.out", "trunk.out", sc)
        x = "trunk.out"
    for j, r in enumerate((2, 2) if scale == 4 else (scale,)):
        g.conv(f"up.{j}", "R", x, f"up.{j}.out", c * r * r, 3, fm, shuffle=r)
        x = f"up.{j}.out"
    g.conv("tail", "R", x, "sr", 3, kernel, image_bits)
    return g


def model_cost(arch: str, scale: int, bits="32/32/32", lr_size=None, blocks=None,
               channels=None, *, requant_image: bool = False) -> CostReport:
    """Multiplications, OPs and peak memory of one model on one LR image.

    arch: one of ARCHS (srgan is the SRResNet generator; fqsr_lite is SRResNet
    with 10 blocks; srresnet_wo_m is head, upsampler and tail only). scale: 2, 3
    or 4. bits: "wt/fm/sc" or a (wt, fm, sc) tuple, 32 = full precision.
    lr_size: (width, height) of the LR input, or "WxH"; default: the DIV2K
    image of Table 2 at this scale. blocks, channels: override the defaults
    (16 blocks, 10 for fqsr_lite; 64 channels). requant_image: the head of a
    low-bit model reads the image requantized to fm bits (default: its 8-bit
    codes, an 8 x wt-bit conv); True gives the paper's uniform M of Table 2.
    Raises ValueError on bad input.
    """
    if arch not in ARCHS:
        raise ValueError(f"cost: unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    if scale not in SCALES:
        raise ValueError(f"cost: scale {scale!r} not supported; expected one of {SCALES}")
    wt, fm, sc = parse_bits(bits) if isinstance(bits, str) else parse_bits("/".join(map(str, bits)))
    if lr_size is None:
        lr_size = default_lr_size(scale)
    elif isinstance(lr_size, str):
        lr_size = parse_size(lr_size)
    else:
        lr_size = parse_size("x".join(map(str, lr_size)))
    if blocks is None:
        blocks = DEFAULT_BLOCKS[arch]
    elif arch == "srresnet_wo_m" and blocks != 0:
        raise ValueError(f"cost: srresnet_wo_m has no residual blocks, got blocks = {blocks}")
    elif blocks < 0:
        raise ValueError(f"cost: blocks = {blocks} must be >= 0")
    channels = DEFAULT_CHANNELS if channels is None else channels
    if channels < 1:
        raise ValueError(f"cost: channels = {channels} must be >= 1")

    requant_image = bool(requant_image)
    layers = tuple(_build(arch, scale, wt, fm, sc, lr_size, blocks, channels,
                          requant_image).layers())
    by_module = {m: sum(r.macs for r in layers if r.module == m) for m in MODULES}
    low_bit = wt < 32 and fm < 32
    macs = sum(by_module.values())
    has_m = arch != "srresnet_wo_m"
    # Three maps with a short skip (long skip, short skip, trunk), two without
    # blocks (long skip, trunk), one when there is no skip at all.
    peak_maps = (1 + (blocks > 0) + 1) if has_m else 1
    map_bits = (sc if has_m else fm) * channels * lr_size[0] * lr_size[1]
    return CostReport(
        arch=arch, scale=scale, bits=(wt, fm, sc), lr_size=lr_size, blocks=blocks,
        channels=channels, layers=layers, macs=macs, macs_by_module=by_module,
        flops=0 if low_bit else macs,
        bops=sum(r.macs * wt * r.read_bits for r in layers if r.kind == "conv") if low_bit else 0,
        ops=sum((r.ops for r in layers), Fraction(0)),
        peak_maps=peak_maps, peak_memory_bits=peak_maps * map_bits,
        live_peak_bits=max(r.live_bits for r in layers), requant_image=requant_image)


def paper_figures(report: CostReport):
    """Table 2's (OPs G, Memo MB) for this configuration, or None when the paper
    has no such row (other arch, bits, image size, blocks or channels)."""
    if (report.lr_size != default_lr_size(report.scale) or report.channels != DEFAULT_CHANNELS
            or report.blocks != DEFAULT_BLOCKS[report.arch]):
        return None
    return PAPER_TABLE2.get((report.arch, report.scale, "/".join(map(str, report.bits))))


def format_report(report: CostReport, layers: bool = False) -> str:
    """The command line's text: totals, module shares, the paper's row if any."""
    wt, fm, sc = report.bits
    w, h = report.lr_size
    s = report.scale
    lines = [
        f"arch {report.arch}  x{s}  bits {wt}/{fm}/{sc} (wt/fm/sc)  "
        f"LR {w}x{h} -> HR {w * s}x{h * s}  blocks {report.blocks}  channels {report.channels}"
        + ("  image requantized to fm bits" if report.requant_image else ""),
        f"multiplications          {report.macs / 1e9:12.3f} G",
    ]
    names = {"E": "feature extraction", "M": "nonlinear mapping", "R": "reconstruction"}
    for m in MODULES:
        lines.append(f"  {m} {names[m]:<21}{report.macs_by_module[m] / 1e9:12.3f} G"
                     f"  {100 * report.share(m):6.2f} %")
    lines += [
        f"  E + R share of FLOPs                      {100 * report.share_er:6.2f} %",
        f"FLOPs (full-precision)   {report.flops / 1e9:12.3f} G",
        f"BOPs (MACs*wt*in bits)   {report.bops / 1e9:12.3f} G",
        f"OPs (BOPs/64*M + FLOPs)  {report.ops_g:12.3f} G",
        f"peak memory (paper)      {report.peak_memory_mb:12.3f} MB"
        f"  ({report.peak_maps} maps {report.channels}x{h}x{w})",
        f"peak memory (live set)   {report.live_peak_mb:12.3f} MB",
    ]
    paper = paper_figures(report)
    if paper is not None:
        ops_p, mem_p = paper
        lines.append(f"paper, Table 2: OPs {ops_p:.3f} G ({100 * (report.ops_g / ops_p - 1):+.4f} %), "
                     f"Memo {mem_p:.3f} MB ({100 * (report.peak_memory_mb / mem_p - 1):+.4f} %)")
        if report.arch == "fqsr_lite":
            lines.append("  (the paper costs Lite as E + R + 10/16 of the 16-block M; docs/SPEC.md, section 8)")
        if not report.requant_image and report.layers[0].bits != max(wt, fm):
            lines.append("  (the head reads the 8-bit image, M = max(wt, 8); the paper's uniform M: "
                         "--requant-image)")
    if layers:
        lines.append(f"{'op':<18}{'mod':>4}{'c_in':>6}{'c_out':>6}{'k':>3}{'out HxW':>12}"
                     f"{'MACs (G)':>11}{'M':>4}{'OPs (G)':>10}{'live (MB)':>11}")
        for r in report.layers:
            lines.append(f"{r.name:<18}{r.module:>4}{r.c_in:>6}{r.c_out:>6}{r.kernel:>3}"
                         f"{f'{r.out_h}x{r.out_w}':>12}{r.macs / 1e9:11.3f}{r.bits:>4}"
                         f"{float(r.ops) / 1e9:10.3f}{r.live_bits / 8e6:11.3f}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, no usage dump: the contract of every fqsr_ref command line.
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """Every option's help states its default (tests/test_cli_contract.py checks it)."""
    arch_blocks = ", ".join(f"{a} {b}" for a, b in DEFAULT_BLOCKS.items())
    parser = _Parser(prog="python -m fqsr_ref.cost",
                     description="OPs and peak memory of an SR model (paper, section 4.3).")
    parser.add_argument("--arch", default="srresnet", choices=ARCHS,
                        help="architecture (default %(default)s)")
    parser.add_argument("--scale", type=int, default=2, choices=SCALES,
                        help="upscaling factor (default %(default)s)")
    parser.add_argument("--bits", default="32/32/32",
                        help="wt/fm/sc, 32 = full precision (default %(default)s)")
    parser.add_argument("--blocks", type=int, default=None,
                        help=f"residual blocks (default per arch: {arch_blocks})")
    parser.add_argument("--channels", type=int, default=None,
                        help=f"feature channels (default {DEFAULT_CHANNELS})")
    parser.add_argument("--lr-size", default=None,
                        help="LR input WxH (default: DIV2K 2040x1356 divided by the scale)")
    parser.add_argument("--requant-image", action="store_true",
                        help="the head reads the image requantized to fm bits "
                             "(default: its 8-bit codes)")
    parser.add_argument("--layers", action="store_true",
                        help="also print one row per op (default: totals only)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        report = model_cost(args.arch, args.scale, args.bits, args.lr_size, args.blocks,
                            args.channels, requant_image=args.requant_image)
    except ValueError as exc:
        parser.error(str(exc))
    print(format_report(report, layers=args.layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
