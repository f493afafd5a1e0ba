"""What the SRGAN discriminator adds to the ops: the binary cross-entropy on logits
(the adversarial loss) and global average pooling.

BCE with logits, mean over the N logits z with targets t in [0, 1]:
    L = mean( -t * log sigmoid(z) - (1 - t) * log(1 - sigmoid(z)) )
      = mean( max(z, 0) - z * t + log(1 + exp(-|z|)) )
The second form is the one computed: exp never sees a positive argument, so no
logit overflows (z = +-1e4 in float32 gives the exact loss and gradient), and
log1p keeps the small tail exact. dL/dz = (sigmoid(z) - t) / N, with sigmoid
evaluated from the same exp(-|z|). This is PyTorch's BCEWithLogitsLoss.
"""
from typing import NamedTuple

import numpy as np

from ._checks import check_float, check_rank


class BCECache(NamedTuple):
    sigmoid: np.ndarray  # sigmoid(z), the logits' shape and dtype
    target: np.ndarray   # t, broadcast to the logits' shape


class PoolCache(NamedTuple):
    shape: tuple  # (N, C, H, W) of the input


def bce_logits_forward(logits, target):
    """Mean binary cross-entropy of logits against targets (the SRGAN adversarial loss).

    logits: (N,) float32/float64, N >= 1.
    target: a number in [0, 1] (1 = "real", 0 = "fake"), or an (N,) array of the
    logits' dtype with values in [0, 1] (soft labels).
    Returns (loss, cache); loss is a 0-d value of the logits' dtype.
    """
    op = "bce_logits"
    check_float(op, logits=logits)
    check_rank(op, "logits", logits, 1, "1-D (N,)")
    if logits.size == 0:
        raise ValueError(f"{op}: empty logits {logits.shape}")
    if isinstance(target, np.ndarray):
        check_float(op, logits=logits, target=target)
        if target.shape != logits.shape:
            raise ValueError(f"{op}: target {target.shape} does not match logits {logits.shape}")
        t = target
    else:
        t = np.full(logits.shape, target, dtype=logits.dtype)
    if not np.all((t >= 0) & (t <= 1)):
        bad = t[~((t >= 0) & (t <= 1))]
        raise ValueError(f"{op}: targets must lie in [0, 1], got {bad.size} outside, "
                         f"first {bad[0]!r}")
    e = np.exp(-np.abs(logits))   # in (0, 1]: never overflows
    loss = np.maximum(logits, 0) - logits * t + np.log1p(e)
    one = logits.dtype.type(1)
    sigmoid = np.where(logits >= 0, one / (one + e), e / (one + e))
    return loss.mean(dtype=logits.dtype), BCECache(sigmoid, t)


def bce_logits_backward(cache, dloss=1.0):
    """dlogits = dloss * (sigmoid(z) - t) / N, shape (N,) and dtype of the logits."""
    sigmoid, t = cache
    return (sigmoid - t) * sigmoid.dtype.type(dloss / sigmoid.size)


def global_avg_pool_forward(x):
    """Mean over the spatial axes. x: (N, C, H, W) float -> (y (N, C), cache)."""
    op = "global_avg_pool"
    check_float(op, x=x)
    check_rank(op, "x", x, 4, "4-D (N, C, H, W)")
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"{op}: empty spatial extent, x {x.shape}")
    return x.mean(axis=(2, 3), dtype=x.dtype), PoolCache(x.shape)


def global_avg_pool_backward(dy, cache):
    """dy: (N, C) -> dx (N, C, H, W) = dy / (H * W) at every pixel (a new array)."""
    n, c, h, w = cache.shape
    check_float("global_avg_pool_backward", dy=dy)
    if dy.shape != (n, c):
        raise ValueError(f"global_avg_pool_backward: dy must be {(n, c)}, got {dy.shape}")
    scaled = dy * dy.dtype.type(1.0 / (h * w))
    return np.broadcast_to(scaled[:, :, None, None], cache.shape).copy()
