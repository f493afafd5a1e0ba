"""The example testbenches of tools/hdl (README, "Hardware verification kit") in the
simulators they were written for, on the committed kit set corner_x2_4-4-8 (every rounding
ties there, so a wrong tie rule fails): the Verilog bit-plane conv unit under Icarus Verilog,
the same unit under cocotb, and the DPI-C golden model (tools/cport/fqsr_ops.c) under
Verilator. Each test skips, naming what to install, where its tool is missing. Every
testbench is also shown to FAIL: with a wrong tie rule and with a corrupted expected file."""
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HDL = ROOT / "tools" / "hdl"
KIT = ROOT / "vectors" / "corner_x2_4-4-8"      # written with --hdl: .svh headers, .mem files
KIT16 = ROOT / "vectors" / "corner_x2_16-16-16"  # written with --hdl awkward: column and batch
TIMEOUT = 300


def need(tool, how):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not on PATH ({how}); the HDL testbenches need it")


def need_icarus():
    need("make", "Debian: apt-get install make")
    need("iverilog", "Debian: apt-get install iverilog")
    need("vvp", "Debian: apt-get install iverilog")


def need_cocotb():
    need_icarus()
    if importlib.util.find_spec("cocotb") is None or importlib.util.find_spec("cocotb_tools") is None:
        pytest.skip("cocotb 2.x is not installed (pip install -e '.[hdl]'); the cocotb test needs it")


def make(tmp_path, *args, set_dir=KIT):
    return subprocess.run(["make", "-C", str(HDL), f"SET={set_dir}", f"BUILD={tmp_path / 'build'}", *args],
                          capture_output=True, text=True, timeout=TIMEOUT)


def last_line(result, prefix):
    lines = [line for line in result.stdout.splitlines() if line.startswith(prefix)]
    assert lines, result.stdout + result.stderr
    return lines[-1]


# ---- Icarus Verilog: fqsr_conv_unit.v driven by fqsr_conv_tb.v ----------------------------

@pytest.mark.parametrize("stimulus,conv,expect", [
    # batch 2, 5x3; 4-bit x 4-bit; negative ties (the rounding rule) and saturations
    ("batch", "blocks.0.conv2", "PASS 240 accumulators, 240 codes, 16 plane partials (2 x 8 x 5x3, 4-bit x 4-bit)"),
    # W = 1 (every tap but the centre column padded), a 9x9 kernel, unsigned 8-bit image codes
    ("column", "head", "PASS 72 accumulators, 72 codes, 32 plane partials (1 x 8 x 9x1, 8-bit x 4-bit)"),
])
def test_icarus_testbench_passes(tmp_path, stimulus, conv, expect):
    need_icarus()
    result = make(tmp_path, f"STIMULUS={stimulus}", f"CONV={conv}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert last_line(result, "fqsr_conv_tb:") == f"fqsr_conv_tb: {expect}"


def test_icarus_testbench_reads_packed_words_too(tmp_path):
    """FQSR_FROM_NHWC: the codes from the NHWC pixel words and OHWI tap words instead of the
    bit-plane words; the same result."""
    need_icarus()
    result = make(tmp_path, "STIMULUS=batch", "CONV=blocks.0.conv2", "DEFINES=-DFQSR_FROM_NHWC")
    assert result.returncode == 0, result.stdout + result.stderr
    assert last_line(result, "fqsr_conv_tb:").startswith("fqsr_conv_tb: PASS 240 accumulators, 240 codes, 16 plane")


@pytest.mark.slow
def test_verilator_runs_the_same_testbench(tmp_path):
    """make verilate: the head (9x9, 8-bit unsigned input) of the 16x16 crop, 166 000 taps,
    too slow for Icarus in the default suite (about 45 s there)."""
    need("make", "Debian: apt-get install make")
    need("verilator", "Debian: apt-get install verilator")
    result = make(tmp_path, "verilate", "STIMULUS=natural", "CONV=head")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert last_line(result, "fqsr_conv_tb:") == ("fqsr_conv_tb: PASS 2048 accumulators, 2048 codes, 32 plane "
                                                  "partials (1 x 8 x 16x16, 8-bit x 4-bit)")
    assert "%Warning" not in result.stdout + result.stderr       # built without -Wno-fatal


@pytest.mark.slow
def test_icarus_testbench_on_16_bit_codes_and_int64_accumulators(tmp_path):
    """The committed 16/16/16 corner kit (column and batch): 16 x 16 plane pairs, 38-bit
    accumulators beyond int32, and the 8-bit unsigned image against 16-bit weights in the head."""
    need_icarus()
    kit = KIT16
    assert "localparam integer ACC_BITS = 38;" in (kit / "batch" / "blocks.0.conv2.svh").read_text()
    for conv, expect in [("blocks.0.conv2", "256 plane partials (2 x 8 x 5x3, 16-bit x 16-bit)"),
                         ("head", "128 plane partials (2 x 8 x 5x3, 8-bit x 16-bit)")]:
        result = make(tmp_path, "STIMULUS=batch", f"CONV={conv}", set_dir=kit)
        assert result.returncode == 0, result.stdout + result.stderr
        assert last_line(result, "fqsr_conv_tb:") == f"fqsr_conv_tb: PASS 240 accumulators, 240 codes, {expect}"


def test_icarus_testbench_fails_with_a_wrong_tie_rule(tmp_path):
    """Half away from zero instead of half up: only the negative ties differ, and fail."""
    need_icarus()
    result = make(tmp_path, "STIMULUS=batch", "CONV=blocks.0.conv2", "DEFINES=-DFQSR_TIE_HALF_AWAY")
    assert result.returncode != 0
    line = last_line(result, "fqsr_conv_tb:")
    found = re.fullmatch(r"fqsr_conv_tb: FAIL 0 of 240 accumulators, (\d+) of 240 codes, 0 of 16 plane "
                         r"partials differ", line)
    assert found and int(found.group(1)) > 0, line
    assert "mismatch: code [n=0 o=0 y=0 x=0] of accumulator -1: expected 0 got f" in result.stdout


DPI_OPS = ("blocks.0.conv2", "blocks.0.conv1.in", "blocks.0.add", "up.0.shuffle")   # the Makefile's


def copy_op_files(dest, stimulus, ops):
    """The files the testbenches read for these ops (those each .svh names, the plane partials)."""
    for op in ops:
        header = KIT / stimulus / f"{op}.svh"
        names = re.findall(r'^localparam \w+ = "([^"]+)";$', header.read_text(), flags=re.M)
        pop = f"{stimulus}/{op}.plane.pop.hex"
        for name in [*names, f"{stimulus}/{op}.svh", *([pop] if (KIT / pop).exists() else [])]:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(KIT / name, dest / name)
    return dest


def corrupt_line(path, index):
    """Flip the lowest bit of word `index` of a one-word-a-line hex file."""
    lines = path.read_text().splitlines()
    word = lines[index]
    lines[index] = word[:-1] + format(int(word[-1], 16) ^ 1, "x")
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("file,index,message", [
    ("batch/blocks.0.conv2.acc.mem", 239, "FAIL 1 of 240 accumulators, 0 of 240 codes, 0 of 16"),
    ("batch/blocks.0.conv2.out.mem", 0, "FAIL 0 of 240 accumulators, 1 of 240 codes, 0 of 16"),
    ("batch/blocks.0.conv2.plane.pop.hex", 15, "FAIL 0 of 240 accumulators, 0 of 240 codes, 1 of 16"),
])
def test_icarus_testbench_fails_on_a_corrupted_expected_file(tmp_path, file, index, message):
    need_icarus()
    golden = copy_op_files(tmp_path / "golden", "batch", ["blocks.0.conv2"])
    assert last_line(make(tmp_path, "STIMULUS=batch", "CONV=blocks.0.conv2", set_dir=golden),
                     "fqsr_conv_tb:").startswith("fqsr_conv_tb: PASS")      # the copy itself passes
    corrupt_line(golden / file, index)
    result = make(tmp_path, "STIMULUS=batch", "CONV=blocks.0.conv2", set_dir=golden)
    assert result.returncode != 0
    assert last_line(result, "fqsr_conv_tb:").startswith(f"fqsr_conv_tb: {message}"), result.stdout


def test_icarus_testbench_reports_a_missing_header(tmp_path):
    need_icarus()
    result = make(tmp_path, "STIMULUS=batch", "CONV=no_such_conv")
    assert result.returncode != 0 and "error:" in result.stdout and "no_such_conv.svh not found" in result.stdout


# ---- cocotb: the same unit, arrays read with NumPy -----------------------------------------

def cocotb_run(tmp_path, *args):
    return subprocess.run([sys.executable, str(HDL / "fqsr_conv_cocotb.py"), "--set", str(KIT),
                           "--build", str(tmp_path / "cocotb"), *args],
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_cocotb_test_passes(tmp_path):
    """The natural crop: every array from its .npy file."""
    need_cocotb()
    result = cocotb_run(tmp_path, "--stimulus", "natural", "--conv", "blocks.0.conv2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "fqsr_conv_cocotb: PASS" in result.stdout
    assert "2048 accumulators, 2048 codes, 16 plane partials checked, 0 mismatches" in result.stdout


def test_cocotb_test_fails_with_a_wrong_tie_rule(tmp_path):
    need_cocotb()
    result = cocotb_run(tmp_path, "--stimulus", "batch", "--conv", "blocks.0.conv2", "--rounding", "1")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "fqsr_conv_cocotb: FAIL" in result.stdout
    assert "34 mismatches, first: code [0, 0, 0, 0] of accumulator -1: expected 0, got pattern f" in result.stdout


# ---- Verilator: the DPI-C golden model -------------------------------------------------------

def c_prototypes():
    """{name: (result, [(direction, type, is_array, name)])} from tools/cport/fqsr_ops.h."""
    text = re.sub(r"/\*.*?\*/", " ", (ROOT / "tools" / "cport" / "fqsr_ops.h").read_text(), flags=re.S)
    out = {}
    for res, name, args in re.findall(r"(long long|int|void)\s+(fqsr_\w+)\(([^)]*)\);", text):
        params = []
        for arg in " ".join(args.split()).split(", "):
            found = re.fullmatch(r"(const )?(long long|int) (\*)?(\w+)", arg)
            assert found, arg
            const, ctype, star, pname = found.groups()
            params.append(("input" if const or not star else "output", ctype, bool(star), pname))
        out[name] = (res, params)
    return out


def sv_imports():
    """The same from the import "DPI-C" lines of tools/hdl/fqsr_dpi*.svh."""
    sv_c = {"longint": "long long", "int": "int", "void": "void"}
    out = {}
    for path in sorted(HDL.glob("fqsr_dpi*.svh")):
        text = re.sub(r"//[^\n]*", " ", path.read_text())
        for res, name, args in re.findall(r'import "DPI-C" (?:pure )?function (longint|int|void) (fqsr_\w+)'
                                          r'\(([^)]*)\);', text):
            params = []
            for arg in " ".join(args.split()).split(", "):
                found = re.fullmatch(r"(input|output) (longint|int) (\w+)(\[\w+\])?", arg)
                assert found, arg
                direction, svtype, pname, dims = found.groups()
                params.append((direction, sv_c[svtype], dims is not None, pname))
            assert name not in out, f"{name} imported twice"
            out[name] = (sv_c[res], params)
    return out


def test_dpi_imports_match_the_c_header():
    """Every function of fqsr_ops.h is imported once, with the same result, argument names,
    types, directions (const pointer = input array, pointer = output array) and order: what
    a simulator's DPI-C needs, checked without one."""
    c, sv = c_prototypes(), sv_imports()
    assert len(c) == 17 and sorted(sv) == sorted(c)
    for name in c:
        assert sv[name] == c[name], name


@pytest.fixture(scope="module")
def dpi_testbench(tmp_path_factory):
    """make dpi on the kit set: builds the Verilator testbench (once) and runs it."""
    need("make", "Debian: apt-get install make")
    need("verilator", "Debian: apt-get install verilator")
    build = tmp_path_factory.mktemp("dpi")
    result = make(build, "dpi", "STIMULUS=batch", "CONV=blocks.0.conv2")
    return result, build / "build" / "dpi" / "obj_dir" / "fqsr_dpi_tb"


@pytest.mark.slow
def test_dpi_golden_model_under_verilator(dpi_testbench):
    """The imports of fqsr_dpi*.svh link to fqsr_ops.c, agree with fqsr_ops.h (make dpi checks
    the prototypes Verilator derives), and the functions reproduce a conv's accumulators,
    codes and plane partials, a requant, an add with Eq. 7's ReLU and a pixel shuffle."""
    result, _ = dpi_testbench
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert last_line(result, "fqsr_dpi_tb:") == "fqsr_dpi_tb: PASS conv 481, requant 240, add 240, shuffle 960 values"


@pytest.mark.slow
@pytest.mark.parametrize("file,message", [
    ("batch/blocks.0.conv2.out.mem", "FAIL 1 mismatches (conv 1, requant 0, add 0, shuffle 0)"),
    ("batch/blocks.0.conv1.in.mem", "FAIL 1 mismatches (conv 0, requant 1, add 0, shuffle 0)"),
    ("batch/blocks.0.add.out.mem", "FAIL 1 mismatches (conv 0, requant 0, add 1, shuffle 0)"),
    ("batch/up.0.shuffle.mem", "FAIL 1 mismatches (conv 0, requant 0, add 0, shuffle 1)"),
])
def test_dpi_testbench_fails_on_a_corrupted_expected_file(dpi_testbench, tmp_path, file, message):
    """The same binary run in a copy of the ops' files with one output value changed."""
    result, exe = dpi_testbench
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    golden = copy_op_files(tmp_path / "golden", "batch", DPI_OPS)
    corrupt_line(golden / file, 7)
    run = subprocess.run([str(exe)], cwd=golden, capture_output=True, text=True, timeout=TIMEOUT)
    assert last_line(run, "fqsr_dpi_tb:") == f"fqsr_dpi_tb: {message}"


# ---- the friction of issue 26: lint, SET paths, kits of other sets, make dpi defaults -------

UNITS = {      # file -> its module; the units are synthesizable style and lint-clean
    "fqsr_bitplane_mac.v": "fqsr_bitplane_mac",
    "fqsr_requantizer.v": "fqsr_requantizer",
    "fqsr_conv_unit.v": "fqsr_conv_unit",
}


def header_params(path):
    """{NAME: int} of a kit .svh header (integer localparams only)."""
    return {k: int(v) for k, v in re.findall(r"^localparam integer (\w+) = (-?\d+);$", path.read_text(), flags=re.M)}


def conv_unit_overrides(stimulus, conv):
    """The -G parameters fqsr_conv_tb.v gives fqsr_conv_unit for one conv of the kit."""
    p = header_params(KIT / stimulus / f"{conv}.svh")
    return {"CIN": p["CIN"], "A_BITS": p["IN_BITS"], "A_SIGNED": p["IN_SIGNED"], "B_BITS": p["W_BITS"],
            "B_SIGNED": 1, "ACC_W": p["ACC_BITS"], "POP_W": p["FAN_IN"].bit_length(), "OUT_BITS": p["OUT_BITS"],
            "QMIN": p["QMIN"], "QMAX": p["QMAX"]}


def lint(top, files, overrides=None):
    need("verilator", "Debian: apt-get install verilator")
    args = ["verilator", "--lint-only", "-Wall", "--top-module", top,
            *[f"-G{k}={v}" for k, v in (overrides or {}).items()], *[str(HDL / f) for f in files]]
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.parametrize("conv", [None, ("column", "head"), ("batch", "blocks.0.conv1"), ("batch", "up.0")])
def test_conv_unit_is_lint_clean(conv):
    """verilator --lint-only -Wall, no waivers, with the default parameters and with those of
    the kit's convs (8-bit unsigned image x 4-bit weights; 4 x 4 bits; 32 outputs)."""
    overrides = conv_unit_overrides(*conv) if conv else None
    result = lint("fqsr_conv_unit", UNITS, overrides)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


def test_make_takes_set_relative_to_the_repository_root(tmp_path):
    """make -C tools/hdl SET=vectors/... (the example of fqsr_conv_tb.v) runs from the root."""
    need_icarus()
    result = subprocess.run(["make", "-C", str(HDL), "SET=vectors/corner_x2_4-4-8", f"BUILD={tmp_path / 'b'}",
                             "STIMULUS=column", "CONV=blocks.0.conv2"], capture_output=True, text=True,
                            cwd=ROOT, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert last_line(result, "fqsr_conv_tb:").startswith("fqsr_conv_tb: PASS 72 accumulators")


@pytest.fixture(scope="module")
def kit_448(tmp_path_factory):
    """The trained 4/4/8 set regenerated with --hdl --awkward (it has no kit of its own)."""
    out = tmp_path_factory.mktemp("kit448") / "kit"
    made = subprocess.run([sys.executable, "-m", "fqsr_ref.vectors", "--regenerate",
                           str(ROOT / "vectors" / "srresnet_x2_4-4-8"), "--hdl", "--awkward", "--out", str(out)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert made.returncode == 0, made.stderr
    return out, made.stdout


def test_regenerate_with_hdl_and_awkward_writes_the_kit(kit_448, tmp_path):
    """--regenerate VECDIR --hdl --awkward --out DIR used to print "wrote DIR" and write no kit."""
    out, stdout = kit_448
    assert "hardware kit:" in stdout
    for path in ("batch/blocks.0.conv2.svh", "column/head.acc.mem", "natural/params.h",
                 "batch/blocks.0.conv2.plane.pop.hex", "weights/head.w.planes.mem"):
        assert (out / path).is_file(), path
    assert subprocess.run([sys.executable, "-m", "fqsr_ref.vectors", "--check", str(out)],
                          capture_output=True, timeout=TIMEOUT).returncode == 0
    need_icarus()
    result = make(tmp_path, "STIMULUS=batch", "CONV=blocks.0.conv2", set_dir=out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "16 plane partials" in last_line(result, "fqsr_conv_tb: PASS")


def test_add_formats_mem_brings_hex_and_new_set_options_are_refused(tmp_path):
    from fqsr_ref.vectors.cli import parse_formats
    assert parse_formats("mem") == ("hex", "mem") and parse_formats("bin") == ("bin",)
    for extra in (["--corner", "4/4/8"], ["--size", "12"], ["--model", "vectors/srresnet_x2_8-8-8"]):
        run = subprocess.run([sys.executable, "-m", "fqsr_ref.vectors", "--regenerate", "vectors/srresnet_x2_4-4-8",
                              *extra, "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=ROOT,
                             timeout=TIMEOUT)
        assert run.returncode == 2 and run.stderr.count("\n") == 1 and extra[0] in run.stderr, run.stderr
        assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_dpi_defaults_fit_a_model_without_requant_ops(tmp_path):
    """make dpi on an 8/8/8 kit: its widths all agree, so no requant op; the default picks the
    ops of the set and leaves the requant check out, saying so."""
    need("make", "Debian: apt-get install make")
    need("verilator", "Debian: apt-get install verilator")
    kit = tmp_path / "kit888"
    made = subprocess.run([sys.executable, "-m", "fqsr_ref.vectors", "--regenerate",
                           str(ROOT / "vectors" / "srresnet_x2_8-8-8"), "--hdl", "--awkward", "--out", str(kit)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert made.returncode == 0, made.stderr
    result = make(tmp_path, "dpi", "STIMULUS=batch", "CONV=blocks.0.conv2", set_dir=kit)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "note: no requant op" in result.stdout and "%Warning" not in result.stdout + result.stderr
    assert last_line(result, "fqsr_dpi_tb:") == "fqsr_dpi_tb: PASS conv 961, requant 0, add 480, shuffle 1920 values"


# ---- streaming units against the stream vectors (vectors --stream) -------------------------

@pytest.fixture(scope="module")
def stream_dir(tmp_path_factory):
    """The stream vectors of the kit set, PE 4, SIMD 8, stimulus batch (2 x 5x3)."""
    from fqsr_ref.vectors.store import write_tree
    from fqsr_ref.vectors.stream import STREAM_INDEX, stream_files
    out = tmp_path_factory.mktemp("stream") / "s"
    return write_tree(out, stream_files(KIT, pe=4, simd=8, stimuli=["batch"]), STREAM_INDEX)


def stream_make(tmp_path, stream, *args, target="stream-requant", stimulus="batch"):
    return subprocess.run(["make", "-C", str(HDL), target, f"STREAM={stream}", f"STIMULUS={stimulus}",
                           f"BUILD={tmp_path / 'build'}", *args], capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.parametrize("op", ["blocks.0.conv1.in", "trunk.in", "blocks.0.conv2", "head"])
def test_stream_requant_passes_under_backpressure(tmp_path, stream_dir, op):
    """A requant op (codes -> codes) and conv output stages (accumulators -> codes, the
    PReLU's two multipliers; the head's 8-bit image conv) beat by beat, with random gaps and
    random backpressure; two seeds, the same verdict."""
    need_icarus()
    beats = header_params(stream_dir / "batch" / f"{op}.stream.svh")["OUT_BEATS"]
    for seed in (1, 7):
        result = stream_make(tmp_path, stream_dir, f"OP={op}", f"DEFINES=-DFQSR_SEED={seed}")
        assert result.returncode == 0, result.stdout + result.stderr
        line = last_line(result, "fqsr_stream_tb:")
        assert line.startswith(f"fqsr_stream_tb: PASS {beats} beats of 4 lanes, ") and f"seed {seed})" in line
        cycles = int(re.search(r"(\d+) cycles", line).group(1))
        assert cycles > beats                # the gaps and stalls cost cycles


def stream_fails_with_a_wrong_tie_rule_or_a_changed_beat(tmp_path, stream_dir, op, run):
    """run(stream, *make args) with the wrong tie rule, then with beat 5 of the op's golden
    output changed: both FAIL. Returns the copy of the stream directory and that file's path."""
    result = run(stream_dir, "DEFINES=-DFQSR_TIE_HALF_AWAY")
    assert result.returncode != 0
    found = re.fullmatch(r"fqsr_stream_tb: FAIL (\d+) of (\d+) beats differ, \2 received, (\d+) of \3 sent",
                         last_line(result, "fqsr_stream_tb:"))
    assert found and int(found.group(1)) > 0, result.stdout
    copy = tmp_path / "copy"
    shutil.copytree(stream_dir, copy)
    out = re.search(r'OUT_STREAM_MEM = "([^"]+)"', (copy / "batch" / f"{op}.stream.svh").read_text()).group(1)
    corrupt_line(copy / out, 5)
    result = run(copy)
    assert result.returncode != 0 and "mismatch: beat 5 " in result.stdout
    assert last_line(result, "fqsr_stream_tb:").startswith("fqsr_stream_tb: FAIL 1 of ")
    return copy, out


@pytest.mark.parametrize("op", ["blocks.0.conv1.in", "blocks.0.conv2"])
def test_stream_requant_fails_with_a_wrong_tie_rule_or_a_changed_beat(tmp_path, stream_dir, op):
    need_icarus()
    stream_fails_with_a_wrong_tie_rule_or_a_changed_beat(
        tmp_path, stream_dir, op, lambda stream, *args: stream_make(tmp_path, stream, f"OP={op}", *args))


def test_stream_requant_is_lint_clean(stream_dir):
    for overrides in (None, {"LANES": 3, "IN_BITS": 14, "IN_SIGNED": 1, "OUT_BITS": 4},
                      {"LANES": 8, "IN_BITS": 8, "IN_SIGNED": 0, "OUT_BITS": 8, "QMIN": 0, "QMAX": 255}):
        result = lint("fqsr_stream_requant", ["fqsr_stream_requant.v", "fqsr_requantizer.v"], overrides)
        assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


@pytest.fixture(scope="module")
def trained_stream_dir(tmp_path_factory):
    """The stream vectors of the trained 4/4/8 set, PE 3 (C = 8 and 16 leave lanes empty),
    SIMD 8, stimulus noise (1 x 8x8)."""
    from fqsr_ref.vectors.store import write_tree
    from fqsr_ref.vectors.stream import STREAM_INDEX, stream_files
    out = tmp_path_factory.mktemp("stream_trained") / "s"
    return write_tree(out, stream_files(ROOT / "vectors" / "srresnet_x2_4-4-8", pe=3, simd=8, stimuli=["noise"]),
                      STREAM_INDEX)


STREAM_SETS = {"corner": ("stream_dir", "batch", 4), "trained": ("trained_stream_dir", "noise", 3)}
OP_TARGETS = {"add": ("stream-add", "ADD_OP"), "shuffle": ("stream-shuffle", "SHUFFLE_OP")}


@pytest.mark.parametrize("which", sorted(STREAM_SETS))
@pytest.mark.parametrize("kind,op", [("add", "blocks.0.add"), ("add", "long_add"), ("shuffle", "up.0.shuffle")])
def test_stream_add_and_shuffle_pass_under_backpressure(request, tmp_path, which, kind, op):
    """The residual add (skip and branch, each its own random source; Eq. 7's branch ReLU in the
    blocks, none on long_add) and the pixel shuffle (beats reordered through two LR rows of
    storage), every output beat against the golden beats, random gaps and backpressure on every
    input and the output; two seeds."""
    need_icarus()
    fixture, stimulus, lanes = STREAM_SETS[which]
    stream = request.getfixturevalue(fixture)
    target, var = OP_TARGETS[kind]
    beats = header_params(stream / stimulus / f"{op}.stream.svh")["OUT_BEATS"]
    for seed in (1, 7):
        result = stream_make(tmp_path, stream, f"{var}={op}", f"DEFINES=-DFQSR_SEED={seed}", target=target,
                             stimulus=stimulus)
        assert result.returncode == 0, result.stdout + result.stderr
        line = last_line(result, "fqsr_stream_tb:")
        assert line.startswith(f"fqsr_stream_tb: PASS {beats} beats of {lanes} lanes, ") and f"seed {seed})" in line
        assert int(re.search(r"(\d+) cycles", line).group(1)) > beats


def flip_bit(path, index, bit):
    """Flip bit `bit` of word `index` of a .mem file (one hex word a line)."""
    lines = path.read_text().splitlines()
    width = len(lines[index])
    lines[index] = f"{int(lines[index], 16) ^ (1 << bit):0{width}x}"
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("op", ["blocks.0.add", "long_add"])
def test_stream_add_fails_with_a_wrong_tie_rule_a_changed_beat_or_streams_out_of_step(tmp_path, stream_dir, op):
    need_icarus()
    run = lambda stream, *args: stream_make(tmp_path, stream, f"ADD_OP={op}", *args, target="stream-add")
    copy, out = stream_fails_with_a_wrong_tie_rule_or_a_changed_beat(tmp_path, stream_dir, op, run)
    shutil.copy(stream_dir / out, copy / out)
    # the branch's TLAST moved off its line end: the data still add up, the markers do not
    header = copy / "batch" / f"{op}.stream.svh"
    p = header_params(header)
    branch = re.search(r'BR_STREAM_MEM = "([^"]+)"', header.read_text()).group(1)
    flip_bit(copy / branch, 0, p["OUT_LANES"] * p["BR_BITS"] + 1)
    result = run(copy)
    assert result.returncode != 0 and "the streams are out of step" in result.stdout
    assert last_line(result, "fqsr_stream_tb:").startswith("fqsr_stream_tb: FAIL 0 of ")


def test_stream_shuffle_fails_on_a_changed_beat(tmp_path, stream_dir):
    need_icarus()
    copy = tmp_path / "copy"
    shutil.copytree(stream_dir, copy)
    out = re.search(r'OUT_STREAM_MEM = "([^"]+)"', (copy / "batch" / "up.0.shuffle.stream.svh").read_text()).group(1)
    corrupt_line(copy / out, 37)
    result = stream_make(tmp_path, copy, target="stream-shuffle")
    assert result.returncode != 0 and "mismatch: beat 37 " in result.stdout
    assert last_line(result, "fqsr_stream_tb:").startswith("fqsr_stream_tb: FAIL 1 of ")


def test_stream_add_and_shuffle_are_lint_clean():
    for overrides in (None, {"LANES": 3, "IN_BITS": 4, "BR_BITS": 8, "IN_SIGNED": 0, "OUT_BITS": 4, "QMIN": -7,
                             "QMAX": 7, "BRANCH_RELU": 1},
                      {"LANES": 8, "IN_BITS": 16, "BR_BITS": 16, "OUT_BITS": 16, "QMIN": -32767, "QMAX": 32767}):
        result = lint("fqsr_stream_add", ["fqsr_stream_add.v", "fqsr_requantizer.v"], overrides)
        assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr
    for overrides in (None, {"LANES": 3, "BITS": 8, "CIN": 12, "W_IN": 16},
                      {"LANES": 8, "BITS": 16, "CIN": 27, "FACTOR": 3, "W_IN": 1}):
        result = lint("fqsr_stream_shuffle", ["fqsr_stream_shuffle.v"], overrides)
        assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


@pytest.mark.parametrize("conv", ["blocks.0.conv2", "head"])
def test_conv_testbench_reads_the_rom_images(tmp_path, stream_dir, conv):
    """make W_ROM=<stream dir>: each tap's weight planes straight from weights/<conv>.w.f8.mem
    (SIMD 8: one word a tap; the head's 3 channels in 8 lanes) and the biases from
    <conv>.const.mem, whose constant words must equal the kit header's; a changed weight or
    constant word FAILs, and so does a ROM narrower than CIN."""
    need_icarus()
    result = make(tmp_path, "STIMULUS=batch", f"CONV={conv}", f"W_ROM={stream_dir}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"note: weight planes from {stream_dir}/weights/{conv}.w.f8.mem" in result.stdout
    assert re.match(r"fqsr_conv_tb: PASS (\d+) accumulators, \1 codes", last_line(result, "fqsr_conv_tb:"))
    copy = tmp_path / "copy"
    shutil.copytree(stream_dir, copy)
    k = header_params(KIT / "batch" / f"{conv}.svh")["K"]
    corrupt_line(copy / "weights" / f"{conv}.w.f8.mem", k * k // 2)    # output channel 0's centre tap
    corrupt_line(copy / "weights" / f"{conv}.const.mem", 6)
    result = make(tmp_path, "STIMULUS=batch", f"CONV={conv}", f"W_ROM={copy}")
    assert result.returncode != 0 and "mismatch: constant ROM word 6 " in result.stdout
    assert re.match(r"fqsr_conv_tb: FAIL [1-9]\d* of ", last_line(result, "fqsr_conv_tb:")), result.stdout


def test_conv_testbench_refuses_a_rom_narrower_than_cin(tmp_path):
    need_icarus()
    from fqsr_ref.vectors.store import write_tree
    from fqsr_ref.vectors.stream import STREAM_INDEX, stream_files
    narrow = write_tree(tmp_path / "s4", stream_files(KIT, pe=4, simd=4, stimuli=["batch"]), STREAM_INDEX)
    result = make(tmp_path, "STIMULUS=batch", "CONV=blocks.0.conv2", f"W_ROM={narrow}")
    assert result.returncode != 0 and "does not fit one ROM word of 4 channels" in result.stdout


# ---- issue 26 item 3: the streaming conv and the whole network ------------------------------

def stream_conv_overrides(header):
    """The parameters fqsr_stream_tb.v gives fqsr_stream_conv for one conv's .stream.svh."""
    p = header_params(header)
    return {"CIN": p["CIN"], "COUT": p["COUT"], "K": p["K"], "H": p["H_IN"], "W": p["W_IN"], "SIMD": p["IN_LANES"],
            "PE": p["OUT_LANES"], "IN_BITS": p["IN_BITS"], "IN_SIGNED": p["IN_SIGNED"], "W_BITS": p["W_BITS"],
            "ACC_W": p["ACC_BITS"], "OUT_BITS": p["OUT_BITS"], "QMIN": p["QMIN"], "QMAX": p["QMAX"]}


@pytest.mark.parametrize("op,seeds", [("blocks.0.conv1", (1, 7)),
                                      pytest.param("up.0", (1,), marks=pytest.mark.slow)])
def test_stream_conv_passes_under_backpressure(tmp_path, stream_dir, op, seeds):
    """fqsr_stream_conv: line buffers, zero padding, weights and constants from the stream
    directory's ROM images; every output beat and every accumulator beat against the golden
    beats, random gaps on the input and backpressure on the output (SIMD 8, PE 4: a PReLU conv
    of 8 channels; slow: up.0's 32 outputs in 8 beats a pixel, about 7 s)."""
    need_icarus()
    beats = header_params(stream_dir / "batch" / f"{op}.stream.svh")["OUT_BEATS"]
    for seed in seeds:
        result = stream_make(tmp_path, stream_dir, f"CONV_OP={op}", f"DEFINES=-DFQSR_SEED={seed}", target="stream-conv")
        assert result.returncode == 0, result.stdout + result.stderr
        line = last_line(result, "fqsr_stream_tb:")
        assert line.startswith(f"fqsr_stream_tb: PASS {beats} beats of 4 lanes, {beats} accumulator beats, ")
        assert f"seed {seed})" in line


def test_stream_conv_fails_with_a_wrong_tie_rule_or_a_changed_beat(tmp_path, stream_dir):
    """The wrong tie rule changes codes, not accumulators; a changed accumulator beat and a
    changed weight word are caught too."""
    need_icarus()
    run = lambda stream, *args: stream_make(tmp_path, stream, "CONV_OP=blocks.0.conv2", *args, target="stream-conv")
    result = run(stream_dir, "DEFINES=-DFQSR_TIE_HALF_AWAY")
    assert result.returncode != 0
    found = re.fullmatch(r"fqsr_stream_tb: FAIL (\d+) of 60 beats differ, 0 of 60 accumulator beats differ, "
                         r"60 received, 30 of 30 sent", last_line(result, "fqsr_stream_tb:"))
    assert found and int(found.group(1)) > 0, result.stdout
    copy = tmp_path / "copy"
    shutil.copytree(stream_dir, copy)
    corrupt_line(copy / "batch" / "blocks.0.conv2.acc.f4.mem", 5)
    result = run(copy)
    assert result.returncode != 0 and "mismatch: accumulator beat 5 " in result.stdout
    assert last_line(result, "fqsr_stream_tb:").startswith("fqsr_stream_tb: FAIL 0 of 60 beats differ, 1 of 60 ")
    shutil.copy(stream_dir / "batch" / "blocks.0.conv2.acc.f4.mem", copy / "batch" / "blocks.0.conv2.acc.f4.mem")
    corrupt_line(copy / "weights" / "blocks.0.conv2.w.f8.mem", 4)     # output channel 0's centre tap
    result = run(copy)
    assert result.returncode != 0 and re.match(r"fqsr_stream_tb: FAIL \d+ of 60 beats differ, [1-9]\d* of 60 ",
                                               last_line(result, "fqsr_stream_tb:")), result.stdout


def test_stream_conv_is_lint_clean(stream_dir):
    """verilator --lint-only -Wall, no waivers: the defaults, the head (8-bit unsigned image, 9x9,
    3 channels in 8 lanes), up.0 (32 outputs), the tail (3 outputs in 4 lanes), odd foldings."""
    files = ["fqsr_stream_conv.v", "fqsr_bitplane_mac.v", "fqsr_requantizer.v"]
    for overrides in (None, *(stream_conv_overrides(stream_dir / "batch" / f"{op}.stream.svh")
                              for op in ("head", "up.0", "tail")),
                      {"CIN": 5, "COUT": 7, "SIMD": 2, "PE": 3, "ACC_W": 40, "K": 1},
                      {"CIN": 16, "COUT": 16, "SIMD": 16, "PE": 16, "H": 1, "W": 1, "K": 5}):
        result = lint("fqsr_stream_conv", files, overrides)
        assert result.returncode == 0 and result.stdout + result.stderr == "", (overrides, result.stderr)
    result = lint("fqsr_stream_fifo", ["fqsr_stream_fifo.v"])
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr
    for depth in (1, 18, 30):
        result = lint("fqsr_stream_fifo", ["fqsr_stream_fifo.v"], {"DEPTH": depth, "WIDTH": 34})
        assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


def network_make(tmp_path, *args, set_dir=KIT, stimulus="batch"):
    return subprocess.run(["make", "-C", str(HDL), "network", f"SET={set_dir}", f"STIMULUS={stimulus}",
                           f"BUILD={tmp_path / 'build'}", f"PYTHON={sys.executable}", *args],
                          capture_output=True, text=True, timeout=3 * TIMEOUT)


@pytest.mark.slow
def test_network_passes_on_the_corner_set(tmp_path):
    """make network: the 16 ops of corner_x2_4-4-8 chained (convs, requants, adds with skip FIFOs
    at stream.json's depths, the shuffle), 2 frames of 5x3 fed with random gaps, image.out
    backpressured; every op's output beat and every conv's accumulator beat checked (Icarus, about
    70 s). The skip FIFOs fill to exactly their depth and do not deadlock."""
    need_icarus()
    result = network_make(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.fullmatch(r"fqsr_network_tb: PASS 16 ops, 2100 beats checked \(120 of image.out, 720 accumulator "
                        r"beats\), \d+ cycles, 2 frames \(random gaps and backpressure, seed 1\)",
                        last_line(result, "fqsr_network_tb:"))
    for add, depth in (("blocks.0.add", 18), ("blocks.1.add", 18), ("long_add", 30)):
        assert re.search(rf"skip FIFO of {re.escape(add)} +high-water {depth} of {depth} beats", result.stdout)
    assert "frame 1: image.out complete at cycle" in result.stdout


def test_network_deadlocks_with_a_skip_fifo_one_beat_short(tmp_path):
    """The skip FIFOs one beat shallower than stream.json's depth (FIFO_SLACK=-1): the network
    stalls (column stimulus, 9x1; the watchdog ends it in a few seconds) and says so."""
    need_icarus()
    result = network_make(tmp_path, "FIFO_SLACK=-1", stimulus="column")
    assert result.returncode != 0
    assert re.search(r"stalled: no beat moved for \d+ cycles from cycle \d+ \(a deadlock\)", result.stdout)
    assert re.fullmatch(r"fqsr_network_tb: FAIL 0 beats differ, 0 of 36 image.out beats received, \d+ cycles",
                        last_line(result, "fqsr_network_tb:")), result.stdout
    assert "skip FIFO of long_add     high-water 5 of 11 beats" in result.stdout


@pytest.mark.slow
def test_network_fails_with_a_wrong_tie_rule(tmp_path):
    """The tie-rule mutant in every unit: the column stimulus (9x1) FAILs (Icarus, about 16 s)."""
    need_icarus()
    result = network_make(tmp_path, "DEFINES=-DFQSR_TIE_HALF_AWAY", stimulus="column")
    assert result.returncode != 0
    found = re.fullmatch(r"fqsr_network_tb: FAIL (\d+) beats differ, 36 of 36 image.out beats received, \d+ cycles",
                         last_line(result, "fqsr_network_tb:"))
    assert found and int(found.group(1)) > 0, result.stdout


@pytest.mark.slow
def test_network_passes_on_the_trained_set(tmp_path):
    """The trained srresnet_x2_4-4-8, stimulus noise (8x8), PE 4, compiled by Verilator."""
    need("verilator", "Debian: apt-get install verilator")
    result = network_make(tmp_path, "NETWORK_SIM=verilator", set_dir=ROOT / "vectors" / "srresnet_x2_4-4-8",
                          stimulus="noise")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert last_line(result, "fqsr_network_tb:").startswith("fqsr_network_tb: PASS 16 ops, ")


# ---- cocotb: the whole network driven from Python, golden values from the .npy files ---------

def network_cocotb(tmp_path, *args):
    return subprocess.run([sys.executable, str(HDL / "fqsr_network_cocotb.py"), "--set", str(KIT),
                           "--build", str(tmp_path / "network-cocotb"), *args],
                          capture_output=True, text=True, timeout=3 * TIMEOUT)


@pytest.mark.slow
def test_network_cocotb_passes(tmp_path):
    """tools/hdl/fqsr_network_cocotb.py: the generated network (-DFQSR_COCOTB) fed from Python
    with seeded random gaps and backpressure, every op output and conv accumulator beat compared
    with beats encoded from the .npy files (column, 9x1: about 18 s under Icarus)."""
    need_cocotb()
    result = network_cocotb(tmp_path, "--stimulus", "column", "--seed", "3")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"fqsr_network_cocotb: PASS 16 ops, 630 beats checked \(36 of image.out, 216 accumulator "
                     r"beats\) from the .npy files, \d+ cycles \(random gaps and backpressure, seed 3\)", result.stdout)
    assert result.stdout.rstrip().endswith("fqsr_network_cocotb: PASS")


@pytest.mark.slow
def test_network_cocotb_fails_with_a_wrong_tie_rule(tmp_path):
    need_cocotb()
    result = network_cocotb(tmp_path, "--stimulus", "column", "--rounding", "1")
    assert result.returncode == 1 and result.stdout.rstrip().endswith("fqsr_network_cocotb: FAIL")
    found = re.search(r"fqsr_network_cocotb: FAIL (\d+) beats differ, 36 of 36 image.out beats received", result.stdout)
    assert found and int(found.group(1)) > 0, result.stdout[-3000:]
