"""The hardware kit (issue 16): .mem memories at the code's own width, NHWC/OHWI and
bit-plane words, per-op headers, awkward stimuli; the verifier's filters, .mem port
files and fast start; bounded memory and --out failures of the vectors command.

The .mem and header readers here are written from vectors/README.md alone, not from
fqsr_ref/vectors/hdl.py, so a layout bug cannot hide in a shared helper."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fqsr_ref.vectors as V
from fqsr_ref import verify as verify_mod

KIT = V.corner_dir("4/4/8")          # the committed set made with --hdl --awkward
KIT16 = V.corner_dir("16/16/16")     # --hdl awkward --awkward: the kit for column and batch only


def read_mem(path: Path):
    """Words of a .mem file as Python ints; every line the same number of hex digits."""
    lines = path.read_text("ascii").split("\n")
    assert lines[-1] == "" and all(re.fullmatch(r"[0-9a-f]+", ln) for ln in lines[:-1])
    assert len({len(ln) for ln in lines[:-1]}) <= 1
    return [int(ln, 16) for ln in lines[:-1]], len(lines[0])


def field(word: int, i: int, bits: int, signed: bool) -> int:
    v = (word >> (i * bits)) & ((1 << bits) - 1)
    return v - (1 << bits) if signed and v >> (bits - 1) else v


def golden(manifest, stem, kit=KIT):
    return V.find_array(kit, manifest, stem).astype(np.int64)


@pytest.fixture(scope="module")
def manifest():
    return V.read_manifest(KIT)


@pytest.fixture(scope="module", params=[KIT, KIT16], ids=["4-4-8", "16-16-16"])
def kit(request):
    """Each committed kit set: (directory, manifest)."""
    return request.param, V.read_manifest(request.param)


def test_kit_set_has_awkward_stimuli_and_hex_everywhere(manifest):
    shapes = {s: e["shapes"]["image.in"] for s, e in manifest["stimuli"].items()}
    assert shapes["column"] == [1, 3, 9, 1] and shapes["batch"] == [2, 3, 5, 3]
    for stim in manifest["stimuli"]:
        assert f"{stim}/image.out.hex" in manifest["files"]


def test_16_bit_kit_has_the_awkward_stimuli_with_memories():
    stimuli = V.read_manifest(KIT16)["stimuli"]
    assert {s: e["shapes"]["image.in"] for s, e in stimuli.items() if "mem" in e["formats"]} == \
        {"column": [1, 3, 9, 1], "batch": [2, 3, 5, 3]}


@pytest.mark.parametrize("stim", ["natural", "column", "batch"])
def test_element_nhwc_and_plane_memories_read_back(kit, stim):
    KIT, manifest = kit
    if "mem" not in manifest["stimuli"][stim]["formats"]:
        pytest.skip(f"{KIT.name}: no kit for {stim}")
    t = manifest["tensors"]
    for name in manifest["stimuli"][stim]["shapes"]:
        if name not in t or t[name]["kind"] != "codes":
            continue
        bits, signed = t[name]["bits"], t[name]["signed"]
        codes = golden(manifest, f"{stim}/{name}", KIT)
        n, c, h, w = codes.shape
        words, digits = read_mem(KIT / stim / f"{name}.mem")
        assert digits == -(-bits // 4)
        assert [field(x, 0, bits, signed) for x in words] == codes.ravel().tolist()
        words, digits = read_mem(KIT / stim / f"{name}.nhwc.mem")
        assert digits == -(-c * bits // 4) and len(words) == n * h * w
        got = np.array([[field(x, ch, bits, signed) for ch in range(c)] for x in words])
        assert np.array_equal(got.reshape(n, h, w, c).transpose(0, 3, 1, 2), codes)
        planes = KIT / stim / f"{name}.planes.mem"
        if planes.exists():
            words, digits = read_mem(planes)
            nw = -(-c // 64)
            assert digits == 16 and len(words) == bits * n * h * w * nw
            arr = np.array(words, dtype=object).reshape(bits, n, h, w, nw)
            rebuilt = np.zeros((n, c, h, w), np.int64)
            for m in range(bits):
                weight = -(1 << m) if signed and m == bits - 1 else 1 << m
                for ch in range(c):
                    bit = np.vectorize(lambda x: (x >> (ch % 64)) & 1)(arr[m, :, :, :, ch // 64])
                    rebuilt[:, ch] += weight * bit.astype(np.int64)
            assert np.array_equal(rebuilt, codes)
    for op in manifest["ops"]:
        if op["kind"] == "conv":
            acc = golden(manifest, f"{stim}/{op['accumulator']}", KIT)
            words, digits = read_mem(KIT / stim / f"{op['name']}.acc.mem")
            bits = op["acc_bound"].bit_length() + 1
            assert digits == -(-bits // 4)
            assert [field(x, 0, bits, True) for x in words] == acc.ravel().tolist()


def test_weight_memories_read_back(kit):
    KIT, manifest = kit
    for op in manifest["ops"]:
        if op["kind"] != "conv":
            continue
        w = golden(manifest, f"weights/{op['weight']}", KIT)
        bits = manifest["tensors"][op["weight"]]["bits"]
        o, i, k, _ = w.shape
        words, _ = read_mem(KIT / "weights" / f"{op['name']}.w.mem")
        assert [field(x, 0, bits, True) for x in words] == w.ravel().tolist()
        words, digits = read_mem(KIT / "weights" / f"{op['name']}.w.ohwi.mem")
        assert digits == -(-i * bits // 4) and len(words) == o * k * k
        got = np.array([[field(x, c, bits, True) for c in range(i)] for x in words]).reshape(o, k, k, i)
        assert np.array_equal(got.transpose(0, 3, 1, 2), w)
        words, _ = read_mem(KIT / "weights" / f"{op['name']}.w.planes.mem")
        nw = -(-i // 64)
        arr = np.array(words, dtype=object).reshape(bits, o, k, k, nw)
        for p in range(bits):
            for c in range(i):
                want = (w[:, c] >> p) & 1            # two's complement bit p (numpy >> is arithmetic)
                got = np.vectorize(lambda x: (x >> (c % 64)) & 1)(arr[p, :, :, :, c // 64])
                assert np.array_equal(got.astype(np.int64), want)
        b = golden(manifest, f"weights/{op['bias']}", KIT)
        words, digits = read_mem(KIT / "weights" / f"{op['name']}.b.mem")
        assert digits == 8 and [field(x, 0, 32, True) for x in words] == b.tolist()


def parse_svh(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r'localparam (?:integer |signed \[63:0\] )?(\w+) = (?:64\'sd)?(-?\d+|"[^"]*");', line)
        if m:
            out[m.group(1)] = m.group(2).strip('"') if m.group(2).startswith('"') else int(m.group(2))
        else:
            assert line.startswith("//"), line
    return out


def parse_c(text: str) -> dict:
    return {m.group(1): (m.group(2).strip('"') if m.group(2).startswith('"')
                         else int(m.group(2).strip("()").rstrip("L")))
            for m in re.finditer(r"^#define (\w+) (.+)$", text, re.M) if not m.group(1).endswith("_H")}


@pytest.mark.parametrize("stim", ["natural", "batch"])
def test_headers_agree_with_manifest_and_each_other(kit, stim):
    KIT, manifest = kit
    if "mem" not in manifest["stimuli"][stim]["formats"]:
        pytest.skip(f"{KIT.name}: no kit for {stim}")
    shapes = manifest["stimuli"][stim]["shapes"]
    c_params = parse_c((KIT / stim / "params.h").read_text())
    for op in manifest["ops"]:
        p = parse_svh((KIT / stim / f"{op['name']}.svh").read_text())
        prefix = re.sub(r"[^A-Za-z0-9]", "_", op["name"]).upper() + "__"
        assert {k[len(prefix):]: v for k, v in c_params.items() if k.startswith(prefix)} == p
        xs, ys = shapes[op["input"]], shapes[op["output"]]
        assert (p["BATCH"], p["H_IN"], p["W_IN"], p["H_OUT"], p["W_OUT"]) == (xs[0], xs[2], xs[3], ys[2], ys[3])
        assert (p["QMIN"], p["QMAX"]) == tuple(op["clamp"]) if "clamp" in op else True
        for key, path in p.items():
            if key.endswith(("_MEM", "_HEX")):
                assert (KIT / path).is_file() and path in manifest["files"]
        if op["kind"] == "conv":
            assert (p["CIN"], p["COUT"], p["K"], p["PAD"], p["STRIDE"]) == (op["cin"], op["cout"], op["kernel"],
                                                                             op["pad"], op["stride"])
            assert (p["MULT"], p["SHIFT"], p["NEG_MULT"], p["NEG_SHIFT"], p["NEG_SIGN"], p["ACC_BOUND"]) == \
                (op["multiplier"], op["shift"], op["neg_multiplier"], op["neg_shift"], op["neg_sign"], op["acc_bound"])
            assert p["ACC_BITS"] == op["acc_bound"].bit_length() + 1
            assert p["W_BITS"] == manifest["tensors"][op["weight"]]["bits"]
            assert p["IN_BITS"] == manifest["tensors"][op["input"]]["bits"]
        if op["kind"] == "add":
            assert (p["MULT"], p["BRANCH_MULT"], p["SHIFT"], p["BRANCH_RELU"]) == \
                (op["multiplier"], op["branch_multiplier"], op["shift"], int(op["branch_relu"]))


# --- the verifier ---------------------------------------------------------------------------

def port_of(tmp_path, manifest, stim, ops, fmt="mem", kit=KIT):
    """A port directory holding only `ops`' outputs (and accumulators) of one stimulus,
    copied from the golden .mem / .hex files, in $writememh's form (address comments)."""
    port = tmp_path / "port"
    (port / stim).mkdir(parents=True)
    for op in manifest["ops"]:
        if op["name"] not in ops:
            continue
        stems = [op["output"]] + ([op["accumulator"]] if op["kind"] == "conv" else [])
        for stem in stems:
            lines = (kit / stim / f"{stem}.{'mem' if fmt == 'mem' else 'hex'}").read_text().splitlines()
            text = "".join((f"// 0x{i:08x}\n" if i % 16 == 0 else "") + ln + "\n" for i, ln in enumerate(lines))
            (port / stim / f"{stem}.{fmt}").write_text(text)
    return port


@pytest.mark.parametrize("fmt", ["mem", "hex"])
def test_verify_one_layer_from_a_writememh_dump(tmp_path, kit, capsys, fmt):
    KIT, manifest = kit
    port = port_of(tmp_path, manifest, "batch", {"head", "tail"}, fmt, KIT)
    assert verify_mod.main([str(KIT), str(port), "--layer", "head", "--layer", "tail", "--stimulus", "batch"]) == 0
    out = capsys.readouterr().out
    assert "2 layers PASS, 0 FAIL" in out
    assert verify_mod.main([str(KIT), str(port), "--layer", "head,tail,trunk", "--stimulus", "batch"]) == 1
    assert "2 layers PASS, 1 FAIL" in capsys.readouterr().out
    # one wrong code in the .mem dump fails its layer
    path = port / "batch" / f"head.out.{fmt}"
    lines = path.read_text().splitlines()
    i = next(j for j, ln in enumerate(lines) if not ln.startswith("//"))
    lines[i] = format(int(lines[i], 16) ^ 1, f"0{len(lines[i])}x")
    path.write_text("\n".join(lines) + "\n")
    assert verify_mod.main([str(KIT), str(port), "--layer", "head", "--stimulus", "batch"]) == 1


def test_hdl_awkward_needs_the_awkward_stimuli(tmp_path, capsys):
    assert V.main(["--corner", "4/4/8", "--hdl", "awkward", "--out", str(tmp_path / "v")]) == 2
    assert "add --awkward" in capsys.readouterr().err and not (tmp_path / "v").exists()


def test_verify_unknown_names_exit_2(tmp_path, capsys):
    (tmp_path / "port").mkdir()
    assert verify_mod.main([str(KIT), str(tmp_path / "port"), "--layer", "head,nope", "--layer", "zip"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --layer nope, zip") and err.count("\n") == 1
    assert verify_mod.main([str(KIT), str(tmp_path / "port"), "--stimulus", "cat"]) == 2
    assert capsys.readouterr().err.startswith("error: --stimulus cat")


def test_mem_port_file_width_errors():
    with pytest.raises(ValueError, match="expected 1 hex digits"):
        verify_mod.parse_hex(b"0f\n", np.dtype(np.int8), 1, (4, True))
    assert verify_mod.parse_hex(b"f\n7\n9\n", np.dtype(np.int8), 3, (4, True)).tolist() == [-1, 7, -7]
    with pytest.raises(ValueError, match="above bit 9"):
        verify_mod.parse_hex(b"7ff\n", np.dtype(np.int16), 1, (10, True))


def test_verify_starts_without_numba_or_scipy():
    code = ("import sys, runpy; sys.argv = ['verify', '--help']\n"
            "try:\n runpy.run_module('fqsr_ref.verify', run_name='__main__')\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('numba', 'scipy') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().endswith("[]"), r.stdout + r.stderr
    assert "exit status: 0" in r.stdout and "1 a layer fails" in r.stdout and "2 unusable" in r.stdout


# --- issue 12 rows ----------------------------------------------------------------------------

def test_huge_npy_header_golden_and_port_exit_2(tmp_path, capsys):
    src = V.bundled_dir("4/4/8")
    golden = tmp_path / "g"
    files = V.regenerate(src)
    V.write_tree(golden, files)
    rel = "natural/head.out.npy"
    data = (golden / rel).read_bytes()
    huge = data.replace(b"'shape': (1, 16, 16, 16), ", b"'shape': (1, 16, 16000000000, 16), ")[:len(data)]
    assert huge != data
    # port side: the header is refused before reading
    port = tmp_path / "port"
    (port / "natural").mkdir(parents=True)
    (port / rel).write_bytes(huge[:128])
    code = verify_mod.main([str(golden), str(port), "--layer", "head", "--stimulus", "natural"])
    assert code == 1 and "declares shape" in capsys.readouterr().out
    # golden side: a manifest consistent with the lying file (sha256 updated) still exits 2, one line
    m = json.loads((golden / "manifest.json").read_text())
    (golden / rel).write_bytes(huge[:128])
    m["files"][rel].update(sha256=V.sha256(huge[:128]), bytes=128)
    (golden / "manifest.json").write_text(json.dumps(m))
    (port / rel).unlink()
    (port / "natural" / "head.out.bin").write_bytes(b"\0")
    assert verify_mod.main([str(golden), str(port), "--layer", "head", "--stimulus", "natural"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "head.out.npy" in err


def test_vectors_refuses_a_set_too_large_up_front(tmp_path, capsys, monkeypatch):
    import fqsr_ref.vectors.cli as cli
    called = []
    monkeypatch.setattr(cli, "build_vectors", lambda *a: called.append(1))
    assert cli.main(["--out", str(tmp_path / "v"), "--stimulus-size", "3000"]) == 2
    err = capsys.readouterr().err
    assert re.match(r"error: vectors: this set would need about \d+\.\d GiB of memory", err)
    assert err.count("\n") == 1 and not called and not (tmp_path / "v").exists()
    need = V.estimate_bytes(V.bundled_model("4/4/8").model, [((1, 3, 3000, 3000), ("bin", "hex"))])
    assert need > 20 << 30        # what the OOM killer met: more than the 24 GB machine had


def test_estimate_covers_a_real_build():
    vm = V.bundled_model("4/4/8")
    stimuli = V.default_stimuli(size=12, stimulus_size=6, formats=V.FORMATS, stimulus_formats=("bin", "hex"))
    files = V.build_vectors(vm, stimuli)
    est = V.estimate_bytes(vm.model, [(s.codes.shape, s.formats) for s in stimuli])
    assert sum(len(d) for d in files.values()) < est


def test_vectors_out_not_writable_one_line_no_leftovers(tmp_path, capsys, monkeypatch):
    import fqsr_ref.vectors.cli as cli
    import fqsr_ref.vectors.store as store
    out = tmp_path / "set"
    V.write_tree(out, V.build_vectors(V.bundled_model("4/4/8"),
                                      V.default_stimuli(size=4, stimulus_size=3)))
    before = sorted(p.name for p in tmp_path.iterdir())
    real_replace = os.replace

    def readonly_replace(src, dst):        # a read-only file system refuses the rename
        if ".old-" in str(dst) or ".tmp-" in str(src):
            raise OSError(30, "Read-only file system")
        return real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", readonly_replace)
    assert cli.main(["--out", str(out), "--size", "4", "--stimulus-size", "3"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: vectors: cannot write {out}: Read-only file system\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before       # no .old-*, no .tmp-*
    monkeypatch.undo()
    # a folder nobody may write into: refused before any work
    monkeypatch.setattr(store.os, "access", lambda path, mode: False)
    monkeypatch.setattr(cli, "build_vectors", lambda *a: pytest.fail("built before checking --out"))
    assert cli.main(["--out", str(tmp_path / "new" / "set")]) == 2
    err = capsys.readouterr().err
    assert "is not a writable directory" in err and err.count("\n") == 1


@pytest.mark.skipif(__import__("shutil").which("iverilog") is None,
                    reason="iverilog not installed (Debian: apt-get install iverilog)")
def test_icarus_writememh_dump_passes_verify(tmp_path, kit, capsys):
    """A real simulator round trip: Icarus reads the golden code-width memories with
    $readmemh using the header's localparams and dumps them with $writememh; the
    verifier accepts the dumps as they are (address comments, code width)."""
    KIT, _ = kit
    port = tmp_path / "port"
    (port / "batch").mkdir(parents=True)
    tb = tmp_path / "tb.v"
    tb.write_text(f'''module tb;
`include "batch/head.svh"
  reg [OUT_BITS-1:0] y [0:BATCH*COUT*H_OUT*W_OUT-1];
  reg [ACC_BITS-1:0] acc [0:BATCH*COUT*H_OUT*W_OUT-1];
  initial begin
    $readmemh(OUT_MEM, y); $readmemh(ACC_MEM, acc);
    $writememh("{port}/batch/head.out.mem", y); $writememh("{port}/batch/head.acc.mem", acc);
    $finish;
  end
endmodule
''')
    subprocess.run(["iverilog", "-g2012", "-I", str(KIT), "-o", str(tmp_path / "tb"), str(tb)], check=True,
                   capture_output=True, timeout=60)
    subprocess.run(["vvp", str(tmp_path / "tb")], check=True, capture_output=True, cwd=KIT, timeout=60)
    assert (port / "batch" / "head.out.mem").read_text().startswith("// 0x00000000\n")
    assert verify_mod.main([str(KIT), str(port), "--layer", "head", "--stimulus", "batch"]) == 0
    assert "head.out.mem, head.acc.mem" in capsys.readouterr().out


def test_kit_set_is_small_and_regenerates_with_added_formats(tmp_path):
    for kit in (KIT, KIT16):
        assert sum(p.stat().st_size for p in kit.rglob("*") if p.is_file()) < 4_000_000
    src = V.bundled_dir("4/4/8")
    files = V.regenerate(src, add_formats=("hex",))
    assert "noise/image.out.hex" in files and "noise/image.out.hex" not in V.read_manifest(src)["files"]
    out = V.write_tree(tmp_path / "v", files)
    assert V.compare_tree(out, V.regenerate(out)) == []
