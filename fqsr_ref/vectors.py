"""Golden test vectors: every tensor of an integer-only model, written for ports.

    python -m fqsr_ref.vectors --out DIR [--checkpoint CKPT | --model VECDIR | --untrained]
                               [--bits 4/4/8] [--image IMG] [--size 16]
    python -m fqsr_ref.vectors --regenerate VECDIR [--out DIR]
    python -m fqsr_ref.vectors --check VECDIR

A vector directory (format in vectors/README.md, rules in docs/SPEC.md) holds:
    manifest.json                 schema, model config, tensors, ops, stimuli, sha256 per file
    model.txt                     the same graph as plain lines, for ports without a JSON parser
    weights/<conv>.w.*, .b.*      weight codes (OIHW) and int32 biases
    <stimulus>/<tensor>.*         the codes of every tensor, NCHW
    <stimulus>/<conv>.acc.*       accumulators before requantization
    <stimulus>/<conv>.plane.*     one output element's im2col row, weight column and
                                  bit-plane popcounts (Eq. 2)
with every array as .npy, raw little-endian .bin and .hex for $readmemh.

A vector directory is self-contained: the integer model (weight codes, biases,
multipliers, shifts) and the input codes can be read back from it, and
`regenerate` rebuilds every file from them with integer arithmetic only. That
is why the committed vectors/ sets regenerate byte for byte on any machine,
whatever float BLAS the machine has: no float training or calibration runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from .integer.bitplane import bitplane_partials, plane_weights
from .integer.model import AddOp, ConvOp, IntModel, RequantOp, ShuffleOp, Tensor, convert
from .integer.requant import code_dtype, multiply_by_quantized_multiplier, rounding_right_shift
from .integer.run import run_ops
from .models.config import ModelConfig
from .models.graph import code_scale
from .quant import QuantSpec

SCHEMA_VERSION = 1
FORMATS = ("npy", "bin", "hex")
REPO_VECTORS = Path(__file__).resolve().parent.parent / "vectors"
BUNDLED_BITS = ("4/4/8", "8/8/8")
CORNER_BITS = ("4/4/8", "16/16/16")   # the constructed sets of fqsr_ref/corner.py
# The natural stimulus: a crop around the cat's eye of one bundled photograph.
DEFAULT_PHOTO = "chelsea.png"
DEFAULT_CROP_ORIGIN = (60, 52)   # (row, column) of the top-left pixel: pupil, highlight, iris
NOISE_SEED = 20240607
STIMULI = ("natural", "zeros", "white", "checker", "noise")
STIMULUS_TEXT = {
    "natural": "a {size}x{size} crop of a photograph",
    "zeros": "every code 0",
    "white": "every code 255 (drives the layers into saturation)",
    "checker": "1-pixel checkerboard of 0 and 255, code 255 where (row + column) is odd",
    "noise": f"uniform codes 0..255: np.random.default_rng({NOISE_SEED}).integers(0, 256, shape, dtype=np.uint8)",
}
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class VectorModel(NamedTuple):
    """An integer model plus what the manifest needs that IntModel does not carry.

    weight_scales: conv name -> real value of one weight code (s_w).
    source: one line saying where the model came from (kept through regeneration).
    """
    model: IntModel
    weight_scales: dict
    source: str


class Stimulus(NamedTuple):
    """One input: codes (1, 3, H, W) uint8 and the formats its tensors are written in."""
    name: str
    codes: np.ndarray
    description: str
    formats: tuple


# ---------------------------------------------------------------------------
# Array encodings
# ---------------------------------------------------------------------------

def storage_dtype(qmin: int, qmax: int) -> np.dtype:
    """The dtype a code tensor is stored in: the integer model's (SPEC 1, code_dtype)."""
    return np.dtype(code_dtype(qmin, qmax))


def little_endian(arr: np.ndarray) -> np.ndarray:
    return np.asarray(arr).astype(arr.dtype.newbyteorder("<"), order="C")   # keeps 0-d arrays 0-d


def npy_bytes(arr: np.ndarray) -> bytes:
    """NPY format 1.0 bytes of an integer array, header written here (not by np.save)
    so that the bytes cannot change with the numpy version."""
    arr = little_endian(arr)
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (arr.dtype.str, tuple(arr.shape))
    # magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64
    pad = -(10 + len(header) + 1) % 64
    header = (header + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + arr.tobytes()


def hex_bytes(arr: np.ndarray) -> bytes:
    """One element a line, C order, two's complement, 2 * itemsize lowercase hex digits."""
    arr = little_endian(arr)
    width = 2 * arr.dtype.itemsize
    unsigned = arr.view(arr.dtype.str.replace("i", "u"))
    return "".join(f"{v:0{width}x}\n" for v in unsigned.ravel().tolist()).encode("ascii")


def encode(arr: np.ndarray, fmt: str) -> bytes:
    if fmt == "npy":
        return npy_bytes(arr)
    if fmt == "bin":
        return little_endian(arr).tobytes()
    if fmt == "hex":
        return hex_bytes(arr)
    raise ValueError(f"vectors: unknown format {fmt!r}; expected one of {FORMATS}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# Stimuli
# ---------------------------------------------------------------------------

def make_stimulus(name: str, size: int, rng: np.random.Generator | None = None,
                  image: np.ndarray | None = None, origin=DEFAULT_CROP_ORIGIN) -> np.ndarray:
    """Input codes (1, 3, size, size) uint8 of the stimulus `name` (STIMULUS_TEXT).

    natural: a crop of `image` ((H, W, 3) uint8) at origin; noise draws from rng.
    """
    shape = (1, 3, size, size)
    if name == "natural":
        y, x = origin
        if image is None or image.shape[0] < y + size or image.shape[1] < x + size:
            raise ValueError(f"vectors: natural stimulus needs an image of at least "
                             f"{y + size}x{x + size} pixels, got "
                             f"{None if image is None else image.shape[:2]}")
        return np.ascontiguousarray(image[y:y + size, x:x + size].transpose(2, 0, 1)[None])
    if name == "zeros":
        return np.zeros(shape, np.uint8)
    if name == "white":
        return np.full(shape, 255, np.uint8)
    if name == "checker":
        odd = (np.arange(size)[:, None] + np.arange(size)[None, :]) % 2
        return np.ascontiguousarray(np.broadcast_to((odd * 255).astype(np.uint8), shape))
    if name == "noise":
        rng = np.random.default_rng(NOISE_SEED) if rng is None else rng
        return rng.integers(0, 256, shape, dtype=np.uint8)
    raise ValueError(f"vectors: unknown stimulus {name!r}; expected one of {STIMULI}")


def default_stimuli(image=None, size: int = 16, stimulus_size: int = 8,
                    formats=FORMATS, stimulus_formats=("bin",), origin=DEFAULT_CROP_ORIGIN):
    """The standard set: the natural crop (size x size, in `formats`) and the synthetic
    stimuli (stimulus_size squared, in `stimulus_formats`)."""
    if image is None:
        from .data import photos_dir
        from .data.images import read_image
        image = read_image(os.path.join(photos_dir(), DEFAULT_PHOTO))
    out = [Stimulus("natural", make_stimulus("natural", size, image=image, origin=origin),
                    STIMULUS_TEXT["natural"].format(size=size), tuple(formats))]
    for name in STIMULI[1:]:
        out.append(Stimulus(name, make_stimulus(name, stimulus_size), STIMULUS_TEXT[name],
                            tuple(stimulus_formats)))
    return out


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

def from_params(cfg: ModelConfig, params: dict, state: dict, source: str) -> VectorModel:
    """Convert a quantized float model to a VectorModel (integer/model.py `convert`)."""
    # IntModel does not keep s_w; convert derives it with code_scale, and so do we.
    model = convert(cfg, params, state)
    spec = QuantSpec(cfg.wt, True)
    scales = {op.name: code_scale(float(np.asarray(params[op.name + ".w.interval"])), spec)
              for op in model.ops if isinstance(op, ConvOp)}
    return VectorModel(model, scales, source)


def from_checkpoint(path) -> VectorModel:
    from .checkpoint import load_checkpoint
    ckpt = load_checkpoint(path)
    digest = sha256(Path(path).read_bytes())
    return from_params(ckpt.config, ckpt.params, ckpt.state,
                       f"checkpoint {Path(path).name} (sha256 {digest})")


def calibrated_params(cfg: ModelConfig, rng: np.random.Generator, batch: np.ndarray):
    """(params, state) of an untrained quantized model of cfg whose intervals come
    from one DAIA pass (Eq. 4) over batch: (N, 3, H, W) float64 images in [0, 1].

    For tests and to seed the bundled sets before a trained checkpoint exists. It
    runs float convolutions, so it is not bit-reproducible across BLAS builds (the
    stored sets are).
    """
    from .models import Pass, init_model, quantize_model, sr_forward
    fp = dataclasses.replace(cfg, wt=32, fm=32, sc=32)
    params, state = init_model(fp, rng)
    params, state = quantize_model(params, state, cfg)
    ps = Pass(params, state, cfg, training=True, warmup=1)
    sr_forward(ps, cfg, batch)
    params = {**params, **{k: np.asarray(v) for k, v in ps.interval_init.items()}}
    return params, {**state, **ps.new_state}


def calibrated_model(cfg: ModelConfig, rng: np.random.Generator, batch: np.ndarray) -> VectorModel:
    """The integer model of `calibrated_params`."""
    return from_params(cfg, *calibrated_params(cfg, rng, batch),
                       f"untrained {cfg.arch} x{cfg.scale} {cfg.bits}, "
                       f"intervals from one DAIA pass over {batch.shape[0]} images")


def untrained_model(bits: str = "4/4/8", seed: int = 1) -> VectorModel:
    """The tiny SRResNet x2 (16 channels, 2 blocks) of `bits`, untrained (init seed
    `seed`), intervals from one DAIA pass over 4 procedural 32x32 images (seed 0).
    This is how the bundled sets were first made (`--untrained`)."""
    from .data.synthetic import procedural_image
    from .models import preset
    rng = np.random.default_rng(0)
    batch = np.stack([procedural_image(rng, (32, 32)) for _ in range(4)]).transpose(0, 3, 1, 2) / 255.0
    cfg = preset("srresnet", 2, bits, blocks=2, channels=16)
    vm = calibrated_model(cfg, np.random.default_rng(seed), batch)
    return vm._replace(source=f"untrained SRResNet x2, 16 channels, 2 blocks, {bits} (init seed {seed}); "
                              "intervals from one DAIA pass (Eq. 4) over 4 procedural 32x32 images (seed 0)")


def bundled_dir(bits: str = "4/4/8") -> Path:
    return REPO_VECTORS / f"srresnet_x2_{bits.replace('/', '-')}"


def corner_dir(bits: str) -> Path:
    return REPO_VECTORS / f"corner_x2_{bits.replace('/', '-')}"


def committed_dirs() -> list:
    """Every committed set: the trained ones and the constructed corner ones."""
    return [bundled_dir(b) for b in BUNDLED_BITS] + [corner_dir(b) for b in CORNER_BITS]


def bundled_model(bits: str = "4/4/8") -> VectorModel:
    """The tiny SRResNet x2 (16 channels, 2 blocks) stored in vectors/ (source checkout)."""
    if bits not in BUNDLED_BITS:
        raise ValueError(f"vectors: no bundled model for bits {bits!r}; bundled: {BUNDLED_BITS}")
    return read_model(bundled_dir(bits))


# ---------------------------------------------------------------------------
# What is recorded per op
# ---------------------------------------------------------------------------

def unclamped(op, codes: dict, acc: np.ndarray | None) -> np.ndarray:
    """The int64 values of an op's output before the saturating clamp (SPEC, integer)."""
    x = None if isinstance(op, ConvOp) else codes[op.input].astype(np.int64)
    if isinstance(op, ConvOp):
        acc = acc.astype(np.int64)
        pos = multiply_by_quantized_multiplier(acc, op.multiplier, op.shift)
        neg = multiply_by_quantized_multiplier(op.neg_sign * acc, op.neg_multiplier, op.neg_shift)
        return np.where(acc >= 0, pos, neg)
    if isinstance(op, RequantOp):
        return multiply_by_quantized_multiplier(x, op.multiplier, op.shift)
    if isinstance(op, AddOp):
        b = codes[op.branch].astype(np.int64)
        if op.branch_relu:
            b = np.maximum(b, 0)
        return rounding_right_shift(x * op.multiplier + b * op.branch_multiplier, 31 - op.shift)
    raise ValueError(f"vectors: op {op.name!r} of kind {op.kind!r} has no clamp")


def rounding_operands(op, codes: dict, acc: np.ndarray | None):
    """[(p, n)]: the int64 products an op rounds, round_half_up(p / 2^n) (SPEC 6.4),
    each with its shift n; the elements of p are those the rule applies to."""
    if isinstance(op, ConvOp):
        acc = acc.astype(np.int64)
        return [(acc[acc >= 0] * op.multiplier, 31 - op.shift),
                (op.neg_sign * acc[acc < 0] * op.neg_multiplier, 31 - op.neg_shift)]
    x = codes[op.input].astype(np.int64)
    if isinstance(op, RequantOp):
        return [(x * op.multiplier, 31 - op.shift)]
    b = codes[op.branch].astype(np.int64)
    if op.branch_relu:
        b = np.maximum(b, 0)
    return [(x * op.multiplier + b * op.branch_multiplier, 31 - op.shift)]


def coverage(op, codes: dict, acc: np.ndarray | None) -> dict:
    """What one op's vectors exercise: exact rounding ties (p / 2^n an odd multiple of
    1/2) of both signs; negative accumulators (a conv's negative side: PReLU's second
    multiplier); non-zero and negative branch codes of an add (its branch and ReLU)."""
    tie_pos = tie_neg = 0
    for p, n in rounding_operands(op, codes, acc):
        if n > 0:
            tie = (p & np.int64((1 << n) - 1)) == (1 << (n - 1))
            tie_pos += int((tie & (p > 0)).sum())
            tie_neg += int((tie & (p < 0)).sum())
    c = dict(ties_positive=tie_pos, ties_negative=tie_neg)
    if isinstance(op, ConvOp):
        c["negative_acc"] = int((acc < 0).sum())
    if isinstance(op, AddOp):
        b = codes[op.branch]
        c.update(branch_nonzero=int((b != 0).sum()), branch_negative=int((b < 0).sum()))
    return c


def rebuild_accumulator(pop: np.ndarray, a_signed: bool, b_signed: bool, bias: int) -> int:
    """bias + sum_{m,p} w_a[m] w_b[p] P[m, p]: the accumulator from its popcounts."""
    wa = plane_weights(pop.shape[0], a_signed)
    wb = plane_weights(pop.shape[1], b_signed)
    return int(bias) + int(wa @ pop @ wb)


def plane_element(shape) -> tuple:
    """The documented output element of every conv: n = 0, o = 0, the centre pixel."""
    _, _, h, w = shape
    return 0, 0, h // 2, w // 2


def im2col_row(x: np.ndarray, k: int, n: int, y: int, x0: int) -> np.ndarray:
    """Input codes read by output pixel (n, y, x0) of a K x K "same" conv, ordered
    (c, ky, kx) like a flattened OIHW weight row; padded taps are 0."""
    p = k // 2
    xp = np.pad(x[n], ((0, 0), (p, p), (p, p)))
    return np.ascontiguousarray(xp[:, y:y + k, x0:x0 + k].reshape(-1))


# ---------------------------------------------------------------------------
# Building a vector directory in memory
# ---------------------------------------------------------------------------

def ops_of(model: IntModel, kind):
    return [op for op in model.ops if isinstance(op, kind)]


def tensor_entries(vm: VectorModel) -> dict:
    """Manifest 'tensors': static properties of every tensor (shapes vary per stimulus)."""
    model, out = vm.model, {}
    for t in model.tensors.values():
        out[t.name] = dict(kind="codes", layout="NCHW", bits=t.bits, signed=t.signed, scale=t.scale,
                           qmin=t.qmin, qmax=t.qmax, dtype=storage_dtype(t.qmin, t.qmax).name)
    for op in ops_of(model, ConvOp):
        s_w = vm.weight_scales[op.name]
        s_acc = model.tensors[op.input].scale * s_w
        wlo, whi = -((1 << (op.w_bits - 1)) - 1), (1 << (op.w_bits - 1)) - 1
        out[op.name + ".w"] = dict(kind="weight", layout="OIHW", bits=op.w_bits, signed=True,
                                   scale=s_w, qmin=wlo, qmax=whi, dtype=op.weight.dtype.name,
                                   shape=list(op.weight.shape))
        bias_bits = 8 * op.bias.dtype.itemsize
        out[op.name + ".b"] = dict(kind="bias", layout="O", bits=bias_bits, signed=True, scale=s_acc,
                                   qmin=-(1 << (bias_bits - 1)), qmax=(1 << (bias_bits - 1)) - 1,
                                   dtype=op.bias.dtype.name, shape=list(op.bias.shape))
        out[op.name + ".acc"] = dict(kind="acc", layout="NCHW", bits=8 * np.dtype(op.acc_dtype).itemsize,
                                     signed=True, scale=s_acc, qmin=-op.acc_bound, qmax=op.acc_bound,
                                     dtype=op.acc_dtype)
    return out


def op_entry(model: IntModel, op) -> dict:
    e = dict(kind=op.kind, name=op.name, input=op.input, output=op.output)
    if not isinstance(op, ShuffleOp):
        out = model.tensors[op.output]
        e["clamp"] = [out.qmin, out.qmax]
    if isinstance(op, ConvOp):
        cout, cin, k, _ = op.weight.shape
        e.update(weight=op.name + ".w", bias=op.name + ".b", accumulator=op.name + ".acc",
                 cin=cin, cout=cout, kernel=k, stride=1, pad=k // 2,
                 multiplier=op.multiplier, shift=op.shift, right_shift=31 - op.shift,
                 neg_multiplier=op.neg_multiplier, neg_shift=op.neg_shift,
                 neg_right_shift=31 - op.neg_shift, neg_sign=op.neg_sign,
                 acc_bound=op.acc_bound, acc_dtype=op.acc_dtype)
    elif isinstance(op, RequantOp):
        e.update(multiplier=op.multiplier, shift=op.shift, right_shift=31 - op.shift)
    elif isinstance(op, AddOp):
        e.update(branch=op.branch, branch_relu=bool(op.branch_relu), multiplier=op.multiplier,
                 branch_multiplier=op.branch_multiplier, shift=op.shift, right_shift=31 - op.shift)
    elif isinstance(op, ShuffleOp):
        e.update(factor=op.factor)
    else:
        raise ValueError(f"vectors: unknown op {op!r}")
    return e


def model_text(model: IntModel, tensors: dict, stimuli) -> str:
    """model.txt: the graph as whitespace-separated lines (vectors/README.md)."""
    lines = ["# fqsr_ref integer model; fields per line kind are listed in vectors/README.md",
             f"fqsr_model {SCHEMA_VERSION}"]
    for name, t in sorted(tensors.items()):
        if t["kind"] == "codes":
            lines.append(f"tensor {name} {t['dtype']} {t['qmin']} {t['qmax']} {t['bits']} "
                         f"{int(t['signed'])}")
    for s in stimuli:
        lines.append("stimulus {} {} {} {} {}".format(s.name, *s.codes.shape))
    for op in model.ops:
        if isinstance(op, ConvOp):
            cout, cin, k, _ = op.weight.shape
            lines.append(f"conv {op.name} {op.input} {op.output} {cout} {cin} {k} "
                         f"{op.weight.dtype.name} {op.bias.dtype.name} {op.acc_dtype} "
                         f"{op.multiplier} {op.shift} {op.neg_multiplier} {op.neg_shift} {op.neg_sign} "
                         f"{op.w_bits} {k // 2} 1 {op.acc_bound}")
        elif isinstance(op, RequantOp):
            lines.append(f"requant {op.name} {op.input} {op.output} {op.multiplier} {op.shift}")
        elif isinstance(op, AddOp):
            lines.append(f"add {op.name} {op.input} {op.branch} {op.output} {int(op.branch_relu)} "
                         f"{op.multiplier} {op.branch_multiplier} {op.shift}")
        else:
            lines.append(f"shuffle {op.name} {op.input} {op.output} {op.factor}")
    lines.append("end")
    return "\n".join(lines) + "\n"


class Builder:
    """Collects files (relative path -> bytes) and their manifest records."""

    def __init__(self):
        self.files = {}
        self.records = {}

    def add(self, stem: str, arr: np.ndarray, formats, tensor: str):
        for fmt in formats:
            data = encode(arr, fmt)
            path = f"{stem}.{fmt}"
            self.files[path] = data
            self.records[path] = dict(tensor=tensor, format=fmt, dtype=arr.dtype.name,
                                      shape=list(arr.shape), bytes=len(data), sha256=sha256(data))


def check_names(model: IntModel, stimuli):
    names = list(model.tensors) + [op.name for op in model.ops] + [s.name for s in stimuli]
    bad = [n for n in names if not NAME_RE.match(n)]
    if bad or len({s.name for s in stimuli}) != len(stimuli):
        raise ValueError(f"vectors: tensor, op and stimulus names must be unique file names "
                         f"matching {NAME_RE.pattern}; got {bad or [s.name for s in stimuli]}")
    if "weights" in {s.name for s in stimuli}:
        raise ValueError("vectors: 'weights' is reserved and cannot name a stimulus")


def stimulus_vectors(vm: VectorModel, tensors: dict, stim: Stimulus, b: Builder) -> dict:
    """Run one stimulus; add its files to b; return its manifest entry."""
    model = vm.model
    codes = np.asarray(stim.codes)
    if codes.dtype != np.uint8 or codes.ndim != 4 or codes.shape[:2] != (1, 3):
        raise ValueError(f"vectors: stimulus {stim.name!r} must be uint8 (1, 3, H, W), "
                         f"got {codes.dtype} {codes.shape}")
    record = {}
    out = run_ops(model, codes, "plain", record)
    shapes, saturation, covered, planes = {}, {}, {}, {}
    for name, arr in out.items():
        stored = arr.astype(tensors[name]["dtype"])
        if not np.array_equal(stored, arr):
            raise AssertionError(f"vectors: {name} codes do not fit its storage dtype {stored.dtype}")
        arr = stored
        b.add(f"{stim.name}/{name}", arr, stim.formats, name)
        shapes[name] = list(arr.shape)
    for op in model.ops:
        acc = record.get(op.name + ".acc")
        if isinstance(op, ConvOp):
            b.add(f"{stim.name}/{op.name}.acc", acc.astype(op.acc_dtype), stim.formats, op.name + ".acc")
            shapes[op.name + ".acc"] = list(acc.shape)
            planes[op.name] = plane_vectors(model, op, out[op.input], acc, stim, b)
        if isinstance(op, ShuffleOp):
            continue
        t = model.tensors[op.output]
        v = unclamped(op, out, acc)
        if not np.array_equal(np.clip(v, t.qmin, t.qmax), out[op.output]):
            raise AssertionError(f"vectors: op {op.name}: the recorded clamp disagrees with run_ops")
        saturation[op.name] = dict(low=int((v < t.qmin).sum()), high=int((v > t.qmax).sum()),
                                   of=int(v.size))
        covered[op.name] = coverage(op, out, acc)
    return dict(description=stim.description, formats=sorted(stim.formats), shapes=shapes,
                saturation=saturation, coverage=covered, bitplane=planes)


def plane_vectors(model: IntModel, op: ConvOp, x: np.ndarray, acc: np.ndarray,
                  stim: Stimulus, b: Builder) -> dict:
    xt = model.tensors[op.input]
    n, o, y, x0 = plane_element(acc.shape)
    k = op.weight.shape[2]
    row = im2col_row(x, k, n, y, x0)
    col = np.ascontiguousarray(op.weight[o].reshape(-1))
    pop = bitplane_partials(row, col, xt.bits, xt.signed, op.w_bits, True).astype(np.int32)
    value = int(acc[n, o, y, x0])
    if rebuild_accumulator(pop, xt.signed, True, int(op.bias[o])) != value:
        raise AssertionError(f"vectors: op {op.name}: bit-plane popcounts do not rebuild the accumulator")
    stem = f"{stim.name}/{op.name}.plane"
    b.add(stem + ".row", row, stim.formats, op.input)
    b.add(stem + ".col", col, stim.formats, op.name + ".w")
    b.add(stem + ".pop", pop, stim.formats, op.name + ".acc")
    return dict(element=[n, o, y, x0], acc=value, bias=int(op.bias[o]), row_bits=xt.bits,
                row_signed=xt.signed, col_bits=op.w_bits, col_signed=True, fan_in=int(row.size))


def build_vectors(vm: VectorModel, stimuli) -> dict:
    """Every file of a vector directory: relative path -> bytes (manifest.json included)."""
    model = vm.model
    stimuli = sorted(stimuli, key=lambda s: s.name)   # one canonical order everywhere
    check_names(model, stimuli)
    for s in stimuli:
        if "bin" not in s.formats or not set(s.formats) <= set(FORMATS):
            raise ValueError(f"vectors: stimulus {s.name!r} formats {s.formats} must include 'bin' "
                             f"(ports read it) and be among {FORMATS}")
    tensors = tensor_entries(vm)
    b = Builder()
    for op in ops_of(model, ConvOp):
        b.add(f"weights/{op.name}.w", op.weight.astype(tensors[op.name + ".w"]["dtype"]), FORMATS, op.name + ".w")
        b.add(f"weights/{op.name}.b", op.bias, FORMATS, op.name + ".b")
    entries = {s.name: stimulus_vectors(vm, tensors, s, b) for s in stimuli}
    text = model_text(model, tensors, stimuli).encode("ascii")
    b.files["model.txt"] = text
    b.records["model.txt"] = dict(bytes=len(text), sha256=sha256(text), format="text")
    manifest = dict(
        schema_version=SCHEMA_VERSION,
        generator="fqsr_ref.vectors",
        model=dict(config=dataclasses.asdict(model.config), source=vm.source, engine="plain"),
        tensors=tensors,
        ops=[op_entry(model, op) for op in model.ops],
        stimuli=entries,
        files=b.records,
    )
    b.files["manifest.json"] = manifest_bytes(manifest)
    return b.files


def manifest_bytes(manifest: dict) -> bytes:
    """Sorted keys, one key a line, lists of numbers on one line, ASCII, trailing newline.
    Floats are Python's shortest round-trip repr, so the text is the same everywhere."""
    text = json.dumps(manifest, indent=1, sort_keys=True)
    text = re.sub(r"\[\s+([-0-9.e,\s]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    return (text + "\n").encode("ascii")


# ---------------------------------------------------------------------------
# Writing atomically, reading back
# ---------------------------------------------------------------------------

def write_tree(out_dir, files: dict) -> Path:
    """Write files into a temporary directory next to out_dir, then rename it into place.

    An existing out_dir is replaced only if it is a vector directory (has
    manifest.json) or empty, so a mistyped --out cannot wipe unrelated files.
    A reader sees the old directory or the new one, never a half-written one.
    """
    out = Path(out_dir).absolute()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise ValueError(f"vectors: {out} exists and is not a vector directory; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for rel, data in sorted(files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old)      # over an empty directory: allowed on POSIX
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def safe_path(root: Path, rel: str) -> Path:
    """root / rel, refusing paths that are absolute, contain '..' or resolve outside root
    (a symlink out of the directory)."""
    p = PurePosixPath(rel)
    if not rel or "\\" in rel or p.is_absolute() or any(part in ("..", "") for part in rel.split("/")):
        raise ValueError(f"manifest path {rel!r} leaves the vector directory {root}")
    full = root / p
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(full)]) != real_root:
        raise ValueError(f"manifest path {rel!r} resolves outside the vector directory {root}")
    return full


def read_manifest(vec_dir, check_files: bool = True) -> dict:
    """The manifest of a vector directory, with every listed file's path and sha256 checked."""
    root = Path(vec_dir)
    path = root / "manifest.json"
    try:
        manifest = json.loads(path.read_text("ascii"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"vectors: cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ValueError(f"vectors: {path}: schema_version {version!r}, this reader knows {SCHEMA_VERSION}")
    for key in ("model", "tensors", "ops", "stimuli", "files"):
        if key not in manifest:
            raise ValueError(f"vectors: {path}: no {key!r} entry")
    names = list(manifest["stimuli"]) + [op.get(k, "") for op in manifest["ops"]
                                         for k in ("name", "input", "output", "branch", "accumulator") if k in op]
    bad = [n for n in names if not isinstance(n, str) or not NAME_RE.match(n)]
    if bad:
        raise ValueError(f"vectors: {path}: names {bad[:3]} are not plain file names; "
                         "they would lead out of the directory")
    for rel, rec in sorted(manifest["files"].items()):
        full = safe_path(root, rel)
        if not check_files:
            continue
        try:
            data = full.read_bytes()
        except OSError as exc:
            raise ValueError(f"vectors: {full}: {exc.strerror or exc}") from None
        if sha256(data) != rec.get("sha256"):
            raise ValueError(f"vectors: {full}: sha256 {sha256(data)} does not match the manifest "
                             f"({rec.get('sha256')}); the file is corrupt, truncated or replaced")
    return manifest


def load_array(root: Path, rel: str, rec: dict) -> np.ndarray:
    """One listed array file (.npy or .bin) as an ndarray; never unpickles."""
    full = safe_path(root, rel)
    dtype, shape = np.dtype(rec["dtype"]).newbyteorder("<"), tuple(rec["shape"])
    if rel.endswith(".npy"):
        arr = np.load(full, allow_pickle=False)
    else:
        data = full.read_bytes()
        if len(data) != dtype.itemsize * int(np.prod(shape)):
            raise ValueError(f"vectors: {full}: {len(data)} bytes, expected {shape} {dtype.name}")
        arr = np.frombuffer(data, dtype).reshape(shape)
    if arr.dtype != dtype or arr.shape != shape:
        raise ValueError(f"vectors: {full}: {arr.dtype} {arr.shape}, manifest says {dtype.name} {shape}")
    return np.array(arr, dtype=dtype.newbyteorder("="))


def find_array(root: Path, manifest: dict, stem: str) -> np.ndarray:
    for fmt in ("npy", "bin"):
        rel = f"{stem}.{fmt}"
        if rel in manifest["files"]:
            return load_array(root, rel, manifest["files"][rel])
    raise ValueError(f"vectors: {root}: no .npy or .bin file for {stem!r} in the manifest")


def read_model(vec_dir) -> VectorModel:
    """The integer model stored in a vector directory (checked against its sha256 sums)."""
    root = Path(vec_dir)
    m = read_manifest(root)
    t = m["tensors"]
    try:
        cfg = ModelConfig(**m["model"]["config"])
        tensors = {name: Tensor(name, e["bits"], e["signed"], e["scale"], e["qmin"], e["qmax"])
                   for name, e in t.items() if e["kind"] == "codes"}
        ops, scales = [], {}
        for e in m["ops"]:
            kind, name, fields = e["kind"], e["name"], (e["kind"], e["name"], e["input"], e["output"])
            if kind == "conv":
                scales[name] = t[e["weight"]]["scale"]
                ops.append(ConvOp(*fields, weight=find_array(root, m, f"weights/{e['weight']}"),
                                  w_bits=t[e["weight"]]["bits"],
                                  bias=find_array(root, m, f"weights/{e['bias']}"),
                                  multiplier=e["multiplier"], shift=e["shift"],
                                  neg_multiplier=e["neg_multiplier"], neg_shift=e["neg_shift"],
                                  neg_sign=e["neg_sign"], acc_bound=e["acc_bound"],
                                  acc_dtype=e["acc_dtype"]))
            elif kind == "requant":
                ops.append(RequantOp(*fields, multiplier=e["multiplier"], shift=e["shift"]))
            elif kind == "add":
                ops.append(AddOp(kind, name, e["input"], e["branch"], e["output"],
                                 branch_relu=e["branch_relu"], multiplier=e["multiplier"],
                                 branch_multiplier=e["branch_multiplier"], shift=e["shift"]))
            elif kind == "shuffle":
                ops.append(ShuffleOp(*fields, factor=e["factor"]))
            else:
                raise ValueError(f"unknown op kind {kind!r}")
    except (KeyError, TypeError) as exc:
        raise ValueError(f"vectors: {root / 'manifest.json'}: incomplete model description ({exc!r})") from None
    return VectorModel(IntModel(cfg, tensors, ops), scales, m["model"]["source"])


def read_stimuli(vec_dir) -> list:
    """The stimuli of a vector directory: their stored input codes, text and formats."""
    root = Path(vec_dir)
    m = read_manifest(root)
    return [Stimulus(name, find_array(root, m, f"{name}/image.in"), e["description"], tuple(e["formats"]))
            for name, e in sorted(m["stimuli"].items())]


def regenerate(src_dir) -> dict:
    """Every file of src_dir rebuilt from its stored model and inputs (integer arithmetic only)."""
    vm = read_model(src_dir)
    return build_vectors(vm, read_stimuli(src_dir))


def compare_tree(vec_dir, files: dict) -> list:
    """Relative paths that differ between vec_dir and files (missing, extra or changed)."""
    root = Path(vec_dir)
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    diff = sorted(on_disk ^ set(files))
    diff += sorted(rel for rel in on_disk & set(files) if (root / rel).read_bytes() != files[rel])
    return diff


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(prog="python -m fqsr_ref.vectors", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="vector directory to write (replaced atomically)")
    p.add_argument("--checkpoint", help="quantized checkpoint (.npz) to convert; default: the bundled model")
    p.add_argument("--model", help="take the integer model from this vector directory")
    p.add_argument("--untrained", action="store_true",
                   help="build the untrained tiny model of --bits (how the bundled sets were first made)")
    p.add_argument("--bits", default="4/4/8", choices=BUNDLED_BITS, help="which bundled model (default 4/4/8)")
    p.add_argument("--corner", metavar="BITS",
                   help="build the constructed corner model of BITS (fqsr_ref/corner.py: every "
                        "rounding ratio a power of two, so exact ties occur), e.g. 4/4/8 or 16/16/16")
    p.add_argument("--image", help=f"image for the natural stimulus (default: photos/{DEFAULT_PHOTO})")
    p.add_argument("--crop", default=None, help="ROW,COL of the natural crop (default: "
                   f"{DEFAULT_CROP_ORIGIN[0]},{DEFAULT_CROP_ORIGIN[1]} for the default photo, else centred)")
    p.add_argument("--size", type=int, default=16, help="natural crop side (default 16)")
    p.add_argument("--stimulus-size", type=int, default=8, help="side of the synthetic stimuli (default 8)")
    p.add_argument("--formats", default="npy,bin,hex", help="formats of the natural stimulus")
    p.add_argument("--stimulus-formats", default="bin", help="formats of the synthetic stimuli")
    p.add_argument("--regenerate", metavar="VECDIR",
                   help="rebuild VECDIR from its own model and inputs (into --out, default VECDIR)")
    p.add_argument("--check", metavar="VECDIR",
                   help="rebuild VECDIR in memory and compare byte for byte; exit 1 if it differs")
    return p


def parse_formats(text: str) -> tuple:
    formats = tuple(sorted(set(f.strip() for f in text.split(",") if f.strip())))
    if not formats or not set(formats) <= set(FORMATS):
        raise ValueError(f"formats {text!r}: expected a comma list of {FORMATS}")
    return formats


def natural_image(args):
    from .data import photos_dir
    from .data.images import read_image
    if args.image is None:
        image = read_image(os.path.join(photos_dir(), DEFAULT_PHOTO))
        origin = DEFAULT_CROP_ORIGIN
    else:
        image = read_image(args.image)
        origin = ((image.shape[0] - args.size) // 2, (image.shape[1] - args.size) // 2)
    if args.crop is not None:
        try:
            origin = tuple(int(v) for v in args.crop.split(","))
            assert len(origin) == 2 and min(origin) >= 0
        except (ValueError, AssertionError):
            raise ValueError(f"--crop {args.crop!r}: expected ROW,COL, two integers >= 0") from None
    return image, origin


def run(args) -> int:
    if args.check:
        diff = compare_tree(args.check, regenerate(args.check))
        for rel in diff:
            print(f"differs: {rel}")
        print(f"{args.check}: {'byte-identical' if not diff else f'{len(diff)} files differ'}")
        return 1 if diff else 0
    if args.regenerate:
        out = write_tree(args.out or args.regenerate, regenerate(args.regenerate))
        print(f"wrote {out}")
        return 0
    if not args.out:
        raise ValueError("--out DIR is required (or --regenerate / --check)")
    if min(args.size, args.stimulus_size) < 1:
        raise ValueError(f"--size {args.size} and --stimulus-size {args.stimulus_size} must be >= 1")
    if args.checkpoint:
        vm = from_checkpoint(args.checkpoint)
    elif args.corner:
        from .corner import SEED, corner_model
        vm = from_params(*corner_model(args.corner),
                         f"constructed corner model {args.corner} (fqsr_ref/corner.py, seed {SEED})")
    elif args.untrained:
        vm = untrained_model(args.bits)
    else:
        vm = read_model(args.model) if args.model else bundled_model(args.bits)
    image, origin = natural_image(args)
    stimuli = default_stimuli(image, args.size, args.stimulus_size, parse_formats(args.formats),
                              parse_formats(args.stimulus_formats), origin)
    out = write_tree(args.out, build_vectors(vm, stimuli))
    print(f"wrote {out}: {vm.model.config.arch} x{vm.model.config.scale} {vm.model.config.bits}, "
          f"{len(vm.model.ops)} ops, stimuli {', '.join(s.name for s in stimuli)}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
