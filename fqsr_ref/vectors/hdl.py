"""The hardware kit of a vector set (`--hdl`): memories at the code's own width and
per-op parameter headers (vectors/README.md, "Hardware kit files").

.mem    one word a line, ceil(word_bits / 4) lowercase hex digits, what $writememh of a
        reg [word_bits-1:0] memory writes: elements (NCHW, OIHW), one pixel's channels
        per word (NHWC, channel 0 in the least significant bits), one tap's input
        channels per word (OHWI), and the 64-bit bit-plane words of SPEC 6.7.
.svh    localparams of one op for one stimulus's shapes (S/<op>.svh)
.h      the same as #defines prefixed with the op's name, every op of a stimulus (S/params.h)
"""
from __future__ import annotations

import re

import numpy as np

from ..integer.bitplane import pack_planes
from ..integer.model import AddOp, ConvOp, RequantOp, ShuffleOp
from ..integer.requant import op_product_bits
from .encodings import sha256

HDL_FORMAT = "mem"
BIAS_BITS = 32


def acc_bits(acc_bound: int) -> int:
    """The narrowest two's complement width that holds [-acc_bound, acc_bound]."""
    return int(acc_bound).bit_length() + 1


def patterns(values: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """The bits-wide two's complement patterns (unsigned codes as they are), uint64;
    ValueError if a value does not fit (bits, signed)."""
    v = np.asarray(values).astype(np.int64)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"vectors: values in [{v.min()}, {v.max()}] do not fit {bits} bits "
                         f"{'signed' if signed else 'unsigned'}")
    return (v & np.int64((1 << bits) - 1) if bits < 64 else v).astype(np.uint64)


def mem_text(words, word_bits: int) -> bytes:
    """One word a line (Python ints or a uint64 array), ceil(word_bits / 4) hex digits."""
    digits = -(-word_bits // 4)
    values = words.ravel().tolist() if isinstance(words, np.ndarray) else list(words)
    return "".join(f"{w:0{digits}x}\n" for w in values).encode("ascii")


def packed_words(rows: np.ndarray, bits: int, signed: bool) -> list:
    """(R, F) codes -> R Python ints, field f of row r in bits [f bits, (f+1) bits)."""
    pats = patterns(rows, bits, signed).tolist()
    out = []
    for row in pats:
        word = 0
        for f, p in enumerate(row):
            word |= p << (f * bits)
        out.append(word)
    return out


def nhwc_rows(codes: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N H W, C): one pixel's channels per row."""
    n, c, h, w = codes.shape
    return np.ascontiguousarray(codes.transpose(0, 2, 3, 1).reshape(n * h * w, c))


def ohwi_rows(weight: np.ndarray) -> np.ndarray:
    """(O, I, K, K) -> (O K K, I): one output channel's one tap's input channels per row."""
    o, i, kh, kw = weight.shape
    return np.ascontiguousarray(weight.transpose(0, 2, 3, 1).reshape(o * kh * kw, i))


def plane_words(rows: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """SPEC 6.7 pack_planes of (R, C) rows: uint64 (bits, R, ceil(C / 64))."""
    return pack_planes(rows, bits, signed)


class Kit:
    """Adds the kit files of one set to a Builder (files and manifest records)."""

    def __init__(self, b, model, tensors: dict):
        self.b, self.model, self.tensors = b, model, tensors

    def _add(self, path: str, data: bytes, **record):
        self.b.files[path] = data
        self.b.records[path] = dict(record, bytes=len(data), sha256=sha256(data))

    def _mem(self, path, words, word_bits, tensor, layout, shape):
        self._add(path, mem_text(words, word_bits), format=HDL_FORMAT, tensor=tensor, layout=layout,
                  word_bits=int(word_bits), shape=[int(s) for s in shape])

    def weights(self):
        for op in self.model.ops:
            if not isinstance(op, ConvOp):
                continue
            w, stem = op.weight, f"weights/{op.name}"
            o, i, kh, kw = w.shape
            self._mem(f"{stem}.w.mem", patterns(w, op.w_bits, True), op.w_bits, op.name + ".w", "OIHW",
                      w.shape)
            self._mem(f"{stem}.w.ohwi.mem", packed_words(ohwi_rows(w), op.w_bits, True), i * op.w_bits,
                      op.name + ".w", "OHWI-words", (o, kh, kw))
            planes = plane_words(ohwi_rows(w), op.w_bits, True)
            self._mem(f"{stem}.w.planes.mem", planes, 64, op.name + ".w", "planes",
                      (op.w_bits, o, kh, kw, planes.shape[2]))
            self._mem(f"{stem}.b.mem", patterns(op.bias, BIAS_BITS, True), BIAS_BITS, op.name + ".b", "O",
                      op.bias.shape)

    def stimulus(self, stim: str, out: dict, accs: dict):
        """The memories of one stimulus: out (tensor -> codes), accs (conv -> accumulators)."""
        conv_inputs = {op.input for op in self.model.ops if isinstance(op, ConvOp)}
        for name, codes in sorted(out.items()):
            t = self.model.tensors[name]
            n, c, h, w = codes.shape
            stem = f"{stim}/{name}"
            self._mem(f"{stem}.mem", patterns(codes, t.bits, t.signed), t.bits, name, "NCHW", codes.shape)
            self._mem(f"{stem}.nhwc.mem", packed_words(nhwc_rows(codes), t.bits, t.signed), c * t.bits,
                      name, "NHWC-words", (n, h, w))
            if name in conv_inputs:
                planes = plane_words(nhwc_rows(codes), t.bits, t.signed)
                self._mem(f"{stem}.planes.mem", planes, 64, name, "planes", (t.bits, n, h, w, planes.shape[2]))
        for op in self.model.ops:
            if isinstance(op, ConvOp):
                bits = acc_bits(op.acc_bound)
                self._mem(f"{stim}/{op.name}.acc.mem", patterns(accs[op.name], bits, True), bits,
                          op.name + ".acc", "NCHW", accs[op.name].shape)

    def headers(self, stim: str, out: dict, config_text: str):
        """S/<op>.svh per op (unprefixed localparams) and S/params.h (every op, prefixed #defines)."""
        shapes = {k: v.shape for k, v in out.items()}
        blocks = []
        for op in self.model.ops:
            params = op_params(self.model, op, stim, shapes, self.b.files)
            self._add(f"{stim}/{op.name}.svh",
                      svh_text(f"{op.kind} {op.name}, stimulus {stim}; {config_text}", params), format="svh")
            blocks.append((op, params))
        self._add(f"{stim}/params.h", c_header_text(f"every op, stimulus {stim}; {config_text}", blocks, stim),
                  format="h")


def _tensor_params(prefix: str, t) -> list:
    return [(f"{prefix}_BITS", t.bits), (f"{prefix}_SIGNED", int(t.signed)),
            (f"{prefix}_QMIN", t.qmin), (f"{prefix}_QMAX", t.qmax)]


FILE_KINDS = (("MEM", ".mem"), ("NHWC_MEM", ".nhwc.mem"), ("PLANES_MEM", ".planes.mem"), ("HEX", ".hex"))


def _file_params(prefix: str, stem: str, files) -> list:
    return [(f"{prefix}_{key}", stem + ext) for key, ext in FILE_KINDS if stem + ext in files]


def op_params(model, op, stim: str, shapes: dict, files) -> list:
    """[(NAME, value)] of one op for one stimulus (vectors/README.md, the header table);
    values are ints or strings (file paths relative to the set root)."""
    x, y = model.tensors[op.input], model.tensors[op.output]
    xs, ys = shapes[op.input], shapes[op.output]
    p = [("BATCH", xs[0])]
    if isinstance(op, ConvOp):
        cout, cin, k, _ = op.weight.shape
        p += [("CIN", cin), ("COUT", cout), ("K", k), ("STRIDE", 1), ("PAD", k // 2), ("FAN_IN", cin * k * k)]
    elif isinstance(op, ShuffleOp):
        p += [("CIN", xs[1]), ("COUT", ys[1]), ("FACTOR", op.factor)]
    else:
        p += [("C", xs[1])]
    p += [("H_IN", xs[2]), ("W_IN", xs[3]), ("H_OUT", ys[2]), ("W_OUT", ys[3])]
    p += _tensor_params("IN", x)
    if isinstance(op, AddOp):
        p += _tensor_params("BR", model.tensors[op.branch]) + [("BRANCH_RELU", int(op.branch_relu))]
    if isinstance(op, ConvOp):
        wq = (1 << (op.w_bits - 1)) - 1
        p += [("W_BITS", op.w_bits), ("W_SIGNED", 1), ("W_QMIN", -wq), ("W_QMAX", wq), ("BIAS_BITS", BIAS_BITS),
              ("ACC_BITS", acc_bits(op.acc_bound)), ("ACC_STORE_BITS", 8 * np.dtype(op.acc_dtype).itemsize),
              ("ACC_BOUND", int(op.acc_bound))]
    if isinstance(op, (ConvOp, RequantOp, AddOp)):
        p += [("MULT", op.multiplier), ("SHIFT", op.shift), ("RIGHT_SHIFT", 31 - op.shift),
              ("PRODUCT_BITS", op_product_bits(op, model.tensors))]
    if isinstance(op, ConvOp):
        p += [("NEG_MULT", op.neg_multiplier), ("NEG_SHIFT", op.neg_shift),
              ("NEG_RIGHT_SHIFT", 31 - op.neg_shift), ("NEG_SIGN", op.neg_sign)]
    if isinstance(op, AddOp):
        p += [("BRANCH_MULT", op.branch_multiplier)]
    p += _tensor_params("OUT", y)[:2] + [("QMIN", y.qmin), ("QMAX", y.qmax)]
    p += _file_params("IN", f"{stim}/{op.input}", files)
    if isinstance(op, AddOp):
        p += _file_params("BR", f"{stim}/{op.branch}", files)
    p += _file_params("OUT", f"{stim}/{op.output}", files)
    if isinstance(op, ConvOp):
        p += _file_params("ACC", f"{stim}/{op.name}.acc", files)
        w = f"weights/{op.name}.w"
        p += [(f"W_{key}", w + ext) for key, ext in
              (("MEM", ".mem"), ("OHWI_MEM", ".ohwi.mem"), ("PLANES_MEM", ".planes.mem"), ("HEX", ".hex"))
              if w + ext in files]
        p += _file_params("B", f"weights/{op.name}.b", files)
    return [(k, int(v) if not isinstance(v, str) else v) for k, v in p]


def svh_text(title: str, params: list) -> bytes:
    lines = [f"// fqsr_ref golden vectors: {title}",
             "// Generated by python -m fqsr_ref.vectors; names in vectors/README.md. Include inside a module."]
    for name, v in params:
        if isinstance(v, str):
            lines.append(f'localparam {name} = "{v}";')
        elif name == "ACC_BOUND":
            lines.append(f"localparam signed [63:0] {name} = 64'sd{v};")
        else:
            lines.append(f"localparam integer {name} = {v};")
    return ("\n".join(lines) + "\n").encode("ascii")


def c_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text).upper()


def c_header_text(title: str, blocks: list, stim: str) -> bytes:
    """#defines of every op, each name prefixed with its op's name (c_name) and a double
    underscore, so that op blocks.0.conv1's IN_QMIN and op blocks.0.conv1.in's QMIN differ."""
    guard = f"FQSR_{c_name(stim)}_PARAMS_H"
    names = [f"{c_name(op.name)}__{name}" for op, params in blocks for name, _ in params]
    if len(set(names)) != len(names):
        raise ValueError(f"vectors: op names collide as C identifiers in {stim}/params.h")
    lines = [f"/* fqsr_ref golden vectors: {title}",
             "   Generated by python -m fqsr_ref.vectors; names in vectors/README.md. */",
             f"#ifndef {guard}", f"#define {guard}"]
    for op, params in blocks:
        prefix = c_name(op.name)
        lines.append(f"\n/* {op.kind} {op.name} */")
        for name, v in params:
            if isinstance(v, str):
                value = f'"{v}"'
            elif name == "ACC_BOUND":
                value = f"{v}LL"
            else:
                value = f"({v})" if v < 0 else str(v)
            lines.append(f"#define {prefix}__{name} {value}")
    lines.append(f"\n#endif /* {guard} */")
    return ("\n".join(lines) + "\n").encode("ascii")
