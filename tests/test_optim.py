"""Adam and the cosine schedule against their closed forms."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fqsr_ref.optim import adam_init, adam_step, cosine_lr


def adam_scalar(p, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Textbook Adam on one Python float, step by step (Kingma & Ba, Algorithm 1)."""
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p -= lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
    return p


def test_adam_matches_scalar_closed_form():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((2, 3)), "b": rng.standard_normal(2)}
    grad_seq = [{k: rng.standard_normal(p.shape) for k, p in params.items()} for _ in range(4)]
    state = adam_init(params)
    p = params
    for grads in grad_seq:
        p, state = adam_step(p, grads, state, lr=0.01)
    assert state["step"] == 4
    for key in params:
        for idx in np.ndindex(params[key].shape):
            expect = adam_scalar(params[key][idx], [g[key][idx] for g in grad_seq], 0.01)
            assert p[key][idx] == pytest.approx(expect, rel=1e-12, abs=1e-15)


def test_adam_first_step_moves_by_lr():
    """After one step m_hat = g and v_hat = g^2, so every element moves by lr * g / (|g| + eps)."""
    p = {"a": np.array([1.0, -2.0, 3.0])}
    g = {"a": np.array([0.5, -4.0, 1e-3])}
    new, _ = adam_step(p, g, adam_init(p), lr=0.1)
    np.testing.assert_allclose(new["a"], p["a"] - 0.1 * g["a"] / (np.abs(g["a"]) + 1e-8),
                               rtol=1e-12)


def test_adam_skips_keys_without_grad_and_counts_per_key():
    p = {"a": np.ones(2), "late": np.ones(2)}
    state = adam_init(p)
    for _ in range(3):
        p2, state = adam_step(p, {"a": np.ones(2), "late": None}, state, lr=0.1)
        assert p2["late"] is p["late"]
        p = p2
    assert int(state["t/a"]) == 3 and int(state["t/late"]) == 0
    np.testing.assert_array_equal(state["m/late"], 0)
    # the late starter gets the bias correction of its own first step
    p3, state = adam_step(p, {"late": np.full(2, 2.0)}, state, lr=0.1)
    np.testing.assert_allclose(p3["late"], 1.0 - 0.1 * 2.0 / (2.0 + 1e-8), rtol=1e-12)
    assert int(state["t/late"]) == 1 and state["step"] == 4


def test_adam_inputs_untouched_float32_kept_and_state_saves_to_npz(tmp_path):
    p = {"conv1/w": np.ones((2, 2), np.float32)}
    g = {"conv1/w": np.full((2, 2), 0.5, np.float32)}
    state = adam_init(p)
    new_p, new_state = adam_step(p, g, state, lr=1e-3)
    np.testing.assert_array_equal(p["conv1/w"], 1)
    assert state["step"] == 0 and not state["m/conv1/w"].any()
    assert new_p["conv1/w"].dtype == np.float32
    assert new_state["m/conv1/w"].dtype == np.float32
    path = tmp_path / "adam.npz"
    np.savez(path, **new_state)
    loaded = dict(np.load(path, allow_pickle=False))
    again_a, _ = adam_step(new_p, g, loaded, lr=1e-3)
    again_b, _ = adam_step(new_p, g, new_state, lr=1e-3)
    np.testing.assert_array_equal(again_a["conv1/w"], again_b["conv1/w"])


def test_adam_bad_input():
    p = {"a": np.ones(3)}
    state = adam_init(p)
    with pytest.raises(ValueError, match=r"adam_step: parameter 'a'.*\(2,\).*\(3,\)"):
        adam_step(p, {"a": np.ones(2)}, state, lr=0.1)
    with pytest.raises(ValueError, match="unknown parameters.*'b'"):
        adam_step(p, {"b": np.ones(3)}, state, lr=0.1)
    with pytest.raises(ValueError, match="float64.*float32"):
        adam_step(p, {"a": np.ones(3, np.float32)}, state, lr=0.1)
    with pytest.raises(ValueError, match="no optimizer state"):
        adam_step({"c": np.ones(1)}, {"c": np.ones(1)}, state, lr=0.1)


def test_cosine_fixed_points():
    assert cosine_lr(0, 100, 1e-3) == 1e-3
    assert cosine_lr(100, 100, 1e-3) == pytest.approx(0.0, abs=1e-18)
    assert cosine_lr(50, 100, 1e-3) == pytest.approx(5e-4, rel=1e-12)
    assert cosine_lr(100, 100, 1e-3, floor=1e-5) == pytest.approx(1e-5, rel=1e-12)
    assert cosine_lr(250, 100, 1e-3, floor=1e-5) == pytest.approx(1e-5, rel=1e-12)
    with pytest.raises(ValueError, match="cosine_lr"):
        cosine_lr(0, 0, 1e-3)


@given(total=st.integers(1, 10_000), data=st.data())
def test_cosine_closed_form_and_monotone(total, data):
    step = data.draw(st.integers(0, total - 1))
    lr = cosine_lr(step, total, 0.1, 0.01)
    assert lr == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi * step / total)) / 2)
    assert 0.01 <= cosine_lr(step + 1, total, 0.1, 0.01) <= lr
