"""Golden vectors: encodings, the committed sets (byte-identical regeneration), the
bit-plane partials, stimuli, atomic writing and the command line."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fqsr_ref import vectors as V
from fqsr_ref.checkpoint import Checkpoint, save_checkpoint
from fqsr_ref.data import photos_dir
from fqsr_ref.data.images import read_image
from fqsr_ref.integer.run import run_ops
from fqsr_ref.models import preset
from fqsr_ref.verify import parse_hex

BUNDLED = [V.bundled_dir(bits) for bits in V.BUNDLED_BITS]
COMMITTED = V.committed_dirs()
INT_DTYPES = ["int8", "uint8", "int16", "int32", "int64"]


@pytest.fixture(scope="module")
def small_set():
    """The bundled 4/4/8 model on tiny inputs, every format: (model, files)."""
    vm = V.bundled_model("4/4/8")
    stimuli = V.default_stimuli(size=6, stimulus_size=4, stimulus_formats=V.FORMATS)
    return vm, V.build_vectors(vm, stimuli)


# ---------------------------------------------------------------------------
# Encodings
# ---------------------------------------------------------------------------

@settings(max_examples=40)
@given(dtype=st.sampled_from(INT_DTYPES), shape=st.lists(st.integers(0, 5), min_size=0, max_size=4),
       seed=st.integers(0, 2 ** 32 - 1))
def test_encodings_round_trip(tmp_path_factory, dtype, shape, seed):
    info = np.iinfo(dtype)
    arr = np.random.default_rng(seed).integers(info.min, info.max, tuple(shape), dtype=dtype, endpoint=True)
    path = tmp_path_factory.mktemp("npy") / "a.npy"
    path.write_bytes(V.encode(arr, "npy"))
    back = np.load(path, allow_pickle=False)
    assert back.dtype == arr.dtype and back.shape == arr.shape and np.array_equal(back, arr)
    assert (len(V.encode(arr, "npy")) - arr.nbytes) % 64 == 0          # header padded to 64
    assert V.encode(arr, "bin") == arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    assert np.array_equal(parse_hex(V.encode(arr, "hex"), arr.dtype), arr.ravel())


def test_hex_is_twos_complement_fixed_width_lowercase():
    assert V.hex_bytes(np.array([-1, 0, 127, -128], np.int8)) == b"ff\n00\n7f\n80\n"
    assert V.hex_bytes(np.array([255, 10], np.uint8)) == b"ff\n0a\n"
    assert V.hex_bytes(np.array([-2, 4660], np.int16)) == b"fffe\n1234\n"
    assert V.hex_bytes(np.array([-1, 48879], np.int32)) == b"ffffffff\n0000beef\n"
    assert V.hex_bytes(np.array([-(2 ** 63)], np.int64)) == b"8000000000000000\n"


def test_bin_is_little_endian():
    assert V.encode(np.array([0x1234, -2], np.int16), "bin") == b"\x34\x12\xfe\xff"


def test_storage_dtype():
    assert V.storage_dtype(0, 255) == np.uint8
    assert V.storage_dtype(0, 15) == np.int8
    assert V.storage_dtype(-7, 7) == np.int8
    assert V.storage_dtype(-127, 127) == np.int8
    assert V.storage_dtype(-32767, 32767) == np.int16
    assert V.storage_dtype(0, 65535) == np.int32
    with pytest.raises(ValueError, match="does not fit"):
        V.storage_dtype(0, 2 ** 40)


# ---------------------------------------------------------------------------
# The committed sets
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("vec_dir", COMMITTED, ids=[d.name for d in COMMITTED])
def test_committed_set_regenerates_byte_for_byte(vec_dir):
    """From the integer model and inputs stored in the set: integer arithmetic only."""
    assert V.compare_tree(vec_dir, V.regenerate(vec_dir)) == []


@pytest.mark.parametrize("vec_dir", COMMITTED, ids=[d.name for d in COMMITTED])
def test_committed_inputs_are_the_documented_stimuli(vec_dir):
    stimuli = {s.name: s for s in V.read_stimuli(vec_dir)}
    awkward = {s.name: s for s in V.awkward_stimuli()}
    assert sorted(set(stimuli) - set(awkward)) == sorted(V.STIMULI)
    for name in set(stimuli) & set(awkward):
        assert np.array_equal(stimuli[name].codes, awkward[name].codes), name
    photo = read_image(os.path.join(photos_dir(), V.DEFAULT_PHOTO))
    natural = stimuli["natural"].codes
    expect = V.make_stimulus("natural", natural.shape[-1], image=photo)
    assert np.array_equal(natural, expect)
    assert set(V.FORMATS) <= set(stimuli["natural"].formats) <= set(V.FORMATS) | {"mem"}
    for name in V.STIMULI[1:]:
        codes = stimuli[name].codes
        assert np.array_equal(codes, V.make_stimulus(name, codes.shape[-1])), name


def test_committed_size_is_small():
    total = sum(p.stat().st_size for d in BUNDLED for p in d.rglob("*") if p.is_file())
    assert total < 5_000_000


def test_manifest_describes_every_op_and_tensor():
    vec_dir = V.bundled_dir("4/4/8")
    m = V.read_manifest(vec_dir)
    assert m["schema_version"] == V.SCHEMA_VERSION
    assert m["model"]["config"]["wt"] == 4 and m["model"]["config"]["channels"] == 16
    produced = {"image.in"}
    for op in m["ops"]:
        assert op["input"] in produced, f"{op['name']} reads {op['input']} before it is written"
        produced.add(op["output"])
        if op["kind"] == "conv":
            w = m["tensors"][op["weight"]]
            assert w["layout"] == "OIHW" and w["shape"] == [op["cout"], op["cin"], op["kernel"], op["kernel"]]
            assert op["acc_dtype"] == "int32" and 0 < op["acc_bound"] < 2 ** 31
            assert op["right_shift"] == 31 - op["shift"]
    for name, t in m["tensors"].items():
        assert {"bits", "signed", "scale", "qmin", "qmax", "dtype", "layout", "kind"} <= set(t), name
    for rel, rec in m["files"].items():
        assert not rel.startswith("/") and ".." not in rel.split("/")
        assert (vec_dir / rel).stat().st_size == rec["bytes"]
    # the all-255 stimulus is there to drive layers inside the network into saturation
    sat = m["stimuli"]["white"]["saturation"]
    assert any(s["high"] + s["low"] for op, s in sat.items() if op != "tail")


@pytest.mark.parametrize("vec_dir", COMMITTED, ids=[d.name for d in COMMITTED])
def test_bitplane_files_rebuild_the_accumulator(vec_dir):
    """The README's rule, applied to the files alone, gives the stored accumulator."""
    m = V.read_manifest(vec_dir)
    for stim, entry in m["stimuli"].items():
        for conv, e in entry["bitplane"].items():
            n, o, y, x = e["element"]
            acc = V.find_array(vec_dir, m, f"{stim}/{conv}.acc")
            row = V.find_array(vec_dir, m, f"{stim}/{conv}.plane.row")
            col = V.find_array(vec_dir, m, f"{stim}/{conv}.plane.col")
            pop = V.find_array(vec_dir, m, f"{stim}/{conv}.plane.pop")
            bias = V.find_array(vec_dir, m, f"weights/{conv}.b")[o]
            assert acc[n, o, y, x] == e["acc"] == int(bias) + int(row.astype(np.int64) @ col.astype(np.int64))
            assert V.rebuild_accumulator(pop, e["row_signed"], e["col_signed"], e["bias"]) == e["acc"]
            assert pop.shape == (e["row_bits"], e["col_bits"]) and pop.max() <= e["fan_in"]


def test_bitplane_engine_reproduces_the_committed_codes():
    """The Numba popcount engine (Eq. 2) gives the stored codes of every tensor."""
    vec_dir = V.bundled_dir("4/4/8")
    vm = V.read_model(vec_dir)
    m = V.read_manifest(vec_dir, check_files=False)
    natural = next(s for s in V.read_stimuli(vec_dir) if s.name == "natural")
    codes = run_ops(vm.model, natural.codes, "bitplane")
    for name, arr in codes.items():
        assert np.array_equal(arr, V.find_array(vec_dir, m, f"natural/{name}")), name


# ---------------------------------------------------------------------------
# Building and writing
# ---------------------------------------------------------------------------

def test_build_is_deterministic_and_self_consistent(small_set, tmp_path):
    vm, files = small_set
    again = V.build_vectors(vm, V.default_stimuli(size=6, stimulus_size=4, stimulus_formats=V.FORMATS))
    assert files == again
    out = V.write_tree(tmp_path / "set", files)
    assert V.compare_tree(out, V.regenerate(out)) == []
    m = json.loads(files["manifest.json"])
    assert set(m["files"]) == set(files) - {"manifest.json"}
    assert b"\r" not in files["manifest.json"] and files["manifest.json"].endswith(b"}\n")


def test_saturation_counts_match_the_codes(small_set, tmp_path):
    vm, files = small_set
    out = V.write_tree(tmp_path / "set", files)
    m = V.read_manifest(out)
    for stim, entry in m["stimuli"].items():
        for op in m["ops"]:
            if op["kind"] == "shuffle":
                continue
            codes = V.find_array(out, m, f"{stim}/{op['output']}")
            lo, hi = op["clamp"]
            s = entry["saturation"][op["name"]]
            # a saturated element sits on the clamp bound (not every bound value saturated)
            assert s["low"] <= int((codes == lo).sum()) and s["high"] <= int((codes == hi).sum())
            assert s["of"] == codes.size


def test_write_tree_replaces_a_vector_dir_and_refuses_other_dirs(small_set, tmp_path):
    _, files = small_set
    out = tmp_path / "set"
    V.write_tree(out, {"manifest.json": b"{}", "old.bin": b"x"})
    V.write_tree(out, files)
    assert not (out / "old.bin").exists() and V.compare_tree(out, files) == []
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a vector directory"):
        V.write_tree(tmp_path / "notes", files)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "set"]   # no temporaries left


def test_write_tree_failure_leaves_the_old_directory(small_set, tmp_path, monkeypatch):
    _, files = small_set
    out = V.write_tree(tmp_path / "set", files)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    original, calls = Path.write_bytes, []

    def failing_write(self, data):
        calls.append(self)
        if len(calls) > 5:
            raise OSError(28, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing_write)
    with pytest.raises(ValueError, match="cannot write .*No space left"):
        V.write_tree(out, {k: v + b"!" for k, v in files.items()})
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_stimulus_names_and_formats_are_checked(small_set):
    vm, _ = small_set
    codes = V.make_stimulus("zeros", 4)
    for bad in (V.Stimulus("../x", codes, "", ("bin",)), V.Stimulus("weights", codes, "", ("bin",))):
        with pytest.raises(ValueError, match="stimulus|names"):
            V.build_vectors(vm, [bad])
    with pytest.raises(ValueError, match="must include 'bin'"):
        V.build_vectors(vm, [V.Stimulus("zeros", codes, "", ("hex",))])
    with pytest.raises(ValueError, match="uint8"):
        V.build_vectors(vm, [V.Stimulus("zeros", codes.astype(np.int16), "", ("bin",))])
    with pytest.raises(ValueError, match="unknown stimulus"):
        V.make_stimulus("stripes", 4)


def test_checker_and_noise_stimuli():
    c = V.make_stimulus("checker", 4)
    assert c.shape == (1, 3, 4, 4) and c[0, 0, 0, 0] == 0 and c[0, 2, 0, 1] == 255 and c[0, 1, 1, 1] == 0
    assert np.array_equal(V.make_stimulus("noise", 5), V.make_stimulus("noise", 5))
    assert V.make_stimulus("noise", 8).std() > 50


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def test_cli_writes_checks_and_rejects(tmp_path, capsys):
    out = tmp_path / "v"
    assert V.main(["--out", str(out), "--size", "5", "--stimulus-size", "3", "--bits", "8/8/8"]) == 0
    assert (out / "manifest.json").is_file() and (out / "natural" / "image.out.hex").is_file()
    assert (out / "noise" / "image.out.hex").exists()              # every stimulus has .hex (issue 16)
    assert not (out / "noise" / "image.out.npy").exists()          # synthetic stimuli: no .npy
    assert V.main(["--check", str(out)]) == 0
    assert "byte-identical" in capsys.readouterr().out
    (out / "zeros" / "head.out.bin").write_bytes(b"\0")
    assert V.main(["--check", str(out)]) == 2
    assert "sha256" in capsys.readouterr().err
    assert V.main(["--out", str(tmp_path / "w"), "--formats", "npy,tiff"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: formats") and err.count("\n") == 1
    assert V.main(["--out", str(tmp_path / "w"), "--checkpoint", str(tmp_path / "none.npz")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_converts_a_checkpoint(tmp_path, capsys):
    cfg = preset("edsr", 3, "4/4/8", blocks=1, channels=4)
    params, state = V.calibrated_params(cfg, np.random.default_rng(3), np.random.default_rng(4).random((2, 3, 6, 6)))
    ckpt = tmp_path / "quant.npz"
    save_checkpoint(ckpt, Checkpoint(cfg, params, state, {}, {}))
    out = tmp_path / "v"
    assert V.main(["--checkpoint", str(ckpt), "--out", str(out), "--size", "7", "--stimulus-size", "4"]) == 0
    assert "edsr x3 4/4/8" in capsys.readouterr().out
    m = V.read_manifest(out)
    assert m["model"]["source"].startswith("checkpoint quant.npz (sha256 ")
    assert m["model"]["config"]["arch"] == "edsr" and m["stimuli"]["natural"]["shapes"]["image.out"] == [1, 3, 21, 21]
    assert V.compare_tree(out, V.regenerate(out)) == []
    vm = V.read_model(out)
    assert vm.weight_scales["head"] == pytest.approx(float(params["head.w.interval"]) / 7)
