"""Pixel shuffle (depth to space) and its inverse, pixel unshuffle (space to depth).

Channel order as PyTorch's PixelShuffle: for factor r,
    y[n, c, h*r + i, w*r + j] = x[n, c*r*r + i*r + j, h, w],   0 <= i, j < r.
Both are permutations of elements: they work on any numeric dtype (float
activations in training, integer codes in the integer engine) and never change
a value. The backward of a permutation is its inverse, so
pixel_shuffle_backward is pixel_unshuffle.
"""
from typing import NamedTuple

import numpy as np

from ._checks import check_rank


class ShuffleCache(NamedTuple):
    r: int


def _check(op, x, r, need_channels):
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "iuf":
        raise ValueError(f"{op}: x must be a numeric ndarray, got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {np.shape(x)}")
    check_rank(op, "x", x, 4, "4-D (N, C, H, W)")
    if not isinstance(r, (int, np.integer)) or isinstance(r, bool) or r < 1:
        raise ValueError(f"{op}: factor r must be an integer >= 1, got {r!r}")
    if need_channels and x.shape[1] % (r * r):
        raise ValueError(f"{op}: channels of x {x.shape} must be a multiple of r*r = {r * r}")
    if not need_channels and (x.shape[2] % r or x.shape[3] % r):
        raise ValueError(f"{op}: height and width of x {x.shape} must be multiples of r = {r}")


def pixel_shuffle_forward(x, r):
    """Depth to space.

    x: (N, C*r*r, H, W), any numeric dtype. Returns y (N, C, H*r, W*r) of the same
    dtype (a new C-contiguous array) and the cache for pixel_shuffle_backward.
    """
    _check("pixel_shuffle", x, r, need_channels=True)
    n, crr, h, w = x.shape
    c = crr // (r * r)
    y = np.empty((n, c, h * r, w * r), dtype=x.dtype)
    y.reshape(n, c, h, r, w, r)[...] = x.reshape(n, c, r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y, ShuffleCache(int(r))


def pixel_shuffle_backward(dy, cache):
    """dy: (N, C, H*r, W*r) -> dx (N, C*r*r, H, W): the inverse permutation."""
    return pixel_unshuffle(dy, cache.r)


def pixel_unshuffle(x, r):
    """Space to depth, the inverse of pixel_shuffle_forward.

    x: (N, C, H*r, W*r), any numeric dtype -> (N, C*r*r, H, W), same dtype.
    """
    _check("pixel_unshuffle", x, r, need_channels=False)
    n, c, hr, wr = x.shape
    h, w = hr // r, wr // r
    y = np.empty((n, c * r * r, h, w), dtype=x.dtype)
    y.reshape(n, c, r, r, h, w)[...] = x.reshape(n, c, h, r, w, r).transpose(0, 1, 3, 5, 2, 4)
    return y
