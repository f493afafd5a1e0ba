"""Run an integer-only model: codes in, codes out, nothing but integer arithmetic.

Engines compute the conv accumulators: "plain" (engine_plain.int_conv2d, exact
GEMMs) or "bitplane" (the Numba popcount kernel of Eq. 2). Everything else
(requantization, adds, shuffles) is shared, so the engines must agree bit for bit.
"""
from __future__ import annotations

import numpy as np

from ..ops.shuffle import pixel_shuffle_forward
from .engine_plain import int_conv2d
from .model import AddOp, ConvOp, IntModel, RequantOp, ShuffleOp
from .requant import multiply_by_quantized_multiplier, rounding_right_shift, saturate

ENGINES = ("plain", "bitplane")


def conv_accumulators(op: ConvOp, x, x_t, engine: str):
    if engine == "plain":
        return int_conv2d(x, x_t.bits, x_t.signed, op.weight, op.w_bits, True, op.bias)
    if engine == "bitplane":
        from .bitplane import bitplane_conv2d
        return bitplane_conv2d(x, x_t.bits, x_t.signed, op.weight, op.w_bits, True, op.bias)
    raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")


def conv_outputs(op: ConvOp, acc, out_t):
    """Requantize accumulators; PReLU as a second multiplier for acc < 0."""
    acc = acc.astype(np.int64)
    pos = multiply_by_quantized_multiplier(acc, op.multiplier, op.shift)
    if (op.neg_multiplier, op.neg_shift, op.neg_sign) != (op.multiplier, op.shift, 1):
        neg = multiply_by_quantized_multiplier(op.neg_sign * acc, op.neg_multiplier, op.neg_shift)
        pos = np.where(acc >= 0, pos, neg)
    return saturate(pos, out_t.qmin, out_t.qmax)


def run_ops(model: IntModel, image_codes, engine="plain", record=None):
    """image_codes: (N, 3, H, W) uint8 -> dict of every tensor's codes (by name).

    record: optional dict that receives, per conv, its accumulators as
    record[name + ".acc"].
    """
    t = model.tensors
    codes = {"image.in": np.asarray(image_codes)}
    if codes["image.in"].dtype != np.uint8 or codes["image.in"].ndim != 4:
        raise ValueError(f"integer model: input must be uint8 (N, 3, H, W) codes, got "
                         f"{codes['image.in'].dtype} {codes['image.in'].shape}")
    for op in model.ops:
        x = codes[op.input]
        if isinstance(op, ConvOp):
            acc = conv_accumulators(op, x, t[op.input], engine)
            if record is not None:
                record[op.name + ".acc"] = acc
            y = conv_outputs(op, acc, t[op.output])
        elif isinstance(op, RequantOp):
            y = saturate(multiply_by_quantized_multiplier(x.astype(np.int64), op.multiplier, op.shift),
                         t[op.output].qmin, t[op.output].qmax)
        elif isinstance(op, AddOp):
            b = codes[op.branch].astype(np.int64)
            if op.branch_relu:
                b = np.maximum(b, 0)
            total = x.astype(np.int64) * op.multiplier + b * op.branch_multiplier
            y = saturate(rounding_right_shift(total, 31 - op.shift), t[op.output].qmin, t[op.output].qmax)
        elif isinstance(op, ShuffleOp):
            y, _ = pixel_shuffle_forward(x, op.factor)   # moves codes, never changes them
        else:
            raise ValueError(f"integer model: unknown op {op!r}")
        codes[op.output] = y
    return codes


def run_image(model: IntModel, lr_uint8, engine="plain"):
    """(H, W, 3) uint8 -> (sH, sW, 3) uint8 through the integer model."""
    x = np.ascontiguousarray(np.asarray(lr_uint8).transpose(2, 0, 1)[None])
    out = run_ops(model, x, engine)["image.out"]
    return out[0].transpose(1, 2, 0).astype(np.uint8)
