"""Post-training quantization (python -m fqsr_ref.quantize) and the export tool.

PTQ of imported weights: every interval is the DAIA mean over the calibration batches
(checked against an independent loop computation for the weights and the head), the
checkpoint is one that infer, vectors and evaluate take as it is, its integer model
gives the fake-quantized model's codes, and the float import it also writes is one
that `train --init` fine-tunes.
"""
import dataclasses
import importlib.util
import os

import numpy as np
import pytest

from fqsr_ref import quantize
from fqsr_ref.checkpoint import load_checkpoint
from fqsr_ref.data.dataset import ProceduralSource
from fqsr_ref.data.images import read_image, write_image
from fqsr_ref.importer import import_weights
from fqsr_ref.integer.model import convert
from fqsr_ref.integer.run import run_image
from fqsr_ref.models import Pass, sr_forward, upscale
from fqsr_ref.models.graph import cast_floats

from test_import import DIV2K, conv, edsr_state_dict, fqsr_srresnet_state_dict, save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALIB = ["--calib-batches", "3", "--batch", "2", "--patch", "8"]


def run_quantize(capsys, *args):
    code = quantize.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def edsr_file(tmp_path):
    sd = edsr_state_dict(np.random.default_rng(0), 4, 1, 2)
    return save(tmp_path, {k: v.astype(np.float32) for k, v in sd.items()}), sd


def test_edsr_ptq_intervals_are_daia_means(tmp_path, capsys, edsr_file):
    path, sd = edsr_file
    out = tmp_path / "q.npz"
    code, text, err = run_quantize(capsys, "--weights", path, "--bits", "6/6/8", *CALIB, "--out", out)
    assert code == 0, err
    ckpt = load_checkpoint(str(out))
    cfg = ckpt.config
    assert (cfg.arch, cfg.bits, cfg.blocks, cfg.channels, cfg.pixel_range) == ("edsr", "6/6/8", 1, 4, 255.0)
    p = ckpt.params
    # Weights do not change between batches: the mean of the maxima is max|w|.
    for conv_name, key in (("head", "head.0"), ("blocks.0.conv1", "body.0.body.0"), ("tail", "tail.1")):
        want = np.float32(np.abs(sd[key + ".weight"].astype(np.float32)).max())
        assert p[conv_name + ".w.interval"] == want, conv_name
    # The head output (a float model tensor in 0..255 units: conv(x - m) folded as
    # conv(x) + b - sum(w m), x padded with the mean's codes p = (114, 111, 103) as
    # an import's head is: conv_zero(x - p) + sum(w p)) averaged over the three
    # batches of rng([0, k]).
    w = sd["head.0.weight"].astype(np.float32).astype(np.float64)
    b = sd["head.0.bias"].astype(np.float32).astype(np.float64) - np.einsum("ocij,c->o", w, DIV2K * 255)
    pad = np.array([114.0, 111.0, 103.0])
    maxima = []
    for k in range(3):
        lr, _ = ProceduralSource().sample(np.random.default_rng([0, k]), 2, 8, 2)
        maxima.append(max(np.abs(conv(x.astype(np.float64) * 255 - pad[:, None, None], w,
                                      b + np.einsum("ocij,c->o", w, pad))).max() for x in lr))
    assert p["head.out.interval"] == pytest.approx(np.mean(maxima), rel=1e-5)
    assert int(ckpt.state["head.out.daia_count"]) == 3
    assert "intervals set by DAIA over 3 batches" in text


def test_ptq_checkpoint_runs_everywhere(tmp_path, capsys, edsr_file):
    """infer, vectors and evaluate take the PTQ checkpoint; the integer model gives the
    fake-quantized float model's codes."""
    from fqsr_ref import evaluate, infer
    from fqsr_ref.vectors.cli import main as vectors_main

    path, _ = edsr_file
    out = tmp_path / "q.npz"
    assert run_quantize(capsys, "--weights", path, "--bits", "8/8/8", *CALIB, "--out", out)[0] == 0
    ckpt = load_checkpoint(str(out))
    lr = np.random.default_rng(1).integers(0, 256, (10, 9, 3), dtype=np.uint8)
    fake = upscale(ckpt.config, ckpt.params, ckpt.state, lr)
    integer = run_image(convert(ckpt.config, ckpt.params, ckpt.state), lr, "plain")
    # float32 rounding flips a near-tie code now and then (2 of 540 here since the head
    # pads with the mean's codes); the float64 fake-quantized model gives every code
    diff = np.abs(fake.astype(int) - integer)
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 0.01 * diff.size
    cfg = ckpt.config
    ps = Pass(cast_floats(ckpt.params, np.float64), ckpt.state, cfg, record_codes=True)
    sr_forward(ps, cfg, lr.transpose(2, 0, 1)[None] / 255.0)
    assert np.array_equal(ps.codes["image.out"][0].transpose(1, 2, 0), integer)
    img = tmp_path / "lr.png"
    write_image(str(img), lr)
    assert infer.main(["--checkpoint", str(out), "--image", str(img), "--out", str(tmp_path / "sr.png")]) == 0
    assert np.array_equal(read_image(str(tmp_path / "sr.png")), integer)
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    write_image(str(hr_dir / "a.png"), np.random.default_rng(2).integers(0, 256, (32, 30, 3), dtype=np.uint8))
    assert evaluate.main(["--checkpoint", str(out), "--hr-dir", str(hr_dir), "--scale", "2"]) == 0
    assert vectors_main(["--checkpoint", str(out), "--out", str(tmp_path / "vec"), "--image",
                         str(hr_dir / "a.png"), "--size", "8", "--stimulus-size", "4"]) == 0
    assert os.path.isfile(tmp_path / "vec" / "manifest.json")


def test_srresnet_ptq_folds_bn_and_fine_tunes(tmp_path, capsys):
    """FQSR SRResNet: weight intervals are max|w_fold| (BN folded, Eq. 6); --float-out
    is a full-precision checkpoint that train --init fine-tunes."""
    from fqsr_ref import train

    sd = fqsr_srresnet_state_dict(np.random.default_rng(3), 4, 1)
    path = save(tmp_path, sd)
    out, fp = tmp_path / "q.npz", tmp_path / "fp.npz"
    code, _, err = run_quantize(capsys, "--weights", path, "--scale", "2", "--bits", "4/4/8", *CALIB,
                                "--out", out, "--float-out", fp)
    assert code == 0, err
    p = load_checkpoint(str(out)).params
    r = "residual.0"
    s = sd[f"{r}.in2.weight"] / np.sqrt(sd[f"{r}.in2.running_var"] + 1e-5)
    w_fold = sd[f"{r}.conv2.weight"] * s[:, None, None, None]
    assert p["blocks.0.conv2.w.interval"] == pytest.approx(np.abs(w_fold).max(), rel=1e-6)
    float_ckpt = load_checkpoint(str(fp))
    assert not float_ckpt.config.quantized and float_ckpt.config.scale == 2
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    write_image(str(hr_dir / "a.png"), np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    code = train.main(["--init", str(fp), "--arch", "srresnet", "--scale", "2", "--blocks", "1",
                       "--channels", "4", "--bits", "4/4/8", "--steps", "2", "--warmup-iters", "1",
                       "--batch", "2", "--patch", "8", "--val-dir", str(hr_dir), "--out", str(tmp_path / "qat")])
    assert code == 0
    assert load_checkpoint(str(tmp_path / "qat" / "quant.npz")).config.bits == "4/4/8"


def test_qat_from_an_import_keeps_its_head_padding(tmp_path):
    """train --init of an imported EDSR (head_pad "mean") fine-tunes the same network: the
    padding, like res_scale and block_act, comes with the checkpoint."""
    from fqsr_ref import train
    from fqsr_ref.checkpoint import Checkpoint, save_checkpoint
    from fqsr_ref.models import init_model, preset

    cfg = preset("edsr", 2, blocks=1, channels=4, head_pad="mean", res_scale=0.5, pixel_range=255.0)
    params, state = init_model(cfg, np.random.default_rng(0))
    fp = tmp_path / "fp.npz"
    save_checkpoint(str(fp), Checkpoint(cfg, params, state, {}, {}))
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    write_image(str(hr_dir / "a.png"), np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert train.main(["--init", str(fp), "--arch", "edsr", "--blocks", "1", "--channels", "4", "--bits", "8/8/8",
                       "--steps", "2", "--warmup-iters", "1", "--batch", "2", "--patch", "8",
                       "--val-dir", str(hr_dir), "--out", str(tmp_path / "qat")]) == 0
    q = load_checkpoint(str(tmp_path / "qat" / "quant.npz")).config
    assert (q.head_pad, q.res_scale, q.bits) == ("mean", 0.5, "8/8/8")


def test_ptq_of_an_fqsr_ref_checkpoint(tmp_path, capsys):
    from fqsr_ref.checkpoint import Checkpoint, save_checkpoint
    from fqsr_ref.models import init_model, preset

    cfg = preset("edsr", 3, blocks=1, channels=4, pixel_range=1.0)
    params, state = init_model(cfg, np.random.default_rng(0))
    fp = tmp_path / "fp.npz"
    save_checkpoint(str(fp), Checkpoint(cfg, params, state, {}, {}))
    out = tmp_path / "q.npz"
    assert run_quantize(capsys, "--checkpoint", fp, "--bits", "8/8/8", *CALIB, "--out", out)[0] == 0
    q = load_checkpoint(str(out)).config
    assert (q.scale, q.bits, q.pixel_range) == (3, "8/8/8", 255.0)
    code, _, err = run_quantize(capsys, "--checkpoint", out, "--bits", "8/8/8", "--out", tmp_path / "r.npz")
    assert code == 2 and "a quantized 8/8/8 checkpoint" in err


def test_quantize_refusals_are_one_line(tmp_path, capsys, edsr_file):
    path, sd = edsr_file
    out = tmp_path / "q.npz"
    out.write_bytes(b"")
    cases = [
        (["--weights", path, "--bits", "8/8/8", "--out", out], "exists; give --overwrite"),
        (["--weights", path, "--bits", "32/32/32", "--out", tmp_path / "a.npz"], "nothing to quantize"),
        (["--weights", path, "--bits", "8/8", "--out", tmp_path / "a.npz"], "wt/fm/sc"),
        (["--weights", tmp_path / "m.pth", "--bits", "8/8/8", "--out", tmp_path / "a.npz"], "weights_only=True"),
        (["--weights", path, "--bits", "8/8/8", "--scale", "4", "--out", tmp_path / "a.npz"], "an x2 model"),
        (["--weights", path, "--bits", "8/8/8", "--calib-dir", tmp_path / "none", "--out", tmp_path / "a.npz"],
         "none"),
        (["--weights", path, "--bits", "8/8/8", "--batch", "0", "--out", tmp_path / "a.npz"], "--batch 0"),
    ]
    for args, words in cases:
        code, _, err = run_quantize(capsys, *args)
        err = err.strip()
        assert code == 2 and err.startswith("error:") and "\n" not in err and words in err, (args, err)
    sd = dict(sd)
    del sd["body.0.body.0.weight"], sd["body.0.body.0.bias"]
    bad = save(tmp_path, sd, "bad.safetensors")
    code, _, err = run_quantize(capsys, "--weights", bad, "--bits", "8/8/8", "--out", tmp_path / "a.npz")
    assert code == 2 and "missing key body.0.body.0.weight" in err


def test_export_tool(tmp_path, capsys):
    """tools/export_safetensors.py writes EDSR-PyTorch's keys; a quantized checkpoint is refused."""
    from fqsr_ref.checkpoint import Checkpoint, save_checkpoint
    from fqsr_ref.models import init_model, preset, quantize_model

    spec = importlib.util.spec_from_file_location("export_safetensors",
                                                  os.path.join(ROOT, "tools", "export_safetensors.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = preset("edsr", 4, blocks=2, channels=4, pixel_range=255.0, res_scale=0.1)
    params, state = init_model(cfg, np.random.default_rng(0))
    fp = tmp_path / "fp.npz"
    save_checkpoint(str(fp), Checkpoint(cfg, params, state, {}, {}))
    out = tmp_path / "e.safetensors"
    assert tool.main([str(fp), str(out)]) == 0
    assert "res_scale 0.1" in capsys.readouterr().out
    from safetensors.numpy import load_file
    keys = set(load_file(str(out)))
    assert {"sub_mean.weight", "head.0.weight", "body.1.body.2.bias", "body.2.weight", "tail.0.0.weight",
            "tail.0.2.weight", "tail.1.bias", "add_mean.bias"} <= keys
    # EDSR-PyTorch subtracts the mean before padding: the file imports with head_pad mean
    assert import_weights(str(out), res_scale=0.1).config == dataclasses.replace(cfg, head_pad="mean")
    q_params, q_state = quantize_model(params, state, cfg.with_bits("8/8/8"))
    save_checkpoint(str(tmp_path / "q.npz"), Checkpoint(cfg.with_bits("8/8/8"), q_params, q_state, {}, {}))
    assert tool.main([str(tmp_path / "q.npz"), str(tmp_path / "f.safetensors")]) == 2
    assert "a full-precision EDSR" in capsys.readouterr().err


def test_help_states_every_default(capsys):
    """The command-line contract of tests/test_cli_contract.py, applied to quantize."""
    from test_cli_contract import test_help_states_every_default as contract
    contract("quantize", capsys)
