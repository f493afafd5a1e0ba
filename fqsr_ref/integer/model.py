"""The integer-only model: conversion from a quantized checkpoint, and its ops.

A trained quantized model (fake-quantized floats) becomes a list of integer ops
in execution order. Every tensor is a code array with a scale s (value = code*s)
and is named after the quantizer site that made it in the float model
("head.out", "blocks.0.add.out", "image.out", ...), so the integer codes can be
compared with the float model's codes tensor by tensor.

Ops (docs/SPEC.md, "integer graph"):
  requant   codes -> codes at another width: clamp(rq(x, M, shift))
  conv      acc = conv(x, w) + bias (int32/int64); out = clamp(rq(acc, M+, shift+))
            for acc >= 0, clamp(rq(sign * acc, M-, shift-)) for acc < 0 (PReLU as two
            multipliers; sign = -1 when the slope is negative); ReLU outputs clamp at 0;
            taps outside the image read 0, or pad_value (EDSR's head with head_pad "mean")
  add       out = clamp(rrs(a * Ma + relu?(b) * Mb, n))  (Eq. 7, common shift n)
  shuffle   pixel shuffle on codes
where rq(x, M, shift) = round_half_up(x * M / 2^(31 - shift)) and rrs is the
rounding right shift (round half up), both in int64.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..models.config import ModelConfig
from ..models.graph import IMAGE, Fmt, Pass, cast_floats, code_scale, quantize_bias
from ..models.layers import bn_stats, fold_offsets, out_format, reads_requantized
from ..models.srnet import bits_of, head_pad_codes, layer_specs, mean_offset
from ..quant import QuantSpec, fold_bn, quantize_forward, round_half_up
from ..quant.quantizer import levels
from .requant import acc_bound, acc_dtype, check_op_product, code_dtype, quantize_multiplier

# The conversion computes in float64 from the stored float32 parameters (SPEC 6.8),
# so the integer model equals the float64 fake-quantized model code for code.
DTYPE = np.float64


class Tensor(NamedTuple):
    """A code tensor: value = code * scale; codes in [qmin, qmax]."""
    name: str
    bits: int
    signed: bool
    scale: float
    qmin: int
    qmax: int


class RequantOp(NamedTuple):
    kind: str          # "requant"
    name: str
    input: str
    output: str
    multiplier: int
    shift: int


class ConvOp(NamedTuple):
    kind: str          # "conv"
    name: str
    input: str
    output: str
    weight: np.ndarray  # codes (O, C, K, K), int8/int16
    w_bits: int
    bias: np.ndarray    # (O,) int32 (int64 where it does not fit), accumulator scale
    multiplier: int     # for acc >= 0
    shift: int
    neg_multiplier: int  # for acc < 0 (equal to the above without PReLU)
    neg_shift: int
    neg_sign: int       # -1: rq(-acc, M-) (a negative PReLU slope), else +1
    acc_bound: int      # proven max |acc| (fan-in x max|x| x max|w| + max|bias|)
    acc_dtype: str      # "int32" or "int64"
    pad_value: tuple | None = None  # input code of every tap outside the image, per input
    #                                 channel (EDSR's head_pad "mean"); None: 0


def engine_operand(op: ConvOp, x_bits: int, x_signed: bool):
    """(bits, signed) of the codes a zero-padding engine reads for op: a conv padding
    with codes p reads x - p (SPEC 6.8), one bit wider and signed."""
    if op.pad_value is None:
        return x_bits, x_signed
    return x_bits + 1, True


def engine_input(op: ConvOp, x: np.ndarray, channel_axis: int):
    """(codes, bias) a zero-padding engine takes for op: conv with pad value p equals
    conv_zero(x - p) + sum over all taps of w * p, so x - p (int16) and the bias plus
    that sum (int64). x: uint8/int codes with channels on channel_axis."""
    if op.pad_value is None:
        return x, op.bias
    p = np.asarray(op.pad_value, np.int16)
    shape = [1] * x.ndim
    shape[channel_axis] = p.size
    extra = np.einsum("oikl,i->o", op.weight.astype(np.int64), p.astype(np.int64))
    return x.astype(np.int16) - p.reshape(shape), op.bias.astype(np.int64) + extra


class AddOp(NamedTuple):
    kind: str          # "add"
    name: str
    input: str          # the skip Q(x)
    branch: str         # Q(z)
    output: str
    branch_relu: bool
    multiplier: int     # for the skip
    branch_multiplier: int
    shift: int          # common right shift n of both products


class ShuffleOp(NamedTuple):
    kind: str          # "shuffle"
    name: str
    input: str
    output: str
    factor: int


class IntModel(NamedTuple):
    config: ModelConfig
    tensors: dict       # name -> Tensor
    ops: list           # execution order


def tensor_of(name: str, fmt: Fmt, interval: float) -> Tensor:
    spec = QuantSpec(fmt.bits, fmt.signed)
    _, qmin, qmax = levels(spec)
    return Tensor(name, fmt.bits, fmt.signed, code_scale(interval, spec), qmin, qmax)


def signed_multiplier(real: float):
    """(M, shift, sign) with real = sign * M * 2^(shift - 31)."""
    m, shift = quantize_multiplier(abs(real))
    return m, shift, (-1 if real < 0 else 1)


def convert(cfg: ModelConfig, params: dict, state: dict) -> IntModel:
    """Integer-only model of a trained quantized checkpoint (BN folded, Eq. 6).

    Every conv must read and write quantized tensors (fm, sc < 32), with the narrow
    or unsigned grids; a ValueError says what is missing otherwise.
    """
    if not cfg.quantized or 32 in (cfg.wt, cfg.fm, cfg.sc):
        raise ValueError(f"integer conversion: model bits {cfg.bits} are not fully quantized "
                         f"(every one of wt/fm/sc must be below 32)")
    if cfg.grid != "narrow":
        raise ValueError("integer conversion: only the narrow signed grid is supported "
                         f"(model grid {cfg.grid!r})")
    if cfg.bn_fold != "weights":
        raise ValueError(f"integer conversion: bn_fold {cfg.bn_fold!r} (BN's scale per output channel "
                         f"after the conv) needs one multiplier per channel, which the integer model "
                         f"does not have; only bn_fold 'weights' converts (docs/SPEC.md 3.6)")
    pf = cast_floats(params, DTYPE)
    ps = Pass(pf, state, cfg)   # used only to read the weight spec; nothing runs
    bits, L = bits_of(cfg), layer_specs(cfg)
    tensors, ops = {}, []
    m = mean_offset(cfg, DTYPE)

    def interval(site):
        return float(pf[site + ".interval"])

    def add_tensor(t: Tensor):
        tensors[t.name] = t
        return t

    def conv(spec, x: Tensor, x_fmt: Fmt, in_offset=None, out_offset=None, pad_value=None):
        n = spec.name
        if reads_requantized(spec, x_fmt, bits):
            r = add_tensor(tensor_of(n + ".in", Fmt(bits[spec.in_bits], x_fmt.signed),
                                     interval(n + ".in")))
            mult, shift = quantize_multiplier(x.scale / r.scale)
            ops.append(RequantOp("requant", n + ".in", x.name, r.name, mult, shift))
            x = r
        w, b = pf[n + ".w"], pf.get(n + ".b")
        if spec.bn:
            w, b = fold_bn(w, b, pf[n + ".gamma"], pf[n + ".beta"],
                           *bn_stats(ps, n, DTYPE), cfg.bn_eps)
        w_spec = ps.spec(Fmt(bits["wt"], True))
        wq, w_codes, _ = quantize_forward(w, pf[n + ".w.interval"], w_spec)
        s_w = code_scale(interval(n + ".w"), w_spec)
        b = fold_offsets(wq, np.zeros(spec.cout, DTYPE) if b is None else b, in_offset, out_offset)
        s_acc = x.scale * s_w
        _, bias = quantize_bias(b, s_acc)   # the same integer the float model trains with
        out_fmt = out_format(spec, bits) if spec.out_bits else IMAGE
        y = add_tensor(tensor_of("image.out" if spec.out_bits is None else n + ".out", out_fmt,
                                 cfg.pixel_range if spec.out_bits is None else interval(n + ".out")))
        mult, shift = quantize_multiplier(s_acc / y.scale)
        neg = (mult, shift, 1)
        if spec.act == "prelu":
            neg = signed_multiplier(float(pf[n + ".prelu"][0]) * s_acc / y.scale)
        bound = acc_bound(spec.cin * spec.k * spec.k, x.bits, x.signed, bits["wt"], True,
                          int(np.abs(bias).max()))
        dtype = acc_dtype(bound)
        bias = bias.astype(np.int32 if np.abs(bias).max() < 2 ** 31 else np.int64)
        _, w_min, w_max = levels(w_spec)   # the narrow grid: 8-bit weights fit int8
        w_codes = w_codes.astype(code_dtype(w_min, w_max))
        # pad codes <= 255 = max|image code|: the bound holds for padded taps too
        ops.append(ConvOp("conv", n, x.name, y.name, w_codes, bits["wt"], bias, mult, shift,
                          *neg, bound, np.dtype(dtype).name, pad_value))
        return y, out_fmt

    image = add_tensor(Tensor("image.in", 8, False, cfg.pixel_range / 255, 0, 255))
    h, _ = conv(L.head, image, IMAGE, in_offset=m, pad_value=head_pad_codes(cfg))
    skip_fmt = Fmt(bits["sc"], True)

    def add(site, a: Tensor, b: Tensor, relu, res_scale):
        y = add_tensor(tensor_of(site + ".out", skip_fmt, interval(site + ".out")))
        ra, rb = a.scale / y.scale, res_scale * b.scale / y.scale
        big, shift = quantize_multiplier(max(ra, rb))
        # Both operands share the shift of the larger multiplier; the smaller one is
        # rounded to the same scale 2^(shift - 31) (an int32 too, as it is smaller).
        n = 31 - shift
        ma = big if ra >= rb else int(round_half_up(ra * 2.0 ** n))
        mb = big if rb > ra else int(round_half_up(rb * 2.0 ** n))
        ops.append(AddOp("add", site, a.name, b.name, y.name, relu, ma, mb, shift))
        return y

    s = h
    for i, (conv1, conv2) in enumerate(L.blocks):
        t, t_fmt = conv(conv1, s, skip_fmt)
        z, _ = conv(conv2, t, t_fmt)
        s = add(f"blocks.{i}.add", s, z, cfg.add_relu, cfg.res_scale)
    z, _ = conv(L.trunk, s, skip_fmt)
    u, fmt = add("long_add", h, z, False, 1.0), skip_fmt
    for j, (spec, r) in enumerate(zip(L.up, cfg.upsample_factors)):
        u, fmt = conv(spec, u, fmt)
        shuffled = add_tensor(u._replace(name=f"up.{j}.shuffle"))
        ops.append(ShuffleOp("shuffle", f"up.{j}.shuffle", u.name, shuffled.name, r))
        u = shuffled
    conv(L.tail, u, fmt, out_offset=m)
    for op in ops:   # the product width a port needs (SPEC 6.4): refused where no int64 rule is exact
        check_op_product(op, tensors)
    return IntModel(cfg, tensors, ops)
