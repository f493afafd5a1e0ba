"""The QONNX form: the fake-quantized float model with QONNX `Quant` nodes (docs/SPEC.md
6.10), the format Brevitas exports and FINN and hls4ml read.

A Quant node (domain qonnx.custom_op.general) takes x, scale, zero point and bit width
(float32 initializers) and the attributes signed, narrow and rounding_mode; it computes
scale * round(clamp(x / scale + zeropt, qmin, qmax)) - the real value of a code, not
the code. As Brevitas exports a model:

  image.in  Cast to float32, Mul by the image scale, Quant (8 bits, unsigned)
  conv      float weights (codes * s_w) through a Quant of wt bits (signed, narrow), the
            bias (codes * s_x s_w) through a 32-bit Quant (Brevitas's Int32Bias), a
            float Conv, PRelu where the two multipliers differ (Relu before an unsigned
            output), a Quant of the output's bits (narrow when signed)
  requant   a Quant at the new scale and width
  add       a + res_scale * relu?(b), Quant
  shuffle   DepthToSpace (CRD) on the real values
  image.out the tail's Quant, divided by the scale, Round, Cast to uint8

Every code tensor's real value is named `<tensor>.real`; the code tensor itself (the
vector set's name and dtype) is computed (Div, Round, Cast) for image.out and, with
all_outputs, for every op output.

Rounding: QONNX has no floor(x + 1/2). Its HALF_UP is sign(x) floor(|x| + 1/2), half
away from zero; ours (SPEC 6.2) is half towards +infinity. They agree except on exact
negative ties (-2.5: QONNX -3, ours -2), so HALF_UP is the closest mode (HALF_DOWN
would differ on every positive tie). Scales are float32 and Quant divides in float32,
so this form is measured against the integer model (tools/compare_export.py), never
called exact.

ONNX runtimes without the qonnx domain cannot run the Quant nodes; `execute_qonnx`
runs the graph with qonnx's own executor, which needs concrete shapes.
"""
from __future__ import annotations

import numpy as np

from ..integer.model import AddOp, ConvOp, RequantOp, ShuffleOp
from ..integer.requant import code_dtype
from .common import (DEFAULT_OPSET, GraphBuilder, check_opset, finish_model, initializer, nchw_value,
                     image_graph, op_outputs, pad_shift, padded_conv_bias, require_onnx, resolutions)
from .qdq_graph import prelu_slope

QONNX_DOMAIN = "qonnx.custom_op.general"
ROUNDING_MODE = "HALF_UP"
BIAS_BITS = 32


class _QONNX(GraphBuilder):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def const(self, value, dtype=np.float32) -> str:
        return super().const(value, dtype)

    def quant(self, x: str, scale: float, bits: int, signed: bool, narrow: bool, out: str) -> str:
        """A QONNX Quant node: the real value of the nearest code of (bits, signed, narrow)."""
        return self.node("Quant", [x, self.const(scale), self.const(0.0), self.const(float(bits))], out,
                         domain=QONNX_DOMAIN, signed=int(signed), narrow=int(narrow),
                         rounding_mode=ROUNDING_MODE)

    def quant_tensor(self, x: str, tensor: str) -> str:
        """Quantize x onto the grid of a model tensor; its output is `<tensor>.real`."""
        t = self.model.tensors[tensor]
        # the narrow signed grid is QONNX's narrow range; unsigned grids use every code
        if (t.qmin, t.qmax) != ((-(2 ** (t.bits - 1)) + 1, 2 ** (t.bits - 1) - 1) if t.signed
                                else (0, 2 ** t.bits - 1)):
            raise ValueError(f"export --format qonnx: tensor {tensor} codes [{t.qmin}, {t.qmax}] are not "
                             f"a {t.bits}-bit {'narrow signed' if t.signed else 'unsigned'} grid")
        return self.quant(x, t.scale, t.bits, t.signed, t.signed, tensor + ".real")

    def codes(self, tensor: str) -> str:
        """The code tensor (vector set's name and dtype) of `<tensor>.real`."""
        t = self.model.tensors[tensor]
        ratio = self.node("Div", [tensor + ".real", self.const(t.scale)])
        dt = self.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(code_dtype(t.qmin, t.qmax)))
        return self.node("Cast", [self.node("Round", [ratio])], tensor, to=dt)

    def conv(self, vm, op: ConvOp) -> str:
        x = self.model.tensors[op.input]
        k = op.weight.shape[2]
        if op.name not in vm.weight_scales:
            raise ValueError(f"export: conv {op.name} has no weight scale")
        s_w = float(vm.weight_scales[op.name])
        w = self.fresh(op.name + ".w")
        self.inits.append(initializer(w, (op.weight.astype(np.float64) * s_w).astype(np.float32)))
        wq = self.quant(w, s_w, op.w_bits, True, True, op.name + ".w.real")
        s_acc = x.scale * s_w
        b = self.fresh(op.name + ".b")
        bias = padded_conv_bias(op)
        self.inits.append(initializer(b, (bias.astype(np.float64) * s_acc).astype(np.float32)))
        b_bits = max(BIAS_BITS, int(np.abs(bias).max(initial=0)).bit_length() + 1)
        bq = self.quant(b, s_acc, b_bits, True, False, op.name + ".b.real")
        acc = self.node("Conv", [pad_shift(self, op.input + ".real", op, x.scale), wq, bq], op.name + ".acc.real",
                        pads=[k // 2] * 4, kernel_shape=[k, k], strides=[1, 1], dilations=[1, 1])
        slope = prelu_slope(op)
        if slope is not None:
            acc = self.node("PRelu", [acc, self.const([slope])])
        elif not self.model.tensors[op.output].signed and op.output != "image.out":
            acc = self.node("Relu", [acc])   # Brevitas's QuantReLU: Relu, then an unsigned Quant
        return self.quant_tensor(acc, op.output)


def _emit(g: _QONNX, vm, op) -> None:
    t = vm.model.tensors
    if op.output not in t or op.input not in t:
        raise ValueError(f"export: op {op.name} reads or writes a tensor the model does not describe")
    x = op.input + ".real"
    if isinstance(op, ConvOp):
        g.conv(vm, op)
    elif isinstance(op, RequantOp):
        g.quant_tensor(x, op.output)
    elif isinstance(op, AddOp):
        b = op.branch + ".real"
        if op.branch_relu:
            b = g.node("Relu", [b])
        if float(vm.model.config.res_scale) != 1:
            b = g.node("Mul", [b, g.const(float(vm.model.config.res_scale))])
        g.quant_tensor(g.node("Add", [x, b]), op.output)
    elif isinstance(op, ShuffleOp):
        g.node("DepthToSpace", [x], op.output + ".real", blocksize=op.factor, mode="CRD")
    else:
        raise ValueError(f"export: unknown op {op!r}")


def qonnx_op_model(vm, op, opset: int = DEFAULT_OPSET):
    """One op of the QONNX form as a model of its own: its input code tensors in (their
    real values are code * scale, no Quant), its output code tensor out. Fed the integer
    model's own inputs, every difference in its output arises in this op."""
    onnx = require_onnx()
    check_opset(opset)
    t = vm.model.tensors
    g = _QONNX(vm.model)
    reads = [op.input] + ([op.branch] if isinstance(op, AddOp) else [])
    for name in reads:
        g.node("Mul", [g.node("Cast", [name], to=onnx.TensorProto.FLOAT), g.const(t[name].scale)], name + ".real")
    _emit(g, vm, op)
    g.codes(op.output)
    res = resolutions(vm.model)
    value = lambda name: nchw_value(name, code_dtype(t[name].qmin, t[name].qmax), *res[name])
    graph = onnx.helper.make_graph(g.nodes, f"fqsr_qonnx_{op.name}", [value(n) for n in reads],
                                   [value(op.output)], g.inits)
    return finish_model(graph, opset, f"one op ({op.name}) of the QONNX form", domains={QONNX_DOMAIN: 1})


def qonnx_graph(vm, opset: int = DEFAULT_OPSET, all_outputs: bool = False):
    """The QONNX ModelProto of a VectorModel: `image.in` uint8 (N, 3, H, W) in,
    `image.out` uint8 (N, 3, sH, sW) out, N, H, W dynamic. all_outputs: every op output
    is a graph output too, as codes with the vector set's name, dtype and NCHW shape."""
    onnx = require_onnx()
    check_opset(opset)
    model = vm.model
    t = model.tensors
    if "image.in" not in t or "image.out" not in t:
        raise ValueError("export: the model has no image.in or image.out tensor")
    g = _QONNX(model)
    image = g.node("Mul", [g.node("Cast", ["image.in"], to=onnx.TensorProto.FLOAT), g.const(t["image.in"].scale)])
    g.quant_tensor(image, "image.in")
    for op in model.ops:
        _emit(g, vm, op)
    outputs = op_outputs(model, all_outputs)
    for name in outputs:
        g.codes(name)
    graph = image_graph(g, model, "fqsr_qonnx", outputs)
    cfg = model.config
    return finish_model(graph, opset, f"fqsr_ref {cfg.arch} x{cfg.scale} {cfg.bits}: QONNX form "
                                      "(Quant nodes, HALF_UP rounding, float32 scales: not bit-exact; "
                                      "docs/SPEC.md 6.10)", domains={QONNX_DOMAIN: 1})


def execute_qonnx(model, inputs) -> dict:
    """Run a QONNX ModelProto with qonnx's own executor: {graph output name: array}.

    inputs: {name: array}, or the (N, 3, H, W) uint8 codes of image.in. qonnx executes
    node by node and needs every shape concrete, so the dynamic dimensions (N, H, W,
    'H*2', ...) are fixed from the inputs' shapes first."""
    onnx = require_onnx()
    try:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.transformation.infer_shapes import InferShapes
    except ImportError:
        raise ValueError('execute_qonnx needs the qonnx package: pip install -e ".[onnx]"') from None
    if not isinstance(inputs, dict):
        inputs = {"image.in": inputs}
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    sizes = {}
    for value in fixed.graph.input:
        if value.name not in inputs:
            raise ValueError(f"execute_qonnx: no array for graph input {value.name}")
        x = np.asarray(inputs[value.name])
        dims = value.type.tensor_type.shape.dim
        if x.ndim != len(dims):
            raise ValueError(f"execute_qonnx: input {value.name} must have {len(dims)} dimensions, got {x.shape}")
        for dim, size in zip(dims, x.shape):
            if dim.HasField("dim_param"):
                name, _, factor = dim.dim_param.partition("*")
                sizes.setdefault(name, size // int(factor or 1))
    for value in list(fixed.graph.input) + list(fixed.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                name, _, factor = dim.dim_param.partition("*")
                dim.dim_value = sizes[name] * int(factor or 1)
    del fixed.graph.value_info[:]
    mw = ModelWrapper(fixed).transform(InferShapes())
    return execute_onnx(mw, {k: np.asarray(v) for k, v in inputs.items()})
