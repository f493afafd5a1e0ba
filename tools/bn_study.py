"""BN folding and weight quantization, measured by post-training quantization (issue 27, item 1).

    python tools/bn_study.py runs/srresnet_fp/fp.npz [--bits 4/4/8 8/8/8]

A full-precision SRResNet checkpoint (BN after its block convs) is quantized three ways,
each calibrated by DAIA (20 procedural batches) and scored on the bundled photographs
(mean Y PSNR, whole images):

  (a) fold, then quantize per tensor     fqsr_ref today (Eq. 6, then one interval per
                                         weight tensor); also run through the real PTQ
                                         path (quantize.calibrate on the wt-bit graph)
  (b) quantize, then scale per channel   the weights quantized unfolded, one interval per
                                         tensor (as the authors' code does), BN's scale
                                         gamma / sigma applied after the conv: what a
                                         per-channel requantization multiplier computes
  (c) fold, then quantize per channel    one interval per output channel of the folded
                                         weights
  and, as the bound all three approach, float weights with the activations quantized.

For (a)-(c) the weights are quantized here (narrow grid, round half up, interval max|w|
as DAIA sets it for weights) and the graph runs with wt = 32 on those values, BN made the
identity after folding, so that the variants differ in the weight quantization only;
activations are quantized at fm/sc by the graph itself. It also prints the spread of
gamma / sigma across the channels of each BN, the quantity issue 27 suspects.
A study script, not a test.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fqsr_ref.checkpoint import load_checkpoint, upscale  # noqa: E402
from fqsr_ref.data import photos_dir  # noqa: E402
from fqsr_ref.data.dataset import ProceduralSource  # noqa: E402
from fqsr_ref.metrics import evaluate_folder  # noqa: E402
from fqsr_ref.models import layer_specs, quantized_start  # noqa: E402
from fqsr_ref.quant import QuantSpec, fold_bn, quantize_forward  # noqa: E402
from fqsr_ref.quantize import calibrate  # noqa: E402


def bn_convs(cfg):
    L = layer_specs(cfg)
    return [s for s in [L.head, *[c for pair in L.blocks for c in pair], L.trunk, *L.up, L.tail] if s.bn]


def quantized(w, bits, axis=None):
    """Narrow-grid codes of w as values, interval max|w| per tensor or per output channel."""
    spec = QuantSpec(bits, True)
    if axis is None:
        return quantize_forward(w, np.abs(w).max(), spec)[0]
    return np.stack([quantize_forward(w[o], np.abs(w[o]).max(), spec)[0] for o in range(w.shape[0])])


def variant_params(cfg, params, state, bits, how):
    """params/state whose BN convs carry the variant's quantized folded weights and an
    identity BN; every other conv's weight quantized per tensor."""
    p, s = dict(params), dict(state)
    L = layer_specs(cfg)
    for spec in [L.head, *[c for pair in L.blocks for c in pair], L.trunk, *L.up, L.tail]:
        n = spec.name
        if not spec.bn:
            p[n + ".w"] = p[n + ".w"] if how == "float" else quantized(p[n + ".w"], bits)
            continue
        gamma, var = p[n + ".gamma"], s[n + ".bn_var"]
        w_fold, b_fold = fold_bn(p[n + ".w"], p.get(n + ".b"), gamma, p[n + ".beta"], s[n + ".bn_mean"], var,
                                 cfg.bn_eps)
        if how == "float":
            wq = w_fold
        elif how == "fold_tensor":
            wq = quantized(w_fold, bits)
        elif how == "fold_channel":
            wq = quantized(w_fold, bits, axis=0)
        else:   # quantize unfolded per tensor, then BN's per-channel scale
            scale = gamma / np.sqrt(var + cfg.bn_eps)
            wq = quantized(p[n + ".w"], bits) * scale[:, None, None, None]
        p[n + ".w"] = wq.astype(p[n + ".w"].dtype)
        p[n + ".gamma"], p[n + ".beta"] = np.ones_like(gamma), b_fold.astype(gamma.dtype)
        s[n + ".bn_mean"], s[n + ".bn_var"] = np.zeros_like(var), np.full_like(var, 1 - cfg.bn_eps)
    return p, s


def score(cfg, params, state):
    _, mean = evaluate_folder(lambda lr: upscale(cfg, params, state, lr), photos_dir(), cfg.scale)
    return mean.psnr, mean.bicubic_psnr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="full-precision SRResNet checkpoint (fp.npz)")
    ap.add_argument("--bits", nargs="+", default=["4/4/8", "8/8/8"])
    ap.add_argument("--calib-batches", type=int, default=20)
    args = ap.parse_args(argv)
    fp = load_checkpoint(args.checkpoint)
    cfg = fp.config
    print(f"{args.checkpoint}: {cfg.arch} x{cfg.scale} {cfg.blocks} blocks {cfg.channels} channels")
    print("gamma / sigma across the channels of each BN (max/min of |s|, and max|s| / median|s|):")
    for spec in bn_convs(cfg):
        s = np.abs(fp.params[spec.name + ".gamma"] / np.sqrt(fp.state[spec.name + ".bn_var"] + cfg.bn_eps))
        print(f"  {spec.name:16s} {s.max() / max(s.min(), 1e-12):10.1f} {s.max() / np.median(s):8.1f}")
    psnr_fp, bicubic = score(cfg, fp.params, fp.state)
    print(f"full precision {psnr_fp:.3f} dB, bicubic {bicubic:.3f} dB (mean Y PSNR, {photos_dir()})")
    source = ProceduralSource()
    rows = []
    for bits in args.bits:
        q_cfg = dataclasses.replace(fp.config.with_bits(bits), pixel_range=255.0)
        params, state = quantized_start(cfg, fp.params, fp.state, q_cfg)
        ptq = calibrate(q_cfg, params, state, source, args.calib_batches, 16, 48, 0)
        rows.append((bits, "(a) PTQ path: fold, per tensor", score(q_cfg, *ptq)[0]))
        w32 = dataclasses.replace(q_cfg, wt=32)
        params, state = quantized_start(cfg, fp.params, fp.state, w32)
        for how, label in (("fold_tensor", "(a) fold, per tensor"), ("unfolded_tensor", "(b) per-channel requant"),
                           ("fold_channel", "(c) fold, per channel"), ("float", "float weights (activations only)")):
            p, s = variant_params(w32, params, state, q_cfg.wt, how)
            rows.append((bits, label, score(w32, *calibrate(w32, p, s, source, args.calib_batches, 16, 48, 0))[0]))
    print(f"\n{'bits':6s} {'weights':34s} {'PSNR':>8s} {'vs FP':>8s} {'vs bicubic':>10s}")
    for bits, label, psnr in rows:
        print(f"{bits:6s} {label:34s} {psnr:8.3f} {psnr - psnr_fp:+8.3f} {psnr - bicubic:+10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
