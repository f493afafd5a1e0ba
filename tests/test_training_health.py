"""Every parameter learns: short runs of both stages in which every parameter receives
a gradient and moves, for every architecture, bit configuration, grid and add; and
the watcher that names a parameter that never does.

A gradient check proves a gradient right, not that it is ever non-zero: a residual
branch closed by a zero BN gamma behind Eq. 7's ReLU passes every check and never
learns (ReLU'(0) = 0). These runs catch that.
"""
import dataclasses

import numpy as np
import pytest

from fqsr_ref.data.dataset import ProceduralSource
from fqsr_ref.models import init_model, preset, quantize_model, quantized_start
from fqsr_ref.models.discriminator import disc_init
from fqsr_ref.train import main as train_main
from fqsr_ref.trainer import DEAD_WINDOW, DeadParameters, StageOptions, train_stage

WARMUP = 2
QUIET = dict(log=lambda line: None)


def stage(cfg, params, state, path, stage_name, steps):
    opts = StageOptions(steps=steps, batch=2, patch=8, warmup=WARMUP, checkpoint_every=10_000,
                        stage=stage_name, strict=True)
    return train_stage(cfg, params, state, ProceduralSource(), opts, str(path), **QUIET)


def assert_all_moved(before: dict, after: dict, what: str):
    still = [k for k in before if np.array_equal(np.asarray(before[k], np.float32), after[k])]
    assert not still, f"{what}: parameters that never moved: {still}"


def fp_then_quant(tmp_path, arch, bits, grid="narrow", branch_relu=False):
    """The flow of `python -m fqsr_ref.train`: FP on [0, 1], then fine-tuning on 0..255."""
    fp_cfg = preset(arch, 2, "32/32/32", blocks=2, channels=4, grid=grid, pixel_range=1.0)
    params, state = init_model(fp_cfg, np.random.default_rng(0))
    if arch == "srgan":
        d_params, d_state = disc_init(np.random.default_rng(1), channels=2, stages=1)
        params, state = {**params, **d_params}, {**state, **d_state}
    # strict: a parameter with a zero gradient through the watch window raises.
    fp = stage(fp_cfg, params, state, tmp_path / "fp.npz", "fp", DEAD_WINDOW + 5)
    assert_all_moved(params, fp.params, f"{arch} full precision")
    if bits == "32/32/32":
        return
    q_cfg = dataclasses.replace(fp_cfg.with_bits(bits), pixel_range=255.0, branch_relu=branch_relu)
    params, state = quantized_start(fp_cfg, fp.params, fp.state, q_cfg)
    q = stage(q_cfg, params, state, tmp_path / "quant.npz", "quant", WARMUP + DEAD_WINDOW + 5)
    after_warmup = {k: v for k, v in params.items() if not k.endswith(".interval")}
    assert_all_moved(after_warmup, q.params, f"{arch} {bits} {grid}")


@pytest.mark.parametrize("arch", ["srresnet", "edsr", "fqsr_lite", "srgan"])
@pytest.mark.parametrize("bits", ["32/32/32", "8/8/8", "4/4/8"])
def test_every_parameter_learns(tmp_path, arch, bits):
    fp_then_quant(tmp_path, arch, bits)


@pytest.mark.parametrize("grid,branch_relu", [("dorefa", False), ("narrow", True), ("dorefa", True)])
def test_every_parameter_learns_on_both_grids_and_adds(tmp_path, grid, branch_relu):
    fp_then_quant(tmp_path, "srresnet", "4/4/8", grid, branch_relu)


def dead_branch_model():
    """Eq. 7's ReLU over a branch whose BN gamma is 0: the branch is exactly 0, and so
    is every gradient into conv2, its BN and conv1's PReLU (the bug of the first trainer;
    conv1's weights still see their SQCL terms)."""
    cfg = preset("srresnet", 2, "8/8/8", blocks=1, channels=4, branch_relu=True)
    params, state = init_model(cfg.with_bits("32/32/32"), np.random.default_rng(0))
    return cfg, *quantize_model(params, state, cfg)


def test_watcher_names_a_dead_parameter(tmp_path):
    cfg, params, state = dead_branch_model()
    lines = []
    opts = StageOptions(steps=WARMUP + DEAD_WINDOW + 2, batch=2, patch=8, warmup=WARMUP,
                        checkpoint_every=10_000, stage="quant")
    train_stage(cfg, params, state, ProceduralSource(), opts, str(tmp_path / "q.npz"),
                log=lines.append)
    warned = [line for line in lines if line.startswith("warning:")]
    named = {line.split("parameter ")[1].split()[0] for line in warned}
    assert {"blocks.0.conv2.w", "blocks.0.conv2.gamma", "blocks.0.conv1.prelu"} <= named, warned
    assert "head.w" not in named and len(warned) == len(named)   # one line per parameter
    with pytest.raises(DeadParameters, match="blocks.0.conv2.w"):
        train_stage(cfg, params, state, ProceduralSource(), dataclasses.replace(opts, strict=True),
                    str(tmp_path / "strict.npz"), **QUIET)


def test_strict_from_the_command_line(tmp_path, capsys):
    """No pretraining (gamma stays 0) with Eq. 7's ReLU: --strict stops with one line."""
    code = train_main(["--bits", "8/8/8", "--branch-relu", "--blocks", "1", "--channels", "4",
                       "--batch", "2", "--patch", "8", "--warmup-iters", "2", "--fp-steps", "0",
                       "--steps", str(DEAD_WINDOW + 5), "--strict", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "never received a gradient" in err and "Traceback" not in err
    assert "blocks.0.conv2.gamma" in err
