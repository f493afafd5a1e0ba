"""The integer-only model against the fake-quantized float model it was converted from."""
import numpy as np
import pytest

from fqsr_ref.checkpoint import Checkpoint, save_checkpoint
from fqsr_ref.data import photos_dir
from fqsr_ref.data.images import list_images, read_image
from fqsr_ref.data.resize import bicubic_downscale
from fqsr_ref.infer import main as infer_main
from fqsr_ref.integer.model import convert
from fqsr_ref.integer.run import run_ops
from fqsr_ref.metrics import psnr_y
from fqsr_ref.models import Pass, init_model, preset, quantize_model, sr_forward, upscale
from fqsr_ref.models.graph import cast_floats


def calibrated(arch, scale, bits, seed=0, **kw):
    """A quantized model with DAIA intervals from one pass over a photo crop, then
    jittered (a trained model's intervals are arbitrary floats, not batch maxima)."""
    rng = np.random.default_rng(seed)
    fp = preset(arch, scale, "32/32/32", blocks=2, channels=8, **kw)
    params, state = init_model(fp, rng)
    cfg = fp.with_bits(bits)
    params, state = quantize_model(params, state, cfg)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    x = image_batch(24)
    ps = Pass(params, state, cfg, training=True, warmup=1)
    sr_forward(ps, cfg, x)
    params.update({k: np.float32(v * rng.uniform(0.6, 1.0)).reshape(()) for k, v in ps.interval_init.items()})
    return cfg, params, {**state, **ps.new_state}


def photo_crop(size):
    return read_image(list_images(photos_dir())[2])[:size, :size]


def image_batch(size):
    return (photo_crop(size).transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255))


CONFIGS = [("srresnet", 2, "8/8/8", {}), ("srresnet", 3, "4/4/8", {}),
           ("edsr", 4, "6/6/8", {}), ("fqsr_lite", 2, "6/8/8",
                                      {"branch_relu": False}),
           ("edsr", 2, "8/8/8", {"block_act": "prelu"}),   # signed block codes, PReLU's M-
           ("edsr", 3, "4/4/8", {"head_pad": "mean"})]     # the head pads with the mean's codes


def code_differences(cfg, params, state, image):
    """Per layer (site, elements differing, elements, largest difference) between the
    integer model and the float model run in float64 like the conversion (float32's
    rounding would flip a few near-tie codes, about 1 in 30000, and the flips
    cascade downstream)."""
    x = image.transpose(2, 0, 1)[None].astype(np.float64) / 255
    params = cast_floats(params, np.float64)
    ps = Pass(params, state, cfg, record_codes=True)
    sr_forward(ps, cfg, x)
    codes = run_ops(convert(cfg, params, state), np.ascontiguousarray(image.transpose(2, 0, 1)[None]))
    report = []
    for site, float_codes in ps.codes.items():
        if not site.endswith(".w"):
            diff = np.abs(codes[site].astype(np.int64) - float_codes)
            report.append((site, int(np.count_nonzero(diff)), diff.size, int(diff.max())))
    print("\n".join(f"{s:24} {d}/{n} differ, max {m}" for s, d, n, m in report))
    return report


def assert_codes_agree(report):
    for site, differ, total, worst in report:
        assert differ <= total * 0.001 and worst <= 1, (site, differ, total, worst)
    assert {s for s, *_ in report} >= {"head.out", "long_add.out", "image.out"}


@pytest.mark.parametrize("arch,scale,bits,kw", CONFIGS)
def test_integer_codes_equal_float_codes(arch, scale, bits, kw):
    cfg, params, state = calibrated(arch, scale, bits, **kw)
    assert_codes_agree(code_differences(cfg, params, state, photo_crop(64 if scale == 2 else 32)))


def test_output_psnr_matches_float_model():
    cfg, params, state = calibrated("srresnet", 2, "8/8/8")
    hr = photo_crop(128)
    lr = bicubic_downscale(hr, 2)
    sr_float = upscale(cfg, params, state, lr)
    model = convert(cfg, params, state)
    sr_int = run_ops(model, lr.transpose(2, 0, 1)[None].copy())["image.out"][0].transpose(1, 2, 0)
    assert abs(psnr_y(sr_int.astype(np.uint8), hr, 2) - psnr_y(sr_float, hr, 2)) < 0.01


@pytest.mark.parametrize("arch,bits,kw", [("srresnet", "4/4/8", {}), ("edsr", "8/8/8", {"head_pad": "mean"})])
def test_engines_agree_bit_for_bit(arch, bits, kw):
    cfg, params, state = calibrated(arch, 2, bits, **kw)
    model = convert(cfg, params, state)
    assert_engines_agree(model, photo_crop(20).transpose(2, 0, 1)[None].copy(), "bitplane")


def assert_engines_agree(model, x, engine):
    """Every tensor and accumulator of `engine` equals the plain engine's."""
    rec_plain, rec = {}, {}
    plain = run_ops(model, x, "plain", rec_plain)
    got = run_ops(model, x, engine, rec)
    for name in plain:
        assert np.array_equal(plain[name], got[name]), name
    for name in rec_plain:
        assert np.array_equal(rec_plain[name], rec[name]), name


def test_accumulator_bounds_hold():
    cfg, params, state = calibrated("edsr", 2, "8/8/8")
    model = convert(cfg, params, state)
    rec = {}
    run_ops(model, photo_crop(32).transpose(2, 0, 1)[None].copy(), record=rec)
    for op in model.ops:
        if op.kind == "conv":
            assert int(np.abs(rec[op.name + ".acc"]).max()) <= op.acc_bound
            assert op.acc_dtype == ("int32" if op.acc_bound < 2 ** 31 else "int64")
            assert rec[op.name + ".acc"].dtype == np.dtype(op.acc_dtype)


def test_conversion_refuses_what_it_cannot_represent():
    fp = preset("srresnet", 2, "32/32/32", blocks=1, channels=4)
    params, state = init_model(fp, np.random.default_rng(0))
    with pytest.raises(ValueError, match="not fully quantized"):
        convert(fp, params, state)
    cfg = fp.with_bits("8/8/32")
    with pytest.raises(ValueError, match="not fully quantized"):
        convert(cfg, *quantize_model(params, state, cfg))


def test_infer_command(tmp_path, capsys):
    cfg, params, state = calibrated("srresnet", 2, "8/8/8")
    ckpt = tmp_path / "q.npz"
    save_checkpoint(str(ckpt), Checkpoint(cfg, params, state, {}, {}))
    from fqsr_ref.data.images import write_image
    write_image(str(tmp_path / "in.png"), photo_crop(16))
    out = tmp_path / "out.png"
    assert infer_main(["--checkpoint", str(ckpt), "--image", str(tmp_path / "in.png"),
                       "--out", str(out), "--engine", "bitplane"]) == 0
    assert read_image(str(out)).shape == (32, 32, 3)
    assert infer_main(["--checkpoint", str(tmp_path / "missing.npz"), "--image",
                       str(tmp_path / "in.png"), "--out", str(tmp_path / "out2.png")]) == 2
    assert "error: checkpoint" in capsys.readouterr().err


def test_head_pad_reads_the_mean_codes_outside_the_image():
    """head_pad "mean": the head's accumulators are those of a conv whose taps outside
    the image read the codes (114, 111, 103), summed here as written."""
    cfg, params, state = calibrated("edsr", 2, "8/8/8", head_pad="mean")
    model = convert(cfg, params, state)
    op = model.ops[0]
    assert op.name == "head" and op.pad_value == (114, 111, 103)
    x = photo_crop(9)
    rec = {}
    run_ops(model, x.transpose(2, 0, 1)[None].copy(), record=rec)
    xp = np.stack([np.pad(x[:, :, c].astype(np.int64), 1, constant_values=op.pad_value[c]) for c in range(3)])
    want = np.zeros((op.weight.shape[0], 9, 9), np.int64) + op.bias[:, None, None]
    for i in range(3):
        for j in range(3):
            want += np.einsum("oc,chw->ohw", op.weight[:, :, i, j].astype(np.int64), xp[:, i:i + 9, j:j + 9])
    assert np.array_equal(rec["head.acc"][0], want)
    assert convert(*calibrated("edsr", 2, "8/8/8")).ops[0].pad_value is None   # the models trained here
