"""Patch sources: alignment of LR and HR, augmentation, seeding, folder handling."""
import numpy as np
import pytest

from fqsr_ref.data.dataset import (FolderSource, ProceduralSource, cut_interior_pair,
                                   sample_batch, to_nchw_float)
from fqsr_ref.data.images import dihedral, dihedral_inverse, write_image
from fqsr_ref.data.resize import bicubic_downscale
from fqsr_ref.data.synthetic import procedural_image


def _codes(x):
    """(N, 3, H, W) float32 codes/255 -> list of (H, W, 3) uint8 (exact inverse)."""
    return [np.rint(a.transpose(1, 2, 0) * 255).astype(np.uint8) for a in x]


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    # Noise: no two patches and no two flips of a patch are alike, so a test can
    # tell where a patch came from. Sizes are not multiples of the scale.
    for name, size in [("0001.png", (70, 83)), ("0002.png", (61, 64)), ("0003.bmp", (58, 75)),
                       ("tiny.png", (20, 20))]:  # too small for a 24 x 24 LR patch
        write_image(d / name, rng.integers(0, 256, size + (3,), dtype=np.uint8))
    return d


def _interior_matches(lr, hr, s, m=2):
    """Is lr the bicubic downscale of hr, away from the patch border, for some flip k?

    Downscaling the HR patch alone mirrors at its edges, so only pixels m >= 2 LR
    pixels in agree with the whole image's LR, and they agree exactly. The flip is
    undone first because a transposed image is resized with the passes in the other
    order, and each uint8 pass rounds.
    """
    return any(np.array_equal(dihedral_inverse(lr, k)[m:-m, m:-m],
                              bicubic_downscale(np.ascontiguousarray(dihedral_inverse(hr, k)), s)[m:-m, m:-m])
               for k in range(8))


def _locate(src, lr, hr):
    """(image, y, x, k) such that the pair is flip k of the aligned crops at LR (y, x)."""
    s, p = src.scale, lr.shape[0]
    found = []
    for k in range(8):
        lr0, hr0 = dihedral_inverse(lr, k), dihedral_inverse(hr, k)
        for i, img in enumerate(src.lr):
            # noise images: the first pixel pins down the few candidate positions
            for y, x in zip(*np.nonzero((img[:img.shape[0] - p + 1, :img.shape[1] - p + 1]
                                         == lr0[0, 0]).all(axis=2))):
                if np.array_equal(img[y:y + p, x:x + p], lr0) and \
                        np.array_equal(src.hr[i][s * y:s * (y + p), s * x:s * (x + p)], hr0):
                    found.append((i, int(y), int(x), k))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_folder_source_alignment_and_augmentation(hr_folder, scale):
    src = FolderSource(hr_folder, scale)
    assert len(src) == 4
    lr, hr = sample_batch(np.random.default_rng(1), src, batch=64, lr_patch=8, scale=scale)
    assert lr.shape == (64, 3, 8, 8) and hr.shape == (64, 3, 8 * scale, 8 * scale)
    assert lr.dtype == hr.dtype == np.float32 and lr.flags.c_contiguous and hr.flags.c_contiguous
    assert 0.0 <= lr.min() and hr.max() <= 1.0
    where = [_locate(src, a, b) for a, b in zip(_codes(lr), _codes(hr))]
    assert {k for *_, k in where} == set(range(8))  # every flip / rotation occurs
    assert len({(i, y, x) for i, y, x, _ in where}) > 50  # positions vary
    for a, b in zip(_codes(lr), _codes(hr)):
        assert _interior_matches(a, b, scale)


def test_seeded_determinism(hr_folder):
    for src in (FolderSource(hr_folder, 2), ProceduralSource()):
        a = sample_batch(np.random.default_rng(5), src, batch=3, lr_patch=10, scale=2)
        b = sample_batch(np.random.default_rng(5), src, batch=3, lr_patch=10, scale=2)
        c = sample_batch(np.random.default_rng(6), src, batch=3, lr_patch=10, scale=2)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert not np.array_equal(a[1], c[1])


def test_small_images_are_skipped_then_refused(hr_folder):
    src = FolderSource(hr_folder, 2)
    rng = np.random.default_rng(4)
    src.sample(rng, 16, 24, 2)  # tiny.png (10x10 LR) is never drawn, nothing fails
    assert src.eligible_images(24) == [0, 1, 2]
    with pytest.raises(ValueError, match="at least 40 x 40"):
        src.sample(rng, 1, 40, 2)
    with pytest.raises(ValueError, match="scale 2.*asked for 3"):
        src.sample(rng, 1, 8, 3)


def test_lr_folder_matching(tmp_path):
    rng = np.random.default_rng(9)
    (tmp_path / "hr").mkdir()
    (tmp_path / "lr").mkdir()
    hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    write_image(tmp_path / "hr" / "0001.png", hr)
    lr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)  # unrelated on purpose
    write_image(tmp_path / "lr" / "0001x2.png", lr)
    src = FolderSource(tmp_path / "hr", 2, lr_dir=tmp_path / "lr")
    for a, b in zip(*map(_codes, src.sample(np.random.default_rng(0), 8, 16, 2))):
        (k,) = [k for k in range(8) if np.array_equal(dihedral_inverse(b, k), hr)]
        np.testing.assert_array_equal(dihedral_inverse(a, k), lr)
    write_image(tmp_path / "lr" / "0001x2.png", lr[:15])
    with pytest.raises(ValueError, match="0001x2.png.*expected"):
        FolderSource(tmp_path / "hr", 2, lr_dir=tmp_path / "lr")
    with pytest.raises(ValueError, match="no LR image for .*0001.png"):
        FolderSource(tmp_path / "hr", 3, lr_dir=tmp_path / "lr")


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        FolderSource(tmp_path / "missing", 2)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ValueError, match="bad.png"):
        FolderSource(tmp_path, 2)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_interior_pair_is_a_crop_of_a_larger_image(scale):
    # The procedural LR patch must be what the same content gives inside a bigger
    # picture: embed the generated image in random surroundings, downscale the
    # whole, and cut the same place.
    rng = np.random.default_rng(scale)
    p, m = 6, 2
    big = procedural_image(rng, ((p + 2 * m) * scale,) * 2)
    lr, hr = cut_interior_pair(big, scale, m)
    assert lr.shape == (p, p, 3) and hr.shape == (p * scale, p * scale, 3)
    np.testing.assert_array_equal(hr, big[m * scale:(m + p) * scale, m * scale:(m + p) * scale])
    world = rng.integers(0, 256, ((p + 2 * m + 6) * scale, (p + 2 * m + 8) * scale, 3), dtype=np.uint8)
    oy, ox = 3, 5  # LR pixels
    world[oy * scale:oy * scale + big.shape[0], ox * scale:ox * scale + big.shape[1]] = big
    world_lr = bicubic_downscale(world, scale)
    np.testing.assert_array_equal(lr, world_lr[oy + m:oy + m + p, ox + m:ox + m + p])


def test_procedural_source_shapes():
    lr, hr = sample_batch(np.random.default_rng(0), ProceduralSource(), batch=2, lr_patch=8, scale=3)
    assert lr.shape == (2, 3, 8, 8) and hr.shape == (2, 3, 24, 24) and lr.dtype == np.float32
    assert _interior_matches(_codes(lr)[0], _codes(hr)[0], 3)


def test_to_nchw_float_is_codes_over_255():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 14
    x = to_nchw_float([img, dihedral(img, 3).copy()])
    assert x.shape == (2, 3, 2, 3)
    np.testing.assert_array_equal(x[0], img.transpose(2, 0, 1).astype(np.float32) / np.float32(255))


def test_sample_batch_arguments():
    src = ProceduralSource()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="Generator"):
        sample_batch(np.random.RandomState(0), src)
    for kw in ({"batch": 0}, {"lr_patch": -1}, {"scale": 2.0}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            sample_batch(rng, src, **kw)
    with pytest.raises(ValueError, match="margin"):
        ProceduralSource(margin=-1)
