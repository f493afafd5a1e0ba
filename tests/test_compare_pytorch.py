"""The import against PyTorch itself (tools/compare_pytorch.py's import check, tiny models).

Needs torch, which is not a dependency of fqsr_ref: skipped without it (CI). Run it
from a venv with a CPU torch: /work/torchvenv/bin/python -m pytest tests/test_compare_pytorch.py
"""
import importlib.util
import pathlib

import pytest

pytest.importorskip("torch", reason="torch is not installed (not a dependency of fqsr_ref; "
                                    "install a CPU build in a separate venv to run this)")

TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "compare_pytorch.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("compare_pytorch", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_layout_matches_pytorch(tool, tmp_path):
    """EDSR-PyTorch (x2, x3 with res_scale 0.1 and a prefix), BasicSR EDSR (x4, x2), FQSR
    SRResNet (x2, x4): the import's forward equals PyTorch's in float64 and float32."""
    x = tool.photo_batch(20)
    for case in tool.cases(blocks=2, c=8):
        r = tool.check_case(case, x, str(tmp_path))
        assert r["f64_exact_mean"] <= tool.TOL64, (case.name, r)
        assert r["f64"] <= tool.TOL64_MEAN, (case.name, r)
        assert r["f32"] <= tool.TOL32, (case.name, r)


def test_a_wrong_import_is_caught(tool, tmp_path):
    """The check can fail: a res_scale the model was not trained with shows."""
    case = tool.cases(blocks=2, c=8)[1]          # EDSR-PyTorch with res_scale 0.1
    case.import_kw = {"res_scale": 1.0}
    r = tool.check_case(case, tool.photo_batch(20), str(tmp_path))
    assert r["f64_exact_mean"] > 1e-3


def test_ptq_psnr_matches(tool):
    assert tool.ptq_check(log=lambda *_: None, blocks=1, c=8, calib_batches=2)
