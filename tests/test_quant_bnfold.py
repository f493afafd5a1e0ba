"""BN folding (Eq. 6) and the folded, weight-quantized conv."""
import numpy as np
import pytest

from gradcheck import assert_grad
from fqsr_ref.ops.conv import conv2d_forward
from fqsr_ref.quant import (SQCL_ALPHA, QuantSpec, fold_backward, fold_bn, fold_forward,
                            folded_conv_backward, folded_conv_forward)
from test_quant_quantizer import frozen_offset, surrogate

EPS = 1e-5


def bn_params(rng, c_out, dtype=np.float64):
    gamma = rng.uniform(0.5, 1.5, c_out) * rng.choice([-1, 1], c_out)
    beta = rng.normal(size=c_out)
    mean = rng.normal(size=c_out)
    var = rng.uniform(0.1, 2.0, c_out)
    return [a.astype(dtype) for a in (gamma, beta, mean, var)]


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fold_equals_conv_then_eval_bn(seed, with_bias):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 3, 6, 5))
    w = rng.normal(size=(4, 3, 3, 3))
    b = rng.normal(size=4) if with_bias else None
    gamma, beta, mean, var = bn_params(rng, 4)
    y, _ = conv2d_forward(x, w, b)
    per_channel = (1, -1, 1, 1)
    bn = (gamma.reshape(per_channel) * (y - mean.reshape(per_channel))
          / np.sqrt(var.reshape(per_channel) + EPS) + beta.reshape(per_channel))
    w_fold, b_fold = fold_bn(w, b, gamma, beta, mean, var, EPS)
    folded, _ = conv2d_forward(x, w_fold, b_fold)
    np.testing.assert_allclose(folded, bn, rtol=0, atol=1e-10)


@pytest.mark.parametrize("with_bias", [True, False])
def test_fold_backward_gradients(with_bias):
    rng = np.random.default_rng(3)
    w = rng.normal(size=(5, 2, 3, 3))
    b = rng.normal(size=5) if with_bias else None
    gamma, beta, mean, var = bn_params(rng, 5)
    mean0, var0 = mean.copy(), var.copy()
    cw, cb = rng.normal(size=w.shape), rng.normal(size=5)
    _, _, cache = fold_forward(w, b, gamma, beta, mean, var, EPS)
    dw, db, dgamma, dbeta = fold_backward(cw, cb, cache)

    def loss():
        w_fold, b_fold = fold_bn(w, b, gamma, beta, mean, var, EPS)
        return float(np.sum(w_fold * cw) + np.sum(b_fold * cb))
    assert_grad("dw", dw, loss, w)
    assert_grad("dgamma", dgamma, loss, gamma)
    assert_grad("dbeta", dbeta, loss, beta)
    if with_bias:
        assert_grad("db", db, loss, b)
    else:
        assert db is None
    assert np.array_equal(mean, mean0) and np.array_equal(var, var0)   # frozen, untouched


CASES = [QuantSpec(32, True), QuantSpec(4, True), QuantSpec(3, True, "dorefa"),
         QuantSpec(2, True)]


@pytest.mark.parametrize("spec", CASES, ids=str)
@pytest.mark.parametrize("p", [1, 2])
def test_folded_conv_gradients(spec, p):
    """sum(y * c) + alpha * L_q(w) against finite differences, the weight quantizer
    replaced by its STE surrogate (rounding offsets frozen at the point)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 5, 4))
    w = rng.normal(size=(4, 3, 3, 3))
    b = rng.normal(size=4)
    gamma, beta, mean, var = bn_params(rng, 4)
    w_fold, _ = fold_bn(w, b, gamma, beta, mean, var, EPS)
    w_interval = np.array([0.8 * np.max(np.abs(w_fold))])   # some weights clip
    c = rng.normal(size=(2, 4, 5, 4))
    y, cache = folded_conv_forward(x, w, b, gamma, beta, mean, var, EPS, w_interval, spec,
                                   sqcl_p=p)
    assert np.array_equal(cache.w_fold, w_fold)
    assert (cache.codes is None) == (spec.bits == 32)
    grads = folded_conv_backward(c, cache, dlq=SQCL_ALPHA)
    if spec.bits == 32:
        offset = None
    else:
        offset = frozen_offset(w_fold, w_interval[0], spec)
        ratio = np.abs(w_fold / w_interval[0])
        assert np.all(np.abs(ratio - 1) > 1e-4)               # nothing on a clip bound

    def loss():
        wf, bf = fold_bn(w, b, gamma, beta, mean, var, EPS)
        qw = wf if offset is None else surrogate(wf, w_interval[0], spec, offset)
        out, _ = conv2d_forward(x, qw, bf)
        return float(np.sum(out * c) + SQCL_ALPHA * np.mean(np.abs(qw - wf) ** p))
    assert loss() == pytest.approx(float(np.sum(y * c) + SQCL_ALPHA * cache.lq), rel=1e-12)
    for name, arr in [("x", x), ("w", w), ("b", b), ("gamma", gamma), ("beta", beta),
                      ("w_interval", w_interval)]:
        assert grads[name].shape == arr.shape, name
        assert_grad(name, grads[name], loss, arr)
    if spec.bits == 32:
        assert grads["w_interval"] == 0


def test_folded_conv_float32_and_no_bias():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 2, 4, 4)).astype(np.float32)
    w = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    gamma, beta, mean, var = bn_params(rng, 3, np.float32)
    y, cache = folded_conv_forward(x, w, None, gamma, beta, mean, var, EPS,
                                   np.float32(1.0), QuantSpec(4, True))
    assert y.dtype == np.float32 and cache.codes.dtype == np.int32
    grads = folded_conv_backward(np.ones_like(y), cache)
    assert grads["b"] is None
    assert all(g.dtype == np.float32 for k, g in grads.items() if g is not None)


def test_fold_errors():
    w = np.ones((2, 1, 3, 3))
    ok = [np.ones(2) for _ in range(4)]
    with pytest.raises(ValueError, match=r"fold_bn: gamma must be a \(2,\) float64"):
        fold_bn(w, None, np.ones(3), *ok[1:], EPS)
    with pytest.raises(ValueError, match=r"fold_bn: b must be"):
        fold_bn(w, np.ones(2, np.float32), *ok, EPS)
    with pytest.raises(ValueError, match="var \\+ eps > 0"):
        fold_bn(w, None, *ok[:3], np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="fold_bn: w must be"):
        fold_bn(w.astype(np.int64), None, *ok, EPS)
