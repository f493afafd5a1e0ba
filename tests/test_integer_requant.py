"""Integer arithmetic rules: rounding, multipliers, requantization, bounds (SPEC "integer")."""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

from fqsr_ref.integer.requant import (
    INT32_MAX, INT32_MIN, acc_bound, acc_dtype, code_dtype, code_range, multiply_by_quantized_multiplier,
    operand_max_abs, quantize_multiplier, requantize, requantize_reference, rounding_right_shift, saturate)


def round_half_up(q: Fraction) -> int:
    return math.floor(q + Fraction(1, 2))


# --- rounding_right_shift -------------------------------------------------------------------------

def test_rounding_right_shift_ties_go_up():
    # Ties go towards +infinity for both signs: -1.5 -> -1, 1.5 -> 2, -2.5 -> -2.
    assert [rounding_right_shift(v, 1) for v in (-5, -3, -1, 1, 3, 5)] == [-2, -1, 0, 1, 2, 3]
    assert rounding_right_shift(-6, 2) == -1          # -1.5
    assert rounding_right_shift(7, 0) == 7
    arr = np.array([-5, -3, -1, 1, 3, 5], dtype=np.int64)
    assert rounding_right_shift(arr, 1).tolist() == [-2, -1, 0, 1, 2, 3]


@given(st.integers(-(1 << 61), 1 << 61), st.integers(0, 61))
def test_rounding_right_shift_is_round_half_up(x, n):
    expected = round_half_up(Fraction(x, 2 ** n))
    assert rounding_right_shift(x, n) == expected
    assert rounding_right_shift(np.array([x], dtype=np.int64), n)[0] == expected


def test_rounding_right_shift_rejects_negative_shift():
    with pytest.raises(ValueError, match="shift"):
        rounding_right_shift(3, -1)


# --- quantize_multiplier --------------------------------------------------------------------------

@given(st.floats(min_value=2.0 ** -32, max_value=2.0 ** 31, exclude_max=True))
@example(1.0)
@example(0.5)
@example(1.0 - 2.0 ** -53)
@example(2.0 ** -32)
def test_quantize_multiplier_reconstructs_real(real):
    try:
        m, shift = quantize_multiplier(real)
    except ValueError:
        # Only the reals that round up to 2^31 (shift 32) may be rejected.
        assert real >= 2.0 ** 31 * (1 - 2.0 ** -31)
        return
    assert 1 << 30 <= m <= INT32_MAX
    assert -31 <= shift <= 31
    got = Fraction(m) * Fraction(2) ** (shift - 31)
    assert abs(got - Fraction(real)) <= Fraction(real) * Fraction(1, 2 ** 31)
    # M is the round-half-up of the mantissa, exactly (or the halved carry).
    e = math.frexp(real)[1]
    mant = round_half_up(Fraction(real) * Fraction(2) ** (31 - e))
    assert (m, shift) == ((mant, e) if mant < 2 ** 31 else (2 ** 30, e + 1))


def test_quantize_multiplier_exact_values():
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(0.75) == (3 << 29, 0)
    assert quantize_multiplier(0.0) == (0, 0)
    # Mantissa rounds up to 2^31: halved, exponent + 1.
    assert quantize_multiplier(1.0 - 2.0 ** -53) == (1 << 30, 1)
    # A tie in the mantissa rounds up: f * 2^31 = 2^30 + 1/2.
    assert quantize_multiplier(0.5 + 2.0 ** -32) == ((1 << 30) + 1, 0)


@pytest.mark.parametrize("bad", [-1.0, -0.0 - 1e-300, math.nan, math.inf, -math.inf,
                                 2.0 ** -33, 2.0 ** 31, 1e300, 5e-324])
def test_quantize_multiplier_rejects(bad):
    with pytest.raises(ValueError, match="quantize_multiplier"):
        quantize_multiplier(bad)


# --- requantize -----------------------------------------------------------------------------------

@st.composite
def requant_case(draw):
    acc = draw(st.lists(st.integers(INT32_MIN, INT32_MAX), min_size=1, max_size=20))
    real = draw(st.floats(min_value=2.0 ** -32, max_value=2.0 ** 30))
    bits = draw(st.integers(1, 16))
    signed = draw(st.booleans())
    return np.array(acc, dtype=np.int32), real, code_range(bits, signed)


@given(requant_case())
def test_requantize_matches_twin_and_exact_rationals(case):
    acc, real, (qmin, qmax) = case
    m, shift = quantize_multiplier(real)
    got = requantize(acc, m, shift, qmin, qmax)
    assert got.dtype == code_dtype(qmin, qmax)
    np.testing.assert_array_equal(got, requantize_reference(acc, m, shift, qmin, qmax))
    scale = Fraction(m) * Fraction(2) ** (shift - 31)
    exact = [min(max(round_half_up(int(a) * scale), qmin), qmax) for a in acc]
    assert got.tolist() == exact


def test_requantize_exact_values():
    acc = np.array([-3, -1, 1, 3, 255, -256, INT32_MAX, INT32_MIN], dtype=np.int32)
    m, shift = quantize_multiplier(0.5)
    # x0.5 then round half up: -1.5 -> -1, -0.5 -> 0, 0.5 -> 1, 1.5 -> 2; saturate to int8.
    assert requantize(acc, m, shift, -128, 127).tolist() == [-1, 0, 1, 2, 127, -128, 127, -128]
    # shift 31 (n = 0): a pure multiply, no rounding.
    assert multiply_by_quantized_multiplier(np.array([-2, 3]), 1 << 30, 31).tolist() == [-(1 << 31), 3 << 30]
    # Multiplier 0 (real 0): everything 0.
    assert requantize(acc, 0, 0, -128, 127).tolist() == [0] * 8


def test_requantize_largest_shift_int32_acc_is_exact():
    # n = 62, the extreme of the int64 proof: |acc| * M + 2^61 < 2^63.
    acc = np.array([INT32_MIN, INT32_MAX, (1 << 30) + 1, -(1 << 30)], dtype=np.int32)
    m, shift = INT32_MAX, -31
    np.testing.assert_array_equal(requantize(acc, m, shift, INT32_MIN, INT32_MAX),
                                  requantize_reference(acc, m, shift, INT32_MIN, INT32_MAX))


def test_requantize_int64_acc_checked():
    m, shift = quantize_multiplier(0.25)
    # Beyond int32 but |acc| * M + 2^(n-1) = 2^62 + 2^31 < 2^63: still exact.
    ok = np.array([1 << 32, -(1 << 32)], dtype=np.int64)
    assert requantize(ok, m, shift, INT32_MIN, INT32_MAX).tolist() == [1 << 30, -(1 << 30)]
    with pytest.raises(ValueError, match="overflow"):
        requantize(np.array([1 << 33], dtype=np.int64), m, shift, -128, 127)


@pytest.mark.parametrize("m,shift,acc", [(-1, 0, np.zeros(2, np.int32)), (1 << 31, 0, np.zeros(2, np.int32)),
                                         (1 << 30, 32, np.zeros(2, np.int32)),
                                         (1 << 30, 0, np.zeros(2, np.float32))])
def test_requantize_rejects(m, shift, acc):
    with pytest.raises(ValueError, match="requantize"):
        requantize(acc, m, shift, -128, 127)


def test_saturate_and_code_dtype():
    x = np.array([-1000, -129, -128, 0, 127, 128, 1000], dtype=np.int64)
    assert saturate(x, -128, 127).tolist() == [-128, -128, -128, 0, 127, 127, 127]
    assert saturate(x, -128, 127).dtype == np.int8
    assert code_dtype(0, 255) == np.uint8 and code_dtype(-1, 255) == np.int16
    assert code_dtype(-(1 << 15), (1 << 15) - 1) == np.int16
    assert code_dtype(0, 1 << 16) == np.int32
    with pytest.raises(ValueError):
        code_dtype(1, 0)


# --- bounds ---------------------------------------------------------------------------------------

def test_code_ranges_and_bounds():
    assert code_range(4, True) == (-8, 7) and code_range(4, False) == (0, 15)
    assert code_range(1, True) == (-1, 0)
    assert operand_max_abs(8, True) == 128 and operand_max_abs(8, False) == 255
    assert operand_max_abs(4, False, dorefa=True) == 15
    assert acc_bound(576, 8, True, 8, True) == 576 * 128 * 128
    assert acc_bound(576, 8, False, 8, True, bias_bound=1000) == 576 * 255 * 128 + 1000
    assert acc_bound(9, 2, False, 3, False, a_dorefa=True, w_dorefa=True) == 9 * 3 * 7
    with pytest.raises(ValueError):
        operand_max_abs(4, True, dorefa=True)
    with pytest.raises(ValueError):
        code_range(17, True)


def test_acc_dtype_thresholds():
    assert acc_dtype(INT32_MAX) == np.int32
    assert acc_dtype(INT32_MAX + 1) == np.int64
    assert acc_dtype((1 << 63) - 1) == np.int64
    with pytest.raises(ValueError, match="int64"):
        acc_dtype(1 << 63)
