"""Building a vector directory in memory: run the model on each stimulus, record every file.

build_vectors returns relative path -> bytes (manifest.json and model.txt included);
store.write_tree puts it on disk. regenerate rebuilds a stored set from its own
model and input codes, with integer arithmetic only.
"""
from __future__ import annotations

import numpy as np

from ..integer.bitplane import bitplane_partials
from ..integer.model import ConvOp, IntModel, ShuffleOp
from ..integer.run import run_ops
from .encodings import FORMATS, encode, sha256
from .hdl import HDL_FORMAT, Kit
from .manifest import manifest_bytes, model_text, op_entry, ops_of, tensor_entries
from .record import coverage, im2col_row, plane_element, rebuild_accumulator, unclamped
from .sources import VectorModel, read_model
from .stimuli import AWKWARD, Stimulus, awkward_stimuli, read_stimuli
from .store import NAME_RE, SCHEMA_VERSION


class Builder:
    """Collects files (relative path -> bytes) and their manifest records."""

    def __init__(self):
        self.files = {}
        self.records = {}

    def add(self, stem: str, arr: np.ndarray, formats, tensor: str):
        for fmt in (f for f in formats if f in FORMATS):     # HDL_FORMAT files: hdl.Kit
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


def stimulus_vectors(vm: VectorModel, tensors: dict, stim: Stimulus, b: Builder, kit: Kit | None = None) -> dict:
    """Run one stimulus; add its files to b; return its manifest entry."""
    model = vm.model
    codes = np.asarray(stim.codes)
    if codes.dtype != np.uint8 or codes.ndim != 4 or codes.shape[1] != 3 or min(codes.shape) < 1:
        raise ValueError(f"vectors: stimulus {stim.name!r} must be uint8 (N, 3, H, W), "
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
    if kit is not None and HDL_FORMAT in stim.formats:
        stored = {name: arr.astype(tensors[name]["dtype"]) for name, arr in out.items()}
        kit.stimulus(stim.name, stored, {op.name: record[op.name + ".acc"] for op in ops_of(model, ConvOp)})
        cfg = model.config
        kit.headers(stim.name, stored, f"{cfg.arch} x{cfg.scale} {cfg.bits}")
    return dict(description=stim.description, formats=sorted(stim.formats), shapes=shapes,
                saturation=saturation, coverage=covered, bitplane=planes)


def plane_vectors(model: IntModel, op: ConvOp, x: np.ndarray, acc: np.ndarray,
                  stim: Stimulus, b: Builder) -> dict:
    xt = model.tensors[op.input]
    n, o, y, x0 = plane_element(acc.shape)
    k = op.weight.shape[2]
    row = im2col_row(x, k, n, y, x0, op.pad_value)
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
        if "bin" not in s.formats or not set(s.formats) <= set(FORMATS + (HDL_FORMAT,)):
            raise ValueError(f"vectors: stimulus {s.name!r} formats {s.formats} must include 'bin' "
                             f"(ports read it) and be among {FORMATS + (HDL_FORMAT,)}")
    tensors = tensor_entries(vm)
    b = Builder()
    for op in ops_of(model, ConvOp):
        b.add(f"weights/{op.name}.w", op.weight.astype(tensors[op.name + ".w"]["dtype"]), FORMATS, op.name + ".w")
        b.add(f"weights/{op.name}.b", op.bias, FORMATS, op.name + ".b")
    kit = None
    if any(HDL_FORMAT in s.formats for s in stimuli):    # the hardware kit (--hdl)
        kit = Kit(b, model, tensors)
        kit.weights()
    entries = {s.name: stimulus_vectors(vm, tensors, s, b, kit) for s in stimuli}
    text = model_text(model, tensors, stimuli).encode("ascii")
    b.files["model.txt"] = text
    b.records["model.txt"] = dict(bytes=len(text), sha256=sha256(text), format="text")
    manifest = dict(
        schema_version=SCHEMA_VERSION,
        generator="fqsr_ref.vectors",
        model=dict(config=model.config.as_dict(), source=vm.source, engine="plain"),
        tensors=tensors,
        ops=[op_entry(model, op) for op in model.ops],
        stimuli=entries,
        files=b.records,
    )
    b.files["manifest.json"] = manifest_bytes(manifest)
    return b.files


def regenerate(src_dir, add_formats=(), hdl: str | None = None, awkward: bool = False) -> dict:
    """Every file of src_dir rebuilt from its stored model and inputs (integer arithmetic only);
    add_formats: formats (e.g. "hex", HDL_FORMAT) every stimulus gains; hdl "all" / "awkward": the
    hardware kit for the natural crop and the awkward stimuli / for the awkward ones only (as
    `--hdl` writes it for a new set); awkward: the stimuli of awkward shapes, where the set lacks them."""
    vm = read_model(src_dir)
    kit_names = {"all": ("natural", *AWKWARD), "awkward": tuple(AWKWARD)}.get("all" if hdl is True else hdl, ())

    def formats(s):
        kit = {"hex", HDL_FORMAT} if s.name in kit_names else set()
        return s._replace(formats=tuple(sorted(set(s.formats) | set(add_formats) | kit)))

    stimuli = [formats(s) for s in read_stimuli(src_dir)]
    if awkward:
        have = {s.name for s in stimuli}
        stimuli += [formats(s) for s in awkward_stimuli() if s.name not in have]
    return build_vectors(vm, stimuli)


def tensor_shapes(model: IntModel, input_shape) -> dict:
    """Every tensor's and accumulator's shape for an input of input_shape (N, 3, H, W):
    convs keep H, W ("same", stride 1), a shuffle by r multiplies them by r."""
    shapes = {"image.in": tuple(input_shape)}
    for op in model.ops:
        n, c, h, w = shapes[op.input]
        if isinstance(op, ConvOp):
            shapes[op.output] = shapes[op.name + ".acc"] = (n, op.weight.shape[0], h, w)
        elif isinstance(op, ShuffleOp):
            shapes[op.output] = (n, c // (op.factor ** 2), h * op.factor, w * op.factor)
        else:
            shapes[op.output] = (n, c, h, w)
    return shapes


# Bytes per element while a stimulus runs: the int64 accumulators and unclamped values, the
# engine's float copies, coverage temporaries (measured peak: about 20 per element of a set).
WORK_BYTES = 32
TEXT_BYTES = 100      # a .hex or .mem text in the making: a Python int and a str per element


def estimate_bytes(model: IntModel, stimuli) -> int:
    """Memory building a set needs, from shapes alone: stimuli = [(input shape, formats)].
    Every file is held in memory until the set is written; one stimulus runs at a time."""
    from .encodings import storage_dtype
    itemsize = {name: storage_dtype(t.qmin, t.qmax).itemsize for name, t in model.tensors.items()}
    itemsize.update({op.name + ".acc": np.dtype(op.acc_dtype).itemsize for op in ops_of(model, ConvOp)})
    files = work = 0
    for shape, formats in stimuli:
        sizes = {name: int(np.prod(s)) for name, s in tensor_shapes(model, shape).items()}
        for name, n in sizes.items():
            b = itemsize[name]
            per = {"npy": b, "bin": b, "hex": 2 * b + 1, HDL_FORMAT: 2 * (2 * b + 1) + 3}
            files += n * sum(per.get(f, 0) for f in formats)
        text = any(f in ("hex", HDL_FORMAT) for f in formats)
        work = max(work, WORK_BYTES * sum(sizes.values()) + (TEXT_BYTES * max(sizes.values()) if text else 0))
    return files + work
