"""Training batches: aligned LR/HR patch pairs, augmented, from a folder or procedurally.

A source has one method, `sample(rng, batch, lr_patch, scale) -> (lr, hr)`:
  lr: (batch, 3, lr_patch, lr_patch) float32, hr: (batch, 3, s*lr_patch, s*lr_patch)
  float32, both codes / 255 in [0, 1], NCHW.
Every patch pair is cut at aligned positions (LR pixel (y, x) <-> HR pixels
s*y .. s*y+s-1, s*x .. s*x+s-1) and then given the same one of the 8 flips /
90-degree rotations (`images.dihedral`, k uniform in 0..7).

- `FolderSource`: DIV2K-style HR images, modcropped by the scale and held in
  memory; LR images are made once at load by `bicubic_downscale`, or read from an
  LR folder (same file stem, or the DIV2K stem + "x{s}").
- `ProceduralSource`: each patch pair comes from a fresh `procedural_image` of
  (lr_patch + 2*margin) * s pixels. Its LR is the bicubic downscale of the whole
  image and both patches are cut `margin` LR pixels in from the edges. The
  antialiased kernel reaches 2 LR pixels (2s HR pixels) to each side, so with
  margin = 2 no LR pixel of the patch sees the mirrored image boundary: the pair is
  exactly what a crop from a larger image would give.
"""
import os

import numpy as np

from .images import dihedral, list_images, modcrop, read_image
from .resize import bicubic_downscale
from .synthetic import procedural_image

DEFAULT_BATCH = 16
DEFAULT_LR_PATCH = 24
PROCEDURAL_MARGIN = 2


def _check_positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def to_nchw_float(images):
    """List of (H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1] (codes / 255)."""
    x = np.stack(images).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)


def _augment(rng, lr, hr):
    """The same random flip/transpose (k in 0..7) of both patches."""
    k = int(rng.integers(8))
    return dihedral(lr, k), dihedral(hr, k)


class FolderSource:
    """HR images from a folder (and LR images made from them, or read from lr_dir).

    hr_dir: folder of HR images; scale: int; lr_dir: optional folder of LR images,
    matched by stem ("0001.png" <- "0001.png" or "0001x2.png"), each exactly
    (H/s, W/s) of the modcropped HR image. All images are held in memory as uint8.
    """

    def __init__(self, hr_dir, scale, lr_dir=None):
        _check_positive_int(scale, "FolderSource: scale")
        self.scale = int(scale)
        self.paths = list_images(hr_dir)
        lr_paths = self._match_lr(lr_dir) if lr_dir is not None else None
        self.hr, self.lr = [], []
        for i, path in enumerate(self.paths):
            hr = np.ascontiguousarray(modcrop(read_image(path), self.scale))
            if lr_paths is None:
                lr = bicubic_downscale(hr, self.scale)
            else:
                lr = read_image(lr_paths[i])
                if lr.shape != (hr.shape[0] // self.scale, hr.shape[1] // self.scale, 3):
                    raise ValueError(f"LR image {lr_paths[i]} is {lr.shape[:2]}, expected "
                                     f"{(hr.shape[0] // self.scale, hr.shape[1] // self.scale)} "
                                     f"for HR image {path} at scale {self.scale}")
            self.hr.append(hr)
            self.lr.append(lr)
        self._eligible = {}

    def _match_lr(self, lr_dir):
        by_stem = {os.path.splitext(os.path.basename(p))[0]: p for p in list_images(lr_dir)}
        matched = []
        for path in self.paths:
            stem = os.path.splitext(os.path.basename(path))[0]
            found = by_stem.get(stem) or by_stem.get(f"{stem}x{self.scale}")
            if found is None:
                raise ValueError(f"no LR image for {path} in {lr_dir} "
                                 f"(looked for {stem} and {stem}x{self.scale})")
            matched.append(found)
        return matched

    def __len__(self):
        return len(self.paths)

    def eligible_images(self, lr_patch):
        # Images smaller than the patch are skipped rather than failing mid-training.
        if lr_patch not in self._eligible:
            ok = [i for i, lr in enumerate(self.lr) if min(lr.shape[:2]) >= lr_patch]
            if not ok:
                raise ValueError(f"no image in {os.path.dirname(self.paths[0])} has an LR "
                                 f"size of at least {lr_patch} x {lr_patch} at scale {self.scale}")
            self._eligible[lr_patch] = ok
        return self._eligible[lr_patch]

    def sample(self, rng, batch, lr_patch, scale):
        """Random aligned, augmented patch pairs; see the module docstring.

        Draws per patch, in order: image index, y, x (LR top-left), dihedral k.
        """
        if scale != self.scale:
            raise ValueError(f"FolderSource was built for scale {self.scale}, asked for {scale}")
        eligible = self.eligible_images(lr_patch)
        s, p = self.scale, lr_patch
        lrs, hrs = [], []
        for _ in range(batch):
            i = eligible[int(rng.integers(len(eligible)))]
            lr_img, hr_img = self.lr[i], self.hr[i]
            y = int(rng.integers(lr_img.shape[0] - p + 1))
            x = int(rng.integers(lr_img.shape[1] - p + 1))
            lr, hr = _augment(rng, lr_img[y:y + p, x:x + p],
                              hr_img[s * y:s * (y + p), s * x:s * (x + p)])
            lrs.append(lr)
            hrs.append(hr)
        return to_nchw_float(lrs), to_nchw_float(hrs)


def cut_interior_pair(hr_big, scale, margin):
    """LR/HR pair from the interior of an image, free of boundary effects.

    hr_big: ((p + 2*margin)*s, (q + 2*margin)*s, 3) uint8 -> (lr (p, q, 3),
    hr (p*s, q*s, 3)) uint8: the whole image is downscaled, then both are cut
    margin LR pixels in from every edge.
    """
    lr_big = bicubic_downscale(hr_big, scale)
    m, s = margin, scale
    return (lr_big[m:lr_big.shape[0] - m, m:lr_big.shape[1] - m],
            hr_big[m * s:hr_big.shape[0] - m * s, m * s:hr_big.shape[1] - m * s])


class ProceduralSource:
    """Procedural patch pairs, generated on the fly (no files, no download).

    margin: LR pixels cut from each side of the generated image (>= 2 keeps the
    bicubic kernel away from the mirrored boundary; see the module docstring).
    """

    def __init__(self, margin=PROCEDURAL_MARGIN):
        if not isinstance(margin, (int, np.integer)) or margin < 0:
            raise ValueError(f"ProceduralSource: margin must be a non-negative int, got {margin!r}")
        self.margin = int(margin)

    def sample(self, rng, batch, lr_patch, scale):
        """Draws per patch, in order: the image (procedural_image), dihedral k."""
        _check_positive_int(scale, "ProceduralSource: scale")
        side = (lr_patch + 2 * self.margin) * scale
        lrs, hrs = [], []
        for _ in range(batch):
            lr, hr = cut_interior_pair(procedural_image(rng, (side, side)), scale, self.margin)
            lr, hr = _augment(rng, lr, hr)
            lrs.append(lr)
            hrs.append(hr)
        return to_nchw_float(lrs), to_nchw_float(hrs)


def sample_batch(rng, source, batch=DEFAULT_BATCH, lr_patch=DEFAULT_LR_PATCH, scale=2):
    """One training batch from a source: (lr (B, 3, p, p), hr (B, 3, sp, sp)) float32.

    rng: np.random.Generator (the only randomness); source: FolderSource,
    ProceduralSource or anything with the same `sample` method.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"sample_batch: rng must be a numpy Generator, got {type(rng).__name__}")
    _check_positive_int(batch, "sample_batch: batch")
    _check_positive_int(lr_patch, "sample_batch: lr_patch")
    _check_positive_int(scale, "sample_batch: scale")
    return source.sample(rng, batch, lr_patch, scale)
