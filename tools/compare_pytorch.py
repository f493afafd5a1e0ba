"""fqsr_ref beside PyTorch (issues 13 and 14): the import computes what PyTorch computes, and how fast.

    OPENBLAS_NUM_THREADS=1 /work/torchvenv/bin/python tools/compare_pytorch.py [--skip-speed] [--bitplane-256]
    python tools/compare_pytorch.py --upstream-fqsr FQSR_DIR --upstream-edsr EDSR_PYTORCH_DIR

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
2. Speed (issue 13's table), on one thread and on two (torch's pool, OpenBLAS and Numba
   set alike; torch's count asserted in every timed call, and every case's CPU time
   checked against its wall time, so that no figure ran on more threads than it claims),
   cases interleaved round by round, minimum of repeats: PyTorch float32 forward
   (inference_mode) of the authors' SRResNet x2, 16 blocks, 64 channels, as it is and
   with its BN folded (torch.fx's fuse; the ratio is to the faster of the two), beside
   fqsr_ref's float32 forward of its import, the integer int16 engine (its kernel on the
   same n threads), the plain engine and the bit-plane
   engine of its PTQ (8/8/8); a training step (batch, L1, Adam) of the full model and
   of the tiny model, PyTorch float vs fqsr_ref's train_step (tools/bench_train.py).

3. With --upstream-edsr DIR and/or --upstream-fqsr DIR (issue 23's targets; only these
   run): the real upstream module code, imported at run time from an extracted checkout
   (`git archive HEAD | tar -x -C DIR`; nothing of it is kept here). FQSR: its EDSR with
   --keyword PReLU, quantization off; its common.ResBlock builds the PReLU only when its
   third_party quantization import succeeds, which needs src/utility.py, which imports
   matplotlib and cv2 for plotting and image files (an empty module stands in for each
   one not installed, while importing only). (a) the authors' PReLU EDSR x2 16x64, random
   weights, imported: max |diff| against PyTorch in float64 (target <= 1e-3). EDSR-PyTorch:
   the same import check, then an EDSR x2 (--train-blocks x --train-channels) trained
   --train-steps steps in PyTorch (one thread, seeded, procedural patches), imported and
   PTQ'd to 8/8/8 by fqsr_ref.quantize: (b) the integer model against the PyTorch float64
   module on a whole LR --crop crop of a photograph, the border ring the head's padding
   reaches and the interior apart, with the mean padding and with zero padding (target
   >= 40 dB, ring no worse than the interior); (c) evaluate's mean PSNR of the PTQ model
   and of the float import on the whole bundled photographs (target within 0.05 dB).

Exit status: 0 agreement; 1 a difference above tolerance or a target not met; 2 torch
missing or bad input (an upstream checkout without the modules, or FQSR's quantization
import failing).
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
    import torch.fx.experimental.optimization   # fuse: PyTorch's BN-folded eval form
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


def is_mean_shift(m):
    """This file's MeanShift or the upstream repositories' (model/common.py), a frozen
    1x1 conv that randomize must keep."""
    return isinstance(m, MeanShift) or type(m).__name__ == "MeanShift"


def randomize(model, seed):
    """Random weights (PyTorch's default init from `seed`), and random biases, BN affine
    and running statistics and PReLU slopes, so that every imported value matters."""
    torch.manual_seed(seed)
    for m in model.modules():
        if is_mean_shift(m):
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
        if is_mean_shift(m):
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


# ------------------------------------------------------------ the upstream modules
# --upstream-edsr DIR / --upstream-fqsr DIR: the real module code of a checkout
# (thstkdgus35/EDSR-PyTorch, billhhh/FQSR), imported at run time from DIR/src, never
# copied here. Issue 23's targets are measured with them.

# Top-level names of an upstream src/ directory that shadow each other (both have a
# `model` package) or nothing of ours: forgotten before and after each import.
UPSTREAM_NAMES = ("model", "utility", "third_party", "matlab_functions", "option", "template",
                  "data", "loss", "trainer", "dataloader")
# Libraries FQSR's src/utility.py imports at module level for plotting and image I/O
# (draw_hist, save_results); quant.py needs only its draw_quant_hist, which returns at
# its first line, and AverageMeter. When one is not installed, an empty module stands
# in for it while the upstream code is imported.
FQSR_PLOTTING = ("matplotlib", "matplotlib.pyplot", "cv2", "imageio")


def upstream_src(root):
    """DIR or DIR/src, whichever holds model/edsr.py and model/common.py."""
    for src in (os.path.join(root, "src"), root):
        if all(os.path.isfile(os.path.join(src, "model", f)) for f in ("edsr.py", "common.py")):
            return os.path.abspath(src)
    raise ValueError(f"{root}: no src/model/edsr.py and src/model/common.py (an extracted "
                     "checkout of EDSR-PyTorch or FQSR, e.g. git archive HEAD | tar -x -C DIR)")


def import_upstream(root, placeholders=()):
    """(model.edsr, model.common, what they printed, the placeholders used) from the
    checkout at root. The modules stay usable after their names leave sys.modules."""
    import contextlib
    import importlib
    import importlib.util
    import io
    import types

    src = upstream_src(root)

    def forget():
        return {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in UPSTREAM_NAMES}

    saved, added = forget(), []
    for name in placeholders:
        parent = name.split(".")[0]
        if parent in added or importlib.util.find_spec(parent) is None:
            module = types.ModuleType(name)
            if name == "matplotlib":
                module.use = lambda *a, **k: None
            sys.modules[name] = module
            if "." in name:
                setattr(sys.modules[parent], name.split(".", 1)[1], module)
            added.append(name)
    sys.path.insert(0, src)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            edsr = importlib.import_module("model.edsr")
        common = sys.modules["model.common"]
    finally:
        sys.path.remove(src)
        forget()
        for name in added:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    return edsr, common, printed.getvalue().strip(), added


def upstream_args(blocks, c, scale, rgb_range=255.0, res_scale=1.0, keyword=None):
    """The options their EDSR reads (option.py's names). keyword: FQSR's --keyword as
    option.py splits it; quantization off (fm/wt/ot_enable false, their default)."""
    from types import SimpleNamespace
    args = SimpleNamespace(n_resblocks=blocks, n_feats=c, scale=[scale], rgb_range=rgb_range,
                           res_scale=res_scale, n_colors=3)
    if keyword is not None:
        args.keyword = list(keyword)
        args.fm_enable = args.wt_enable = args.ot_enable = False
    return args


def load_fqsr(root, log=print):
    """FQSR's model.edsr with its third_party quantization import working (so that
    common.ResBlock builds actv(args), the PReLU of --keyword PReLU)."""
    edsr, common, printed, added = import_upstream(root, FQSR_PLOTTING)
    if added:
        log(f"  FQSR: {', '.join(added)} not installed; an empty module stood in while importing "
            "(src/utility.py imports them for plotting and image files; quant.py calls only "
            "draw_quant_hist, which returns at once, and AverageMeter)")
    if not (common.quantization_enable and edsr.quantization_enable):
        raise RuntimeError("FQSR's third_party quantization import failed, so its ResBlock "
                           f"would use ReLU, not PReLU: {printed}")
    return edsr


def border_ring(shape, blocks, stages, scale):
    """The HR pixels the head's padding reaches: one LR pixel per 3x3 conv (head, two per
    block, trunk, each upsampler stage), times the scale, plus the tail's one."""
    reach = (1 + 2 * blocks + 1 + stages) * scale + 1
    ring = np.ones(shape, bool)
    ring[reach:-reach, reach:-reach] = False
    return ring, reach


def db(err2):
    return float(10 * np.log10(255.0 ** 2 / err2.mean()))


def train_upstream(model, steps, batch, patch, seed, lr, scale, log):
    """`steps` of L1 + Adam in PyTorch float32, one thread, on fqsr_ref's procedural
    patches (batch k drawn from default_rng([seed, k])), images in 0..255."""
    from fqsr_ref.data.dataset import ProceduralSource
    torch.manual_seed(seed)
    model.float().train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    src = ProceduralSource()
    wall, cpu = time.perf_counter(), time.process_time()
    losses = []
    for k in range(steps):
        lr_np, hr_np = src.sample(np.random.default_rng([seed, k]), batch, patch, scale)
        x = torch.from_numpy(np.ascontiguousarray(lr_np, np.float32) * 255)
        y = torch.from_numpy(np.ascontiguousarray(hr_np, np.float32) * 255)
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.l1_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    log(f"  trained {steps} steps (batch {batch} of {patch}x{patch} procedural LR patches, Adam lr {lr:g}, "
        f"seed {seed}): L1 {np.mean(losses[:10]):.2f} -> {np.mean(losses[-10:]):.2f} (0..255, mean of 10 steps); "
        f"{wall:.0f} s wall, {cpu:.0f} s CPU (CPU / wall {cpu / wall:.2f}, torch threads "
        f"{torch.get_num_threads()})")
    # One thread claimed: CPU time can fall short of wall time (other jobs on the
    # cores), never exceed it by more than timer noise.
    assert cpu <= 1.1 * wall + 0.5, f"training used more than one core: CPU {cpu:.1f} s, wall {wall:.1f} s"
    return model.eval()


def upstream_ptq(model, args, blocks, folder, log, crop, calib_batches, name):
    """Issue 23's targets (b) and (c) on a trained upstream EDSR: PTQ 8/8/8 of its import
    (quantize's defaults: DAIA over procedural batches); the integer model against the
    PyTorch float64 module on a whole photo crop, border ring and interior apart; the
    fake-quantized model (evaluate --checkpoint) against the float import on the whole
    bundled photographs."""
    import dataclasses
    from fqsr_ref import quantize
    from fqsr_ref.checkpoint import load_checkpoint, load_upscaler
    from fqsr_ref.integer.model import convert
    from fqsr_ref.integer.run import run_image
    from fqsr_ref.metrics import evaluate_folder

    folder = tempfile.mkdtemp(dir=folder)   # one per model
    w, q = os.path.join(folder, "trained.safetensors"), os.path.join(folder, "q888.npz")
    save_state_dict(model, w)
    wall = time.perf_counter()
    with contextlib_quiet():
        code = quantize.main(["--weights", w, "--bits", "8/8/8", "--out", q,
                              "--calib-batches", str(calib_batches)])
    if code != 0:
        log("  quantize failed")
        return False
    log(f"  {name}: quantize --bits 8/8/8 --calib-batches {calib_batches} (procedural, 16 x 48x48): "
        f"{time.perf_counter() - wall:.0f} s")
    ckpt = load_checkpoint(q)
    assert ckpt.config.head_pad == "mean", ckpt.config.head_pad
    scale = ckpt.config.scale
    # (b) the integer model's output vs PyTorch float64, a whole crop, border included
    img = read_image(list_images(photos_dir())[0])
    lr = np.ascontiguousarray(img[:crop, :crop])
    want = np.clip(torch_forward(model.double(), lr.transpose(2, 0, 1)[None].astype(np.float64) / 255,
                                 args.rgb_range, args.rgb_range, torch.float64)[0], 0, 255)
    model.float()
    ring, reach = border_ring(want.shape[1:], blocks, 1, scale)
    ok = True
    for head_pad in ("mean", "zero"):
        cfg = dataclasses.replace(ckpt.config, head_pad=head_pad)
        sr = run_image(convert(cfg, ckpt.params, ckpt.state), lr).transpose(2, 0, 1).astype(np.float64)
        err = (sr - want) ** 2
        whole, border, interior = db(err), db(err[:, ring]), db(err[:, ~ring])
        log(f"  (b) integer 8/8/8 vs PyTorch float64, LR {crop}x{crop} crop of "
            f"{os.path.basename(list_images(photos_dir())[0])} (head_pad {head_pad}"
            f"{', as imported' if head_pad == 'mean' else ', before issue 23'}): whole {whole:.2f} dB, "
            f"border ring ({reach} HR pixels) {border:.2f} dB, interior {interior:.2f} dB, "
            f"max |diff| {np.sqrt(err.max()):.1f}")
        if head_pad == "mean":
            good = whole >= 40 and border >= interior - 0.5
            log(f"      target >= 40 dB whole, ring no worse than the interior: {'met' if good else 'NOT MET'}")
            ok &= good
    # (c) PTQ vs the float import, whole photographs (evaluate's protocol, Y, crop = scale)
    imp = importer.import_weights(w)
    _, m_imp = evaluate_folder(importer.float_upscaler(imp), photos_dir(), scale)
    _, m_torch = evaluate_folder(torch_upscaler(model, args.rgb_range, args.rgb_range), photos_dir(), scale)
    _, m_q = evaluate_folder(load_upscaler(q), photos_dir(), scale)
    n = len(list_images(photos_dir()))
    drop = m_q.psnr - m_imp.psnr
    good = abs(drop) <= 0.05 and abs(m_imp.psnr - m_torch.psnr) <= PSNR_TOL
    log(f"  (c) mean PSNR (Y) on the {n} whole bundled photographs, x{scale}: PyTorch float32 "
        f"{m_torch.psnr:.4f} dB, float import {m_imp.psnr:.4f} dB, PTQ 8/8/8 {m_q.psnr:.4f} dB: "
        f"{drop:+.3f} dB (target within 0.05 dB: {'met' if good else 'NOT MET'})")
    return ok and good


def contextlib_quiet():
    import contextlib
    import io
    return contextlib.redirect_stdout(io.StringIO())


def upstream_checks(args, log=print):
    """Issue 23's targets with the upstream modules."""
    torch.set_num_threads(1)
    assert torch.get_num_threads() == 1, torch.get_num_threads()
    ok = True
    x01 = photo_batch(args.size)
    with tempfile.TemporaryDirectory() as folder:
        if args.upstream_fqsr:
            fq = load_fqsr(args.upstream_fqsr, log)
            a = upstream_args(16, 64, 2, keyword=["PReLU"])
            probe = fq.EDSR(a)
            n_prelu = sum(isinstance(m, nn.PReLU) for m in probe.modules())
            log(f"  FQSR EDSR (--keyword PReLU, quantization off): {n_prelu} PReLU modules, "
                f"{sum(1 for k in probe.state_dict() if k.endswith('body.1.weight'))} body.<i>.body.1.weight keys")
            r = check_case(Case("FQSR EDSR x2 16x64, --keyword PReLU", lambda: fq.EDSR(a), 255.0, 255.0, {}),
                           x01, folder, seed=3)
            good = n_prelu == 16 and r["f64"] <= 1e-3 and r["f64_exact_mean"] <= TOL64 and r["f32"] <= TOL32
            ok &= good
            log(f"  (a) FQSR EDSR x2 16x64 --keyword PReLU, random weights, {args.size}x{args.size} crop: "
                f"max |diff| float64 {r['f64']:.1e} (exact mean {r['f64_exact_mean']:.1e}), float32 "
                f"{r['f32']:.1e} (0..255 units; target float64 <= 1e-3: {'met' if good else 'NOT MET'})")
            if args.train_steps > 0:   # (b) and (c) on the authors' PReLU EDSR too
                b, c = args.train_blocks, args.train_channels
                a = upstream_args(b, c, 2, keyword=["PReLU"])
                model = train_upstream(fq.EDSR(a), args.train_steps, args.train_batch, args.train_patch,
                                       seed=6, lr=args.train_lr, scale=2, log=log)
                ok &= upstream_ptq(model, a, b, folder, log, args.crop, args.calib_batches,
                                   f"FQSR EDSR x2 {b}x{c} --keyword PReLU")
        if args.upstream_edsr:
            ed, _, _, _ = import_upstream(args.upstream_edsr)
            a = upstream_args(16, 64, 2)
            r = check_case(Case("EDSR-PyTorch EDSR x2 16x64", lambda: ed.EDSR(a), 255.0, 255.0, {}),
                           x01, folder, seed=4)
            good = r["f64"] <= TOL64_MEAN and r["f64_exact_mean"] <= TOL64 and r["f32"] <= TOL32
            ok &= good
            log(f"  EDSR-PyTorch EDSR x2 16x64, random weights: max |diff| float64 {r['f64']:.1e} "
                f"(exact mean {r['f64_exact_mean']:.1e}), float32 {r['f32']:.1e} {'ok' if good else 'ABOVE TOLERANCE'}")
            if args.train_steps > 0:
                b, c = args.train_blocks, args.train_channels
                a = upstream_args(b, c, 2)
                model = train_upstream(ed.EDSR(a), args.train_steps, args.train_batch, args.train_patch,
                                       seed=5, lr=args.train_lr, scale=2, log=log)
                ok &= upstream_ptq(model, a, b, folder, log, args.crop, args.calib_batches,
                                   f"EDSR-PyTorch EDSR x2 {b}x{c}")
    return ok


# ------------------------------------------------------------ speed

def set_threads(n):
    """Both sides on n threads: torch's intra-op pool, every loaded OpenBLAS, Numba's pool."""
    import numba
    from fqsr_ref.blas import set_blas_threads
    set_blas_threads(n)
    numba.set_num_threads(n)
    # last: Numba's OpenMP layer, started by its first call, sets the OpenMP thread count
    # torch reads (torch.get_num_threads() was 2 after torch.set_num_threads(1) then this)
    torch.set_num_threads(n)
    if torch.get_num_threads() != n:
        raise RuntimeError(f"torch.get_num_threads() is {torch.get_num_threads()} after set_num_threads({n})")


def speed(args, log=print):
    import benchmark   # tools/benchmark.py: min_times, check_threads, photo
    import bench_train  # tools/bench_train.py: StepCase, TINY, FULL
    from fqsr_ref import quantize
    from fqsr_ref.data.dataset import ProceduralSource
    from fqsr_ref.integer.model import convert
    from fqsr_ref.integer.tiling import run_image
    from fqsr_ref.models import quantized_start
    from fqsr_ref.trainer import reuse_freed_memory

    rows = []
    # The authors' SRResNet x2 16x64, imported, and its PTQ at 8/8/8 (speed does not
    # depend on the values; a few calibration batches).
    model = randomize(FQSRNetG(16, 64, 2), 2).float().eval()
    # PyTorch's fastest eval form of it: every BN folded into its conv (torch.fx's fuse)
    fused = torch.fx.experimental.optimization.fuse(model)
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
    for size in (128, 256):
        lr = benchmark.photo(size, size)
        x = np.ascontiguousarray(lr.transpose(2, 0, 1)[None], np.float32) / np.float32(255)
        xt = torch.from_numpy(x * 255)
        with torch.inference_mode():
            ref, ref_fused = model(xt).numpy(), fused(xt).numpy()
        got = sr_forward(Pass(params32, state32, cfg, keep_cache=False), cfg, x)[0] * 255
        log(f"  LR {size}: float32 outputs differ by {np.max(np.abs(got - ref)):.1e} (0..255 units), "
            f"PyTorch's fused form by {np.max(np.abs(ref_fused - ref)):.1e}")

        for n in (1, 2):
            def on_threads(torch_model):
                def run():
                    # asserted in every call: nothing run in between may have changed it
                    assert torch.get_num_threads() == n, torch.get_num_threads()
                    with torch.inference_mode():
                        torch_model(xt)
                return run
            cases = {"torch": on_threads(model), "torch_fused": on_threads(fused),
                     "fp32": lambda: sr_forward(Pass(params32, state32, cfg, keep_cache=False), cfg, x),
                     "int16": lambda: run_image(int_model, lr, "int16"),
                     "plain": lambda: run_image(int_model, lr, "plain")}
            if n == 1 and (size == 128 or args.bitplane_256):
                cases["bitplane"] = lambda: run_image(int_model, lr, "bitplane")
            set_threads(n)
            os.environ["FQSR_INT16_THREADS"] = str(n)   # the int16 kernel's threads (read per call)
            t = benchmark.min_times(cases, args.repeats)
            benchmark.check_threads(t, n)
            log(f"  LR {size}, {n} thread(s): " + ", ".join(
                f"{k} {wall:.3f} s (CPU/wall {cpu / wall:.2f})" for k, (wall, cpu) in t.items()))
            best_torch = min(t["torch"][0], t["torch_fused"][0])
            for k, label in (("fp32", "float32 forward"), ("int16", "integer int16 engine"),
                             ("plain", "integer plain engine"),
                             ("bitplane", "integer bit-plane engine")):
                if k in t:
                    rows.append((f"{label}, LR {size}x{size}, {n} thread{'s' * (n > 1)}", f"{t[k][0]:.2f} s",
                                 f"{t['torch'][0]:.2f} s ({t['torch_fused'][0]:.2f} s BN fused)",
                                 f"{t[k][0] / best_torch:.2f}"))
    set_threads(1)
    os.environ.pop("FQSR_INT16_THREADS", None)
    if not args.skip_train:
        rows += train_rows(args, benchmark, bench_train, reuse_freed_memory, log)
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


def train_rows(args, benchmark, bench_train, reuse_freed_memory, log):
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
    set_threads(1)
    try:
        times = benchmark.min_times(cases, args.repeats)
        benchmark.check_threads(times, 1)
        t = {name: wall for name, (wall, _) in times.items()}
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
    u = p.add_argument_group("upstream modules (issue 23's targets; only these checks run when given)")
    u.add_argument("--upstream-edsr", metavar="DIR", help="an extracted checkout of thstkdgus35/EDSR-PyTorch: "
                   "its src/model/edsr.py and common.py, imported at run time")
    u.add_argument("--upstream-fqsr", metavar="DIR", help="an extracted checkout of billhhh/FQSR: its EDSR "
                   "with --keyword PReLU, quantization off")
    u.add_argument("--train-steps", type=int, default=300, help="PyTorch training steps of the EDSR "
                   "(each upstream one given) that is PTQ'd; 0: no training, no PTQ (default %(default)s)")
    u.add_argument("--train-blocks", type=int, default=4, help="its n_resblocks (default %(default)s)")
    u.add_argument("--train-channels", type=int, default=32, help="its n_feats (default %(default)s)")
    u.add_argument("--train-batch", type=int, default=8, help="(default %(default)s)")
    u.add_argument("--train-patch", type=int, default=32, help="LR patch side (default %(default)s)")
    u.add_argument("--train-lr", type=float, default=2e-4, help="Adam's learning rate (default %(default)s)")
    u.add_argument("--calib-batches", type=int, default=20, help="quantize --calib-batches (default %(default)s)")
    u.add_argument("--crop", type=int, default=96, help="LR crop side of the border check (default %(default)s)")
    args = p.parse_args(argv)
    if torch is None:
        print(f"error: {INSTALL}", file=sys.stderr)
        return 2
    if args.repeats < 1 or args.size < 8 or args.train_steps < 0 or args.calib_batches < 1 or args.crop < 8:
        print("error: --repeats must be >= 1, --size and --crop >= 8, --train-steps >= 0, "
              "--calib-batches >= 1", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, numpy {np.__version__}, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    if args.upstream_edsr or args.upstream_fqsr:
        print("upstream modules (issue 23), one torch thread:")
        try:
            ok = upstream_checks(args)
        except (ValueError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print("upstream checks: " + ("all targets met" if ok else "TARGETS NOT MET"))
        return 0 if ok else 1
    ok = import_check(16, 64, args.size)
    print("PTQ path (EDSR-PyTorch EDSR x2 16x64, random weights):")
    ok &= ptq_check()
    if not args.skip_speed:
        print("speed: one thread, then two, each side alike, interleaved rounds, minimum of "
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
