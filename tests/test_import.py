"""Import of PyTorch weights (.safetensors): the imported model computes what the PyTorch
module computes.

Each test builds a state dict with random weights and the key names of the published
module (EDSR-PyTorch's EDSR, BasicSR's EDSR, the FQSR authors' SRResNet), saves it with
safetensors, imports it, and compares fqsr_ref's float64 forward with the module's
forward written here from its published definition: plain loops and np.einsum, not
the project's conv.
"""
import dataclasses

import numpy as np
import pytest
from safetensors.numpy import save_file

from fqsr_ref import importer
from fqsr_ref.models import Pass, sr_forward

DIV2K = np.array([0.4488, 0.4371, 0.4040])


# ------------------------------------------------------------- the published modules


def conv(x, w, b=None):
    """nn.Conv2d(padding=K // 2), stride 1: x (C, H, W), w (O, C, K, K)."""
    c, h, wd = x.shape
    k = w.shape[2]
    p = k // 2
    xp = np.zeros((c, h + 2 * p, wd + 2 * p))
    xp[:, p:p + h, p:p + wd] = x
    y = np.zeros((w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            y += np.einsum("oc,chw->ohw", w[:, :, i, j], xp[:, i:i + h, j:j + wd])
    return y if b is None else y + b[:, None, None]


def shuffle(x, r):
    """nn.PixelShuffle(r)."""
    c, h, w = x.shape
    y = np.zeros((c // (r * r), h * r, w * r))
    for ch in range(c // (r * r)):
        for i in range(r):
            for j in range(r):
                y[ch, i::r, j::r] = x[ch * r * r + i * r + j]
    return y


def prelu(x, a):
    return np.where(x >= 0, x, a * x)


def bn_eval(x, sd, key, eps=1e-5):
    g, b, m, v = (sd[f"{key}.{n}"] for n in ("weight", "bias", "running_mean", "running_var"))
    return (x - m[:, None, None]) / np.sqrt(v[:, None, None] + eps) * g[:, None, None] + b[:, None, None]


def stages(scale):
    return [2, 2] if scale == 4 else [scale]


def edsr_pytorch_forward(sd, x, blocks, scale, res_scale):
    """EDSR-PyTorch: sub_mean (1x1 conv), head, ResBlocks (conv ReLU conv, x res_scale, + x),
    body.<B> conv, + head output, Upsampler (conv, shuffle per stage), tail.1, add_mean.
    The FQSR authors' EDSR with --keyword PReLU: the ReLU is nn.PReLU() (one slope),
    body.<i>.body.1."""
    cv = lambda t, k: conv(t, sd[k + ".weight"], sd[k + ".bias"])
    x = cv(x, "sub_mean")
    x = cv(x, "head.0")
    res = x
    for i in range(blocks):
        slope = sd.get(f"body.{i}.body.1.weight", np.zeros(1))   # ReLU = PReLU with slope 0
        t = cv(prelu(cv(res, f"body.{i}.body.0"), slope), f"body.{i}.body.2")
        res = res + t * res_scale
    res = cv(res, f"body.{blocks}") + x
    for j, r in enumerate(stages(scale)):
        res = shuffle(cv(res, f"tail.0.{2 * j}"), r)
    return cv(cv(res, "tail.1"), "add_mean")


def basicsr_edsr_forward(sd, x01, blocks, scale, res_scale, img_range):
    """BasicSR EDSR: (x - mean) * img_range, conv_first, ResidualBlockNoBN, conv_after_body,
    + feat, Upsample, conv_last, / img_range + mean. Input and output in [0, 1]."""
    cv = lambda t, k: conv(t, sd[k + ".weight"], sd[k + ".bias"])
    x = (x01 - DIV2K[:, None, None]) * img_range
    x = cv(x, "conv_first")
    res = x
    for i in range(blocks):
        res = res + cv(np.maximum(cv(res, f"body.{i}.conv1"), 0), f"body.{i}.conv2") * res_scale
    res = cv(res, "conv_after_body") + x
    for j, r in enumerate(stages(scale)):
        res = shuffle(cv(res, f"upsample.{2 * j}"), r)
    return cv(res, "conv_last") / img_range + DIV2K[:, None, None]


def fqsr_srresnet_forward(sd, x, blocks, scale):
    """The FQSR authors' _NetG (PReLU keyword): conv_input, relu, residual blocks
    (conv1 in1 relu conv2 in2, + x), conv_mid bn_mid + head output, upscale (conv,
    shuffle, PReLU per stage), conv_output. No biases."""
    cv = lambda t, k: conv(t, sd[k + ".weight"])
    out = prelu(cv(x, "conv_input"), sd["relu.weight"])
    residual = out
    for i in range(blocks):
        r = f"residual.{i}"
        t = prelu(bn_eval(cv(out, f"{r}.conv1"), sd, f"{r}.in1"), sd[f"{r}.relu.weight"])
        out = bn_eval(cv(t, f"{r}.conv2"), sd, f"{r}.in2") + out
    out = bn_eval(cv(out, "conv_mid"), sd, "bn_mid") + residual
    name = "upscale4x" if scale == 4 else "upscale2x"
    for j in range(len(stages(scale))):
        out = prelu(shuffle(cv(out, f"{name}.{3 * j}"), 2), sd[f"{name}.{3 * j + 2}.weight"])
    return cv(out, "conv_output")


# ------------------------------------------------------------- random state dicts


def rand_conv(rng, sd, key, cout, cin, k, bias=True):
    sd[key + ".weight"] = rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)
    if bias:
        sd[key + ".bias"] = rng.standard_normal(cout) * 0.1


def rand_bn(rng, sd, key, c):
    sd[key + ".weight"] = 1 + 0.2 * rng.standard_normal(c)
    sd[key + ".bias"] = 0.1 * rng.standard_normal(c)
    sd[key + ".running_mean"] = 0.2 * rng.standard_normal(c)
    sd[key + ".running_var"] = 0.5 + rng.random(c)
    sd[key + ".num_batches_tracked"] = np.array(1234, np.int64)


def edsr_state_dict(rng, c, blocks, scale, rgb_range=255.0):
    sd = {}
    eye = np.eye(3).reshape(3, 3, 1, 1)
    sd["sub_mean.weight"], sd["sub_mean.bias"] = eye, -rgb_range * DIV2K
    rand_conv(rng, sd, "head.0", c, 3, 3)
    for i in range(blocks):
        rand_conv(rng, sd, f"body.{i}.body.0", c, c, 3)
        rand_conv(rng, sd, f"body.{i}.body.2", c, c, 3)
    rand_conv(rng, sd, f"body.{blocks}", c, c, 3)
    for j, r in enumerate(stages(scale)):
        rand_conv(rng, sd, f"tail.0.{2 * j}", r * r * c, c, 3)
    rand_conv(rng, sd, "tail.1", 3, c, 3)
    sd["add_mean.weight"], sd["add_mean.bias"] = eye.copy(), rgb_range * DIV2K
    return sd


def basicsr_edsr_state_dict(rng, c, blocks, scale):
    sd = {}
    rand_conv(rng, sd, "conv_first", c, 3, 3)
    for i in range(blocks):
        rand_conv(rng, sd, f"body.{i}.conv1", c, c, 3)
        rand_conv(rng, sd, f"body.{i}.conv2", c, c, 3)
    rand_conv(rng, sd, "conv_after_body", c, c, 3)
    for j, r in enumerate(stages(scale)):
        rand_conv(rng, sd, f"upsample.{2 * j}", r * r * c, c, 3)
    rand_conv(rng, sd, "conv_last", 3, c, 3)
    return sd


def fqsr_srresnet_state_dict(rng, c, blocks):
    slope = lambda: np.array([0.1 + 0.3 * rng.random()])
    sd = {}
    rand_conv(rng, sd, "conv_input", c, 3, 9, bias=False)
    sd["relu.weight"] = slope()
    for i in range(blocks):
        r = f"residual.{i}"
        rand_conv(rng, sd, f"{r}.conv1", c, c, 3, bias=False)
        rand_bn(rng, sd, f"{r}.in1", c)
        sd[f"{r}.relu.weight"] = slope()
        rand_conv(rng, sd, f"{r}.conv2", c, c, 3, bias=False)
        rand_bn(rng, sd, f"{r}.in2", c)
    rand_conv(rng, sd, "conv_mid", c, c, 3, bias=False)
    rand_bn(rng, sd, "bn_mid", c)
    for name, n in (("upscale4x", 2), ("upscale2x", 1)):   # _NetG builds both
        for j in range(n):
            rand_conv(rng, sd, f"{name}.{3 * j}", 4 * c, c, 3, bias=False)
            sd[f"{name}.{3 * j + 2}.weight"] = slope()
    rand_conv(rng, sd, "conv_output", 3, c, 9, bias=False)
    return sd


def save(tmp_path, sd, name="w.safetensors", prefix=""):
    path = tmp_path / name
    save_file({prefix + k: np.require(v, requirements="C") for k, v in sd.items()}, str(path))
    return path


def ours(imported, x01):
    """fqsr_ref's float64 forward of the import, in the model's pixel units."""
    cfg = imported.config
    ps = Pass(imported.params, imported.state, cfg, torch_mean_shift=True)
    y, _ = sr_forward(ps, cfg, x01[None])
    return y[0] * cfg.pixel_range


def assert_close(got, want):
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err < 1e-12, f"relative error {err:.2e}"


# ------------------------------------------------------------- forward agreement


@pytest.mark.parametrize("scale,prefix,res_scale,rgb_range", [
    (2, "", 1.0, 255.0), (3, "module.", 0.1, 255.0), (4, "model.", 1.0, 1.0)])
def test_edsr_pytorch_forward(tmp_path, scale, prefix, res_scale, rgb_range):
    rng = np.random.default_rng(scale)
    c, blocks = 4, 2
    sd = edsr_state_dict(rng, c, blocks, scale, rgb_range)
    imported = importer.import_weights(save(tmp_path, sd, prefix=prefix), res_scale=res_scale)
    cfg = imported.config
    assert (imported.layout, cfg.arch, cfg.scale, cfg.blocks, cfg.channels, cfg.pixel_range,
            cfg.res_scale) == ("edsr", "edsr", scale, blocks, c, rgb_range, res_scale)
    x01 = rng.random((3, 7, 6))
    want = edsr_pytorch_forward(sd, x01 * rgb_range, blocks, scale, res_scale)
    assert_close(ours(imported, x01), want)


@pytest.mark.parametrize("scale", [2, 4])
def test_fqsr_edsr_prelu_forward(tmp_path, scale):
    """The FQSR authors' EDSR (--keyword PReLU; both their EDSR configs): a one-slope
    PReLU in every block, keys body.<i>.body.1.weight; the float import and its
    round trip through the export."""
    rng = np.random.default_rng(30 + scale)
    c, blocks = 4, 3
    sd = edsr_state_dict(rng, c, blocks, scale)
    for i in range(blocks):
        sd[f"body.{i}.body.1.weight"] = np.array([rng.uniform(-0.3, 0.5)])
    imported = importer.import_weights(save(tmp_path, sd))
    cfg = imported.config
    assert (cfg.arch, cfg.block_act, cfg.blocks) == ("edsr", "prelu", blocks)
    assert "PReLU blocks" in importer.describe(imported)
    x01 = rng.random((3, 7, 6))
    assert_close(ours(imported, x01), edsr_pytorch_forward(sd, x01 * 255, blocks, scale, 1.0))
    out = importer.export_edsr(cfg, imported.params, imported.state)
    assert set(out) == set(sd) and np.array_equal(out["body.2.body.1.weight"],
                                                  sd["body.2.body.1.weight"].astype(np.float32))
    del sd["body.1.body.1.weight"]   # one block without its PReLU: named, not taken as ReLU
    assert "missing key body.1.body.1.weight" in refusal(save(tmp_path, sd, "b.safetensors"))


def test_edsr_mean_shift_at_the_border(tmp_path):
    """PyTorch zero-pads x - mean. fqsr_ref's deployed head folds the mean into its bias
    and pads x: with zero padding (the models trained here) the border sees -mean; an
    import pads with the mean's image codes (head_pad "mean"), which differs from PyTorch
    by under half a code on border taps only."""
    rng = np.random.default_rng(5)
    sd = edsr_state_dict(rng, 4, 1, 2)
    imported = importer.import_weights(save(tmp_path, sd))
    assert imported.config.head_pad == "mean"
    x01 = rng.random((3, 16, 16))
    torch = ours(imported, x01)

    def deployed(head_pad):
        cfg = dataclasses.replace(imported.config, head_pad=head_pad)
        y, _ = sr_forward(Pass(imported.params, imported.state, cfg), cfg, x01[None])
        return np.abs(y[0] * 255 - torch)

    zero, mean = deployed("zero"), deployed("mean")
    # The head's border error spreads one LR pixel per conv (block x2, trunk, upsampler:
    # 4), then x2 and one HR pixel for the tail: 2 * 5 + 1 = 11 HR pixels.
    assert zero[:, 11:-11, 11:-11].max() < 1e-9 and mean[:, 11:-11, 11:-11].max() < 1e-9
    # The pad code is within half a code of 255 m: the border moves by 1/114 of zero's
    codes = np.floor(DIV2K * 255 + 0.5)
    assert np.abs(codes - DIV2K * 255).max() <= 0.5
    assert 1e-6 < mean.max() < zero.max() * np.abs(codes - DIV2K * 255).max() / (DIV2K * 255).min() * 1.01


def test_integer_edsr_equals_pytorch_on_the_border(tmp_path):
    """The integer 8/8/8 model of an imported EDSR (PTQ, DAIA on procedural batches)
    against the float64 PyTorch module on a whole photo crop, border included: the mean
    pad keeps the outer ring as close as the interior (zero padding: ~25 dB there)."""
    from fqsr_ref.data.dataset import ProceduralSource
    from fqsr_ref.integer.model import convert
    from fqsr_ref.integer.run import run_image
    from fqsr_ref.models import quantized_start
    from fqsr_ref.quantize import calibrate
    from test_integer_model import photo_crop

    rng = np.random.default_rng(7)
    sd = edsr_state_dict(rng, 16, 2, 2)
    for k in sd:   # a trained EDSR's branches are small against the stream
        if k.startswith("body") and k.endswith(".weight"):
            sd[k] = sd[k] * 0.3
    imported = importer.import_weights(save(tmp_path, sd))
    lr = photo_crop(44)[:36]
    want = np.clip(edsr_pytorch_forward(sd, lr.transpose(2, 0, 1).astype(np.float64), 2, 2, 1.0), 0, 255)
    cfg = imported.config.with_bits("8/8/8")
    params, state = quantized_start(imported.config, imported.params, imported.state, cfg)
    params, state = calibrate(cfg, params, state, ProceduralSource(), 20, 16, 48, 0)
    sr = run_image(convert(cfg, params, state), lr).transpose(2, 0, 1).astype(np.float64)
    err = (sr - want) ** 2
    ring = np.ones(err.shape[1:], bool)
    ring[8:-8, 8:-8] = False   # the 4 LR pixels the head's padding reaches through the graph
    db = lambda e: 10 * np.log10(255 ** 2 / e.mean())
    whole, border, interior = db(err), db(err[:, ring]), db(err[:, ~ring])
    print(f"whole {whole:.2f} dB, ring {border:.2f} dB, interior {interior:.2f} dB")
    assert whole >= 40 and border >= interior - 0.5, (whole, border, interior)


@pytest.mark.parametrize("scale", [3, 4])
def test_basicsr_edsr_forward(tmp_path, scale):
    rng = np.random.default_rng(10 + scale)
    sd = basicsr_edsr_state_dict(rng, 4, 2, scale)
    imported = importer.import_weights(save(tmp_path, sd, prefix="module."), res_scale=0.5)
    assert imported.layout == "basicsr_edsr" and imported.config.pixel_range == 255
    x01 = rng.random((3, 6, 5))
    want = basicsr_edsr_forward(sd, x01, 2, scale, 0.5, 255.0)
    assert_close(ours(imported, x01) / 255, want)


@pytest.mark.parametrize("scale", [2, 4])
def test_fqsr_srresnet_forward(tmp_path, scale):
    rng = np.random.default_rng(20 + scale)
    c, blocks = 4, 2
    sd = fqsr_srresnet_state_dict(rng, c, blocks)
    imported = importer.import_weights(save(tmp_path, sd), scale=scale, arch="fqsr_lite")
    cfg = imported.config
    assert (cfg.arch, cfg.scale, cfg.blocks, cfg.channels, cfg.pixel_range) == \
        ("fqsr_lite", scale, blocks, c, 255.0)
    x01 = rng.random((3, 5, 6))
    want = fqsr_srresnet_forward(sd, x01 * 255, blocks, scale)
    assert_close(ours(imported, x01), want)


def test_float32_file_and_float_upscaler(tmp_path):
    """A float32 file (what PyTorch saves) and the uint8 upscaler evaluate uses."""
    rng = np.random.default_rng(3)
    sd = edsr_state_dict(rng, 4, 1, 2)
    sd32 = {k: v.astype(np.float32) for k, v in sd.items()}
    imported = importer.import_weights(save(tmp_path, sd32))
    assert imported.config.pixel_range == 255.0
    lr = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    sr = importer.float_upscaler(imported)(lr)
    sd64 = {k: v.astype(np.float64) for k, v in sd32.items()}
    want = edsr_pytorch_forward(sd64, lr.transpose(2, 0, 1).astype(np.float64), 1, 2, 1.0)
    want = np.clip(np.floor(want + 0.5), 0, 255).transpose(1, 2, 0)
    # float32 arithmetic: a value within ~1e-4 of a rounding boundary may land on either side
    assert sr.shape == (12, 10, 3) and np.abs(sr.astype(int) - want).max() <= 1


def test_export_round_trip(tmp_path):
    """An fqsr_ref FP EDSR exported in EDSR-PyTorch layout imports to the same arrays."""
    from fqsr_ref.models import init_model, preset

    cfg = preset("edsr", 2, blocks=2, channels=4, pixel_range=1.0)
    params, state = init_model(cfg, np.random.default_rng(0))
    params = {k: v.astype(np.float32) for k, v in params.items()}
    path = tmp_path / "x.safetensors"
    importer.save_safetensors(path, importer.export_edsr(cfg, params, state))
    imported = importer.import_weights(path)
    # the file is EDSR-PyTorch's, which subtracts the mean before padding: head_pad mean
    assert imported.config == dataclasses.replace(cfg, head_pad="mean")
    assert set(imported.params) == set(params)
    for k in params:
        assert np.array_equal(imported.params[k], params[k]), k


# ------------------------------------------------------------- refusals, one line each


def refusal(path, **kw):
    with pytest.raises(ValueError) as info:
        importer.import_weights(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


def test_msrresnet_refused(tmp_path):
    rng = np.random.default_rng(0)
    sd = {}
    rand_conv(rng, sd, "conv_first", 4, 3, 3)
    rand_conv(rng, sd, "body.0.conv1", 4, 4, 3)
    rand_conv(rng, sd, "body.0.conv2", 4, 4, 3)
    rand_conv(rng, sd, "upconv1", 16, 4, 3)
    rand_conv(rng, sd, "conv_hr", 4, 4, 3)
    rand_conv(rng, sd, "conv_last", 3, 4, 3)
    msg = refusal(save(tmp_path, sd))
    assert "MSRResNet" in msg and "bilinear" in msg


def test_key_errors_name_the_key(tmp_path):
    rng = np.random.default_rng(1)
    base = edsr_state_dict(rng, 4, 2, 2)

    def variant(name, **changes):
        sd = dict(base)
        for k, v in changes.items():
            k = k.replace("__", ".")
            if v is None:
                del sd[k]
            else:
                sd[k] = v
        return save(tmp_path, sd, name)

    assert "missing key body.1.body.2.bias" in refusal(variant("a.safetensors", body__1__body__2__bias=None))
    assert "unexpected key extra.weight" in refusal(variant("b.safetensors", extra__weight=np.zeros(2)))
    msg = refusal(variant("c.safetensors", tail__1__weight=np.zeros((3, 4, 5, 5))))
    assert "tail.1.weight has shape (3, 4, 5, 5), expected (3, 4, 3, 3)" in msg
    bad = base["head.0.bias"].copy()
    bad[1] = np.nan
    assert "head.0.bias holds NaN" in refusal(variant("d.safetensors", head__0__bias=bad))
    assert "another rgb_mean" in refusal(variant("e.safetensors", sub_mean__bias=-255 * np.array([0.5, 0.5, 0.5])))
    assert "rgb_std" in refusal(variant("f.safetensors", add_mean__weight=2 * np.eye(3).reshape(3, 3, 1, 1)))
    assert "an x2 model" in refusal(variant("g.safetensors"), scale=4)
    assert "missing key tail.0.0.weight" in refusal(variant("j.safetensors", tail__0__0__weight=None))
    msg = refusal(variant("k.safetensors", tail__0__0__weight=np.zeros((8, 4, 3, 3))))
    assert "tail.0.0.weight has shape (8, 4, 3, 3): not the first conv" in msg
    assert "--rgb-range 1" in refusal(variant("h.safetensors"), rgb_range=1.0)
    q = variant("i.safetensors", **{"head__0__quant_weight__clip_val": np.ones(1)})
    assert "full-precision checkpoint" in refusal(q)


def test_fqsr_srresnet_needs_its_scale(tmp_path):
    sd = fqsr_srresnet_state_dict(np.random.default_rng(2), 4, 1)
    path = save(tmp_path, sd)
    assert "--scale 2 or 4" in refusal(path)
    assert "x2 and x4" in refusal(path, scale=3)
    del sd["residual.0.relu.weight"]
    assert "missing key residual.0.relu.weight" in refusal(save(tmp_path, sd, "b.safetensors"), scale=2)


def test_pickles_and_junk_refused(tmp_path):
    pth = tmp_path / "edsr_x2.pth"
    pth.write_bytes(b"\x80\x02not read")
    msg = refusal(pth)
    assert "weights_only=True" in msg and "edsr_x2.safetensors" in msg and "save_file" in msg
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello")
    assert "not a readable .safetensors file" in refusal(junk)
    assert "no such file" in refusal(tmp_path / "none.safetensors")


def test_evaluate_command_line(tmp_path, capsys):
    """evaluate --weights scores the float import; a bad file is one line, exit 2."""
    from fqsr_ref import evaluate
    from fqsr_ref.data.images import write_image

    rng = np.random.default_rng(4)
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    write_image(str(hr_dir / "a.png"), rng.integers(0, 256, (32, 28, 3), dtype=np.uint8))
    path = save(tmp_path, edsr_state_dict(rng, 4, 1, 2))
    assert evaluate.main(["--weights", str(path), "--hr-dir", str(hr_dir), "--scale", "2"]) == 0
    assert "mean" in capsys.readouterr().out
    sd = edsr_state_dict(rng, 4, 1, 2)
    del sd["tail.1.bias"]
    bad = save(tmp_path, sd, "bad.safetensors")
    assert evaluate.main(["--weights", str(bad), "--hr-dir", str(hr_dir), "--scale", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "tail.1.bias" in err


def test_torch_mean_shift_is_for_float_models(tmp_path):
    """A quantized EDSR reads the image codes: its head always folds the mean (SPEC 5.1)."""
    from fqsr_ref.models import quantize_model

    imported = importer.import_weights(save(tmp_path, edsr_state_dict(np.random.default_rng(6), 4, 1, 2)))
    cfg = imported.config.with_bits("8/8/8")
    params, state = quantize_model(imported.params, imported.state, cfg)
    with pytest.raises(ValueError, match="float model only"):
        sr_forward(Pass(params, state, cfg, torch_mean_shift=True), cfg, np.zeros((1, 3, 4, 4)))


# ------------------------------------------------------------- layouts that are not supported


def foreign_state_dict(kind):
    """A few keys of each published layout fqsr_ref does not import (tiny shapes; the
    names are the modules', e.g. RCAN's ResidualGroup > RCAB > CALayer.conv_du)."""
    w = lambda *shape: np.zeros(shape, np.float32)
    if kind == "rcan":
        return {"sub_mean.weight": w(3, 3, 1, 1), "sub_mean.bias": w(3), "head.0.weight": w(4, 3, 3, 3),
                "head.0.bias": w(4), "body.0.body.0.body.0.weight": w(4, 4, 3, 3),
                "body.0.body.0.body.0.bias": w(4), "body.0.body.0.body.3.conv_du.0.weight": w(1, 4, 1, 1),
                "body.0.body.0.body.3.conv_du.2.weight": w(4, 1, 1, 1), "body.0.body.1.weight": w(4, 4, 3, 3),
                "body.1.weight": w(4, 4, 3, 3), "tail.0.0.weight": w(16, 4, 3, 3), "tail.1.weight": w(3, 4, 3, 3)}
    if kind == "swinir":
        return {"conv_first.weight": w(4, 3, 3, 3), "conv_first.bias": w(4), "patch_embed.norm.weight": w(4),
                "layers.0.residual_group.blocks.0.norm1.weight": w(4),
                "layers.0.residual_group.blocks.0.attn.relative_position_bias_table": w(9, 2),
                "layers.0.conv.weight": w(4, 4, 3, 3), "conv_after_body.weight": w(4, 4, 3, 3),
                "upsample.0.weight": w(16, 4, 3, 3), "conv_last.weight": w(3, 4, 3, 3)}
    if kind == "rrdbnet":
        return {"conv_first.weight": w(4, 3, 3, 3), "body.0.rdb1.conv1.weight": w(2, 4, 3, 3),
                "body.0.rdb1.conv5.weight": w(4, 12, 3, 3), "conv_body.weight": w(4, 4, 3, 3),
                "conv_up1.weight": w(4, 4, 3, 3), "conv_hr.weight": w(4, 4, 3, 3), "conv_last.weight": w(3, 4, 3, 3)}
    if kind == "msrresnet":
        return {"conv_first.weight": w(4, 3, 3, 3), "body.0.conv1.weight": w(4, 4, 3, 3),
                "body.0.conv2.weight": w(4, 4, 3, 3), "upconv1.weight": w(16, 4, 3, 3),
                "conv_hr.weight": w(4, 4, 3, 3), "conv_last.weight": w(3, 4, 3, 3)}
    if kind == "resnet":
        return {"conv1.weight": w(4, 3, 7, 7), "bn1.weight": w(4), "layer1.0.conv1.weight": w(4, 4, 3, 3),
                "layer1.0.bn1.running_mean": w(4), "layer2.1.conv2.weight": w(4, 4, 3, 3),
                "fc.weight": w(10, 4), "fc.bias": w(10)}
    if kind == "vgg":
        return {"features.0.weight": w(4, 3, 3, 3), "features.0.bias": w(4), "classifier.0.weight": w(10, 4)}
    return {"encoder.conv.weight": w(4, 3, 3, 3), "decoder.conv.weight": w(3, 4, 3, 3)}


@pytest.mark.parametrize("kind,names", [
    ("rcan", "an RCAN"), ("swinir", "a SwinIR"), ("rrdbnet", "an RRDBNet"), ("msrresnet", "MSRResNet"),
    ("resnet", "a classifier"), ("vgg", "a classifier"), ("unknown", "no known layout")])
def test_unsupported_layouts_say_what_the_file_is(tmp_path, kind, names):
    """One line: what the file is, what its keys look like, which layouts are supported;
    never the first missing key of a layout it is not."""
    msg = refusal(save(tmp_path, foreign_state_dict(kind)))
    assert names in msg and "supported: edsr" in msg and "fqsr_srresnet" in msg, msg
    assert "missing key" not in msg and "unexpected key" not in msg, msg
    if kind != "msrresnet":
        assert "keys like" in msg and "<i>" in msg, msg
    assert refusal(save(tmp_path, foreign_state_dict(kind), "forced.safetensors"), layout="edsr") == \
        msg.replace(str(tmp_path / "w.safetensors"), str(tmp_path / "forced.safetensors"))


def test_key_shapes_write_indices_as_i():
    assert importer.key_shapes(["body.0.body.2.weight", "body.11.body.2.weight", "head.0.bias"]) == \
        "body.<i>.body.<i>.weight, head.<i>.bias (2 patterns, 3 keys)"
