"""Batch normalisation over (N, H, W) per channel, training and evaluation mode.

Training:   mu = mean(x), var = mean((x - mu)^2)  (biased, over M = N*H*W values)
            y = gamma * (x - mu) / sqrt(var + eps) + beta
            running_mean' = (1 - momentum) * running_mean + momentum * mu
            running_var'  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)
Evaluation: y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta,
            running statistics returned unchanged.
This is PyTorch's BatchNorm2d. Running statistics are returned as new arrays,
never updated in place. Folding BN into the conv (Eq. 6) lives in quant.

batchnorm_forward/backward run compiled one-pass kernels (ops._fused): the
statistics and parameter gradients are summed in float64, and every element goes
through the same operations as in the plain NumPy twins batchnorm_forward_reference
and batchnorm_backward_reference (tests compare the two).
"""
from typing import NamedTuple

import numpy as np

from . import _fused
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
    dtype = _check(x, gamma, beta, running_mean, running_var, training)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    x3 = _fused.as_ncm(x)
    if training:
        mean, var = (s.astype(dtype) for s in _fused.bn_moments(x3))
        new_mean = ((1 - momentum) * running_mean + momentum * mean).astype(dtype)
        new_var = ((1 - momentum) * running_var + momentum * var * (m / (m - 1))).astype(dtype)
        shift = mean
    else:
        shift, var = running_mean, running_var
        new_mean, new_var = running_mean.copy(), running_var.copy()
    inv_std = (1 / np.sqrt(var + dtype.type(eps))).astype(dtype)
    x_hat, y = np.empty_like(x3), np.empty_like(x3)
    _fused.bn_normalize(x3, shift, inv_std, np.ascontiguousarray(gamma),
                        np.ascontiguousarray(beta), x_hat, y)
    return (y.reshape(x.shape), BatchNormCache(x_hat.reshape(x.shape), inv_std, gamma,
                                               bool(training)), new_mean, new_var)


def _check(x, gamma, beta, running_mean, running_var, training):
    op = "batchnorm"
    dtype = check_float(op, x=x, gamma=gamma, beta=beta,
                        running_mean=running_mean, running_var=running_var)
    check_rank(op, "x", x, 4, "4-D (N, C, H, W)")
    c = x.shape[1]
    for name, v in (("gamma", gamma), ("beta", beta),
                    ("running_mean", running_mean), ("running_var", running_var)):
        if v.shape != (c,):
            raise ValueError(f"{op}: {name} must be ({c},) for x {x.shape}, got {v.shape}")
    if training and x.shape[0] * x.shape[2] * x.shape[3] < 2:
        raise ValueError(f"{op}: training needs more than one value per channel, x {x.shape}")
    return dtype


def batchnorm_forward_reference(x, gamma, beta, running_mean, running_var, training,
                                momentum=0.1, eps=1e-5):
    """Plain NumPy twin of batchnorm_forward (tests compare the two)."""
    dtype = _check(x, gamma, beta, running_mean, running_var, training)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    if training:
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
    _check_backward(dy, x_hat)
    dtype = x_hat.dtype
    dy3, x_hat3 = _fused.as_ncm(dy), _fused.as_ncm(x_hat)
    dbeta, dgamma = (s.astype(dtype) for s in _fused.bn_grad_sums(dy3, x_hat3))
    scale = gamma * inv_std
    if not training:
        return _per_channel(scale) * dy, dgamma, dbeta
    m = x_hat.shape[0] * x_hat.shape[2] * x_hat.shape[3]
    # sum(g) = gamma * dbeta and sum(g * x_hat) = gamma * dgamma, hence the reuse
    dx = np.empty_like(dy3)
    _fused.bn_input_grad(dy3, x_hat3, scale, dbeta / dtype.type(m), dgamma / dtype.type(m), dx)
    return dx.reshape(dy.shape), dgamma, dbeta


def _check_backward(dy, x_hat):
    check_float("batchnorm_backward", dy=dy, x_hat=x_hat)
    if dy.shape != x_hat.shape:
        raise ValueError(f"batchnorm_backward: dy {dy.shape} does not match x {x_hat.shape}")


def batchnorm_backward_reference(dy, cache):
    """Plain NumPy twin of batchnorm_backward (tests compare the two)."""
    x_hat, inv_std, gamma, training = cache
    _check_backward(dy, x_hat)
    dbeta = dy.sum(axis=AXES)
    dgamma = (dy * x_hat).sum(axis=AXES)
    scale = _per_channel(gamma * inv_std)
    if not training:
        return scale * dy, dgamma, dbeta
    m = x_hat.shape[0] * x_hat.shape[2] * x_hat.shape[3]
    # sum(g) = gamma * dbeta and sum(g * x_hat) = gamma * dgamma, hence the reuse
    dx = scale * (dy - _per_channel(dbeta / m) - x_hat * _per_channel(dgamma / m))
    return dx, dgamma, dbeta
