"""The learned clipping values of the FQSR authors' quantized EDSR as fqsr_ref's intervals.

billhhh/FQSR quantizes with its `quantization` modules (keyword dorefa,lsq): every
custom conv holds three, `quant_activation` (tag fm: the conv's padded input),
`quant_weight` (wt) and `quant_output` (ot: conv + bias, before any activation), and
every residual add an `eltwise` whose one quantizer (registered three times, as
`quant`, `quant_x` and `quant_y`) quantizes both operands of the add. Each registers

    clip_val    the clipping value c (|c| is used): one element per tensor, or one per
                group (quant_group > 1), which fqsr_ref's one interval per tensor cannot hold
    level_num   2^bit levels
    iteration   forward calls counted; 0 for a quantizer the policy disabled (it returns
                its input before counting), so the file itself says which were on

Their forward (LSQ): t = clip(v / c, -1, 1), y = (round((t + 1) / 2 * n) / n * 2 - 1) * c
with n = level_num - 1 (the dorefa grid of SPEC 3.1), or clip(v / c, 0, 1) for a
half-range (unsigned) fm; rounding is torch.round (ties to even).

fqsr_ref quantizes each tensor once (SPEC 5.2), so each of its sites takes the clip value
of one of their quantizers (docs/SPEC.md 5.5, "Intervals from the authors' quantized
checkpoint"): the one that makes the tensor, or, where that one is off or of another
width, the one that reads it. Their other quantizers have no counterpart.
"""
from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np

QUANT_KEY = re.compile(r"^(?P<module>.+)\.(?P<q>quant_activation|quant_weight|quant_output|quant|quant_x|quant_y)"
                       r"\.(?P<field>[A-Za-z_0-9]+)$")
FIELDS = ("clip_val", "level_num", "iteration")
ROLES = {"quant_activation": "fm", "quant_weight": "wt", "quant_output": "ot", "quant": "add"}


class Quantizer(NamedTuple):
    key: str          # "<module>.<quant name>", e.g. body.0.body.0.quant_output
    role: str         # fm, wt, ot (a conv's) or add (an eltwise's)
    clip: float       # |clip_val|, in the file's pixel units (activations)
    bits: int         # log2(level_num)
    enabled: bool     # iteration > 0


def is_quantizer_key(key: str) -> bool:
    return QUANT_KEY.match(key) is not None


def split_quantizer_keys(tensors: dict):
    """(float tensors, quantizer tensors) of a state dict."""
    quant = {k: v for k, v in tensors.items() if is_quantizer_key(k)}
    return {k: v for k, v in tensors.items() if k not in quant}, quant


def one_value(tensors, key):
    value = np.asarray(tensors[key])
    if value.size != 1:
        raise ValueError(f"{key} has shape {tuple(value.shape)}: one clip value per group "
                         f"(the authors' quant_group > 1); fqsr_ref has one interval per tensor, "
                         f"so only per-tensor clip values (--wt_quant_group 1 --fm_quant_group 1, "
                         f"as in their configs) can be used")
    v = float(value.reshape(-1)[0])
    if not math.isfinite(v):
        raise ValueError(f"{key} = {v}: not finite")
    return v


def read_quantizers(quant_tensors: dict) -> dict:
    """key prefix -> Quantizer, every key checked; an eltwise's quant_x / quant_y must equal
    its quant (the authors' shared parameters; ot_independent_parameter is not supported)."""
    fields = {}
    for key in quant_tensors:
        m = QUANT_KEY.match(key)
        prefix = f"{m['module']}.{m['q']}"
        if m["field"] not in FIELDS:
            raise ValueError(f"{key}: a quantizer parameter of another method (non-uniform, "
                             f"LQ-Net, gamma, ...); only the dorefa/LSQ quantizers' clip_val, "
                             f"level_num and iteration are read")
        fields.setdefault(prefix, {})[m["field"]] = key
    out = {}
    for prefix in sorted(fields):
        for f in FIELDS:
            if f not in fields[prefix]:
                why = (" (a DoReFa quantizer without learned clip values: the authors' keyword lsq "
                       "registers clip_val)" if f == "clip_val" else "")
                raise ValueError(f"missing key {prefix}.{f}{why}")
        clip = one_value(quant_tensors, f"{prefix}.clip_val")
        levels = one_value(quant_tensors, f"{prefix}.level_num")
        iteration = one_value(quant_tensors, f"{prefix}.iteration")
        bits = int(round(math.log2(levels))) if levels >= 2 else 0
        if not (2 ** bits == levels and 1 <= bits <= 16):
            raise ValueError(f"{prefix}.level_num = {levels:g}: not 2^bit levels with bit in 1..16")
        if iteration < 0:
            raise ValueError(f"{prefix}.iteration = {iteration:g}: negative")
        enabled = iteration > 0
        if enabled and clip == 0:
            raise ValueError(f"{prefix}.clip_val = 0: an interval must be > 0")
        q = prefix.rsplit(".", 1)[1]
        out[prefix] = Quantizer(prefix, ROLES.get(q, "add"), abs(clip), bits, enabled)
    for prefix, q in out.items():
        name = prefix.rsplit(".", 1)[1]
        if name in ("quant_x", "quant_y"):
            shared = prefix.rsplit(".", 1)[0] + ".quant"
            if shared not in out or out[shared]._replace(key=prefix) != q:
                raise ValueError(f"{prefix} differs from {shared}: independent add "
                                 f"quantizers (ot_independent_parameter) are not supported")
    return {k: q for k, q in out.items() if not k.endswith((".quant_x", ".quant_y"))}


def edsr_names(blocks: int, scale: int):
    """fqsr_ref conv / add name -> the authors' module (EDSR layout, SPEC 5.5)."""
    stages = 2 if scale == 4 else 1
    convs = {"head": "head.0", "trunk": f"body.{blocks}", "tail": "tail.1"}
    for i in range(blocks):
        convs[f"blocks.{i}.conv1"] = f"body.{i}.body.0"
        convs[f"blocks.{i}.conv2"] = f"body.{i}.body.2"
    for j in range(stages):
        convs[f"up.{j}"] = f"tail.0.{2 * j}"
    adds = {f"blocks.{i}.add": f"body.{i}.eltwise" for i in range(blocks)}
    adds["long_add"] = "eltwise"
    return convs, adds


def candidates(cfg, site: str):
    """The authors' quantizers a site may take its interval from, best first: the one
    that makes the tensor, then the one that reads it (a conv's fm)."""
    convs, adds = edsr_names(cfg.blocks, cfg.scale)
    reader = {"head": "blocks.0.conv1" if cfg.blocks else "trunk", "trunk": None}
    for i in range(cfg.blocks):
        reader[f"blocks.{i}.conv1"] = f"blocks.{i}.conv2"
        reader[f"blocks.{i}.conv2"] = None                     # read by the add
        reader[f"blocks.{i}.add"] = f"blocks.{i + 1}.conv1" if i + 1 < cfg.blocks else "trunk"
    stages = 2 if cfg.scale == 4 else 1
    reader["long_add"] = "up.0"
    for j in range(stages):
        reader[f"up.{j}"] = f"up.{j + 1}" if j + 1 < stages else "tail"
    name, kind = site.rsplit(".", 1)
    if kind == "w":
        return [f"{convs[name]}.quant_weight"]
    if kind == "in":
        return [f"{convs[name]}.quant_activation"]
    made = f"{adds[name]}.quant" if name in adds else f"{convs[name]}.quant_output"
    read = reader.get(name)
    return [made] + ([f"{convs[read]}.quant_activation"] if read else [])


def site_bits(cfg, site: str) -> int:
    name, kind = site.rsplit(".", 1)
    if kind == "w":
        return cfg.wt
    if kind == "in" or name not in ("head",) and not name.endswith("add"):
        return cfg.fm
    return cfg.sc


def derived_bits(quantizers: dict) -> str:
    """wt/fm/sc of the enabled quantizers: wt of quant_weight, fm of quant_activation, sc of
    the adds' (else the head's quant_output); each role must have one width."""
    def width(role, keys=None):
        found = {q.key: q.bits for q in quantizers.values()
                 if q.enabled and q.role == role and (keys is None or q.key in keys)}
        widths = sorted(set(found.values()))
        if len(widths) > 1:
            a = next(k for k, b in found.items() if b == widths[0])
            b = next(k for k, b in found.items() if b == widths[-1])
            raise ValueError(f"{a} has {widths[0]} bits, {b} {widths[-1]}: fqsr_ref has one "
                             f"width per kind of tensor (wt/fm/sc)")
        return widths[0] if widths else None

    wt, fm, sc = width("wt"), width("fm"), width("add")
    sc = sc or width("ot", {"head.0.quant_output"})
    if wt is None or fm is None or sc is None:
        raise ValueError(f"no enabled {'quant_weight' if wt is None else 'quant_activation' if fm is None else 'eltwise or head.0.quant_output'} "
                         f"quantizer (iteration > 0): not a quantized checkpoint that trained")
    return f"{wt}/{fm}/{sc}"


def site_intervals(cfg, quantizers: dict, file_range: float):
    """{site: interval} for every learnable site of the quantized config cfg, and the
    mapping as lines "site <- key (c, bits)". Activation clips are rescaled from the
    file's pixel range to cfg's (255)."""
    sites = []
    from .models.srnet import quantize_model
    probe, _ = quantize_model({}, {}, cfg)
    sites = sorted(k[:-len(".interval")] for k in probe)
    intervals, lines = {}, []
    for site in sites:
        want = site_bits(cfg, site)
        keys = candidates(cfg, site)
        found = [quantizers[k] for k in keys if k in quantizers and quantizers[k].enabled]
        if not found:
            raise ValueError(f"no enabled quantizer for fqsr_ref's {site} (looked for "
                             f"{' or '.join(keys)} with iteration > 0)")
        same = [q for q in found if q.bits == want]
        q = (same or found)[0]
        scale = 1.0 if site.endswith(".w") else cfg.pixel_range / file_range
        intervals[site] = q.clip * scale
        note = "" if same else f", {q.bits} bits in the file: its range at {want} bits"
        lines.append(f"{site} <- {q.key}.clip_val ({q.clip:.6g}{note})")
    return intervals, lines


__all__ = ["Quantizer", "derived_bits", "is_quantizer_key", "read_quantizers", "site_intervals",
           "split_quantizer_keys"]
