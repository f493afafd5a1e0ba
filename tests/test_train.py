"""The trainer: resume after a kill gives the same result, divergence stops cleanly,
bad options are one-line errors; the --tiny quality targets (slow)."""
import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fqsr_ref.checkpoint import load_checkpoint, save_checkpoint
from fqsr_ref.data.dataset import ProceduralSource
from fqsr_ref.models import init_model, preset, quantize_model
from fqsr_ref.train import main as train_main
from fqsr_ref.trainer import StageOptions, train_stage
from test_integer_model import assert_codes_agree, code_differences, photo_crop

def micro_args(out, *extra, val_dir):
    """A 4-channel, 1-block SRResNet on 8x8 patches: seconds per run."""
    return ["--arch", "srresnet", "--bits", "8/8/8", "--out", str(out), "--blocks", "1",
            "--channels", "4", "--batch", "2", "--patch", "8", "--warmup-iters", "2",
            "--val-dir", val_dir, *extra]


def assert_same_checkpoint(a, b):
    assert a.meta["step"] == b.meta["step"]
    for section in ("params", "state", "adam"):
        da, db = getattr(a, section), getattr(b, section)
        assert sorted(da) == sorted(db), section
        for key in da:
            assert np.array_equal(da[key], db[key]), f"{section} {key} differs after resume"


@pytest.fixture
def val_dir(tmp_path):
    from fqsr_ref.data import photos_dir
    from fqsr_ref.data.images import list_images, read_image, write_image
    d = tmp_path / "val"
    d.mkdir()
    write_image(str(d / "crop.png"), read_image(list_images(photos_dir())[0])[:24, :24])
    return str(d)


def test_resume_after_interruption_is_exact(tmp_path):
    """Stop a quantized stage after 3 of 7 steps (the state a kill leaves: the last
    checkpoint), resume it, and compare with an uninterrupted run bit for bit."""
    cfg = preset("srresnet", 2, "32/32/32", blocks=1, channels=4).with_bits("4/4/8")
    params, state = quantize_model(*init_model(cfg.with_bits("32/32/32"), np.random.default_rng(0)), cfg)
    opts = StageOptions(steps=7, batch=2, patch=8, warmup=2, checkpoint_every=1, stage="quant")
    quiet = dict(log=lambda line: None)
    full = train_stage(cfg, params, state, ProceduralSource(), opts, str(tmp_path / "a.npz"), **quiet)
    train_stage(cfg, params, state, ProceduralSource(), opts, str(tmp_path / "b.npz"), stop_after=3, **quiet)
    assert load_checkpoint(str(tmp_path / "b.npz")).meta["step"] == 3
    resumed = train_stage(cfg, params, state, ProceduralSource(), opts, str(tmp_path / "b.npz"),
                          resume=True, **quiet)
    assert_same_checkpoint(full, resumed)


def test_kill_and_resume_from_the_command_line(tmp_path, val_dir):
    """SIGKILL a real training process once its quantized stage has checkpointed,
    then --resume: the final checkpoints equal those of an uninterrupted run."""
    steps = ["--fp-steps", "3", "--steps", "150", "--checkpoint-every", "1"]
    assert train_main(micro_args(tmp_path / "full", *steps, val_dir=val_dir)) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fqsr_ref.train", *micro_args(out, *steps, val_dir=val_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "quant.npz").exists() and load_checkpoint(str(out / "quant.npz")).meta["step"] >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = load_checkpoint(str(out / "quant.npz")).meta["step"]
    assert 0 < interrupted_at < 150, "the kill must land inside the quantized stage"
    assert train_main(micro_args(out, *steps, "--resume", val_dir=val_dir)) == 0
    for name in ("fp.npz", "quant.npz"):
        assert_same_checkpoint(load_checkpoint(str(tmp_path / "full" / name)),
                               load_checkpoint(str(out / name)))
    assert not [f for f in os.listdir(out) if ".tmp-" in f]   # a killed write leaves none behind
    print(f"killed at quantized step {interrupted_at} of 150")


def test_divergence_stops_and_keeps_the_last_checkpoint(tmp_path, val_dir, capsys):
    code = train_main(micro_args(tmp_path, "--bits", "32/32/32", "--steps", "5", "--lr", "1e30",
                                 val_dir=val_dir))
    err = capsys.readouterr().err
    assert code == 1 and "diverged" in err and "Traceback" not in err
    ckpt = load_checkpoint(str(tmp_path / "fp.npz"))
    assert all(np.all(np.isfinite(v)) for v in ckpt.params.values())


@pytest.mark.parametrize("args,message", [
    (["--bits", "4/4"], "expected wt/fm/sc"),
    (["--bits", "4/4/20"], "not in 1..16 or 32"),
    (["--train-dir", "/nonexistent/dir"], "/nonexistent/dir"),
    (["--val-dir", "/nonexistent/val"], "/nonexistent/val"),
    (["--tiny", "--bits", "4/4"], "expected wt/fm/sc"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    assert train_main(["--out", str(tmp_path), "--steps", "1", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1


def test_progress_line_and_outputs(tmp_path, val_dir, capsys):
    assert train_main(micro_args(tmp_path, "--fp-steps", "2", "--steps", "25", val_dir=val_dir)) == 0
    captured = capsys.readouterr()
    assert "quant step 25/25" in captured.err and "steps/s" in captured.err and "left" in captured.err
    assert "sqcl" in captured.err and "bicubic" in captured.out
    assert (tmp_path / "val_crop.png").exists()


def tiny_rows(out):
    """{"full": dB, "quantized": dB} over bicubic from the train command's report."""
    return {line.split()[0]: float(line.split()[-2]) for line in out.splitlines()
            if line.startswith(("full", "quantized"))}


@pytest.mark.slow
def test_tiny_beats_bicubic_and_8bit_matches_full_precision(tmp_path, capsys):
    """The README's main job. Slow: about two minutes on 2 cores."""
    assert train_main(["--tiny", "--strict", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = tiny_rows(out)
    assert rows["quantized"] > 0.8, out            # dB over bicubic on unseen photographs
    assert rows["full"] - rows["quantized"] < 0.2, out
    # The integer model of the trained tiny model, on a 64x64 photograph (issue 6).
    ckpt = load_checkpoint(str(tmp_path / "quant.npz"))
    assert_codes_agree(code_differences(ckpt.config, ckpt.params, ckpt.state, photo_crop(64)))


@pytest.mark.slow
def test_tiny_low_bit_beats_bicubic(tmp_path, capsys):
    """`--tiny --bits 4/4/8`: under five minutes on 2 cores."""
    assert train_main(["--tiny", "--bits", "4/4/8", "--strict", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert tiny_rows(out)["quantized"] > 0, out


# Issue 12: --init/--resume must match, --out is never overwritten silently nor
# shared, and bad numbers are refused before any work.

TINY_RUN = ["--fp-steps", "2", "--steps", "3"]


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def fp_checkpoint(tmp_path, val_dir):
    """fp.npz of a 1-block 4-channel SRResNet."""
    out = tmp_path / "first"
    assert train_main(micro_args(out, *TINY_RUN, val_dir=val_dir)) == 0
    return str(out / "fp.npz")


@pytest.mark.parametrize("change,message", [
    (["--blocks", "2"], "--blocks 2 but"),
    (["--channels", "8"], "--channels 8 but"),
    (["--arch", "edsr"], "--arch edsr but"),
    (["--scale", "4"], "--scale 4 but"),
])
def test_init_refuses_another_architecture(tmp_path, val_dir, capsys, fp_checkpoint, change, message):
    capsys.readouterr()
    out = tmp_path / "second"
    assert train_main(micro_args(out, *TINY_RUN, "--init", fp_checkpoint, *change, val_dir=val_dir)) == 2
    err = one_line_error(capsys, message, fp_checkpoint)
    assert "has 1" in err or "has 4" in err or "has srresnet" in err or "has 2" in err
    assert not out.exists()


def test_init_refuses_a_quantized_checkpoint(tmp_path, val_dir, capsys, fp_checkpoint):
    quant = fp_checkpoint.replace("fp.npz", "quant.npz")
    capsys.readouterr()
    assert train_main(micro_args(tmp_path / "second", *TINY_RUN, "--init", quant, val_dir=val_dir)) == 2
    one_line_error(capsys, "quantized 8/8/8", "full-precision")


def test_init_with_a_matching_checkpoint_runs(tmp_path, val_dir, fp_checkpoint):
    out = tmp_path / "second"
    assert train_main(micro_args(out, *TINY_RUN, "--init", fp_checkpoint, val_dir=val_dir)) == 0
    assert (out / "quant.npz").exists() and not (out / "fp.npz").exists()


def test_init_keeps_the_residual_scaling(tmp_path, val_dir):
    """An EDSR brought by --init with res_scale 0.5 (an import's --res-scale) is fine-tuned,
    saved and run as that network, not as one with res_scale 1."""
    first = tmp_path / "first"
    assert train_main(micro_args(first, *TINY_RUN, "--arch", "edsr", val_dir=val_dir)) == 0
    fp = load_checkpoint(first / "fp.npz")
    scaled = tmp_path / "scaled.npz"
    save_checkpoint(scaled, fp._replace(config=dataclasses.replace(fp.config, res_scale=0.5)))
    out = tmp_path / "second"
    assert train_main(micro_args(out, *TINY_RUN, "--arch", "edsr", "--init", str(scaled),
                                 val_dir=val_dir)) == 0
    assert load_checkpoint(out / "quant.npz").config.res_scale == 0.5


@pytest.mark.parametrize("change,message", [
    (["--batch", "3"], "--batch 3 but"),
    (["--patch", "10"], "--patch 10 but"),
    (["--lr", "0.002"], "--lr 0.002 but"),
    (["--ft-lr", "0.002"], "--ft-lr 0.002 but"),
    (["--alpha", "0.5"], "--alpha 0.5 but"),
    (["--warmup-iters", "1"], "--warmup-iters 1 but"),
    (["--seed", "7"], "--seed 7 but"),
    (["--steps", "4"], "--steps 4 but"),
    (["--fp-steps", "5"], "--fp-steps 5 but"),
])
def test_resume_refuses_other_training_options(tmp_path, val_dir, capsys, fp_checkpoint, change, message):
    out = tmp_path / "first"
    before = {n: (out / n).read_bytes() for n in ("fp.npz", "quant.npz")}
    capsys.readouterr()
    assert train_main(micro_args(out, *TINY_RUN, "--resume", *change, val_dir=val_dir)) == 2
    one_line_error(capsys, message, "was written with")
    assert before == {n: (out / n).read_bytes() for n in before}


def test_existing_checkpoints_need_resume_or_overwrite(tmp_path, val_dir, capsys, fp_checkpoint):
    out = tmp_path / "first"
    before = (out / "quant.npz").read_bytes()
    capsys.readouterr()
    assert train_main(micro_args(out, *TINY_RUN, "--seed", "5", val_dir=val_dir)) == 2
    one_line_error(capsys, str(out), "fp.npz", "--resume", "--overwrite")
    assert (out / "quant.npz").read_bytes() == before
    assert train_main(micro_args(out, *TINY_RUN, "--resume", val_dir=val_dir)) == 0
    assert train_main(micro_args(out, *TINY_RUN, "--seed", "5", "--overwrite", val_dir=val_dir)) == 0
    assert load_checkpoint(str(out / "quant.npz")).meta["options"]["seed"] == 5


def test_out_is_locked_while_a_run_writes(tmp_path, val_dir, capsys):
    import fcntl
    out = tmp_path / "locked"
    out.mkdir()
    with open(out / ".lock", "w") as held:      # what a running training holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert train_main(micro_args(out, *TINY_RUN, val_dir=val_dir)) == 2
        one_line_error(capsys, str(out), "another training run")
        assert not (out / "fp.npz").exists()
    assert train_main(micro_args(out, *TINY_RUN, val_dir=val_dir)) == 0   # released


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "--steps 0"),
    (["--steps", "-5"], "--steps -5"),
    (["--fp-steps", "-1"], "--fp-steps -1"),
    (["--batch", "0"], "--batch 0"),
    (["--patch", "0"], "--patch 0"),
    (["--checkpoint-every", "0"], "--checkpoint-every 0"),
    (["--lr", "0"], "--lr 0"),
    (["--ft-lr=-1e-3"], "--ft-lr -0.001"),
    (["--lr", "nan"], "--lr nan"),
    (["--alpha", "-0.1"], "--alpha -0.1"),
    (["--warmup-iters", "-1"], "--warmup-iters -1"),
])
def test_bad_numbers_are_refused_before_any_work(tmp_path, val_dir, capsys, args, message):
    out = tmp_path / "run"
    assert train_main(micro_args(out, *TINY_RUN, *args, val_dir=val_dir)) == 2
    one_line_error(capsys, message)
    assert not out.exists()


def test_out_that_is_a_file(tmp_path, val_dir, capsys):
    out = tmp_path / "a_file"
    out.write_text("keep me")
    assert train_main(micro_args(out, *TINY_RUN, val_dir=val_dir)) == 2
    one_line_error(capsys, str(out), "not a folder")
    assert out.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_that_is_read_only(tmp_path, val_dir, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert train_main(micro_args(out, *TINY_RUN, val_dir=val_dir)) == 2
        one_line_error(capsys, str(out))
    finally:
        out.chmod(0o700)


def test_bn_fold_requant_trains_and_is_recorded(tmp_path, val_dir, capsys):
    """--bn-fold requant (BN's scale after the quantized conv) trains end to end and is
    recorded in the checkpoint; EDSR (no BN) refuses it before any work."""
    out = tmp_path / "requant"
    assert train_main(micro_args(out, *TINY_RUN, "--bn-fold", "requant", val_dir=val_dir)) == 0
    assert load_checkpoint(out / "quant.npz").config.bn_fold == "requant"
    capsys.readouterr()
    edsr = tmp_path / "edsr"
    assert train_main(micro_args(edsr, *TINY_RUN, "--arch", "edsr", "--bn-fold", "requant", val_dir=val_dir)) == 2
    one_line_error(capsys, "--bn-fold requant", "EDSR has no batch norm")
    assert not edsr.exists()
