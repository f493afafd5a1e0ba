"""What every exported form shares: opsets, the image input and outputs, the model wrapper.

Only the export imports `onnx` (the optional extra `pip install -e ".[onnx]"`); the
rest of fqsr_ref never does.
"""
from __future__ import annotations

import numpy as np

MIN_OPSET = 13        # ConvInteger (10), Clip on integers (12), Mod, DepthToSpace CRD and int8 Q/DQ (13)
DEFAULT_OPSET = 17    # what TensorRT, OpenVINO and onnxruntime's quantization tools read without surprises
INT16_QDQ_OPSET = 21  # QuantizeLinear / DequantizeLinear with int16 and int4 outputs

# Axis names of the dynamic dimensions of every graph input and output (NCHW).
BATCH, HEIGHT, WIDTH = "N", "H", "W"


def require_onnx():
    """The onnx module, or a ValueError naming the extra that provides it."""
    try:
        import onnx
    except ImportError:
        raise ValueError('export needs the onnx package: pip install -e ".[onnx]"') from None
    return onnx


def check_opset(opset: int) -> int:
    """opset if this export can target it, else ValueError naming the supported range."""
    top = require_onnx().defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= top:
        raise ValueError(f"--opset {opset}: supported opsets are {MIN_OPSET} to {top}")
    return opset


def elem_type(dtype) -> int:
    """ONNX TensorProto element type of a NumPy dtype."""
    onnx = require_onnx()
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def nchw_value(name: str, dtype, channels: int | None, scale: int = 1):
    """A value_info of shape (N, channels, scale H, scale W) with symbolic dimensions.

    scale is the tensor's resolution relative to the input image (2 after a x2
    pixel shuffle); its height and width are then named 'H*2', 'W*2'.
    """
    onnx = require_onnx()
    h, w = (HEIGHT, WIDTH) if scale == 1 else (f"{HEIGHT}*{scale}", f"{WIDTH}*{scale}")
    return onnx.helper.make_tensor_value_info(name, elem_type(dtype), [BATCH, channels, h, w])


def initializer(name: str, array: np.ndarray):
    """A constant tensor of the graph, with the array's own dtype and shape."""
    return require_onnx().numpy_helper.from_array(np.ascontiguousarray(array), name)


def finish_model(graph, opset: int, doc: str, domains: dict | None = None):
    """A ModelProto of graph at opset (plus custom domains {name: version}),
    checked with onnx.checker in full (shape inference included)."""
    onnx = require_onnx()
    imports = [onnx.helper.make_opsetid("", opset)]
    imports += [onnx.helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    model = onnx.helper.make_model(graph, opset_imports=imports, producer_name="fqsr_ref",
                                   doc_string=doc)
    # The IR version onnxruntime of the same era reads (make_model picks onnx's newest).
    model.ir_version = min(model.ir_version, 10)
    if not domains:
        onnx.checker.check_model(model, full_check=True)
    else:
        onnx.checker.check_model(model)   # custom ops have no schema for shape inference
    return model


class GraphBuilder:
    """Nodes and initializers under construction: every value name is unique, and a
    constant is stored once however many nodes read it."""

    def __init__(self):
        self.onnx = require_onnx()
        self.nodes, self.inits, self._consts, self._n = [], [], {}, 0

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}#{self._n}"

    def node(self, op: str, inputs: list, out: str | None = None, domain: str = "", **attrs) -> str:
        out = out or self.fresh(f"{inputs[0]}.{op}")
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, domain=domain, **attrs))
        return out

    def const(self, value, dtype) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.fresh("const")
            self.inits.append(initializer(name, arr))
            self._consts[key] = name
        return self._consts[key]

    def cast(self, x: str, dtype, out: str | None = None) -> str:
        return self.node("Cast", [x], out, to=elem_type(dtype))


def resolutions(model) -> dict:
    """tensor name -> (channels, resolution factor relative to image.in) of an IntModel;
    a conv's accumulator `<conv>.acc` has its output's."""
    from ..integer.model import ConvOp, ShuffleOp
    res = {"image.in": (3, 1)}
    for op in model.ops:
        if op.input not in res:
            raise ValueError(f"export: op {op.name} reads {op.input!r}, which no earlier op writes")
        ch, f = res[op.input]
        if isinstance(op, ConvOp):
            res[op.output] = res[op.name + ".acc"] = (op.weight.shape[0], f)
        elif isinstance(op, ShuffleOp):
            res[op.output] = (ch // op.factor ** 2, f * op.factor)
        else:
            res[op.output] = (ch, f)
    return res


def padded_conv_bias(op) -> np.ndarray:
    """The int64 bias of a conv run on its input less the pad codes p_c (zero-padded):
    a conv whose taps outside the image read p_c (ConvOp.pad_value, EDSR's head with
    head_pad "mean") equals the zero-padded conv of x - p plus sum over all taps of
    p_c w, which this bias carries. Without pad codes, the bias itself."""
    bias = op.bias.astype(np.int64)
    if getattr(op, "pad_value", None) is None:
        return bias
    return bias + np.einsum("ocij,c->o", op.weight.astype(np.int64), np.asarray(op.pad_value, np.int64))


def pad_shift(g: GraphBuilder, x_real: str, op, scale: float) -> str:
    """x_real less the real value of the conv's pad codes (per channel), for the float
    forms' convs, or x_real itself without pad codes (see padded_conv_bias)."""
    if getattr(op, "pad_value", None) is None:
        return x_real
    p = (np.asarray(op.pad_value, np.float64) * scale).astype(np.float32).reshape(1, -1, 1, 1)
    return g.node("Sub", [x_real, g.const(p, np.float32)])


def op_outputs(model, all_outputs: bool) -> list:
    """Graph output names: image.out, after every other op output when all_outputs."""
    names = [op.output for op in model.ops if op.output != "image.out"] if all_outputs else []
    return names + ["image.out"]


def image_graph(g: GraphBuilder, model, name: str, outputs: list, dtypes: dict | None = None):
    """The graph of g: input image.in uint8 (N, 3, H, W), the named outputs NCHW at their
    resolution, each of its code dtype (or dtypes[name], e.g. an accumulator's)."""
    from ..integer.requant import code_dtype
    res, t, dtypes = resolutions(model), model.tensors, dtypes or {}

    def dtype(n):
        return dtypes[n] if n in dtypes else code_dtype(t[n].qmin, t[n].qmax)
    return g.onnx.helper.make_graph(g.nodes, name, [nchw_value("image.in", np.uint8, 3)],
                                    [nchw_value(n, dtype(n), *res[n]) for n in outputs], g.inits)
