"""The QDQ form: the fake-quantized float model as QuantizeLinear/DequantizeLinear around
float operators (docs/SPEC.md 6.10), the form onnxruntime's, TensorRT's and OpenVINO's
quantized paths read.

Per op of the integer model (SPEC 6.8), with every code tensor T a QuantizeLinear
output named as in the vector set (its storage dtype: int8, uint8 or int16) and
DequantizeLinear(T) its real value:

  conv      DQ(weight codes, s_w) and DQ(int32 bias, s_x s_w) into a float Conv (pads
            K // 2); PRelu where the two multipliers differ (slope a = sign M- 2^shift-
            / (M+ 2^shift+)); Clip to [qmin s_y, qmax s_y] where the grid is narrower
            than the dtype (narrow signed [-7, 7], ReLU outputs [0, 15] for 4 bits);
            QuantizeLinear(s_y)
  requant   Clip, QuantizeLinear at the new scale
  add       DQ(a) + res_scale * relu?(DQ(b)), Clip, QuantizeLinear
  shuffle   DQ, DepthToSpace (CRD), QuantizeLinear at the same scale (exact)

It cannot be bit-exact: the scales are float32, the convolution sums in float32, and
QuantizeLinear rounds half to even where the integer model rounds half up. How far it
is from the integer model is measured (tools/compare_export.py), never assumed.
"""
from __future__ import annotations

import numpy as np

from ..integer.model import AddOp, ConvOp, IntModel, RequantOp, ShuffleOp
from ..integer.requant import code_dtype
from .common import (DEFAULT_OPSET, INT16_QDQ_OPSET, GraphBuilder, check_opset, finish_model, initializer,
                     image_graph, nchw_value, op_outputs, pad_shift, padded_conv_bias, require_onnx,
                     resolutions)


def prelu_slope(op: ConvOp):
    """The PReLU slope the conv's two multipliers encode, or None without PReLU.

    acc >= 0 scales by M+ 2^(shift+ - 31), acc < 0 by sign M- 2^(shift- - 31); their
    ratio is the slope a (to the multipliers' 2^-31 precision)."""
    if (op.neg_multiplier, op.neg_shift, op.neg_sign) == (op.multiplier, op.shift, 1):
        return None
    if op.multiplier <= 0:
        raise ValueError(f"export: conv {op.name}: multiplier {op.multiplier} must be positive")
    return (op.neg_sign * op.neg_multiplier * 2.0 ** op.neg_shift) / (op.multiplier * 2.0 ** op.shift)


def narrower_than_dtype(qmin: int, qmax: int) -> bool:
    """True where the code grid does not fill its storage dtype, so a saturating cast
    alone would not clamp it (narrow signed grids, codes of fewer than 8 bits)."""
    info = np.iinfo(code_dtype(qmin, qmax))
    return (qmin, qmax) != (info.min, info.max)


class _QDQ(GraphBuilder):
    """The QDQ graph under construction; each code tensor dequantized once."""

    def __init__(self, model: IntModel, opset: int):
        super().__init__()
        self.model, self.opset = model, opset
        self.real = {}      # code tensor name -> name of its dequantized float value

    def dtype_of(self, tensor: str, qmin: int, qmax: int):
        """Storage dtype of codes in [qmin, qmax]; int16 Q/DQ needs opset 21."""
        dt = np.dtype(code_dtype(qmin, qmax))
        if dt.itemsize > 1 and self.opset < INT16_QDQ_OPSET:
            raise ValueError(f"export --format qdq: tensor {tensor} holds {dt.name} codes "
                             f"[{qmin}, {qmax}]; QuantizeLinear/DequantizeLinear of {dt.name} "
                             f"needs opset >= {INT16_QDQ_OPSET} (got --opset {self.opset})")
        if dt.itemsize > 2:
            raise ValueError(f"export --format qdq: tensor {tensor} codes [{qmin}, {qmax}] are wider "
                             "than the 16 bits QuantizeLinear can store")
        return dt

    def dequantize(self, tensor: str) -> str:
        """The float value of a code tensor (one DequantizeLinear per tensor)."""
        if tensor not in self.real:
            t = self.model.tensors[tensor]
            dt = self.dtype_of(tensor, t.qmin, t.qmax)
            self.real[tensor] = self.node("DequantizeLinear",
                                          [tensor, self.const(t.scale, np.float32), self.const(0, dt)],
                                          tensor + ".dq")
        return self.real[tensor]

    def quantize(self, x: str, tensor: str, clip: bool = True) -> str:
        """Clip (where the grid is narrower than its dtype) and QuantizeLinear into the
        code tensor `tensor` (named as in the vector set)."""
        t = self.model.tensors[tensor]
        dt = self.dtype_of(tensor, t.qmin, t.qmax)
        scale = np.float32(t.scale)
        if clip and narrower_than_dtype(t.qmin, t.qmax):
            x = self.node("Clip", [x, self.const(np.float32(t.qmin) * scale, np.float32),
                                   self.const(np.float32(t.qmax) * scale, np.float32)])
        return self.node("QuantizeLinear", [x, self.const(scale, np.float32), self.const(0, dt)], tensor)

    def conv(self, vm, op: ConvOp) -> str:
        x = self.model.tensors[op.input]
        k = op.weight.shape[2]
        if op.name not in vm.weight_scales:
            raise ValueError(f"export: conv {op.name} has no weight scale")
        s_w = float(vm.weight_scales[op.name])
        w_dt = self.dtype_of(op.name + ".w", int(op.weight.min()), int(op.weight.max()))
        w_codes = self.fresh(op.name + ".w")
        self.inits.append(initializer(w_codes, op.weight.astype(w_dt)))
        w = self.node("DequantizeLinear", [w_codes, self.const(s_w, np.float32), self.const(0, w_dt)],
                      op.name + ".w.dq")
        s_acc = np.float32(x.scale * s_w)
        b_codes = self.fresh(op.name + ".b")
        bias = padded_conv_bias(op)
        if np.abs(bias).max(initial=0) < 2 ** 31:
            self.inits.append(initializer(b_codes, bias.astype(np.int32)))
            b = self.node("DequantizeLinear", [b_codes, self.const(s_acc, np.float32)], op.name + ".b.dq")
        else:
            # DequantizeLinear takes int32 at most: an int64 bias enters as its float value
            self.inits.append(initializer(b_codes, (bias.astype(np.float64) * float(s_acc)).astype(np.float32)))
            b = b_codes
        acc = self.node("Conv", [pad_shift(self, self.dequantize(op.input), op, x.scale), w, b], op.name + ".acc.real",
                        pads=[k // 2] * 4, kernel_shape=[k, k], strides=[1, 1], dilations=[1, 1])
        slope = prelu_slope(op)
        if slope is not None:
            acc = self.node("PRelu", [acc, self.const([slope], np.float32)])
        return self.quantize(acc, op.output)

    def add(self, op: AddOp, res_scale: float) -> str:
        a, b = self.dequantize(op.input), self.dequantize(op.branch)
        if op.branch_relu:
            b = self.node("Relu", [b])
        if res_scale != 1:
            b = self.node("Mul", [b, self.const(res_scale, np.float32)])
        return self.quantize(self.node("Add", [a, b]), op.output)


def _emit(g: _QDQ, vm, op) -> None:
    model = vm.model
    if op.output not in model.tensors or op.input not in model.tensors:
        raise ValueError(f"export: op {op.name} reads or writes a tensor the model does not describe")
    if isinstance(op, ConvOp):
        g.conv(vm, op)
    elif isinstance(op, RequantOp):
        g.quantize(g.dequantize(op.input), op.output)
    elif isinstance(op, AddOp):
        g.add(op, float(model.config.res_scale))
    elif isinstance(op, ShuffleOp):
        moved = g.node("DepthToSpace", [g.dequantize(op.input)], blocksize=op.factor, mode="CRD")
        g.quantize(moved, op.output, clip=False)   # moved codes are already in range
    else:
        raise ValueError(f"export: unknown op {op!r}")


def qdq_op_model(vm, op, opset: int = DEFAULT_OPSET):
    """One op of the QDQ form as a model of its own, for measuring where the form departs
    from the integer model: fed the integer model's own inputs, every difference in its
    output arises in this op.

    Inputs: the real values (code * scale, float32: exact for codes below 2^24) of the
    op's input tensors, named `<tensor>.in`; each is quantized back to its codes first, so
    that onnxruntime's QDQ fusion sees the Q -> DQ pairs of the whole graph (it fuses only
    where a QuantizeLinear feeds the group). Output: the op's code tensor."""
    onnx = require_onnx()
    check_opset(opset)
    model = vm.model
    g = _QDQ(model, opset)
    reads = [op.input] + ([op.branch] if isinstance(op, AddOp) else [])
    for name in reads:
        g.quantize(name + ".in", name, clip=False)
    _emit(g, vm, op)
    res, t = resolutions(model), model.tensors
    graph = onnx.helper.make_graph(
        g.nodes, f"fqsr_qdq_{op.name}", [nchw_value(n + ".in", np.float32, *res[n]) for n in reads],
        [nchw_value(op.output, code_dtype(t[op.output].qmin, t[op.output].qmax), *res[op.output])], g.inits)
    return finish_model(graph, opset, f"one op ({op.name}) of the QDQ form")


def qdq_graph(vm, opset: int = DEFAULT_OPSET, all_outputs: bool = False):
    """The QDQ ModelProto of a VectorModel: `image.in` uint8 (N, 3, H, W) in, `image.out`
    uint8 (N, 3, sH, sW) out, N, H, W dynamic. all_outputs: every op output is a graph
    output too, with the vector set's name, dtype and NCHW shape.

    ValueError: codes wider than 8 bits below opset 21 (int16 QuantizeLinear), naming
    the tensor."""
    require_onnx()
    check_opset(opset)
    model = vm.model
    if "image.in" not in model.tensors or "image.out" not in model.tensors:
        raise ValueError("export: the model has no image.in or image.out tensor")
    g = _QDQ(model, opset)
    for op in model.ops:
        _emit(g, vm, op)
    graph = image_graph(g, model, "fqsr_qdq", op_outputs(model, all_outputs))
    cfg = model.config
    return finish_model(graph, opset, f"fqsr_ref {cfg.arch} x{cfg.scale} {cfg.bits}: QDQ form "
                                      "(float32 scales, half-to-even rounding: not bit-exact; docs/SPEC.md 6.10)")
