"""Run an integer-only model: codes in, codes out, nothing but integer arithmetic.

Engines compute the conv accumulators: "int16" (engine_int16: pairs of int16 codes
multiplied and added into int32 by the CPU's vpmaddwd, for the convs it takes, the
plain engine for the others; the default), "plain" (engine_plain's strip path: exact
float32 GEMM chunks, requantized strip by strip as they are produced) or "bitplane"
(the Numba popcount kernel of Eq. 2). Everything else (requantization, adds,
shuffles) is shared, so the engines must agree bit for bit.

Tensors live channels-last (N, H, W, C) while the graph runs, so a conv's strips are
contiguous rows and the output image is already (H, W, 3); `run_ops` hands them back
NCHW. A tensor is freed after the last op that reads it unless every tensor is kept
(`run_ops`, which the golden vectors record). Requantization is one compiled pass
per op (requant.requantize_conv, add_fused), its product width proven once by
`prepare` (requant.check_product, SPEC 6.4), not scanned per call: a conv whose
acc_bound * M + 2^(n-1) passes 64 bits is requantized with the 16-bit split of M,
exact for every accumulator within the bound.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import engine_int16
from .engine_int16 import conv_strips_int16, note_once, prepare_int16
from .engine_plain import conv_strips, prepare_conv
from .model import AddOp, ConvOp, IntModel, RequantOp, ShuffleOp, engine_input, engine_operand
from .requant import add_fused, check_fused_requant, check_product, code_dtype, requantize_conv, requantize_fused

ENGINES = ("int16", "plain", "bitplane")
DEFAULT_ENGINE = "int16"   # where the CPU and the model allow; the plain engine elsewhere


class Prepared(NamedTuple):
    """A model ready to run: each conv's plan, the last op reading each tensor (after
    which it is freed), and the convs whose products pass 64 bits on either side."""
    model: IntModel
    plans: dict         # conv op name -> ConvPlan
    last_use: dict      # tensor name -> index of the last op reading it
    split: dict         # conv name -> (positive side, negative side) needing the 16-bit split
    int16: dict         # conv op name -> Int16Plan, the convs the int16 engine takes


def prepare(model: IntModel) -> Prepared:
    """Prove every op's product width once and plan every conv.

    A conv side whose acc_bound * M + 2^(n-1) passes 64 bits is requantized with the
    16-bit split of M; ValueError where neither int64 nor the split is exact (SPEC 6.4),
    so the per-pixel kernels never check anything.
    """
    t = model.tensors
    plans, last_use, split, int16 = {}, {}, {}, {}
    for i, op in enumerate(model.ops):
        x = t[op.input]
        if isinstance(op, ConvOp):
            sides = (check_product(op.name, op.acc_bound, op.multiplier, op.shift),
                     check_product(op.name + " (acc < 0)", op.acc_bound, op.neg_multiplier, op.neg_shift))
            if any(sides):
                split[op.name] = sides
            plans[op.name] = prepare_conv(op.weight, *engine_operand(op, x.bits, x.signed), op.w_bits)
            plan16 = prepare_int16(plans[op.name], op.acc_dtype)
            if plan16 is not None:
                int16[op.name] = plan16
        elif isinstance(op, RequantOp):
            check_fused_requant(op.name, max(-x.qmin, x.qmax), op.multiplier, op.shift)
        elif isinstance(op, AddOp):
            last_use[op.branch] = i
        elif not isinstance(op, ShuffleOp):
            raise ValueError(f"integer model: unknown op {op!r}")
        last_use[op.input] = i
    return Prepared(model, plans, last_use, split, int16)


def _strips(prep: Prepared, op: ConvOp, engine: str, x_t):
    """strips(x, emit) of a conv: the int16 kernel's where that engine takes it, else the
    plain engine's."""
    if engine == "int16" and op.name in prep.int16:
        plan16 = prep.int16[op.name]
        return lambda x, emit: conv_strips_int16(x, plan16, emit)
    plan, operand = prep.plans[op.name], engine_operand(op, x_t.bits, x_t.signed)
    return lambda x, emit: conv_strips(x, *operand, plan, emit)


def _conv_fused(op: ConvOp, strips, x, out_t, record, split=(False, False)):
    """Fused conv on channels-last codes: strips of accumulators requantized as they come.
    strips(x, emit): see _strips."""
    n, h, w, _ = x.shape
    y = np.empty((n, h, w, op.weight.shape[0]), dtype=code_dtype(out_t.qmin, out_t.qmax))
    x, bias = engine_input(op, x, 3)
    bias = bias.astype(np.int64)
    pos, neg = (op.multiplier, op.shift), (op.neg_multiplier, op.neg_shift, op.neg_sign)
    acc_all = None if record is None else np.empty(y.shape, dtype=op.acc_dtype)
    zero = np.zeros_like(bias)

    def emit(i, h0, h1, acc):
        b = bias
        if acc_all is not None:   # recording for the vectors
            acc, b = acc[:, :w].astype(np.int64) + bias, zero
            acc_all[i, h0:h1] = acc
        requantize_conv(acc, b, pos, neg, out_t.qmin, out_t.qmax, y[i, h0:h1], split)
    strips(x, emit)
    if record is not None:
        record[op.name + ".acc"] = np.ascontiguousarray(acc_all.transpose(0, 3, 1, 2))
    return y


def _conv_bitplane(op: ConvOp, x, x_t, out_t, record, split=(False, False)):
    """The bit-plane engine's accumulators (its channels-last entry), requantized here."""
    from .bitplane import bitplane_conv2d_nhwc
    x, bias = engine_input(op, x, 3)
    acc = bitplane_conv2d_nhwc(x, *engine_operand(op, x_t.bits, x_t.signed), op.weight, op.w_bits, True,
                               bias)
    if record is not None:
        record[op.name + ".acc"] = np.ascontiguousarray(acc.transpose(0, 3, 1, 2))
    y = np.empty(acc.shape, dtype=code_dtype(out_t.qmin, out_t.qmax))
    zero = np.zeros(acc.shape[-1], np.int64)
    pos, neg = (op.multiplier, op.shift), (op.neg_multiplier, op.neg_shift, op.neg_sign)
    for i in range(acc.shape[0]):   # the bias is in acc already
        requantize_conv(np.ascontiguousarray(acc[i]), zero, pos, neg, out_t.qmin, out_t.qmax, y[i], split)
    return y


def shuffle_nhwc(x: np.ndarray, r: int) -> np.ndarray:
    """Pixel shuffle on channels-last codes: y[n, h r + i, w r + j, c] = x[n, h, w, c r^2 + i r + j]
    (SPEC 6.8's rule, in NHWC); moves codes, never changes them."""
    n, h, w, cr = x.shape
    c = cr // (r * r)
    return np.ascontiguousarray(x.reshape(n, h, w, c, r, r).transpose(0, 1, 4, 2, 5, 3)
                                .reshape(n, h * r, w * r, c))


def run_nhwc(prep: Prepared, image_nhwc: np.ndarray, engine: str = DEFAULT_ENGINE, keep_all: bool = False,
             record: dict | None = None) -> dict:
    """Run the graph on uint8 (N, H, W, 3) image codes; tensors channels-last.

    Returns {"image.out": codes} (every tensor when keep_all). record: optional
    dict receiving each conv's accumulators (NCHW) as record[name + ".acc"].
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    if engine == "int16" and not engine_int16.HOST_HAS_MADD:
        note_once("engine int16: this CPU has no AVX2 (vpmaddwd); the plain engine runs instead")
    elif engine == "int16":
        wide = [op.name for op in prep.model.ops if isinstance(op, ConvOp) and op.acc_dtype != "int32"]
        if wide:
            note_once(f"engine int16: {', '.join(wide)} need int64 accumulators (SPEC 6.5); "
                      f"the plain engine runs {'it' if len(wide) == 1 else 'them'}")
    model, t = prep.model, prep.model.tensors
    codes = {"image.in": image_nhwc}
    for i, op in enumerate(model.ops):
        x, out_t = codes[op.input], t[op.output]
        if isinstance(op, ConvOp):
            split = prep.split.get(op.name, (False, False))
            if engine == "bitplane":
                y = _conv_bitplane(op, x, t[op.input], out_t, record, split)
            else:
                y = _conv_fused(op, _strips(prep, op, engine, t[op.input]), x, out_t, record, split)
        elif isinstance(op, RequantOp):
            y = requantize_fused(x, op.multiplier, op.shift, out_t.qmin, out_t.qmax)
        elif isinstance(op, AddOp):
            y = add_fused(x, codes[op.branch], op.multiplier, op.branch_multiplier, op.shift,
                          op.branch_relu, out_t.qmin, out_t.qmax)
        else:
            y = shuffle_nhwc(x, op.factor)
        codes[op.output] = y
        if not keep_all:   # free what no later op reads (the output image is never read)
            for name in {op.input, getattr(op, "branch", op.input)}:
                if prep.last_use.get(name) == i:
                    del codes[name]
            del x
    return codes if keep_all else {"image.out": codes["image.out"]}


def _check_image(codes, shape_hint: str):
    if codes.dtype != np.uint8 or codes.ndim != 4 or codes.shape[-1 if shape_hint == "NHWC" else 1] != 3:
        raise ValueError(f"integer model: input must be uint8 ({shape_hint[0]}, "
                         f"{', '.join(shape_hint[1:])}) codes with 3 channels, got {codes.dtype} {codes.shape}")


def run_ops(model: IntModel, image_codes, engine="plain", record=None):
    """image_codes: (N, 3, H, W) uint8 -> dict of every tensor's codes (by name), NCHW.

    record: optional dict that receives, per conv, its accumulators as
    record[name + ".acc"].
    """
    x = np.asarray(image_codes)
    _check_image(x, "NCHW")
    codes = run_nhwc(prepare(model), np.ascontiguousarray(x.transpose(0, 2, 3, 1)), engine,
                     keep_all=True, record=record)
    codes["image.in"] = x
    return {k: v if k == "image.in" else np.ascontiguousarray(v.transpose(0, 3, 1, 2))
            for k, v in codes.items()}


def run_image(model: IntModel, lr_uint8, engine=DEFAULT_ENGINE, prep: Prepared | None = None):
    """(H, W, 3) uint8 -> (sH, sW, 3) uint8 through the integer model (tensors freed as
    soon as no later op reads them)."""
    x = np.ascontiguousarray(np.asarray(lr_uint8))[None]
    _check_image(x, "NHWC")
    return run_nhwc(prep or prepare(model), x, engine)["image.out"][0]
