"""The bit-plane conv kernel (in-kernel tap gather, K-packed rows) against plain loop twins.

Twin: for every output pixel, the im2col row of codes (taps (ky, kx) major, channel minor,
code 0 outside the image), and per plane pair the number of k where both bits are 1
(two's complement bits for signed operands), weighted 2^(m+p) with the top plane of a
signed operand negative (SPEC 6.7). Python ints throughout.
"""
import os

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fqsr_ref.integer import bitplane
from fqsr_ref.integer.bitplane import (THREADS_ENV, WIDE_MIN_COLUMNS, _gather_row, bitplane_conv2d,
                                       bitplane_gemm, kernel_threads, pack_planes)
from fqsr_ref.integer.requant import code_range


def codes(rng, shape, bits, signed):
    lo, hi = code_range(bits, signed)
    return rng.integers(lo, hi + 1, size=shape).astype(np.int16 if bits <= 15 or signed else np.int32)


def im2col_row(x, img, oy, ox, k, stride):
    """Codes of one output pixel's row, tap-major then channel, 0 outside the image (Python ints)."""
    _, c, h, w = x.shape
    pad = k // 2
    row = []
    for ky in range(k):
        for kx in range(k):
            iy, ix = oy * stride + ky - pad, ox * stride + kx - pad
            inside = 0 <= iy < h and 0 <= ix < w
            row.extend(int(x[img, ch, iy, ix]) if inside else 0 for ch in range(c))
    return row


def plane_pair_twin(row, col, a_bits, a_signed, b_bits, b_signed):
    """sum_{m,p} s_m s_p 2^(m+p) #{k: bit m of row[k] and bit p of col[k]} (loop over bits)."""
    row, col = np.array(row, dtype=np.int64), np.array(col, dtype=np.int64)
    total = 0
    for m in range(a_bits):
        for p in range(b_bits):
            # >> of a negative int64 sign-extends: (v >> m) & 1 is bit m of its two's complement.
            count = int((((row >> m) & 1) & ((col >> p) & 1)).sum())
            weight = 1 << (m + p)
            if (a_signed and m == a_bits - 1) != (b_signed and p == b_bits - 1):
                weight = -weight
            total += weight * count
    return total


def conv_twin(x, x_bits, x_signed, w, w_bits, w_signed, stride):
    n, _, h, wd = x.shape
    o, _, k, _ = w.shape
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    cols = [[int(v) for v in w[j].transpose(1, 2, 0).ravel()] for j in range(o)]
    out = np.zeros((n, o, ho, wo), dtype=object)
    for img in range(n):
        for oy in range(ho):
            for ox in range(wo):
                row = im2col_row(x, img, oy, ox, k, stride)
                for j in range(o):
                    out[img, j, oy, ox] = plane_pair_twin(row, cols[j], x_bits, x_signed, w_bits, w_signed)
    return out


@st.composite
def conv_case(draw):
    x_bits, w_bits = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    x_signed, w_signed = draw(st.booleans()), draw(st.booleans())
    c = draw(st.sampled_from([1, 3, 5, 21, 63, 64, 65, 130]))      # K = C k k: multiples of 64 and not
    k = draw(st.sampled_from([1, 3, 5, 9]))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    o = draw(st.sampled_from([1, 3, WIDE_MIN_COLUMNS, 11]))       # both kernel loop orders
    stride = draw(st.sampled_from([1, 2, 3]))
    n = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return x_bits, x_signed, w_bits, w_signed, (n, c, h, w, k, o, stride), seed


@given(conv_case())
@settings(max_examples=60, deadline=None)
def test_conv_kernel_matches_plane_pair_twin(case):
    x_bits, x_signed, w_bits, w_signed, (n, c, h, w, k, o, stride), seed = case
    rng = np.random.default_rng(seed)
    x = codes(rng, (n, c, h, w), x_bits, x_signed)
    wt = codes(rng, (o, c, k, k), w_bits, w_signed)
    got = bitplane_conv2d(x, x_bits, x_signed, wt, w_bits, w_signed, stride=stride)
    expected = conv_twin(x, x_bits, x_signed, wt, w_bits, w_signed, stride)
    assert got.shape == expected.shape
    assert (got.astype(object) == expected).all()


@pytest.mark.parametrize("c,k", [(3, 9), (5, 3), (64, 3), (65, 3), (1, 1), (130, 5)])
def test_gathered_row_is_pack_planes_of_the_im2col_row(c, k):
    """The documented row layout: bit (ky K + kx) C + c of the row's words (SPEC 6.7)."""
    rng = np.random.default_rng(c * 10 + k)
    bits, h, w = 5, 4, 5
    x = codes(rng, (1, c, h, w), bits, True)
    strips = bitplane._pack_strips(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), bits, k // 2)
    nw = -(-(k * k * c) // 64)
    row = np.full((bits, nw), np.uint64(0xFFFF), dtype=np.uint64)     # garbage: the gather clears it
    for oy, ox in ((0, 0), (1, 2), (h - 1, w - 1)):
        _gather_row(strips, 0, oy - k // 2, ox, k, c, row)
        expected = pack_planes(np.array([im2col_row(x, 0, oy, ox, k, 1)]), bits, True)[:, 0]
        np.testing.assert_array_equal(row, expected)


def test_gemm_rows_words_not_multiple_of_64_and_16_bits():
    rng = np.random.default_rng(7)
    for a_bits, b_bits, k, cols in ((16, 16, 100, 9), (16, 3, 65, 2), (1, 1, 1, 1), (9, 16, 129, 17)):
        a = codes(rng, (5, k), a_bits, True)
        b = codes(rng, (cols, k), b_bits, b_bits != 3)
        got = bitplane_gemm(pack_planes(a, a_bits, True), a_bits, True,
                            pack_planes(b, b_bits, b_bits != 3), b_bits, b_bits != 3)
        assert (got.astype(object) == a.astype(object) @ b.T.astype(object)).all()


def test_threads_setting(monkeypatch):
    rng = np.random.default_rng(1)
    x = codes(rng, (2, 7, 9, 11), 8, True)
    w = codes(rng, (12, 7, 3, 3), 8, True)
    monkeypatch.setattr(bitplane, "CHUNK_PIXELS", 5)               # many chunks with uneven ends
    results = []
    for n in ("1", "2", "64"):
        monkeypatch.setenv(THREADS_ENV, n)
        assert kernel_threads() >= 1
        results.append(bitplane_conv2d(x, 8, True, w, 8, True, stride=2))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ValueError, match=THREADS_ENV):
            bitplane_conv2d(x, 8, True, w, 8, True)
    monkeypatch.delenv(THREADS_ENV)
    assert kernel_threads() == 1
    monkeypatch.setenv(THREADS_ENV, "2")
    assert kernel_threads() == min(2, numba.config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize("vec_dir", __import__("fqsr_ref.vectors", fromlist=["committed_dirs"]).committed_dirs(),
                         ids=lambda d: os.path.basename(str(d)))
def test_engine_reproduces_committed_vectors(vec_dir):
    """Every stimulus of every committed set: accumulators and codes as recorded (plain engine)."""
    from fqsr_ref.integer.run import run_ops
    from fqsr_ref.vectors import read_model, read_stimuli
    from fqsr_ref.vectors.store import find_array, read_manifest

    model, manifest = read_model(vec_dir).model, read_manifest(vec_dir)
    for stim in read_stimuli(vec_dir):
        record = {}
        out = run_ops(model, stim.codes, "bitplane", record)
        for name, got in list(out.items()) + list(record.items()):
            stem = f"{stim.name}/{name}"
            if any(f.startswith(stem + ".") and f[len(stem) + 1:] in ("npy", "bin") for f in manifest["files"]):
                want = find_array(vec_dir, manifest, stem)
                assert got.dtype == want.dtype and np.array_equal(got, want), stem


@pytest.mark.parametrize("c,k,o,h,w", [(64, 9, 3, 5, 7), (128, 3, 1, 4, 3), (64, 5, 7, 3, 1), (192, 1, 2, 2, 2),
                                       (64, 3, 2, 3, 40)])     # two tiles of output pixels, the last one partial
def test_few_output_channels_pixel_kernel(monkeypatch, c, k, o, h, w):
    """The row-of-pixels kernel (few outputs, stride 1, C a multiple of 64) at every width."""
    monkeypatch.setattr(bitplane, "PIXELS_MIN_WIDTH", 1)
    rng = np.random.default_rng(c + k + o)
    for x_bits, x_signed, w_bits, w_signed in ((8, True, 8, True), (16, True, 3, False), (1, False, 16, True)):
        x = codes(rng, (2, c, h, w), x_bits, x_signed)
        wt = codes(rng, (o, c, k, k), w_bits, w_signed)
        wt[:, :, 0, 0] = 0                                          # zero weight words are skipped
        wt[:, :, -1, -1] = 0
        wt[:, 0, -1, -1] = 1                                        # a plane word equal to 1
        bias = rng.integers(-(1 << 31), 1 << 31, size=o).astype(np.int32)
        got = bitplane_conv2d(x, x_bits, x_signed, wt, w_bits, w_signed, bias)
        expected = conv_twin(x, x_bits, x_signed, wt, w_bits, w_signed, 1) + bias.astype(object)[None, :, None, None]
        assert (got.astype(object) == expected).all()


@pytest.mark.parametrize("bits,signed,dtype,k", [(8, True, np.int8, 64), (8, False, np.uint8, 3), (12, True, np.int8, 130),
                                                 (12, False, np.uint8, 65), (16, True, np.int16, 200),
                                                 (16, False, np.int32, 1), (1, False, np.uint8, 127),
                                                 # one-byte codes, K a multiple of 8: read 8 codes at a time
                                                 (8, False, np.uint8, 136), (5, True, np.int8, 72),
                                                 (1, False, np.uint8, 8), (3, True, np.int8, 200)])
def test_pack_planes_matches_bit_loop(bits, signed, dtype, k):
    """Bit b of word w of plane m, row r = bit m of the two's complement of codes[r, 64 w + b]."""
    rng = np.random.default_rng(bits * k)
    lo, hi = code_range(bits, signed)
    info = np.iinfo(dtype)
    c = rng.integers(max(lo, info.min), min(hi, info.max) + 1, size=(3, k)).astype(dtype)
    c[0, 0] = max(lo, info.min)
    planes = pack_planes(c, bits, signed)
    assert planes.dtype == np.uint64 and planes.shape == (bits, 3, -(-k // 64))
    for m in range(bits):
        for r in range(3):
            for w in range(planes.shape[2]):
                expected = sum((((int(c[r, 64 * w + b]) & ((1 << bits) - 1)) >> m) & 1) << b
                               for b in range(min(64, k - 64 * w)))
                assert int(planes[m, r, w]) == expected, (m, r, w)


def test_channels_last_entry_point():
    """bitplane_conv2d_nhwc == bitplane_conv2d transposed, every grid, dtype included."""
    rng = np.random.default_rng(11)
    for x_bits, x_grid, w_bits, w_grid, stride in ((8, "signed", 8, "signed", 1), (4, "dorefa", 3, "dorefa", 2),
                                                   (16, "signed", 16, "signed", 1), (2, "unsigned", 5, "dorefa", 1)):
        x = codes(rng, (2, 5, 6, 7), x_bits, x_grid == "signed")
        w = codes(rng, (9, 5, 3, 3), w_bits, w_grid == "signed")
        bias = rng.integers(-1000, 1000, size=9).astype(np.int32)
        kw = dict(x_dorefa=x_grid == "dorefa", w_dorefa=w_grid == "dorefa")
        args = (x_bits, x_grid == "signed", w, w_bits, w_grid == "signed", bias, stride)
        nchw = bitplane_conv2d(x, *args, **kw)
        nhwc = bitplane.bitplane_conv2d_nhwc(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), *args, **kw)
        assert nhwc.dtype == nchw.dtype and nchw.flags.c_contiguous
        np.testing.assert_array_equal(nhwc.transpose(0, 3, 1, 2), nchw)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        bitplane.bitplane_conv2d_nhwc(x[0], *args)
