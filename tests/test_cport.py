"""The C99 port (tools/cport) built with the system compiler: every layer of every
vector set must pass the verifier, which proves SPEC + vectors are enough for a port;
and its per-op library (fqsr_ops.c, the DPI-C golden model) against Python twins."""
import ctypes
import io
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fqsr_ref import vectors as V
from fqsr_ref.integer.bitplane import bitplane_partials
from fqsr_ref.integer.engine_plain import int_conv2d_exact
from fqsr_ref.models import preset
from fqsr_ref.verify import EXIT_FAIL, EXIT_PASS, verify

CPORT = Path(__file__).resolve().parent.parent / "tools" / "cport"
SOURCES = [CPORT / "fqsr_port.c", CPORT / "fqsr_ops.c"]     # main + the per-op library
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Werror"]


def compiler():
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


@pytest.fixture(scope="module")
def port_binary(tmp_path_factory):
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH; the C port cannot be built here")
    exe = tmp_path_factory.mktemp("cport") / "fqsr_port"
    build = subprocess.run([cc, *CFLAGS, "-o", str(exe), *map(str, SOURCES)], capture_output=True, text=True)
    assert build.returncode == 0, f"{cc} {' '.join(CFLAGS)} failed:\n{build.stderr}"
    return exe


def run_port(exe, golden, port):
    result = subprocess.run([str(exe), str(golden), str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return port


def assert_all_pass(golden, port):
    out = io.StringIO()
    code = verify(golden, port, out=out)
    text = out.getvalue()
    assert code == EXIT_PASS, text
    assert "FAIL  " not in text and "missing" not in text


@pytest.mark.parametrize("golden", V.committed_dirs(), ids=[d.name for d in V.committed_dirs()])
def test_port_passes_the_committed_sets(port_binary, tmp_path, golden):
    """The corner sets included: exact ties, both saturations, int64 accumulators."""
    assert_all_pass(golden, run_port(port_binary, golden, tmp_path / "port"))


@pytest.mark.parametrize("arch,scale,bits,kw", [
    ("edsr", 4, "4/4/8", {}),        # mean shift in the biases, ReLU (unsigned) codes, two x2 stages
    ("srresnet", 3, "6/8/8", {}),    # x3 shuffle, plain residual add, no requantization
    ("edsr", 2, "8/8/16", {"branch_relu": True}),  # 16-bit skips (int16 codes), image requantized to 8 bits signed
    ("edsr", 2, "6/6/8", {"block_act": "prelu"}),  # the authors' PReLU EDSR: two multipliers in the blocks
    ("edsr", 2, "8/8/8", {"head_pad": "mean"}),    # an import's head: PAD_VALUE codes outside the image
])
def test_port_passes_other_graphs(port_binary, tmp_path, arch, scale, bits, kw):
    cfg = preset(arch, scale, bits, blocks=1, channels=4, **kw)
    vm = V.calibrated_model(cfg, np.random.default_rng(1), np.random.default_rng(0).random((2, 3, 8, 8)))
    stimuli = [V.Stimulus(name, V.make_stimulus(name, 5), "", ("bin",)) for name in V.STIMULI[1:]]
    files = V.build_vectors(vm, stimuli)
    golden = V.write_tree(tmp_path / "golden", files)
    assert_all_pass(golden, run_port(port_binary, golden, tmp_path / "port"))
    assert V.regenerate(golden) == files   # the model reads back from manifest.json as written


def test_port_output_of_another_model_fails(port_binary, tmp_path):
    """Guard against a vacuous pass: 4/4/8 results checked against the 8/8/8 set."""
    port = run_port(port_binary, V.bundled_dir("4/4/8"), tmp_path / "port")
    assert verify(V.bundled_dir("8/8/8"), port, out=io.StringIO()) == EXIT_FAIL


def test_port_reports_a_missing_model(port_binary, tmp_path):
    result = subprocess.run([str(port_binary), str(tmp_path), str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "model.txt" in result.stderr


# ---- model.txt is validated before anything is written (issue 12, item 5) ----------

CORNER = Path(__file__).resolve().parent.parent / "vectors" / "corner_x2_4-4-8"


def small_golden(dest, source=CORNER, stimulus="checker"):
    """model.txt, the weights and one stimulus's input of a committed set: all the port reads."""
    dest.mkdir(parents=True)
    shutil.copytree(source / "weights", dest / "weights")
    (dest / stimulus).mkdir()
    shutil.copy(source / stimulus / "image.in.bin", dest / stimulus)
    lines = [line for line in (source / "model.txt").read_text().splitlines()
             if not line.startswith("stimulus ") or line.split()[1] == stimulus]
    (dest / "model.txt").write_text("\n".join(lines) + "\n")
    return dest


def mutate(golden, old, new, count=1):
    text = (golden / "model.txt").read_text()
    assert text.count(old) >= count, old
    (golden / "model.txt").write_text(text.replace(old, new, count))


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("old,new,message", [
    # table row: a name with ../ wrote a file outside PORT_DIR
    ("stimulus checker", "stimulus ../escaped", "stimulus name '../escaped' is not a plain name"),
    ("stimulus checker", "stimulus a/b", "stimulus name 'a/b' is not a plain name"),
    ("stimulus checker", "stimulus ..", "stimulus name '..' is not a plain name"),
    ("tensor up.0.shuffle", "tensor ../up.0.shuffle", "tensor name '../up.0.shuffle' is not a plain name"),
    ("conv tail ", "conv ../tail ", "op name '../tail' is not a plain name"),
    # table row: add shift 40, huge multiplier, shuffle factor 65536, negative dims
    ("long_add.out 0 1610612736 805306368 1", "long_add.out 0 1610612736 805306368 40",
     "SHIFT 40 out of range [-31, 31]"),
    ("trunk.in 1073741824 0", "trunk.in 1099511627776 0", "M 1099511627776 out of range [0, 2147483647]"),
    ("int8 int32 int32 1610612736 0 1610612736 0", "int8 int32 int32 1099511627776 0 1610612736 0",
     "M 1099511627776 out of range"),
    ("up.0.shuffle 2", "up.0.shuffle 65536", "FACTOR 65536 out of range [1, 16]"),
    ("stimulus checker 1 3 8 8", "stimulus checker 1 -3 8 8", "C -3 out of range [1, 65536]"),
    ("stimulus checker 1 3 8 8", "stimulus checker 1 3 8 -8", "W -8 out of range"),
    ("conv trunk trunk.in trunk.out 8 8 3", "conv trunk trunk.in trunk.out -8 8 3", "COUT -8 out of range"),
    ("conv trunk trunk.in trunk.out 8 8 3", "conv trunk trunk.in trunk.out 8 8 -3", "K -3 out of range"),
    # the rest of the ranges
    ("stimulus checker 1 3 8 8", "stimulus checker 1 3 65536 65536", "more than 2^28 elements"),
    ("conv trunk trunk.in trunk.out 8 8 3", "conv trunk trunk.in trunk.out 8 8 4", "K 4 is even"),
    ("conv trunk trunk.in trunk.out 8 8 3", "conv trunk trunk.in trunk.out 8 8 5", "PAD 1 is not K / 2 = 2"),
    ("conv trunk trunk.in trunk.out 8 8 3", "conv trunk trunk.in trunk.out 9 8 3", "holds 576 bytes, expected 648"),
    ("1610612733 -28 -1 4 1 1 894789459", "1610612733 -28 0 4 1 1 894789459", "NEG_SIGN 0 is neither -1 nor 1"),
    ("long_add.out 0 1610612736", "long_add.out 2 1610612736", "BRANCH_RELU 2 out of range [0, 1]"),
    ("up.0.shuffle 2", "up.0.shuffle 3", "factor 3^2 does not divide the 32 channels"),
    ("up.0.shuffle 2", "up.0.shuffle 1", "conv 'tail' has CIN 8 but its input 'up.0.shuffle' has 32 channels"),
    ("tensor head.out int8 -127 127", "tensor head.out int8 -127 300", "QMAX 300 out of range [-128, 127]"),
    ("tensor head.out int8 -127 127", "tensor head.out int8 127 -127", "QMIN 127 > QMAX -127"),
    ("tensor head.out int8 -127 127", "tensor head.out int64 -127 127", "tensor dtype 'int64' is not one of"),
    ("head.out blocks.0.conv1.in 1073741824 0 39", "head.out blocks.0.conv1.in 1073741824 0 39 7",
     "this 'requant' line has 8 fields, expected 7"),
    # PRODUCT_BITS (SPEC 6.4) must be the width the op's own numbers give
    ("head.out blocks.0.conv1.in 1073741824 0 39", "head.out blocks.0.conv1.in 1073741824 0 40",
     "PRODUCT_BITS 40 is not 39"),
    ("long_add.out 0 1610612736 805306368 1 39", "long_add.out 0 1610612736 805306368 1 64",
     "PRODUCT_BITS 64 is not 39"),
    ("4 4 1 495723 50", "4 4 1 495723 51", "PRODUCT_BITS 51 is not 50"),
    ("requant trunk.in blocks.1.add.out", "requant trunk.in blocks.9.add.out",
     "input tensor 'blocks.9.add.out' is not declared by a tensor line"),
    ("requant trunk.in blocks.1.add.out", "requant trunk.in up.0.out", "reads 'up.0.out' before any op computes it"),
    ("requant trunk.in blocks.1.add.out trunk.in", "requant trunk.in blocks.1.add.out head.out",
     "writes 'head.out', which an earlier op already computes"),
    ("fqsr_model 2", "fqsr_model 3", "model.txt version 3 out of range [1, 2]"),
    ("conv head ", "conv\0head ", "a NUL byte (model.txt is text)"),
    ("conv head ", "conv " + "x" * 5000 + " ", "longer than"),
    ("\nend\n", "\n", "no 'end' line"),
])
def test_port_refuses_a_bad_model_txt(port_binary, tmp_path, old, new, message):
    """Exit 2, one line naming model.txt's line and the problem, and nothing written anywhere."""
    golden = small_golden(tmp_path / "golden")
    mutate(golden, old, new)
    before = files_under(tmp_path)
    result = subprocess.run([str(port_binary), str(golden), str(tmp_path / "port")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "model.txt line " in result.stderr, result.stderr
    assert files_under(tmp_path) == before      # no PORT_DIR, no escaped file


def as_version_1(golden):
    """model.txt in the format before PRODUCT_BITS (fqsr_model 1): still read."""
    drop = {"conv": 20, "requant": 7, "add": 10}
    lines = []
    for line in (golden / "model.txt").read_text().splitlines():
        f = line.split()
        if f and f[0] in drop:
            assert len(f) == drop[f[0]], line
            f = f[:-1]
        lines.append("fqsr_model 1" if f == ["fqsr_model", "2"] else " ".join(f) if f else line)
    (golden / "model.txt").write_text("\n".join(lines) + "\n")
    return golden


def test_port_reads_version_1(port_binary, tmp_path):
    golden = as_version_1(small_golden(tmp_path / "golden", source=CORNER.parent / "corner_x2_16-16-16"))
    run_port(port_binary, golden, tmp_path / "port")
    for out in (tmp_path / "port" / "checker").iterdir():
        assert out.read_bytes() == (CORNER.parent / "corner_x2_16-16-16" / "checker" / out.name).read_bytes()


def test_port_refuses_products_no_int64_rule_makes_exact(port_binary, tmp_path):
    """SPEC 6.4: past 64 bits the split needs n = 31 - SHIFT >= 16. The tail reading 21-bit
    codes at SHIFT 16 (n = 15) has products of about 2^68: refused before anything is written."""
    golden = as_version_1(small_golden(tmp_path / "golden", source=CORNER.parent / "corner_x2_16-16-16"))
    m = 1610612736
    mutate(golden, "tensor up.0.shuffle int16 -32767 32767 16 1", "tensor up.0.shuffle int32 -1048575 1048575 21 1")
    mutate(golden, f"int16 int32 int64 {m} 0 {m} 0 1 16 4 1", f"int16 int32 int64 {m} 16 {m} 0 1 16 4 1")
    result = subprocess.run([str(port_binary), str(golden), str(tmp_path / "port")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "conv 'tail'" in result.stderr and "2^46" in result.stderr, result.stderr
    assert not (tmp_path / "port").exists()


def test_port_refuses_an_add_that_could_leave_int64(port_binary, tmp_path):
    """32-bit operands with the largest multipliers: |a| M_a + |b| M_b could pass 2^63."""
    golden = as_version_1(small_golden(tmp_path / "golden"))
    for name in ("head.out", "trunk.out"):
        mutate(golden, f"tensor {name} int8 -", f"tensor {name} int32 -")
        text = (golden / "model.txt").read_text().splitlines()
        text = [f"tensor {name} int32 -2147483647 2147483647 32 1" if line.startswith(f"tensor {name} ")
                else line for line in text]
        (golden / "model.txt").write_text("\n".join(text) + "\n")
    mutate(golden, "long_add.out 0 1610612736 805306368 1", "long_add.out 0 2147483647 2147483647 -31")
    result = subprocess.run([str(port_binary), str(golden), str(tmp_path / "port")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "add 'long_add'" in result.stderr and "beyond int64" in result.stderr
    assert not (tmp_path / "port").exists()


def test_port_fails_a_runtime_overflow_before_writing(port_binary, tmp_path):
    """An ACC_DTYPE too narrow for the accumulators is found only by running; the dry run
    finds it (here in the second-to-last conv) before the first file is written."""
    golden = small_golden(tmp_path / "golden", source=CORNER.parent / "corner_x2_16-16-16")
    text = (golden / "model.txt").read_text().splitlines()
    text = [line.replace("int16 int32 int64", "int16 int32 int32") if line.startswith("conv up.0 ") else line
            for line in text]
    (golden / "model.txt").write_text("\n".join(text) + "\n")
    result = subprocess.run([str(port_binary), str(golden), str(tmp_path / "port")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "conv 'up.0'" in result.stderr and "does not fit ACC_DTYPE int32" in result.stderr
    assert not (tmp_path / "port").exists()


def test_port_runs_the_reduced_set(port_binary, tmp_path):
    """The copy the refusal tests start from is itself valid: the same bytes as the golden files."""
    golden = small_golden(tmp_path / "golden")
    run_port(port_binary, golden, tmp_path / "port")
    for out in (tmp_path / "port" / "checker").iterdir():
        assert out.read_bytes() == (CORNER / "checker" / out.name).read_bytes(), out.name


# ---- the per-op library (fqsr_ops.c, also the DPI-C golden model) against Python twins --------

INVALID = -2 ** 63
I64_MAX = 2 ** 63 - 1
LL, INT, PTR = ctypes.c_longlong, ctypes.c_int, ctypes.POINTER(ctypes.c_longlong)
SIGNATURES = {      # name: (result, arguments), as in fqsr_ops.h
    "fqsr_rounding_right_shift": (LL, [LL, INT]),
    "fqsr_requant_fits": (INT, [LL, INT, INT]),
    "fqsr_requant": (LL, [LL, INT, INT]),
    "fqsr_product_bits": (INT, [LL, INT, INT]),
    "fqsr_clamp": (LL, [LL, LL, LL]),
    "fqsr_requant_clamp": (LL, [LL, INT, INT, LL, LL]),
    "fqsr_conv_output": (LL, [LL, INT, INT, INT, INT, INT, LL, LL]),
    "fqsr_add_fits": (INT, [LL, LL, INT, INT, INT]),
    "fqsr_add": (LL, [LL, LL, INT, INT, INT, INT, LL, LL]),
    "fqsr_conv_acc_at": (LL, [PTR, INT, INT, INT, PTR, INT, INT, LL, INT, INT, INT]),
    "fqsr_conv_acc": (None, [PTR, INT, INT, INT, INT, PTR, PTR, INT, INT, PTR]),
    "fqsr_conv_row": (None, [PTR, INT, INT, INT, INT, INT, INT, PTR]),
    "fqsr_pixel_shuffle": (None, [PTR, INT, INT, INT, INT, INT, PTR]),
    "fqsr_code_bit": (INT, [LL, INT]),
    "fqsr_plane_weight": (LL, [INT, INT, INT]),
    "fqsr_plane_partials": (None, [PTR, PTR, INT, INT, INT, ctypes.POINTER(ctypes.c_int)]),
    "fqsr_plane_acc": (LL, [ctypes.POINTER(ctypes.c_int), INT, INT, INT, INT, LL]),
}


def load_ops(path):
    lib = ctypes.CDLL(str(path))
    for name, (res, args) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH; the C port cannot be built here")
    so = tmp_path_factory.mktemp("ops") / "libfqsr_ops.so"
    build = subprocess.run([cc, *CFLAGS, "-shared", "-fPIC", "-o", str(so), str(CPORT / "fqsr_ops.c")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return load_ops(so)


def ptr(array):
    return array.ctypes.data_as(PTR)


# twins, in Python integers, written from SPEC 6.2, 6.4, 6.8
def rrs(v, n):
    return (v + (1 << (n - 1))) >> n if n else v


def twin_requant(x, m, shift):
    if not (-31 <= shift <= 31 and m >= 0):
        return INVALID
    half = 1 << (30 - shift) if shift < 31 else 0
    # int64 products, or beyond them the 16-bit split of M (|x| < 2^46, n >= 16): SPEC 6.4
    fits = abs(x) * m + half <= I64_MAX or (abs(x) < 2 ** 46 and 31 - shift >= 16)
    return rrs(x * m, 31 - shift) if fits else INVALID


def twin_clamp(v, lo, hi):
    return v if v == INVALID else min(max(v, lo), hi)


def twin_add(a, b, relu, ma, mb, shift, lo, hi):
    b = max(b, 0) if relu else b
    if not (-31 <= shift <= 31 and ma >= 0 and mb >= 0):
        return INVALID
    half = 1 << (30 - shift) if shift < 31 else 0
    if abs(a) * ma + abs(b) * mb + half > I64_MAX:
        return INVALID
    return twin_clamp(rrs(a * ma + b * mb, 31 - shift), lo, hi)


EXTREME_I64 = [INVALID, INVALID + 1, -2 ** 62, -2 ** 31 - 1, -2 ** 31, -3, -1, 0, 1, 3, 2 ** 31, 2 ** 62, I64_MAX]
EXTREME_INT = [-2 ** 31, -32, -31, -1, 0, 1, 2, 30, 31, 32, 62, 63, 64, 2 ** 30, 2 ** 31 - 1]
i64 = st.one_of(st.integers(-2 ** 63, I64_MAX), st.integers(-2 ** 20, 2 ** 20), st.sampled_from(EXTREME_I64))
mults = st.one_of(st.integers(0, 2 ** 31 - 1), st.sampled_from([0, 1, 2 ** 30, 3 << 29, 2 ** 31 - 1, -1]))
shifts = st.one_of(st.integers(-31, 31), st.sampled_from([-32, 32, -2 ** 31, 2 ** 31 - 1]))


@given(v=i64, n=st.one_of(st.integers(0, 62), st.sampled_from([-1, 63, 64])))
def test_ops_rounding_right_shift_is_round_half_up(ops, v, n):
    assert ops.fqsr_rounding_right_shift(v, n) == (rrs(v, n) if 0 <= n <= 62 else INVALID)


@given(x=i64, m=mults, shift=shifts, lo=st.integers(-200, 0), hi=st.integers(0, 200))
def test_ops_requant_matches_its_twin(ops, x, m, shift, lo, hi):
    expected = twin_requant(x, m, shift)
    assert ops.fqsr_requant_fits(x, m, shift) == int(expected != INVALID)
    assert ops.fqsr_requant(x, m, shift) == expected
    assert ops.fqsr_requant_clamp(x, m, shift, lo, hi) == twin_clamp(expected, lo, hi)


@given(bound=st.one_of(st.integers(0, I64_MAX), st.sampled_from([0, 1, 2 ** 31, 2 ** 46 - 1, I64_MAX])),
       m=st.integers(0, 2 ** 31 - 1), shift=st.integers(-31, 31))
def test_ops_product_bits_matches_python(ops, bound, m, shift):
    """PRODUCT_BITS (SPEC 6.4) computed in 128 bits of two uint64 halves."""
    n = 31 - shift
    assert ops.fqsr_product_bits(bound, m, shift) == (bound * m + (1 << (n - 1) if n else 0)).bit_length() + 1


@given(x=st.integers(-(2 ** 46) + 1, 2 ** 46 - 1), m=st.integers(0, 2 ** 31 - 1), shift=st.integers(-31, 15),
       tie=st.booleans())
def test_ops_split_requant_is_exact_past_64_bits(ops, x, m, shift, tie):
    """Products past int64 (the 16-bit corner set's convs): the split of M in portable C99
    equals Python integers for every |x| < 2^46 and n >= 16, ties included."""
    n = 31 - shift
    if tie and m:     # an odd multiple of 2^(n - 1 - v2(M)): x M / 2^n is an exact tie
        e = n - 1 - ((m & -m).bit_length() - 1)
        if e < 46:
            x = ((abs(x) >> e) | 1) << e if ((abs(x) >> e) | 1) << e < 2 ** 46 else 1 << e
            x = x if x < 2 ** 46 else x - (2 << e)
    assert ops.fqsr_requant(x, m, shift) == rrs(x * m, n)
    assert ops.fqsr_requant(-x, m, shift) == rrs(-x * m, n)


@given(acc=i64, m=mults, shift=shifts, nm=mults, nshift=shifts, sign=st.sampled_from([1, -1, 0, 2]))
def test_ops_conv_output_matches_its_twin(ops, acc, m, shift, nm, nshift, sign):
    if acc >= 0:
        expected = twin_clamp(twin_requant(acc, m, shift), -127, 127)
    elif sign not in (1, -1) or sign * acc > I64_MAX:
        expected = INVALID
    else:
        expected = twin_clamp(twin_requant(sign * acc, nm, nshift), -127, 127)
    assert ops.fqsr_conv_output(acc, m, shift, nm, nshift, sign, -127, 127) == expected


@given(a=i64, b=i64, relu=st.booleans(), ma=mults, mb=mults, shift=shifts)
def test_ops_add_matches_its_twin(ops, a, b, relu, ma, mb, shift):
    assert ops.fqsr_add(a, b, int(relu), ma, mb, shift, -127, 127) == twin_add(a, b, relu, ma, mb, shift, -127, 127)


def test_ops_ties_go_up_for_both_signs(ops):
    """M = 2^30 at shift 0 halves: 3/2 -> 2, -3/2 -> -1, -5/2 -> -2 (SPEC 6.2)."""
    assert [ops.fqsr_requant(x, 2 ** 30, 0) for x in (3, -3, -5, 5, -1)] == [2, -1, -2, 3, 0]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 2), cin=st.integers(1, 4), cout=st.integers(1, 3),
       h=st.integers(1, 6), w=st.integers(1, 6), k=st.sampled_from([1, 3, 5]))
def test_ops_conv_matches_the_integer_engine(ops, seed, n, cin, cout, h, w, k):
    """fqsr_conv_acc, fqsr_conv_acc_at and fqsr_conv_row against fqsr_ref's exact conv,
    W = 1 and batch > 1 included."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (n, cin, h, w)).astype(np.int64)
    wt = rng.integers(-127, 128, (cout, cin, k, k)).astype(np.int64)
    bias = rng.integers(-2 ** 31, 2 ** 31, cout).astype(np.int64)
    expected = int_conv2d_exact(x, 8, True, wt, 8, True, bias).astype(np.int64)
    acc = np.zeros((n, cout, h, w), np.int64)
    ops.fqsr_conv_acc(ptr(x), n, cin, h, w, ptr(wt), ptr(bias), cout, k, ptr(acc))
    np.testing.assert_array_equal(acc, expected)
    i, o, oy, ox = n - 1, cout - 1, h // 2, w - 1
    image = np.ascontiguousarray(x[i])
    assert ops.fqsr_conv_acc_at(ptr(image), cin, h, w, ptr(wt), cout, k, int(bias[o]), o, oy, ox) == expected[i, o, oy, ox]
    row = np.zeros(cin * k * k, np.int64)
    ops.fqsr_conv_row(ptr(image), cin, h, w, k, oy, ox, ptr(row))
    assert int(row @ wt[o].ravel()) + int(bias[o]) == expected[i, o, oy, ox]
    for bad in [(o, h, ox), (o, oy, -1), (cout, oy, ox), (-1, oy, ox)]:      # outside: FQSR_INVALID
        assert ops.fqsr_conv_acc_at(ptr(image), cin, h, w, ptr(wt), cout, k, 0, *bad) == INVALID
    assert ops.fqsr_conv_acc_at(ptr(image), cin, h, w, ptr(wt), cout, 2, 0, 0, 0, 0) == INVALID   # even K


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 2), c=st.integers(1, 3), r=st.integers(1, 3),
       h=st.integers(1, 4), w=st.integers(1, 4))
def test_ops_pixel_shuffle_matches_numpy(ops, seed, n, c, r, h, w):
    x = np.random.default_rng(seed).integers(-100, 100, (n, c * r * r, h, w)).astype(np.int64)
    y = np.zeros((n, c, h * r, w * r), np.int64)
    ops.fqsr_pixel_shuffle(ptr(x), n, c * r * r, h, w, r, ptr(y))
    expected = x.reshape(n, c, r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c, h * r, w * r)
    np.testing.assert_array_equal(y, expected)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), fan_in=st.integers(0, 80), row_bits=st.integers(1, 9),
       col_bits=st.integers(2, 9), row_signed=st.booleans(), bias=st.integers(-2 ** 31, 2 ** 31 - 1))
def test_ops_plane_partials_match_the_bitplane_engine(ops, seed, fan_in, row_bits, col_bits, row_signed, bias):
    """P[m, p] as fqsr_ref.integer.bitplane computes it, and the planes rebuild the dot product."""
    rng = np.random.default_rng(seed)
    lo, hi = (-(1 << (row_bits - 1)), 1 << (row_bits - 1)) if row_signed else (0, 1 << row_bits)
    row = rng.integers(lo, hi, fan_in).astype(np.int64)
    col = rng.integers(-(1 << (col_bits - 1)), 1 << (col_bits - 1), fan_in).astype(np.int64)
    pop = np.zeros(row_bits * col_bits, np.int32)
    ops.fqsr_plane_partials(ptr(row), ptr(col), fan_in, row_bits, col_bits,
                            pop.ctypes.data_as(ctypes.POINTER(ctypes.c_int)))
    expected = bitplane_partials(row, col, row_bits, row_signed, col_bits, True)
    np.testing.assert_array_equal(pop.reshape(row_bits, col_bits), expected)
    rebuilt = ops.fqsr_plane_acc(pop.ctypes.data_as(ctypes.POINTER(ctypes.c_int)), row_bits, int(row_signed),
                                 col_bits, 1, bias)
    assert rebuilt == bias + int(row @ col)
    assert [ops.fqsr_plane_weight(m, 4, 1) for m in range(4)] == [1, 2, 4, -8]
    assert ops.fqsr_plane_weight(4, 4, 1) == INVALID and ops.fqsr_code_bit(-1, 63) == 1


UB_PROBE = textwrap.dedent("""
    import ctypes, itertools, random, sys
    sys.path.insert(0, {tests!r})
    from test_cport import EXTREME_I64, EXTREME_INT, load_ops
    lib = load_ops({so!r})
    rnd = random.Random(1)
    L, I = EXTREME_I64, EXTREME_INT
    for v, n in itertools.product(L, I):
        lib.fqsr_rounding_right_shift(v, n); lib.fqsr_requant(v, n, n); lib.fqsr_code_bit(v, n)
        lib.fqsr_product_bits(v, n, n); lib.fqsr_requant(v, n, 0); lib.fqsr_requant(v, 2 ** 31 - 1, n)
        lib.fqsr_requant_clamp(v, n, 0, -7, 7); lib.fqsr_plane_weight(n, n, 1)
    for _ in range(20000):
        a, b = rnd.choice(L), rnd.choice(L)
        m, s, nm, ns, sign = (rnd.choice(I) for _ in range(5))
        lib.fqsr_conv_output(a, m, s, nm, ns, sign, -127, 127)
        lib.fqsr_add(a, b, rnd.randint(0, 1), m, nm, s, -127, 127)
    x = (ctypes.c_longlong * 9)(*L[:9]); w = (ctypes.c_longlong * 9)(*L[-9:])
    print(lib.fqsr_conv_acc_at(x, 1, 3, 3, w, 1, 3, L[0], 0, 1, 1))
    pop = (ctypes.c_int * 4)(2 ** 31 - 1, -2 ** 31, 5, -1)
    print(lib.fqsr_plane_acc(pop, 2, 1, 2, 1, L[0]))
    print("probe done")
""")


def test_ops_have_no_undefined_behaviour_at_the_extremes(tmp_path):
    """Every function at int64/int extremes (outside the SPEC's domain too) under UBSan:
    FQSR_INVALID or a wrapped sum, never a sanitizer report."""
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    so = tmp_path / "libfqsr_ops_ubsan.so"
    flags = ["-fsanitize=undefined", "-fno-sanitize-recover=all"]
    build = subprocess.run([cc, *CFLAGS, *flags, "-shared", "-fPIC", "-o", str(so), str(CPORT / "fqsr_ops.c")],
                           capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"{cc} cannot build with {' '.join(flags)}: {(build.stderr.strip().splitlines() or [''])[-1]}")
    script = UB_PROBE.format(tests=str(Path(__file__).resolve().parent), so=str(so))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"})
    assert run.returncode == 0 and "runtime error" not in run.stderr, run.stderr[-3000:]
    assert run.stdout.strip().endswith("probe done")
