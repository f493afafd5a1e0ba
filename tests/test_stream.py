"""Stream-order vectors (issue 26, `vectors --stream`): raster-order AXI-Stream beats folded
to PE / SIMD lanes with TUSER and TLAST, the skip FIFO depths, the strips of SPEC 6.9.

The beat reader here is written from vectors/README.md ("Stream-order vectors"), not from
fqsr_ref/vectors/stream.py, so a layout bug cannot hide in a shared helper."""
import json
import subprocess
import sys

import numpy as np
import pytest

import fqsr_ref.vectors as V
from fqsr_ref.vectors.stream import skip_fifo_depth, stream_files

KIT = V.corner_dir("4/4/8")


def read_beats(text: bytes, lanes: int, bits: int, signed: bool, shape):
    """Rebuild (N, C, H, W) codes from a stream .mem, checking TUSER and TLAST on every beat."""
    n, c, h, w = shape
    groups = -(-c // lanes)
    lines = text.decode("ascii").split("\n")
    assert lines[-1] == "" and len({len(ln) for ln in lines[:-1]}) == 1
    assert len(lines[0]) == -(-(lanes * bits + 2) // 4)
    words = [int(ln, 16) for ln in lines[:-1]]
    assert len(words) == n * h * w * groups
    out = np.zeros((n, groups * lanes, h, w), np.int64)
    i = 0
    for b in range(n):
        for y in range(h):
            for x in range(w):
                for g in range(groups):
                    word = words[i]
                    i += 1
                    assert (word >> (lanes * bits)) & 1 == (y == 0 and x == 0 and g == 0)
                    assert (word >> (lanes * bits + 1)) & 1 == (x == w - 1 and g == groups - 1)
                    assert word >> (lanes * bits + 2) == 0
                    for lane in range(lanes):
                        v = (word >> (lane * bits)) & ((1 << bits) - 1)
                        out[b, g * lanes + lane, y, x] = v - (1 << bits) if signed and v >> (bits - 1) else v
    assert not out[:, c:].any()          # lanes past C are 0
    return out[:, :c]


@pytest.fixture(scope="module")
def streams():
    # PE 3 does not divide 8 or 32 channels (padded lanes); SIMD 8 does; strips of 3 rows
    return stream_files(KIT, pe=3, simd=8, tile_rows=3, stimuli=["batch", "column", "natural"])


def test_every_tensor_rebuilt_from_its_beats(streams):
    index = json.loads(streams["stream.json"])
    manifest = V.read_manifest(KIT)
    checked = 0
    for stim in ("batch", "column", "natural"):
        entries = index["stimuli"][stim]["streams"]
        tensors = [n for n, t in manifest["tensors"].items() if t["kind"] == "codes"]
        convs = [op["name"] for op in manifest["ops"] if op["kind"] == "conv"]
        assert len(entries) == 2 * len(tensors) + len(convs)
        for key, e in entries.items():
            golden = V.find_array(KIT, manifest, f"{stim}/{e['tensor']}").astype(np.int64)
            got = read_beats(streams[e["path"]], e["lanes"], e["bits"], e["signed"], golden.shape)
            assert np.array_equal(got, golden), key
            checked += 1
    assert checked == 3 * (2 * 17 + 8)      # 17 code tensors at PE and SIMD lanes, 8 convs


def test_strips_stitch_back_to_the_whole_image(streams):
    index = json.loads(streams["stream.json"])
    manifest = V.read_manifest(KIT)
    for stim in ("batch", "column", "natural"):
        tiles = index["stimuli"][stim]["tiles"]
        image = V.find_array(KIT, manifest, f"{stim}/image.in").astype(np.int64)
        whole = V.find_array(KIT, manifest, f"{stim}/image.out").astype(np.int64)
        h, halo = image.shape[2], tiles["halo"]
        assert halo == 12               # 4 (head 9x9) + 5 x 1 + 1 (up.0) + 4 / 2 (tail at 2x)
        parts = []
        for k, strip in enumerate(tiles["strips"]):
            y0, y1 = strip["rows"]
            iy0, iy1 = strip["input_rows"]
            assert (y0, y1) == (3 * k, min(h, 3 * k + 3)) and (iy0, iy1) == (max(0, y0 - halo), min(h, y1 + halo))
            i, o = strip["input"], strip["output"]
            crop = read_beats(streams[i["path"]], i["lanes"], 8, False, i["shape"])
            assert np.array_equal(crop, image[:, :, iy0:iy1])
            parts.append(read_beats(streams[o["path"]], o["lanes"], 8, False, o["shape"]))
        assert len(parts) == -(-h // 3)
        assert np.array_equal(np.concatenate(parts, axis=2), whole)      # byte-identical after stitching


def test_skip_fifo_depths_follow_the_graph(streams):
    """Interior rule: (K//2)(W + 1) per conv on the longest branch path, plus 1 pixel; a short
    image clips it. Beats: pixels x ceil(C / PE)."""
    index = json.loads(streams["stream.json"])
    fifos = index["stimuli"]["natural"]["skip_fifos"]                 # 16 x 16, 8 channels
    assert {k: v["pixels"] for k, v in fifos.items()} == {"blocks.0.add": 2 * 17 + 1, "blocks.1.add": 2 * 17 + 1,
                                                          "long_add": 5 * 17 + 1}
    assert fifos["long_add"]["beats"] == 86 * 3 and fifos["long_add"]["skip"] == "head.out"
    assert index["stimuli"]["batch"]["skip_fifos"]["long_add"]["pixels"] == 15    # 5 x 3: clipped (21 interior)


def test_skip_fifo_depth_is_the_least_that_never_stalls():
    """A pixel-level simulation of the fork, the branch (conv needs) and the add, with the
    skip FIFO one pixel smaller and of the computed size: the smaller one deadlocks."""
    vm = V.read_model(KIT)
    add = [op for op in vm.model.ops if op.name == "long_add"][0]
    from fqsr_ref.vectors.stream import branch_need
    for h, w in ((16, 16), (5, 3), (9, 1), (7, 11)):
        depth = skip_fifo_depth(vm.model, add, h, w)
        need = branch_need(vm.model, add.input, add.branch, h, w)

        def runs(cap):
            sent, popped = 0, 0          # pixels the fork sent, pixels the add popped
            while popped < h * w:
                if popped < h * w and sent > 0 and need[popped] <= sent - 1:
                    popped += 1          # branch pixel `popped` ready: the add pops its skip pixel
                elif sent < h * w and sent - popped < cap:
                    sent += 1            # the fork pushes pixel `sent` to the FIFO and the branch
                else:
                    return False         # neither can move
            return True

        assert runs(depth) and not runs(depth - 1), (h, w, depth)


def test_stream_command_line(tmp_path, capsys):
    from fqsr_ref.vectors.cli import main
    out = tmp_path / "s"
    run = subprocess.run([sys.executable, "-m", "fqsr_ref.vectors", "--stream", str(KIT), "--pe", "4", "--simd", "4",
                          "--stimulus", "batch", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (out / "stream.json").is_file() and (out / "batch" / "blocks.0.add.stream.svh").is_file()
    # a stream directory is replaced; bad options: exit 2, one line naming the option
    assert main(["--stream", str(KIT), "--pe", "4", "--simd", "4", "--stimulus", "batch", "--out", str(out)]) == 0
    capsys.readouterr()
    for args, name in ((["--pe", "0", "--simd", "4"], "--pe"), (["--simd", "4"], "--pe"),
                       (["--pe", "2", "--simd", "2", "--stimulus", "nope"], "--stimulus")):
        assert main(["--stream", str(KIT), *args, "--out", str(tmp_path / "t")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and name in err, (args, err)
    assert main(["--pe", "2", "--out", str(tmp_path / "u")]) == 2
    assert "--stream" in capsys.readouterr().err
    assert not (tmp_path / "t").exists() and not (tmp_path / "u").exists()


# ---- weight and constant ROM images (weights/ of a stream directory) ------------------------
# The readers are written from vectors/README.md ("Weight and constant ROM images").

def rom_words(text: bytes, fmt: str) -> tuple:
    """(words, word_bits or None) of a .mem, .coe or .mif image."""
    lines = text.decode("ascii").splitlines()
    if fmt == "mem":
        return [int(ln, 16) for ln in lines], None
    if fmt == "coe":
        body = [ln for ln in lines if not ln.startswith(";")]
        assert body[0] == "memory_initialization_radix=16;" and body[1] == "memory_initialization_vector="
        vector = "".join(body[2:])
        assert vector.endswith(";")
        return [int(w, 16) for w in vector[:-1].split(",")], None
    head = dict(ln.rstrip(";").split("=") for ln in lines if "=" in ln)
    assert head["ADDRESS_RADIX"] == "UNS" and head["DATA_RADIX"] == "HEX"
    begin, end = lines.index("CONTENT BEGIN"), lines.index("END;")
    pairs = [ln.strip().rstrip(";").split(" : ") for ln in lines[begin + 1:end]]
    assert [int(a) for a, _ in pairs] == list(range(int(head["DEPTH"])))
    return [int(d, 16) for _, d in pairs], int(head["WIDTH"])


def signed_of(pattern: int, bits: int) -> int:
    return pattern - (1 << bits) if pattern >> (bits - 1) else pattern


@pytest.mark.parametrize("simd", [8, 3])
def test_rom_images_rebuild_the_weights_and_constants(streams, simd):
    """Every conv's weight ROM (one word a tap and SIMD channel group, bit m SIMD + l = bit m of
    channel g SIMD + l) and constant ROM, in each of .mem, .coe and .mif, read back to the
    model's weight codes, biases, multipliers, shifts and clamp; SIMD 3 splits 8 channels
    into groups with empty lanes."""
    from fqsr_ref.vectors.rom import rom_images
    from fqsr_ref.vectors.sources import read_model
    model = read_model(KIT).model
    files = {k: v for k, v in streams.items() if k.startswith("weights/")} if simd == 8 else rom_images(model, simd)[0]
    convs = [op for op in model.ops if op.kind == "conv"]
    assert len(files) == 6 * len(convs)
    for op in convs:
        o, i, k, _ = op.weight.shape
        bits, groups = op.w_bits, -(-i // simd)
        for fmt in ("mem", "coe", "mif"):
            words, width = rom_words(files[f"weights/{op.name}.w.f{simd}.{fmt}"], fmt)
            assert width in (None, bits * simd) and len(words) == o * k * k * groups
            w = np.zeros((o, groups * simd, k, k), np.int64)
            for index, word in enumerate(words):
                assert word >> (bits * simd) == 0
                tap, g = divmod(index, groups)
                oo, rest = divmod(tap, k * k)
                for lane in range(simd):
                    pattern = sum(((word >> (m * simd + lane)) & 1) << m for m in range(bits))
                    w[oo, g * simd + lane, rest // k, rest % k] = signed_of(pattern, bits)
            assert np.array_equal(w[:, :i], op.weight) and not w[:, i:].any(), (op.name, fmt)
            words, width = rom_words(files[f"weights/{op.name}.const.{fmt}"], fmt)
            assert width in (None, 32) and len(words) == 8 + o
            values = [signed_of(x, 32) for x in words]
            out = model.tensors[op.output]
            assert values[:8] == [op.multiplier, 31 - op.shift, op.neg_multiplier, 31 - op.neg_shift, op.neg_sign,
                                  out.qmin, out.qmax, o]
            assert values[8:] == op.bias.tolist()
