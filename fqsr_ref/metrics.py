"""The standard SR evaluation protocol: Y-channel PSNR/SSIM, bicubic baseline, self-ensemble.

So that numbers compare with published tables (SPEC "data"):
- HR images are modcropped to the scale; LR = MATLAB bicubic downscale (uint8);
- the SR output is rounded half up and clamped to 8 bits before it is scored;
- both images go to Y = 16 + 65.481 R + 128.553 G + 24.966 B (RGB in [0, 1]),
  kept in float (not rounded), and `scale` pixels are cropped from every border;
- PSNR = 10 log10(255^2 / MSE); SSIM with an 11x11 Gaussian window (sigma 1.5),
  C1 = (0.01*255)^2, C2 = (0.03*255)^2, averaged over the valid region only;
- the score of a folder is the mean of the per-image scores.
"""
import math
import os
from typing import NamedTuple

import numpy as np
from scipy.ndimage import correlate1d

from .data.images import (check_image, dihedral, dihedral_inverse, float_to_uint8,
                          list_images, modcrop, read_image, write_image)
from .data.resize import bicubic_downscale, bicubic_upscale

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2


def rgb_to_y(img):
    """BT.601 luma of an RGB image: (H, W, 3) -> (H, W) float64 in [16, 235].

    uint8 input is divided by 255 first; float input is taken as RGB in [0, 1].
    """
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y: expected an (H, W, 3) array, got {getattr(img, 'shape', img)}")
    x = img.astype(np.float64)
    if img.dtype == np.uint8:
        x = x / 255.0
    elif not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"rgb_to_y: expected uint8 or float input, got {img.dtype}")
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


def _y_pair(sr, hr, crop, name):
    check_image(sr, f"{name}: sr")
    check_image(hr, f"{name}: hr")
    if sr.shape != hr.shape:
        raise ValueError(f"{name}: sr {sr.shape} and hr {hr.shape} differ in shape")
    if not isinstance(crop, (int, np.integer)) or crop < 0:
        raise ValueError(f"{name}: crop must be a non-negative int, got {crop!r}")
    h, w = hr.shape[:2]
    if h <= 2 * crop or w <= 2 * crop:
        raise ValueError(f"{name}: crop {crop} leaves nothing of a {h} x {w} image")
    inner = (slice(crop, h - crop), slice(crop, w - crop))
    return rgb_to_y(sr[inner]), rgb_to_y(hr[inner])


def psnr_y(sr, hr, crop):
    """PSNR on Y: sr, hr (H, W, 3) uint8, crop border pixels -> float dB (inf if equal)."""
    y1, y2 = _y_pair(sr, hr, crop, "psnr_y")
    mse = np.mean((y1 - y2) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def gaussian_window_1d(size=SSIM_WINDOW, sigma=SSIM_SIGMA):
    """Normalised 1-D Gaussian (size,) float64; its outer product is the SSIM window."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-x * x / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x, g):
    # Separable: the 2-D window is outer(g, g). Cropping the half-window from each
    # side leaves exactly the 'valid' positions, whatever the boundary mode.
    r = len(g) // 2
    y = correlate1d(correlate1d(x, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    return y[r:x.shape[0] - r, r:x.shape[1] - r]


def ssim_y(sr, hr, crop):
    """SSIM on Y (0-255 scale): sr, hr (H, W, 3) uint8, crop -> float in [-1, 1].

    Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), valid region only,
    no downsampling; the image after the crop must be at least 11 x 11.
    """
    y1, y2 = _y_pair(sr, hr, crop, "ssim_y")
    if min(y1.shape) < SSIM_WINDOW:
        raise ValueError(f"ssim_y: {y1.shape} after the crop is smaller than the "
                         f"{SSIM_WINDOW}x{SSIM_WINDOW} window")
    g = gaussian_window_1d()
    mu1, mu2 = _filter_valid(y1, g), _filter_valid(y2, g)
    var1 = _filter_valid(y1 * y1, g) - mu1 * mu1
    var2 = _filter_valid(y2 * y2, g) - mu2 * mu2
    cov = _filter_valid(y1 * y2, g) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + SSIM_C1) * (2 * cov + SSIM_C2)) \
        / ((mu1 * mu1 + mu2 * mu2 + SSIM_C1) * (var1 + var2 + SSIM_C2))
    return float(ssim_map.mean())


def evaluate_pair(sr, hr, scale):
    """(PSNR, SSIM) on Y with the border crop equal to the scale."""
    return psnr_y(sr, hr, scale), ssim_y(sr, hr, scale)


def _sr_output_float(out, expected_shape, name):
    """An SR function's output (uint8 or float in 0..255 units) as float64, shape checked."""
    out = np.asarray(out)
    if out.shape != expected_shape:
        raise ValueError(f"{name}: SR output has shape {out.shape}, expected {expected_shape}")
    return out.astype(np.float64)


def self_ensemble(sr_fn, lr):
    """EDSR's x8 self-ensemble: average of sr_fn over the 8 flips/transposes.

    sr_fn: (h, w, 3) uint8 -> (s*h, s*w, 3) uint8 or float in 0..255 units.
    lr: (h, w, 3) uint8. Each output is transformed back, the 8 are averaged in
    float64, then rounded half up and clamped -> (s*h, s*w, 3) uint8.
    """
    check_image(lr, "self_ensemble: lr")
    total, shape = None, None
    for k in range(8):
        out = np.asarray(sr_fn(np.ascontiguousarray(dihedral(lr, k))))
        out = dihedral_inverse(out, k)
        if shape is None:
            shape = out.shape
            if out.ndim != 3 or out.shape[2] != 3:
                raise ValueError(f"self_ensemble: SR output has shape {out.shape}, expected (H, W, 3)")
            total = np.zeros(shape, np.float64)
        total += _sr_output_float(out, shape, "self_ensemble")
    return float_to_uint8(total / 8.0)


_self_ensemble = self_ensemble  # evaluate_folder's flag of the same name shadows it


class EvalRow(NamedTuple):
    """Scores of one image (or their mean, name "mean"); model = bicubic without a model."""
    name: str
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float


def side_by_side(images, gap=4):
    """(H, W, 3) uint8 images of one height -> one uint8 image, white gaps between."""
    h = images[0].shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    parts = []
    for img in images:
        parts += [img, sep]
    return np.concatenate(parts[:-1], axis=1)


def saved_images(save_dir, hr_path, scale) -> tuple:
    """The files evaluate_folder writes for one HR image: (SR output, comparison)."""
    stem = os.path.splitext(os.path.basename(hr_path))[0]
    return (os.path.join(save_dir, f"{stem}_x{scale}_sr.png"),
            os.path.join(save_dir, f"{stem}_x{scale}_compare.png"))


def evaluate_folder(sr_fn, hr_dir, scale, self_ensemble=False, save_dir=None):
    """Score a model (or bicubic, sr_fn=None) on every image of a folder.

    sr_fn: (h, w, 3) uint8 LR -> (s*h, s*w, 3) uint8 or float 0..255, or None.
    Each HR image is modcropped, its LR made by bicubic_downscale; the model and
    the bicubic baseline are both scored by `evaluate_pair`. self_ensemble wraps
    sr_fn in the x8 ensemble (the bicubic column is always plain bicubic).
    save_dir: if given, writes <stem>_x{s}_sr.png and <stem>_x{s}_compare.png
    (bicubic | model | HR) there.
    Returns (rows: list of EvalRow in file order, mean: EvalRow named "mean").
    """
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"evaluate_folder: scale must be a positive int, got {scale!r}")
    paths = list_images(hr_dir)
    if save_dir is not None:
        os.makedirs(save_dir, exist_ok=True)
    rows = []
    for path in paths:
        try:
            hr = modcrop(read_image(path), scale)
        except ValueError as e:   # an image smaller than the scale: name the file
            raise ValueError(f"{path}: {e}") if path not in str(e) else e from None
        lr = bicubic_downscale(np.ascontiguousarray(hr), scale)
        bicubic = bicubic_upscale(lr, scale)
        if sr_fn is None:
            sr = bicubic
        elif self_ensemble:
            sr = _self_ensemble(sr_fn, lr)
        else:
            sr = float_to_uint8(_sr_output_float(sr_fn(lr), hr.shape, f"evaluate_folder({path})"))
        try:
            scores = evaluate_pair(sr, hr, scale) + evaluate_pair(bicubic, hr, scale)
        except ValueError as e:  # e.g. an image too small for the SSIM window
            raise ValueError(f"{path}: {e}") from None
        rows.append(EvalRow(os.path.basename(path), *scores))
        if save_dir is not None:
            sr_path, compare_path = saved_images(save_dir, path, scale)
            write_image(sr_path, sr)
            write_image(compare_path, side_by_side([bicubic, sr, hr]))
    mean = EvalRow("mean", *(float(np.mean([r[i] for r in rows])) for i in range(1, 5)))
    return rows, mean
