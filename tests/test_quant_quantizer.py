"""Properties of the Eq. 3 quantizer, its rounding and its straight-through backward."""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gradcheck import assert_grad
from fqsr_ref.quant import (QuantSpec, dequantize, levels, quantize_backward, quantize_forward,
                            round_half_up, scale)

# ---------------------------------------------------------------- strategies and helpers

specs = st.one_of(
    st.builds(QuantSpec, st.integers(2, 16), st.just(True), st.just("narrow")),
    st.builds(QuantSpec, st.integers(1, 16), st.just(True), st.just("dorefa")),
    st.builds(QuantSpec, st.integers(1, 16), st.just(False), st.sampled_from(["narrow"])),
)
intervals = st.floats(1e-3, 1e3)
# v / I spans the clip range and beyond on both sides.
ratios = arrays(np.float64, st.integers(1, 40), elements=st.floats(-2.5, 2.5))


def clip_bounds(spec):
    return (-1.0, 1.0) if spec.signed else (0.0, 1.0)


def scaled_t(v, interval, spec):
    """t of Eq. 3 as the quantizer computes it (the value that gets rounded)."""
    n, _, _ = levels(spec)
    lo, hi = clip_bounds(spec)
    c = np.clip(v / interval, lo, hi)
    return (c + 1) / 2 * n if spec.grid == "dorefa" and spec.signed else c * n


def step(interval, spec):
    """Distance between neighbouring levels (2 I / n on the dorefa grid)."""
    n, _, _ = levels(spec)
    return interval / n * (2 if spec.grid == "dorefa" and spec.signed else 1)


def surrogate(v, interval, spec, offset):
    """The STE surrogate: Eq. 3 with round(t) replaced by t + offset, the offset
    round(t0) - t0 frozen at the point where the gradient is taken. Its exact
    derivatives are the STE formulas; finite differences of it check them."""
    n, _, _ = levels(spec)
    k = scaled_t(v, interval, spec) + offset
    code = 2 * k - n if spec.grid == "dorefa" and spec.signed else k
    return code * interval / n


def frozen_offset(v, interval, spec):
    t = scaled_t(v, interval, spec)
    return round_half_up(t) - t


# ---------------------------------------------------------------- round_half_up


def exact_round_half_up(t):
    return math.floor(Fraction(float(t)) + Fraction(1, 2))


@given(st.floats(allow_nan=False, allow_infinity=False))
@example(np.nextafter(0.5, 0.0))                # the largest float below 1/2
@example(-np.nextafter(0.5, 0.0))
@example(2.0 ** 52 + 1)                         # odd integers near 2^52: x + 0.5 rounds to even
@example(-(2.0 ** 52 + 1))
@example(2.0 ** 52 - 0.5)
@example(-0.5)
@example(-1e-300)
def test_round_half_up_is_exact_float64(t):
    got = round_half_up(np.float64(t))
    assert got.dtype == np.float64
    assert got == exact_round_half_up(t)


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
@example(float(np.nextafter(np.float32(0.5), np.float32(0))))
@example(2.0 ** 23 + 1)
@example(-(2.0 ** 23 + 1))
def test_round_half_up_is_exact_float32(t):
    got = round_half_up(np.float32(t))
    assert got.dtype == np.float32
    assert got == exact_round_half_up(t)


def test_naive_floor_of_x_plus_half_is_wrong_where_round_half_up_is_right():
    for t, want in [(np.nextafter(0.5, 0.0), 0.0), (2.0 ** 52 + 1, 2.0 ** 52 + 1)]:
        assert np.floor(t + 0.5) != want
        assert round_half_up(np.float64(t)) == want


@given(st.integers(-2 ** 51, 2 ** 51), st.sampled_from([np.float64, np.float32]))
def test_round_half_up_at_ties_and_their_neighbours(k, dtype):
    if dtype is np.float32:
        k = k % 2 ** 22 - 2 ** 21                # k + 1/2 must be representable
    tie = dtype(k) + dtype(0.5)
    assert float(tie) == k + 0.5
    below, above = np.nextafter(tie, dtype(-np.inf)), np.nextafter(tie, dtype(np.inf))
    got = round_half_up(np.array([below, tie, above], dtype=dtype))
    assert got.dtype == dtype
    assert got.tolist() == [k, k + 1, k + 1]


def test_quantizer_rounds_half_up_at_ties():
    # n = 1 and I = 1 make t = v exactly, so the tie and its neighbours reach round().
    below = np.nextafter(0.5, 0.0)
    v = np.array([below, 0.5, -0.5, np.nextafter(-0.5, -1.0)])
    _, codes, _ = quantize_forward(v, 1.0, QuantSpec(2, True))
    assert codes.tolist() == [0, 1, 0, -1]
    _, codes, _ = quantize_forward(v, 1.0, QuantSpec(1, False))
    assert codes.tolist() == [0, 1, 0, 0]


# ---------------------------------------------------------------- grids and codes


def test_levels_of_the_three_grids():
    assert levels(QuantSpec(4, False)) == (15, 0, 15)
    assert levels(QuantSpec(4, True)) == (7, -7, 7)
    assert levels(QuantSpec(4, True, "dorefa")) == (15, 0, 15)
    assert levels(QuantSpec(1, True, "dorefa")) == (1, 0, 1)
    assert levels(QuantSpec(16, True)) == (32767, -32767, 32767)


def test_explicit_values():
    v = np.array([-3.0, -1.0, -0.2, 0.0, 0.2, 0.7, 1.0, 3.0])
    qv, codes, _ = quantize_forward(v, 1.0, QuantSpec(2, True))       # levels -1, 0, 1
    assert codes.tolist() == [-1, -1, 0, 0, 0, 1, 1, 1]
    qv, codes, _ = quantize_forward(v, 1.0, QuantSpec(1, True, "dorefa"))  # binary +-1
    assert qv.tolist() == [-1, -1, -1, 1, 1, 1, 1, 1]
    assert codes.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    qv, codes, _ = quantize_forward(v, 2.0, QuantSpec(2, False))      # levels 0, 2/3, 4/3, 2
    assert codes.tolist() == [0, 0, 0, 0, 0, 1, 2, 3]
    assert np.array_equal(qv, codes * (2.0 / 3))
    # dorefa at 2 bits: levels -1, -1/3, 1/3, 1; zero is not a level (a zero-padded input
    # becomes +I/3, as in the authors' code)
    qv, codes, _ = quantize_forward(np.array([0.0]), 1.0, QuantSpec(2, True, "dorefa"))
    assert codes.tolist() == [2] and qv[0] == pytest.approx(1 / 3)


@given(ratios, intervals, specs)
def test_codes_in_range_and_rebuilt_from_m_bit_planes(r, interval, spec):
    v = r * interval
    qv, codes, _ = quantize_forward(v, interval, spec)
    n, qmin, qmax = levels(spec)
    assert codes.dtype == np.int32 and codes.shape == v.shape
    assert qmin <= codes.min() and codes.max() <= qmax
    m = spec.bits
    word = codes.astype(np.int64) & (2 ** m - 1)            # the M-bit pattern of each code
    planes = [(word >> j) & 1 for j in range(m)]
    if spec.signed and spec.grid == "narrow":               # two's complement
        rebuilt = -planes[m - 1] * 2 ** (m - 1) + sum(p << j for j, p in enumerate(planes[:-1]))
    else:
        rebuilt = sum(p << j for j, p in enumerate(planes))
    assert np.array_equal(rebuilt, codes)
    assert np.array_equal(dequantize(codes, interval, spec), qv)   # bit for bit


@given(ratios, intervals, specs, st.sampled_from([np.float64, np.float32]))
def test_idempotent(r, interval, spec, dtype):
    v = (r * interval).astype(dtype)
    interval = np.array(interval, dtype=dtype)
    qv, codes, _ = quantize_forward(v, interval, spec)
    assert qv.dtype == dtype and qv.shape == v.shape
    qqv, qcodes, _ = quantize_forward(qv, interval, spec)
    assert np.array_equal(qcodes, codes)
    assert np.array_equal(qqv, qv)


@given(ratios, intervals, specs)
def test_error_at_most_half_a_step_inside_the_range(r, interval, spec):
    v = r * interval
    qv, _, _ = quantize_forward(v, interval, spec)
    lo, hi = clip_bounds(spec)
    inside = (v / interval >= lo) & (v / interval <= hi)
    bound = step(interval, spec) / 2 + 8 * np.finfo(np.float64).eps * interval
    assert np.all(np.abs(qv - v)[inside] <= bound)
    # outside, the value saturates at the clip bound
    assert np.allclose(qv[v / interval > hi], hi * interval, rtol=1e-12)
    assert np.allclose(qv[v / interval < lo], lo * interval, rtol=1e-12)


@given(ratios, intervals, specs)
def test_monotone_non_decreasing(r, interval, spec):
    v = np.sort(r * interval)
    qv, codes, _ = quantize_forward(v, interval, spec)
    assert np.all(np.diff(qv) >= 0) and np.all(np.diff(codes) >= 0)


@given(ratios, intervals, st.integers(2, 16))
@example(np.array([0.5, 1.0 / 3, 0.25]), 1.0, 2)     # ties (t = 0.5, 1/3 * 1 no tie, 0.25)
def test_narrow_grid_is_odd_away_from_ties(r, interval, bits):
    spec = QuantSpec(bits, True)
    v = r * interval
    t = scaled_t(v, interval, spec)
    away = t - np.floor(t) != 0.5
    qv, codes, _ = quantize_forward(v, interval, spec)
    qneg, cneg, _ = quantize_forward(-v, interval, spec)
    assert np.array_equal(cneg[away], -codes[away])
    assert np.array_equal(qneg[away], -qv[away])
    # at a tie, round half up is not odd: it rounds -k - 1/2 up to -k
    ties = ~away
    assert np.array_equal(cneg[ties], 1 - codes[ties])


@given(ratios, intervals, specs, st.integers(-20, 20))
def test_power_of_two_scaling(r, interval, spec, k):
    v = r * interval
    qv, codes, _ = quantize_forward(v, interval, spec)
    qv2, codes2, _ = quantize_forward(v * 2.0 ** k, interval * 2.0 ** k, spec)
    assert np.array_equal(codes2, codes)
    assert np.array_equal(qv2, qv * 2.0 ** k)


@given(arrays(st.sampled_from([np.float64, np.float32]), st.integers(1, 30),
              elements={"allow_nan": False}),
       st.sampled_from([True, False]))
def test_bits_32_is_the_identity_bit_for_bit(v, signed):
    dtype = v.dtype
    v[0] = -0.0
    spec = QuantSpec(32, signed)
    qv, codes, cache = quantize_forward(v, 0.5, spec)
    assert codes is None and qv.dtype == dtype
    assert qv.tobytes() == v.tobytes() and qv is not v
    dqv = np.linspace(-1, 1, v.size).astype(dtype)
    dv, dinterval = quantize_backward(dqv, cache)
    assert dv.tobytes() == dqv.tobytes() and dv is not dqv
    assert dinterval.shape == () and dinterval == 0


def test_scale_and_dequantize():
    spec = QuantSpec(4, True)
    assert scale(1.4, spec) == np.float64(1.4) / 7
    s32 = scale(np.float32(1.4), spec)
    assert s32.dtype == np.float32
    assert np.array_equal(dequantize(np.array([-7, 0, 7], np.int8), 1.4, spec),
                          np.array([-7.0, 0.0, 7.0]) * (1.4 / 7))
    dorefa = QuantSpec(2, True, "dorefa")
    assert dequantize(np.array([0, 1, 2, 3]), 3.0, dorefa).tolist() == [-3, -1, 1, 3]


# ---------------------------------------------------------------- the STE backward


def test_ste_closed_form_values():
    # narrow 2 bits, I = 2: levels -2, 0, 2; r = v / I = [-1.5, -1, -0.3, 0.4, 1, 1.5]
    v = np.array([-3.0, -2.0, -0.6, 0.8, 2.0, 3.0])
    dqv = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    qv, codes, cache = quantize_forward(v, 2.0, QuantSpec(2, True))
    assert qv.tolist() == [-2, -2, 0, 0, 2, 2]
    dv, dinterval = quantize_backward(dqv, cache)
    assert dv.tolist() == [0, 2, 3, 4, 5, 0]          # the bounds r = +-1 count as inside
    # outside: -1 and +1; inside: (Q - v) / I = 0, 0.3, -0.4, 0
    assert dinterval == pytest.approx(1 * -1 + 3 * 0.3 + 4 * -0.4 + 6 * 1)
    # unsigned: below the range the bound is 0, so no gradient reaches I
    qv, _, cache = quantize_forward(np.array([-1.0, 0.5, 4.0]), 1.0, QuantSpec(1, False))
    dv, dinterval = quantize_backward(np.array([7.0, 1.0, 1.0]), cache)
    assert dv.tolist() == [0, 1, 0] and dinterval == pytest.approx(0.5 + 1)


def scalar_ste(v, interval, qv, spec):
    """Per-element STE from the written formulas, in plain Python floats."""
    lo, hi = clip_bounds(spec)
    r = v / interval
    if r > hi:
        return 0.0, hi
    if r < lo:
        return 0.0, lo
    return 1.0, (qv - v) / interval


@given(ratios, intervals, specs)
def test_ste_equals_closed_form(r, interval, spec):
    v = r * interval
    dqv = np.cos(np.arange(v.size) + 1.0)
    qv, _, cache = quantize_forward(v, np.array([interval]), spec)
    dv, dinterval = quantize_backward(dqv, cache)
    assert dinterval.shape == (1,) and dinterval.dtype == np.float64
    want = [scalar_ste(a, interval, q, spec) for a, q in zip(v.tolist(), qv.tolist())]
    assert np.array_equal(dv, dqv * np.array([w[0] for w in want]))
    assert dinterval[0] == pytest.approx(sum(g * w[1] for g, w in zip(dqv, want)), rel=1e-12,
                                         abs=1e-12)


@settings(max_examples=30)
@given(arrays(np.float64, st.integers(1, 12), elements=st.floats(-2.5, 2.5)), intervals, specs)
def test_ste_equals_finite_differences_of_the_surrogate(r, interval, spec):
    lo, hi = clip_bounds(spec)
    r = r[(np.abs(r - lo) > 1e-2) & (np.abs(r - hi) > 1e-2)]   # away from the clip bounds
    if r.size == 0:
        return
    v = r * interval
    iv = np.array([interval])
    offset = frozen_offset(v, interval, spec)
    qv, _, cache = quantize_forward(v, iv, spec)
    # the surrogate takes the quantizer's value at the point
    np.testing.assert_allclose(surrogate(v, interval, spec, offset), qv, rtol=1e-12,
                               atol=1e-12 * interval)
    dqv = np.sin(np.arange(v.size) + 1.0)
    dv, dinterval = quantize_backward(dqv, cache)

    def loss():
        return float(np.sum(surrogate(v, iv[0], spec, offset) * dqv))
    # Between clip bounds the surrogate is linear in v and in I, so a large step has no
    # truncation error, and it keeps the rounding noise of the quotient far below the
    # tolerance when the terms of dL/dI cancel (h = 1e-6 I failed on the example in
    # test_quantizer_with_sqcl_matches_finite_differences_of_the_surrogate).
    h = 1e-3 * interval
    assert_grad("dv", dv, loss, v, h=h)
    assert_grad("dinterval", dinterval, loss, iv, h=h)


def test_float32_keeps_dtype_in_backward():
    v = np.linspace(-2, 2, 11, dtype=np.float32)
    interval = np.array([1.5], dtype=np.float32)
    qv, codes, cache = quantize_forward(v, interval, QuantSpec(4, True))
    dv, dinterval = quantize_backward(np.ones_like(v), cache)
    assert qv.dtype == dv.dtype == dinterval.dtype == np.float32
    assert dinterval.shape == (1,)


def test_float64_master_interval_drives_a_float32_tensor():
    # The value used is the interval rounded to float32; its gradient comes back in
    # the interval's own dtype and shape, so parameter and gradient share a layout.
    v = np.linspace(-2, 2, 11, dtype=np.float32)
    master = np.array(0.1)
    qv, codes, cache = quantize_forward(v, master, QuantSpec(4, True))
    qv32, codes32, cache32 = quantize_forward(v, np.float32(0.1), QuantSpec(4, True))
    assert qv.dtype == np.float32 and np.array_equal(qv, qv32)
    dv, dinterval = quantize_backward(np.ones_like(v), cache)
    _, dinterval32 = quantize_backward(np.ones_like(v), cache32)
    assert dinterval.dtype == np.float64 and dinterval.shape == ()
    assert dinterval == dinterval32


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("bits", [0, 17, 31, 33, -4, 4.0, True, "4"])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits"):
        quantize_forward(np.zeros(3), 1.0, QuantSpec(bits, True))


def test_narrow_one_bit_points_to_dorefa():
    with pytest.raises(ValueError, match="grid='dorefa'"):
        quantize_forward(np.zeros(3), 1.0, QuantSpec(1, True, "narrow"))
    with pytest.raises(ValueError, match="grid"):
        levels(QuantSpec(4, True, "lsq"))
    with pytest.raises(ValueError, match="QuantSpec"):
        levels((4, True))
    with pytest.raises(ValueError, match="no code range"):
        levels(QuantSpec(32, True))


@pytest.mark.parametrize("interval", [0.0, -1.0, np.nan, np.inf, -np.inf, None, "1"])
def test_bad_interval(interval):
    with pytest.raises(ValueError, match=r"quantize_forward\(layer1\.w\): interval"):
        quantize_forward(np.zeros(3), interval, QuantSpec(4, True), name="layer1.w")


def test_interval_that_underflows_in_float32_and_wrong_shapes_or_dtypes():
    with pytest.raises(ValueError, match="positive and finite in float32"):
        quantize_forward(np.zeros(3, np.float32), 1e-50, QuantSpec(4, True))
    with pytest.raises(ValueError, match=r"1-element float array .*\(2,\)"):
        quantize_forward(np.zeros(3), np.ones(2), QuantSpec(4, True))
    with pytest.raises(ValueError, match="1-element float array"):
        quantize_forward(np.zeros(3), np.ones(1, np.int64), QuantSpec(4, True))
    with pytest.raises(ValueError, match="float32 or float64"):
        quantize_forward(np.zeros(3, np.int32), 1.0, QuantSpec(4, True))
    _, _, cache = quantize_forward(np.zeros(3), 1.0, QuantSpec(4, True))
    with pytest.raises(ValueError, match="dqv"):
        quantize_backward(np.zeros(4), cache)


def test_nan_in_v():
    v = np.array([0.0, np.nan, 1.0, np.nan])
    for bits in (4, 32):
        with pytest.raises(ValueError, match=r"quantize_forward\(x\): v contains 2 NaN of 4"):
            quantize_forward(v, 1.0, QuantSpec(bits, True), name="x")


def test_dequantize_rejects_codes_out_of_range():
    with pytest.raises(ValueError, match=r"outside \[-7, 7\]"):
        dequantize(np.array([-8, 0]), 1.0, QuantSpec(4, True))
    with pytest.raises(ValueError, match="integers"):
        dequantize(np.array([1.0]), 1.0, QuantSpec(4, True))
