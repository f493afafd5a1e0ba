"""One pass through a model: parameters in; output, gradients and new state out.

A `Pass` carries what a forward and its backward share: the parameters, the state
(batch-norm running statistics, DAIA records), the gradients being accumulated,
the SQCL loss, and (for the integer-agreement checks) the codes every quantizer
produced. It is not an autograd: each layer's backward is written by hand and
called by the model in reverse order; the Pass only holds the bookkeeping.

Quantizer sites. Every quantized tensor has one site, named like
"blocks.0.conv1.out"; its learnable interval is the parameter "<site>.interval"
and its DAIA record the state "<site>.daia_count" / "<site>.daia_max_sum".
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..quant import (QuantSpec, daia_active, daia_init, daia_interval, daia_observe,
                     quantize_backward, quantize_forward, sqcl_backward, sqcl_forward)
from ..quant import round_half_up
from ..quant.quantizer import levels, ste_grads


class Fmt(NamedTuple):
    """The format of a tensor flowing through the graph: its bits and signedness
    (bits = 32: not quantized) and the quantizer site whose interval sets its scale."""
    bits: int
    signed: bool
    site: str = ""


IMAGE = Fmt(8, False, "image.in")  # the image enters and leaves as 8-bit codes (interval pixel_range)
FLOAT = Fmt(32, True)


class QuantCache(NamedTuple):
    site: str
    learnable: bool
    qcache: object
    scache: object  # SQCL cache, or None when the site adds no SQCL term


class Pass:
    """Bookkeeping of one forward (+ backward) pass.

    params, state: dicts of arrays, read only (a pass never mutates them).
    cfg: the ModelConfig (signed grid, BN epsilon).
    training: batch statistics for BN, DAIA warm-up, SQCL terms.
    alpha, p: SQCL weight and norm (Eq. 8, 9). warmup: DAIA length l (Eq. 4).
    After the pass: grads (same keys as params), new_state (entries that changed),
    interval_init (site intervals that finished their DAIA warm-up in this pass),
    sqcl (alpha * sum of L_q), codes (site -> integer codes, when record_codes).
    torch_mean_shift: EDSR's head as PyTorch computes it (float models; SPEC 5.5).
    keep_cache: False for a forward that no backward follows (inference): the graph
    drops each layer's cache as it goes, so memory holds a few layers, not all.
    """

    def __init__(self, params, state, cfg, training=False, alpha=0.3, p=1, warmup=20,
                 record_codes=False, linearize=None, torch_mean_shift=False, keep_cache=True):
        self.params = params
        self.state = state
        self.grid = cfg.grid
        self.bn_eps = cfg.bn_eps
        self.pixel_range = cfg.pixel_range
        # A quantized model trains with BN folded into its conv (Eq. 6).
        self.fold_bn = cfg.quantized
        self.bn_fold = cfg.bn_fold   # into the weights, or per channel after the conv
        self.training = training
        self.alpha = alpha
        self.p = p
        self.warmup = warmup
        self.record_codes = record_codes
        self.linearize = linearize  # dict: see linearized_quantize (gradient checks)
        # EDSR's head reads x - mean zero-padded, as PyTorch's MeanShift does (float
        # models only: imported weights scored as they were trained; SPEC 5.5).
        self.torch_mean_shift = torch_mean_shift
        self.keep_cache = keep_cache
        self.grads = {}
        self.new_state = {}
        self.interval_init = {}
        self.sqcl = 0.0
        self.codes = {}

    def add_grad(self, key, g):
        """Accumulate a gradient: a parameter read twice gets the sum of both."""
        if key in self.grads:
            self.grads[key] = self.grads[key] + g
        else:
            self.grads[key] = g

    def spec(self, fmt: Fmt) -> QuantSpec:
        return QuantSpec(fmt.bits, fmt.signed, self.grid if fmt.signed else "narrow")


def quant_forward(ps: Pass, site: str, v, fmt: Fmt, learnable=True):
    """Q(v) at the site (Eq. 3), with DAIA warm-up (Eq. 4) and the SQCL term (Eq. 8).

    v: float array, any shape. Returns (Q(v), cache); bits = 32 is the identity.
    A site that is not learnable has the fixed interval pixel_range (the 8-bit image:
    code = pixel value in 0..255 when pixel_range = 255).
    """
    if fmt.bits == 32:
        return v, None
    if learnable and ps.training:
        daia = daia_record(ps, site)
        if daia_active(daia, ps.warmup):
            # DAIA (Eq. 4): pass the input through and record max|V|; after l
            # records the interval starts at their mean.
            daia = daia_observe(daia, v, site)
            ps.new_state[site + ".daia_count"] = daia["count"]
            ps.new_state[site + ".daia_max_sum"] = daia["max_sum"]
            if not daia_active(daia, ps.warmup):
                ps.interval_init[site + ".interval"] = daia_interval(daia)
            return v, None
    interval = ps.params[site + ".interval"] if learnable else ps.pixel_range
    if ps.linearize is not None:
        qv, codes, qcache = linearized_quantize(ps.linearize, site, v, interval, ps.spec(fmt))
    else:
        qv, codes, qcache = quantize_forward(v, interval, ps.spec(fmt))
    if ps.record_codes:
        ps.codes[site] = codes
    scache = None
    if learnable and ps.training and ps.alpha > 0:
        loss, scache = sqcl_forward(qv, v, ps.p)
        ps.sqcl += ps.alpha * float(loss)
    return qv, QuantCache(site, learnable, qcache, scache)


def daia_record(ps: Pass, site: str) -> dict:
    """The DAIA state (quant.daia) of a site, from its two entries in ps.state."""
    return {"count": ps.state[site + ".daia_count"], "max_sum": ps.state[site + ".daia_max_sum"]}


def linearized_quantize(base: dict, site, v, interval, spec):
    """Q linearised at its first call (for whole-model gradient checks only).

    The first pass through a site quantizes normally and records (v0, I0, Q(v0),
    dQ/dv, dQ/dI) in `base`; later passes return the first-order expansion
    Q(v0) + dQ/dv (v - v0) + dQ/dI (I - I0). Finite differences of a model built
    on it then test how the model chains the STE gradients, with no rounding jump.
    """
    if site not in base:
        qv, codes, qcache = quantize_forward(v, interval, spec)
        dq_dv, dq_di = ste_grads(v, qv, np.asarray(interval, v.dtype), spec)
        base[site] = (v.copy(), float(interval), qv, dq_dv, dq_di)
        return qv, codes, qcache
    v0, i0, qv0, dq_dv, dq_di = base[site]
    return qv0 + dq_dv * (v - v0) + dq_di * (float(interval) - i0), None, None


def quant_backward(ps: Pass, dqv, cache):
    """STE backward of quant_forward; the SQCL term's gradient reaches v and I (Eq. 9)."""
    if cache is None:
        return dqv
    dv_sqcl = 0.0
    if cache.scache is not None:
        dq_s, dv_sqcl = sqcl_backward(cache.scache, ps.alpha)
        dqv = dqv + dq_s
    dv, dinterval = quantize_backward(dqv, cache.qcache)
    if cache.learnable:
        ps.add_grad(cache.site + ".interval", np.asarray(dinterval).reshape(()))
    return dv + dv_sqcl


def cast_floats(arrays: dict, dtype) -> dict:
    """The dict with its float arrays cast to dtype (integer entries kept as they are)."""
    return {k: np.asarray(v, dtype) if np.asarray(v).dtype.kind == "f" else np.asarray(v)
            for k, v in arrays.items()}


def code_scale(interval: float, spec: QuantSpec) -> float:
    """Value of one code unit, I / n (float64); on the dorefa grid values are odd multiples."""
    return float(interval) / levels(spec)[0]


def site_scale(ps: Pass, fmt: Fmt):
    """Scale (I / n) of the codes a tensor of format fmt carries, or None when it
    carries none: full precision, or its site is still in DAIA warm-up."""
    if fmt.bits == 32:
        return None
    if fmt.site == "image.in":
        return code_scale(ps.pixel_range, ps.spec(fmt))
    if ps.training and daia_active(daia_record(ps, fmt.site), ps.warmup):
        return None
    return code_scale(ps.params[fmt.site + ".interval"].reshape(()), ps.spec(fmt))


def quantize_bias(b, acc_scale: float):
    """Bias on the accumulator grid (the integer model adds round_half_up(b / s_acc)).

    Computed in float64 so the float model and the integer conversion pick the same
    integer; the straight-through gradient passes db unchanged.
    """
    k = round_half_up(b.astype(np.float64) / acc_scale)
    return (k * acc_scale).astype(b.dtype), k.astype(np.int64)


def quant_sites_init(site: str, params: dict, state: dict):
    """Create the interval parameter and DAIA record of a site (interval 1 until DAIA sets it)."""
    params[site + ".interval"] = np.array(1.0)
    daia = daia_init()
    state[site + ".daia_count"] = daia["count"]
    state[site + ".daia_max_sum"] = daia["max_sum"]
