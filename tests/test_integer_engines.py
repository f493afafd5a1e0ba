"""The plain and bit-plane integer engines: exact, and bit-identical to each other (SPEC "integer").

Reference for every check: the dot product of the operands' integer VALUES in Python ints
(object arrays), with value = code for unsigned / signed operands, 2k - (2^M - 1) for dorefa,
and value 0 at padded conv taps.
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fqsr_ref.integer import engine_plain
from fqsr_ref.integer.bitplane import (WIDE_MIN_COLUMNS, bitplane_conv2d, bitplane_gemm,
                                       bitplane_gemm_reference, bitplane_matmul, bitplane_partials,
                                       pack_planes, plane_weights)
from fqsr_ref.integer.engine_plain import int_conv2d, int_gemm
from fqsr_ref.integer.requant import acc_bound, acc_dtype, code_range

GRIDS = ("unsigned", "signed", "dorefa")
FILLS = ("random", "max", "min", "alternating")


def make_codes(rng, shape, bits, grid, fill):
    lo, hi = code_range(bits, grid == "signed")
    if fill == "random":
        return rng.integers(lo, hi + 1, size=shape).astype(np.int16)
    if fill == "max":
        return np.full(shape, hi, dtype=np.int16)
    if fill == "min":
        return np.full(shape, lo, dtype=np.int16)
    alt = np.indices(shape).sum(axis=0) % 2 == 0
    return np.where(alt, hi, lo).astype(np.int16)


def values(codes, bits, grid):
    v = codes.astype(object)
    return 2 * v - (2 ** bits - 1) if grid == "dorefa" else v


def flags(grid):
    """(signed, dorefa) keyword values of a grid."""
    return grid == "signed", grid == "dorefa"


def conv_reference(x, x_bits, x_grid, w, w_bits, w_grid, bias, stride):
    """Loop twin of the "same" conv: Python ints, only taps inside the image."""
    xv, wv = values(x, x_bits, x_grid), values(w, w_bits, w_grid)
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    pad = k // 2
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    out = np.zeros((n, o, ho, wo), dtype=object)
    if bias is not None:
        out += bias.astype(object)[None, :, None, None]
    for oy, ox, ky, kx in itertools.product(range(ho), range(wo), range(k), range(k)):
        iy, ix = oy * stride + ky - pad, ox * stride + kx - pad
        if 0 <= iy < h and 0 <= ix < wd:
            out[:, :, oy, ox] += xv[:, :, iy, ix] @ wv[:, :, ky, kx].T
    return out


def assert_same(name, got, expected):
    expected = np.asarray(expected, dtype=object)
    diff = np.argwhere(got.astype(object) != expected)
    assert got.shape == expected.shape, f"{name}: shape {got.shape} != {expected.shape}"
    assert diff.size == 0, (f"{name}: {len(diff)} of {got.size} elements differ; first "
                            + ", ".join(f"{tuple(i)}: expected {expected[tuple(i)]}, got {got[tuple(i)]}"
                                        for i in diff[:5]))


# --- GEMM ------------------------------------------------------------------------------------------

@st.composite
def gemm_case(draw):
    a_bits, b_bits = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    a_grid, b_grid = draw(st.sampled_from(GRIDS)), draw(st.sampled_from(GRIDS))
    m = draw(st.integers(1, 9))
    k = draw(st.sampled_from([1, 7, 63, 64, 65, 129, 200]))
    n = draw(st.sampled_from([1, 3, WIDE_MIN_COLUMNS, 19]))
    fills = draw(st.sampled_from(FILLS)), draw(st.sampled_from(FILLS))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return a_bits, a_grid, b_bits, b_grid, (m, k, n), fills, seed


@given(gemm_case())
def test_gemm_engines_agree_with_exact_product(case):
    a_bits, a_grid, b_bits, b_grid, (m, k, n), (fa, fb), seed = case
    rng = np.random.default_rng(seed)
    a = make_codes(rng, (m, k), a_bits, a_grid, fa)
    b = make_codes(rng, (k, n), b_bits, b_grid, fb)
    (a_signed, a_dorefa), (b_signed, b_dorefa) = flags(a_grid), flags(b_grid)
    expected = values(a, a_bits, a_grid) @ values(b, b_bits, b_grid)
    plain = int_gemm(a, a_bits, a_signed, b, b_bits, b_signed, a_dorefa=a_dorefa, b_dorefa=b_dorefa)
    bp = bitplane_matmul(a, a_bits, a_signed, b, b_bits, b_signed, a_dorefa=a_dorefa, b_dorefa=b_dorefa)
    assert_same("int_gemm", plain, expected)
    assert_same("bitplane_matmul", bp, expected)
    dtype = acc_dtype(acc_bound(k, a_bits, a_signed, b_bits, b_signed, a_dorefa=a_dorefa, w_dorefa=b_dorefa))
    assert plain.dtype == bp.dtype == dtype


@given(gemm_case())
@settings(max_examples=30)
def test_bitplane_kernel_matches_loop_twin(case):
    a_bits, a_grid, b_bits, b_grid, (m, k, n), (fa, fb), seed = case
    rng = np.random.default_rng(seed)
    a_signed, b_signed = a_grid == "signed", b_grid == "signed"
    a = make_codes(rng, (m, k), a_bits, a_grid, fa)
    b = make_codes(rng, (n, k), b_bits, b_grid, fb)
    ap, bp = pack_planes(a, a_bits, a_signed), pack_planes(b, b_bits, b_signed)
    got = bitplane_gemm(ap, a_bits, a_signed, bp, b_bits, b_signed)
    assert got.dtype == np.int64
    assert_same("bitplane_gemm", got, a.astype(object) @ b.T.astype(object))
    np.testing.assert_array_equal(got, bitplane_gemm_reference(ap, a_bits, a_signed, bp, b_bits, b_signed))
    # One output element plane by plane (what a bit-serial datapath checks).
    parts = bitplane_partials(a[0], b[0], a_bits, a_signed, b_bits, b_signed)
    assert parts.shape == (a_bits, b_bits)
    assert plane_weights(a_bits, a_signed) @ parts @ plane_weights(b_bits, b_signed) == got[0, 0]


def test_every_bit_width_and_grid_pair():
    """Deterministic sweep: bits 1..8 x grids for both operands, random and extreme rows."""
    rng = np.random.default_rng(0)
    k = 70
    for a_bits, b_bits, a_grid, b_grid in itertools.product(range(1, 9), range(1, 9), GRIDS, GRIDS):
        a = np.concatenate([make_codes(rng, (1, k), a_bits, a_grid, f) for f in FILLS])
        b = np.concatenate([make_codes(rng, (k, 1), b_bits, b_grid, f) for f in FILLS], axis=1)
        (a_signed, a_dorefa), (b_signed, b_dorefa) = flags(a_grid), flags(b_grid)
        expected = values(a, a_bits, a_grid) @ values(b, b_bits, b_grid)
        kw = dict(a_dorefa=a_dorefa, b_dorefa=b_dorefa)
        assert_same(f"int_gemm {a_bits}{a_grid} x {b_bits}{b_grid}",
                    int_gemm(a, a_bits, a_signed, b, b_bits, b_signed, **kw), expected)
        assert_same(f"bitplane_matmul {a_bits}{a_grid} x {b_bits}{b_grid}",
                    bitplane_matmul(a, a_bits, a_signed, b, b_bits, b_signed, **kw), expected)


def test_accumulator_bound_is_attained_and_int32_edge():
    # All-min signed codes times all-min: every product is +2^(a-1) 2^(b-1), the bound exactly.
    a = np.full((2, 130), -128, dtype=np.int16)
    b = np.full((130, 17), -128, dtype=np.int16)
    bound = acc_bound(130, 8, True, 8, True)
    for f in (int_gemm, bitplane_matmul):
        out = f(a, 8, True, b, 8, True)
        assert out.dtype == np.int32 and (out == bound).all()
    # 16-bit operands: the bound passes 2^31, so the accumulator is int64, still exact.
    x = np.full((1, 64, 3, 3), -(1 << 15), dtype=np.int16)
    w = np.full((3, 64, 3, 3), -(1 << 15), dtype=np.int16)
    for f in (int_conv2d, bitplane_conv2d):
        out = f(x, 16, True, w, 16, True)
        assert out.dtype == np.int64 and out[0, 0, 1, 1] == 576 * (1 << 30) and out[0, 0, 0, 0] == 4 * 64 * (1 << 30)


def test_codes_in_a_narrower_dtype_than_their_bits():
    # 12-bit operands stored as int8 / uint8: planes 8..11 come from sign (or zero) extension.
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, size=(3, 70)).astype(np.int8)
    b = rng.integers(0, 256, size=(70, 2)).astype(np.uint8)
    expected = a.astype(object) @ b.astype(object)
    assert_same("bitplane_matmul", bitplane_matmul(a, 12, True, b, 12, False), expected)
    assert_same("int_gemm", int_gemm(a, 12, True, b, 12, False), expected)


def test_pack_planes_layout():
    codes = np.zeros((1, 65), dtype=np.int8)
    codes[0, 0], codes[0, 3], codes[0, 64] = 1, -2, -1     # 2-bit two's complement: 01, 10, 11
    planes = pack_planes(codes, 2, True)
    assert planes.dtype == np.uint64 and planes.shape == (2, 1, 2)
    assert planes[0, 0].tolist() == [1, 1]           # plane 0: bit 0 of word 0, bit 0 of word 1
    assert planes[1, 0].tolist() == [1 << 3, 1]      # plane 1: element 3 and element 64
    assert plane_weights(2, True).tolist() == [1, -2]
    assert plane_weights(3, False).tolist() == [1, 2, 4]


# --- convolution -----------------------------------------------------------------------------------

@st.composite
def conv_case(draw):
    x_bits, w_bits = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    x_grid, w_grid = draw(st.sampled_from(GRIDS)), draw(st.sampled_from(GRIDS))
    n = draw(st.integers(1, 2))
    c = draw(st.sampled_from([1, 3, 64, 65]))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    k = draw(st.sampled_from([1, 3, 5]))
    o = draw(st.sampled_from([1, 3, WIDE_MIN_COLUMNS + 1]))
    stride = draw(st.integers(1, 2))
    fills = draw(st.sampled_from(FILLS)), draw(st.sampled_from(FILLS))
    with_bias = draw(st.booleans())
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return x_bits, x_grid, w_bits, w_grid, (n, c, h, w, k, o, stride), fills, with_bias, seed


@given(conv_case())
@settings(max_examples=40)
def test_conv_engines_agree_with_loop_twin(case):
    x_bits, x_grid, w_bits, w_grid, (n, c, h, w, k, o, stride), (fx, fw), with_bias, seed = case
    rng = np.random.default_rng(seed)
    x = make_codes(rng, (n, c, h, w), x_bits, x_grid, fx)
    wt = make_codes(rng, (o, c, k, k), w_bits, w_grid, fw)
    bias = rng.integers(-(1 << 31), 1 << 31, size=o).astype(np.int32) if with_bias else None
    (x_signed, x_dorefa), (w_signed, w_dorefa) = flags(x_grid), flags(w_grid)
    args = (x, x_bits, x_signed, wt, w_bits, w_signed, bias, stride)
    kw = dict(x_dorefa=x_dorefa, w_dorefa=w_dorefa)
    plain, bp = int_conv2d(*args, **kw), bitplane_conv2d(*args, **kw)
    expected = conv_reference(x, x_bits, x_grid, wt, w_bits, w_grid, bias, stride)
    assert_same("int_conv2d", plain, expected)
    assert_same("bitplane_conv2d", bp, expected)
    assert plain.dtype == bp.dtype


def test_dorefa_padding_is_value_zero():
    # One pixel, 3x3 all-ones weights: only the centre tap is inside the image.
    w = np.ones((1, 1, 3, 3), dtype=np.int8)
    for code, value in ((1, 1), (0, -1)):                  # 1-bit dorefa: k=1 -> +1, k=0 -> -1
        x = np.full((1, 1, 1, 1), code, dtype=np.int8)
        for f in (int_conv2d, bitplane_conv2d):
            assert f(x, 1, False, w, 1, False, x_dorefa=True)[0, 0, 0, 0] == value
    # Dorefa weights (2 bits, codes 0 -> value -3) on a 2x2 input of ones: 4 valid taps per output.
    x = np.ones((1, 1, 2, 2), dtype=np.int8)
    w = np.zeros((1, 1, 3, 3), dtype=np.int8)
    for f in (int_conv2d, bitplane_conv2d):
        assert (f(x, 2, False, w, 2, False, w_dorefa=True) == -12).all()


def test_plain_engine_int64_path_matches_float_path(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(2, 5, 6, 7)).astype(np.int8)
    w = rng.integers(0, 16, size=(4, 5, 3, 3)).astype(np.int8)
    a, b = x.reshape(10, 42), w.reshape(4, 45).T[:42]
    def run():
        return int_conv2d(x, 8, True, w, 4, False, None, 2, w_dorefa=True), int_gemm(a, 8, True, b, 4, False)
    assert engine_plain.exact_dtype(1) == np.float32
    fast = run()
    monkeypatch.setattr(engine_plain, "F32_EXACT_LIMIT", 0)
    assert engine_plain.exact_dtype(1) == np.float64
    middle = run()
    monkeypatch.setattr(engine_plain, "F64_EXACT_LIMIT", 0)
    assert engine_plain.exact_dtype(1) == np.int64
    slow = run()
    for f, m, s in zip(fast, middle, slow):
        np.testing.assert_array_equal(f, s)
        np.testing.assert_array_equal(m, s)
        assert f.dtype == m.dtype == s.dtype


# --- bad input -------------------------------------------------------------------------------------

X = np.zeros((1, 2, 4, 4), dtype=np.int8)
W = np.zeros((3, 2, 3, 3), dtype=np.int8)


@pytest.mark.parametrize("conv", [int_conv2d, bitplane_conv2d])
@pytest.mark.parametrize("args,kw,match", [
    ((X + 8, 4, True, W, 4, True), {}, "outside the 4-bit signed range"),
    ((X - 1, 4, False, W, 4, True), {}, "outside the 4-bit unsigned range"),
    ((X.astype(np.float32), 4, True, W, 4, True), {}, "integer ndarray"),
    ((X, 4, True, W, 4, True), {"x_dorefa": True}, "dorefa"),
    ((X, 4, True, W[:, :1], 4, True), {}, "does not fit input"),
    ((X, 4, True, np.zeros((3, 2, 2, 2), np.int8), 4, True), {}, "K odd"),
    ((X[0], 4, True, W, 4, True), {}, r"\(N, C, H, W\)"),
    ((X, 4, True, W, 4, True, np.zeros(2, np.int32)), {}, "bias"),
    ((X, 4, True, W, 4, True, np.full(3, 1 << 31, np.int64)), {}, "int32"),
    ((X, 4, True, W, 4, True, None, 0), {}, "stride"),
    ((X, 0, True, W, 4, True), {}, "bits"),
])
def test_conv_rejects(conv, args, kw, match):
    with pytest.raises(ValueError, match=match):
        conv(*args, **kw)


def test_gemm_and_planes_reject():
    a = np.zeros((2, 5), dtype=np.int8)
    for f in (int_gemm, bitplane_matmul):
        with pytest.raises(ValueError, match=r"\(M, K\)"):
            f(a, 4, True, a, 4, True)
    with pytest.raises(ValueError, match="word counts"):
        bitplane_gemm(pack_planes(a, 2, True), 2, True, pack_planes(np.zeros((2, 65), np.int8), 2, True), 2, True)
    with pytest.raises(ValueError, match="uint64"):
        bitplane_gemm(pack_planes(a, 2, True), 3, True, pack_planes(a, 2, True), 2, True)
    with pytest.raises(ValueError, match="K,"):
        bitplane_partials(a[0], a[0, :3], 2, True, 2, True)
