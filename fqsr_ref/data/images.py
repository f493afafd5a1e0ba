"""Images on disk and in memory: read, write, modcrop, 8-bit rounding, dihedral transforms.

Every image in the data pipeline is an (H, W, 3) uint8 RGB array (SPEC "data").
Reading normalises whatever the file holds to that form; everything that turns
float pixels back into 8-bit codes goes through `float_to_uint8`, so the whole
package rounds one way (half up, then clamp), like MATLAB's uint8 conversion
for the values an image can take.
"""
import functools
import io
import os
import struct
import zlib

import numpy as np

from ..files import write_atomic

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")

# Largest image read_image decodes, in pixels: Pillow's default Image.MAX_IMAGE_PIXELS
# (1024**3 // 4 // 3, above which Pillow warns of a decompression bomb). It is
# checked against the header, before any pixel memory is allocated, for every format.
MAX_IMAGE_PIXELS = 89478485

# EXIF orientation (1..8, TIFF tag 0x0112) -> dihedral k giving what a viewer shows:
# 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
# 7 transverse, 8 rotate 90 anticlockwise.
_EXIF_ORIENTATION_TO_DIHEDRAL = {1: 0, 2: 1, 3: 3, 4: 2, 5: 4, 6: 5, 7: 7, 8: 6}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> samples per pixel (grey, -, RGB, palette, grey+alpha, -, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def round_half_up(x):
    """floor(x + 1/2), exact for every float64 x (float64 in, float64 out).

    floor(x + 0.5) is wrong for x = 0.49999999999999994, where the addition rounds
    up to 1.0; x - floor(x) is exact, so comparing it with 0.5 is not.
    """
    x = np.asarray(x, dtype=np.float64)
    f = np.floor(x)
    return f + (x - f >= 0.5)


def float_to_uint8(x):
    """Round half up and clamp to 0..255: (...) float array in 0..255 units -> uint8.

    For values >= -0.5 this is exactly MATLAB's uint8() (round half away from zero,
    saturate); below that both give 0. NaN is rejected rather than guessed.
    """
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError("float_to_uint8: input contains NaN")
    return np.clip(round_half_up(x), 0, 255).astype(np.uint8)


def _uint16_to_uint8(x):
    # round(v * 255 / 65535) in integers: exact, no float ties to worry about.
    v = x.astype(np.uint64)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _png_header(data):
    """(width, height, bit_depth, colour_type, interlace) of PNG bytes, or None."""
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return w, h, depth, ctype, interlace


def _unfilter_rows(raw, height, stride, bpp):
    """Undo PNG row filters: raw (height*(stride+1),) uint8 -> ((height, stride) uint8, bad row).

    bad row is the first row with an unknown filter type, or -1. Average and Paeth
    depend on the reconstructed left neighbour, so this is a byte loop (run jitted).
    """
    out = np.zeros((height, stride), np.uint8)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        row = raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)]
        if ftype > 4:
            return out, y
        for i in range(stride):
            a = np.int32(out[y, i - bpp]) if i >= bpp else 0
            b = np.int32(out[y - 1, i]) if y > 0 else 0
            c = np.int32(out[y - 1, i - bpp]) if (y > 0 and i >= bpp) else 0
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
            out[y, i] = (np.int32(row[i]) + pred) & 255
    return out, -1


@functools.lru_cache(maxsize=1)
def _unfilter_rows_jit():
    # Numba is imported (and the loop compiled) only when a 16-bit PNG is read.
    import numba

    return numba.njit(cache=False)(_unfilter_rows)


def _read_png16(data):
    """Decode a non-interlaced 16-bit PNG: bytes -> ((H, W, C) uint16, eXIf chunk or None).

    Pillow reduces 16-bit colour PNGs to 8 bits by truncation (v >> 8) before we
    see them; decoding them here lets every 16-bit image round the same way. The
    caller has checked the header's pixel count; inflating stops one byte past the
    size the header implies, so no IDAT stream can make this allocate more.
    """
    w, h, depth, ctype, interlace = _png_header(data)
    if ctype not in _PNG_CHANNELS:
        raise ValueError(f"16-bit PNG with colour type {ctype}")
    if interlace:
        raise ValueError("interlaced 16-bit PNGs are not supported")
    chunks, exif, pos = [], None, 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctag = data[pos + 4:pos + 8]
        if ctag == b"IDAT":
            chunks.append(data[pos + 8:pos + 8 + length])
        elif ctag == b"eXIf" and exif is None:
            exif = data[pos + 8:pos + 8 + length]
        if ctag == b"IEND":
            break
        pos += 12 + length
    else:
        raise ValueError("PNG ends before its IEND chunk")
    channels = _PNG_CHANNELS[ctype]
    stride = w * channels * 2
    expected = h * (stride + 1)
    raw = zlib.decompressobj().decompress(b"".join(chunks), expected + 1)
    if len(raw) > expected:
        raise ValueError(f"PNG holds more pixel data than its {w}x{h} header implies")
    if len(raw) != expected:
        raise ValueError(f"PNG pixel data has {len(raw)} bytes, expected {expected}")
    rows, bad_row = _unfilter_rows_jit()(np.frombuffer(raw, np.uint8), h, stride, channels * 2)
    if bad_row >= 0:
        raise ValueError(f"unknown PNG filter type in row {bad_row}")
    return rows.view(">u2").reshape(h, w, channels).astype(np.uint16), exif


def _sniff_format(data):
    """"PNG", "JPEG" or "BMP" from a file's first bytes (its signature), or None."""
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"BM"):
        return "BMP"
    return None


def _orientation(exif):
    """EXIF orientation 1..8 of a PIL.Image.Exif, 1 when absent or out of range."""
    value = exif.get(0x0112, 1)
    return value if value in _EXIF_ORIENTATION_TO_DIHEDRAL else 1


class _TooLarge(ValueError):
    """The header declares more than MAX_IMAGE_PIXELS pixels."""


def _decode(data):
    """Decode PNG/JPEG/BMP bytes: -> ((H, W, C) uint8 or uint16 array, EXIF orientation).

    The pixel count is read from the header and checked against MAX_IMAGE_PIXELS
    before anything is decoded. Raises ValueError with a one-line message (without
    the path) for anything else that goes wrong.
    """
    from PIL import BmpImagePlugin, Image, JpegImagePlugin, PngImagePlugin

    fmt = _sniff_format(data)
    if fmt is None:
        raise ValueError(f"the file starts with {data[:8]!r}")
    header = _png_header(data) if fmt == "PNG" else None
    if fmt == "PNG" and header is None:
        raise ValueError("PNG signature without a complete IHDR chunk")
    if header is not None:
        size = header[:2]
    else:
        # The plugin classes read the header only and, unlike Image.open, skip
        # Pillow's own bomb check (a warning below twice its limit).
        cls = {"JPEG": JpegImagePlugin.JpegImageFile, "BMP": BmpImagePlugin.BmpImageFile}[fmt]
        im = cls(io.BytesIO(data))
        size = im.size
    w, h = size
    if w * h > MAX_IMAGE_PIXELS:
        raise _TooLarge(f"{w}x{h} = {w * h} pixels exceeds the limit of {MAX_IMAGE_PIXELS} "
                        "pixels (a decompression bomb?)")
    if w < 1 or h < 1:
        raise ValueError(f"header gives a {w}x{h} image")
    if header is not None and header[2] == 16:
        img, exif_bytes = _read_png16(data)
        exif = Image.Exif()
        if exif_bytes:
            try:
                exif.load(exif_bytes)
            except Exception:  # a damaged eXIf chunk: ignored, as viewers do
                exif = Image.Exif()
        return img, _orientation(exif)
    if header is not None:
        im = PngImagePlugin.PngImageFile(io.BytesIO(data))
    # Converting to "RGB" maps palette, 1-bit, grey and CMYK images to RGB and drops
    # alpha without compositing.
    im.load()
    try:
        orientation = _orientation(im.getexif())
    except Exception:  # damaged EXIF: ignored, as viewers do
        orientation = 1
    return np.asarray(im.convert("RGB")), orientation


def read_image(path):
    """Read a PNG, JPEG or BMP file as RGB, as a viewer shows it: path -> (H, W, 3) uint8.

    Greyscale becomes three equal channels, alpha is dropped (not composited),
    16-bit samples become round(v * 255 / 65535), the EXIF orientation is applied.
    An image of more than MAX_IMAGE_PIXELS pixels is refused from its header,
    before decoding. Any file that cannot be decoded (missing, empty, truncated,
    not a PNG/JPEG/BMP image, too large) raises a one-line ValueError naming it.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read image {path}: {e.strerror or e}") from None
    not_an_image = f"image {path}: not a readable PNG/JPEG/BMP image"
    if not data:
        raise ValueError(f"{not_an_image} (the file is empty)")
    try:
        img, orientation = _decode(data)
    except _TooLarge as e:
        raise ValueError(f"image {path}: {e}") from None
    except MemoryError:
        raise ValueError(f"image {path}: not enough memory to decode it") from None
    except Exception as e:  # decoders raise OSError, SyntaxError, zlib.error, ...
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"{not_an_image} ({msg})") from None
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4) or img.size == 0:
        raise ValueError(f"{not_an_image} (unexpected pixel array shape {img.shape})")
    # Grey(+alpha) keeps channel 0, colour(+alpha) keeps channels 0..2.
    img = img[:, :, :1] if img.shape[2] <= 2 else img[:, :, :3]
    if img.dtype == np.uint16:
        img = _uint16_to_uint8(img)
    elif img.dtype != np.uint8:
        raise ValueError(f"{not_an_image} (unsupported sample type {img.dtype})")
    img = dihedral(img, _EXIF_ORIENTATION_TO_DIHEDRAL[orientation])
    return np.ascontiguousarray(np.broadcast_to(img, img.shape[:2] + (3,)))


def check_image(img, name="image"):
    """Raise ValueError unless img is an (H, W, 3) uint8 array with H, W >= 1."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 \
            or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{name}: expected an (H, W, 3) uint8 array, got {desc}")


def write_image(path, img):
    """Write an (H, W, 3) uint8 image atomically; the format follows the extension.

    The image goes to a temporary file in the same directory that replaces `path`
    only when complete, so a reader never sees half a file.
    """
    import imageio.v3 as iio

    check_image(img, f"write_image({path})")
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"write_image: {path}: extension must be one of {IMAGE_EXTENSIONS}")
    data = iio.imwrite("<bytes>", img, extension=ext)
    write_atomic(path, lambda f: f.write(data), suffix=ext)


def modcrop(img, scale):
    """Crop the bottom rows and right columns so H and W are multiples of scale.

    img: (H, W, ...) array -> (H - H % scale, W - W % scale, ...) view, as MATLAB's
    modcrop in the SR evaluation scripts (which keeps the top-left corner).
    """
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"modcrop: scale must be a positive integer, got {scale!r}")
    h, w = img.shape[:2]
    if h < scale or w < scale:
        raise ValueError(f"modcrop: image {img.shape} is smaller than the scale {scale}")
    return img[:h - h % scale, :w - w % scale]


def list_images(folder):
    """Image files directly in folder (png/jpg/jpeg/bmp, any case): sorted list of str paths."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"image folder {folder} does not exist or is not a directory")
    paths = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                   if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
                   and os.path.isfile(os.path.join(folder, n)))
    if not paths:
        raise ValueError(f"image folder {folder} holds no .png/.jpg/.jpeg/.bmp files")
    return paths


def dihedral(img, k):
    """One of the 8 flips/transposes of an image: (H, W, ...) -> view, k in 0..7.

    bit 2 transposes H and W first, bit 1 then flips rows, bit 0 flips columns;
    the 8 values give the whole dihedral group (all flips and 90-degree rotations).
    """
    if k & 4:
        img = np.swapaxes(img, 0, 1)
    if k & 2:
        img = img[::-1]
    if k & 1:
        img = img[:, ::-1]
    return img


def dihedral_inverse(img, k):
    """Undo dihedral(., k): the flips commute, so undo them, then the transpose."""
    if k & 1:
        img = img[:, ::-1]
    if k & 2:
        img = img[::-1]
    if k & 4:
        img = np.swapaxes(img, 0, 1)
    return img
