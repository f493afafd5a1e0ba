"""The port verifier: PASS/FAIL per layer, first mismatches, exit codes, a golden
directory that is corrupt, truncated, renamed, incomplete or points outside itself, and
(issue 15) a port that tries to pass with golden data, wrong .npy headers, missing or
garbage plane files, or $readmemh syntax."""
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fqsr_ref import vectors as V
from fqsr_ref.verify import EXIT_FAIL, EXIT_PASS, EXIT_UNUSABLE, main, print_coverage, verify

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def golden_files():
    vm = V.bundled_model("4/4/8")
    stimuli = [V.Stimulus("natural", V.make_stimulus("noise", 5), "5x5 noise", V.FORMATS),
               V.Stimulus("white", V.make_stimulus("white", 3), "3x3 white", ("bin",))]
    return V.build_vectors(vm, stimuli)


@pytest.fixture(scope="module")
def golden_template(golden_files, tmp_path_factory):
    return V.write_tree(tmp_path_factory.mktemp("template") / "golden", golden_files)


@pytest.fixture
def golden(tmp_path, golden_template):
    """A fresh golden directory made of hard links to golden_template (cheap): a test
    changes a file only by replacing it (replace_bytes), never by writing into it."""
    return Path(shutil.copytree(golden_template, tmp_path / "golden", copy_function=os.link))


def replace_bytes(path: Path, data: bytes) -> None:
    """Write path as a new file (not into a file that may be a hard link to a template)."""
    path.unlink()
    path.write_bytes(data)


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




def test_files_no_check_reads_are_named(golden, tmp_path, capsys):
    """A layout the verifier does not compare (.nhwc.mem) or a stray name is listed, so a
    team that dumped it does not believe it was checked; a selection only counts the rest."""
    port = perfect_port(golden, tmp_path / "port")
    (port / "natural" / "head.out.nhwc.mem").write_text("00\n")
    (port / "notes.txt").write_text("x")
    code, out, _ = run(golden, port, capsys)
    assert code == EXIT_PASS
    assert "not compared: 2 port files of a layout or name the verifier does not check: notes.txt, " \
           "natural/head.out.nhwc.mem" in out
    code, out, _ = run(golden, port, capsys, "--stimulus", "natural")
    n_white = len(list((port / "white").iterdir()))
    assert code == EXIT_PASS and f"not compared: {n_white} port files outside --layer/--stimulus" in out
    (port / "natural" / "head.out.nhwc.mem").unlink()
    (port / "notes.txt").unlink()
    code, out, _ = run(golden, port, capsys)
    assert "not compared" not in out


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
    replace_bytes(golden / "manifest.json", json.dumps(m).encode())


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
        replace_bytes(target, bytes(data))
    elif damage == "truncated":
        replace_bytes(target, target.read_bytes()[:-3])
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
        replace_bytes(golden / "manifest.json", b'{"schema_version": 1,')
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


# ---------------------------------------------------------------------------
# Issue 15: the verifier cannot be fooled. Ports copied from a committed set, one
# thing broken at a time.
# ---------------------------------------------------------------------------

PLANE_CONV = "blocks.0.conv1"


KEEP_STIMULI = ("natural", "noise")        # of the committed five, to keep the tests fast


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """A private copy of the committed 4/4/8 set (it may be regenerated meanwhile),
    its manifest cut down to the stimuli natural (every format) and noise (.bin)."""
    dest = tmp_path_factory.mktemp("committed") / "golden"
    for _ in range(3):
        shutil.rmtree(dest, ignore_errors=True)
        src = V.bundled_dir("4/4/8")
        try:
            m = json.loads((src / "manifest.json").read_text())
            m["stimuli"] = {k: v for k, v in m["stimuli"].items() if k in KEEP_STIMULI}
            m["files"] = {rel: rec for rel, rec in m["files"].items()
                          if "/" not in rel or rel.split("/")[0] in KEEP_STIMULI + ("weights",)}
            for rel in m["files"]:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / rel, dest / rel)
            (dest / "manifest.json").write_text(json.dumps(m))
            V.read_manifest(dest)
            return dest
        except (OSError, ValueError):          # copied while the set was being rewritten
            continue
    pytest.fail("could not copy a consistent vectors/srresnet_x2_4-4-8")


@pytest.fixture(scope="module")
def port_template(committed, tmp_path_factory):
    """A port that wrote every file of every stimulus, in .bin: outputs, accumulators,
    plane files and image.in (copies of the golden files)."""
    dest = tmp_path_factory.mktemp("template")
    m = V.read_manifest(committed, check_files=False)
    for rel in m["files"]:
        stim = rel.split("/")[0]
        if stim in m["stimuli"] and rel.endswith(".bin"):
            (dest / stim).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(committed / rel, dest / rel)
    return dest


@pytest.fixture
def port(port_template, tmp_path):
    """A fresh copy of port_template, made of hard links to it (cheap): a test changes a
    file only by replacing it (unlink, then write), never in place."""
    dest = tmp_path / "port"
    shutil.copytree(port_template, dest, copy_function=os.link)
    return dest


def flip_element(golden: Path, port: Path, stem: str, flat: int):
    """Change one element of port/stem.bin (XOR 1); return (index, expected, got)."""
    arr = V.find_array(golden, V.read_manifest(golden, check_files=False), stem).copy()
    index = tuple(int(i) for i in np.unravel_index(flat, arr.shape))
    expected = int(arr[index])
    arr[index] ^= 1
    replace_bytes(port / f"{stem}.bin", V.encode(arr, "bin"))
    return index, expected, int(arr[index])


def test_complete_port_passes_and_every_file_is_listed(committed, port, capsys):
    code, out, _ = run(committed, port, capsys)
    assert code == EXIT_PASS and "FAIL  " not in out, out
    assert ("PASS  natural  head                 head.out.bin, image.in.bin, head.acc.bin, "
            "head.plane.row.bin, head.plane.col.bin, head.plane.pop.bin") in out


@pytest.mark.parametrize("plane,flat", [("row", 5), ("col", 17), ("pop", 6)])
def test_garbage_plane_file_fails_naming_the_first_mismatch(committed, port, capsys, plane, flat):
    tensor = f"{PLANE_CONV}.plane.{plane}"
    index, expected, got = flip_element(committed, port, f"natural/{tensor}", flat)
    code, out, _ = run(committed, port, capsys)
    assert code == EXIT_FAIL
    first = f"first at index {index}: expected {expected}, got {got}"
    assert f"FAIL  natural  {PLANE_CONV:20s} {tensor}: 1 of " in out and first in out
    assert f"first failing layer of natural: {PLANE_CONV} ({tensor}, port .bin)" in out
    assert f"    index {index}: expected {expected}, got {got}" in out
    assert out.count("FAIL  ") == 1


def test_wrong_image_in_fails_the_layer_that_reads_it(committed, port, capsys):
    index, expected, got = flip_element(committed, port, "natural/image.in", 100)
    code, out, _ = run(committed, port, capsys)
    assert code == EXIT_FAIL and out.count("FAIL  ") == 1
    assert f"FAIL  natural  head                 image.in: 1 of 768 elements differ, first at index {index}" in out


@pytest.mark.parametrize("tensor,group", [
    (f"{PLANE_CONV}.plane.col", "bit-plane files"),
    ("tail.plane.pop", "bit-plane files"),
    ("up.0.acc", "accumulators"),
])
def test_missing_file_of_a_written_group_fails(committed, port, capsys, tensor, group):
    (port / "noise" / f"{tensor}.bin").unlink()
    code, out, _ = run(committed, port, capsys)
    assert code == EXIT_FAIL and out.count("FAIL  ") == 1
    assert (f"{tensor}: missing: no noise/{tensor}.bin, .npy or .hex (the port wrote other {group} "
            "of noise; all are checked)") in out


def test_require_makes_a_group_mandatory(golden, tmp_path, capsys):
    port = perfect_port(golden, tmp_path / "port")          # outputs and accumulators only
    assert run(golden, port, capsys, "--require", "acc")[0] == EXIT_PASS
    for group, tensor in (("planes", "head.plane.row"), ("input", "image.in")):
        code, out, _ = run(golden, port, capsys, "--require", group)
        assert code == EXIT_FAIL
        assert f"{tensor}: missing: no natural/{tensor}.bin, .npy or .hex (--require {group})" in out
    assert run(golden, port, capsys, "--require", "all")[0] == EXIT_FAIL
    with pytest.raises(SystemExit) as exc:
        run(golden, port, capsys, "--require", "weights")
    assert exc.value.code == 2 and "expected 'all' or a comma list" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["same", "symlink", "inside"])
def test_port_dir_that_is_or_lies_inside_golden_is_refused(committed, port_template, tmp_path, capsys, how):
    if how == "same":
        port, what = committed, "is the golden directory"
    elif how == "symlink":
        port, what = tmp_path / "port", "is the golden directory"
        os.symlink(committed, port)
    else:
        port, what = committed / "port", "lies inside the golden directory"
        shutil.copytree(port_template, port, copy_function=os.link)
    try:
        code, out, err = run(committed, port, capsys)
    finally:
        if how == "inside":
            shutil.rmtree(port)
    assert code == EXIT_UNUSABLE and out == ""
    assert err == f"error: port directory {port} {what} {committed}; a port must write its own files\n"


@pytest.mark.parametrize("how", ["symlink", "relative_symlink", "hardlink", "symlinked_dir"])
def test_port_file_linked_to_golden_is_refused(committed, port, capsys, how):
    target = committed / "noise" / "tail.acc.bin"
    path = port / "noise" / "tail.acc.bin"
    if how == "symlinked_dir":
        shutil.rmtree(port / "noise")
        os.symlink(committed / "noise", port / "noise")
        path = port / "noise" / "head.out.bin"             # the first file checked in noise
    else:
        path.unlink()
        if how == "symlink":
            os.symlink(target, path)
        elif how == "relative_symlink":
            os.symlink(os.path.relpath(target, path.parent), path)
        else:
            os.link(target, path)
    code, out, err = run(committed, port, capsys)
    assert code == EXIT_UNUSABLE and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: port file {path} ") and err.endswith("a port must write its own files\n")
    assert {"symlink": "is a symlink to the golden file", "relative_symlink": "is a symlink to the golden file",
            "hardlink": "is a hard link to the golden file",
            "symlinked_dir": "resolves (through a symlinked directory) to the golden file"}[how] in err


def test_symlink_to_a_copy_outside_golden_is_fine(committed, port, tmp_path, capsys):
    build = tmp_path / "build"
    build.mkdir()
    os.replace(port / "natural" / "head.out.bin", build / "head.out.bin")
    os.symlink(build / "head.out.bin", port / "natural" / "head.out.bin")
    assert run(committed, port, capsys)[0] == EXIT_PASS


def npy_header(descr: str, fortran: bool, shape: tuple) -> bytes:
    text = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


@pytest.mark.parametrize("tensor,damage,message", [
    ("head.acc", "big_endian", "dtype >i4 (int32, big-endian), expected <i4 (int32, little-endian)"),
    ("head.out", "wider", "dtype <i2 (int16, little-endian), expected |i1 or <i1 (int8)"),
    ("image.in", "signed", "dtype |i1 (int8), expected |u1 or <u1 (uint8)"),
    ("head.acc", "fortran", "fortran_order True, expected False (C order"),
    ("head.acc", "huge_shape", "the .npy header declares shape (1099511627776, 1099511627776), "
                               "expected (1, 16, 16, 16); data not read"),
    ("head.acc", "trailing", "16388 data bytes after the .npy header, expected 16384"),
])
def test_npy_must_be_golden_dtype_little_endian_c_order(committed, port, capsys, tensor, damage, message):
    arr = V.find_array(committed, V.read_manifest(committed, check_files=False), f"natural/{tensor}")
    path = port / "natural" / f"{tensor}.npy"
    (port / "natural" / f"{tensor}.bin").unlink()
    if damage == "big_endian":
        np.save(path, arr.astype(">i4"))
    elif damage == "wider":
        np.save(path, arr.astype(np.int16))
    elif damage == "signed":
        np.save(path, arr.astype(np.int8))
    elif damage == "fortran":
        np.save(path, np.asfortranarray(arr))
    elif damage == "huge_shape":        # 2^80 elements declared: refused before any read
        path.write_bytes(npy_header("<i4", False, (1 << 40, 1 << 40)) + arr.tobytes())
    else:
        path.write_bytes(V.encode(arr, "npy") + b"\0\0\0\0")
    code, out, _ = run(committed, port, capsys)
    assert code == EXIT_FAIL and out.count("FAIL  ") == 1
    layer = "head" if tensor in ("head.acc", "head.out", "image.in") else tensor
    assert f"FAIL  natural  {layer:20s} {tensor}: {path}: {message}" in out, out


def hex_lines(arr: np.ndarray) -> list:
    return V.encode(arr, "hex").decode().splitlines()


def test_hex_errors_name_the_real_line(committed, port, capsys):
    arr = V.find_array(committed, V.read_manifest(committed, check_files=False), "natural/head.out")
    lines = hex_lines(arr)
    lines[10] = "1" + lines[10]                         # value 11, file line 15
    text = "// port dump of head.out\n/* int8,\n   NCHW */\n\n" + "\n".join(lines) + "\n"
    (port / "natural" / "head.out.bin").unlink()
    (port / "natural" / "head.out.hex").write_text(text)
    code, out, _ = run(committed, port, capsys)
    assert code == EXIT_FAIL
    assert f"line 15 is '{lines[10]}': expected 2 hex digits (int8)" in out


def test_hex_accepts_what_readmemh_accepts(committed, port, capsys):
    """Comments of both kinds, blank lines, several values a line, upper case, `_`,
    CRLF and @address lines that write the second half before the first."""
    m = V.read_manifest(committed, check_files=False)
    for tensor in ("head.acc", "image.in"):
        arr = V.find_array(committed, m, f"natural/{tensor}")
        lines, half = hex_lines(arr), arr.size // 2
        first, second = lines[:half], lines[half:]
        text = (f"// {tensor}\r\n/* written\n   by the port */\n\n@{half:X}\n"
                + "\n".join(f"{a.upper()} {b}  // pair" for a, b in zip(second[::2], second[1::2]))
                + f"\n@0_0 /* again from the start */\n"
                + "\n".join(v[:1] + "_" + v[1:] for v in first) + "\n\n")
        (port / "natural" / f"{tensor}.bin").unlink()
        (port / "natural" / f"{tensor}.hex").write_text(text)
    code, out, _ = run(committed, port, capsys)
    assert code == EXIT_PASS, out
    assert "PASS  natural  head                 head.out.bin, image.in.hex, head.acc.hex" in out


@pytest.mark.parametrize("damage,message", [
    ("address_out_of_range", "line 3: address @300 (element 768) is out of range: the tensor has 768 "
                             "elements, @0 to @2ff"),
    ("value_past_the_end", "line 772: value '00' would be element 768, past the tensor's 768 elements"),
    ("hole", "767 values, expected 768: element 5 (address @5) is never written"),
    ("unclosed_comment", "line 771: '/*' comment is never closed"),
    ("unknown_digits", "line 9: 'xx' contains x or z digits (unknown values), not hex digits"),
])
def test_hex_address_and_syntax_errors_name_the_line(committed, port, capsys, damage, message):
    arr = V.find_array(committed, V.read_manifest(committed, check_files=False), "natural/image.in")
    lines = ["// image.in", "@0"] + hex_lines(arr)        # value i is on line i + 3
    if damage == "address_out_of_range":
        lines.insert(2, "@300")
    elif damage == "value_past_the_end":
        lines += ["// one too many", "00"]
    elif damage == "hole":
        lines[5 + 2] = "@6"                             # value 5 replaced by a jump to element 6
    elif damage == "unclosed_comment":
        lines.append("/* trailing")
    else:
        lines[6 + 2] = "xx"
    (port / "natural" / "image.in.bin").unlink()
    (port / "natural" / "image.in.hex").write_text("\n".join(lines) + "\n")
    code, out, _ = run(committed, port, capsys)
    assert code == EXIT_FAIL and out.count("FAIL  ") == 1
    assert f"FAIL  natural  head                 image.in: {port / 'natural' / 'image.in.hex'}: {message}" in out, out


def test_verifier_prints_what_the_vectors_exercise():
    """The coverage table: the trained sets show no tie; the corner set shows ties
    at every rounding op (blocks.0.conv1's are all positive: its PReLU slope is < 0)."""
    for vec_dir, has_ties in ((V.bundled_dir("4/4/8"), False), (V.corner_dir("4/4/8"), True)):
        text = io.StringIO()
        print_coverage(V.read_manifest(vec_dir), text)
        rows = {r[0]: r[1:] for r in (line.split() for line in text.getvalue().splitlines()[2:])}
        assert {"head", "blocks.0.add", "up.0.in", "tail"} <= set(rows)
        assert all((int(r[0]) > 0) == has_ties for r in rows.values()), rows
