"""MATLAB-compatible bicubic resize (imresize), the one way LR images are made.

Published SR tables use LR images made by MATLAB's `imresize(hr, 1/s, 'bicubic')`
on uint8 images and a bicubic baseline made by `imresize(lr, s, 'bicubic')`; the
definition below reproduces that algorithm (SPEC "data"):

- kernel: Keys cubic with a = -0.5,
  k(x) = 1.5|x|^3 - 2.5|x|^2 + 1 for |x| <= 1, -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2
  for 1 < |x| <= 2, 0 otherwise;
- antialiasing: when shrinking (scale < 1) the kernel is widened, h(x) =
  scale * k(scale * x), support 4 / scale input pixels;
- output pixel i (1-based) samples input coordinate u = i / scale + (1 - 1/scale) / 2;
  taps at floor(u - width/2) + 0 .. ceil(width) + 1, weights h(u - tap) divided by
  their sum, taps outside 1..n mirrored symmetrically (n+1 -> n, 0 -> 1);
- separable: one 1-D pass per axis, the axis with the smaller scale first (rows
  first on a tie); output size ceil(scale * n) unless given;
- uint8 (`imresize_uint8`): every pass rounds half up and clamps to 0..255, as
  MATLAB does, because its per-axis kernel returns the input's class.
"""
import functools
import math

import numpy as np

from .images import check_image, float_to_uint8

SCALES = (2, 3, 4)


def cubic(x):
    """Keys cubic convolution kernel, a = -0.5: float64 array -> float64 array."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@functools.lru_cache(maxsize=256)
def contributions(in_len, out_len, scale):
    """Taps and weights of one 1-D resize pass.

    in_len, out_len: ints; scale: float (out/in ratio used by the kernel).
    Returns (weights (out_len, P) float64, indices (out_len, P) int64, 0-based,
    mirrored into 0..in_len-1); every row of weights sums to one. Columns that are
    zero for every output pixel are dropped. Read-only (cached).
    """
    width = 4.0
    if scale < 1:
        def kernel(x):
            return scale * cubic(scale * x)
        width = width / scale
    else:
        kernel = cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = left[:, None] + np.arange(math.ceil(width) + 2)[None, :]
    weights = kernel(u[:, None] - taps)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric boundary: the sequence 1..n, n..1 repeats (1-based taps).
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    indices = mirror[np.mod(taps.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    weights, indices = weights[:, keep], indices[:, keep]
    weights.setflags(write=False)
    indices.setflags(write=False)
    return weights, indices


def _resize_axis(x, axis, weights, indices):
    """One pass: x float64 (..., n, ...) along axis -> (..., out_len, ...) float64.

    Taps are summed in column order, the same order for every pixel, so results do
    not depend on BLAS threading.
    """
    x = np.moveaxis(x, axis, 0)
    out = np.zeros((weights.shape[0],) + x.shape[1:], dtype=np.float64)
    bshape = (weights.shape[0],) + (1,) * (x.ndim - 1)
    for p in range(weights.shape[1]):
        out += weights[:, p].reshape(bshape) * x[indices[:, p]]
    return np.moveaxis(out, 0, axis)


def _plan(shape, scale, output_shape):
    """Per axis (axis, in_len, out_len, scale), in MATLAB's order of passes."""
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give exactly one of scale and output_shape")
    in_hw = tuple(int(n) for n in shape[:2])
    if scale is not None:
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"imresize: scale must be a positive finite number, got {scale!r}")
        scales = (float(scale), float(scale))
        out_hw = tuple(math.ceil(scale * n) for n in in_hw)
    else:
        out_hw = tuple(int(n) for n in output_shape)
        if len(out_hw) != 2 or min(out_hw) < 1 or tuple(output_shape) != out_hw:
            raise ValueError(f"imresize: output_shape must be two positive ints, got {output_shape!r}")
        scales = (out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    order = sorted(range(2), key=lambda a: scales[a])  # stable: rows first on a tie
    return [(a, in_hw[a], out_hw[a], scales[a]) for a in order]


def _check_input(img, name):
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or 0 in img.shape:
        desc = getattr(img, "shape", type(img).__name__)
        raise ValueError(f"{name}: expected a non-empty (H, W) or (H, W, C) array, got {desc}")
    if img.dtype == np.bool_ or not (np.issubdtype(img.dtype, np.floating)
                                     or np.issubdtype(img.dtype, np.integer)):
        raise ValueError(f"{name}: unsupported dtype {img.dtype}")


def imresize(img, scale=None, output_shape=None):
    """MATLAB bicubic imresize without rounding: (H, W) or (H, W, C) -> float64.

    img: float or integer array (integers are taken as values, not rescaled).
    scale: one factor for both axes, output (ceil(H*scale), ceil(W*scale));
    or output_shape (h, w), with per-axis scale h/H and w/W.
    """
    _check_input(img, "imresize")
    x = img.astype(np.float64)
    for axis, n_in, n_out, s in _plan(img.shape, scale, output_shape):
        x = _resize_axis(x, axis, *contributions(n_in, n_out, s))
    return x


def imresize_uint8(img, scale=None, output_shape=None):
    """MATLAB bicubic imresize of a uint8 image: uint8 (H, W[, C]) -> uint8.

    Each 1-D pass is rounded half up and clamped to 0..255 before the next, as
    MATLAB's imresize does for uint8 input.
    """
    _check_input(img, "imresize_uint8")
    if img.dtype != np.uint8:
        raise ValueError(f"imresize_uint8: expected uint8, got {img.dtype}")
    x = img
    for axis, n_in, n_out, s in _plan(img.shape, scale, output_shape):
        x = float_to_uint8(_resize_axis(x.astype(np.float64), axis, *contributions(n_in, n_out, s)))
    return x


def _check_scale(scale, name):
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"{name}: scale must be a positive integer, got {scale!r}")


def bicubic_downscale(hr, scale):
    """LR image as in published SR data sets: (H, W, 3) uint8 -> (H/s, W/s, 3) uint8.

    MATLAB's imresize(hr, 1/s, 'bicubic'). H and W must be multiples of s (modcrop
    the HR image first), so that every LR pixel has s x s HR pixels of its own.
    """
    _check_scale(scale, "bicubic_downscale")
    check_image(hr, "bicubic_downscale")
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"bicubic_downscale: image {hr.shape} is not a multiple of the scale "
                         f"{scale}; modcrop it first")
    lr = imresize_uint8(hr, scale=1.0 / scale)
    assert lr.shape[:2] == (h // scale, w // scale)
    return lr


def bicubic_upscale(lr, scale):
    """Bicubic baseline: (h, w, 3) uint8 -> (s*h, s*w, 3) uint8, imresize(lr, s, 'bicubic')."""
    _check_scale(scale, "bicubic_upscale")
    check_image(lr, "bicubic_upscale")
    return imresize_uint8(lr, scale=float(scale))
