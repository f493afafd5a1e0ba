"""Line-buffer window vectors of a stream directory (issue 26 item 1: "the line-buffer
contents a KxK window sees at chosen positions"): `<S>/windows/<conv>/n<n>_y<y>_x<x>.f<SIMD>.mem`.

The window reader and the window rebuilt from the input stream's beats are written from
vectors/README.md ("Stream-order vectors", "Windows"), not from fqsr_ref/vectors/stream.py;
each window, with the conv's weights and bias, must give the set's golden accumulator at its
position (bias + sum of window x weights)."""
import json

import numpy as np
import pytest

import fqsr_ref.vectors as V
from fqsr_ref.vectors.sources import read_model
from fqsr_ref.vectors.stream import stream_files
from test_stream import read_beats

KIT = V.corner_dir("4/4/8")
STIMULI = ["batch", "column", "natural"]


@pytest.fixture(scope="module", params=[8, 3], ids=["simd8", "simd3"])
def streams(request):
    # SIMD 8: a whole 8-channel pixel a word (3-channel image: 5 empty lanes); SIMD 3: 8 and
    # 32 channels split into groups with empty lanes
    return request.param, stream_files(KIT, pe=4, simd=request.param, stimuli=STIMULI)


def read_window(text: bytes, k: int, lanes: int, bits: int, signed: bool, cin: int) -> np.ndarray:
    """(K, K, CIN) codes from a window .mem: words in (ky, kx, g) order, lane l of word g =
    channel g SIMD + l at BITS bits, no marker bits, 0 past CIN."""
    lines = text.decode("ascii").split("\n")
    assert lines[-1] == "" and {len(ln) for ln in lines[:-1]} == {-(-lanes * bits // 4)}
    groups = -(-cin // lanes)
    words = [int(ln, 16) for ln in lines[:-1]]
    assert len(words) == k * k * groups
    out = np.zeros((k, k, groups * lanes), np.int64)
    for i, word in enumerate(words):
        assert word >> (lanes * bits) == 0
        tap, g = divmod(i, groups)
        for lane in range(lanes):
            v = (word >> (lane * bits)) & ((1 << bits) - 1)
            out[tap // k, tap % k, g * lanes + lane] = v - (1 << bits) if signed and v >> (bits - 1) else v
    assert not out[:, :, cin:].any()
    return out[:, :, :cin]


def expected_positions(h, w):
    """README: the four corners, the middle of each border row and column, (H//2, W//2)."""
    return {(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (0, w // 2), (h - 1, w // 2), (h // 2, 0),
            (h // 2, w - 1), (h // 2, w // 2)}


def test_windows_rebuilt_from_the_input_beats_give_the_golden_accumulators(streams):
    simd, files = streams
    index = json.loads(files["stream.json"])
    model = read_model(KIT).model
    manifest = V.read_manifest(KIT)
    convs = {op.name: op for op in model.ops if op.kind == "conv"}
    checked = padded = accs = 0
    for stim in STIMULI:
        entry = index["stimuli"][stim]
        assert set(entry["windows"]) == set(convs)
        for name, win in entry["windows"].items():
            op = convs[name]
            k, cin = op.weight.shape[2], op.weight.shape[1]
            assert (win["k"], win["cin"], win["lanes"], win["pad"]) == (k, cin, simd, "zero")
            # the input stream at SIMD lanes, rebuilt from its beats (TUSER / TLAST checked)
            src = entry["streams"][f"{op.input}.f{simd}"]
            x = read_beats(files[src["path"]], simd, src["bits"], src["signed"], src["shape"])
            acc = V.find_array(KIT, manifest, f"{stim}/{name}.acc").astype(np.int64)
            n, _, h, w = x.shape
            positions = [(p["n"], p["y"], p["x"]) for p in win["positions"]]
            assert len(set(positions)) == len(positions)
            assert set(positions) == {(b, y, xx) for b in range(n) for y, xx in expected_positions(h, w)}
            for p in win["positions"]:
                b, y, xx = p["n"], p["y"], p["x"]
                assert p["path"] == f"{stim}/windows/{name}/n{b}_y{y}_x{xx}.f{simd}.mem"
                got = read_window(files[p["path"]], k, simd, win["bits"], win["signed"], cin)
                # the window from the beats: tap (ky, kx) = pixel (y + ky - K//2, xx + kx - K//2), 0 outside
                want = np.zeros((k, k, cin), np.int64)
                for ky in range(k):
                    for kx in range(k):
                        iy, ix = y + ky - k // 2, xx + kx - k // 2
                        if 0 <= iy < h and 0 <= ix < w:
                            want[ky, kx] = x[b, :, iy, ix]
                        else:
                            padded += 1
                assert np.array_equal(got, want), (stim, name, b, y, xx)
                # bias + sum of window x weights = the golden accumulator, every output channel
                total = op.bias.astype(np.int64) + np.einsum("yxc,ocyx->o", got, op.weight.astype(np.int64))
                assert np.array_equal(total, acc[b, :, y, xx]), (stim, name, b, y, xx)
                accs += total.size
                checked += 1
    # 7 convs at LR: batch 2 frames x 9 positions (5x3), column 3 distinct (9x1), natural 9; the
    # tail at HR: batch 2 x 9 (10x6), column 6 (18x2: x = 0, 1), natural 9
    assert checked == 7 * (18 + 3 + 9) + (18 + 6 + 9)
    assert padded > 0 and accs > checked


def test_window_labels_merge_on_small_images(streams):
    _, files = streams
    index = json.loads(files["stream.json"])
    column = index["stimuli"]["column"]["windows"]["head"]["positions"]          # 9 x 1
    assert [(p["y"], p["x"], p["where"]) for p in column] == [
        (0, 0, ["top-left", "top", "top-right"]), (4, 0, ["left", "interior", "right"]),
        (8, 0, ["bottom-left", "bottom", "bottom-right"])]
    natural = index["stimuli"]["natural"]["windows"]["tail"]["positions"]       # 32 x 32 (after x2)
    assert [(p["y"], p["x"]) for p in natural][:3] == [(0, 0), (0, 16), (0, 31)]
    assert natural[4]["where"] == ["interior"] and (natural[4]["y"], natural[4]["x"]) == (16, 16)
