"""Evaluation protocol: Y channel, PSNR, SSIM, self-ensemble, folder evaluation."""
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from fqsr_ref.data.images import read_image, write_image
from fqsr_ref.data.resize import bicubic_downscale, bicubic_upscale
from fqsr_ref.data.synthetic import procedural_image
from fqsr_ref.metrics import (SSIM_C1, SSIM_C2, EvalRow, evaluate_folder, evaluate_pair,
                              gaussian_window_1d, psnr_y, rgb_to_y, self_ensemble, ssim_y)


def _grey(h, w, v):
    return np.full((h, w, 3), v, np.uint8)


def test_rgb_to_y_values():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(rgb_to_y(px), [[16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966]],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(rgb_to_y(px.astype(np.float64) / 255), rgb_to_y(px), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="uint8 or float"):
        rgb_to_y(px.astype(np.int32))


def test_psnr_identical_and_constant_offset():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 200, (20, 24, 3), dtype=np.uint8)
    assert psnr_y(hr, hr, 2) == math.inf
    # adding d to R, G and B moves Y by d * (65.481 + 128.553 + 24.966) / 255 = d * 219/255
    for d in (1, 5, 40):
        want = 10 * math.log10(255 ** 2 / (d * 219 / 255) ** 2)
        assert psnr_y(hr + np.uint8(d), hr, 2) == pytest.approx(want, abs=1e-9)


def test_crop_removes_the_border():
    hr = _grey(18, 18, 100)
    sr = hr.copy()
    sr[:3] = 0
    sr[:, -3:] = 255
    assert psnr_y(sr, hr, 3) == math.inf
    assert psnr_y(sr, hr, 2) < 20
    assert evaluate_pair(sr, hr, 3)[0] == math.inf
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr_y(sr, hr, 9)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_y(sr[:-1], hr, 2)
    with pytest.raises(ValueError, match="uint8"):
        psnr_y(sr.astype(np.float64), hr, 2)


def test_ssim_identical_and_flat_closed_form():
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    assert ssim_y(hr, hr, 2) == pytest.approx(1.0, abs=1e-12)
    # two flat images: no variance, SSIM = (2 mu1 mu2 + C1) / (mu1^2 + mu2^2 + C1)
    a, b = _grey(20, 20, 100), _grey(20, 20, 140)
    m1, m2 = rgb_to_y(a)[0, 0], rgb_to_y(b)[0, 0]
    want = (2 * m1 * m2 + SSIM_C1) / (m1 ** 2 + m2 ** 2 + SSIM_C1)
    assert ssim_y(a, b, 2) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        ssim_y(_grey(14, 14, 0), _grey(14, 14, 0), 2)


def _ssim_loop_twin(y1, y2):
    """SSIM the slow way: the 2-D 11x11 window applied at every valid position."""
    g = gaussian_window_1d()
    win = np.outer(g, g)
    values = []
    for p1, p2 in zip(sliding_window_view(y1, (11, 11)).reshape(-1, 11, 11),
                      sliding_window_view(y2, (11, 11)).reshape(-1, 11, 11)):
        m1, m2 = (win * p1).sum(), (win * p2).sum()
        v1 = (win * (p1 - m1) ** 2).sum()
        v2 = (win * (p2 - m2) ** 2).sum()
        c = (win * (p1 - m1) * (p2 - m2)).sum()
        values.append((2 * m1 * m2 + SSIM_C1) * (2 * c + SSIM_C2)
                      / ((m1 ** 2 + m2 ** 2 + SSIM_C1) * (v1 + v2 + SSIM_C2)))
    return np.mean(values)


@settings(max_examples=8)
@given(seed=st.integers(0, 2 ** 32 - 1), h=st.integers(15, 24), w=st.integers(15, 24))
def test_ssim_matches_direct_window(seed, h, w):
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-30, 31, hr.shape), 0, 255).astype(np.uint8)
    want = _ssim_loop_twin(rgb_to_y(sr[2:-2, 2:-2]), rgb_to_y(hr[2:-2, 2:-2]))
    assert ssim_y(sr, hr, 2) == pytest.approx(want, abs=1e-10)
    assert ssim_y(sr, hr, 2) == pytest.approx(ssim_y(hr, sr, 2), abs=1e-12)


def test_gaussian_window():
    g = gaussian_window_1d()
    assert g.shape == (11,) and g.sum() == pytest.approx(1.0)
    assert g[5] / g[4] == pytest.approx(math.exp(1 / (2 * 1.5 ** 2)))


def _nearest(lr):
    return np.repeat(np.repeat(lr, 2, axis=0), 2, axis=1)


def test_self_ensemble_of_equivariant_fn_is_the_fn():
    lr = np.random.default_rng(2).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(self_ensemble(_nearest, lr), _nearest(lr))


def test_self_ensemble_averages_in_float_then_rounds_half_up():
    lr = np.random.default_rng(3).integers(0, 200, (5, 6, 3), dtype=np.uint8)
    calls = []

    def biased(x):
        # the k-th call adds k: the mean bias is 3.5, which must round up to +4
        calls.append(x.shape)
        return _nearest(x).astype(np.float64) + (len(calls) - 1)

    np.testing.assert_array_equal(self_ensemble(biased, lr), _nearest(lr) + 4)
    assert calls.count((5, 6, 3)) == 4 and calls.count((6, 5, 3)) == 4  # 4 transposed inputs

    def flips_back_wrongly(x):
        return _nearest(x[::-1])

    assert not np.array_equal(self_ensemble(flips_back_wrongly, lr), _nearest(lr))
    with pytest.raises(ValueError, match="shape"):
        self_ensemble(lambda x: _nearest(x)[:, :-1], lr)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(4)
    write_image(d / "b.png", procedural_image(rng, (50, 62)))  # not a multiple of 3 or 4
    write_image(d / "a.png", procedural_image(rng, (48, 48)))
    return d


def test_evaluate_folder_bicubic(photo_folder):
    rows, mean = evaluate_folder(None, photo_folder, 3)
    assert [r.name for r in rows] == ["a.png", "b.png"]
    for r in rows:
        assert r.psnr == r.bicubic_psnr and r.ssim == r.bicubic_ssim and 15 < r.psnr < 60
    assert mean == EvalRow("mean", *(np.mean([getattr(r, f) for r in rows]) for f in EvalRow._fields[1:]))
    hr = read_image(photo_folder / "b.png")[:48, :60]
    want = evaluate_pair(bicubic_upscale(bicubic_downscale(hr, 3), 3), hr, 3)
    assert (rows[1].bicubic_psnr, rows[1].bicubic_ssim) == want


def test_evaluate_folder_model_and_saved_images(photo_folder, tmp_path):
    hrs = {}
    for p in ("a.png", "b.png"):
        hr = read_image(photo_folder / p)
        hrs[bicubic_downscale(hr[:hr.shape[0] // 2 * 2, :hr.shape[1] // 2 * 2], 2).tobytes()] = hr

    def oracle(lr):  # returns the true HR: infinite PSNR, SSIM 1
        hr = hrs[lr.tobytes()]
        return hr[:2 * lr.shape[0], :2 * lr.shape[1]].astype(np.float32)

    rows, mean = evaluate_folder(oracle, photo_folder, 2, save_dir=tmp_path / "out")
    assert all(r.psnr == math.inf and r.ssim == pytest.approx(1.0) for r in rows)
    assert mean.bicubic_psnr < 60
    assert sorted(os.listdir(tmp_path / "out")) == ["a_x2_compare.png", "a_x2_sr.png",
                                                    "b_x2_compare.png", "b_x2_sr.png"]
    sr = read_image(tmp_path / "out" / "b_x2_sr.png")
    np.testing.assert_array_equal(sr, read_image(photo_folder / "b.png")[:50, :62])
    assert read_image(tmp_path / "out" / "b_x2_compare.png").shape == (50, 3 * 62 + 8, 3)

    rows_e, _ = evaluate_folder(_nearest, photo_folder, 2, self_ensemble=True)
    rows_n, _ = evaluate_folder(_nearest, photo_folder, 2)
    assert rows_e == rows_n  # nearest-neighbour is flip-equivariant
    with pytest.raises(ValueError, match="a.png.*shape"):
        evaluate_folder(lambda lr: lr, photo_folder, 2)


def test_evaluate_folder_names_an_image_too_small(tmp_path):
    write_image(tmp_path / "small.png", procedural_image(np.random.default_rng(5), (14, 14)))
    with pytest.raises(ValueError, match="small.png.*11x11"):
        evaluate_folder(None, tmp_path, 2)
