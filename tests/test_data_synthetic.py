"""Procedural images: seeded, varied, anti-aliased, fast."""
import time

import numpy as np
import pytest

from fqsr_ref.data import synthetic
from fqsr_ref.data.synthetic import procedural_image


def test_shape_dtype_and_seeded():
    a = procedural_image(np.random.default_rng(7), (40, 56))
    b = procedural_image(np.random.default_rng(7), (40, 56))
    c = procedural_image(np.random.default_rng(8), (40, 56))
    assert a.dtype == np.uint8 and a.shape == (40, 56, 3) and a.flags.c_contiguous
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_content_is_varied():
    rng = np.random.default_rng(0)
    imgs = [procedural_image(rng, (64, 64)).astype(np.float64) for _ in range(60)]
    # detail: mean absolute horizontal difference per image
    detail = np.array([np.abs(np.diff(im, axis=1)).mean() for im in imgs])
    assert (detail > 0).all()
    assert np.percentile(detail, 90) > 3 * np.percentile(detail, 10)
    # colour: some images near grey, some strongly coloured
    chroma = np.array([np.abs(im - im.mean(axis=2, keepdims=True)).mean() for im in imgs])
    assert chroma.min() < 10 and chroma.max() > 40
    # brightness spans most of the range
    means = np.array([im.mean() for im in imgs])
    assert means.min() < 90 and means.max() > 165
    # no two images alike
    assert len({im.tobytes() for im in imgs}) == len(imgs)


def test_stroke_coverage_is_pixel_overlap():
    # an axis-aligned line of width w at distance d from a pixel centre covers
    # |[d - w/2, d + w/2] & [-1/2, 1/2]| of that pixel
    d = np.array([0.0, 0.0, 0.0, 0.5, 1.0, 0.25, 3.0])
    w = np.array([1.0, 0.5, 3.0, 1.0, 1.0, 0.5, 2.0])
    np.testing.assert_allclose(synthetic._coverage_of_stroke(d, w),
                               [1.0, 0.5, 1.0, 0.5, 0.0, 0.5, 0.0])
    np.testing.assert_allclose(synthetic._coverage_of_sdf(np.array([-2.0, -0.5, 0.0, 0.25, 0.5, 3.0])),
                               [1.0, 1.0, 0.5, 0.25, 0.0, 0.0])


def test_segment_distance():
    segs = np.array([[0.0, 0.0, 4.0, 0.0], [10.0, 10.0, 10.0, 10.0]])  # a bar and a dot
    ys = np.array([[0.0], [3.0], [10.0]])
    xs = np.array([[-3.0, 2.0, 13.0]])
    got = synthetic._segment_distance(segs, ys, xs)
    np.testing.assert_allclose(got, [[3.0, 0.0, 9.0],
                                     [np.hypot(3, 3), 3.0, np.hypot(3, 7)],
                                     [np.hypot(3, 10), 8.0, 3.0]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="Generator"):
        procedural_image(np.random.RandomState(0), (8, 8))
    with pytest.raises(ValueError, match="size"):
        procedural_image(np.random.default_rng(0), (0, 8))


def test_fast_enough_for_on_the_fly_training():
    rng = np.random.default_rng(1)
    procedural_image(rng, (96, 96))
    t0 = time.perf_counter()
    for _ in range(20):
        procedural_image(rng, (96, 96))
    per_image = (time.perf_counter() - t0) / 20
    # about 3.5 ms on a 2-core machine; the bound leaves room for a loaded CI box
    assert per_image < 0.03, f"{per_image * 1e3:.1f} ms per 96x96 image"
