"""SRResNet, FQSR_Lite, the SRGAN generator and EDSR-baseline: one skeleton.

All four are   image -> head -> [residual blocks] -> trunk conv -> + long skip
               -> upsampler (conv + pixel shuffle, per x2 or x3 stage) -> tail -> image
and differ in kernel sizes, batch norm, activations and EDSR's mean shift:

| part       | SRResNet / FQSR_Lite / SRGAN-G       | EDSR-baseline                  |
| head       | conv 9x9 3->C, PReLU                 | conv 3x3 3->C (mean shift in)  |
| block      | conv BN PReLU conv BN, add (Eq. 7)   | conv ReLU (or PReLU) conv, x res_scale, add |
| trunk      | conv 3x3, BN                         | conv 3x3                       |
| upsampler  | conv 3x3 C->C r^2, shuffle r, PReLU  | conv 3x3 C->C r^2, shuffle r   |
| tail       | conv 9x9 C->3                        | conv 3x3 C->3 (mean shift out) |

Fully quantized (Figure 2, 3): the image enters and leaves as 8-bit codes; every
conv has wt-bit weights and fm-bit inputs and outputs; the head output (the long
skip), every block input and every add output are sc-bit skip tensors.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from ..ops import pixel_shuffle_backward, pixel_shuffle_forward
from ..quant import round_half_up
from .config import DIV2K_RGB_MEAN, ModelConfig
from .discriminator import PREFIX as DISC_PREFIX
from .graph import FLOAT, IMAGE, Pass, quant_backward, quant_forward
from .layers import (ConvSpec, add_format, conv_params_init, out_format, qadd_backward, qadd_forward,
                     qadd_params_init, qconv_backward, qconv_forward, quant_params_init)


class Layers(NamedTuple):
    head: ConvSpec
    blocks: list   # [(conv1, conv2)]
    trunk: ConvSpec
    up: list       # [ConvSpec], one per upsampler stage
    tail: ConvSpec


def layer_specs(cfg: ModelConfig) -> Layers:
    c, edsr = cfg.channels, cfg.is_edsr
    body_act = cfg.block_act if edsr else "prelu"   # EDSR: ReLU, or the authors' PReLU
    return Layers(
        head=ConvSpec("head", 3, c, cfg.head_kernel, act=None if edsr else "prelu", out_bits="sc",
                      in_bits="fm" if cfg.requant_image else None),
        blocks=[(ConvSpec(f"blocks.{i}.conv1", c, c, 3, bn=not edsr, act=body_act),
                 ConvSpec(f"blocks.{i}.conv2", c, c, 3, bn=not edsr))
                for i in range(cfg.blocks)],
        trunk=ConvSpec("trunk", c, c, 3, bn=not edsr),
        up=[ConvSpec(f"up.{j}", c, c * r * r, 3, act=None if edsr else "prelu")
            for j, r in enumerate(cfg.upsample_factors)],
        tail=ConvSpec("tail", c, 3, cfg.head_kernel, out_bits=None),
    )


def conv_weight_count(cfg: ModelConfig) -> int:
    """How many conv weights a model of cfg has (the bulk of its parameters), counted
    without building anything: bounds a config from a file or a flag before its model
    is allocated. Equal to the sum over layer_specs (tested)."""
    c, k = cfg.channels, cfg.head_kernel
    return 2 * 3 * c * k * k + (2 * cfg.blocks + 1) * 9 * c * c + sum(9 * c * c * r * r for r in cfg.upsample_factors)


def bits_of(cfg: ModelConfig) -> dict:
    return {"wt": cfg.wt, "fm": cfg.fm, "sc": cfg.sc}


def input_formats(cfg: ModelConfig):
    """(spec, format of the tensor it reads) for every conv, in execution order."""
    bits, L = bits_of(cfg), layer_specs(cfg)
    image = IMAGE if cfg.quantized else FLOAT
    order = [(L.head, image)]
    skip = out_format(L.head, bits)
    for i, (conv1, conv2) in enumerate(L.blocks):
        order += [(conv1, skip), (conv2, out_format(conv1, bits))]
        skip = add_format(f"blocks.{i}.add", bits)
    order.append((L.trunk, skip))
    fmt = add_format("long_add", bits)
    for spec in L.up:
        order.append((spec, fmt))
        fmt = out_format(spec, bits)
    order.append((L.tail, fmt))
    return order


def add_sites(cfg: ModelConfig):
    return [f"blocks.{i}.add" for i in range(cfg.blocks)] + ["long_add"]


def init_model(cfg: ModelConfig, rng: np.random.Generator):
    """A fresh model: (params, state), float64 arrays keyed by name."""
    params, state = {}, {}
    for spec, _ in input_formats(cfg):
        conv_params_init(spec, rng, params, state)
    # Each residual branch (and the trunk) ends in a BN whose gamma starts at 0, so
    # the body starts as the identity (Goyal et al. 2017). The full-precision add is
    # plain, so gamma receives a gradient at the first step and the branch from the
    # second (with a ReLU on the branch, ReLU'(0) = 0 would keep it dead forever).
    for spec in residual_closers(cfg):
        params[spec.name + ".gamma"] = np.zeros(spec.cout)
    return quantize_model(params, state, cfg)


def residual_closers(cfg: ModelConfig):
    """The BN'd convs whose output is added to the residual stream."""
    L = layer_specs(cfg)
    return [spec for spec in [conv2 for _, conv2 in L.blocks] + [L.trunk] if spec.bn]


def change_pixel_range(params: dict, state: dict, cfg: ModelConfig, pixel_range: float):
    """The same model on pixels in 0..pixel_range instead of 0..cfg.pixel_range.

    Every op is positively homogeneous once BN uses its running statistics (inference,
    and quantized training, which folds BN), so scaling the image by c scales every
    tensor by c when biases, BN shifts, gammas, running means and intervals of
    activations scale by c and running variances by c^2; weights and PReLU slopes
    keep. Exact up to BN's eps (which does not scale). Returns (cfg, params, state).
    """
    c = pixel_range / cfg.pixel_range

    def factor(key):
        if key.startswith(DISC_PREFIX) or ".w." in key:   # D reads [0, 1] images; weight sites
            return 1.0
        if key.endswith(".bn_var"):
            return c * c
        return c if key.endswith((".b", ".beta", ".gamma", ".bn_mean", ".interval",
                                  ".daia_max_sum")) else 1.0

    params = {k: v * factor(k) for k, v in params.items()}
    state = {k: v * factor(k) for k, v in state.items()}
    return dataclasses.replace(cfg, pixel_range=pixel_range), params, state


def quantized_start(fp_cfg: ModelConfig, params: dict, state: dict, cfg: ModelConfig):
    """The start of quantized fine-tuning from a full-precision model (any pixel range):
    converted to cfg's pixel range, its quantizer sites added. Returns (params, state)."""
    _, params, state = change_pixel_range(params, state, fp_cfg, cfg.pixel_range)
    return quantize_model(params, state, cfg)


def quantize_model(params: dict, state: dict, cfg: ModelConfig):
    """Add the quantizer sites of cfg (none at 32/32/32) to a model, its weights kept:
    the start of quantized fine-tuning. Returns new (params, state)."""
    params, state = dict(params), dict(state)
    bits = bits_of(cfg)
    for spec, x_fmt in input_formats(cfg):
        quant_params_init(spec, x_fmt, bits, params, state)
    for site in add_sites(cfg):
        qadd_params_init(site, bits, params, state)
    return params, state


def mean_offset(cfg: ModelConfig, dtype):
    """EDSR's mean shift in the graph's pixel units, or None."""
    if not cfg.is_edsr:
        return None
    return (np.asarray(DIV2K_RGB_MEAN, np.float64) * cfg.pixel_range).astype(dtype)


def head_pad_codes(cfg: ModelConfig):
    """The image codes EDSR's head reads outside the image with head_pad "mean":
    round_half_up(255 m) per channel (114, 111, 103), or None (zero padding)."""
    if cfg.head_pad != "mean":
        return None
    return tuple(int(v) for v in round_half_up(np.asarray(DIV2K_RGB_MEAN, np.float64) * 255))


def head_pad_value(cfg: ModelConfig, dtype):
    """head_pad_codes in the graph's pixel units (code * R / 255), or None."""
    codes = head_pad_codes(cfg)
    if codes is None:
        return None
    return (np.asarray(codes, np.float64) * (cfg.pixel_range / 255)).astype(dtype)


def kept(ps: Pass, out):
    """An op's (value, cache), the cache dropped when no backward will read it."""
    return out if ps.keep_cache else (out[0], None)


class SRCache(NamedTuple):
    image_in: object
    head: object
    blocks: list     # [(conv1, conv2, add)]
    trunk: object
    long_add: object
    up: list         # [(conv, shuffle)]
    tail: object
    image_out: object


def sr_forward(ps: Pass, cfg: ModelConfig, x):
    """x: (N, 3, H, W) float in [0, 1] -> (sr (N, 3, sH, sW) in [0, 1], cache).

    Inside, the graph works on pixels in 0..pixel_range (the authors' rgb_range).
    With ps.keep_cache False the cache is None and each layer's is freed as soon as
    the next runs.
    """
    bits, L = bits_of(cfg), layer_specs(cfg)
    m = mean_offset(cfg, x.dtype)
    image = IMAGE if cfg.quantized else FLOAT
    pixels = x.dtype.type(cfg.pixel_range)

    x, c_in = kept(ps, quant_forward(ps, "image.in", x * pixels, image, learnable=False))
    if m is not None and ps.torch_mean_shift:
        # PyTorch's MeanShift: the head reads x - m with zero padding (a float model
        # only; the integer head folds m into its bias, SPEC 5.1). Backward unchanged.
        if cfg.quantized:
            raise ValueError("torch_mean_shift: a float model only; quantized EDSR folds the mean")
        h, c_head = kept(ps, qconv_forward(ps, L.head, x - m.reshape(3, 1, 1), image, bits))
    else:
        h, c_head = kept(ps, qconv_forward(ps, L.head, x, image, bits, in_offset=m,
                                           pad_value=head_pad_value(cfg, x.dtype)))
    s, s_fmt, c_blocks = h, out_format(L.head, bits), []
    for i, (conv1, conv2) in enumerate(L.blocks):
        t, c1 = kept(ps, qconv_forward(ps, conv1, s, s_fmt, bits))
        z, c2 = kept(ps, qconv_forward(ps, conv2, t, out_format(conv1, bits), bits))
        s, ca = kept(ps, qadd_forward(ps, f"blocks.{i}.add", s, z, cfg.add_relu, cfg.res_scale, bits))
        s_fmt = add_format(f"blocks.{i}.add", bits)
        c_blocks.append((c1, c2, ca))
    z, c_trunk = kept(ps, qconv_forward(ps, L.trunk, s, s_fmt, bits))
    u, c_long = kept(ps, qadd_forward(ps, "long_add", h, z, False, 1.0, bits))

    fmt, c_up = add_format("long_add", bits), []
    for spec, r in zip(L.up, cfg.upsample_factors):
        u, cu = kept(ps, qconv_forward(ps, spec, u, fmt, bits))
        u, cs = kept(ps, pixel_shuffle_forward(u, r))   # moves codes, never changes them
        fmt = out_format(spec, bits)
        c_up.append((cu, cs))
    y, c_tail = kept(ps, qconv_forward(ps, L.tail, u, fmt, bits, out_offset=m))
    y, c_out = kept(ps, quant_forward(ps, "image.out", y, image, learnable=False))
    if not ps.keep_cache:
        return y / pixels, None
    return y / pixels, SRCache(c_in, c_head, c_blocks, c_trunk, c_long, c_up, c_tail, c_out)


def sr_backward(ps: Pass, dy, cache: SRCache):
    """The forward in reverse; returns d(input image). Parameter gradients go to ps.grads."""
    pixels = dy.dtype.type(ps.pixel_range)
    dy = quant_backward(ps, dy / pixels, cache.image_out)
    du = qconv_backward(ps, dy, cache.tail)
    for cu, cs in reversed(cache.up):
        du = pixel_shuffle_backward(du, cs)
        du = qconv_backward(ps, du, cu)
    dh_long, dz = qadd_backward(ps, du, cache.long_add)
    ds = qconv_backward(ps, dz, cache.trunk)
    for c1, c2, ca in reversed(cache.blocks):
        ds_skip, dz = qadd_backward(ps, ds, ca)
        dt = qconv_backward(ps, dz, c2)
        ds = ds_skip + qconv_backward(ps, dt, c1)   # the block input feeds conv1 and the add
    dh = ds + dh_long                                # the head output also feeds the long skip
    dx = qconv_backward(ps, dh, cache.head)
    return quant_backward(ps, dx, cache.image_in) * pixels
