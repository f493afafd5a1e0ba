"""The int16 engine (vpmaddwd, SPEC 6.6) is bit-identical to the plain engine.

Its kernel against a loop twin; its strips against the plain engine's on awkward
shapes; whole models of every bit width up to 8, the committed vector sets, tiles; and
the fallbacks: no AVX2 (forced), accumulators beyond int32, stacked plans.
"""
import numpy as np
import pytest

import fqsr_ref.vectors as V
from fqsr_ref.integer import engine_int16, engine_plain
from fqsr_ref.integer.engine_int16 import (HOST_HAS_MADD, _madd_strip, conv_strips_int16,
                                           madd_strip_reference, prepare_int16)
from fqsr_ref.integer.engine_plain import conv_strips, prepare_conv
from fqsr_ref.integer.model import convert
from fqsr_ref.integer.run import prepare, run_ops
from fqsr_ref.integer.tiling import run_tiled
from fqsr_ref.models import Pass, init_model, preset, quantize_model, sr_forward
from test_integer_model import assert_engines_agree

needs_avx2 = pytest.mark.skipif(not HOST_HAS_MADD, reason="the int16 kernel needs AVX2 (vpmaddwd)")


@needs_avx2
@pytest.mark.parametrize("chans,blocks,taps,positions,lo,hi", [
    (2, 1, 1, 4, -128, 127), (8, 2, 9, 24, -128, 127), (64, 1, 9, 40, -7, 7),
    (4, 3, 81, 8, 0, 255), (10, 1, 25, 12, -256, 255),     # the image's codes; 9-bit pad-shifted codes
    (2, 1, 1, 4, -32767, 32767)])                            # int16 extremes (one pair: fits int32)
def test_kernel_matches_loop_twin(chans, blocks, taps, positions, lo, hi):
    rng = np.random.default_rng(chans * 1000 + taps)
    rows = positions + 64
    grid = rng.integers(lo, hi + 1, (rows, chans)).astype(np.int16)
    grid[0, :2] = lo                                  # both extremes meet
    weights = rng.integers(-127, 128, (blocks, taps, chans // 2, 16, 2)).astype(np.int16)
    weights[0, 0, 0, 0] = -128 if hi < 32767 else -32767
    offsets = rng.integers(0, (rows - positions) * chans // 2, taps).astype(np.int64) * 2
    out = np.full((positions, blocks * 16), 99, np.int32)
    _madd_strip(grid, offsets, weights, out)
    assert np.array_equal(out, madd_strip_reference(grid, offsets, weights, positions))


@needs_avx2
@pytest.mark.parametrize("n,h,w,c,o,k,bits,strip", [
    (1, 7, 1, 9, 9, 3, 8, None),       # W = 1, odd channels, O below one block of 16
    (2, 5, 11, 16, 40, 3, 8, None),    # batch 2, O across three blocks
    (1, 13, 17, 8, 8, 5, 4, 600),      # several strips, K = 5
    (1, 30, 9, 32, 32, 3, 8, 2000),    # several strips, the last one short
    (1, 3, 3, 17, 17, 1, 6, None)])    # K = 1
def test_strips_equal_the_plain_engine(monkeypatch, n, h, w, c, o, k, bits, strip):
    if strip is not None:   # force several strips in both engines
        monkeypatch.setattr(engine_int16, "STRIP_BYTES", strip)
        monkeypatch.setattr(engine_plain, "STRIP_BYTES", strip)
    rng = np.random.default_rng(h * w + c)
    q = 2 ** (bits - 1) - 1
    weights = rng.integers(-q, q + 1, (o, c, k, k)).astype(np.int8)
    x = rng.integers(-q - 1, q + 1, (n, h, w, c)).astype(np.int8)
    plan = prepare_conv(weights, bits, True, bits)
    assert plan.kind == "shift"
    plan16 = prepare_int16(plan, "int32")
    got, want = np.zeros((n, h, w, o), np.int64), np.zeros((n, h, w, o), np.int64)
    strips = []

    def into(out, record=None):
        def emit(i, h0, h1, acc):
            out[i, h0:h1] = acc[:, :w]
            if record is not None:
                record.append((i, h0, h1))
        return emit
    conv_strips_int16(x, plan16, into(got, strips))
    conv_strips(x, bits, True, plan, into(want))
    assert np.array_equal(got, want)
    assert strip is None or len(strips) > n


@needs_avx2
def test_two_kernel_threads(monkeypatch):
    monkeypatch.setenv("FQSR_INT16_THREADS", "2")
    rng = np.random.default_rng(5)
    grid = rng.integers(-128, 128, (200, 16)).astype(np.int16)
    weights = rng.integers(-127, 128, (2, 9, 8, 16, 2)).astype(np.int16)
    offsets = np.arange(9, dtype=np.int64) * 16
    out = np.empty((36, 32), np.int32)
    _madd_strip(grid, offsets, weights, out)
    assert np.array_equal(out, madd_strip_reference(grid, offsets, weights, 36))


def small_model(bits, channels=8, arch="srresnet", scale=2, seed=0):
    """A quantized model with intervals from one DAIA pass on a random image."""
    rng = np.random.default_rng(seed)
    fp = preset(arch, scale, "32/32/32", blocks=1, channels=channels)
    cfg = fp.with_bits(bits)
    params, state = quantize_model(*init_model(fp, rng), cfg)
    ps = Pass(params, state, cfg, training=True, warmup=1)
    sr_forward(ps, cfg, rng.random((1, 3, 12, 12)))
    params = {**params, **{k: v * rng.uniform(0.5, 1.0) for k, v in ps.interval_init.items()}}
    return convert(cfg, params, {**state, **ps.new_state})


@needs_avx2
@pytest.mark.parametrize("bits,channels,arch,scale", [
    ("2/3/8", 8, "srresnet", 2), ("3/2/6", 8, "srresnet", 3), ("4/4/8", 20, "srresnet", 4),
    ("5/6/8", 8, "edsr", 2), ("6/5/7", 16, "edsr", 3), ("7/8/8", 8, "srresnet", 2),
    ("8/7/8", 8, "edsr", 2), ("8/8/8", 32, "srresnet", 2)])
def test_models_of_every_width_up_to_8(bits, channels, arch, scale):
    model = small_model(bits, channels, arch, scale)
    assert prepare(model).int16, "the engine must take the body convs"
    rng = np.random.default_rng(channels)
    for shape in [(1, 3, 9, 13), (2, 3, 5, 1), (1, 3, 1, 7)]:   # odd, batch with W = 1, H = 1
        assert_engines_agree(model, rng.integers(0, 256, shape, dtype=np.uint8), "int16")


@needs_avx2
@pytest.mark.parametrize("vec_dir", V.committed_dirs(), ids=lambda d: d.name)
def test_committed_sets_every_stimulus(vec_dir):
    """Every tensor and accumulator the int16 engine computes equals the stored one."""
    model = V.read_model(vec_dir).model
    m = V.read_manifest(vec_dir, check_files=False)
    for stim in V.read_stimuli(vec_dir):
        rec = {}
        codes = run_ops(model, stim.codes, "int16", rec)
        for name, arr in list(codes.items()) + list(rec.items()):
            assert np.array_equal(arr, V.find_array(vec_dir, m, f"{stim.name}/{name}")), (stim.name, name)


@needs_avx2
def test_tiles():
    model = small_model("8/8/8", 16)
    lr = np.random.default_rng(3).integers(0, 256, (11, 14, 3), dtype=np.uint8)
    whole = run_ops(model, lr.transpose(2, 0, 1)[None].copy(), "plain")["image.out"][0].transpose(1, 2, 0)
    assert np.array_equal(run_tiled(model, lr, 5, "int16"), whole)


def test_fallback_without_avx2_is_said_once(monkeypatch, capsys):
    """A CPU without AVX2 (forced here): no conv goes to the kernel, the plain engine runs
    them, and one line says so, once."""
    monkeypatch.setattr(engine_int16, "HOST_HAS_MADD", False)
    monkeypatch.setattr(engine_int16, "_NOTED", set())
    model = small_model("4/4/8")
    assert prepare(model).int16 == {}
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 6, 5), dtype=np.uint8)
    assert_engines_agree(model, x, "int16")
    run_ops(model, x, "int16")
    err = capsys.readouterr().err
    assert err == "note: engine int16: this CPU has no AVX2 (vpmaddwd); the plain engine runs instead\n"


@needs_avx2
def test_int64_accumulators_run_on_the_plain_engine_named_once(monkeypatch, capsys):
    monkeypatch.setattr(engine_int16, "_NOTED", set())
    model = V.read_model(V.corner_dir("16/16/16")).model
    wide = [op.name for op in model.ops if op.kind == "conv" and op.acc_dtype == "int64"]
    assert wide and not set(wide) & set(prepare(model).int16)
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 4, 5), dtype=np.uint8)
    assert_engines_agree(model, x, "int16")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"note: engine int16: {', '.join(wide)} need int64")


@needs_avx2
def test_stacked_plans_stay_on_the_plain_engine():
    """The head (3 input channels) and the tail (3 outputs) keep the plain engine's
    stacked plans: padded to 2 channel pairs or 16 output channels the kernel does not
    beat them (a 1 x 1 conv of every tap's products, then a shifted sum, was tried for the
    tail: 1.05-1.5 x the plain engine's stack_out)."""
    model = small_model("8/8/8", 16)
    taken = prepare(model).int16
    assert set(taken) == {op.name for op in model.ops if op.kind == "conv"} - {"head", "tail"}
