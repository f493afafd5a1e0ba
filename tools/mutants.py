#!/usr/bin/env python3
"""Mutation harness for the golden vectors: a Python port with rule switches.

    python tools/mutants.py vectors/srresnet_x2_4-4-8 vectors/srresnet_x2_8-8-8
    python tools/mutants.py                  # every set under vectors/
    python tools/mutants.py --list
    python tools/mutants.py --mutants tie_half_even,flipped_kernel --require-all DIR...

The port below is written from the documents a port writer gets (docs/SPEC.md
sections 6 and 7, vectors/README.md, and a vector directory's manifest.json,
model.txt, weights/ and stimulus folders); it does not import fqsr_ref's integer
engines or vector writer. It runs every op of the graph on every stimulus's
image.in with int64 NumPy arithmetic and writes a port directory (every op output,
every conv's accumulators and bit-plane files, and the image.in it read, as .npy of
the golden dtype), which `fqsr_ref.verify` then checks against the golden set.

Every arithmetic rule of the port is a switch (`Rules`). A *mutant* is the port
with exactly one switch changed: one wrong rule a port writer could plausibly pick
(a tie rule, a floor shift, edge padding, ...). The harness first checks that the
unmutated port passes every layer of every set given (else it prints the
verifier's report and exits 1), then runs every mutant on every set and prints a
table: does the verifier catch it (FAIL), and at which layer first; if not, are
the mutant's tensors identical to the correct port's (the vectors never exercise
the rule) or do they differ (a hole in the verifier). Exit status 0 however many
mutants survive (the table is the measurement), unless --require-all is given:
then 1 if some mutant is caught by no set. 2: unusable input.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

I64 = np.int64
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# ---------------------------------------------------------------------------
# The rules, each a switch; the defaults are the documented rules
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Rules:
    """Every arithmetic rule of the port. The defaults are SPEC 6 / vectors/README."""
    tie: str = "half_up"            # ties of every rounding shift: half_up | half_even | half_away | half_down
    shift: str = "round"            # division by 2^n: round (single rounding, SPEC 6.2) | floor | trunc | double
    shift_offset: int = 0           # n = 31 - SHIFT + shift_offset
    saturate: str = "code_range"    # clamp to [qmin, qmax] | storage_dtype (clamp to the dtype) | wrap (M-bit)
    acc_int32_wrap: bool = False    # accumulators wrapped to int32 (two's complement) before requantization
    padding: str = "zero"           # zero | edge
    kernel_flip: bool = False       # true convolution (kernel flipped in both spatial axes) instead of correlation
    bias: bool = True               # add the bias to the accumulator
    shuffle: str = "pytorch"        # pytorch: in channel c*r*r + i*r + j | channels_last: (i*r + j)*C + c
    prelu: str = "signed_product"   # signed_product | magnitude (round |p| then sign) | sign_ignored | identity
    block_branch: bool = True       # blocks.<i>.add adds its branch
    branch_relu: str = "graph"      # Eq. 7's ReLU as the graph says | never | always
    add_multipliers: str = "two"    # two (M for input, BRANCH_M for branch) | one (M for both)
    add_rounding: str = "joint"     # joint: one rounding of the sum | separate: each product rounded, then added
    requant: str = "exact"          # exact integers | float64 | float32: floor(sum x * M / 2^n + 1/2) in floats
    multiplier_bits: int = 31       # every M held to this many bits (rounded half up to a multiple of 2^(31-bits))


CORRECT = Rules()


@dataclass(frozen=True)
class Mutation:
    name: str
    rule: str            # the issue 15 table's row (or "extra")
    text: str
    rules: Rules
    ties_only: bool      # differs from the correct rule only at exact rounding ties


def _m(name, rule, text, ties_only=False, **change):
    return Mutation(name, rule, text, dataclasses.replace(CORRECT, **change), ties_only)


MUTATIONS = {m.name: m for m in [
    _m("tie_half_even", "tie rule", "every rounding tie rounded half to even", True, tie="half_even"),
    _m("tie_half_away", "tie rule", "every rounding tie rounded half away from zero", True, tie="half_away"),
    _m("tie_half_down", "tie rule", "every rounding tie rounded half down (towards -infinity)", True,
       tie="half_down"),
    _m("prelu_magnitude", "PReLU rounding", "PReLU's negative product rounded by magnitude, then signed",
       True, prelu="magnitude"),
    _m("residual_dropped", "residual branch", "the branch dropped from the blocks.<i>.add adds",
       block_branch=False),
    _m("branch_relu_removed", "branch ReLU", "Eq. 7's ReLU on the branch never applied", branch_relu="never"),
    _m("branch_relu_added", "branch ReLU", "Eq. 7's ReLU applied to every add's branch", branch_relu="always"),
    _m("acc_int32_wrap", "int32 accumulator", "accumulator wrapped to int32", acc_int32_wrap=True),
    _m("floor_shift", "shift", "floor shift (arithmetic >> without rounding)", shift="floor"),
    _m("trunc_shift", "shift", "truncating shift (towards zero, C's / of a negative value)", shift="trunc"),
    _m("double_rounding", "shift", "double rounding: round at 2^31 first (a high multiply), then the rest",
       shift="double"),
    _m("shift_plus_one", "shift", "right shift off by one: 32 - SHIFT", shift_offset=1),
    _m("shift_minus_one", "shift", "right shift off by one: 30 - SHIFT", shift_offset=-1),
    _m("clamp_storage_dtype", "clamp", "clamp to the storage dtype instead of [qmin, qmax]",
       saturate="storage_dtype"),
    _m("wrap_not_saturate", "clamp", "wrap to the code's M bits instead of saturating", saturate="wrap"),
    _m("edge_padding", "padding", "edge (replicate) padding instead of zero padding", padding="edge"),
    _m("flipped_kernel", "kernel", "kernel flipped (convolution instead of correlation)", kernel_flip=True),
    _m("missing_bias", "bias", "bias not added", bias=False),
    _m("shuffle_channels_last", "shuffle", "pixel shuffle reads channel (i*r + j)*C + c (TF's depth_to_space)",
       shuffle="channels_last"),
    _m("one_add_multiplier", "add", "one multiplier (the input's M) for both add operands",
       add_multipliers="one"),
    _m("add_rounded_separately", "add", "add operands rounded separately, then summed",
       add_rounding="separate"),
    _m("prelu_sign_ignored", "PReLU", "PReLU's NEG_SIGN ignored (taken as +1)", prelu="sign_ignored"),
    _m("prelu_identity", "PReLU", "PReLU as identity (negative accumulators use M, SHIFT)", prelu="identity"),
    _m("requant_float64", "precision", "requantization in float64: floor(acc * M / 2^n + 1/2), the product "
       "rounded to 53 bits", requant="float64"),
    _m("requant_float32", "precision", "requantization in float32: floor(acc * M / 2^n + 1/2)", requant="float32"),
    _m("multiplier_24_bits", "precision", "every multiplier held to 24 bits (rounded to a multiple of 2^7)",
       multiplier_bits=24),
    _m("multiplier_16_bits", "precision", "every multiplier held to 16 bits (rounded to a multiple of 2^15)",
       multiplier_bits=16),
]}


# ---------------------------------------------------------------------------
# Integer arithmetic (int64 throughout)
# ---------------------------------------------------------------------------

def wide(v) -> bool:
    """An object array of Python ints: products past 64 bits (SPEC 6.4's PRODUCT_BITS)."""
    return isinstance(v, np.ndarray) and v.dtype == object


def as_values(v):
    """int64, or the object array of Python ints that `product` returns for wide products."""
    return v if wide(v) else np.asarray(v, I64)


def divide_pow2(v, n: int, tie: str = "half_up") -> np.ndarray:
    """v / 2^n rounded to the nearest integer, ties by `tie`; n >= 0, v int64 (or Python ints)."""
    v = as_values(v)
    c = int if wide(v) else I64
    if n <= 0:
        return v << c(-n)
    half = c(1) << c(n - 1)
    n64 = c(n)
    if tie == "half_up":                       # floor(v / 2^n + 1/2)
        return (v + half) >> n64
    if tie == "half_down":                     # ceil(v / 2^n - 1/2)
        return (v + half - 1) >> n64
    if tie == "half_away":
        mag = (np.abs(v) + half) >> n64
        return np.where(v < 0, -mag, mag)
    if tie == "half_even":
        q = v >> n64
        r = v - (q << n64)                     # 0 <= r < 2^n
        return q + ((r > half) | ((r == half) & ((q & 1) == 1))).astype(I64 if c is I64 else object)
    raise ValueError(f"unknown tie rule {tie!r}")


CENSUS = None    # a list: shift_round appends (operations, exact ties, negative ties) of every call


def shift_round(v, n: int, rules: Rules = CORRECT) -> np.ndarray:
    """The port's rounding right shift of v by n = 31 - SHIFT (SPEC 6.2, 6.4)."""
    v = as_values(v)
    c = int if wide(v) else I64
    n = n + rules.shift_offset
    if CENSUS is not None and n > 0:
        tie = (v & ((c(1) << c(n)) - 1)) == (c(1) << c(n - 1))
        CENSUS.append((v.size, int(tie.sum()), int((tie & (v < 0)).sum())))
    if rules.shift == "floor":
        return v >> c(n) if n > 0 else v << c(-n)
    if rules.shift == "trunc":
        mag = np.abs(v) >> c(n) if n > 0 else np.abs(v) << c(-n)
        return np.where(v < 0, -mag, mag)
    if rules.shift == "double" and n > 31:
        return divide_pow2(divide_pow2(v, 31, rules.tie), n - 31, rules.tie)
    if rules.shift not in ("round", "double"):
        raise ValueError(f"unknown shift rule {rules.shift!r}")
    return divide_pow2(v, n, rules.tie)


def product(x, m: int) -> np.ndarray:
    """x * m: int64 where it fits with any rounding term (< 2^62), else Python ints (SPEC 6.4:
    a product may need up to PRODUCT_BITS > 64 bits; this port computes it exactly)."""
    x = np.asarray(x, I64)
    if x.size and int(np.abs(x).max()) * abs(int(m)) >= (1 << 62):
        return x.astype(object) * int(m)
    return x * I64(m)


def held(m: int, rules: Rules = CORRECT) -> int:
    """The multiplier as the port holds it: all 31 bits, or rounded to rules.multiplier_bits."""
    drop = 31 - rules.multiplier_bits
    return int(m) if drop <= 0 else ((int(m) + (1 << (drop - 1))) >> drop) << drop


def requantize(terms, n: int, rules: Rules = CORRECT) -> np.ndarray:
    """rrs(sum of x * M, n) over the (x, M) pairs (SPEC 6.4: one product, or an add's two, one
    rounding): exact in integers, or as a port computing in floating point would."""
    terms = [(np.asarray(x, I64), held(m, rules)) for x, m in terms]
    if rules.requant == "exact":
        total = product(*terms[0])
        for x, m in terms[1:]:
            total = total + product(x, m)
        return shift_round(total, n, rules)
    dt = {"float64": np.float64, "float32": np.float32}[rules.requant]
    value = sum(x.astype(dt) * dt(m) for x, m in terms)
    return np.floor(value / dt(2.0 ** (n + rules.shift_offset)) + dt(0.5)).astype(I64)


def saturate(y, qmin: int, qmax: int, dtype: np.dtype, rules: Rules = CORRECT) -> np.ndarray:
    """The clamp of an op's output (SPEC 6.4) to [qmin, qmax]."""
    y = np.asarray(np.clip(y, -(1 << 62), 1 << 62) if wide(y) else y, I64)
    if rules.saturate == "code_range":
        return np.clip(y, qmin, qmax)
    if rules.saturate == "storage_dtype":
        info = np.iinfo(dtype)
        return np.clip(y, info.min, info.max)
    if rules.saturate == "wrap":               # an M-bit register that overflows
        signed = qmin < 0
        bits = int(qmax).bit_length() + (1 if signed else 0)
        mod = I64(1) << I64(bits)
        low = -(mod >> 1) if signed else I64(0)
        return (y - low) % mod + low
    raise ValueError(f"unknown saturation rule {rules.saturate!r}")


def wrap_int32(acc) -> np.ndarray:
    acc = np.asarray(acc, I64)
    return ((acc - INT32_MIN) & I64(0xFFFFFFFF)) + INT32_MIN


def padded(x, pad: int, rules: Rules = CORRECT) -> np.ndarray:
    widths = ((0, 0), (0, 0), (pad, pad), (pad, pad))
    if rules.padding == "zero":
        return np.pad(x, widths, mode="constant", constant_values=0)
    if rules.padding == "edge":
        return np.pad(x, widths, mode="edge")
    raise ValueError(f"unknown padding rule {rules.padding!r}")


def conv_acc(x, w, b, rules: Rules = CORRECT) -> np.ndarray:
    """acc[n,o,y,x] = b[o] + sum_{c,ky,kx} w[o,c,ky,kx] * x[n,c,y+ky-P,x+kx-P], stride 1, P = K // 2."""
    x, w, b = np.asarray(x, I64), np.asarray(w, I64), np.asarray(b, I64)
    n, c, h, wd = x.shape
    o, c_w, k, k2 = w.shape
    if c_w != c or k != k2 or k % 2 != 1:
        raise ValueError(f"conv: input {x.shape} and weights {w.shape} do not match")
    if rules.kernel_flip:
        w = w[:, :, ::-1, ::-1]
    xp = padded(x, k // 2, rules)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))   # (n, c, h, w, k, k)
    cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * k * k, h * wd)     # rows ordered (c, ky, kx)
    acc = (w.reshape(o, c * k * k) @ cols).reshape(n, o, h, wd)
    if rules.bias:
        acc = acc + b.reshape(1, o, 1, 1)
    if rules.acc_int32_wrap:
        acc = wrap_int32(acc)
    return acc


def conv_output(acc, op: dict, qmin: int, qmax: int, dtype, rules: Rules = CORRECT) -> np.ndarray:
    """Requantize a conv's accumulators, with PReLU's second multiplier for acc < 0."""
    acc = np.asarray(acc, I64)
    m, n = op["multiplier"], 31 - op["shift"]
    m_neg, n_neg, sign = op["neg_multiplier"], 31 - op["neg_shift"], op["neg_sign"]
    pos = acc >= 0
    a_pos, a_neg = acc[pos], acc[~pos]
    y = np.empty_like(acc)
    y[pos] = requantize([(a_pos, m)], n, rules)
    if rules.prelu == "signed_product":
        y[~pos] = requantize([(sign * a_neg, m_neg)], n_neg, rules)
    elif rules.prelu == "magnitude":
        p = product(sign * a_neg, m_neg)
        mag = shift_round(np.abs(p), n_neg, rules)
        y[~pos] = np.where(p < 0, -mag, mag)
    elif rules.prelu == "sign_ignored":
        y[~pos] = shift_round(product(a_neg, m_neg), n_neg, rules)
    elif rules.prelu == "identity":
        y[~pos] = shift_round(product(a_neg, m), n, rules)
    else:
        raise ValueError(f"unknown PReLU rule {rules.prelu!r}")
    return saturate(y, qmin, qmax, dtype, rules)


def requant_output(x, op: dict, qmin: int, qmax: int, dtype, rules: Rules = CORRECT) -> np.ndarray:
    return saturate(requantize([(x, op["multiplier"])], 31 - op["shift"], rules), qmin, qmax, dtype, rules)


def add_output(a, b, op: dict, qmin: int, qmax: int, dtype, rules: Rules = CORRECT) -> np.ndarray:
    """Eq. 7: clamp(rrs(a * M + b' * BRANCH_M, 31 - SHIFT)), b' = max(b, 0) with the branch ReLU."""
    a, b = np.asarray(a, I64), np.asarray(b, I64)
    relu = {"graph": bool(op["branch_relu"]), "never": False, "always": True}[rules.branch_relu]
    if relu:
        b = np.maximum(b, 0)
    if not rules.block_branch and op["name"].startswith("blocks."):
        b = np.zeros_like(b)
    m_a = op["multiplier"]
    m_b = op["branch_multiplier"] if rules.add_multipliers == "two" else op["multiplier"]
    n = 31 - op["shift"]
    if rules.add_rounding == "joint":
        y = requantize([(a, m_a), (b, m_b)], n, rules)
    elif rules.add_rounding == "separate":
        y = shift_round(product(a, m_a), n, rules) + shift_round(product(b, m_b), n, rules)
    else:
        raise ValueError(f"unknown add rounding rule {rules.add_rounding!r}")
    return saturate(y, qmin, qmax, dtype, rules)


def shuffle_output(x, r: int, rules: Rules = CORRECT) -> np.ndarray:
    """Pixel shuffle: out[n, c, h*r + i, w*r + j] = in[n, c*r*r + i*r + j, h, w]."""
    x = np.asarray(x)
    n, crr, h, w = x.shape
    if crr % (r * r):
        raise ValueError(f"shuffle: {crr} channels are not a multiple of {r}^2")
    c = crr // (r * r)
    if rules.shuffle == "pytorch":
        y = x.reshape(n, c, r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    elif rules.shuffle == "channels_last":
        y = x.reshape(n, r, r, c, h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        raise ValueError(f"unknown shuffle rule {rules.shuffle!r}")
    return y.reshape(n, c, h * r, w * r)


def plane_pop(row, col, row_bits: int, col_bits: int) -> np.ndarray:
    """P[m, p] = number of k with bit m of row[k] and bit p of col[k] set (two's complement patterns)."""
    row = np.asarray(row, I64) & I64((1 << row_bits) - 1)
    col = np.asarray(col, I64) & I64((1 << col_bits) - 1)
    rb = (row[None, :] >> np.arange(row_bits, dtype=I64)[:, None]) & 1      # (row_bits, F)
    cb = (col[None, :] >> np.arange(col_bits, dtype=I64)[:, None]) & 1      # (col_bits, F)
    return rb @ cb.T


def plane_acc(pop, bias: int, row_bits: int, row_signed: bool, col_bits: int, col_signed: bool) -> int:
    """Rebuild an accumulator from plane-pair counts (vectors/README, bit-plane partials)."""
    def weights(bits, signed):
        return [-(1 << m) if signed and m == bits - 1 else 1 << m for m in range(bits)]
    a, b = weights(row_bits, row_signed), weights(col_bits, col_signed)
    pop = np.asarray(pop)
    return int(bias) + sum(a[m] * b[p] * int(pop[m, p]) for m in range(row_bits) for p in range(col_bits))


# ---------------------------------------------------------------------------
# Reading a vector directory (manifest.json, cross-checked against model.txt)
# ---------------------------------------------------------------------------

class VectorSet:
    """The integer model and stimuli of one golden directory."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.manifest = json.loads((self.path / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: no readable manifest.json ({exc})") from None
        self.tensors = self.manifest["tensors"]
        self.ops = self.manifest["ops"]
        self.stimuli = sorted(self.manifest["stimuli"])
        self.files = self.manifest["files"]
        self._check_model_txt()
        self.weights = {}
        for op in self.ops:
            if op["kind"] == "conv":
                w = self.read_array(f"weights/{op['weight']}.bin", self.tensors[op["weight"]])
                b = self.read_array(f"weights/{op['bias']}.bin", self.tensors[op["bias"]])
                k = op["kernel"]
                if w.shape != (op["cout"], op["cin"], k, k) or b.shape != (op["cout"],) or op["stride"] != 1 \
                        or op["pad"] != k // 2:
                    raise ValueError(f"{self.path}: conv {op['name']}: weights {w.shape}, bias {b.shape}, "
                                     f"stride {op['stride']}, pad {op['pad']} do not fit the op")
                self.weights[op["name"]] = (w, b)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def file_dtype(self, rel: str) -> np.dtype:
        return np.dtype(self.files[rel]["dtype"])

    def read_array(self, rel: str, info: dict | None = None) -> np.ndarray:
        """A .bin file as int64, with the dtype and shape the manifest gives."""
        entry = self.files.get(rel)
        if entry is None:
            raise ValueError(f"{self.path}: the manifest lists no {rel}")
        dtype, shape = np.dtype(entry["dtype"]).newbyteorder("<"), tuple(entry["shape"])
        if info is not None and "shape" in info and tuple(info["shape"]) != shape:
            raise ValueError(f"{self.path}: {rel} has shape {shape}, the tensor {tuple(info['shape'])}")
        data = (self.path / rel).read_bytes()
        if len(data) != dtype.itemsize * int(np.prod(shape, dtype=I64)):
            raise ValueError(f"{self.path}: {rel} is {len(data)} bytes, expected {dtype.name} {shape}")
        return np.frombuffer(data, dtype).reshape(shape).astype(I64)

    def image_in(self, stim: str) -> np.ndarray:
        return self.read_array(f"{stim}/image.in.bin")

    def code_range(self, tensor: str) -> tuple:
        t = self.tensors[tensor]
        return int(t["qmin"]), int(t["qmax"]), np.dtype(t["dtype"])

    def _check_model_txt(self) -> None:
        """model.txt must describe the graph the manifest does (vectors/README, model.txt)."""
        path = self.path / "model.txt"
        if not path.exists():
            return
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if not lines or lines[0] not in (["fqsr_model", "1"], ["fqsr_model", "2"]) or lines[-1] != ["end"]:
            raise ValueError(f"{path}: not 'fqsr_model 1|2' ... 'end'")
        want_ops = []
        for op in self.ops:
            k = op["kind"]
            if k == "conv":
                want_ops.append([k, op["name"], op["input"], op["output"], op["cout"], op["cin"], op["kernel"],
                                 self.tensors[op["weight"]]["dtype"], self.tensors[op["bias"]]["dtype"],
                                 op["acc_dtype"], op["multiplier"], op["shift"], op["neg_multiplier"],
                                 op["neg_shift"], op["neg_sign"]])
            elif k == "requant":
                want_ops.append([k, op["name"], op["input"], op["output"], op["multiplier"], op["shift"]])
            elif k == "add":
                want_ops.append([k, op["name"], op["input"], op["branch"], op["output"], int(op["branch_relu"]),
                                 op["multiplier"], op["branch_multiplier"], op["shift"]])
            elif k == "shuffle":
                want_ops.append([k, op["name"], op["input"], op["output"], op["factor"]])
            else:
                raise ValueError(f"{self.path}: op {op['name']} of unknown kind {k!r}")
        # the documented fields must agree; fields a later format appends are not judged here
        got_ops = [ln for ln in lines if ln[0] in ("conv", "requant", "add", "shuffle")]
        if len(got_ops) != len(want_ops) or any(g[:len(w)] != [str(f) for f in w]
                                                for g, w in zip(got_ops, want_ops)):
            raise ValueError(f"{path}: its op lines and manifest.json's ops disagree")
        for ln in lines:
            if ln[0] == "tensor":
                t = self.tensors.get(ln[1], {})
                if ln[2:5] != [str(t.get("dtype")), str(t.get("qmin")), str(t.get("qmax"))]:
                    raise ValueError(f"{path}: tensor {ln[1]} disagrees with manifest.json")
            elif ln[0] == "stimulus":
                shape = self.manifest["stimuli"].get(ln[1], {}).get("shapes", {}).get("image.in")
                if shape is None or [str(s) for s in shape] != ln[2:6]:
                    raise ValueError(f"{path}: stimulus {ln[1]} disagrees with manifest.json")


# ---------------------------------------------------------------------------
# The port
# ---------------------------------------------------------------------------

def run_stimulus(vs: VectorSet, stim: str, rules: Rules = CORRECT) -> dict:
    """Every tensor the port writes for one stimulus: {tensor name: int64 array}."""
    t = {"image.in": vs.image_in(stim)}
    out = {"image.in": t["image.in"]}
    bitplane = vs.manifest["stimuli"][stim].get("bitplane", {})
    for op in vs.ops:
        kind, x = op["kind"], t[op["input"]]
        if kind == "shuffle":
            y = shuffle_output(x, op["factor"], rules)
        else:
            qmin, qmax, dtype = vs.code_range(op["output"])
            if [qmin, qmax] != list(op["clamp"]):
                raise ValueError(f"{vs.path}: op {op['name']} clamps to {op['clamp']}, its output "
                                 f"tensor's range is [{qmin}, {qmax}]")
            if kind == "conv":
                w, b = vs.weights[op["name"]]
                acc = conv_acc(x, w, b, rules)
                out[op["accumulator"]] = acc
                y = conv_output(acc, op, qmin, qmax, dtype, rules)
                if op["name"] in bitplane:
                    out.update(planes(vs, op, x, w, bitplane[op["name"]], rules))
            elif kind == "requant":
                y = requant_output(x, op, qmin, qmax, dtype, rules)
            elif kind == "add":
                y = add_output(x, t[op["branch"]], op, qmin, qmax, dtype, rules)
            else:
                raise ValueError(f"{vs.path}: op {op['name']} of unknown kind {kind!r}")
        t[op["output"]] = out[op["output"]] = y
    return out


def planes(vs: VectorSet, op: dict, x, w, entry: dict, rules: Rules) -> dict:
    """The bit-plane files of one conv: the im2col row of one output element, the weight
    column, the plane-pair counts (vectors/README, bit-plane partials)."""
    n, o, y, xx = entry["element"]
    k = op["kernel"]
    if rules.kernel_flip:
        w = w[:, :, ::-1, ::-1]
    xp = padded(np.asarray(x, I64), k // 2, rules)
    row = xp[n, :, y:y + k, xx:xx + k].reshape(-1)
    col = np.asarray(w, I64)[o].reshape(-1)
    t_in, t_w = vs.tensors[op["input"]], vs.tensors[op["weight"]]
    pop = plane_pop(row, col, int(t_in["bits"]), int(t_w["bits"]))
    name = op["name"]
    return {f"{name}.plane.row": row, f"{name}.plane.col": col, f"{name}.plane.pop": pop}


def run_port(vs: VectorSet, rules: Rules = CORRECT) -> dict:
    return {stim: run_stimulus(vs, stim, rules) for stim in vs.stimuli}


def rounding_census(vs: VectorSet) -> tuple:
    """(rounding operations, exact ties, ties of negative values) of the correct port on every stimulus."""
    global CENSUS
    CENSUS = []
    try:
        run_port(vs)
        return tuple(int(sum(c[i] for c in CENSUS)) for i in range(3))
    finally:
        CENSUS = None


def write_npy(path: Path, arr: np.ndarray, dtype: np.dtype) -> None:
    arr = np.asarray(arr, I64)
    info = np.iinfo(dtype)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise OverflowError(f"{path.name}: values [{arr.min()}, {arr.max()}] do not fit {dtype.name}")
    np.save(path, np.ascontiguousarray(arr.astype(dtype.newbyteorder("<"))), allow_pickle=False)


def write_port(vs: VectorSet, outputs: dict, port_dir) -> Path:
    """PORT/S/<tensor>.npy in the golden dtype of every tensor the golden set lists for S."""
    port = Path(port_dir)
    for stim, tensors in outputs.items():
        (port / stim).mkdir(parents=True, exist_ok=True)
        for name, arr in tensors.items():
            golden = next((f"{stim}/{name}.{fmt}" for fmt in ("bin", "npy", "hex")
                           if f"{stim}/{name}.{fmt}" in vs.files), None)
            if golden is None:
                continue                              # a tensor the golden set does not store
            write_npy(port / stim / f"{name}.npy", arr, vs.file_dtype(golden))
    return port


# ---------------------------------------------------------------------------
# Verifying, and the mutant table
# ---------------------------------------------------------------------------

def verify_port(golden, port) -> tuple:
    """(exit code, the verifier's report) of fqsr_ref.verify on a port directory."""
    from fqsr_ref import verify as V
    out = io.StringIO()
    try:
        code = V.verify(golden, port, out=out)
    except (OSError, ValueError) as exc:
        return V.EXIT_UNUSABLE, out.getvalue() + f"error: {exc}\n"
    return code, out.getvalue()


def first_failing_layer(vs: VectorSet, report: str) -> str:
    """The failing layer earliest in execution order, its file and in how many stimuli it fails."""
    order = {op["name"]: i for i, op in enumerate(vs.ops)}
    fails = {}
    for line in report.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "FAIL":
            fails.setdefault(parts[2], []).append((parts[1], parts[3].rstrip(":")))
    if not fails:
        return "?"
    layer = min(fails, key=lambda name: order.get(name, len(order)))
    stims = fails[layer]
    return f"{layer} ({stims[0][1]}; {len(stims)}/{len(vs.stimuli)} stimuli)"


def differs(a: dict, b: dict) -> bool:
    return any(not np.array_equal(a[s][k], b[s].get(k)) for s in a for k in a[s])


@dataclass
class Outcome:
    mutant: str
    set_name: str
    caught: bool
    changed: bool        # some tensor differs from the correct port's
    detail: str          # first failing layer, or why it was not caught


def check_mutant(vs: VectorSet, name: str, correct: dict, tmp_root) -> Outcome:
    mutation = MUTATIONS[name]
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix=f"{name}.") as tmp:
        try:
            outputs = run_port(vs, mutation.rules)
            port = write_port(vs, outputs, Path(tmp) / "port")
        except (OverflowError, ValueError) as exc:    # a port that stops is noticed without the verifier
            return Outcome(name, vs.name, True, True, f"the mutated port stops: {exc}")
        code, report = verify_port(vs.path, port)
    changed = differs(correct, outputs)
    if code == 1:
        return Outcome(name, vs.name, True, changed, first_failing_layer(vs, report))
    if code != 0:
        raise RuntimeError(f"the verifier could not check mutant {name} on {vs.path}:\n{report}")
    why = ("outputs differ, yet the verifier PASSED them (a hole in the verifier)" if changed
           else "every tensor identical to the correct port's: the rule is never exercised")
    return Outcome(name, vs.name, False, changed, why)


def _job(args):
    path, names, tmp_root = args
    vs = VectorSet(path)
    correct = run_port(vs)
    return [check_mutant(vs, name, correct, tmp_root) for name in names]


def check_unmutated(vs: VectorSet, tmp_root) -> tuple:
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="unmutated.") as tmp:
        port = write_port(vs, run_port(vs), Path(tmp) / "port")
        return verify_port(vs.path, port)


def run_harness(paths, names, jobs: int = 1, tmp_root=None) -> list:
    """Outcomes of every mutant in names on every set (the unmutated port must pass first)."""
    jobs = max(1, min(jobs, len(names) * len(paths)))
    chunks = [(str(p), names[i::jobs], tmp_root) for p in paths for i in range(jobs) if names[i::jobs]]
    if jobs == 1:
        results = [_job(c) for c in chunks]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(_job, chunks))
    by_key = {(o.mutant, o.set_name): o for r in results for o in r}
    return [by_key[(n, Path(p).resolve().name)] for n in names for p in paths]


def print_table(outcomes: list, names: list, set_names: list, out=sys.stdout) -> tuple:
    w_m = max(len("mutant"), *(len(n) for n in names))
    w_s = max(len("set"), *(len(s) for s in set_names))
    print(f"{'mutant':{w_m}s} | {'set':{w_s}s} | {'result':10s} | first failing layer (file; stimuli) "
          f"or why not caught", file=out)
    print(f"{'-' * w_m}-|-{'-' * w_s}-|-{'-' * 10}-|-{'-' * 40}", file=out)
    for o in outcomes:
        print(f"{o.mutant:{w_m}s} | {o.set_name:{w_s}s} | {'caught' if o.caught else 'NOT CAUGHT':10s} | "
              f"{o.detail}", file=out)
    every = [n for n in names if all(o.caught for o in outcomes if o.mutant == n)]
    some = [n for n in names if any(o.caught for o in outcomes if o.mutant == n)]
    print(f"{len(every)} of {len(names)} mutants caught by every set ({', '.join(set_names)}); "
          f"{len(some)} of {len(names)} by at least one set", file=out)
    survivors = [n for n in names if n not in some]
    if survivors:
        print(f"caught by no set: {', '.join(survivors)}", file=out)
    return every, some


def shown(path) -> str:
    """path relative to the working directory where it lies below it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def committed_sets() -> list:
    """Every vector directory under vectors/ (one holding a manifest.json), sorted."""
    return sorted(str(m.parent) for m in (REPO / "vectors").glob("*/manifest.json"))


def build_parser():
    p = argparse.ArgumentParser(prog="tools/mutants.py", description=__doc__.split("\n\n")[0])
    p.add_argument("sets", nargs="*", help="golden vector directories (default: every set under vectors/)")
    p.add_argument("--mutants", default="all", help="comma list of mutant names, or all (default)")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--require-all", action="store_true",
                   help="exit 1 if some mutant is caught by no set (default: exit 0, the table is the result)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (default: min(2, CPUs))")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for m in MUTATIONS.values():
            print(f"{m.name:24s} {m.rule:18s} {m.text}{'  [differs only at ties]' if m.ties_only else ''}")
        return 0
    names = list(MUTATIONS) if args.mutants == "all" else [n.strip() for n in args.mutants.split(",") if n.strip()]
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown or not names:
        print(f"error: unknown mutants {unknown}; known: {', '.join(MUTATIONS)}", file=sys.stderr)
        return 2
    paths = args.sets or committed_sets()
    if not paths:
        print(f"error: no vector directory given and none under {REPO / 'vectors'}", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        sets = [VectorSet(p) for p in paths]
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len({vs.name for vs in sets}) != len(sets):
        print("error: two sets share a directory name", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fqsr_mutants.") as tmp_root:
        for vs in sets:
            code, report = check_unmutated(vs, tmp_root)
            if code != 0:
                print(report, end="")
                print(f"error: the unmutated port does not pass {vs.path} (verifier exit {code}); "
                      "mutants are measured against a port that passes", file=sys.stderr)
                return 1 if code == 1 else 2
            passed = next((ln for ln in report.splitlines() if "layers PASS" in ln), "all layers PASS")
            ops, ties, neg = rounding_census(vs)
            print(f"unmutated port: {shown(vs.path)}: {passed}; {ops} rounding operations, "
                  f"{ties} exact ties ({neg} of negative values)")
        outcomes = run_harness(paths, names, args.jobs, tmp_root)
    print("\nmutants (each one rule changed):")
    for n in names:
        m = MUTATIONS[n]
        print(f"  {n:24s} {m.text}{'  [differs from the rule only at exact ties]' if m.ties_only else ''}")
    print()
    every, some = print_table(outcomes, names, [vs.name for vs in sets])
    print(f"({len(names)} mutants x {len(sets)} sets in {time.monotonic() - start:.1f} s)")
    if args.require_all and len(some) < len(names):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
