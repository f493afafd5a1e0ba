"""python -m fqsr_ref.evaluate: tables, saved images, and one-line errors with exit code 2."""
import os
import subprocess
import sys

import numpy as np
import pytest

from fqsr_ref import evaluate
from fqsr_ref.data.images import read_image, write_image
from fqsr_ref.data.synthetic import procedural_image


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    for name in ("one.png", "two.png"):
        write_image(d / name, procedural_image(rng, (40, 44)))
    return d


def _nearest_upscaler(scale):
    return lambda lr: np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)


@pytest.fixture
def fake_models(monkeypatch):
    """Stand-in for fqsr_ref.checkpoint.load_upscaler: "good*" -> nearest x2, else ValueError."""
    loaded = []

    def load_upscaler(path):
        if not os.path.basename(path).startswith("good"):
            raise ValueError(f"checkpoint {path} is not a valid checkpoint")
        loaded.append(path)
        fn = _nearest_upscaler(2)
        fn.scale = 2  # the real load_upscaler says its model's scale
        return fn

    import fqsr_ref.checkpoint
    monkeypatch.setattr(fqsr_ref.checkpoint, "load_upscaler", load_upscaler)
    return loaded


def _err_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_bicubic_table(hr_dir, capsys):
    assert evaluate.main(["--bicubic", "--hr-dir", str(hr_dir), "--scale", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "bicubic, x2, 2 images" in lines[0]
    assert lines[1].split() == ["image", "bic", "PSNR", "bic", "SSIM"]
    assert [ln.split()[0] for ln in lines[2:]] == ["one.png", "two.png", "-" * len(lines[1]), "mean"]
    psnr = [float(ln.split()[1]) for ln in (lines[2], lines[3])]
    assert float(lines[5].split()[1]) == pytest.approx(np.mean(psnr), abs=0.006)


def test_positional_folder_and_module_entry_point(hr_dir):
    res = subprocess.run([sys.executable, "-m", "fqsr_ref.evaluate", "--bicubic", str(hr_dir),
                          "--scale", "4"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "x4, 2 images" in res.stdout and "mean" in res.stdout


def test_model_with_self_ensemble_and_saved_images(hr_dir, tmp_path, fake_models, capsys):
    out_dir = tmp_path / "out"
    assert evaluate.main(["--checkpoint", "good.npz", "--hr-dir", str(hr_dir), "--scale", "2",
                          "--self-ensemble", "--save-images", str(out_dir)]) == 0
    assert fake_models == ["good.npz"]
    out = capsys.readouterr().out
    assert "self-ensemble" in out and "gain dB" in out
    assert sorted(os.listdir(out_dir)) == ["one_x2_compare.png", "one_x2_sr.png",
                                           "two_x2_compare.png", "two_x2_sr.png"]
    lr = read_image(hr_dir / "one.png")[::2, ::2]  # any 20x22 image: check the layout only
    assert read_image(out_dir / "one_x2_sr.png").shape == _nearest_upscaler(2)(lr).shape
    assert read_image(out_dir / "one_x2_compare.png").shape == (40, 3 * 44 + 8, 3)


def _exit_code(argv):
    """main's return value, or the code of the SystemExit the argument parser raises."""
    try:
        return evaluate.main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("argv,needle", [
    (["--bicubic", "--hr-dir", "/nonexistent/dir", "--scale", "2"], "does not exist"),
    (["--bicubic", "--hr-dir", "EMPTY", "--scale", "2"], "no .png"),
    (["--bicubic", "--hr-dir", "HR", "--scale", "5"], "--scale must be one of 2, 3, 4"),
    (["--bicubic", "--hr-dir", "HR", "--scale", "two"], "invalid int"),
    (["--hr-dir", "HR", "--scale", "2"], "--checkpoint --bicubic --weights is required"),
    (["--bicubic", "--scale", "2"], "HR folder is required"),
    (["--bicubic", "--checkpoint", "good.npz", "--hr-dir", "HR", "--scale", "2"], "not allowed"),
    (["--bicubic", "--self-ensemble", "--hr-dir", "HR", "--scale", "2"], "applies to a model"),
    (["--checkpoint", "broken.npz", "--hr-dir", "HR", "--scale", "2"], "broken.npz is not a valid"),
    (["--checkpoint", "good.npz", "--hr-dir", "HR", "--scale", "3"], "x2 model, --scale is 3"),
])
def test_errors_are_one_line_exit_2(hr_dir, tmp_path, fake_models, capsys, argv, needle):
    (tmp_path / "empty").mkdir()
    argv = [str(hr_dir) if a == "HR" else str(tmp_path / "empty") if a == "EMPTY" else a for a in argv]
    assert _exit_code(argv) == 2
    assert needle in _err_line(capsys)
    assert capsys.readouterr().out == ""
