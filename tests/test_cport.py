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

SOURCE = Path(__file__).resolve().parent.parent / "tools" / "cport" / "fqsr_port.c"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Werror"]


def compiler():
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


@pytest.fixture(scope="module")
def port_binary(tmp_path_factory):
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH; the C port cannot be built here")
    exe = tmp_path_factory.mktemp("cport") / "fqsr_port"
    build = subprocess.run([cc, *CFLAGS, "-o", str(exe), str(SOURCE)], capture_output=True, text=True)
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
