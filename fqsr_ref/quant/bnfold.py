"""Batch-norm folding (Eq. 6) and the folded, weight-quantized conv used in quantized training.

Eq. 6 with s = gamma / sqrt(var + eps), per output channel o:
    w_fold[o] = s[o] * w[o]
    b_fold[o] = s[o] * (b[o] - mean[o]) + beta[o]          (b = 0 when the conv has none)
so conv(x, w) + b followed by BN in eval mode equals conv(x, w_fold) + b_fold.

A quantized model is fine-tuned from a full-precision checkpoint with every BN folded
from the first step: mean and var are the frozen running statistics (no gradient, never
updated), gamma and beta keep training through the fold, and the weight that gets
quantized is w_fold. The graph that trains is then the graph that is deployed.
"""
from typing import NamedTuple, Optional

import numpy as np

from ..ops.conv import conv2d_backward, conv2d_forward
from .sqcl import quantize_with_sqcl_backward, quantize_with_sqcl_forward


class FoldCache(NamedTuple):
    w: np.ndarray
    b: Optional[np.ndarray]
    mean: np.ndarray
    inv_std: np.ndarray   # 1 / sqrt(var + eps), (C_out,)
    s: np.ndarray         # gamma * inv_std, (C_out,)


def _check_fold_args(w, b, gamma, beta, mean, var, eps):
    if not isinstance(w, np.ndarray) or w.dtype not in (np.float32, np.float64) or w.ndim < 1:
        got = f"{w.shape} {w.dtype}" if isinstance(w, np.ndarray) else type(w).__name__
        raise ValueError(f"fold_bn: w must be a float32/float64 array (C_out, ...), got {got}")
    c_out = w.shape[0]
    vectors = {"gamma": gamma, "beta": beta, "mean": mean, "var": var}
    if b is not None:
        vectors["b"] = b
    for key, a in vectors.items():
        if not isinstance(a, np.ndarray) or a.shape != (c_out,) or a.dtype != w.dtype:
            got = f"{a.shape} {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
            raise ValueError(f"fold_bn: {key} must be a ({c_out},) {w.dtype} array to match "
                             f"w {w.shape}, got {got}")
    var_eps = np.asarray(var) + w.dtype.type(eps)
    if not (np.isfinite(eps) and eps >= 0) or not np.all(var_eps > 0):
        raise ValueError(f"fold_bn: need eps >= 0 and var + eps > 0, got eps={eps!r}, "
                         f"min(var + eps)={var_eps.min()!r}")
    return w, var_eps


def fold_forward(w, b, gamma, beta, mean, var, eps):
    """Eq. 6. w: (C_out, ...) float32/float64 (OIHW for a conv); b: (C_out,) or None
    (zero bias); gamma, beta, mean, var: (C_out,) of w's dtype; eps >= 0 scalar.

    Returns (w_fold like w, b_fold (C_out,), cache).
    """
    w, var_eps = _check_fold_args(w, b, gamma, beta, mean, var, eps)
    inv_std = 1 / np.sqrt(var_eps)
    s = gamma * inv_std
    per_channel = (-1,) + (1,) * (w.ndim - 1)
    w_fold = w * s.reshape(per_channel)
    b_fold = (-mean if b is None else b - mean) * s + beta
    return w_fold, b_fold, FoldCache(w, b, mean, inv_std, s)


def fold_bn(w, b, gamma, beta, mean, var, eps):
    """Eq. 6 without the cache: (w_fold, b_fold). Arguments as fold_forward."""
    w_fold, b_fold, _ = fold_forward(w, b, gamma, beta, mean, var, eps)
    return w_fold, b_fold


def fold_backward(dw_fold, db_fold, cache):
    """Backward of Eq. 6 with mean and var frozen (they get no gradient).

    dw_fold: like w; db_fold: (C_out,). Returns (dw, db, dgamma, dbeta); db is None
    when the conv had no bias.
        dw = s * dw_fold,  db = s * db_fold,  dbeta = db_fold,
        dgamma = inv_std * (sum_{i,k,l} dw_fold * w + db_fold * (b - mean))
    """
    w, b, mean, inv_std, s = cache
    per_channel = (-1,) + (1,) * (w.ndim - 1)
    dw = dw_fold * s.reshape(per_channel)
    db = None if b is None else db_fold * s
    centred_b = -mean if b is None else b - mean
    w_dot = np.sum(dw_fold * w, axis=tuple(range(1, w.ndim)))
    dgamma = inv_std * (w_dot + db_fold * centred_b)
    return dw, db, dgamma, db_fold.copy()


class FoldedConvCache(NamedTuple):
    fold: FoldCache
    quant: tuple          # QuantSqclCache of the folded weight
    conv: tuple           # cache of conv2d_forward
    w_fold: np.ndarray    # the weight before quantization, OIHW
    qw: np.ndarray        # Q(w_fold), the weight the conv used, OIHW
    codes: Optional[np.ndarray]  # int32 codes of qw (None at 32 bits)
    lq: np.floating       # SQCL term of the weight quantizer, mean |qw - w_fold|^p


def folded_conv_forward(x, w, b, gamma, beta, mean, var, eps, w_interval, w_spec,
                        stride=1, sqcl_p=1):
    """Conv with BN folded in (Eq. 6) and the folded weight quantized (Eq. 3), for training.

    x: (N, C_in, H, W); w: (C_out, C_in, K, K); b: (C_out,) or None; gamma, beta,
    mean, var: (C_out,); all one float dtype. eps: scalar. w_interval, w_spec: the
    weight quantizer (QuantSpec(32, True) passes w_fold through, e.g. during the
    DAIA warm-up, when the model observes cache.w_fold).
    y = conv2d(x, Q(w_fold), b_fold, stride). The weight's SQCL term (Eq. 8) comes in
    cache.lq; the model adds alpha * cache.lq to the loss and passes dlq=alpha to the
    backward. Returns (y, cache); cache also carries w_fold, qw and codes.
    """
    w_fold, b_fold, fcache = fold_forward(w, b, gamma, beta, mean, var, eps)
    qw, codes, lq, qcache = quantize_with_sqcl_forward(w_fold, w_interval, w_spec, sqcl_p,
                                                       name="w_fold")
    y, ccache = conv2d_forward(x, qw, b_fold, stride=stride)
    return y, FoldedConvCache(fcache, qcache, ccache, w_fold, qw, codes, lq)


def folded_conv_backward(dy, cache, dlq=0.0):
    """Gradients of sum(y * dy) + dlq * cache.lq.

    dy: like y. dlq: scalar weight of the weight's SQCL term (alpha, or 0).
    Returns dict(x=, w=, b=, gamma=, beta=, w_interval=) shaped like the inputs
    (b is None when the conv had no bias; mean and var get no gradient).
    """
    dx, dqw, db_fold = conv2d_backward(dy, cache.conv)
    dw_fold, dw_interval = quantize_with_sqcl_backward(dqw, dlq, cache.quant)
    dw, db, dgamma, dbeta = fold_backward(dw_fold, db_fold, cache.fold)
    return {"x": dx, "w": dw, "b": db, "gamma": dgamma, "beta": dbeta,
            "w_interval": dw_interval}
