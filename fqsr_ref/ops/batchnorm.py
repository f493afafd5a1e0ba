"""Batch normalisation over (N, H, W) per channel, training and evaluation mode.

Training:   mu = mean(x), var = mean((x - mu)^2)  (biased, over M = N*H*W values)
            y = gamma * (x - mu) / sqrt(var + eps) + beta
            running_mean' = (1 - momentum) * running_mean + momentum * mu
            running_var'  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)
Evaluation: y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta,
            running statistics returned unchanged.
This is PyTorch's BatchNorm2d. Running statistics are returned as new arrays,
never updated in place. Folding BN into the conv (Eq. 6) lives in quant.
"""
from typing import NamedTuple

import numpy as np

from ._checks import check_float, check_rank

AXES = (0, 2, 3)


class BatchNormCache(NamedTuple):
    x_hat: np.ndarray     # (N, C, H, W) normalised input
    inv_std: np.ndarray   # (C,) 1 / sqrt(var + eps) of the statistics used
    gamma: np.ndarray     # (C,)
    training: bool


def _per_channel(v):
    return v.reshape(1, -1, 1, 1)


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training,
                      momentum=0.1, eps=1e-5):
    """x: (N, C, H, W); gamma, beta, running_mean, running_var: (C,); one float dtype.

    training: True uses batch statistics (and needs M = N*H*W >= 2 for the
    unbiased running variance), False uses the running statistics.
    Returns (y, cache, new_running_mean, new_running_var).
    """
    op = "batchnorm"
    dtype = check_float(op, x=x, gamma=gamma, beta=beta,
                        running_mean=running_mean, running_var=running_var)
    check_rank(op, "x", x, 4, "4-D (N, C, H, W)")
    c = x.shape[1]
    for name, v in (("gamma", gamma), ("beta", beta),
                    ("running_mean", running_mean), ("running_var", running_var)):
        if v.shape != (c,):
            raise ValueError(f"{op}: {name} must be ({c},) for x {x.shape}, got {v.shape}")
    m = x.shape[0] * x.shape[2] * x.shape[3]
    if training:
        if m < 2:
            raise ValueError(f"{op}: training needs more than one value per channel, "
                             f"x {x.shape}")
        mean = x.mean(axis=AXES)
        centred = x - _per_channel(mean)
        var = (centred * centred).mean(axis=AXES)
        new_mean = ((1 - momentum) * running_mean + momentum * mean).astype(dtype)
        new_var = ((1 - momentum) * running_var + momentum * var * (m / (m - 1))).astype(dtype)
    else:
        centred = x - _per_channel(running_mean)
        var = running_var
        new_mean, new_var = running_mean.copy(), running_var.copy()
    inv_std = (1 / np.sqrt(var + dtype.type(eps))).astype(dtype)
    x_hat = centred * _per_channel(inv_std)
    y = _per_channel(gamma) * x_hat + _per_channel(beta)
    return y, BatchNormCache(x_hat, inv_std, gamma, bool(training)), new_mean, new_var


def batchnorm_backward(dy, cache):
    """dy: (N, C, H, W) -> dx (N, C, H, W), dgamma (C,), dbeta (C,).

    Training mode differentiates through the batch mean and variance:
        dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat)),  g = gamma * dy
    Evaluation mode treats the running statistics as constants: dx = gamma * inv_std * dy.
    """
    x_hat, inv_std, gamma, training = cache
    check_float("batchnorm_backward", dy=dy, x_hat=x_hat)
    if dy.shape != x_hat.shape:
        raise ValueError(f"batchnorm_backward: dy {dy.shape} does not match x {x_hat.shape}")
    dbeta = dy.sum(axis=AXES)
    dgamma = (dy * x_hat).sum(axis=AXES)
    scale = _per_channel(gamma * inv_std)
    if not training:
        return scale * dy, dgamma, dbeta
    m = x_hat.shape[0] * x_hat.shape[2] * x_hat.shape[3]
    # sum(g) = gamma * dbeta and sum(g * x_hat) = gamma * dgamma, hence the reuse
    dx = scale * (dy - _per_channel(dbeta / m) - x_hat * _per_channel(dgamma / m))
    return dx, dgamma, dbeta
