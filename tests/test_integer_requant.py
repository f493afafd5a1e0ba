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


def test_requantize_int64_acc_exact_beyond_int64_products():
    m, shift = quantize_multiplier(0.25)
    # Beyond int32 but |acc| * M + 2^(n-1) = 2^62 + 2^31 < 2^63: int64 products.
    ok = np.array([1 << 32, -(1 << 32)], dtype=np.int64)
    assert requantize(ok, m, shift, INT32_MIN, INT32_MAX).tolist() == [1 << 30, -(1 << 30)]
    # Products past 2^63 are defined too (SPEC 6.4): the 16-bit split below 2^46, Python ints above.
    for acc in ([1 << 33, -(1 << 33) - 2], [(1 << 46) + 5, -(1 << 50) - 1]):
        x = np.array(acc, dtype=np.int64)
        np.testing.assert_array_equal(requantize(x, m, shift, INT32_MIN, INT32_MAX),
                                      requantize_reference(x, m, shift, INT32_MIN, INT32_MAX))
    with pytest.raises(ValueError, match="beyond int64"):      # a result itself past int64
        multiply_by_quantized_multiplier(np.array([1 << 62]), INT32_MAX, 31)


def tie_accumulators(rng, m, shift, bound, count):
    """Accumulators in [-bound, bound]: the extremes, random ones, and exact ties of
    acc * M / 2^n (odd multiples of 2^(n - 1 - v2(M))) where they fit."""
    n = 31 - shift
    out = [bound, -bound, 0, 1, -1] + [int(v) for v in rng.integers(-bound, bound + 1, count)]
    if m and n:
        e = n - 1 - ((m & -m).bit_length() - 1)
        if 0 <= e and 1 << e <= bound:
            top = bound >> e
            odd = [int(k) | 1 for k in rng.integers(0, top + 1, count)]
            out += [k << e for k in odd if k <= top] + [-(k << e) for k in odd if k <= top]
    return out


@given(st.integers(0, INT32_MAX), st.integers(-31, 15), st.integers(1, 46), st.integers(0, 2 ** 32 - 1))
def test_split_requantization_is_exact_up_to_the_bound(m, shift, bound_bits, seed):
    """The product-width rule (SPEC 6.4): the 16-bit split of M, in int64 (numpy and the
    Numba kernel), equals Python integer arithmetic for every |acc| < 2^46, n >= 16, ties included."""
    from fqsr_ref.integer.requant import (requantize_conv, requantize_conv_reference, split_exact,
                                          split_requant)
    bound = (1 << bound_bits) - 1
    assert split_exact(bound, shift)
    rng = np.random.default_rng(seed)
    acc = np.array(tie_accumulators(rng, m, shift, bound, 40), dtype=np.int64)
    n = 31 - shift
    want = [(int(a) * m + (1 << (n - 1))) >> n for a in acc.tolist()]
    assert split_requant(acc, m, n).tolist() == want
    assert multiply_by_quantized_multiplier(acc, m, shift).tolist() == want
    lo, hi = INT32_MIN, INT32_MAX                   # the widest code range (results are clamped)
    grid = acc.reshape(1, -1, 1)
    for sign in (1, -1):
        got = requantize_conv(grid, np.zeros(1, np.int64), (m, shift), (m, shift, sign), lo, hi,
                              split=(True, True))
        np.testing.assert_array_equal(got, requantize_conv_reference(grid, np.zeros(1, np.int64), (m, shift),
                                                                     (m, shift, sign), lo, hi))


def test_product_width_rule():
    from collections import namedtuple

    from fqsr_ref.integer.requant import check_op_product, check_product, op_product_bits, product_bits
    assert product_bits(INT32_MAX, INT32_MAX, -31) == 64       # the int32 proof's worst case
    assert product_bits((1 << 31) + 1, 1 << 30, 0) == 63
    assert product_bits(1 << 32, 1 << 30, 0) == 64             # 2^62 + 2^30: still int64
    assert product_bits(1 << 33, 1 << 30, 0) == 65
    assert check_product("x", 1 << 32, 1 << 30, 0) is False
    assert check_product("x", 1 << 33, 1 << 30, 0) is True     # the split
    assert check_product("x", (1 << 46) - 1, INT32_MAX, 15) is True
    with pytest.raises(ValueError, match="2\\^46"):
        check_product("x", 1 << 46, 1 << 30, 0)
    with pytest.raises(ValueError, match="n = 15"):
        check_product("x", 1 << 40, 1 << 30, 16)
    Conv = namedtuple("Conv", "kind name acc_bound multiplier shift neg_multiplier neg_shift")
    T = namedtuple("T", "qmin qmax")
    conv = Conv("conv", "c", 1 << 40, 1 << 30, 0, INT32_MAX, 0)
    assert op_product_bits(conv, {}) == product_bits(1 << 40, INT32_MAX, 0) == 72
    assert check_op_product(conv, {}) == 72
    with pytest.raises(ValueError, match="c \\(acc < 0\\)"):
        check_op_product(conv._replace(neg_shift=20), {})
    Add = namedtuple("Add", "kind name input branch branch_relu multiplier branch_multiplier shift")
    tensors = {"a": T(-127, 127), "b": T(-127, 127)}
    add = Add("add", "a", "a", "b", True, 3 << 29, 3 << 28, 1)
    assert op_product_bits(add, tensors) == (127 * (3 << 29) + 127 * (3 << 28) + (1 << 29)).bit_length() + 1
    assert op_product_bits(add._replace(branch_relu=False), {"a": T(-7, 7), "b": T(-8, 0)}) == \
        (7 * (3 << 29) + 8 * (3 << 28) + (1 << 29)).bit_length() + 1


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
