"""Whole-model tests: shapes, float64 gradient checks, BN folding, quantizer sites."""
import numpy as np
import pytest

from fqsr_ref.models import Pass, init_model, preset, quantize_model, sr_backward, sr_forward
from gradcheck import numeric_grad


def tiny(arch="srresnet", scale=2, bits="32/32/32", **kw):
    return preset(arch, scale, bits, blocks=kw.pop("blocks", 1), channels=kw.pop("channels", 3), **kw)


def run_pass(cfg, params, state, x, **kw):
    ps = Pass(params, state, cfg, **kw)
    y, cache = sr_forward(ps, cfg, x)
    return ps, y, cache


@pytest.mark.parametrize("arch", ["srresnet", "edsr", "fqsr_lite", "srgan"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_and_dtype(arch, scale):
    cfg = tiny(arch, scale, "4/4/8")
    params, state = init_model(cfg, np.random.default_rng(0))
    x = np.random.default_rng(1).random((2, 3, 5, 4)).astype(np.float32)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    _, y, _ = run_pass(cfg, params, state, x)
    assert y.shape == (2, 3, 5 * scale, 4 * scale) and y.dtype == np.float32


@pytest.mark.parametrize("arch,bits", [("srresnet", "32/32/32"), ("edsr", "4/4/8"), ("fqsr_lite", "8/8/8")])
def test_inference_forward_drops_the_cache_and_computes_the_same(arch, bits):
    cfg = tiny(arch, 2, bits)
    params, state = init_model(cfg, np.random.default_rng(0))
    if cfg.quantized:   # intervals from one DAIA pass, so that the codes are not all saturated
        ps, _, _ = run_pass(cfg, params, state, np.random.default_rng(2).random((1, 3, 6, 6)),
                            training=True, warmup=1)
        params = {**params, **{k: np.asarray(v) for k, v in ps.interval_init.items()}}
    x = np.random.default_rng(1).random((2, 3, 5, 4))
    _, kept, cache = run_pass(cfg, params, state, x)
    _, dropped, none = run_pass(cfg, params, state, x, keep_cache=False)
    assert cache is not None and none is None
    np.testing.assert_array_equal(dropped, kept)


def model_gradcheck(cfg, params, state, x, training, **pass_kw):
    """Check every parameter's gradient of sum(sr * dout) + SQCL against centred differences."""
    rng = np.random.default_rng(7)
    ps, y, cache = run_pass(cfg, params, state, x, training=training, **pass_kw)
    dout = rng.standard_normal(y.shape)
    sr_backward(ps, dout, cache)

    def loss():
        qs, yy, _ = run_pass(cfg, params, state, x, training=training, **pass_kw)
        return float(np.sum(yy * dout)) + qs.sqcl

    assert set(ps.grads) <= set(params)
    for key in sorted(params):
        analytic = ps.grads.get(key, np.zeros_like(params[key]))
        # h = 1e-5: in the authors' pixel units (0..255) activations are 255x larger
        # and rounding noise, not truncation, limits the quotient at h = 1e-6.
        numeric = numeric_grad(loss, params[key], h=1e-5)
        # Norm-wise relative error: a whole model's loss is a sum over many outputs,
        # so the difference quotient carries ~1e-10 * |L| of rounding noise on every
        # element; measured against the tensor's gradient norm that noise is < 1e-8.
        err = np.linalg.norm(analytic - numeric) / max(np.linalg.norm(analytic), np.linalg.norm(numeric), 1e-12)
        assert err < 1e-6, f"{cfg.arch} {cfg.bits} {key}: relative error {err:.2e}"


@pytest.mark.parametrize("arch,scale,pixel_range,kw", [
    ("srresnet", 2, 255.0, {}), ("edsr", 3, 255.0, {}), ("srresnet", 2, 1.0, {}),
    ("edsr", 2, 255.0, {"block_act": "prelu"}),    # the FQSR authors' EDSR (--keyword PReLU)
    ("edsr", 2, 1.0, {"head_pad": "mean"})])       # the head pads with the mean's codes
def test_full_precision_gradients(arch, scale, pixel_range, kw):
    cfg = tiny(arch, scale, pixel_range=pixel_range, **kw)
    params, state = init_model(cfg, np.random.default_rng(0))
    params = {k: (v + 1 if k.endswith("gamma") else v) for k, v in params.items()}
    x = np.random.default_rng(1).random((2, 3, 4, 3))
    # training=True: batch-norm uses batch statistics, which the check must differentiate.
    model_gradcheck(cfg, params, state, x, training=True)


# Eq. 7's ReLU sits on quantized values, and the narrow grid has 0 as a level, so
# with the ReLU a finite difference straddles its kink wherever a code is 0; the
# dorefa grid has no zero level, so the ReLU case is checked on it.
# bn_fold "requant": BN's scale after the quantized conv, one gamma negative.
@pytest.mark.parametrize("bits,branch_relu,grid,bn_fold", [("4/4/8", True, "dorefa", "weights"),
                                                           ("6/8/8", False, "narrow", "weights"),
                                                           ("6/8/8", False, "narrow", "requant")])
def test_quantized_gradients_through_ste(bits, branch_relu, grid, bn_fold):
    """Quantized SRResNet with BN folded, SQCL on: the model chains the STE gradients
    (the quantizer is linearised at the base point, see linearized_quantize)."""
    fp_cfg = tiny("srresnet", 2, branch_relu=branch_relu, grid=grid, bn_fold=bn_fold)
    params, state = init_model(fp_cfg, np.random.default_rng(0))
    cfg = fp_cfg.with_bits(bits)
    params, state = quantize_model(params, state, cfg)
    # Non-trivial BN statistics and shifts: with beta = mean = 0 a conv channel whose
    # weights all quantize to 0 outputs exactly 0, on PReLU's kink.
    rng = np.random.default_rng(2)
    for key in state:
        if key.endswith("bn_var") or key.endswith("bn_mean"):
            state[key] = state[key] + rng.random(state[key].shape) * 0.5
    for key in params:
        if key.endswith(".beta"):
            params[key] = rng.standard_normal(params[key].shape) * 0.1
        if key.endswith(".gamma"):
            params[key] = 1 + rng.standard_normal(params[key].shape) * 0.1
            params[key][0] *= -1 if bn_fold == "requant" else 1
    x = np.random.default_rng(1).random((2, 3, 4, 3))
    # One DAIA pass (warm-up l = 1) gives every interval its Eq. 4 start; shrunk by
    # 0.9 so that no element sits exactly on a clip bound (a kink of Q).
    ps, _, _ = run_pass(cfg, params, state, x, training=True, warmup=1)
    params = {**params, **{k: np.array(0.9 * v) for k, v in ps.interval_init.items()}}
    state = {**state, **ps.new_state}
    assert len(ps.interval_init) == sum(k.endswith(".interval") for k in params)
    # Codes times codes plus a bias on the accumulator grid is an exact multiple of
    # s_acc, so a PReLU input can sit exactly on its kink at 0 (it does here, in up.0).
    # The check freezes each bias's rounding offset; freeze it off the grid instead.
    scratch = {}
    run_pass(cfg, params, state, x, training=True, warmup=1, linearize=scratch)
    offsets = {k: v + rng.uniform(0.05, 0.1, v.shape) * rng.choice([-1, 1], v.shape)
               for k, v in scratch.items() if k.endswith(".bias")}
    model_gradcheck(cfg, params, state, x, training=True, warmup=1, alpha=0.3, linearize=offsets)


def test_quantized_model_carries_codes():
    """Fully quantized: every site records codes within its bits, the image output is 8-bit."""
    cfg = tiny("srresnet", 2, "4/4/8", blocks=2, channels=4)
    params, state = init_model(cfg, np.random.default_rng(0))
    x = np.random.default_rng(1).random((1, 3, 6, 6))
    ps = Pass(params, state, cfg, record_codes=True)
    y, _ = sr_forward(ps, cfg, x)
    assert np.array_equal(np.round(y * 255), y * 255) or np.allclose(y * 255, np.round(y * 255))
    assert "image.out" in ps.codes and ps.codes["image.out"].max() <= 255
    for site, codes in ps.codes.items():
        assert codes is not None, site
        bits = 8 if site.startswith("image") or site.endswith("add.out") or site == "head.out" else 4
        assert np.abs(codes).max() < 2 ** bits, site
    # Every conv has quantized weights, outputs; the skips (head out, adds) are sc bits.
    for name in ("head", "blocks.0.conv1", "blocks.1.conv2", "trunk", "up.0", "tail"):
        assert f"{name}.w" in ps.codes
    assert "blocks.0.conv1.in" in ps.codes      # 8-bit skip read at 4 bits
    assert "blocks.0.conv2.in" not in ps.codes  # same width: read as is


@pytest.mark.parametrize("bn_fold", ["weights", "requant"])
def test_fold_matches_bn_eval(bn_fold):
    """The folded graph (quantized training, Eq. 6) equals conv + BN(eval) of the FP
    model to 1e-10 in float64 when nothing is quantized, BN's scale folded into the
    weights or applied after the conv (bn_fold "requant"; some gammas negative)."""
    cfg = tiny("srresnet", 2, blocks=2, channels=3, bn_fold=bn_fold)
    params, state = init_model(cfg, np.random.default_rng(0))
    rng = np.random.default_rng(3)
    for key in state:
        if key.endswith("bn_var"):
            state[key] = rng.random(state[key].shape) + 0.5
        elif key.endswith("bn_mean"):
            state[key] = rng.standard_normal(state[key].shape) * 0.1
    for key in params:
        if key.endswith(".gamma"):   # "requant": some negative (a sign flip per channel)
            spread = rng.standard_normal(params[key].shape)
            params[key] = spread if bn_fold == "requant" else 1 + 0.1 * spread
    x = rng.random((2, 3, 5, 5))
    _, y_eval, _ = run_pass(cfg, params, state, x)
    folded = Pass(params, state, cfg)
    folded.fold_bn = True
    y_fold, _ = sr_forward(folded, cfg, x)
    assert np.max(np.abs(y_eval - y_fold)) < 1e-10


def test_bn_fold_requant_is_stored_only_when_set_and_refused_by_the_integer_model():
    from fqsr_ref.integer.model import convert
    from fqsr_ref.models.config import ModelConfig

    assert "bn_fold" not in tiny("srresnet", 2, "4/4/8").to_json()
    cfg = tiny("srresnet", 2, "4/4/8", bn_fold="requant")
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="bn_fold 'requant' needs batch norm"):
        tiny("edsr", 2, bn_fold="requant")
    params, state = quantize_model(*init_model(cfg, np.random.default_rng(0)), cfg)
    with pytest.raises(ValueError, match="bn_fold 'requant' .* one multiplier per channel"):
        convert(cfg, params, state)


def test_block_act_is_stored_only_when_set():
    """Configs written before block_act existed load as ReLU blocks, and a ReLU EDSR's
    JSON (checkpoints, vector manifests) keeps its bytes; PReLU blocks carry a slope."""
    from fqsr_ref.models.config import ModelConfig

    relu = preset("edsr", 2, blocks=1, channels=3)
    assert "block_act" not in relu.to_json()
    old = relu.to_json()
    assert ModelConfig.from_json(old).block_act == "relu"
    prelu = preset("edsr", 2, blocks=1, channels=3, block_act="prelu")
    assert ModelConfig.from_json(prelu.to_json()) == prelu
    params, _ = init_model(prelu, np.random.default_rng(0))
    assert params["blocks.0.conv1.prelu"].shape == (1,)
    with pytest.raises(ValueError, match="block_act 'prelu' is EDSR's option"):
        preset("srresnet", 2, block_act="prelu")
    with pytest.raises(ValueError, match="block_act 'gelu'"):
        preset("edsr", 2, block_act="gelu")
