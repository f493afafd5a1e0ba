"""SRGAN: the BCE-with-logits loss, global average pooling, the discriminator and
srgan_step, gradient-checked in float64."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fqsr_ref.models import Pass, init_model, preset, quantize_model, sr_backward, sr_forward
from fqsr_ref.models.discriminator import disc_backward, disc_convs, disc_forward, disc_init
from fqsr_ref.models.srgan import srgan_step
from fqsr_ref.ops import mse_backward, mse_forward
from fqsr_ref.ops.adversarial import (bce_logits_backward, bce_logits_forward,
                                      global_avg_pool_backward, global_avg_pool_forward)
from gradcheck import assert_grad

# ---------------------------------------------------------------- BCE with logits

finite_logits = st.floats(-30, 30, allow_nan=False)


def naive_bce(z, t):
    s = 1 / (1 + np.exp(-z))
    return np.mean(-t * np.log(s) - (1 - t) * np.log(1 - s))


# The textbook form loses digits in 1 - sigmoid(z) for large z: compare where it holds.
@given(z=st.lists(st.floats(-15, 15), min_size=1, max_size=6), t=st.floats(0, 1))
def test_bce_matches_the_textbook_formula(z, t):
    z = np.array(z)
    loss, _ = bce_logits_forward(z, t)
    assert loss == pytest.approx(naive_bce(z, t), rel=1e-8, abs=1e-12)


@given(z=st.lists(finite_logits, min_size=1, max_size=6),
       t=st.lists(st.floats(0, 1), min_size=6, max_size=6))
def test_bce_is_symmetric_under_label_flip(z, t):
    """BCE(z, t) = BCE(-z, 1 - t): "real" and "fake" are the same loss mirrored."""
    z, t = np.array(z), np.array(t[:len(z)])
    a, ca = bce_logits_forward(z, t)
    b, cb = bce_logits_forward(-z, 1 - t)
    assert a == pytest.approx(b, rel=1e-12, abs=1e-15)
    # 1 - sigmoid(z) cancels digits for z >> 0, hence the absolute tolerance
    np.testing.assert_allclose(bce_logits_backward(ca), -bce_logits_backward(cb), rtol=1e-12,
                               atol=1e-15)


def test_bce_is_exact_at_extreme_logits_in_float32():
    """No overflow: softplus(1e4) = 1e4, softplus(-1e4) = 0, sigmoid saturates to 0 / 1
    (sigmoid(-100) = 3.7e-44 is a float32 subnormal, kept)."""
    z = np.array([1e4, -1e4, 100.0, -100.0], np.float32)
    loss, cache = bce_logits_forward(z, 0.0)
    assert loss.dtype == np.float32
    assert float(loss) == pytest.approx((1e4 + 100.0) / 4, rel=1e-6)
    d = bce_logits_backward(cache)
    np.testing.assert_allclose(d, np.array([0.25, 0, 0.25, 0], np.float32), rtol=1e-7, atol=1e-40)
    assert np.all(np.isfinite(d)) and d[1] == 0
    loss1, _ = bce_logits_forward(z, 1.0)
    assert float(loss1) == pytest.approx((1e4 + 100.0) / 4, rel=1e-6)


@pytest.mark.parametrize("target", [0.0, 1.0, "soft"])
def test_bce_gradient(target):
    rng = np.random.default_rng(0)
    z = rng.standard_normal(5) * 3
    t = rng.random(5) if target == "soft" else target
    _, cache = bce_logits_forward(z, t)
    assert_grad("bce_logits dz", bce_logits_backward(cache, 0.7),
                lambda: 0.7 * float(bce_logits_forward(z, t)[0]), z)


@pytest.mark.parametrize("logits,target,match", [
    (np.zeros((2, 1)), 1.0, "1-D"),
    (np.zeros(3), np.zeros(2), "does not match"),
    (np.zeros(3), 1.5, r"\[0, 1\]"),
    (np.zeros(3), np.full(3, np.nan), r"\[0, 1\]"),
    (np.zeros(3, np.int64), 1.0, "float"),
    (np.zeros(3, np.float32), np.zeros(3), "float"),
    (np.zeros(0), 1.0, "empty"),
])
def test_bce_rejects_bad_input(logits, target, match):
    with pytest.raises(ValueError, match="bce_logits.*" + match):
        bce_logits_forward(logits, target)


# ---------------------------------------------------------------- global average pooling

def test_global_avg_pool_value_and_gradient():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5))
    y, cache = global_avg_pool_forward(x)
    np.testing.assert_allclose(y, x.reshape(2, 3, -1).mean(-1), rtol=1e-14)
    dout = rng.standard_normal(y.shape)
    assert_grad("global_avg_pool dx", global_avg_pool_backward(dout, cache),
                lambda: float(np.sum(global_avg_pool_forward(x)[0] * dout)), x)
    with pytest.raises(ValueError, match="global_avg_pool_backward: dy must be"):
        global_avg_pool_backward(np.zeros((2, 4)), cache)


# ---------------------------------------------------------------- discriminator

def test_default_discriminator_is_srgans():
    """c = 64, 4 stages: 64, 64, 128, 128, 256, 256, 512, 512 channels, dense 1024,
    strides 1, 2, 1, 2, ...; logits (N,) in the input dtype."""
    params, state = disc_init(np.random.default_rng(0))
    widths = [params[f"disc.conv{k}.w"].shape[0] for k in range(8)]
    assert widths == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride for c in disc_convs(64, 4)] == [1, 2] * 4
    assert params["disc.fc1.w"].shape == (1024, 512) and params["disc.fc2.w"].shape == (1, 1024)
    assert all(k.startswith("disc.") for k in list(params) + list(state))
    assert "disc.conv0.b" in params and "disc.conv1.b" not in params
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    x = np.random.default_rng(1).random((1, 3, 12, 12)).astype(np.float32)
    logits, _, _ = disc_forward(p32, state, x, training=False)
    assert logits.shape == (1,) and logits.dtype == np.float32


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (3, 3, 11, 6), (2, 3, 24, 24)])
def test_discriminator_takes_any_patch_size(shape):
    params, state = disc_init(np.random.default_rng(0), channels=4, stages=3)
    logits, cache, _ = disc_forward(params, state, np.random.default_rng(1).random(shape), False)
    dx, _ = disc_backward(np.ones(shape[0]), cache)
    assert logits.shape == shape[:1] and dx.shape == shape


def tiny_disc(stages=1, seed=0):
    params, state = disc_init(np.random.default_rng(seed), channels=2, stages=stages)
    rng = np.random.default_rng(seed + 1)
    # non-trivial BN affine parameters and running statistics, so each is tested
    for k in params:
        if k.endswith((".gamma", ".beta")):
            params[k] = params[k] + 0.3 * rng.standard_normal(params[k].shape)
    for k in state:
        state[k] = state[k] + 0.2 * rng.random(state[k].shape)
    return params, state


@pytest.mark.parametrize("stages", [1, 2])
@pytest.mark.parametrize("training", [True, False])
def test_discriminator_gradients(stages, training):
    """Every disc.* parameter and the input image, 8x8, BN in both modes."""
    params, state = tiny_disc(stages)
    rng = np.random.default_rng(2)
    x = rng.random((2, 3, 8, 8))
    if not training:
        # Running statistics that have seen this batch: with the initial ones the
        # evaluation-mode activations (and gradients) shrink to ~1e-7 by conv3.
        for _ in range(30):
            state = {**state, **disc_forward(params, state, x, True)[2]}
    logits, cache, _ = disc_forward(params, state, x, training)
    dout = rng.standard_normal(logits.shape)
    dx, grads = disc_backward(dout, cache)
    assert set(grads) == set(params)

    def loss():
        return float(np.sum(disc_forward(params, state, x, training)[0] * dout))

    # In evaluation mode the logits are piecewise linear in any one parameter or
    # pixel, so a large step is exact away from the LReLU kinks and keeps the
    # roundoff (~1e-16 * |loss| / h) far below the smallest gradients (~1e-6).
    step = dict(atol=1e-8) if training else dict(h=1e-4)
    for key in sorted(params):
        assert_grad(f"disc stages={stages} {key}", grads[key], loss, params[key], **step)
    assert_grad(f"disc stages={stages} x", dx, loss, x, **step)


def test_discriminator_running_statistics():
    """Training returns new running statistics (inputs untouched); evaluation
    leaves them as they were and is independent of the rest of the batch."""
    params, state = tiny_disc(stages=2)
    before = {k: v.copy() for k, v in state.items()}
    x = np.random.default_rng(3).random((3, 3, 8, 8))
    _, _, new = disc_forward(params, state, x, training=True)
    assert set(new) == set(state)
    assert all(not np.allclose(new[k], state[k]) for k in state)
    assert all(np.array_equal(state[k], before[k]) for k in state)
    logits, _, same = disc_forward(params, state, x, training=False)
    assert all(np.array_equal(same[k], state[k]) for k in state)
    np.testing.assert_allclose(disc_forward(params, state, x[:1], training=False)[0], logits[:1],
                               rtol=1e-12)


def test_discriminator_rejects_bad_input():
    params, state = tiny_disc()
    with pytest.raises(ValueError, match=r"discriminator: x must be \(N, 3, H, W\)"):
        disc_forward(params, state, np.zeros((2, 1, 8, 8)), True)
    with pytest.raises(ValueError, match="discriminator: params have no 'disc.conv0.w'"):
        disc_forward({}, state, np.zeros((2, 3, 8, 8)), True)
    broken = dict(params, **{"disc.conv1.w": np.zeros((2, 2, 5, 5))})
    with pytest.raises(ValueError, match="disc.conv1.w must be"):
        disc_forward(broken, state, np.zeros((2, 3, 8, 8)), True)
    with pytest.raises(ValueError, match="stages 0 must be >= 1"):
        disc_init(np.random.default_rng(0), channels=8, stages=0)


# ---------------------------------------------------------------- srgan_step

def tiny_srgan(bits="32/32/32", dtype=np.float64):
    # Pixels in [0, 1]: the per-element checks below reach gradients of ~1e-7, under
    # the roundoff of a graph in 0..255 units (test_models checks those, norm-wise).
    cfg = preset("srgan", 2, "32/32/32", blocks=1, channels=3, pixel_range=1.0)
    # Seed 5: no LeakyReLU input of D lies within a step h of its kink (seeds 4 and
    # 7 have one, and their centred differences straddle it).
    rng = np.random.default_rng(5)
    params, state = init_model(cfg, rng)
    # init_model starts the branch-closing gammas at 0; at 1 every weight has a gradient.
    params = {k: (np.ones_like(v) if k.endswith(".gamma") else v) for k, v in params.items()}
    if bits != "32/32/32":
        cfg = cfg.with_bits(bits)
        params, state = quantize_model(params, state, cfg)
    dparams, dstate = disc_init(rng, channels=2, stages=1)
    params = {k: v.astype(dtype) for k, v in {**params, **dparams}.items()}
    lr = rng.random((2, 3, 4, 4)).astype(dtype)
    hr = rng.random((2, 3, 8, 8)).astype(dtype)
    return cfg, params, {**state, **dstate}, lr, hr


@pytest.mark.parametrize("bits,dtype", [("32/32/32", np.float32), ("8/8/8", np.float32),
                                        ("4/4/8", np.float64)])
def test_srgan_step_returns_finite_losses_and_every_gradient(bits, dtype):
    cfg, params, state, lr, hr = tiny_srgan(bits, dtype)
    # warmup 0: the quantizers are active from the first step (intervals get gradients)
    losses, grads, new_state, interval_init = srgan_step(cfg, params, state, lr, hr, 0.3, 0)
    assert all(np.isfinite(v) for v in losses.values()), losses
    assert losses["generator"] == pytest.approx(
        losses["pixel"] + 1e-3 * losses["adversarial"] + losses["sqcl"])
    assert (losses["sqcl"] > 0) == cfg.quantized
    assert set(grads) == set(params)
    assert all(g.shape == params[k].shape and np.all(np.isfinite(g)) for k, g in grads.items())
    # Interval gradients come from graph.quant_backward, which returns them in float64.
    assert all(g.dtype == dtype for k, g in grads.items() if not k.endswith(".interval"))
    assert {k for k in new_state if k.startswith("disc.")} == {
        k for k in state if k.startswith("disc.")}
    assert interval_init == {}


def test_srgan_step_separates_the_two_losses():
    """D's gradients do not depend on adv_weight (the G term leaves D alone), and with
    adv_weight = 0 G's gradients are those of the pixel MSE alone (L_D leaves G alone)."""
    cfg, params, state, lr, hr = tiny_srgan()
    _, g0, _, _ = srgan_step(cfg, params, state, lr, hr, 0.0, 20, adv_weight=0.0)
    _, g1, _, _ = srgan_step(cfg, params, state, lr, hr, 0.0, 20, adv_weight=1.0)
    disc = [k for k in params if k.startswith("disc.")]
    gen = [k for k in params if not k.startswith("disc.")]
    for k in disc:
        np.testing.assert_array_equal(g0[k], g1[k], err_msg=k)
    assert any(not np.allclose(g0[k], g1[k]) for k in gen)

    ps = Pass(params, state, cfg, training=True, alpha=0.0)
    sr, cache = sr_forward(ps, cfg, lr)
    sr_backward(ps, mse_backward(mse_forward(sr, hr)[1]), cache)
    for k in gen:
        np.testing.assert_allclose(g0[k], ps.grads[k], rtol=1e-12, atol=1e-15, err_msg=k)


def test_srgan_step_chains_the_running_statistics_real_then_fake():
    cfg, params, state, lr, hr = tiny_srgan()
    _, _, new_state, _ = srgan_step(cfg, params, state, lr, hr, 0.0, 20)
    sr, _ = sr_forward(Pass(params, state, cfg, training=True), cfg, lr)
    _, _, after_real = disc_forward(params, state, hr, training=True)
    _, _, after_fake = disc_forward(params, {**state, **after_real}, sr, training=True)
    for k, v in after_fake.items():
        np.testing.assert_array_equal(new_state[k], v, err_msg=k)


def numeric_check(cfg, params, state, lr, hr, loss_name, key, analytic):
    """Centred differences of one loss of srgan_step w.r.t. params[key]. The losses
    are ~0.7, so h = 1e-5 keeps the roundoff near 1e-11 (h = 1e-6: 1e-10)."""
    def loss():
        return srgan_step(cfg, params, state, lr, hr, 0.0, 20)[0][loss_name]
    assert_grad(f"srgan {loss_name} d/d {key}", analytic, loss, params[key], h=1e-5)


def test_srgan_generator_gradient_through_the_discriminator():
    """d(adversarial term)/d(generator weight) through D, quantizer off (32/32/32):
    the gradient difference between adv_weight 1 and 0 against centred differences of
    BCE(D(G(lr)), 1); and the whole generator loss at the default weight."""
    cfg, params, state, lr, hr = tiny_srgan()
    key = "blocks.0.conv2.w"
    _, g0, _, _ = srgan_step(cfg, params, state, lr, hr, 0.0, 20, adv_weight=0.0)
    _, g1, _, _ = srgan_step(cfg, params, state, lr, hr, 0.0, 20, adv_weight=1.0)
    adv = g1[key] - g0[key]
    assert np.abs(adv).max() > 1e-4 * np.abs(g0[key]).max()
    numeric_check(cfg, params, state, lr, hr, "adversarial", key, adv)
    _, g, _, _ = srgan_step(cfg, params, state, lr, hr, 0.0, 20)
    for key in ("head.b", "blocks.0.conv1.gamma", "up.0.prelu"):
        numeric_check(cfg, params, state, lr, hr, "generator", key, g[key])


def test_srgan_discriminator_gradient():
    cfg, params, state, lr, hr = tiny_srgan()
    _, g, _, _ = srgan_step(cfg, params, state, lr, hr, 0.0, 20)
    for key in ("disc.conv0.w", "disc.conv1.gamma", "disc.fc1.w"):
        numeric_check(cfg, params, state, lr, hr, "discriminator", key, g[key])


def test_srgan_step_needs_a_discriminator():
    cfg, params, state, lr, hr = tiny_srgan()
    gen = {k: v for k, v in params.items() if not k.startswith("disc.")}
    with pytest.raises(ValueError, match="srgan_step: params hold no discriminator"):
        srgan_step(cfg, gen, state, lr, hr, 0.0, 20)
    with pytest.raises(ValueError, match="srgan_step: hr_batch"):
        srgan_step(cfg, params, state, lr, hr[:, :, :6], 0.0, 20)
