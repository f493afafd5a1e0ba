"""Weight and constant memory images of a model's convs, written by `vectors --stream` into
weights/ of the stream directory (layouts in vectors/README.md, "Weight and constant ROM
images"), each in three formats: `.mem` ($readmemh), Xilinx `.coe`, Intel `.mif`.

<conv>.w.f<SIMD>   one word a (o, ky, kx, g): the bit planes of SIMD input channels g SIMD ..
                   g SIMD + SIMD - 1 of that tap, W_BITS x SIMD bits, bit m SIMD + l = bit m of
                   the W_BITS-bit two's complement code of channel g SIMD + l (0 past CIN).
                   With SIMD >= CIN it is the b_planes port of tools/hdl/fqsr_conv_unit.v
                   (CIN = SIMD) for one tap.
<conv>.const       32-bit words: MULT, RIGHT_SHIFT, NEG_MULT, NEG_RIGHT_SHIFT, NEG_SIGN, QMIN,
                   QMAX, COUT, then bias[0 .. COUT-1], each a two's complement 32-bit value.
"""
from __future__ import annotations

import numpy as np

from ..integer.model import ConvOp
from .hdl import BIAS_BITS, mem_text, patterns

ROM_FORMATS = ("mem", "coe", "mif")
CONST_FIELDS = ("MULT", "RIGHT_SHIFT", "NEG_MULT", "NEG_RIGHT_SHIFT", "NEG_SIGN", "QMIN", "QMAX", "COUT")
CONST_BITS = 32


def weight_words(weight: np.ndarray, w_bits: int, simd: int) -> list:
    """(O, I, K, K) weight codes -> the words of <conv>.w.f<SIMD> as Python ints."""
    o, i, kh, kw = weight.shape
    groups = -(-i // simd)
    padded = np.zeros((o, groups * simd, kh, kw), np.int64)
    padded[:, :i] = weight
    pats = patterns(padded.transpose(0, 2, 3, 1).reshape(o * kh * kw * groups, simd), w_bits, True)
    words = []
    for row in pats.tolist():
        word = 0
        for lane, p in enumerate(row):
            for m in range(w_bits):
                word |= ((p >> m) & 1) << (m * simd + lane)
        words.append(word)
    return words


def const_words(op: ConvOp, out_tensor) -> list:
    """The words of <conv>.const as 32-bit patterns (Python ints)."""
    values = [op.multiplier, 31 - op.shift, op.neg_multiplier, 31 - op.neg_shift, op.neg_sign,
              out_tensor.qmin, out_tensor.qmax, op.weight.shape[0]]
    values += [int(b) for b in op.bias]
    return [int(p) for p in patterns(np.array(values, np.int64), BIAS_BITS, True)]


def coe_text(words: list, word_bits: int) -> bytes:
    """Xilinx block memory generator .coe: radix 16, one word a line, comma-separated."""
    digits = -(-word_bits // 4)
    body = ",\n".join(f"{w:0{digits}x}" for w in words)
    return (f"; fqsr_ref ROM image, {len(words)} words of {word_bits} bits\n"
            f"memory_initialization_radix=16;\nmemory_initialization_vector=\n{body};\n").encode("ascii")


def mif_text(words: list, word_bits: int) -> bytes:
    """Intel (Altera) memory initialization file: decimal addresses, hex data."""
    digits = -(-word_bits // 4)
    lines = [f"-- fqsr_ref ROM image, {len(words)} words of {word_bits} bits",
             f"WIDTH={word_bits};", f"DEPTH={len(words)};", "ADDRESS_RADIX=UNS;", "DATA_RADIX=HEX;",
             "CONTENT BEGIN"]
    lines += [f"\t{a} : {w:0{digits}x};" for a, w in enumerate(words)]
    lines.append("END;")
    return ("\n".join(lines) + "\n").encode("ascii")


FORMAT_TEXT = {"mem": mem_text, "coe": coe_text, "mif": mif_text}


def rom_images(model, simd: int) -> tuple:
    """({path: bytes}, {conv: index entry}) of every conv's weight and constant images."""
    files, index = {}, {}
    for op in model.ops:
        if not isinstance(op, ConvOp):
            continue
        o, i, k, _ = op.weight.shape
        images = {f"w.f{simd}": (weight_words(op.weight, op.w_bits, simd), op.w_bits * simd),
                  "const": (const_words(op, model.tensors[op.output]), CONST_BITS)}
        entry = dict(cout=o, cin=i, k=k, w_bits=op.w_bits, simd=simd, groups=-(-i // simd))
        for name, (words, bits) in images.items():
            stem = f"weights/{op.name}.{name}"
            for fmt in ROM_FORMATS:
                files[f"{stem}.{fmt}"] = FORMAT_TEXT[fmt](words, bits)
            entry[name.split(".")[0]] = dict(stem=stem, word_bits=bits, words=len(words))
        index[op.name] = entry
    return files, index
