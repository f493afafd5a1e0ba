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


# ---------------------------------------------------------------- --upstream-edsr / --upstream-fqsr
# The upstream repositories are not here: a stand-in checkout with their file layout
# (src/model/{__init__,common,edsr}.py, `from model import common`, FQSR's utility.py
# importing plotting libraries) exercises the loader; the figures of issue 23 come from
# the real checkouts (README, "Side by side with PyTorch").

EDSR_PY = """from model import common
from compare_pytorch_under_test import EDSRPyTorch
quantization_enable = common.quantization_enable


class EDSR(EDSRPyTorch):
    def __init__(self, args):
        super().__init__(args.n_resblocks, args.n_feats, args.scale[0], args.rgb_range, args.res_scale)
"""


def stand_in(root, quantization=True, plotting=False):
    model = root / "src" / "model"
    model.mkdir(parents=True)
    (model / "__init__.py").write_text("")
    (model / "edsr.py").write_text(EDSR_PY)
    common = f"quantization_enable = {quantization}\n"
    if plotting:
        (root / "src" / "utility.py").write_text(
            "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nimport cv2\n"
            "def draw_quant_hist(x, quant, name):\n    return\n")
        common = "from utility import draw_quant_hist\n" + common
    (model / "common.py").write_text(common)
    return str(root)


@pytest.fixture
def registered(tool, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "compare_pytorch_under_test", tool)
    return tool


def test_upstream_import_leaves_no_trace(registered, tmp_path):
    import sys
    import types
    tool = registered
    ours = types.ModuleType("model")
    sys.modules["model"] = ours
    try:
        edsr, common, _, added = tool.import_upstream(stand_in(tmp_path, plotting=True), tool.FQSR_PLOTTING)
    finally:
        assert sys.modules.pop("model") is ours      # a `model` of ours is put back
    assert edsr.EDSR.__module__ == "model.edsr" and common.quantization_enable
    assert not any(k.split(".")[0] in tool.UPSTREAM_NAMES for k in sys.modules)
    for name in added:                                # placeholders only while importing
        assert name not in sys.modules


def test_upstream_edsr_end_to_end(registered, tmp_path, capsys):
    """--upstream-edsr: the import check, a short PyTorch training, PTQ, the border and
    photograph figures; exit 0 or 1 by the targets, every figure printed."""
    code = registered.main(["--upstream-edsr", stand_in(tmp_path), "--size", "16", "--train-steps", "2",
                            "--train-blocks", "1", "--train-channels", "8", "--train-batch", "2",
                            "--train-patch", "12", "--calib-batches", "1", "--crop", "24"])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    assert "EDSR-PyTorch EDSR x2 16x64, random weights" in out and "ok" in out
    assert "(b) integer 8/8/8" in out and "border ring (11 HR pixels)" in out and "(c) mean PSNR" in out


def test_upstream_fqsr_without_quantization_import_is_refused(registered, tmp_path, capsys):
    """Their ResBlock builds the PReLU only when the third_party import works: if it
    fails, the check says so (exit 2) rather than measuring a ReLU model."""
    assert registered.main(["--upstream-fqsr", stand_in(tmp_path, quantization=False)]) == 2
    assert "third_party quantization import failed" in capsys.readouterr().err


def test_upstream_dir_without_the_modules(registered, tmp_path, capsys):
    assert registered.main(["--upstream-edsr", str(tmp_path)]) == 2
    assert "no src/model/edsr.py" in capsys.readouterr().err
