"""MATLAB-compatible bicubic imresize: hand-derived values and properties."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fqsr_ref.data.images import float_to_uint8
from fqsr_ref.data.resize import (bicubic_downscale, bicubic_upscale, contributions, cubic,
                                  imresize, imresize_uint8)


def test_cubic_kernel_values():
    # a = -0.5: 1.5|x|^3 - 2.5|x|^2 + 1 inside 1, -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 inside 2
    x = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, -0.5, -1.5])
    want = [1.0, 111 / 128, 0.5625, 29 / 128, 0.0, -9 / 128, -0.0625, -3 / 128, 0.0, 0.0,
            0.5625, -0.0625]
    np.testing.assert_array_equal(cubic(x), want)


def test_weights_x2_down():
    # Shrinking by 2 widens the kernel: h(d) = k(d/2)/2 over 8 taps. Output pixel 1
    # samples u = 1/0.5 + 0.5 (1 - 2) = 1.5; taps -2..5 (1-based) sit at distances
    # 3.5, 2.5, 1.5, 0.5, -0.5, ..., -3.5, so the weights are
    # k(1.75)/2, k(1.25)/2, k(0.75)/2, k(0.25)/2, ... = [-3, -9, 29, 111, 111, 29, -9, -3]/256,
    # already summing to one. On a length-4 input the taps mirror: -2 -> 3, -1 -> 2,
    # 0 -> 1, 5 -> 4 (1-based), i.e. 0-based [2 1 0 0 1 2 3 3].
    w, idx = contributions(4, 2, 0.5)
    np.testing.assert_array_equal(w * 256, [[-3, -9, 29, 111, 111, 29, -9, -3]] * 2)
    np.testing.assert_array_equal(idx, [[2, 1, 0, 0, 1, 2, 3, 3], [0, 0, 1, 2, 3, 3, 2, 1]])


def test_weights_x2_up():
    # Enlarging by 2: u = i/2 + 1/4, so outputs sit at 0.75, 1.25, 1.75, ... (1-based
    # input coordinates). Output 1: taps -1, 0, 1, 2 at distances 1.75, 0.75, -0.25,
    # -1.25 -> [-3, 29, 111, -9]/128; output 2 is the mirror image [-9, 111, 29, -3]/128.
    w, idx = contributions(4, 8, 2.0)
    np.testing.assert_array_equal(w * 128, [[-3, 29, 111, -9], [-9, 111, 29, -3]] * 4)
    np.testing.assert_array_equal(idx[:2], [[1, 0, 0, 1], [0, 0, 1, 2]])
    np.testing.assert_array_equal(idx[-1], [2, 3, 3, 2])


def test_4x4_to_2x2_by_hand():
    # From the x2-down weights and mirrored taps above, a length-4 signal [a b c d]
    # shrinks to
    #   out1 = (29a + 111a + 111b - 9b + 29c - 3c - 9d - 3d)/256 ... collecting terms:
    #   out1 = (140a + 102b + 26c - 12d)/256,  out2 = (-12a + 26b + 102c + 140d)/256.
    # Rows 0, 64, 128, 192 (constant along each row) give
    #   out1 = (64*102 + 128*26 - 192*12)/256 = 7552/256 = 29.5
    #   out2 = (64*26 + 128*102 + 192*140)/256 = 41600/256 = 162.5
    # and the constant direction stays constant. Both land on .5: uint8 rounds up.
    img = np.repeat(np.array([0.0, 64, 128, 192])[:, None], 4, axis=1)
    np.testing.assert_array_equal(imresize(img, 0.5), [[29.5, 29.5], [162.5, 162.5]])
    np.testing.assert_array_equal(imresize(img.T, 0.5), [[29.5, 162.5], [29.5, 162.5]])
    np.testing.assert_array_equal(imresize_uint8(img.astype(np.uint8), 0.5), [[30, 30], [163, 163]])
    m = np.array([[140, 102, 26, -12], [-12, 26, 102, 140]]) / 256
    x = np.random.default_rng(0).random((4, 4))
    np.testing.assert_allclose(imresize(x, 0.5), m @ x @ m.T, rtol=0, atol=1e-14)


@settings(max_examples=40)
@given(n=st.integers(1, 40), scale=st.sampled_from([1 / 4, 1 / 3, 1 / 2, 2 / 3, 1.0, 1.5, 2.0, 3.0, 4.0]))
def test_weights_sum_to_one(n, scale):
    out = math.ceil(n * scale)
    w, idx = contributions(n, out, scale)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert idx.min() >= 0 and idx.max() < n and w.shape == (out, idx.shape[1])


@settings(max_examples=30)
@given(h=st.integers(1, 20), w=st.integers(1, 20), value=st.integers(0, 255),
       scale=st.sampled_from([1 / 4, 1 / 3, 1 / 2, 2.0, 3.0, 4.0, 0.7]))
def test_constant_stays_constant(h, w, value, scale):
    img = np.full((h, w, 3), value, np.uint8)
    out = imresize_uint8(img, scale)
    assert out.shape == (math.ceil(h * scale), math.ceil(w * scale), 3)
    assert np.all(out == value)
    np.testing.assert_allclose(imresize(img.astype(np.float32) / 255, scale), value / 255, atol=1e-12)


def _smooth(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return 128 + 60 * np.sin(2 * np.pi * x / 17 + 0.3) * np.cos(2 * np.pi * y / 23) \
        + 20 * np.sin(2 * np.pi * (x + y) / 29)


@pytest.mark.parametrize("s", [2, 3, 4])
def test_downscale_of_upscale_stays_close(s):
    img = _smooth(40, 36)
    back = imresize(imresize(img, float(s)), 1.0 / s)
    assert back.shape == img.shape
    # the mirrored boundary costs up to ~1 near the edges; inside it is near exact
    assert np.abs(back - img).max() < 1.5
    assert np.abs(back - img)[4:-4, 4:-4].max() < 0.1


def test_output_size_and_output_shape():
    img = np.zeros((7, 10))
    assert imresize(img, 0.5).shape == (4, 5)      # ceil(3.5), ceil(5)
    assert imresize(img, 1 / 3).shape == (3, 4)
    assert imresize(img, output_shape=(5, 20)).shape == (5, 20)
    assert imresize(np.zeros((300, 600, 3), np.uint8), 1 / 3).shape == (100, 200, 3)


def test_flip_equivariance_from_symmetric_boundary():
    # holds when scale * size is a whole number, so the output grid is centred
    x = np.random.default_rng(1).random((12, 18, 3))
    for s in (0.5, 1 / 3, 2.0, 3.0):
        np.testing.assert_allclose(imresize(x[::-1, ::-1], s), imresize(x, s)[::-1, ::-1],
                                   rtol=0, atol=1e-12)


def test_uint8_rounds_after_each_pass():
    # MATLAB resizes uint8 images one axis at a time and each pass returns uint8.
    # output_shape with one axis unchanged runs exactly one pass (scale 1 is the
    # identity: k(0) = 1, k(+-1) = k(+-2) = 0).
    img = np.random.default_rng(2).integers(0, 256, (24, 18, 3), dtype=np.uint8)
    rows = float_to_uint8(imresize(img, output_shape=(12, 18)))
    want = float_to_uint8(imresize(rows, output_shape=(12, 9)))
    np.testing.assert_array_equal(imresize_uint8(img, 0.5), want)
    assert np.abs(imresize_uint8(img, 0.5).astype(int) - float_to_uint8(imresize(img, 0.5))).max() <= 1


def test_bicubic_down_and_up():
    img = np.random.default_rng(3).integers(0, 256, (24, 36, 3), dtype=np.uint8)
    for s in (2, 3, 4):
        lr = bicubic_downscale(img, s)
        assert lr.dtype == np.uint8 and lr.shape == (24 // s, 36 // s, 3)
        np.testing.assert_array_equal(lr, imresize_uint8(img, 1 / s))
        up = bicubic_upscale(lr, s)
        assert up.dtype == np.uint8 and up.shape == img.shape
    with pytest.raises(ValueError, match="modcrop"):
        bicubic_downscale(img[:23], 2)
    with pytest.raises(ValueError, match="uint8"):
        bicubic_downscale(img.astype(np.float64), 2)
    with pytest.raises(ValueError, match="scale"):
        bicubic_upscale(img, 1.5)


def test_bad_arguments():
    img = np.zeros((4, 4))
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img, 0.5, output_shape=(2, 2))
    with pytest.raises(ValueError, match="positive"):
        imresize(img, -2.0)
    with pytest.raises(ValueError, match="output_shape"):
        imresize(img, output_shape=(0, 3))
    with pytest.raises(ValueError, match="non-empty"):
        imresize(np.zeros((0, 4)), 2.0)
    with pytest.raises(ValueError, match="dtype"):
        imresize(np.zeros((4, 4), bool), 2.0)
    with pytest.raises(ValueError, match="uint8"):
        imresize_uint8(img, 2.0)
