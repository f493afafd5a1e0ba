"""Image reading edge cases, atomic writing, modcrop, listing, rounding, dihedral transforms."""
import os
import struct
import zlib
from fractions import Fraction

import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import example, given, strategies as st

from fqsr_ref.data.images import (dihedral, dihedral_inverse, float_to_uint8, list_images,
                                  modcrop, read_image, round_half_up, write_image)


def _png16(path, samples, colour_type, filters):
    """Write a 16-bit PNG by hand, row r filtered with filters[r % len(filters)].

    Pillow cannot write 16-bit colour PNGs, and reading them through Pillow
    truncates to 8 bits, which is what read_image must avoid.
    """
    h, w, c = samples.shape
    raw = samples.astype(">u2").reshape(h, w * c).view(np.uint8).astype(np.int32)
    bpp = 2 * c
    rows = []
    for y in range(h):
        f = filters[y % len(filters)]
        cur = raw[y]
        up = raw[y - 1] if y > 0 else np.zeros_like(cur)
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        if f == 0:
            pred = 0
        elif f == 1:
            pred = left
        elif f == 2:
            pred = up
        elif f == 3:
            pred = (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        rows.append(bytes([f]) + ((cur - pred) & 255).astype(np.uint8).tobytes())

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                 + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def _expected_8bit(v):
    # round(v * 255 / 65535), half up, in exact rationals
    return np.vectorize(lambda x: int(Fraction(int(x) * 255, 65535) + Fraction(1, 2)))(v)


def test_grey_becomes_three_equal_channels(tmp_path):
    g = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    iio.imwrite(tmp_path / "g.png", g)
    img = read_image(tmp_path / "g.png")
    assert img.dtype == np.uint8 and img.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], g)


def test_alpha_is_dropped_not_composited(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: compositing would change the colours
    iio.imwrite(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])
    la = np.stack([rgba[..., 0], rgba[..., 3]], axis=-1)
    iio.imwrite(tmp_path / "la.png", la)
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), np.repeat(la[..., :1], 3, 2))


def test_16bit_grey_rounds_to_8bit(tmp_path):
    # v * 255 / 65535: 128 -> 0.498, 129 -> 0.502, 32767 -> 127.498, 32768 -> 127.502,
    # 65406 -> 254.498, 65407 -> 254.502
    v = np.array([[0, 128, 129, 257, 32767, 32768, 65406, 65407]], dtype=np.uint16)
    iio.imwrite(tmp_path / "g16.png", v)
    img = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(img[..., 0], [[0, 0, 1, 1, 127, 128, 254, 255]])


@pytest.mark.parametrize("colour_type,channels", [(2, 3), (6, 4), (0, 1), (4, 2)])
def test_16bit_png_every_filter_type(tmp_path, colour_type, channels):
    rng = np.random.default_rng(colour_type)
    v = rng.integers(0, 65536, (10, 9, channels), dtype=np.uint16)
    v[0, 0, 0], v[0, 1, 0] = 1000, 40000  # Pillow would give 3 and 156, rounding 4 and 156
    _png16(tmp_path / "c16.png", v, colour_type, filters=[0, 1, 2, 3, 4])
    img = read_image(tmp_path / "c16.png")
    colour = v[..., :3] if channels >= 3 else np.repeat(v[..., :1], 3, axis=2)
    np.testing.assert_array_equal(img, _expected_8bit(colour))
    assert img[0, 0, 0] == 4


def test_bmp_and_jpeg_read(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "x.BMP", img)
    np.testing.assert_array_equal(read_image(tmp_path / "x.BMP"), img)
    iio.imwrite(tmp_path / "x.jpg", img)
    assert read_image(tmp_path / "x.jpg").shape == (16, 12, 3)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp"])
def test_truncated_file_names_the_file(tmp_path, ext):
    rng = np.random.default_rng(2)
    full = tmp_path / f"full{ext}"
    iio.imwrite(full, rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    data = full.read_bytes()
    bad = tmp_path / f"cut{ext}"
    bad.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=f"cut{ext}"):
        read_image(bad)


def test_truncated_16bit_png_names_the_file(tmp_path):
    _png16(tmp_path / "c16.png", np.ones((8, 8, 3), np.uint16), 2, [0])
    data = (tmp_path / "c16.png").read_bytes()
    (tmp_path / "cut16.png").write_bytes(data[:len(data) - 20])
    with pytest.raises(ValueError, match="cut16.png"):
        read_image(tmp_path / "cut16.png")


def test_empty_missing_and_not_an_image(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.png.*empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ValueError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("this is not a picture\n" * 20)
    with pytest.raises(ValueError, match="text.png"):
        read_image(tmp_path / "text.png")


def test_write_image_round_trip_leaves_no_temp(tmp_path):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    write_image(tmp_path / "out.png", img)
    write_image(tmp_path / "out.png", img[::-1].copy())  # replaces in place
    np.testing.assert_array_equal(read_image(tmp_path / "out.png"), img[::-1])
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "f.png", img.astype(np.float32))
    with pytest.raises(ValueError, match="extension"):
        write_image(tmp_path / "f.tif", img)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_modcrop():
    img = np.zeros((10, 13, 3), np.uint8)
    assert modcrop(img, 3).shape == (9, 12, 3)
    assert modcrop(img, 4).shape == (8, 12, 3)
    assert modcrop(img, 1).shape == (10, 13, 3)
    marked = np.arange(10 * 13).reshape(10, 13)
    np.testing.assert_array_equal(modcrop(marked, 4), marked[:8, :12])  # keeps top-left
    with pytest.raises(ValueError, match="scale"):
        modcrop(img, 0)
    with pytest.raises(ValueError, match="smaller"):
        modcrop(np.zeros((2, 5, 3), np.uint8), 3)


def test_list_images(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.jpeg", "d.Bmp", "notes.txt", "e.tif", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    got = [os.path.basename(p) for p in list_images(tmp_path)]
    assert got == ["a.jpg", "b.PNG", "c.jpeg", "d.Bmp"]
    with pytest.raises(ValueError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*no .png"):
        list_images(tmp_path / "empty")


@given(st.floats(-1e6, 1e6, allow_nan=False))
@example(0.49999999999999994)  # floor(x + 0.5) gives 1 here
@example(2.5)
@example(-0.5)
def test_round_half_up_is_exact(x):
    assert round_half_up(x) == int((Fraction(x) + Fraction(1, 2)).__floor__())


def test_float_to_uint8_clamps_and_rejects_nan():
    np.testing.assert_array_equal(float_to_uint8([-3.0, -0.5, 0.49999999999999994, 0.5, 254.5, 300.0]),
                                  [0, 0, 0, 1, 255, 255])
    with pytest.raises(ValueError, match="NaN"):
        float_to_uint8([1.0, np.nan])


def test_dihedral_group():
    img = np.arange(3 * 5 * 2).reshape(3, 5, 2)
    seen = set()
    for k in range(8):
        t = dihedral(img, k)
        assert t.shape in ((3, 5, 2), (5, 3, 2))
        np.testing.assert_array_equal(dihedral_inverse(t, k), img)
        seen.add(t.tobytes() + bytes(t.shape))
    assert len(seen) == 8
    np.testing.assert_array_equal(dihedral(img, 5), np.rot90(img, k=-1))  # transpose + flip columns


def test_bundled_photos_load():
    from fqsr_ref.data import photos_dir

    paths = list_images(photos_dir())
    assert len(paths) == 8 and os.path.isfile(os.path.join(photos_dir(), "README.md"))
    for p in paths:
        img = read_image(p)
        assert img.shape == (240, 240, 3) and img.std() > 10


# --- Decompression bombs, files that are not images, EXIF orientation -----------------------

def _png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _png_bomb(path, width, height, depth, colour_type=2):
    """A PNG whose IHDR claims width x height but whose IDAT is a few kilobytes.

    The IDAT holds (a small part of) the all-zero rows such an image would have:
    a decoder that trusts the header allocates width * height pixels first.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    idat = zlib.compress(bytes(1 + width * 3 * depth // 8) * 64, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("depth", [16, 8])
def test_png_bomb_is_refused_before_decoding(tmp_path, depth):
    import tracemalloc

    bomb = _png_bomb(tmp_path / f"bomb{depth}.png", 20000, 20000, depth)
    assert bomb.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            read_image(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert "\n" not in msg
    assert f"bomb{depth}.png" in msg and "20000x20000" in msg and "89478485" in msg
    assert peak < 50_000_000  # nothing near the 2.4 GB the header asks for was allocated


def test_pixel_limit_is_pillows_default_and_applies_to_every_format(tmp_path, monkeypatch):
    from PIL import Image

    import fqsr_ref.data.images as images

    assert images.MAX_IMAGE_PIXELS == 89478485 == Image.MAX_IMAGE_PIXELS
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    for ext in (".png", ".jpg", ".bmp"):
        iio.imwrite(tmp_path / f"x{ext}", img)
    _png16(tmp_path / "x16.png", np.ones((10, 12, 3), np.uint16), 2, [0])
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 120)  # exactly at the limit: accepted
    for name in ("x.png", "x.jpg", "x.bmp", "x16.png"):
        assert read_image(tmp_path / name).shape == (10, 12, 3)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 119)
    for name in ("x.png", "x.jpg", "x.bmp", "x16.png"):
        with pytest.raises(ValueError, match=rf"{name}.*12x10 .*limit of 119 pixels"):
            read_image(tmp_path / name)


def test_16bit_png_with_more_pixel_data_than_its_header_is_refused(tmp_path):
    # a 4x4 header with 1000 rows of data: inflating all of it is a bomb of its own
    ihdr = struct.pack(">IIBBBBB", 4, 4, 16, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1000 * (1 + 4 * 6)), 9)
    (tmp_path / "long16.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                                          + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    with pytest.raises(ValueError, match="long16.png.*not a readable PNG/JPEG/BMP image.*more"):
        read_image(tmp_path / "long16.png")


@pytest.mark.parametrize("name,content", [
    ("text.png", b"this is not a picture\n" * 20),
    ("text.jpg", b"hello"),
    ("zero.bmp", bytes(100)),
    ("half.png", b"\x89PNG\r\n"),
])
def test_not_an_image_says_so_in_one_line(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=rf"{name}: not a readable PNG/JPEG/BMP image") as info:
        read_image(tmp_path / name)
    assert "\n" not in str(info.value) and "pillow" not in str(info.value).lower()


def test_other_formats_are_refused(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "really_a.gif.png", format="GIF")
    with pytest.raises(ValueError, match="really_a.gif.png: not a readable PNG/JPEG/BMP image"):
        read_image(tmp_path / "really_a.gif.png")


def _blocks(h, w):
    """An (h, w, 3) image of four flat quadrants (red, green, blue, white): JPEG keeps them."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:h // 2, :w // 2] = (255, 0, 0)
    img[:h // 2, w // 2:] = (0, 255, 0)
    img[h // 2:, :w // 2] = (0, 0, 255)
    img[h // 2:, w // 2:] = 255
    return img


def _save_with_orientation(path, img, orientation, **kw):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(path, exif=exif.tobytes(), **kw)


def test_jpeg_exif_orientation_6_is_applied(tmp_path):
    # stored 240 rows x 480 columns; orientation 6 means "rotate 90 degrees clockwise to view"
    _save_with_orientation(tmp_path / "rot6.jpg", _blocks(240, 480), 6, quality=95)
    img = read_image(tmp_path / "rot6.jpg")
    assert img.shape == (480, 240, 3)  # what a viewer shows
    # clockwise: the stored bottom-left (blue) lands top-left, the top-left (red) top-right
    np.testing.assert_allclose(img[60, 60], (0, 0, 255), atol=8)
    np.testing.assert_allclose(img[60, 180], (255, 0, 0), atol=8)
    np.testing.assert_allclose(img[420, 60], (255, 255, 255), atol=8)
    np.testing.assert_allclose(img[420, 180], (0, 255, 0), atol=8)


# What a viewer shows for each EXIF orientation, written independently of the code under test.
_VIEWED = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1],
           4: lambda a: a[::-1], 5: lambda a: np.swapaxes(a, 0, 1),
           6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a[:, ::-1], -1),
           8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("orientation", range(2, 9))  # 1 (upright) is what the other tests read
def test_every_exif_orientation(tmp_path, orientation):
    from PIL import Image, ImageOps

    rng = np.random.default_rng(orientation)
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    # lossless PNG (eXIf chunk): exact comparison with numpy and with Pillow's exif_transpose
    _save_with_orientation(tmp_path / "o.png", img, orientation)
    got = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(got, _VIEWED[orientation](img))
    with Image.open(tmp_path / "o.png") as im:
        np.testing.assert_array_equal(got, np.asarray(ImageOps.exif_transpose(im).convert("RGB")))
    # JPEG: the same pixels as Pillow's decoder followed by exif_transpose
    _save_with_orientation(tmp_path / "o.jpg", _blocks(16, 24), orientation, quality=90)
    with Image.open(tmp_path / "o.jpg") as im:
        want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "o.jpg"), want)
    # 16-bit PNG (own decoder) with an eXIf chunk before IDAT
    v = rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    _png16(tmp_path / "o16.png", v, 2, [0])
    data = (tmp_path / "o16.png").read_bytes()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = data[:33] + _png_chunk(b"eXIf", exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif")
                                  else exif.tobytes()) + data[33:]
    (tmp_path / "o16.png").write_bytes(data)
    np.testing.assert_array_equal(read_image(tmp_path / "o16.png"),
                                  _VIEWED[orientation](_expected_8bit(v)))
