"""Tiled integer inference, bit-identical to whole-image inference (docs/SPEC.md 6.9).

The integer model is exact, so an output pixel depends only on the LR pixels within
its receptive field, and on nothing else (no float summation order): a tile run with a
halo of the receptive-field radius around it, clipped at the image border (where both
runs pad with value 0), gives exactly the codes of the whole-image run inside the tile.
`receptive_radius` derives the radius from the graph; `estimate_bytes` the peak memory
of a run, from which `choose_tile` picks a tile for a memory budget.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .engine_plain import STRIP_BYTES
from .model import AddOp, ConvOp, IntModel, RequantOp, ShuffleOp
from .run import DEFAULT_ENGINE, ENGINES, Prepared, prepare, run_nhwc

DEFAULT_MEMORY_BUDGET = 1 << 30      # 1 GiB: infer's default --memory-budget
MIN_TILE = 16                         # LR pixels; smaller tiles are mostly halo


def receptive_radius(model: IntModel) -> int:
    """Radius in LR pixels of the receptive field of an output pixel.

    Per tensor: the image has radius 0 at resolution factor 1; a K x K conv adds
    (K // 2) pixels of its input's resolution, i.e. (K // 2) / factor LR pixels; an add
    takes the larger of its operands (the longest path); a pixel shuffle by r
    multiplies the factor by r. Output pixel (Y, X) of the x s model then depends only
    on LR pixels within ceil(radius) of (Y // s, X // s) in both axes.
    """
    radius, factor = {"image.in": Fraction(0)}, {"image.in": 1}
    for op in model.ops:
        r, f = radius[op.input], factor[op.input]
        if isinstance(op, ConvOp):
            r = r + Fraction(op.weight.shape[2] // 2, f)
        elif isinstance(op, AddOp):
            r = max(r, radius[op.branch])
        elif isinstance(op, ShuffleOp):
            f = f * op.factor
        elif not isinstance(op, RequantOp):
            raise ValueError(f"integer model: unknown op {op!r}")
        radius[op.output], factor[op.output] = r, f
    return math.ceil(radius["image.out"])


def _itemsize(t) -> int:
    return 1 if t.bits <= 8 else 2 if t.bits <= 16 else 4


def estimate_bytes(model: IntModel, height: int, width: int, engine: str = DEFAULT_ENGINE) -> int:
    """Peak bytes above the model of one run on a height x width LR image.

    Live tensors (channels-last codes, freed after their last reader) at the worst
    op, plus that op's working memory: for the plain and int16 engines a conv's strips (about
    STRIP_BYTES, independent of the image); for the bit-plane engine its packed taps,
    int64 dot products and NCHW copies (a bound, not a measurement). A margin of 1/4
    covers the allocator (freed blocks below glibc's mmap threshold stay mapped).
    Measured runs stay below it (tools/benchmark.py prints both).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    t = model.tensors
    pixels = {"image.in": height * width}
    sizes = {"image.in": 3 * height * width}
    last_use = prepare_last_use(model)
    live = peak = sizes["image.in"]
    for i, op in enumerate(model.ops):
        in_t, out_t = t[op.input], t[op.output]
        px, work = pixels[op.input], 0
        if isinstance(op, ShuffleOp):
            px, size = px * op.factor ** 2, sizes[op.input]
        elif isinstance(op, ConvOp):
            o, c, k, _ = op.weight.shape
            size = px * o * _itemsize(out_t)
            if engine in ("plain", "int16"):   # strips of about STRIP_BYTES either way
                work = 3 * STRIP_BYTES
            else:
                words = -(-c // 64)
                work = px * (in_t.bits * words * (k * k + 1) * 8 + 3 * 8 * o + 2 * c * _itemsize(in_t))
        else:
            size = sizes[op.input] // _itemsize(in_t) * _itemsize(out_t)
        pixels[op.output], sizes[op.output] = px, size
        live += size
        peak = max(peak, live * 5 // 4 + work)
        for name in {op.input, getattr(op, "branch", op.input)}:
            if last_use.get(name) == i:
                live -= sizes[name]
    return int(peak)


def prepare_last_use(model: IntModel) -> dict:
    last = {}
    for i, op in enumerate(model.ops):
        last[op.input] = i
        if isinstance(op, AddOp):
            last[op.branch] = i
    return last


def choose_tile(model: IntModel, height: int, width: int, budget: int, engine: str = DEFAULT_ENGINE):
    """None when the whole image fits the budget, else the largest tile side T (LR
    pixels) whose run (T + 2 radius pixels a side) fits it beside the output image.

    ValueError naming the memory needed when not even a MIN_TILE tile fits.
    """
    scale = model.config.scale
    image_bytes = 3 * height * width * (1 + scale * scale)       # input and output images
    whole = estimate_bytes(model, height, width, engine) + image_bytes
    if whole <= budget:
        return None
    halo = receptive_radius(model)
    lo, hi = MIN_TILE, max(height, width)
    if estimate_bytes(model, lo + 2 * halo, lo + 2 * halo, engine) + image_bytes > budget:
        need = estimate_bytes(model, lo + 2 * halo, lo + 2 * halo, engine) + image_bytes
        raise ValueError(f"a {width}x{height} image needs at least {need / 2 ** 20:.0f} MiB "
                         f"(tiles of {lo} pixels), above the memory budget of {budget / 2 ** 20:.0f} MiB")
    while lo < hi:                                  # largest side that fits: binary search
        mid = (lo + hi + 1) // 2
        side = mid + 2 * halo
        if estimate_bytes(model, min(side, height), min(side, width), engine) + image_bytes <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def run_tiled(model: IntModel, lr_uint8: np.ndarray, tile: int, engine: str = DEFAULT_ENGINE,
              prep: Prepared | None = None) -> np.ndarray:
    """(H, W, 3) uint8 -> (sH, sW, 3) uint8, computed tile x tile LR pixels at a time,
    each with a halo of `receptive_radius` pixels (clipped at the border): the same
    codes as the whole-image run, in memory bounded by the tile."""
    if not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")
    lr = np.ascontiguousarray(lr_uint8)
    prep = prep or prepare(model)
    h, w, _ = lr.shape
    s, halo = model.config.scale, receptive_radius(model)
    out = np.empty((s * h, s * w, 3), dtype=np.uint8)
    for y0 in range(0, h, tile):
        y1 = min(h, y0 + tile)
        iy0, iy1 = max(0, y0 - halo), min(h, y1 + halo)
        for x0 in range(0, w, tile):
            x1 = min(w, x0 + tile)
            ix0, ix1 = max(0, x0 - halo), min(w, x1 + halo)
            crop = np.ascontiguousarray(lr[iy0:iy1, ix0:ix1])[None]
            sr = run_nhwc(prep, crop, engine)["image.out"][0]
            out[s * y0:s * y1, s * x0:s * x1] = sr[s * (y0 - iy0):s * (y1 - iy0), s * (x0 - ix0):s * (x1 - ix0)]
    return out


def run_image(model: IntModel, lr_uint8, engine: str = DEFAULT_ENGINE, tile: int | None = None,
              budget: int | None = None) -> tuple[np.ndarray, int | None]:
    """Super-resolve (H, W, 3) uint8 codes: whole, or in tiles of `tile` LR pixels, or
    (tile None) in the tiles `choose_tile` picks for `budget` bytes (None: no budget).
    Returns (sr (sH, sW, 3) uint8, the tile side used or None)."""
    lr = np.asarray(lr_uint8)
    if lr.dtype != np.uint8 or lr.ndim != 3 or lr.shape[2] != 3:
        raise ValueError(f"integer model: input must be uint8 (H, W, 3), got {lr.dtype} {lr.shape}")
    if tile is None and budget is not None:
        tile = choose_tile(model, lr.shape[0], lr.shape[1], budget, engine)
    prep = prepare(model)
    if tile is None or tile >= max(lr.shape[:2]):
        return run_nhwc(prep, np.ascontiguousarray(lr)[None], engine)["image.out"][0], None
    return run_tiled(model, lr, tile, engine, prep), tile
