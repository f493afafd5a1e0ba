"""What manifest.json and model.txt say: tensors, ops, and their canonical text.

The manifest's tensor and op entries and its byte-stable JSON text, and model.txt,
the same graph as plain lines for ports without a JSON parser (vectors/README.md).
Reading a manifest back is store.py's.
"""
from __future__ import annotations

import json
import re

import numpy as np

from ..integer.model import AddOp, ConvOp, IntModel, RequantOp, ShuffleOp
from ..integer.requant import op_product_bits
from .encodings import storage_dtype
from .sources import VectorModel
from .store import SCHEMA_VERSION


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
        e["product_bits"] = op_product_bits(op, model.tensors)   # SPEC 6.4: the product width
    if isinstance(op, ConvOp):
        cout, cin, k, _ = op.weight.shape
        e.update(weight=op.name + ".w", bias=op.name + ".b", accumulator=op.name + ".acc",
                 cin=cin, cout=cout, kernel=k, stride=1, pad=k // 2,
                 multiplier=op.multiplier, shift=op.shift, right_shift=31 - op.shift,
                 neg_multiplier=op.neg_multiplier, neg_shift=op.neg_shift,
                 neg_right_shift=31 - op.neg_shift, neg_sign=op.neg_sign,
                 acc_bound=op.acc_bound, acc_dtype=op.acc_dtype)
        if op.pad_value is not None:   # written only when set: older sets keep their bytes
            e["pad_value"] = [int(v) for v in op.pad_value]
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
                         f"{op.w_bits} {k // 2} 1 {op.acc_bound} {op_product_bits(op, model.tensors)}"
                         + ("" if op.pad_value is None else " " + " ".join(map(str, op.pad_value))))
        elif isinstance(op, RequantOp):
            lines.append(f"requant {op.name} {op.input} {op.output} {op.multiplier} {op.shift} "
                         f"{op_product_bits(op, model.tensors)}")
        elif isinstance(op, AddOp):
            lines.append(f"add {op.name} {op.input} {op.branch} {op.output} {int(op.branch_relu)} "
                         f"{op.multiplier} {op.branch_multiplier} {op.shift} {op_product_bits(op, model.tensors)}")
        else:
            lines.append(f"shuffle {op.name} {op.input} {op.output} {op.factor}")
    lines.append("end")
    return "\n".join(lines) + "\n"


def manifest_bytes(manifest: dict) -> bytes:
    """Sorted keys, one key a line, lists of numbers on one line, ASCII, trailing newline.
    Floats are Python's shortest round-trip repr, so the text is the same everywhere."""
    text = json.dumps(manifest, indent=1, sort_keys=True)
    text = re.sub(r"\[\s+([-0-9.e,\s]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    return (text + "\n").encode("ascii")
