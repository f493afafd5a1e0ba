"""The quantized layers every FQSR model is built from (Figure 3 of the paper).

qconv: [requantize input] -> conv with quantized (BN-folded) weight -> BN ->
       activation -> quantize output.
qadd:  Eq. 7, y = Q(x) + s * ReLU(Q(z)) (or the plain add), quantized at sc bits.

Both are forward/backward pairs; parameter gradients go into the Pass.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..ops import (batchnorm_backward, batchnorm_forward, conv2d_backward, conv2d_forward,
                   prelu_backward, prelu_forward, relu_backward, relu_forward)
from ..quant import fold_backward, fold_forward
from .graph import (Fmt, Pass, quant_backward, quant_forward, quant_sites_init, quantize_bias,
                    site_scale)


class ConvSpec(NamedTuple):
    """A conv layer of the graph.

    name: parameter prefix. act: None, "relu" or "prelu" (one shared slope, so it
    commutes with pixel shuffle). bn: followed by batch norm (then no conv bias).
    out_bits: "fm", "sc" or None (the tail: the output goes to the image quantizer).
    in_bits: the width the conv reads, "fm", or None to read its input as it comes
    (the head reading the 8-bit image codes).
    """
    name: str
    cin: int
    cout: int
    k: int
    bn: bool = False
    act: str | None = None
    out_bits: str | None = "fm"
    in_bits: str | None = "fm"


def reads_requantized(spec: ConvSpec, x_fmt: Fmt, bits: dict) -> bool:
    """A conv reads its input at fm bits: a tensor of another width is requantized
    (unless the conv reads its input as it comes, in_bits None)."""
    if spec.in_bits is None or bits[spec.in_bits] == 32:
        return False
    return x_fmt.bits != bits[spec.in_bits]


def conv_params_init(spec: ConvSpec, rng: np.random.Generator, params: dict, state: dict):
    """PyTorch-like init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / np.sqrt(spec.cin * spec.k * spec.k)
    n = spec.name
    params[n + ".w"] = rng.uniform(-bound, bound, (spec.cout, spec.cin, spec.k, spec.k))
    if spec.bn:
        params[n + ".gamma"] = np.ones(spec.cout)
        params[n + ".beta"] = np.zeros(spec.cout)
        state[n + ".bn_mean"] = np.zeros(spec.cout)
        state[n + ".bn_var"] = np.ones(spec.cout)
    else:
        params[n + ".b"] = rng.uniform(-bound, bound, spec.cout)
    if spec.act == "prelu":
        params[n + ".prelu"] = np.full(1, 0.25)


def quant_params_init(spec: ConvSpec, x_fmt: Fmt, bits: dict, params: dict, state: dict):
    """The quantizer sites of a conv: weight, output, and input where it requantizes."""
    sites = {"w": bits["wt"], "out": out_format(spec, bits).bits,
             "in": bits["fm"] if reads_requantized(spec, x_fmt, bits) else 32}
    for site, site_bits in sites.items():
        if site_bits != 32:
            quant_sites_init(f"{spec.name}.{site}", params, state)


class QConvCache(NamedTuple):
    spec: ConvSpec
    in_cache: object
    w_cache: object
    fold_cache: object
    conv_cache: object
    bn_cache: object
    act_cache: object
    out_cache: object
    in_offset: object
    pad_value: object = None


def out_format(spec: ConvSpec, bits: dict) -> Fmt:
    """Format of a conv's output tensor: ReLU outputs are unsigned."""
    if spec.out_bits is None:
        return Fmt(32, True)
    return Fmt(bits[spec.out_bits], spec.act != "relu", spec.name + ".out")


def qconv_forward(ps: Pass, spec: ConvSpec, x, x_fmt: Fmt, bits: dict, in_offset=None,
                  out_offset=None, pad_value=None):
    """x: (N, C_in, H, W) float, already carrying the codes of format x_fmt.

    bits: {"wt": .., "fm": .., "sc": ..}. The conv reads its input at fm bits: a
    tensor of another width (an sc-bit skip; the 8-bit image with requant_image) is
    requantized by a quantizer of the conv's own ("<name>.in"); one of the same
    width is read as is.
    in_offset (C_in,), out_offset (C_out,): EDSR's mean shift, folded into the bias
    as the integer model does: conv(x - m) is computed as conv(x) + b - sum(w * m),
    i.e. the zero padding is applied to x, not to x - m.
    pad_value (C_in,): the value of every tap outside the image instead of 0 (EDSR's
    head_pad "mean"), computed as conv(x - pad_value) + sum over all taps of w * pad_value
    after the bias is put on its grid, as the integer engines do (SPEC 6.8).
    Returns (y (N, C_out, H, W), cache).
    """
    p, n = ps.params, spec.name
    in_cache = None
    if reads_requantized(spec, x_fmt, bits):
        x_fmt = Fmt(bits[spec.in_bits], x_fmt.signed, n + ".in")
        x, in_cache = quant_forward(ps, n + ".in", x, x_fmt)

    fold_cache = bn_cache = None
    w, b = p[n + ".w"], p.get(n + ".b")
    fold = spec.bn and ps.fold_bn
    if fold and ps.bn_fold == "weights":
        # Quantized training folds BN into the conv with frozen statistics (Eq. 6),
        # so the weight that is quantized is the weight that is deployed.
        w, b, fold_cache = fold_bn_forward(ps, n, w, b)
    w = w.astype(x.dtype, copy=False)
    b = None if b is None else b.astype(x.dtype, copy=False)
    w_fmt = Fmt(bits["wt"], True, n + ".w")
    wq, w_cache = quant_forward(ps, n + ".w", w, w_fmt)
    channel_scale = 1.0
    if fold and ps.bn_fold == "requant":
        # BN's scale s = gamma / sigma after the quantized conv, per output channel (the
        # integer model's per-channel multiplier): Eq. 6 applied to Q(w), not to w.
        wq, b, fold_cache = fold_bn_forward(ps, n, wq, b)
        channel_scale = np.abs(fold_cache.s.astype(np.float64))
    b = fold_offsets(wq, b, in_offset, out_offset)
    s_x, s_w = site_scale(ps, x_fmt), site_scale(ps, w_fmt)
    if b is not None and s_x is not None and s_w is not None:
        # The deployed bias is an integer at the accumulator scale (times |s| per channel
        # with bn_fold "requant"); train with it (straight through: db passes unchanged,
        # no gradient to the intervals).
        bq, _ = quantize_bias(b, s_x * s_w * channel_scale)
        if ps.linearize is not None:   # gradient checks: freeze the rounding offset
            bq = b + ps.linearize.setdefault(n + ".bias", bq - b)
        b = bq

    if pad_value is not None:
        pad_value = pad_value.astype(x.dtype, copy=False)
        b = (0 if b is None else b) + np.einsum("oikl,i->o", wq, pad_value)
        x = x - pad_value.reshape(-1, 1, 1)
    y, conv_cache = conv2d_forward(x, wq, b)
    if spec.bn and not ps.fold_bn:
        y, bn_cache, mean, var = batchnorm_forward(
            y, p[n + ".gamma"].astype(y.dtype), p[n + ".beta"].astype(y.dtype),
            *bn_stats(ps, n, y.dtype), ps.training, eps=ps.bn_eps)
        if ps.training:
            ps.new_state[n + ".bn_mean"] = mean
            ps.new_state[n + ".bn_var"] = var

    act_cache = None
    if spec.act == "prelu":
        y, act_cache = prelu_forward(y, p[n + ".prelu"].astype(y.dtype))
    elif spec.act == "relu":
        y, act_cache = relu_forward(y)

    y, out_cache = quant_forward(ps, n + ".out", y, out_format(spec, bits))
    return y, QConvCache(spec, in_cache, w_cache, fold_cache, conv_cache, bn_cache,
                         act_cache, out_cache, in_offset, pad_value)


def fold_offsets(wq, b, in_offset, out_offset):
    """Bias of conv(x - in_offset) + out_offset: b - sum_{c,kh,kw} w[o,c,kh,kw]*in_offset[c] + out_offset."""
    if in_offset is None and out_offset is None:
        return b
    b = np.zeros(wq.shape[0], wq.dtype) if b is None else b
    if in_offset is not None:
        b = b - np.einsum("oikl,i->o", wq, in_offset.astype(wq.dtype))
    if out_offset is not None:
        b = b + out_offset.astype(wq.dtype)
    return b


def fold_bn_forward(ps: Pass, name: str, w, b):
    """Eq. 6 on w (C_out, ...) with the BN's frozen statistics, in w's dtype."""
    dt = w.dtype
    return fold_forward(w, b, ps.params[name + ".gamma"].astype(dt, copy=False),
                        ps.params[name + ".beta"].astype(dt, copy=False), *bn_stats(ps, name, dt),
                        ps.bn_eps)


def bn_stats(ps: Pass, name: str, dtype):
    """The running mean and variance of a BN, in the dtype of the pass."""
    return (ps.state[name + ".bn_mean"].astype(dtype, copy=False),
            ps.state[name + ".bn_var"].astype(dtype, copy=False))


def qconv_backward(ps: Pass, dy, cache: QConvCache):
    """Returns dx; adds the gradients of w, b, gamma, beta, prelu, intervals to ps."""
    n = cache.spec.name
    dy = quant_backward(ps, dy, cache.out_cache)
    if cache.spec.act == "prelu":
        dy, da = prelu_backward(dy, cache.act_cache)
        ps.add_grad(n + ".prelu", da)
    elif cache.spec.act == "relu":
        dy = relu_backward(dy, cache.act_cache)
    if cache.bn_cache is not None:
        dy, dgamma, dbeta = batchnorm_backward(dy, cache.bn_cache)
        ps.add_grad(n + ".gamma", dgamma)
        ps.add_grad(n + ".beta", dbeta)

    dx, dwq, db = conv2d_backward(dy, cache.conv_cache)
    if cache.in_offset is not None:
        dwq = dwq - db[:, None, None, None] * cache.in_offset.astype(db.dtype)[None, :, None, None]
    if cache.pad_value is not None:   # the bias term sum(w * pad_value)
        dwq = dwq + db[:, None, None, None] * cache.pad_value.astype(db.dtype)[None, :, None, None]
    requant = cache.fold_cache is not None and ps.bn_fold == "requant"
    if requant:   # the scale came after the quantizer
        dwq = fold_grads(ps, n, dwq, db, cache.fold_cache)
    dw = quant_backward(ps, dwq, cache.w_cache)
    if cache.fold_cache is not None and not requant:
        dw = fold_grads(ps, n, dw, db, cache.fold_cache)
    elif n + ".b" in ps.params:
        ps.add_grad(n + ".b", db)
    ps.add_grad(n + ".w", dw)
    return quant_backward(ps, dx, cache.in_cache)


def fold_grads(ps: Pass, name: str, dw_fold, db_fold, fold_cache):
    """Backward of fold_bn_forward: adds the gamma, beta (and conv bias) gradients, returns dw."""
    dw, db, dgamma, dbeta = fold_backward(dw_fold, db_fold, fold_cache)
    ps.add_grad(name + ".gamma", dgamma)
    ps.add_grad(name + ".beta", dbeta)
    if db is not None:
        ps.add_grad(name + ".b", db)
    return dw


class QAddCache(NamedTuple):
    site: str
    relu_cache: object
    res_scale: float
    out_cache: object


def qadd_forward(ps: Pass, site: str, skip, branch, relu: bool, res_scale: float, bits: dict):
    """Eq. 7: y = Q(x) + s * ReLU(Q(z)), or y = Q(x) + s * Q(z) without the ReLU.

    skip (= Q(x)) and branch (= Q(z)) arrive already quantized; the sum is a skip
    tensor and is quantized at sc bits (site "<site>.out").
    """
    relu_cache = None
    if relu:
        branch, relu_cache = relu_forward(branch)
    y = skip + branch * branch.dtype.type(res_scale) if res_scale != 1.0 else skip + branch
    y, out_cache = quant_forward(ps, site + ".out", y, add_format(site, bits))
    return y, QAddCache(site, relu_cache, res_scale, out_cache)


def add_format(site: str, bits: dict) -> Fmt:
    return Fmt(bits["sc"], True, site + ".out")


def qadd_backward(ps: Pass, dy, cache: QAddCache):
    """Returns (dskip, dbranch)."""
    dy = quant_backward(ps, dy, cache.out_cache)
    dbranch = dy * dy.dtype.type(cache.res_scale) if cache.res_scale != 1.0 else dy
    if cache.relu_cache is not None:
        dbranch = relu_backward(dbranch, cache.relu_cache)
    return dy, dbranch


def qadd_params_init(site: str, bits: dict, params: dict, state: dict):
    if bits["sc"] != 32:
        quant_sites_init(site + ".out", params, state)
