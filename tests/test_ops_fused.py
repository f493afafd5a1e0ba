"""The compiled one-pass kernels against their plain NumPy twins.

Per element the kernels do the twins' operations in the same order, so given the
same per-channel numbers the results are equal bit for bit (checked directly on
the elementwise kernels, and end to end where nothing is summed: the quantizer,
PReLU's dx, BN in evaluation mode). Per-channel sums are accumulated in float64 in
sequence where NumPy sums pairwise in the tensor's dtype: there the two agree to
rounding, to 1e-12 relative in float64 and to a few float32 ulps of the values'
scale in float32.
"""
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fqsr_ref.data.dataset import ProceduralSource
from fqsr_ref.ops import _fused
from fqsr_ref.ops.activations import (prelu_backward, prelu_backward_reference, prelu_forward,
                                      prelu_forward_reference)
from fqsr_ref.ops.batchnorm import (batchnorm_backward, batchnorm_backward_reference,
                                    batchnorm_forward, batchnorm_forward_reference)
from fqsr_ref.quant.quantizer import (QuantSpec, quantize_backward, quantize_backward_reference,
                                      quantize_forward, quantize_forward_reference)
from fqsr_ref.trainer import BatchStream, StageOptions, batch_for_step, prefetch_mode

DTYPES = [np.float64, np.float32]


def tolerance(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-6, atol=2e-6)


def bn_inputs(dtype, seed=0, shape=(3, 5, 4, 6)):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    params = [rng.uniform(0.5, 1.5, c), rng.standard_normal(c), rng.standard_normal(c),
              rng.uniform(0.5, 2.0, c)]
    return rng, x, [p.astype(dtype) for p in params]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_matches_its_numpy_twin(dtype, training):
    rng, x, params = bn_inputs(dtype)
    got = batchnorm_forward(x, *params, training)
    want = batchnorm_forward_reference(x, *params, training)
    dy = rng.standard_normal(x.shape).astype(dtype)
    got_b = batchnorm_backward(dy, got[1])
    want_b = batchnorm_backward_reference(dy, want[1])
    for a, b in zip([got[0], got[1].x_hat, got[1].inv_std, got[2], got[3], *got_b],
                    [want[0], want[1].x_hat, want[1].inv_std, want[2], want[3], *want_b]):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        if training:
            np.testing.assert_allclose(a, b, **tolerance(dtype))
    if not training:   # nothing summed in the forward or in dx: equal bit for bit
        for a, b in zip([got[0], got[1].x_hat, got_b[0]], [want[0], want[1].x_hat, want_b[0]]):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_elementwise_kernels_are_the_numpy_expressions_bit_for_bit(dtype):
    rng, x, (gamma, beta, shift, inv_std) = bn_inputs(dtype, seed=1)
    x3 = _fused.as_ncm(x)
    x_hat, y = np.empty_like(x3), np.empty_like(x3)
    _fused.bn_normalize(x3, shift, inv_std, gamma, beta, x_hat, y)
    pc = lambda v: v.reshape(1, -1, 1)   # noqa: E731
    want_hat = (x3 - pc(shift)) * pc(inv_std)
    assert np.array_equal(x_hat, want_hat)
    assert np.array_equal(y, pc(gamma) * want_hat + pc(beta))
    dy = rng.standard_normal(x3.shape).astype(dtype)
    dx = np.empty_like(dy)
    _fused.bn_input_grad(dy, x_hat, gamma, shift, inv_std, dx)
    assert np.array_equal(dx, pc(gamma) * (dy - pc(shift) - x_hat * pc(inv_std)))


def test_batchnorm_statistics_are_summed_in_float64():
    # a float32 running sum of these ones would stall at 2^24; float64 is exact
    x = np.ones((1, 1, 1 << 12, 1 << 12), np.float32)
    x[0, 0, 0, 0] = 2.0 ** 12
    mean, var = _fused.bn_moments(_fused.as_ncm(x))
    assert mean[0] == (x.size - 1 + 2.0 ** 12) / x.size
    assert var[0] == pytest.approx(x.astype(np.float64).var(), rel=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,channels", [((4, 3), 3), ((2, 5, 3, 4), 1), ((2, 5, 3, 4), 5),
                                            ((2, 3, 2, 2, 3), 3)])
def test_prelu_matches_its_numpy_twin(dtype, shape, channels):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[:3] = [0.0, -0.0, 0.0]             # the x <= 0 branch at zero
    a = rng.uniform(-0.5, 0.5, channels).astype(dtype)
    y, cache = prelu_forward(x, a)
    y_ref, cache_ref = prelu_forward_reference(x, a)
    assert y.dtype == dtype and np.array_equal(y, y_ref)
    assert np.array_equal(np.signbit(y), np.signbit(y_ref))
    dy = rng.standard_normal(shape).astype(dtype)
    dx, da = prelu_backward(dy, cache)
    dx_ref, da_ref = prelu_backward_reference(dy, cache_ref)
    assert np.array_equal(dx, dx_ref) and dx.dtype == dtype
    assert da.shape == da_ref.shape and da.dtype == da_ref.dtype == dtype
    np.testing.assert_allclose(da, da_ref, **tolerance(dtype))


SPECS = [QuantSpec(8, False), QuantSpec(8, True), QuantSpec(4, True), QuantSpec(2, True),
         QuantSpec(3, True, "dorefa"), QuantSpec(1, True, "dorefa"), QuantSpec(16, True),
         QuantSpec(5, False)]


def quantizer_inputs(spec, dtype, interval):
    """Values around, at and beyond every level, exact ties t = k + 1/2, +-0 and +-inf."""
    rng = np.random.default_rng(spec.bits)
    n = (2 ** (spec.bits - 1) - 1) if spec.signed and spec.grid == "narrow" else 2 ** spec.bits - 1
    ties = (np.arange(-n, n) + 0.5) / n * interval
    v = np.concatenate([rng.uniform(-1.3, 1.3, 500) * interval, ties,
                        np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf),
                        [0.0, -0.0, np.inf, -np.inf, interval, -interval, 1e-30]])
    return v.astype(dtype).reshape(-1, 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("interval", [1.0, 0.37, np.array([255.0]), np.array(3e-4)])
def test_quantizer_matches_its_numpy_twin_bit_for_bit(dtype, spec, interval):
    scalar = float(np.asarray(interval).reshape(()))
    v = quantizer_inputs(spec, dtype, scalar)
    qv, codes, cache = quantize_forward(v, interval, spec)
    qv_ref, codes_ref, cache_ref = quantize_forward_reference(v, interval, spec)
    assert qv.dtype == dtype and codes.dtype == np.int32 and qv.shape == v.shape
    assert np.array_equal(codes, codes_ref)
    assert np.array_equal(qv.view(np.uint8), qv_ref.view(np.uint8))   # +-0 included
    dqv = np.random.default_rng(3).standard_normal(v.shape).astype(dtype)
    dv, dinterval = quantize_backward(dqv, cache)
    dv_ref, dinterval_ref = quantize_backward_reference(dqv, cache_ref)
    assert np.array_equal(dv.view(np.uint8), dv_ref.view(np.uint8))
    assert dinterval.dtype == dinterval_ref.dtype and dinterval.shape == dinterval_ref.shape
    assert np.array_equal(dinterval, dinterval_ref)


def test_quantizer_kernels_take_non_contiguous_input():
    v = np.linspace(-3, 3, 60).reshape(6, 10)[:, ::3]
    spec = QuantSpec(4, True)
    qv, codes, cache = quantize_forward(v, 2.0, spec)
    qv_ref, codes_ref, _ = quantize_forward_reference(v, 2.0, spec)
    assert np.array_equal(qv, qv_ref) and np.array_equal(codes, codes_ref)
    dv, _ = quantize_backward(np.ones((6, 10))[:, ::3], cache)
    assert dv.shape == v.shape


@pytest.mark.parametrize("prefetch", ["thread", "process", None])
def test_batch_stream_gives_the_batches_of_batch_for_step_in_order(prefetch):
    source = ProceduralSource()
    opts = StageOptions(steps=5, batch=2, patch=6, seed=3)
    with BatchStream(source, opts, 2, 2, prefetch) as stream:   # a resumed run: from step 2
        got = list(stream)
    assert [s for s, _, _ in got] == [2, 3, 4]
    for step, lr, hr in got:
        want_lr, want_hr = batch_for_step(source, opts, 2, step)
        assert np.array_equal(lr, want_lr) and np.array_equal(hr, want_hr)


def test_batch_stream_stops_its_worker_on_a_break():
    opts = StageOptions(steps=50, batch=1, patch=4)
    with BatchStream(ProceduralSource(), opts, 2, 0, "process") as stream:
        for step, _, _ in stream:
            if step == 1:
                break
    assert not multiprocessing.active_children()   # the worker was joined


def _prefetch_mode_of_a_long_procedural_run():
    return prefetch_mode(ProceduralSource(), 10_000)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process prefetch is Linux only")
def test_a_pool_worker_prefetches_in_a_thread():
    # reproduce.py --jobs 2 trains in multiprocessing.Pool workers, which are daemonic
    # and may not start the sampling process (it failed with "daemonic processes are
    # not allowed to have children")
    assert _prefetch_mode_of_a_long_procedural_run() == "process"
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_prefetch_mode_of_a_long_procedural_run) == "thread"


def test_reuse_freed_memory_serves_a_freed_block_again_without_page_faults():
    import resource

    from fqsr_ref.trainer import reuse_freed_memory
    if not sys.platform.startswith("linux") or not reuse_freed_memory():
        pytest.skip("no glibc mallopt")
    a = np.ones(8 << 20)   # 64 MB: above glibc's default mmap threshold
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = np.ones(8 << 20)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert b[-1] == 1.0
    assert faults < 1000   # a fresh mapping would fault on each of its 16,384 pages


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process prefetch is Linux only")
def test_the_sampling_process_dies_with_a_killed_trainer(tmp_path):
    # kill -9 of the trainer must not leave its worker alive (it would hold the
    # --out lock it inherited, and --resume would find the directory locked)
    script = (
        "import os, signal\n"
        "from fqsr_ref.data.dataset import ProceduralSource\n"
        "from fqsr_ref.trainer import BatchStream, StageOptions\n"
        "stream = BatchStream(ProceduralSource(), StageOptions(steps=10, batch=1, patch=4), 2, 0,"
        " 'process')\n"
        "next(iter(stream))\n"
        "print(stream.pool.process.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    # output to a file, not a pipe: a surviving worker would hold a pipe open
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        code = subprocess.run([sys.executable, "-c", script], stdout=f, stderr=subprocess.STDOUT,
                              timeout=60).returncode
    assert code == -signal.SIGKILL, out.read_text()
    worker = int(out.read_text().split()[0])
    for _ in range(100):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(worker, signal.SIGKILL)
    pytest.fail(f"worker {worker} outlived the trainer")
