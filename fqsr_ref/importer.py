"""Float weights of models trained elsewhere (PyTorch), read from .safetensors files.

A layout is the state-dict key names of a published PyTorch module (docs/SPEC.md 5.5):

    edsr           EDSR-PyTorch `EDSR` (sanghyun-son/EDSR-PyTorch; also the FQSR authors'
                   EDSR): sub_mean, head.0, body.<i>.body.{0,2}, body.<B>, tail.0.<2j>,
                   tail.1, add_mean; with body.<i>.body.1.weight (a one-slope PReLU
                   in every block), the authors' EDSR with --keyword PReLU
    basicsr_edsr   BasicSR `EDSR`: conv_first, body.<i>.conv{1,2}, conv_after_body,
                   upsample.<2j>, conv_last (its mean is not in the state dict)
    fqsr_srresnet  the FQSR authors' SRResNet (billhhh/FQSR `_NetG`, --keyword PReLU):
                   conv_input, relu, residual.<i>.{conv1,in1,relu,conv2,in2}, conv_mid,
                   bn_mid, upscale2x / upscale4x, conv_output; BN, PReLU, no biases
    msrresnet      BasicSR `MSRResNet`: recognised, and refused (the graph cannot express it)

Nothing is unpickled: the file is read with safetensors' NumPy API. The number of
blocks and channels (and the scale, where the upsampler shows it) come from the
shapes; every key is checked (missing, unexpected, shape, dtype, finite) and a bad
one is a ValueError of one line naming it.
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np

from .files import write_atomic
from .models.config import DIV2K_RGB_MEAN, ModelConfig
from .models.graph import Pass, cast_floats
from .models.srnet import init_model, sr_forward

LAYOUTS = ("edsr", "basicsr_edsr", "fqsr_srresnet", "msrresnet")
PREFIXES = ("module.", "model.")   # DataParallel, and wrappers that keep the net as .model

# The one command that turns a PyTorch checkpoint into a .safetensors file (run where
# PyTorch is installed). BasicSR keeps the weights under 'params_ema' or 'params'.
CONVERT_COMMAND = (
    "python -c \"import torch; from safetensors.torch import save_file; "
    "sd = torch.load('{src}', map_location='cpu', weights_only=True); "
    "sd = sd.get('params_ema', sd.get('params', sd)); "
    "save_file({{k: v.float().contiguous() if v.is_floating_point() else v.contiguous() "
    "for k, v in sd.items()}}, '{dst}')\"")

MSRRESNET_REFUSAL = ("a BasicSR MSRResNet (upconv1, conv_hr): fqsr_ref's graph cannot express it "
                     "(it has no bilinear skip from the input image, no HR conv before the last "
                     "conv, and a trunk conv with a long skip that MSRResNet lacks)")


class Imported(NamedTuple):
    """A float model read from a file: an fqsr_ref full-precision model and where it came from."""
    config: ModelConfig
    params: dict
    state: dict
    layout: str
    notes: list      # lines worth printing (e.g. the res_scale reminder)
    source: str      # "W.safetensors (edsr layout, sha256 ...)"
    quantizers: dict = {}   # with_quantizers: key prefix -> clipvals.Quantizer of the authors' model


class Entry(NamedTuple):
    key: str             # the name in the file (prefix removed)
    shape: tuple
    target: str | None   # "param:<name>", "state:<name>", or None: checked, not used
    optional: bool = False
    integer: bool = False


# ---------------------------------------------------------------------------- reading


def read_safetensors(path) -> dict:
    """name -> NumPy array of a .safetensors file; a .pth/.pt is refused with the command
    that converts it. ValueError (one line) for anything that is not such a file."""
    path = str(path)
    stem, ext = os.path.splitext(path)
    if ext.lower() in (".pth", ".pt", ".pkl", ".ckpt", ".bin", ".tar"):
        cmd = CONVERT_COMMAND.format(src=path, dst=stem + ".safetensors")
        raise ValueError(f"{path}: a PyTorch pickle is never loaded here (it can run code); "
                         f"convert it where PyTorch is installed: {cmd}")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ValueError("the safetensors package is needed to read weights: pip install safetensors") from None
    try:
        tensors = load_file(path)
    except Exception as exc:   # SafetensorError, OSError, a dtype NumPy lacks (bfloat16)
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = "; bfloat16 tensors need .float() before saving" if "bf16" in why.lower() or "bfloat" in why.lower() else ""
        raise ValueError(f"{path}: not a readable .safetensors file ({why}){hint}") from None
    if not tensors:
        raise ValueError(f"{path}: holds no tensors")
    for key, value in tensors.items():   # half precision would fail later as a wrong mean or shape
        if value.dtype.kind == "f" and value.dtype not in (np.float32, np.float64):
            raise ValueError(f"{path}: {key} is {value.dtype}; save the weights as float32 "
                             f"(.float() before save_file)")
    return tensors


def strip_prefix(tensors: dict) -> dict:
    """Remove a "module." / "model." prefix that every key carries (repeatedly)."""
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in tensors):
                tensors = {k[len(prefix):]: v for k, v in tensors.items()}
                changed = True
    return tensors


SUPPORTED = ("supported: edsr (EDSR-PyTorch / FQSR EDSR: head.0, body.<i>.body.<j>, tail.<i>), "
             "basicsr_edsr (conv_first, body.<i>.conv1, upsample.<i>, conv_last), "
             "fqsr_srresnet (conv_input, residual.<i>.conv1, upscale2x / upscale4x, conv_output)")

# Published layouts fqsr_ref's graph cannot express, each recognised by key names of its
# own (tested before the supported layouts, whose first keys some of them share).
FOREIGN = (
    ("an RCAN (EDSR-PyTorch's residual groups of channel-attention blocks)",
     r"(^|\.)conv_du\."),
    ("a SwinIR (Swin transformer layers)", r"^patch_embed\.|\.residual_group\.|relative_position"),
    ("an RRDBNet (ESRGAN / Real-ESRGAN: residual-in-residual dense blocks)",
     r"\.rdb\d\.|RRDB_trunk\.|\.RDB\d\."),
    ("a classifier (ResNet / VGG / ViT style: fc, classifier, layer<i>, features)",
     r"^(fc|classifier|head\.fc|heads?\.head)\.|^layer\d+\.\d+\.|^features\.\d+\."),
)


def key_shapes(keys, n=4) -> str:
    """The first n distinct key patterns, indices written <i>: what the keys look like."""
    seen = []
    for k in sorted(keys):
        pattern = re.sub(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)", "<i>", k)
        if pattern not in seen:
            seen.append(pattern)
    more = ", ..." if len(seen) > n else ""
    return ", ".join(seen[:n]) + more + f" ({len(seen)} patterns, {len(keys)} keys)"


def foreign_layout(keys):
    """The name of an unsupported published layout the keys belong to, or None."""
    for name, pattern in FOREIGN:
        if any(re.search(pattern, k) for k in keys):
            return name
    return None


def detect_layout(keys) -> str:
    keys = set(keys)
    foreign = foreign_layout(keys)
    if foreign is not None:
        raise ValueError(f"{foreign}, not a layout fqsr_ref imports: keys like {key_shapes(keys)}; "
                         f"{SUPPORTED}")
    if "head.0.weight" in keys:
        return "edsr"
    if "conv_input.weight" in keys:
        return "fqsr_srresnet"
    if "conv_first.weight" in keys:
        if "upconv1.weight" in keys or "conv_hr.weight" in keys:
            return "msrresnet"
        return "basicsr_edsr"
    raise ValueError(f"no known layout: keys like {key_shapes(keys)}; {SUPPORTED}")


# ---------------------------------------------------------------------------- layouts


def conv_entries(key, cout, cin, k, ours, bias=True):
    """A PyTorch Conv2d (weight OIHW, the same as fqsr_ref's) mapped to conv `ours`."""
    entries = [Entry(f"{key}.weight", (cout, cin, k, k), f"param:{ours}.w")]
    if bias:
        entries.append(Entry(f"{key}.bias", (cout,), f"param:{ours}.b"))
    return entries


def bn_entries(key, c, ours, optional=False):
    """A BatchNorm2d after conv `ours`: gamma, beta and the running statistics."""
    return [Entry(f"{key}.weight", (c,), f"param:{ours}.gamma", optional),
            Entry(f"{key}.bias", (c,), f"param:{ours}.beta", optional),
            Entry(f"{key}.running_mean", (c,), f"state:{ours}.bn_mean", optional),
            Entry(f"{key}.running_var", (c,), f"state:{ours}.bn_var", optional),
            Entry(f"{key}.num_batches_tracked", (), None, optional, integer=True)]


def highest_index(keys, prefix) -> int:
    """The largest N of keys "<prefix>.N...." (-1 if none): blocks are counted from the
    highest index, so a block with a key missing is named rather than cut off."""
    found = [k[len(prefix) + 1:].split(".")[0] for k in keys if k.startswith(prefix + ".")]
    return max((int(n) for n in found if n.isdigit()), default=-1)


def up_factors(scale):
    return (2, 2) if scale == 4 else (scale,)


def edsr_scale(tensors, key, c, x4_key):
    """Scale from an EDSR upsampler: the first conv has 4C (x2, x4 with a second
    conv at x4_key) or 9C (x3) outputs."""
    if key not in tensors:
        raise ValueError(f"missing key {key} (the upsampler)")
    n_out = tensors[key].shape[0]
    if n_out == 9 * c:
        return 3
    if n_out == 4 * c:
        return 4 if x4_key in tensors else 2
    raise ValueError(f"{key} has shape {tuple(tensors[key].shape)}: not the first conv of an x2, "
                     f"x3 or x4 upsampler for {c} channels")


def edsr_entries(c, blocks, scale, basicsr, prelu=False):
    """The keys of EDSR-PyTorch's EDSR (basicsr=False) or BasicSR's EDSR (True); prelu:
    the FQSR authors' EDSR with --keyword PReLU, body.<i>.body = conv, PReLU(1), conv."""
    names = (("conv_first", "body.{}.conv1", "body.{}.conv2", "conv_after_body", "upsample.{}", "conv_last")
             if basicsr else
             ("head.0", "body.{}.body.0", "body.{}.body.2", f"body.{blocks}", "tail.0.{}", "tail.1"))
    head, conv1, conv2, trunk, up, tail = names
    entries = [] if basicsr else [Entry("sub_mean.weight", (3, 3, 1, 1), None),
                                  Entry("sub_mean.bias", (3,), None)]
    entries += conv_entries(head, c, 3, 3, "head")
    for i in range(blocks):
        entries += conv_entries(conv1.format(i), c, c, 3, f"blocks.{i}.conv1")
        if prelu:
            entries.append(Entry(f"body.{i}.body.1.weight", (1,), f"param:blocks.{i}.conv1.prelu"))
        entries += conv_entries(conv2.format(i), c, c, 3, f"blocks.{i}.conv2")
    entries += conv_entries(trunk, c, c, 3, "trunk")
    for j, r in enumerate(up_factors(scale)):   # conv, PixelShuffle per stage: indices 0, 2
        entries += conv_entries(up.format(2 * j), c * r * r, c, 3, f"up.{j}")
    entries += conv_entries(tail, 3, c, 3, "tail")
    if not basicsr:
        entries += [Entry("add_mean.weight", (3, 3, 1, 1), None), Entry("add_mean.bias", (3,), None)]
    return entries


def fqsr_srresnet_entries(c, blocks, scale):
    """The keys of the FQSR authors' SRResNet (_NetG with --keyword PReLU): convs without
    bias, BN in the blocks and after conv_mid, one-slope PReLUs. It builds both
    upsamplers whatever the scale; the one the scale does not use is optional and ignored."""
    entries = [Entry("conv_input.weight", (c, 3, 9, 9), "param:head.w"),
               Entry("relu.weight", (1,), "param:head.prelu")]
    for i in range(blocks):
        r = f"residual.{i}"
        entries += [Entry(f"{r}.conv1.weight", (c, c, 3, 3), f"param:blocks.{i}.conv1.w")]
        entries += bn_entries(f"{r}.in1", c, f"blocks.{i}.conv1")
        entries += [Entry(f"{r}.relu.weight", (1,), f"param:blocks.{i}.conv1.prelu"),
                    Entry(f"{r}.conv2.weight", (c, c, 3, 3), f"param:blocks.{i}.conv2.w")]
        entries += bn_entries(f"{r}.in2", c, f"blocks.{i}.conv2")
    entries += [Entry("conv_mid.weight", (c, c, 3, 3), "param:trunk.w")]
    entries += bn_entries("bn_mid", c, "trunk")
    # upscale4x = conv, shuffle, PReLU, conv, shuffle, PReLU; upscale2x = conv, shuffle, PReLU
    for name, stages in (("upscale4x", 2), ("upscale2x", 1)):
        used = stages == len(up_factors(scale))
        for j in range(stages):
            entries += [Entry(f"{name}.{3 * j}.weight", (4 * c, c, 3, 3),
                              f"param:up.{j}.w" if used else None, not used),
                        Entry(f"{name}.{3 * j + 2}.weight", (1,),
                              f"param:up.{j}.prelu" if used else None, not used)]
    entries += [Entry("conv_output.weight", (3, c, 9, 9), "param:tail.w")]
    return entries


def geometry(layout, tensors, scale):
    """(channels, blocks, scale) from the shapes; `scale` (or None) is checked or used."""
    def need(key):
        if key not in tensors:
            raise ValueError(f"missing key {key} ({layout} layout)")
        return tensors[key]

    if layout == "edsr":
        c = need("head.0.weight").shape[0]
        blocks = max(highest_index(tensors, "body"), 0)   # body.<B> is the conv after the blocks
        found = edsr_scale(tensors, "tail.0.0.weight", c, "tail.0.2.weight")
    elif layout == "basicsr_edsr":
        c = need("conv_first.weight").shape[0]
        blocks = highest_index(tensors, "body") + 1
        found = edsr_scale(tensors, "upsample.0.weight", c, "upsample.2.weight")
    else:
        c = need("conv_input.weight").shape[0]
        blocks = highest_index(tensors, "residual") + 1
        if scale is None:
            raise ValueError("the fqsr_srresnet layout holds both its x2 and x4 upsamplers: "
                             "give --scale 2 or 4")
        if scale not in (2, 4):
            raise ValueError(f"--scale {scale}: the FQSR SRResNet has x2 and x4 upsamplers only")
        found = scale
    if scale is not None and scale != found:
        raise ValueError(f"an x{found} model ({layout} layout, from its upsampler), --scale is {scale}")
    return int(c), blocks, found


def edsr_block_act(layout, tensors) -> str:
    """EDSR-PyTorch's blocks hold no activation key; the authors' PReLU keyword adds
    body.<i>.body.1.weight to every block (a block lacking it is then named as missing)."""
    if layout == "edsr" and any(k.startswith("body.") and k.endswith(".body.1.weight") for k in tensors):
        return "prelu"
    return "relu"


def layout_entries(layout, c, blocks, scale, block_act="relu"):
    if layout in ("edsr", "basicsr_edsr"):
        return edsr_entries(c, blocks, scale, basicsr=layout == "basicsr_edsr", prelu=block_act == "prelu")
    return fqsr_srresnet_entries(c, blocks, scale)


def check_entries(tensors, entries, where):
    """Missing (in the model's order), unexpected, shape, dtype and finiteness."""
    known = {e.key for e in entries}
    for e in entries:
        if e.key not in tensors and not e.optional:
            raise ValueError(f"missing key {e.key} ({where})")
    for key in sorted(tensors):
        if key not in known:
            hint = ("; a quantizer of the authors' quantized model: quantize --intervals-from-clip-val "
                    "uses its clip values, or import its full-precision checkpoint"
                    if any(s in key for s in ("quant_", "clip_val", "level_num", ".iteration")) else "")
            raise ValueError(f"unexpected key {key} ({where}){hint}")
    for e in entries:
        if e.key not in tensors:
            continue
        value = tensors[e.key]
        if tuple(value.shape) != e.shape:
            raise ValueError(f"{e.key} has shape {tuple(value.shape)}, expected {e.shape} ({where})")
        kind = value.dtype.kind
        if e.integer and kind not in "iu" or not e.integer and kind != "f":
            want = "an integer" if e.integer else "a float"
            raise ValueError(f"{e.key} has dtype {value.dtype}, expected {want} tensor ({where})")
        if kind == "f" and not np.all(np.isfinite(value)):
            raise ValueError(f"{e.key} holds NaN or inf ({where})")


def edsr_pixel_range(tensors, rgb_range, where):
    """EDSR-PyTorch's MeanShift: weight I / std, bias sign * rgb_range * mean / std.
    fqsr_ref's mean shift is the DIV2K mean with std 1; rgb_range is read from sub_mean."""
    mean = np.asarray(DIV2K_RGB_MEAN, np.float64)
    for key in ("sub_mean.weight", "add_mean.weight"):
        if not np.array_equal(tensors[key].reshape(3, 3), np.eye(3)):
            raise ValueError(f"{key} is not the identity (rgb_std other than 1, 1, 1): fqsr_ref's "
                             f"mean shift has no std ({where})")
    ranges = -tensors["sub_mean.bias"].astype(np.float64) / mean
    r = float(ranges[0])
    if round(r) > 0 and abs(r - round(r)) <= 1e-5 * r:
        r = float(round(r))
    for key, sign in (("sub_mean.bias", -1), ("add_mean.bias", 1)):
        if not (r > 0 and np.allclose(tensors[key], sign * r * mean, rtol=1e-6, atol=0)):
            raise ValueError(f"{key} = {np.round(tensors[key].astype(np.float64), 4).tolist()} is not "
                             f"{'-' if sign < 0 else '+'}rgb_range x the DIV2K mean {DIV2K_RGB_MEAN}: "
                             f"another rgb_mean is not supported ({where})")
    if rgb_range is not None and rgb_range != r:
        raise ValueError(f"--rgb-range {rgb_range:g}, but sub_mean.bias says the model was trained "
                         f"with rgb_range {r:g} ({where})")
    return r


def file_digest(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_weights(path, layout="auto", scale=None, arch=None, rgb_range=None,
                   res_scale=1.0, with_quantizers=False) -> Imported:
    """Read a .safetensors file of a known layout into an fqsr_ref full-precision model.

    scale: checked against the upsampler (needed for fqsr_srresnet). arch: edsr for
    the EDSR layouts, srresnet (default), fqsr_lite or srgan for fqsr_srresnet.
    rgb_range: the pixel range the model was trained on (EDSR-PyTorch: read from
    sub_mean and checked; otherwise default 255). res_scale: EDSR's residual scaling,
    which the file does not hold (1 for EDSR-baseline, 0.1 for the full EDSR).
    with_quantizers: the file is the authors' quantized EDSR; its quantizer keys are read
    and checked (fqsr_ref.clipvals) into Imported.quantizers.
    """
    from . import clipvals

    tensors = strip_prefix(read_safetensors(path))
    quantizers = {}
    if with_quantizers:
        tensors, quant = clipvals.split_quantizer_keys(tensors)
        if not quant:
            raise ValueError(f"{path}: no quantizer keys (<module>.quant_weight.clip_val, ...): not "
                             f"the authors' quantized checkpoint; calibrate it without --intervals-from-clip-val")
    try:
        found = detect_layout(tensors)
        layout = found if layout in (None, "auto") else layout
        if layout not in LAYOUTS:
            raise ValueError(f"--layout {layout!r}: expected auto or one of {', '.join(LAYOUTS)}")
        if layout == "msrresnet" or found == "msrresnet":
            raise ValueError(f"{MSRRESNET_REFUSAL}; refused; {SUPPORTED}")
        c, blocks, scale = geometry(layout, tensors, scale)
        block_act = edsr_block_act(layout, tensors)
        where = (f"{layout} layout{', PReLU blocks' if block_act == 'prelu' else ''}, {blocks} blocks, "
                 f"{c} channels, x{scale}")
        entries = layout_entries(layout, c, blocks, scale, block_act)
        check_entries(tensors, entries, where)
        edsr = layout != "fqsr_srresnet"
        family = ("edsr",) if edsr else ("srresnet", "fqsr_lite", "srgan")
        arch = arch or family[0]
        if arch not in family:
            raise ValueError(f"--arch {arch}: the {layout} layout is {' / '.join(family)}")
        if rgb_range is not None and not rgb_range > 0:
            raise ValueError(f"--rgb-range {rgb_range:g}: must be > 0")
        if not (np.isfinite(res_scale) and res_scale > 0):
            raise ValueError(f"--res-scale {res_scale:g}: must be > 0")
        if not edsr and res_scale != 1.0:
            raise ValueError("--res-scale: the SRResNet blocks have no residual scaling")
        r = edsr_pixel_range(tensors, rgb_range, where) if layout == "edsr" else \
            float(255.0 if rgb_range is None else rgb_range)
        if with_quantizers:
            if layout != "edsr":
                raise ValueError(f"clip values are read from the authors' EDSR (edsr layout) only, "
                                 f"this is {layout}")
            quantizers = clipvals.read_quantizers(quant)
        # PyTorch's EDSRs subtract the mean before the head's zero padding: the head pads
        # with the mean's image codes (head_pad "mean", SPEC 5.1), exact up to half a code
        cfg = ModelConfig(arch=arch, scale=scale, blocks=blocks, channels=c, pixel_range=r,
                          res_scale=float(res_scale), block_act=block_act,
                          head_pad="mean" if edsr else "zero")
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    params, state = init_model(cfg, np.random.default_rng(0))
    filled = set()
    for e in entries:
        if e.target is None:
            continue
        section, name = e.target.split(":")
        (params if section == "param" else state)[name] = tensors[e.key].astype(np.float64)
        filled.add(name)
    for name in params:   # the FQSR SRResNet's convs have no bias: fqsr_ref's is zero
        if name not in filled and name.endswith(".b"):
            params[name] = np.zeros_like(params[name])
            filled.add(name)
    missed = (set(params) | set(state)) - filled
    assert not missed, f"import mapping leaves {sorted(missed)} unset"
    notes = []
    if edsr and c == 256 and blocks == 32 and res_scale == 1.0:
        notes.append("note: 32 blocks x 256 channels is the full EDSR, trained with res_scale 0.1 "
                     "(--res-scale 0.1); the file does not record it")
    source = f"{os.path.basename(str(path))} ({layout} layout, sha256 {file_digest(path)[:16]})"
    return Imported(cfg, params, state, layout, notes, source, quantizers)


# ---------------------------------------------------------------------------- export


def export_edsr(cfg: ModelConfig, params: dict, state: dict) -> dict:
    """An fqsr_ref full-precision EDSR as EDSR-PyTorch's state dict (float32, rgb_range =
    the model's pixel range): the inverse of the edsr layout's mapping."""
    if cfg.quantized or not cfg.is_edsr:
        raise ValueError(f"export: a full-precision EDSR checkpoint is needed, got {cfg.arch} {cfg.bits} "
                         f"(the FQSR SRResNet layout has no conv biases, so an fqsr_ref SRResNet does not fit it)")
    out = {}
    for e in layout_entries("edsr", cfg.channels, cfg.blocks, cfg.scale, cfg.block_act):
        if e.target is not None:
            section, name = e.target.split(":")
            out[e.key] = np.ascontiguousarray((params if section == "param" else state)[name], np.float32)
    mean = np.asarray(DIV2K_RGB_MEAN, np.float32) * np.float32(cfg.pixel_range)
    eye = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    out.update({"sub_mean.weight": eye, "sub_mean.bias": -mean,
                "add_mean.weight": eye.copy(), "add_mean.bias": mean.copy()})
    return out


def save_safetensors(path, tensors: dict, metadata: dict | None = None):
    """Write atomically (files.write_atomic: temporary file in the same folder, then rename)."""
    from safetensors.numpy import save

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = save(tensors, metadata={"format": "pt", **(metadata or {})})
    write_atomic(path, lambda f: f.write(data))


# ---------------------------------------------------------------------------- float model


def float_upscaler(imported: Imported):
    """lr_uint8 (H, W, 3) -> sr_uint8: the imported float model as PyTorch computes it
    (float32; EDSR's head zero-pads x - mean), rounded half up to 8 bits."""
    from .data.images import float_to_uint8

    cfg = imported.config
    params = cast_floats(imported.params, np.float32)
    state = cast_floats(imported.state, np.float32)

    def sr_fn(lr_uint8):
        x = (np.asarray(lr_uint8, np.float32) / np.float32(255)).transpose(2, 0, 1)[None]
        y, _ = sr_forward(Pass(params, state, cfg, torch_mean_shift=True, keep_cache=False), cfg,
                          np.ascontiguousarray(x))
        return float_to_uint8(y[0].transpose(1, 2, 0).astype(np.float64) * 255)

    sr_fn.scale = cfg.scale
    return sr_fn


def add_import_arguments(parser):
    """The options that describe a .safetensors import (shared by quantize and evaluate)."""
    parser.add_argument("--layout", default="auto", choices=("auto",) + LAYOUTS,
                        help="key layout of --weights (default %(default)s: recognised from the keys)")
    parser.add_argument("--rgb-range", type=float, default=None,
                        help="pixel range the PyTorch model was trained on (default: read from "
                             "EDSR-PyTorch's sub_mean, else 255)")
    parser.add_argument("--res-scale", type=float, default=1.0,
                        help="EDSR residual scaling, not stored in the file (default 1: "
                             "EDSR-baseline; the full EDSR uses 0.1)")
    return parser


def import_from_args(args, scale=None, arch=None, with_quantizers=False) -> Imported:
    return import_weights(args.weights, args.layout, scale, arch, args.rgb_range, args.res_scale,
                          with_quantizers)


def describe(imported: Imported) -> str:
    cfg = imported.config
    act = ", PReLU blocks" if cfg.block_act == "prelu" else ""
    return (f"{imported.source}: {cfg.arch}{act} x{cfg.scale}, {cfg.blocks} blocks, {cfg.channels} "
            f"channels, rgb_range {cfg.pixel_range:g}, res_scale {cfg.res_scale:g}")


__all__ = ["CONVERT_COMMAND", "Imported", "LAYOUTS", "add_import_arguments", "describe",
           "detect_layout", "export_edsr", "float_upscaler", "import_from_args", "import_weights",
           "read_safetensors", "save_safetensors", "strip_prefix"]
