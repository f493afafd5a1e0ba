"""The integer model as an ONNX graph of standard operators, bit-exact (docs/SPEC.md 6.10).

Every op of the integer model (SPEC 6.8) maps to integer ONNX operators only:

  conv      ConvInteger on uint8 operands with zero points, one call per pair of
            operand bytes and per chunk of input channels whose partial sum is proven
            to fit int32; the partials are summed in int64 with their byte weights
            (Eq. 1-2 at byte granularity), the bias added
  requant   the rounding right shift of acc * M (SPEC 6.4) in int64: Mul, Add of
            2^(n-1), floor division by 2^n as (p - Mod(p, 2^n)) / 2^n, then Clip
            and Cast to the code dtype. PReLU's second multiplier is chosen per
            element with Where(acc >= 0); a product that could overflow int64 is
            split into two 16-bit halves of M
  add       both operands in int64 with their multipliers, the same shift and clamp
  shuffle   DepthToSpace (mode CRD)

Why uint8 x uint8: onnxruntime's u8s8 kernels multiply-add byte pairs into int16 with
saturation on x86 CPUs without VNNI, so a signed weight operand is not exact on
every machine; with both operands unsigned (signed codes + 128, zero point 128) the
kernels widen to 16 bits first and are exact everywhere. ConvInteger pads with the
zero point, which is the value 0 of SPEC 6.6.
"""
from __future__ import annotations

import numpy as np

from ..integer.model import AddOp, ConvOp, IntModel, RequantOp, ShuffleOp
from ..integer.requant import INT32_MAX, SPLIT_BITS, code_dtype, operand_max_abs, product_bits, split_exact
from .common import (DEFAULT_OPSET, GraphBuilder, check_opset, finish_model, image_graph, initializer,
                     op_outputs, padded_conv_bias, require_onnx)

BYTE = 256


def _parts(bits: int, signed: bool) -> list:
    """The byte parts of an operand of `bits` bits: [(weight shift, signed, max |value|)].

    value = sum_i part_i * 2^shift_i; the low byte of a wide operand is unsigned
    (value mod 256), the high part carries the sign (floor(value / 256)).
    """
    if bits <= 8:
        return [(0, signed, operand_max_abs(bits, signed))]
    if bits > 16:
        raise ValueError(f"export: {bits}-bit codes are wider than the 16 bits the integer model allows")
    return [(0, False, BYTE - 1), (8, signed, operand_max_abs(bits - 8, signed))]


def _as_uint8(values: np.ndarray, signed: bool):
    """(uint8 array, zero point): signed values in [-128, 127] are stored + 128."""
    offset = 128 if signed else 0
    return (values.astype(np.int64) + offset).astype(np.uint8), np.uint8(offset)


def _weight_parts(w: np.ndarray, bits: int):
    """[(shift, uint8 OIHW, zero point, max |value|)] of the weight codes."""
    w = w.astype(np.int64)
    parts = _parts(bits, True)
    if len(parts) == 1:
        return [(0, *_as_uint8(w, True), parts[0][2])]
    lo = w % BYTE
    return [(0, *_as_uint8(lo, False), parts[0][2]), (8, *_as_uint8((w - lo) // BYTE, True), parts[1][2])]


class _Graph(GraphBuilder):
    """The integer graph under construction, with each code tensor's int64 value and
    uint8 byte parts made once however many ops read it."""

    def __init__(self):
        super().__init__()
        self.int64 = {}     # tensor name -> its int64 value name
        self.bytes = {}     # tensor name -> [(shift, uint8 name, zero point name, max |value|)]

    def as_int64(self, tensor: str) -> str:
        if tensor not in self.int64:
            self.int64[tensor] = self.cast(tensor, np.int64)
        return self.int64[tensor]

    def floor_div(self, p: str, n: int) -> str:
        """floor(p / 2^n) on int64, exact: p - Mod(p, 2^n) is a multiple of 2^n (Mod with
        fmod = 0 takes the divisor's sign), so the truncating Div is exact."""
        if n == 0:
            return p
        d = self.const(1 << n, np.int64)
        return self.node("Div", [self.node("Sub", [p, self.node("Mod", [p, d], fmod=0)]), d])

    def clamp_cast(self, y: str, qmin: int, qmax: int, out: str) -> str:
        clipped = self.node("Clip", [y, self.const(qmin, np.int64), self.const(qmax, np.int64)])
        return self.cast(clipped, code_dtype(qmin, qmax), out)

    def operand_bytes(self, tensor: str, bits: int, signed: bool) -> list:
        """The uint8 parts of a code tensor for ConvInteger (computed once per tensor)."""
        if tensor in self.bytes:
            return self.bytes[tensor]
        parts = _parts(bits, signed)
        if len(parts) == 1:
            if signed:
                wide = self.node("Add", [self.cast(tensor, np.int32), self.const(128, np.int32)])
                names = [self.cast(wide, np.uint8)]
            else:
                names = [tensor if bits == 8 else self.cast(tensor, np.uint8)]
        else:
            v = self.cast(tensor, np.int32)
            lo = self.node("Mod", [v, self.const(BYTE, np.int32)], fmod=0)
            hi = self.node("Div", [self.node("Sub", [v, lo]), self.const(BYTE, np.int32)])
            if signed:
                hi = self.node("Add", [hi, self.const(128, np.int32)])
            names = [self.cast(lo, np.uint8), self.cast(hi, np.uint8)]
        result = [(shift, name, self.const(128 if sgn else 0, np.uint8), amax)
                  for (shift, sgn, amax), name in zip(parts, names)]
        self.bytes[tensor] = result
        return result


def _requant(g: _Graph, acc: str, bound: int, multiplier: int, shift: int) -> str:
    """round_half_up(acc * M / 2^(31 - shift)) in int64, unclamped (SPEC 6.4), M signed
    (a negative PReLU slope). bound is the proven max |acc|. Where the product needs more
    than 64 bits, it is formed from the 16-bit halves of M as the engines do (SPEC 6.4,
    requant.split_exact): M = Mh 2^16 + Ml with 0 <= Ml < 2^16 (divmod also for M < 0)."""
    n = 31 - shift
    half = (1 << (n - 1)) if n else 0
    if product_bits(bound, abs(multiplier), shift) <= 64:
        p = g.node("Mul", [acc, g.const(multiplier, np.int64)])
        return g.floor_div(g.node("Add", [p, g.const(half, np.int64)]) if half else p, n)
    if not split_exact(bound, shift):
        raise ValueError(f"export: accumulator bound {bound} with shift {shift} cannot be requantized "
                         f"exactly in int64")
    m_hi, m_lo = divmod(multiplier, 1 << SPLIT_BITS)
    low = g.floor_div(g.node("Add", [g.node("Mul", [acc, g.const(m_lo, np.int64)]), g.const(half, np.int64)]),
                      SPLIT_BITS)
    return g.floor_div(g.node("Add", [g.node("Mul", [acc, g.const(m_hi, np.int64)]), low]), n - SPLIT_BITS)


def _conv(g: _Graph, op: ConvOp, x, want_acc: bool) -> str:
    """The accumulator of a conv (int64 value name); named `<conv>.acc` when wanted.

    A conv whose taps outside the image read pad codes p_c (EDSR's head with head_pad
    "mean", SPEC 6.8) runs one ConvInteger per input channel with zero point p_c: there
    it sums (x - p_c) w over the taps inside the image and 0 outside (padded_conv_bias)."""
    o, c, k, _ = op.weight.shape
    pads = [k // 2] * 4
    pad_value = getattr(op, "pad_value", None)
    x_parts = g.operand_bytes(op.input, x.bits, x.signed)
    bias = padded_conv_bias(op)
    if pad_value is not None and (len(x_parts) != 1 or x.signed):
        raise ValueError(f"export: conv {op.name}: pad codes need 8-bit unsigned input codes")
    partials = []
    for xs, x_u8, x_zp, x_max in x_parts:
        for ws, w_u8, w_zp, w_max in _weight_parts(op.weight, op.w_bits):
            # input channels per ConvInteger so that its exact sum fits int32
            step = 1 if pad_value is not None else max(1, min(c, INT32_MAX // (k * k * x_max * w_max)))
            for c0 in range(0, c, step):
                c1 = min(c, c0 + step)
                xin = x_u8 if (c0, c1) == (0, c) else g.node(
                    "Slice", [x_u8, g.const([c0], np.int64), g.const([c1], np.int64), g.const([1], np.int64)])
                zp = x_zp if pad_value is None else g.const(pad_value[c0], np.uint8)
                w_name = g.fresh(f"{op.name}.w")
                g.inits.append(initializer(w_name, w_u8[:, c0:c1]))
                partials.append((xs + ws, g.node("ConvInteger", [xin, w_name, zp, g.const(w_zp, np.uint8)],
                                                 pads=pads, kernel_shape=[k, k])))
    bias = bias.reshape(1, o, 1, 1)
    acc_name = op.name + ".acc" if want_acc else None
    if len(partials) == 1 and op.acc_dtype == "int32":
        acc = g.node("Add", [partials[0][1], g.const(bias, np.int32)], acc_name)
        return g.cast(acc, np.int64)
    total = g.const(bias, np.int64)
    for weight_shift, part in partials:
        term = g.cast(part, np.int64)
        if weight_shift:
            term = g.node("Mul", [term, g.const(1 << weight_shift, np.int64)])
        total = g.node("Add", [term, total])
    if want_acc:
        g.cast(total, op.acc_dtype, acc_name) if op.acc_dtype != "int64" else g.node("Identity", [total], acc_name)
    return total


def _conv_requant(g: _Graph, op: ConvOp, acc: str) -> str:
    if (op.neg_multiplier, op.neg_shift, op.neg_sign) == (op.multiplier, op.shift, 1):
        return _requant(g, acc, op.acc_bound, op.multiplier, op.shift)
    pos = _requant(g, acc, op.acc_bound, op.multiplier, op.shift)
    neg = _requant(g, acc, op.acc_bound, op.neg_sign * op.neg_multiplier, op.neg_shift)
    return g.node("Where", [g.node("GreaterOrEqual", [acc, g.const(0, np.int64)]), pos, neg])


def _add(g: _Graph, op: AddOp) -> str:
    a, b = g.as_int64(op.input), g.as_int64(op.branch)
    if op.branch_relu:
        b = g.node("Max", [b, g.const(0, np.int64)])
    n = 31 - op.shift
    p = g.node("Add", [g.node("Mul", [a, g.const(op.multiplier, np.int64)]),
                       g.node("Mul", [b, g.const(op.branch_multiplier, np.int64)])])
    if n:
        p = g.node("Add", [p, g.const(1 << (n - 1), np.int64)])
    return g.floor_div(p, n)


def _shuffle(g: _Graph, op: ShuffleOp, x) -> str:
    """DepthToSpace CRD moves codes; onnxruntime runs it on 8-bit and float tensors, so
    16-bit codes go through float32, which holds every one of them exactly."""
    if np.dtype(code_dtype(x.qmin, x.qmax)).itemsize == 1:
        return g.node("DepthToSpace", [op.input], op.output, blocksize=op.factor, mode="CRD")
    moved = g.node("DepthToSpace", [g.cast(op.input, np.float32)], blocksize=op.factor, mode="CRD")
    return g.cast(moved, code_dtype(x.qmin, x.qmax), op.output)


def integer_graph(model: IntModel, opset: int = DEFAULT_OPSET, all_outputs: bool = False):
    """The ONNX ModelProto of an integer model: `image.in` uint8 (N, 3, H, W) in,
    `image.out` uint8 (N, 3, sH, sW) out, N, H, W dynamic. all_outputs: every op
    output and every conv accumulator is a graph output too, named and typed as in
    a vector set (SPEC 7.1)."""
    require_onnx()
    check_opset(opset)
    t = model.tensors
    g = _Graph()
    for op in model.ops:
        x, y = t[op.input], t[op.output]
        if isinstance(op, ConvOp):
            acc = _conv(g, op, x, all_outputs)
            g.clamp_cast(_conv_requant(g, op, acc), y.qmin, y.qmax, op.output)
        elif isinstance(op, RequantOp):
            bound = max(-x.qmin, x.qmax)
            g.clamp_cast(_requant(g, g.as_int64(op.input), bound, op.multiplier, op.shift),
                         y.qmin, y.qmax, op.output)
        elif isinstance(op, AddOp):
            g.clamp_cast(_add(g, op), y.qmin, y.qmax, op.output)
        elif isinstance(op, ShuffleOp):
            _shuffle(g, op, x)
        else:
            raise ValueError(f"export: unknown op {op!r}")
    accs = {op.name + ".acc": np.dtype(op.acc_dtype) for op in model.ops if isinstance(op, ConvOp)}
    outputs = op_outputs(model, all_outputs)
    outputs = outputs[:-1] + (list(accs) if all_outputs else []) + outputs[-1:]
    graph = image_graph(g, model, "fqsr_integer", outputs, accs)
    return finish_model(graph, opset, f"fqsr_ref integer model {model.config.arch} x{model.config.scale} "
                                      f"{model.config.bits}: bit-exact ONNX (docs/SPEC.md 6.10)")
