"""Faults, round 3 (issue 25): every command keeps its contract (exit 2 with one `error:`
line before heavy work, nothing on disk lost) under a full disk, absurd requests,
divergence-prone options and outputs that already exist."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fqsr_ref import evaluate, infer, train, verify
from fqsr_ref.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fqsr_ref.data.images import write_image
from fqsr_ref.models import init_model, preset, quantize_model
from fqsr_ref.trainer import StageOptions, step_bytes_per_lr_pixel, train_step
from fqsr_ref.data.dataset import ProceduralSource


def one_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


TINY_RUN = ["--tiny", "--fp-steps", "4", "--steps", "4", "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (d / "val").mkdir()
    (d / "small").mkdir()
    write_image(str(d / "val" / "a.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    (d / "val" / "b.png").write_bytes((d / "val" / "a.png").read_bytes()[:60])   # truncated
    write_image(str(d / "small" / "a.png"), rng.integers(0, 256, (5, 5, 3), dtype=np.uint8))
    return d


# --- train: refused up front, nothing written ------------------------------------------

@pytest.mark.parametrize("extra,named", [
    (["--lr", "inf"], "--lr inf"), (["--lr", "nan"], "--lr nan"), (["--ft-lr", "inf"], "--ft-lr inf"),
    (["--alpha", "inf"], "--alpha inf"),
    (["--patch", "1000000"], "--patch 1000000"), (["--patch", "5000"], "--patch 5000"),
    (["--batch", "100000000"], "--batch 100000000"),
    (["--train-dir", "{images}/small"], "small"), (["--seed", "-1"], "--seed -1"),
    (["--val-dir", "{images}/val"], "b.png"),
])
def test_train_refuses_before_writing(images, tmp_path, capsys, extra, named):
    out = tmp_path / "run"
    args = TINY_RUN + ["--out", str(out)] + [a.replace("{images}", str(images)) for a in extra]
    assert train.main(args) == 2
    assert named in one_error(capsys.readouterr().err)
    assert not out.exists() or not any(out.glob("*.npz"))


def test_step_memory_estimate_bounds_a_real_step():
    """The probe's bytes per LR pixel, times batch x patch^2, bounds a real step's traced
    peak within 1 to 3 x (the margin is 1.5)."""
    import tracemalloc
    cfg = preset("srresnet", 2, "32/32/32", blocks=2, channels=16)
    params, state = init_model(cfg, np.random.default_rng(0))
    q = cfg.with_bits("4/4/8")
    qp, qs = quantize_model(params, state, q)
    for c, p, s in ((cfg, params, state), (q, qp, qs)):
        opts = StageOptions(steps=1, batch=4, patch=32)
        per_pixel = step_bytes_per_lr_pixel(c, p, s, opts)
        lr, hr = ProceduralSource().sample(np.random.default_rng(1), 4, 32, 2)
        p32 = {k: np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "f" else v for k, v in p.items()}
        train_step(c, p32, s, lr, hr, opts)
        tracemalloc.start()
        try:
            train_step(c, p32, s, lr, hr, opts)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert 1 <= 4 * 32 * 32 * per_pixel / peak <= 3, (c.bits, per_pixel, peak)


# --- train: a full disk at a checkpoint write --------------------------------------------

def full_disk_at(monkeypatch, n: int):
    """os.fsync fails with ENOSPC at its n-th call (save_checkpoint's flush of a new file)."""
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("failing_write", [1, 2, 4])
def test_full_disk_at_a_checkpoint(tmp_path, monkeypatch, capsys, failing_write):
    out = tmp_path / "run"
    full_disk_at(monkeypatch, failing_write)
    assert train.main(TINY_RUN + ["--out", str(out)]) == 2
    err = capsys.readouterr().err     # progress lines, then one error line, no traceback
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and err.count("error:") == 1 and line.startswith("error:")
    assert "No space left on device" in line and "cannot write the checkpoint" in line
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    # writes: fp.npz at steps 0, 2, 4, then quant.npz at 0, 2, 4
    fp_step = {1: None, 2: 0, 4: 4}[failing_write]
    if fp_step is None:
        assert not (out / "fp.npz").exists()
    else:   # the checkpoint before the failing write is intact, and the run resumes from it
        assert load_checkpoint(str(out / "fp.npz")).meta["step"] == fp_step
        assert not (out / "quant.npz").exists()
        monkeypatch.undo()
        assert train.main(TINY_RUN + ["--out", str(out), "--resume"]) == 0


# --- no silent overwrite -----------------------------------------------------------------

@pytest.fixture(scope="module")
def quant_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    fp = preset("srresnet", 2, "32/32/32", blocks=1, channels=4)
    params, state = init_model(fp, np.random.default_rng(0))
    cfg = fp.with_bits("8/8/8")
    params, state = quantize_model(params, state, cfg)
    save_checkpoint(str(d / "q.npz"), Checkpoint(cfg, params, state, {}, {}))
    write_image(str(d / "in.png"), np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return d


def test_infer_never_replaces_silently(quant_ckpt, tmp_path, capsys):
    image = tmp_path / "in.png"
    shutil.copyfile(quant_ckpt / "in.png", image)
    before = image.read_bytes()
    base = ["--checkpoint", str(quant_ckpt / "q.npz"), "--image", str(image)]
    assert infer.main(base + ["--out", str(image), "--overwrite"]) == 2
    assert "is the input image" in one_error(capsys.readouterr().err)
    out = tmp_path / "out.png"
    out.write_bytes(b"keep")
    assert infer.main(base + ["--out", str(out)]) == 2
    assert "exists; give --overwrite" in one_error(capsys.readouterr().err)
    assert out.read_bytes() == b"keep" and image.read_bytes() == before
    assert infer.main(base + ["--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != b"keep"


def test_evaluate_save_images_never_replaces_silently(tmp_path, capsys):
    hr = tmp_path / "hr"
    hr.mkdir()
    write_image(str(hr / "a.png"), np.random.default_rng(2).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    save = tmp_path / "save"
    args = ["--bicubic", "--hr-dir", str(hr), "--scale", "2", "--save-images", str(save)]
    assert evaluate.main(args) == 0
    capsys.readouterr()
    first = (save / "a_x2_sr.png").read_bytes()
    (save / "a_x2_sr.png").write_bytes(b"keep")
    with pytest.raises(SystemExit) as exc:
        evaluate.main(args)
    assert exc.value.code == 2
    assert "a_x2_sr.png" in one_error(capsys.readouterr().err)
    assert (save / "a_x2_sr.png").read_bytes() == b"keep"
    assert evaluate.main(args + ["--overwrite"]) == 0
    assert (save / "a_x2_sr.png").read_bytes() == first


def test_verify_port_that_is_a_file(tmp_path, capsys):
    from fqsr_ref.vectors.sources import bundled_dir
    (tmp_path / "port").write_text("x")
    assert verify.main([str(bundled_dir("8/8/8")), str(tmp_path / "port")]) == 2
    assert "is not a directory" in one_error(capsys.readouterr().err)


def test_files_written_follow_the_umask(tmp_path, quant_ckpt):
    old = os.umask(0o022)
    try:
        save_checkpoint(str(tmp_path / "c.npz"), load_checkpoint(str(quant_ckpt / "q.npz")))
        write_image(str(tmp_path / "i.png"), np.zeros((2, 2, 3), np.uint8))
    finally:
        os.umask(old)
    for name in ("c.npz", "i.png"):
        assert (Path(tmp_path) / name).stat().st_mode & 0o777 == 0o644, name


# --- checkpoints and configs: bounded before the model is built --------------------------

def rewrite(src, dst, change):
    """Copy checkpoint src to dst with change(entries) applied to its arrays (not via
    save_checkpoint, which would refuse what the tests need to write)."""
    with np.load(src, allow_pickle=False) as archive:
        entries = {k: archive[k] for k in archive.files}
    change(entries)
    np.savez(dst, **entries)
    return str(dst)


def set_config(**fields):
    import json

    def change(entries):
        entries["config"] = np.array(json.dumps({**json.loads(str(entries["config"])), **fields}))
    return change


def set_param(key, value):
    def change(entries):
        entries[f"param/{key}"] = value(entries[f"param/{key}"])
    return change


@pytest.mark.parametrize("change,named", [
    (set_config(channels=4000), "4000 channels"),
    (set_config(channels=10 ** 9), "channels 1000000000 must be in"),
    (set_config(blocks=10 ** 6), "blocks 1000000 and channels"),
    (set_config(channels="16"), "channels is '16', expected an integer"),
    (set_param("head.w", lambda w: np.where(np.arange(w.size).reshape(w.shape) == 5, np.inf, w)), "holds inf at flat index 5"),
    (set_param("head.w", lambda w: w.astype(np.float16)), "param/head.w is float16"),
    (set_param("head.w", lambda w: np.full_like(w, np.nan)), "param/head.w holds nan"),
    (set_param("head.out.interval", lambda v: np.zeros_like(v)), "param/head.out.interval is 0.0"),
])
def test_checkpoint_refused_before_building(quant_ckpt, tmp_path, capsys, change, named):
    import time
    path = rewrite(quant_ckpt / "q.npz", tmp_path / "bad.npz", change)
    t0 = time.perf_counter()
    assert infer.main(["--checkpoint", path, "--image", str(quant_ckpt / "in.png"),
                       "--out", str(tmp_path / "out.png")]) == 2
    assert time.perf_counter() - t0 < 10
    line = one_error(capsys.readouterr().err)
    assert named in line and "bad.npz" in line, line


def test_conv_weight_count_is_the_models():
    from fqsr_ref.models import layer_specs
    from fqsr_ref.models.srnet import conv_weight_count
    for arch, scale in (("srresnet", 2), ("edsr", 3), ("fqsr_lite", 4), ("srgan", 4)):
        cfg = preset(arch, scale, "32/32/32", blocks=3, channels=8)
        L = layer_specs(cfg)
        specs = [L.head, *[c for pair in L.blocks for c in pair], L.trunk, *L.up, L.tail]
        assert conv_weight_count(cfg) == sum(s.cin * s.cout * s.k * s.k for s in specs)


@pytest.mark.parametrize("extra,named", [
    (["--channels", "60000"], "optimizer state alone need"), (["--channels", "1000000000"], "--channels 1000000000"),
])
def test_train_refuses_huge_models(tmp_path, capsys, extra, named):
    assert train.main(TINY_RUN + ["--out", str(tmp_path / "run")] + extra) == 2
    assert named in one_error(capsys.readouterr().err)


def test_evaluate_names_an_image_smaller_than_the_scale(tmp_path, capsys):
    hr = tmp_path / "hr"
    hr.mkdir()
    write_image(str(hr / "tiny.png"), np.zeros((1, 1, 3), np.uint8))
    assert evaluate.main(["--bicubic", "--hr-dir", str(hr), "--scale", "2"]) == 2
    assert "tiny.png" in one_error(capsys.readouterr().err)


def test_full_disk_while_vectors_are_written(tmp_path, monkeypatch, capsys):
    """The disk fills after some files of a new set: the command exits 2 with one line,
    the previous set is intact and no temporary directory is left."""
    from fqsr_ref.vectors import cli
    from fqsr_ref.vectors.sources import bundled_dir
    out = tmp_path / "set"
    assert cli.main(["--regenerate", str(bundled_dir("8/8/8")), "--out", str(out)]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls = {"n": 0}
    real = Path.write_bytes

    def write_bytes(self, data):
        calls["n"] += 1
        if calls["n"] == 40:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)
    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    capsys.readouterr()
    assert cli.main(["--regenerate", str(bundled_dir("8/8/8")), "--out", str(out)]) == 2
    assert "No space left on device" in one_error(capsys.readouterr().err)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_half_precision_safetensors_named(tmp_path, capsys):
    """A float16 file is refused naming the tensor (it used to read as 'another rgb_mean'),
    and a damaged file gets no unrelated bfloat16 hint."""
    from safetensors.numpy import save_file
    from fqsr_ref.importer import read_safetensors
    save_file({"head.weight": np.zeros((4, 3, 3, 3), np.float16)}, str(tmp_path / "h.safetensors"))
    with pytest.raises(ValueError, match=r"h\.safetensors: head\.weight is float16; save the weights as float32"):
        read_safetensors(tmp_path / "h.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + b"{not json")
    with pytest.raises(ValueError) as exc:
        read_safetensors(tmp_path / "junk.safetensors")
    assert "not a readable .safetensors file" in str(exc.value) and "bfloat16" not in str(exc.value)
