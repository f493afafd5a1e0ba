"""fqsr_ref beside PyTorch (issues 13 and 14): the import computes what PyTorch computes, and how fast.

    OPENBLAS_NUM_THREADS=1 /work/torchvenv/bin/python tools/compare_pytorch.py [--skip-speed] [--bitplane-256]

PyTorch is not a dependency of fqsr_ref: run this from a separate venv that has a CPU
build of torch (`python -m venv tv && tv/bin/pip install torch --index-url
https://download.pytorch.org/whl/cpu && tv/bin/pip install -e ".[test]"`).

1. Import check: the published PyTorch modules, written here from their definitions
   (EDSR-PyTorch's EDSR: MeanShift, ResBlock with res_scale, Upsampler, rgb_range;
   BasicSR's EDSR; the FQSR authors' SRResNet `_NetG` with its PReLU keyword: BN in the
   blocks, PReLU, 9x9 head and tail, no biases), random weights and BN statistics, are
   saved with safetensors.torch.save_file, imported by fqsr_ref.importer and run on a
   bundled photograph in float64 and float32. Prints the max abs difference in 0..255
   pixel units; exit 1 if any exceeds the tolerance. Then PTQ: fqsr_ref.quantize on the
   EDSR import, and the mean PSNR of the float import and of the PyTorch model on the
   bundled photographs (evaluate's protocol), which must agree.
2. Speed (issue 13's table), one thread each (torch.set_num_threads(1), OPENBLAS 1),
   cases interleaved round by round, minimum of repeats: PyTorch float32 forward
   (inference_mode) of the authors' SRResNet x2, 16 blocks, 64 channels, beside
   fqsr_ref's float32 forward of its import, the integer plain engine and the bit-plane
   engine of its PTQ (8/8/8); a training step (batch, L1, Adam) of the full model and
   of the tiny model, PyTorch float vs fqsr_ref's train_step (tools/bench_train.py).

Exit status: 0 agreement; 1 a difference above tolerance; 2 torch missing or bad input.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy: one BLAS thread
TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(TOOLS, ".."))
sys.path.insert(0, TOOLS)
import numpy as np  # noqa: E402

try:
    import torch
    from torch import nn
except ImportError:
    torch = None
    nn = None

from fqsr_ref import importer  # noqa: E402
from fqsr_ref.data import photos_dir  # noqa: E402
from fqsr_ref.data.images import float_to_uint8, list_images, read_image  # noqa: E402
from fqsr_ref.models import Pass, cast_floats, sr_forward  # noqa: E402

INSTALL = ("torch is not installed: in a separate venv, pip install torch --index-url "
           "https://download.pytorch.org/whl/cpu (a CPU build; never a dependency of fqsr_ref)")
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)
# Max abs difference of the SR output, in 0..255 pixel units. float64: rounding of two
# summation orders only; float32: well below a grey level (1/500 of one), so the 8-bit
# outputs can differ only at exact rounding ties.
TOL64 = 1e-8
# EDSR only: PyTorch's DIV2K mean is a float32 tensor (relative error up to 6e-8, times
# rgb_range), fqsr_ref's is float64; the float64 check is also run with the exact mean.
TOL64_MEAN = 1e-4
TOL32 = 2e-3
PSNR_TOL = 1e-4   # dB, mean over the bundled photographs (uint8 outputs)


# ------------------------------------------------------------ the published modules
# Written from the modules' definitions (EDSR-PyTorch src/model/{common,edsr}.py,
# BasicSR archs/edsr_arch.py and arch_util.py, billhhh/FQSR src/model/srresnet.py with
# third_party/quantization/models/layers.py's norm and actv for --keyword PReLU).

if nn is not None:
    class MeanShift(nn.Conv2d):
        """EDSR-PyTorch: a frozen 1x1 conv, weight I / std, bias sign * rgb_range * mean / std."""

        def __init__(self, rgb_range, sign=-1, mean=DIV2K_MEAN, std=(1.0, 1.0, 1.0)):
            super().__init__(3, 3, kernel_size=1)
            s = torch.tensor(std)
            self.weight.data = torch.eye(3).view(3, 3, 1, 1) / s.view(3, 1, 1, 1)
            self.bias.data = sign * rgb_range * torch.tensor(mean) / s
            for p in self.parameters():
                p.requires_grad = False

    def conv3(cin, cout, bias=True):
        return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)

    class ResBlock(nn.Module):
        """EDSR-PyTorch: body = conv, ReLU, conv; out = body(x) * res_scale + x."""

        def __init__(self, c, res_scale):
            super().__init__()
            self.body = nn.Sequential(conv3(c, c), nn.ReLU(True), conv3(c, c))
            self.res_scale = res_scale

        def forward(self, x):
            return self.body(x).mul(self.res_scale) + x

    def upsampler_stages(scale):
        return [2, 2] if scale == 4 else [scale]

    class Upsampler(nn.Sequential):
        """EDSR-PyTorch (and BasicSR's Upsample): conv C -> r^2 C, PixelShuffle(r) per stage."""

        def __init__(self, scale, c):
            layers = []
            for r in upsampler_stages(scale):
                layers += [conv3(c, r * r * c), nn.PixelShuffle(r)]
            super().__init__(*layers)

    class EDSRPyTorch(nn.Module):
        """EDSR-PyTorch's EDSR: images in 0..rgb_range."""

        def __init__(self, blocks, c, scale, rgb_range=255.0, res_scale=1.0):
            super().__init__()
            self.sub_mean = MeanShift(rgb_range, -1)
            self.add_mean = MeanShift(rgb_range, 1)
            self.head = nn.Sequential(conv3(3, c))
            self.body = nn.Sequential(*[ResBlock(c, res_scale) for _ in range(blocks)], conv3(c, c))
            self.tail = nn.Sequential(Upsampler(scale, c), conv3(c, 3))

        def forward(self, x):
            x = self.head(self.sub_mean(x))
            res = self.body(x) + x
            return self.add_mean(self.tail(res))

    class ResidualBlockNoBN(nn.Module):
        """BasicSR: identity + conv2(relu(conv1(x))) * res_scale."""

        def __init__(self, c, res_scale):
            super().__init__()
            self.conv1, self.conv2 = conv3(c, c), conv3(c, c)
            self.relu = nn.ReLU(True)
            self.res_scale = res_scale

        def forward(self, x):
            return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale

    class BasicSREDSR(nn.Module):
        """BasicSR's EDSR: images in [0, 1]; (x - mean) * img_range inside."""

        def __init__(self, blocks, c, scale, img_range=255.0, res_scale=1.0):
            super().__init__()
            self.img_range = img_range
            self.register_buffer("mean", torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1), persistent=False)
            self.conv_first = conv3(3, c)
            self.body = nn.Sequential(*[ResidualBlockNoBN(c, res_scale) for _ in range(blocks)])
            self.conv_after_body = conv3(c, c)
            self.upsample = Upsampler(scale, c)
            self.conv_last = conv3(c, 3)

        def forward(self, x):
            mean = self.mean.type_as(x)
            x = self.conv_first((x - mean) * self.img_range)
            res = self.conv_after_body(self.body(x)) + x
            return self.conv_last(self.upsample(res)) / self.img_range + mean

    class FQSRBlock(nn.Module):
        """The authors' _Residual_Block (--keyword PReLU): conv1 in1 relu conv2 in2, + x."""

        def __init__(self, c):
            super().__init__()
            self.conv1 = conv3(c, c, bias=False)
            self.in1 = nn.BatchNorm2d(c)
            self.relu = nn.PReLU()
            self.conv2 = conv3(c, c, bias=False)
            self.in2 = nn.BatchNorm2d(c)

        def forward(self, x):
            return self.in2(self.conv2(self.relu(self.in1(self.conv1(x))))) + x

    class FQSRNetG(nn.Module):
        """The FQSR authors' SRResNet _NetG (--keyword PReLU): images in 0..rgb_range, both
        upsamplers built, the one of `scale` used. bias=True adds biases to the head, the
        upsampler and the tail (fqsr_ref's SRResNet graph; not the authors' key layout)."""

        def __init__(self, blocks, c, scale, bias=False):
            super().__init__()
            self.scale = scale
            self.conv_input = nn.Conv2d(3, c, 9, padding=4, bias=bias)
            self.relu = nn.PReLU()
            self.residual = nn.Sequential(*[FQSRBlock(c) for _ in range(blocks)])
            self.conv_mid = conv3(c, c, bias=False)
            self.bn_mid = nn.BatchNorm2d(c)
            self.upscale4x = nn.Sequential(conv3(c, 4 * c, bias), nn.PixelShuffle(2), nn.PReLU(),
                                           conv3(c, 4 * c, bias), nn.PixelShuffle(2), nn.PReLU())
            self.upscale2x = nn.Sequential(conv3(c, 4 * c, bias), nn.PixelShuffle(2), nn.PReLU())
            self.conv_output = nn.Conv2d(c, 3, 9, padding=4, bias=bias)

        def forward(self, x):
            out = self.relu(self.conv_input(x))
            out = self.bn_mid(self.conv_mid(self.residual(out))) + out
            out = (self.upscale2x if self.scale == 2 else self.upscale4x)(out)
            return self.conv_output(out)


def randomize(model, seed):
    """Random weights (PyTorch's default init from `seed`), and random biases, BN affine
    and running statistics and PReLU slopes, so that every imported value matters."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, MeanShift):
            continue
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
            if m.bias is not None:
                nn.init.normal_(m.bias, 0, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.2)
            nn.init.normal_(m.bias, 0, 0.1)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(1000)
        elif isinstance(m, nn.PReLU):
            nn.init.uniform_(m.weight, 0.05, 0.4)
    return model.eval()


# ------------------------------------------------------------ the cases

class Case:
    """One published module at one geometry, how its images are scaled, how to import it."""

    def __init__(self, name, build, in_range, out_range, import_kw, prefix=""):
        self.name, self.build, self.prefix = name, build, prefix
        self.in_range, self.out_range = in_range, out_range   # model pixel units per [0, 1]
        self.import_kw = import_kw


def cases(blocks=16, c=64):
    """The layouts at paper scale (blocks, c), scales and ranges people train with."""
    return [
        Case(f"EDSR-PyTorch EDSR x2 {blocks}x{c}, rgb_range 255",
             lambda: EDSRPyTorch(blocks, c, 2, 255.0), 255.0, 255.0, {}),
        Case(f"EDSR-PyTorch EDSR x3 {blocks}x{c}, rgb_range 1, res_scale 0.1, 'model.' prefix",
             lambda: EDSRPyTorch(blocks, c, 3, 1.0, 0.1), 1.0, 1.0, {"res_scale": 0.1}, "model."),
        Case(f"BasicSR EDSR x4 {blocks}x{c}, img_range 255",
             lambda: BasicSREDSR(blocks, c, 4, 255.0), 1.0, 1.0, {}),
        Case(f"BasicSR EDSR x2 {blocks}x{c}, img_range 1, res_scale 0.1, 'module.' prefix",
             lambda: BasicSREDSR(blocks, c, 2, 1.0, 0.1), 1.0, 1.0,
             {"rgb_range": 1.0, "res_scale": 0.1}, "module."),
        Case(f"FQSR SRResNet x2 {blocks}x{c}",
             lambda: FQSRNetG(blocks, c, 2), 255.0, 255.0, {"scale": 2}),
        Case(f"FQSR SRResNet x4 {blocks}x{c}",
             lambda: FQSRNetG(blocks, c, 4), 255.0, 255.0, {"scale": 4}),
    ]


def save_state_dict(model, path, prefix=""):
    from safetensors.torch import save_file
    sd = {prefix + k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
          for k, v in model.state_dict().items()}
    save_file(sd, path)


def photo_batch(size):
    """A crop (size x size) of the first bundled photograph as (1, 3, H, W) float64 in [0, 1]."""
    img = read_image(list_images(photos_dir())[0])
    return np.ascontiguousarray(img[:size, :size].transpose(2, 0, 1)[None], np.float64) / 255.0


def torch_forward(model, x01, in_range, out_range, dtype):
    """The PyTorch model's output in 0..255 pixel units."""
    with torch.inference_mode():
        y = model.to(dtype)(torch.from_numpy(x01 * in_range).to(dtype))
    return y.double().numpy() * (255.0 / out_range)


def fqsr_forward(imp, x01, dtype):
    """The import's output in 0..255 pixel units (PyTorch's mean shift, as evaluate --weights)."""
    cfg = imp.config
    ps = Pass(cast_floats(imp.params, dtype), cast_floats(imp.state, dtype), cfg, torch_mean_shift=True,
              keep_cache=False)
    y, _ = sr_forward(ps, cfg, np.ascontiguousarray(x01.astype(dtype)))
    return y.astype(np.float64) * 255.0


def exact_mean(model):
    """The float64 model with the DIV2K mean in float64, as fqsr_ref holds it: PyTorch
    builds it as a float32 tensor (MeanShift's bias rgb_range * mean, BasicSR's buffer),
    which .double() keeps rounded. Isolates that one departure from the rest."""
    mean = torch.tensor(DIV2K_MEAN, dtype=torch.float64)
    for m in model.modules():
        if isinstance(m, MeanShift):
            r = round(float(m.bias.detach().abs().double()[0] / mean[0]), 4)
            m.bias.data = torch.sign(m.bias.detach().double()) * r * mean
        if isinstance(m, BasicSREDSR):
            m.mean = mean.view(1, 3, 1, 1)
    return model


def check_case(case, x01, folder, seed=0):
    """Max |diff| of the import against PyTorch: float64 with the mean as PyTorch stores
    it (float32) and with the exact mean, float32; and the output's scale."""
    model = randomize(case.build(), seed)
    path = os.path.join(folder, "w.safetensors")
    save_state_dict(model, path, case.prefix)
    imp = importer.import_weights(path, **case.import_kw)
    out = {}
    for name, tdt, ndt in (("f64", torch.float64, np.float64), ("f32", torch.float32, np.float32),
                           ("f64_exact_mean", torch.float64, np.float64)):
        if name == "f64_exact_mean":
            model = exact_mean(model.double())
        ref = torch_forward(model, x01, case.in_range, case.out_range, tdt)
        got = fqsr_forward(imp, x01, ndt)
        if got.shape != ref.shape:
            raise AssertionError(f"{case.name}: output shape {got.shape}, PyTorch {ref.shape}")
        out[name] = float(np.max(np.abs(got - ref)))
        out["scale"] = float(np.max(np.abs(ref)))
    return out


def import_check(blocks, c, size, log=print):
    ok = True
    log(f"import check: random weights, a {size}x{size} crop of {os.path.basename(list_images(photos_dir())[0])}; "
        f"max |fqsr_ref - PyTorch| in 0..255 pixel units (tolerance float64 {TOL64:g}, "
        f"{TOL64_MEAN:g} with PyTorch's float32 DIV2K mean; float32 {TOL32:g})")
    with tempfile.TemporaryDirectory() as folder:
        for case in cases(blocks, c):
            r = check_case(case, photo_batch(size), folder)
            good = r["f64_exact_mean"] <= TOL64 and r["f64"] <= TOL64_MEAN and r["f32"] <= TOL32
            ok &= good
            log(f"  {case.name:<74} float64 {r['f64']:.1e} (exact mean {r['f64_exact_mean']:.1e})  "
                f"float32 {r['f32']:.1e}  (|output| up to {r['scale']:.0f})  "
                f"{'ok' if good else 'ABOVE TOLERANCE'}")
    return ok


# ------------------------------------------------------------ PTQ and PSNR

def torch_upscaler(model, in_range, out_range):
    """lr uint8 (H, W, 3) -> sr uint8, as EDSR-PyTorch's test loop: float32 forward, then
    rounded (fqsr_ref's float_to_uint8: half up, clamped) in 0..255."""
    def sr_fn(lr):
        x = np.asarray(lr, np.float64).transpose(2, 0, 1)[None] / 255.0
        y = torch_forward(model, x, in_range, out_range, torch.float32)
        return float_to_uint8(y[0].transpose(1, 2, 0))
    return sr_fn


def ptq_check(log=print, blocks=16, c=64, calib_batches=4):
    """quantize on the EDSR-PyTorch import; float PSNR of import and PyTorch must agree."""
    from fqsr_ref import quantize
    from fqsr_ref.metrics import evaluate_folder

    model = randomize(EDSRPyTorch(blocks, c, 2, 255.0), 1)
    with tempfile.TemporaryDirectory() as folder:
        w, q = os.path.join(folder, "edsr.safetensors"), os.path.join(folder, "q888.npz")
        save_state_dict(model, w)
        t0 = time.perf_counter()
        code = quantize.main(["--weights", w, "--bits", "8/8/8", "--out", q,
                              "--calib-batches", str(calib_batches), "--batch", "4", "--patch", "48"])
        if code != 0:
            log("  quantize failed")
            return False
        log(f"  fqsr_ref.quantize on the import: {time.perf_counter() - t0:.1f} s")
        imp = importer.import_weights(w)
        _, m_imp = evaluate_folder(importer.float_upscaler(imp), photos_dir(), 2)
        _, m_torch = evaluate_folder(torch_upscaler(model, 255.0, 255.0), photos_dir(), 2)
        from fqsr_ref.checkpoint import load_upscaler
        _, m_q = evaluate_folder(load_upscaler(q), photos_dir(), 2)
    diff = abs(m_imp.psnr - m_torch.psnr)
    log(f"  mean PSNR on the bundled photographs (x2, Y): PyTorch {m_torch.psnr:.6f} dB, float import "
        f"{m_imp.psnr:.6f} dB (difference {diff:.1e} dB, tolerance {PSNR_TOL:g}); PTQ 8/8/8 "
        f"{m_q.psnr:.6f} dB (random weights: the PSNR itself means nothing)")
    return diff <= PSNR_TOL


# ------------------------------------------------------------ speed

def speed(args, log=print):
    import benchmark   # tools/benchmark.py: min_seconds, photo
    import bench_train  # tools/bench_train.py: StepCase, TINY, FULL
    from fqsr_ref import quantize
    from fqsr_ref.data.dataset import ProceduralSource
    from fqsr_ref.integer.model import convert
    from fqsr_ref.integer.tiling import run_image
    from fqsr_ref.models import quantized_start
    from fqsr_ref.trainer import reuse_freed_memory

    torch.set_num_threads(1)
    rows = []
    # The authors' SRResNet x2 16x64, imported, and its PTQ at 8/8/8 (speed does not
    # depend on the values; a few calibration batches).
    model = randomize(FQSRNetG(16, 64, 2), 2).float()
    with tempfile.TemporaryDirectory() as folder:
        w = os.path.join(folder, "srresnet.safetensors")
        save_state_dict(model, w)
        imp = importer.import_weights(w, scale=2)
    cfg = imp.config
    q_cfg = cfg.with_bits("8/8/8")
    qp, qs = quantized_start(cfg, imp.params, imp.state, q_cfg)
    qp, qs = quantize.calibrate(q_cfg, qp, qs, ProceduralSource(), 2, 4, 24, 0)
    int_model = convert(q_cfg, cast_floats(qp, np.float32), qs)
    params32, state32 = cast_floats(imp.params, np.float32), cast_floats(imp.state, np.float32)
    times = {}
    for size in (128, 256):
        lr = benchmark.photo(size, size)
        x = np.ascontiguousarray(lr.transpose(2, 0, 1)[None], np.float32) / np.float32(255)
        xt = torch.from_numpy(x * 255)
        with torch.inference_mode():
            ref = model(xt).numpy()
        got = sr_forward(Pass(params32, state32, cfg, keep_cache=False), cfg, x)[0] * 255
        log(f"  LR {size}: float32 outputs differ by {np.max(np.abs(got - ref)):.1e} (0..255 units)")

        def torch_fwd():
            with torch.inference_mode():
                model(xt)
        cases = {"torch": torch_fwd,
                 "fp32": lambda: sr_forward(Pass(params32, state32, cfg, keep_cache=False), cfg, x),
                 "plain": lambda: run_image(int_model, lr, "plain")}
        if size == 128 or args.bitplane_256:
            cases["bitplane"] = lambda: run_image(int_model, lr, "bitplane")
        t = benchmark.min_seconds(cases, args.repeats)
        times[size] = t
        log(f"  LR {size}: " + ", ".join(f"{k} {v:.3f} s" for k, v in t.items()))
        for k, label in (("fp32", "float32 forward"), ("plain", "integer plain engine"),
                         ("bitplane", "integer bit-plane engine")):
            if k in t:
                rows.append((f"{label}, LR {size}x{size}", f"{t[k]:.2f} s", f"{t['torch']:.2f} s",
                             f"{t[k] / t['torch']:.1f}"))
    if not args.skip_train:
        rows += train_rows(args, bench_train, reuse_freed_memory, log)
    return rows


class TorchStep:
    """PyTorch training steps: forward, L1 in pixel units, backward, Adam (lr 1e-4), on
    batches sampled beforehand from fqsr_ref's procedural source (sampling not timed)."""

    def __init__(self, model, batch, patch, steps, pixel_range=255.0):
        from fqsr_ref.data.dataset import ProceduralSource
        self.model = model.float().train()
        self.opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        src = ProceduralSource()
        self.batches = []
        for k in range(4):
            lr, hr = src.sample(np.random.default_rng([0, k]), batch, patch, 2)
            self.batches.append((torch.from_numpy(np.ascontiguousarray(lr, np.float32) * pixel_range),
                                 torch.from_numpy(np.ascontiguousarray(hr, np.float32) * pixel_range)))
        self.steps, self.k = steps, 0

    def __call__(self):
        for _ in range(self.steps):
            lr, hr = self.batches[self.k % len(self.batches)]
            self.k += 1
            self.opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.l1_loss(self.model(lr), hr)
            loss.backward()
            self.opt.step()


def train_rows(args, bench_train, reuse_freed_memory, log):
    reuse_freed_memory()   # as train_stage (and bench_train) do
    tiny, full = bench_train.TINY, bench_train.FULL
    tiny_steps = 10
    ours = {"tiny_float": bench_train.StepCase(**tiny, bits="32/32/32", steps=tiny_steps),
            "tiny_888": bench_train.StepCase(**tiny, bits="8/8/8", steps=tiny_steps),
            "full_float": bench_train.StepCase(**full, bits="32/32/32", steps=1),
            "full_888": bench_train.StepCase(**full, bits="8/8/8", steps=1)}
    cases = dict(ours)
    cases["torch_tiny"] = TorchStep(EDSRPyTorch(tiny["blocks"], tiny["channels"], 2), tiny["batch"],
                                    tiny["patch"], tiny_steps)
    cases["torch_full"] = TorchStep(FQSRNetG(full["blocks"], full["channels"], 2, bias=True),
                                    full["batch"], full["patch"], 1)
    try:
        t = bench_train.min_seconds(cases, args.repeats)
    finally:
        for case in ours.values():
            case.close()
    for k in ("tiny_float", "tiny_888", "torch_tiny"):
        t[k] /= tiny_steps
    log("  training steps: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.items()))
    return [
        (f"training step, tiny model ({tiny['arch']} {tiny['blocks']}x{tiny['channels']}, batch "
         f"{tiny['batch']} of {tiny['patch']}x{tiny['patch']}; float / 8/8/8)",
         f"{t['tiny_float'] * 1e3:.1f} / {t['tiny_888'] * 1e3:.1f} ms", f"{t['torch_tiny'] * 1e3:.1f} ms (float)",
         f"{t['tiny_float'] / t['torch_tiny']:.1f} / {t['tiny_888'] / t['torch_tiny']:.1f}"),
        (f"training step, full model (SRResNet x2 16x64, batch {full['batch']} of "
         f"{full['patch']}x{full['patch']}; float / 8/8/8)",
         f"{t['full_float']:.2f} / {t['full_888']:.2f} s", f"{t['torch_full']:.2f} s (float)",
         f"{t['full_float'] / t['torch_full']:.1f} / {t['full_888'] / t['torch_full']:.1f}"),
    ]


# ------------------------------------------------------------ main

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--skip-speed", action="store_true", help="only the import and PTQ checks")
    p.add_argument("--skip-train", action="store_true", help="no training step figures")
    p.add_argument("--bitplane-256", action="store_true", help="also time the bit-plane engine at LR 256")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per case (default %(default)s)")
    p.add_argument("--size", type=int, default=96, help="LR crop side of the import check (default %(default)s)")
    args = p.parse_args(argv)
    if torch is None:
        print(f"error: {INSTALL}", file=sys.stderr)
        return 2
    if args.repeats < 1 or args.size < 8:
        print("error: --repeats must be >= 1 and --size >= 8", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, numpy {np.__version__}, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    ok = import_check(16, 64, args.size)
    print("PTQ path (EDSR-PyTorch EDSR x2 16x64, random weights):")
    ok &= ptq_check()
    if not args.skip_speed:
        print("speed: one thread each, interleaved rounds, minimum of "
              f"{args.repeats} (the authors' SRResNet x2 16x64, imported; PTQ 8/8/8 for the integer engines)")
        rows = speed(args)
        print()
        print("| case | fqsr_ref | PyTorch CPU | ratio |")
        print("| --- | --- | --- | --- |")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    print("import check: " + ("all within tolerance" if ok else "DIFFERENCES ABOVE TOLERANCE"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
