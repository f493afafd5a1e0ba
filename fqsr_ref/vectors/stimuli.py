"""The stimuli: input codes a vector set is run on, made here or read back from a set.

natural: a crop of a photograph (by default around the cat's eye of a bundled one);
zeros, white, checker, noise: synthetic inputs, each described in STIMULUS_TEXT.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .encodings import FORMATS
from .store import find_array, read_manifest

# The natural stimulus: a crop around the cat's eye of one bundled photograph.
DEFAULT_PHOTO = "chelsea.png"
DEFAULT_CROP_ORIGIN = (60, 52)   # (row, column) of the top-left pixel: pupil, highlight, iris
NOISE_SEED = 20240607
STIMULI = ("natural", "zeros", "white", "checker", "noise")
STIMULUS_TEXT = {
    "natural": "a {size}x{size} crop of a photograph",
    "zeros": "every code 0",
    "white": "every code 255 (drives the layers into saturation)",
    "checker": "1-pixel checkerboard of 0 and 255, code 255 where (row + column) is odd",
    "noise": f"uniform codes 0..255: np.random.default_rng({NOISE_SEED}).integers(0, 256, shape, dtype=np.uint8)",
}


# Stimuli of awkward shapes (--awkward): name -> (N, 3, H, W), seed of their uniform codes.
AWKWARD = {
    "column": ((1, 3, 9, 1), NOISE_SEED + 1),     # W = 1: every tap but the centre column padded
    "batch": ((2, 3, 5, 3), NOISE_SEED + 2),      # batch 2, odd and non-square
}


class Stimulus(NamedTuple):
    """One input: codes (N, 3, H, W) uint8 and the formats its tensors are written in."""
    name: str
    codes: np.ndarray
    description: str
    formats: tuple


def default_photo() -> np.ndarray:
    """The bundled photograph DEFAULT_PHOTO, (H, W, 3) uint8."""
    from ..data import photos_dir
    from ..data.images import read_image
    return read_image(os.path.join(photos_dir(), DEFAULT_PHOTO))


def make_stimulus(name: str, size: int, rng: np.random.Generator | None = None,
                  image: np.ndarray | None = None, origin=DEFAULT_CROP_ORIGIN) -> np.ndarray:
    """Input codes (1, 3, size, size) uint8 of the stimulus `name` (STIMULUS_TEXT).

    natural: a crop of `image` ((H, W, 3) uint8) at origin; noise draws from rng.
    """
    shape = (1, 3, size, size)
    if name == "natural":
        y, x = origin
        if image is None or image.shape[0] < y + size or image.shape[1] < x + size:
            raise ValueError(f"vectors: natural stimulus needs an image of at least "
                             f"{y + size}x{x + size} pixels, got "
                             f"{None if image is None else image.shape[:2]}")
        return np.ascontiguousarray(image[y:y + size, x:x + size].transpose(2, 0, 1)[None])
    if name == "zeros":
        return np.zeros(shape, np.uint8)
    if name == "white":
        return np.full(shape, 255, np.uint8)
    if name == "checker":
        odd = (np.arange(size)[:, None] + np.arange(size)[None, :]) % 2
        return np.ascontiguousarray(np.broadcast_to((odd * 255).astype(np.uint8), shape))
    if name == "noise":
        rng = np.random.default_rng(NOISE_SEED) if rng is None else rng
        return rng.integers(0, 256, shape, dtype=np.uint8)
    raise ValueError(f"vectors: unknown stimulus {name!r}; expected one of {STIMULI}")


def default_stimuli(image=None, size: int = 16, stimulus_size: int = 8,
                    formats=FORMATS, stimulus_formats=("bin",), origin=DEFAULT_CROP_ORIGIN):
    """The standard set: the natural crop (size x size, in `formats`) and the synthetic
    stimuli (stimulus_size squared, in `stimulus_formats`)."""
    if image is None:
        image = default_photo()
    out = [Stimulus("natural", make_stimulus("natural", size, image=image, origin=origin),
                    STIMULUS_TEXT["natural"].format(size=size), tuple(formats))]
    for name in STIMULI[1:]:
        out.append(Stimulus(name, make_stimulus(name, stimulus_size), STIMULUS_TEXT[name],
                            tuple(stimulus_formats)))
    return out


def awkward_stimuli(formats=("bin", "hex")) -> list:
    """The stimuli of AWKWARD: uniform codes 0..255 of each shape, from each seed."""
    out = []
    for name, (shape, seed) in AWKWARD.items():
        codes = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
        text = (f"{'x'.join(map(str, shape))} (N, C, H, W) uniform codes 0..255: "
                f"np.random.default_rng({seed}).integers(0, 256, shape, dtype=np.uint8)")
        out.append(Stimulus(name, codes, text, tuple(formats)))
    return out


def read_stimuli(vec_dir) -> list:
    """The stimuli of a vector directory: their stored input codes, text and formats."""
    root = Path(vec_dir)
    m = read_manifest(root)
    return [Stimulus(name, find_array(root, m, f"{name}/image.in"), e["description"], tuple(e["formats"]))
            for name, e in sorted(m["stimuli"].items())]
