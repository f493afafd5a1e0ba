"""Compiled one-pass kernels for batch norm and PReLU (Numba).

Every kernel works on a C-contiguous (N, C, M) view of an (N, C, ...) tensor, in
the tensor's own dtype, and does per element exactly the operations, in the same
order, of the NumPy expressions it replaces (no fast-math, so no contraction into
fused multiply-adds): given the same per-channel numbers, the outputs are equal
bit for bit. The per-channel sums (BN statistics, BN and PReLU parameter
gradients) are accumulated in float64, in sequence; NumPy sums pairwise in the
tensor's dtype, so those agree with the NumPy twins to rounding, not bit for bit
(tests/test_ops_fused.py states the tolerances).
"""
import numpy as np
from numba import njit


def as_ncm(x):
    """(N, C, ...) -> C-contiguous (N, C, M) (a view when x is contiguous)."""
    x = np.ascontiguousarray(x)
    return x.reshape(x.shape[0], x.shape[1], -1)


@njit(cache=True)
def bn_moments(x):
    """Per-channel mean and biased variance of (N, C, M), float64, two passes."""
    n, c, m = x.shape
    count = n * m
    mean = np.zeros(c)
    var = np.zeros(c)
    for ch in range(c):
        s = 0.0
        for i in range(n):
            for j in range(m):
                s += x[i, ch, j]
        mu = s / count
        q = 0.0
        for i in range(n):
            for j in range(m):
                d = x[i, ch, j] - mu
                q += d * d
        mean[ch] = mu
        var[ch] = q / count
    return mean, var


@njit(cache=True)
def bn_normalize(x, shift, inv_std, gamma, beta, x_hat, y):
    """x_hat = (x - shift) * inv_std; y = gamma * x_hat + beta (per channel)."""
    n, c, m = x.shape
    for i in range(n):
        for ch in range(c):
            s, k, g, b = shift[ch], inv_std[ch], gamma[ch], beta[ch]
            for j in range(m):
                h = (x[i, ch, j] - s) * k
                x_hat[i, ch, j] = h
                y[i, ch, j] = g * h + b


@njit(cache=True)
def bn_grad_sums(dy, x_hat):
    """Per-channel sum(dy) and sum(dy * x_hat), float64."""
    n, c, m = dy.shape
    dbeta = np.zeros(c)
    dgamma = np.zeros(c)
    for i in range(n):
        for ch in range(c):
            sb = 0.0
            sg = 0.0
            for j in range(m):
                d = dy[i, ch, j]
                sb += d
                sg += d * x_hat[i, ch, j]
            dbeta[ch] += sb
            dgamma[ch] += sg
    return dbeta, dgamma


@njit(cache=True)
def bn_input_grad(dy, x_hat, scale, mean_dy, mean_dyx, dx):
    """dx = scale * ((dy - mean_dy) - x_hat * mean_dyx) (per channel)."""
    n, c, m = dy.shape
    for i in range(n):
        for ch in range(c):
            k, a, b = scale[ch], mean_dy[ch], mean_dyx[ch]
            for j in range(m):
                dx[i, ch, j] = k * ((dy[i, ch, j] - a) - x_hat[i, ch, j] * b)


@njit(cache=True)
def prelu_apply(x, a, y):
    """y = x where x > 0, else a[c] * x; a has C entries (or 1, shared)."""
    n, c, m = x.shape
    shared = a.shape[0] == 1
    for i in range(n):
        for ch in range(c):
            s = a[0] if shared else a[ch]
            for j in range(m):
                v = x[i, ch, j]
                y[i, ch, j] = v if v > 0 else s * v


@njit(cache=True)
def prelu_grads(dy, x, a, dx):
    """dx = dy where x > 0, else a[c] * dy; returns per-channel sum of dy * x
    over x <= 0 (float64, C entries)."""
    n, c, m = x.shape
    shared = a.shape[0] == 1
    da = np.zeros(c)
    for i in range(n):
        for ch in range(c):
            s = a[0] if shared else a[ch]
            acc = 0.0
            for j in range(m):
                v = x[i, ch, j]
                d = dy[i, ch, j]
                if v > 0:
                    dx[i, ch, j] = d
                else:
                    dx[i, ch, j] = s * d
                    acc += d * v
            da[ch] += acc
    return da
