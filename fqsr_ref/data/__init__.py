"""data: images on disk, MATLAB-compatible bicubic resize, procedural images, training batches.

images    read/write (H, W, 3) uint8 RGB, modcrop, 8-bit rounding, flips/transposes
resize    imresize (MATLAB bicubic), bicubic_downscale / bicubic_upscale
synthetic procedural_image: training images made on the fly, no download
dataset   FolderSource, ProceduralSource, sample_batch: aligned augmented patch pairs
photos/   a small held-out set of real photographs, for evaluation only
"""
import os


def photos_dir():
    """Path (str) of the bundled held-out photographs; never train on them (photos/README.md)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "photos")
