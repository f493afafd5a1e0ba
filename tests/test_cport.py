"""The C99 port (tools/cport) built with the system compiler: every layer of every
vector set must pass the verifier, which proves SPEC + vectors are enough for a port."""
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fqsr_ref import vectors as V
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


@pytest.mark.parametrize("arch,scale,bits,branch_relu", [
    ("edsr", 4, "4/4/8", False),      # mean shift in the biases, ReLU (unsigned) codes, two x2 stages
    ("srresnet", 3, "6/8/8", False),  # x3 shuffle, plain residual add, no requantization
    ("edsr", 2, "8/8/16", True),      # 16-bit skips (int16 codes), image requantized to 8 bits signed
])
def test_port_passes_other_graphs(port_binary, tmp_path, arch, scale, bits, branch_relu):
    cfg = preset(arch, scale, bits, blocks=1, channels=4, branch_relu=branch_relu)
    vm = V.calibrated_model(cfg, np.random.default_rng(1), np.random.default_rng(0).random((2, 3, 8, 8)))
    stimuli = [V.Stimulus(name, V.make_stimulus(name, 5), "", ("bin",)) for name in V.STIMULI[1:]]
    golden = V.write_tree(tmp_path / "golden", V.build_vectors(vm, stimuli))
    assert_all_pass(golden, run_port(port_binary, golden, tmp_path / "port"))


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
    ("1073741824 -1 -1 4 1 1 4611", "1073741824 -1 0 4 1 1 4611", "NEG_SIGN 0 is neither -1 nor 1"),
    ("long_add.out 0 1610612736", "long_add.out 2 1610612736", "BRANCH_RELU 2 out of range [0, 1]"),
    ("up.0.shuffle 2", "up.0.shuffle 3", "factor 3^2 does not divide the 32 channels"),
    ("up.0.shuffle 2", "up.0.shuffle 1", "conv 'tail' has CIN 8 but its input 'up.0.shuffle' has 32 channels"),
    ("tensor head.out int8 -127 127", "tensor head.out int8 -127 300", "QMAX 300 out of range [-128, 127]"),
    ("tensor head.out int8 -127 127", "tensor head.out int8 127 -127", "QMIN 127 > QMAX -127"),
    ("tensor head.out int8 -127 127", "tensor head.out int64 -127 127", "tensor dtype 'int64' is not one of"),
    ("head.out blocks.0.conv1.in 1073741824 0", "head.out blocks.0.conv1.in 1073741824 0 7",
     "this 'requant' line has 7 fields, expected 6"),
    ("requant trunk.in blocks.1.add.out", "requant trunk.in blocks.9.add.out",
     "input tensor 'blocks.9.add.out' is not declared by a tensor line"),
    ("requant trunk.in blocks.1.add.out", "requant trunk.in up.0.out", "reads 'up.0.out' before any op computes it"),
    ("requant trunk.in blocks.1.add.out trunk.in", "requant trunk.in blocks.1.add.out head.out",
     "writes 'head.out', which an earlier op already computes"),
    ("fqsr_model 1", "fqsr_model 2", "model.txt version 2 out of range [1, 1]"),
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


def test_port_refuses_an_add_that_could_leave_int64(port_binary, tmp_path):
    """32-bit operands with the largest multipliers: |a| M_a + |b| M_b could pass 2^63."""
    golden = small_golden(tmp_path / "golden")
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
