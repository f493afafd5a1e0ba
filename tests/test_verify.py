"""The port verifier: PASS/FAIL per layer, first mismatches, exit codes, and a golden
directory that is corrupt, truncated, renamed, incomplete or points outside itself."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fqsr_ref import vectors as V
from fqsr_ref.verify import EXIT_FAIL, EXIT_PASS, EXIT_UNUSABLE, main, verify

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def golden_files():
    vm = V.bundled_model("4/4/8")
    stimuli = [V.Stimulus("natural", V.make_stimulus("noise", 5), "5x5 noise", V.FORMATS),
               V.Stimulus("white", V.make_stimulus("white", 3), "3x3 white", ("bin",))]
    return V.build_vectors(vm, stimuli)


@pytest.fixture
def golden(tmp_path, golden_files):
    return V.write_tree(tmp_path / "golden", golden_files)


def perfect_port(golden: Path, dest: Path, fmt: str = "bin") -> Path:
    """A port that wrote every op's output (and the accumulators) in `fmt`, from the golden files."""
    m = V.read_manifest(golden)
    for stim in m["stimuli"]:
        (dest / stim).mkdir(parents=True, exist_ok=True)
        for op in m["ops"]:
            for tensor in [op["output"]] + ([op["accumulator"]] if op["kind"] == "conv" else []):
                arr = V.find_array(golden, m, f"{stim}/{tensor}")
                (dest / stim / f"{tensor}.{fmt}").write_bytes(V.encode(arr, fmt))
    return dest


def run(golden, port, capsys, *extra):
    code = main([str(golden), str(port), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("fmt", V.FORMATS)
def test_perfect_port_passes_in_every_format(golden, tmp_path, capsys, fmt):
    port = perfect_port(golden, tmp_path / "port", fmt)
    code, out, _ = run(golden, port, capsys)
    assert code == EXIT_PASS, out
    assert "FAIL  " not in out and out.count("PASS  ") == 2 * len(V.read_manifest(golden)["ops"])
    assert f"head.out.{fmt}, head.acc.{fmt}" in out


def test_golden_dir_verifies_as_its_own_port(golden, capsys):
    assert run(golden, golden, capsys)[0] == EXIT_PASS


def test_mismatch_names_first_failing_layer_index_expected_got(golden, tmp_path, capsys):
    port = perfect_port(golden, tmp_path / "port")
    m = V.read_manifest(golden)
    ops = [op for op in m["ops"] if op["kind"] == "conv"]
    first, later = ops[1], ops[3]
    for op, delta in ((later, 5), (first, 1)):
        path = port / "natural" / f"{op['output']}.bin"
        arr = V.find_array(golden, m, f"natural/{op['output']}").copy()
        arr[0, 2, 1, 3] += delta
        arr[0, 3, 0, 0] -= delta
        path.write_bytes(V.encode(arr, "bin"))
    code, out, _ = run(golden, port, capsys, "--show", "1")
    assert code == EXIT_FAIL
    assert f"FAIL  natural  {first['name']}" in out and f"FAIL  natural  {later['name']}" in out
    assert f"first failing layer of natural: {first['name']} ({first['output']}, port .bin): 2 of" in out
    expected = int(V.find_array(golden, m, f"natural/{first['output']}")[0, 2, 1, 3])
    assert f"index (0, 2, 1, 3): expected {expected}, got {expected + 1}" in out
    assert "index (0, 3, 0, 0)" not in out          # --show 1
    assert "largest |difference|: 1" in out and out.rstrip().endswith("FAIL")


def test_wrong_accumulator_fails_even_when_outputs_agree(golden, tmp_path, capsys):
    port = perfect_port(golden, tmp_path / "port")
    path = port / "white" / "head.acc.bin"
    data = bytearray(path.read_bytes())
    data[0] ^= 0x80
    path.write_bytes(bytes(data))
    code, out, _ = run(golden, port, capsys)
    assert code == EXIT_FAIL and "FAIL  white    head " in out and "head.acc: 1 of" in out


@pytest.mark.parametrize("damage,message", [
    ("missing", "missing: no natural/head.out.bin"),
    ("renamed", "missing: no natural/head.out.bin"),
    ("truncated", "bytes, expected"),
    ("hex_width", "expected 2 hex digits"),
    ("hex_text", "not hex digits"),
    ("npy_pickle", "without pickles"),
    ("npy_shape", "shape"),
])
def test_bad_port_files_fail_the_layer(golden, tmp_path, capsys, damage, message):
    port = perfect_port(golden, tmp_path / "port")
    path = port / "natural" / "head.out.bin"
    arr = np.fromfile(path, np.int8)
    if damage == "missing":
        path.unlink()
    elif damage == "renamed":
        path.rename(port / "natural" / "head_out.bin")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-1])
    else:
        path.unlink()
        if damage == "hex_width":
            (port / "natural" / "head.out.hex").write_text("".join(f"{int(v) & 0xff:03x}\n" for v in arr))
        elif damage == "hex_text":
            (port / "natural" / "head.out.hex").write_text("zz\n" * arr.size)
        elif damage == "npy_pickle":
            np.save(port / "natural" / "head.out.npy", np.array([arr.tolist()], dtype=object), allow_pickle=True)
        else:
            np.save(port / "natural" / "head.out.npy", arr)
    code, out, _ = run(golden, port, capsys)
    assert code == EXIT_FAIL
    assert "FAIL  natural  head " in out and message in out


# ---------------------------------------------------------------------------
# Unusable golden directories: exit 2, one line on stderr
# ---------------------------------------------------------------------------

def edit_manifest(golden: Path, change):
    m = json.loads((golden / "manifest.json").read_text())
    change(m)
    (golden / "manifest.json").write_text(json.dumps(m))


def rename_entry(m, old, new):
    m["files"][new] = m["files"].pop(old)


@pytest.mark.parametrize("damage,message", [
    ("corrupted", "sha256"),
    ("truncated", "sha256"),
    ("renamed", "No such file"),
    ("missing", "No such file"),
    ("dotdot", "leaves the vector directory"),
    ("absolute", "leaves the vector directory"),
    ("symlink", "resolves outside"),
    ("manifest_json", "cannot read"),
    ("schema", "schema_version"),
    ("stimulus_name", "not plain file names"),
])
def test_unusable_golden_dir_exits_2(golden, tmp_path, capsys, damage, message):
    port = perfect_port(golden, tmp_path / "port")
    target = golden / "natural" / "head.out.bin"
    if damage == "corrupted":
        data = bytearray(target.read_bytes())
        data[7] ^= 1
        target.write_bytes(bytes(data))
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:-3])
    elif damage == "renamed":
        target.rename(golden / "natural" / "head.out.old")
    elif damage == "missing":
        target.unlink()
    elif damage == "dotdot":
        edit_manifest(golden, lambda m: rename_entry(m, "natural/head.out.bin", "natural/../../secret.bin"))
    elif damage == "absolute":
        edit_manifest(golden, lambda m: rename_entry(m, "natural/head.out.bin", str(tmp_path / "x.bin")))
    elif damage == "symlink":
        outside = tmp_path / "outside.bin"
        outside.write_bytes(target.read_bytes())
        target.unlink()
        os.symlink(outside, target)
    elif damage == "manifest_json":
        (golden / "manifest.json").write_text('{"schema_version": 1,')
    elif damage == "schema":
        edit_manifest(golden, lambda m: m.update(schema_version=99))
    else:
        edit_manifest(golden, lambda m: m["stimuli"].update({"../../tmp": m["stimuli"]["white"]}))
    code, out, err = run(golden, port, capsys)
    assert code == EXIT_UNUSABLE and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_symlink_inside_the_directory_is_fine(golden, tmp_path, capsys):
    target = golden / "natural" / "head.out.bin"
    (golden / "natural" / "real.bin").write_bytes(target.read_bytes())
    target.unlink()
    os.symlink("real.bin", target)
    assert run(golden, perfect_port(golden, tmp_path / "port"), capsys)[0] == EXIT_PASS


def test_missing_port_dir_exits_2(golden, tmp_path, capsys):
    code, _, err = run(golden, tmp_path / "nowhere", capsys)
    assert code == EXIT_UNUSABLE and "port directory" in err


def test_verify_library_returns_codes(golden, tmp_path):
    import io
    buf = io.StringIO()
    assert verify(golden, perfect_port(golden, tmp_path / "p"), out=buf) == EXIT_PASS
    assert buf.getvalue().splitlines()[0].startswith(f"golden {golden}: srresnet x2 4/4/8")


def test_tools_script_and_module_exit_codes(golden, tmp_path):
    port = perfect_port(golden, tmp_path / "port")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run([sys.executable, str(REPO / "tools" / "verify_vectors.py"), str(golden), str(port)],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    shutil.rmtree(port / "white")
    bad = subprocess.run([sys.executable, "-m", "fqsr_ref.verify", str(golden), str(port)],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 1 and "missing" in bad.stdout and "Traceback" not in bad.stderr
