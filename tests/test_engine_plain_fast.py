"""The plain engine's fast path against its plain twins (SPEC 6.4, 6.6).

Fused requantization (requant.requantize_conv, add_fused, requantize_fused) against the
Python-int loop twins; the strip convolution (float32 chunks proven exact, summed as
integers) against the general exact path, with the chunk limit and the strip size forced
down so every branch runs on small shapes.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fqsr_ref.corner import corner_model
from fqsr_ref.integer import engine_plain
from fqsr_ref.integer.engine_plain import int_conv2d, int_conv2d_exact, prepare_conv
from fqsr_ref.integer.model import convert
from fqsr_ref.integer.requant import (INT32_MAX, INT32_MIN, add_fused, add_reference, check_fused_requant,
                                      code_range, quantize_multiplier, requantize_conv,
                                      requantize_conv_reference, requantize_fused, requantize_reference)
from fqsr_ref.integer.run import prepare, run_ops


def conv_requant_case(acc, bias, pos_real, neg_real, bits, signed):
    pos = quantize_multiplier(pos_real)
    m, s = quantize_multiplier(abs(neg_real))
    neg = (m, s, -1 if neg_real < 0 else 1)
    qmin, qmax = code_range(bits, signed)
    got = requantize_conv(acc, bias, pos, neg, qmin, qmax)
    np.testing.assert_array_equal(got, requantize_conv_reference(acc, bias, pos, neg, qmin, qmax))
    return got


@given(st.lists(st.integers(-(1 << 30), 1 << 30), min_size=1, max_size=24),
       st.floats(2.0 ** -32, 2.0 ** 4), st.floats(-4.0, 4.0).filter(lambda v: abs(v) > 2.0 ** -30),
       st.integers(1, 16), st.booleans(), st.sampled_from([np.int32, np.int64, np.float32]))
@settings(max_examples=150)
def test_fused_conv_requant_matches_twin(values, pos_real, neg_real, bits, signed, dtype):
    acc = np.array(values, dtype=np.int64)
    if dtype == np.float32:
        acc = acc >> 8                                # float32 accumulators hold integers below 2^24
    acc = acc.astype(dtype).reshape(1, -1, 1)
    bias = np.array([len(values) - 12], np.int64)
    conv_requant_case(acc, bias, pos_real, neg_real, bits, signed)


def test_fused_requant_ties_and_saturation():
    # x 1/2 (M = 2^30, shift 0): odd accumulators are ties; both signs go towards +infinity.
    acc = np.array([-5, -3, -1, 1, 3, 5, 1000, -1000, INT32_MAX, INT32_MIN], np.int64).reshape(1, -1, 1)
    got = conv_requant_case(acc, np.zeros(1, np.int64), 0.5, 0.5, 8, True)
    assert got.ravel().tolist() == [-2, -1, 0, 1, 2, 3, 127, -128, 127, -128]
    # PReLU slope -1/4 for acc < 0 (sign -1): rq(-acc) * 1/4 rounds the true product half up.
    acc = np.array([-6, -2, 2, 6, -(1 << 20)], np.int64).reshape(1, -1, 1)
    got = conv_requant_case(acc, np.zeros(1, np.int64), 0.5, -0.25, 8, False)
    assert got.ravel().tolist() == [2, 1, 1, 3, 255]
    # n = 0 (shift 31): a pure multiply; the int64 bound is proven once per op.
    check_fused_requant("x", INT32_MAX, INT32_MAX, -31)
    with pytest.raises(ValueError, match="overflow"):
        check_fused_requant("x", 1 << 33, 1 << 30, 0)


def test_fused_requant_on_strided_views_and_bias_per_channel():
    rng = np.random.default_rng(0)
    acc = rng.integers(-(1 << 20), 1 << 20, (3, 7, 5)).astype(np.float32)[:, 1:6]   # strided (R, W, O)
    bias = rng.integers(-(1 << 20), 1 << 20, 5).astype(np.int64)
    conv_requant_case(acc, bias, 0.013, 0.002, 8, True)


@given(st.integers(1, 16), st.booleans(), st.floats(2.0 ** -20, 2.0 ** 8), st.integers(0, 2 ** 32 - 1))
@settings(max_examples=60)
def test_fused_requant_and_add_match_twins(bits, relu, real, seed):
    rng = np.random.default_rng(seed)
    lo, hi = code_range(bits, True)
    a = rng.integers(lo, hi + 1, (2, 3, 4)).astype(np.int16)
    b = rng.integers(lo, hi + 1, (2, 3, 4)).astype(np.int16)
    m, shift = quantize_multiplier(real)
    out_lo, out_hi = code_range(max(2, 17 - bits), True)
    np.testing.assert_array_equal(requantize_fused(a, m, shift, out_lo, out_hi),
                                  requantize_reference(a, m, shift, out_lo, out_hi))
    m_b = int(rng.integers(0, m + 1))
    np.testing.assert_array_equal(add_fused(a, b, m, m_b, shift, relu, out_lo, out_hi),
                                  add_reference(a, b, m, m_b, shift, relu, out_lo, out_hi))


def test_int64_accumulators_of_the_16_16_16_corner_set():
    cfg, params, state = corner_model("16/16/16")
    model = convert(cfg, params, state)
    assert prepare(model).split                       # their products pass 64 bits: the 16-bit split
    image = np.random.default_rng(1).integers(0, 256, (1, 3, 6, 5), dtype=np.uint8)
    rec = {}
    codes = run_ops(model, image, record=rec)
    n_int64 = 0
    for op in model.ops:
        if op.kind != "conv":
            continue
        acc = rec[op.name + ".acc"]
        n_int64 += acc.dtype == np.int64
        t = model.tensors[op.output]
        twin = requantize_conv_reference(acc.transpose(0, 2, 3, 1), np.zeros(acc.shape[1], np.int64),
                                         (op.multiplier, op.shift), (op.neg_multiplier, op.neg_shift,
                                                                     op.neg_sign), t.qmin, t.qmax)
        np.testing.assert_array_equal(codes[op.output], twin.transpose(0, 3, 1, 2))
    assert n_int64 > 0


# --- the strip convolution ---------------------------------------------------------------------------

SHAPES = [  # (C, O, K): shift, stack_in (few inputs), stack_out (few outputs), 1x1
    (16, 16, 3), (3, 12, 5), (12, 3, 5), (5, 7, 1), (9, 9, 3)]


@pytest.mark.parametrize("c,o,k", SHAPES)
@pytest.mark.parametrize("limit,strip", [(1 << 24, 1 << 24), (1 << 13, 64), (1 << 11, 1)])
def test_strip_conv_matches_exact_path(monkeypatch, c, o, k, limit, strip):
    monkeypatch.setattr(engine_plain, "F32_EXACT_LIMIT", limit)    # forces several chunks
    monkeypatch.setattr(engine_plain, "STRIP_BYTES", strip)        # forces several strips
    rng = np.random.default_rng(c * 100 + o * 10 + k)
    for bits, signed, (n, h, w) in ((8, True, (2, 7, 5)), (8, False, (1, 1, 9)), (4, True, (1, 6, 1))):
        lo, hi = code_range(bits, signed)
        x = rng.integers(lo, hi + 1, (n, c, h, w)).astype(np.int16)
        wt = rng.integers(-127, 128, (o, c, k, k)).astype(np.int8)
        bias = rng.integers(-1000, 1000, o).astype(np.int32)
        plan = prepare_conv(wt, bits, signed, 8)
        got = int_conv2d(x, bits, signed, wt, 8, True, bias)
        want = int_conv2d_exact(x, bits, signed, wt, 8, True, bias)
        assert got.dtype == want.dtype and np.array_equal(got, want), (plan.kind, plan.chunks)
    if limit < 1 << 13 and plan.kind != "exact":
        assert len(plan.chunks) > 1 or plan.kind == "stack_out"


def test_plans_and_exact_fallback():
    w = np.ones((64, 64, 3, 3), np.int8) * 127
    plan = prepare_conv(w, 8, True, 8)
    assert plan.kind == "shift" and plan.chunks == ((0, 9),)        # 576 * 128 * 127 < 2^24
    tail = prepare_conv(np.full((3, 64, 9, 9), -127, np.int8), 8, True, 8)
    assert tail.kind == "stack_out"
    head = prepare_conv(np.full((64, 3, 9, 9), 127, np.int8), 8, False, 8)
    assert head.kind == "stack_in" and head.chunks == ((0, 243),)   # 243 * 255 * 127 < 2^24
    # 16-bit codes: a single product can reach 2^30, no float32 chunk is exact
    wide = prepare_conv(np.full((4, 4, 3, 3), -(1 << 15), np.int16), 16, True, 16)
    assert wide.kind == "exact"
    x = np.full((1, 4, 3, 3), -(1 << 15), np.int16)
    got = int_conv2d(x, 16, True, wide.w_codes, 16, True)
    assert got.dtype == np.int64 and got[0, 0, 1, 1] == 36 * (1 << 30)
