"""The FQSR authors' quantized EDSR (billhhh/FQSR, keyword PReLU,dorefa,lsq, their 8/8/8
x2 config and policy) brought in with its learned clip values (quantize
--intervals-from-clip-val, SPEC 5.5).

The authors' fake-quantized forward is written here from their published code, in float64:
every custom conv pads its input with zeros, quantizes it (quant_activation, off for the
head by their policy), quantizes its weight (quant_weight), convolves, adds its float bias
and quantizes the result (quant_output, off for the tail); every residual add quantizes
both operands with one shared quantizer (eltwise.quant; the long add's is off at x2);
LSQ on the dorefa grid, torch.round (ties to even). Each departure of fqsr_ref (SPEC 5.6)
is a switch; with every switch on it must be fqsr_ref's quantized graph, and each one's
cost is measured on its own.
"""
import dataclasses

import numpy as np
import pytest

from fqsr_ref import clipvals, importer
from fqsr_ref.models import Pass, sr_forward
from fqsr_ref.quantize import main as quantize_main
from test_import import DIV2K, edsr_state_dict, prelu, save, shuffle

DEPARTURES = ("grid", "rounding", "once", "bias", "border", "output")
PAD_CODES = np.floor(DIV2K * 255 + 0.5)


def rnd(t, half_up):
    return np.floor(t + 0.5) if half_up else np.round(t)   # np.round: ties to even, as torch.round


def authors_quant(v, clip, bits, signed, d):
    """LSQ: v / c clipped, on the dorefa grid (signed) or the unsigned one; the narrow grid
    with the grid departure."""
    half_up = "rounding" in d
    if not signed:
        n = 2 ** bits - 1
        return rnd(np.clip(v / clip, 0, 1) * n, half_up) / n * clip
    t = np.clip(v / clip, -1, 1)
    if "grid" in d:
        n = 2 ** (bits - 1) - 1
        return rnd(t * n, half_up) / n * clip
    n = 2 ** bits - 1
    return (rnd((t + 1) / 2 * n, half_up) / n * 2 - 1) * clip


def valid_conv(xp, w):
    k = w.shape[2]
    h, wd = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    y = np.zeros((w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            y += np.einsum("oc,chw->ohw", w[:, :, i, j], xp[:, i:i + h, j:j + wd])
    return y


class Authors:
    """Their forward; q: prefix -> [clip, bits, enabled]; record: collects max|v| per
    quantizer instead of quantizing (to give the synthetic model realistic clip values)."""

    def __init__(self, sd, q, blocks, scale, departures=(), record=None):
        self.sd, self.q, self.blocks, self.scale = sd, q, blocks, scale
        self.d, self.record = set(departures), record

    def quant(self, v, prefix, signed=True):
        if self.record is not None:
            self.record[prefix] = max(self.record.get(prefix, 0.0), float(np.abs(v).max()))
            return v
        clip, bits, on = self.q[prefix]
        return authors_quant(v, clip, bits, signed, self.d) if on else v

    def bias(self, b, s_in, prefix):
        """The bias on the accumulator grid (bias departure): s_in x the weight's step."""
        if "bias" not in self.d or self.record is not None:
            return b
        clip, bits, _ = self.q[prefix + ".quant_weight"]
        s = s_in * clip / (2 ** (bits - 1) - 1 if "grid" in self.d else 2 ** bits - 1)
        return np.floor(b / s + 0.5) * s

    def conv(self, name, x, in_scale, act=None, pad=None, bias=None, out_site=None):
        """custom_conv: pad (zeros, or `pad` per channel), quant_activation, conv with the
        quantized weight, + bias, quant_output; with "once" the activation comes before the
        output quantizer and the quantizer is the mapped site's."""
        sd, once = self.sd, "once" in self.d
        pad = np.zeros(x.shape[0]) if pad is None else pad
        xp = np.broadcast_to(pad[:, None, None], (x.shape[0], x.shape[1] + 2, x.shape[2] + 2)).copy()
        xp[:, 1:-1, 1:-1] = x
        if not once:
            xp = self.quant(xp, f"{name}.quant_activation")
        w = self.quant(sd[name + ".weight"], f"{name}.quant_weight")
        b = sd[name + ".bias"] if bias is None else bias
        y = valid_conv(xp, w) + self.bias(b, in_scale, name)[:, None, None]
        if once:
            y = y if act is None else prelu(y, act)
            return y if out_site is None else self.quant(y, out_site)
        y = self.quant(y, f"{name}.quant_output")
        return y if act is None else prelu(y, act)

    def step(self, prefix):
        """The grid step of a quantizer's tensor (the next conv's input scale)."""
        if self.record is not None:
            return 1.0
        clip, bits, _ = self.q[prefix]
        return clip / (2 ** (bits - 1) - 1 if "grid" in self.d else 2 ** bits - 1)

    def add(self, x, t, prefix, out_site):
        if "once" in self.d:
            return self.quant(x + t, out_site)
        return self.quant(t, prefix) + self.quant(x, prefix)

    def forward(self, image):
        """image: (3, H, W) pixel values 0..255 -> (3, sH, sW) in 0..255 units."""
        sd, B, m = self.sd, self.blocks, DIV2K * 255
        once = "once" in self.d
        # sub_mean then zero padding = the image padded with the mean; fqsr_ref: the mean's codes
        pad = PAD_CODES if "border" in self.d else m
        w_sum = lambda w: w.sum(axis=(2, 3)) @ m
        wq = self.quant(sd["head.0.weight"], "head.0.quant_weight")
        h = self.conv("head.0", image, 1.0, pad=pad, bias=sd["head.0.bias"] - w_sum(wq),
                      out_site="head.0.quant_output")
        res, res_in = h, "head.0.quant_output" if once else "body.0.body.0.quant_activation"
        for i in range(B):
            p = f"body.{i}"
            t = self.conv(f"{p}.body.0", res, self.step(res_in), act=sd[f"{p}.body.1.weight"],
                          out_site=f"{p}.body.0.quant_output")
            t = self.conv(f"{p}.body.2", t, self.step(f"{p}.body.0.quant_output" if once else
                                                     f"{p}.body.2.quant_activation"),
                          out_site=f"{p}.body.2.quant_output")
            res = self.add(res, t, f"{p}.eltwise.quant", f"{p}.eltwise.quant")
            res_in = f"{p}.eltwise.quant" if once else f"body.{i + 1}.body.0.quant_activation"
        res_in = res_in if once else f"body.{B}.quant_activation"
        t = self.conv(f"body.{B}", res, self.step(res_in), out_site=f"body.{B}.quant_output")
        res = self.add(h, t, "eltwise.quant", "tail.0.0.quant_activation")
        res_in = "tail.0.0.quant_activation"
        stages = [2, 2] if self.scale == 4 else [self.scale]
        for j, r in enumerate(stages):
            nxt = f"tail.0.{2 * j + 2}" if j + 1 < len(stages) else "tail.1"
            res = shuffle(self.conv(f"tail.0.{2 * j}", res, self.step(res_in),
                                    out_site=f"tail.0.{2 * j}.quant_output"), r)
            res_in = f"tail.0.{2 * j}.quant_output" if once else f"{nxt}.quant_activation"
        y = self.conv("tail.1", res, self.step(res_in), bias=sd["tail.1.bias"] + m)
        if "output" in self.d:
            y = np.clip(np.floor(y + 0.5), 0, 255)
        return y


# ------------------------------------------------------------- the synthetic checkpoint


def conv_names(blocks, scale):
    names = ["head.0"] + [f"body.{i}.body.{k}" for i in range(blocks) for k in (0, 2)] + [f"body.{blocks}"]
    names += [f"tail.0.{2 * j}" for j in range(2 if scale == 4 else 1)] + ["tail.1"]
    return names


def authors_quantized_state_dict(rng, c, blocks, scale, image, bits=8):
    """A float EDSR with the PReLU keyword and the quantizer keys of their 8/8/8 run:
    every conv's quant_activation / quant_weight / quant_output and every eltwise's
    quant / quant_x / quant_y (clip_val, level_num, iteration). The policy's disabled
    quantizers (the head's fm, the tail's ot, the long eltwise at x2) have iteration 0
    and clip_val 1; the others a clip at 0.8 of the float tensor's max|v| on `image`."""
    sd = edsr_state_dict(rng, c, blocks, scale)
    for i in range(blocks):
        sd[f"body.{i}.body.1.weight"] = np.array([rng.uniform(0.05, 0.4)])
    for k in sd:   # a trained EDSR's branches are small against the stream
        if k.startswith("body") and k.endswith(".weight") and ".body.1." not in k:
            sd[k] = sd[k] * 0.3
    sd = {k: v.astype(np.float32).astype(np.float64) for k, v in sd.items()}
    prefixes = [f"{n}.{q}" for n in conv_names(blocks, scale)
                for q in ("quant_activation", "quant_weight", "quant_output")]
    prefixes += [f"body.{i}.eltwise.quant" for i in range(blocks)] + ["eltwise.quant"]
    off = {"head.0.quant_activation", "tail.1.quant_output", "eltwise.quant"}
    record = {}
    Authors(sd, None, blocks, scale, record=record).forward(image)
    q = {}
    for p in prefixes:
        on = p not in off
        clip = float(np.float32(0.8 * record[p])) if on else 1.0
        q[p] = [clip, bits, on]
        keys = [p] + ([p[:-len("quant")] + s for s in ("quant_x", "quant_y")] if p.endswith(".quant") else [])
        for key in keys:
            shape = (1, 1, 1, 1) if p.endswith("quant_weight") else (1,)
            sd[f"{key}.clip_val"] = np.full(shape, clip, np.float32)
            sd[f"{key}.level_num"] = np.array([2.0 ** bits], np.float32)
            sd[f"{key}.iteration"] = np.array([12345.0 if on else 0.0], np.float32)
    return sd, q


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from test_integer_model import photo_crop

    rng = np.random.default_rng(23)
    lr = photo_crop(24)[:20].transpose(2, 0, 1).astype(np.float64)
    sd, q = authors_quantized_state_dict(rng, 8, 2, 2, lr)
    path = save(tmp_path_factory.mktemp("clip"), sd, "authors.safetensors")
    return sd, q, lr, path


def clip_val_checkpoint(path, out, *extra):
    rc = quantize_main(["--weights", str(path), "--intervals-from-clip-val", "--out", str(out), *extra])
    assert rc == 0
    from fqsr_ref.checkpoint import load_checkpoint
    return load_checkpoint(str(out))


def psnr(a, b):
    mse = np.mean((a - b) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def test_every_site_takes_a_clip_value(model, tmp_path, capsys):
    sd, q, lr, path = model
    ck = clip_val_checkpoint(path, tmp_path / "q.npz")
    out = capsys.readouterr().out
    cfg = ck.config
    assert (cfg.bits, cfg.block_act, cfg.head_pad, ck.meta["ptq"]["intervals"]) == \
        ("8/8/8", "prelu", "mean", "clip_val")
    expect = {"head.w": "head.0.quant_weight", "head.out": "head.0.quant_output",
              "blocks.1.conv1.out": "body.1.body.0.quant_output",
              "blocks.1.conv2.out": "body.1.body.2.quant_output",
              "blocks.1.add.out": "body.1.eltwise.quant", "trunk.out": "body.2.quant_output",
              "long_add.out": "tail.0.0.quant_activation",   # their long add is float (policy)
              "up.0.out": "tail.0.0.quant_output", "tail.w": "tail.1.quant_weight"}
    for site, key in expect.items():
        assert f"{site} <- {key}.clip_val" in out
        assert ck.params[site + ".interval"] == np.float32(q[key][0])
        assert int(ck.state[site + ".daia_count"]) == 20


def test_fqsr_ref_graph_is_their_forward_with_every_departure(model, tmp_path):
    """With every switch the reimplementation is fqsr_ref's quantized float64 graph; each
    departure alone is measured against their forward (printed: SPEC 5.6)."""
    from fqsr_ref.integer.model import convert
    from fqsr_ref.integer.run import run_image
    from fqsr_ref.models.graph import cast_floats

    sd, q, lr, path = model
    ck = clip_val_checkpoint(path, tmp_path / "q.npz")
    theirs = Authors(sd, q, 2, 2).forward(lr)
    ours_all = Authors(sd, q, 2, 2, DEPARTURES).forward(lr)
    params = cast_floats(ck.params, np.float64)
    y, _ = sr_forward(Pass(params, ck.state, ck.config), ck.config, lr[None] / 255)
    graph = y[0] * 255
    # Both end in 8-bit pixels (equal here); float op order differs (v / c * n against
    # v / (c / n)), so a code could flip where t sits within rounding error of a half.
    diff = np.abs(graph - ours_all)
    assert np.mean(diff == 0) > 0.99 and diff.max() <= 1, diff.max()
    sr = run_image(convert(ck.config, ck.params, ck.state), lr.transpose(1, 2, 0).astype(np.uint8))
    integer = sr.transpose(2, 0, 1).astype(np.float64)
    assert np.abs(integer - graph).max() <= 1
    lines = [f"integer model vs their forward: {psnr(integer, theirs):.2f} dB",
             f"fqsr_ref graph vs their forward: {psnr(graph, theirs):.2f} dB"]
    for dep in DEPARTURES:
        lines.append(f"{dep} alone: {psnr(Authors(sd, q, 2, 2, [dep]).forward(lr), theirs):.2f} dB")
    print("; ".join(lines))
    assert psnr(integer, theirs) >= 35


def refusal(path, capsys, *extra):
    assert quantize_main(["--weights", str(path), "--intervals-from-clip-val", "--out",
                          str(path) + ".npz", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err


def test_bad_clip_values_name_the_key(model, tmp_path, capsys):
    sd, q, lr, path = model
    cases = [
        ("body.0.body.0.quant_weight.clip_val", np.full((8, 1, 1, 1), 0.5, np.float32),
         "body.0.body.0.quant_weight.clip_val has shape (8, 1, 1, 1)"),
        ("body.1.body.2.quant_output.level_num", np.array([200.0], np.float32), "level_num = 200"),
        ("head.0.quant_output.clip_val", np.array([np.nan], np.float32), "head.0.quant_output.clip_val = nan"),
        ("body.0.eltwise.quant_y.clip_val", np.array([3.0], np.float32), "body.0.eltwise.quant_y differs"),
        ("body.0.body.0.quant_weight.alpha0", np.ones((1, 1, 1, 1), np.float32), "another method"),
        ("body.0.body.2.quant_activation.level_num", np.array([16.0], np.float32),
         "has 4 bits"),
    ]
    for i, (key, value, words) in enumerate(cases):
        bad = dict(sd, **{key: value})
        err = refusal(save(tmp_path, bad, f"b{i}.safetensors"), capsys)
        assert words in err and f"b{i}.safetensors" in err, err
    bad = {k: v for k, v in sd.items() if k != "tail.1.quant_weight.iteration"}
    assert "missing key tail.1.quant_weight.iteration" in refusal(save(tmp_path, bad, "m.safetensors"), capsys)
    floats = {k: v for k, v in sd.items() if not clipvals.is_quantizer_key(k)}
    assert "no quantizer keys" in refusal(save(tmp_path, floats, "f.safetensors"), capsys)
    assert "--bits 4/4/8, but" in refusal(path, capsys, "--bits", "4/4/8")
    # without the flag, the quantizer keys are named with the way to use them
    with pytest.raises(ValueError, match="unexpected key .*intervals-from-clip-val"):
        importer.import_weights(path)
