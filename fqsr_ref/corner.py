"""Constructed models whose integer arithmetic hits every rule of SPEC 6.

Trained models never produce an exact rounding tie: their multipliers are 31-bit
approximations of arbitrary ratios, so acc * M lands on a half only by accident (0
ties in ~435k roundings of the first committed sets). A corner model is built, not
trained, so that every ratio is a power of two:

- every scale s = I / n is k 2^e with k in {1, 3, 9, 27}, exact in binary (the
  image's is 1 on 0..255 pixels);
- every conv maps its accumulator scale to its output scale by 1/2 (3/4 where 1/2
  would need a weight scale with a factor 1/3), so y = acc / 2 rounds half up at
  every odd accumulator, of both signs;
- PReLU slopes are 1/4, -1/2 (NEG_SIGN -1) and 1/2: the negative side rounds
  |a| acc / 2 on ties too;
- every requantization of a skip to fm bits halves it; every add computes
  3 a / 2 + 3 b / 4, which ties, saturates at both ends, and changes if the
  operands are rounded separately or share one multiplier; the blocks have Eq. 7's
  ReLU on the branch;
- weight codes are mostly -1, 0 and 1 (so many outputs stay inside the code range
  and round there), with two output channels per conv at the extreme codes +n and
  -n (so the clamps saturate at both ends).

At 16/16/16 the same construction needs int64 accumulators. The float parameters are chosen so that the
quantizers reproduce the constructed codes exactly; `fqsr_ref.vectors --corner`
converts them with the ordinary integer conversion.

Exact ties need multipliers with a small odd part (a tie's output is at least half
the odd part of M), so they cannot catch a port that loses M's low bits or rounds
the product in floating point. One site can take a full 31-bit multiplier without
losing any tie: the negative side of `blocks.0.conv1`, whose slope is negative
(NEG_SIGN -1), so its products are >= 0 and its positive ties come from the other
side. There NEAR_TIES puts an odd 31-bit multiplier M- and a shift n chosen with two
accumulators of the `zeros` stimulus (set through the biases of output channels 2
and 3): acc * M- lands 1..1023 below a tie, past 2^53, where float64 rounds it onto the
tie, and a little above another, so that a port computing round(acc * M / 2^n) in
float64 or float32, or holding M to 24 or 16 bits (rounded or truncated), gets at
least one of the two wrong (`precision_variants`).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from .models import init_model, preset
from .models.layers import out_format, reads_requantized
from .models.srnet import bits_of, input_formats, layer_specs
from .quant import QuantSpec
from .quant.quantizer import levels

CHANNELS, BLOCKS = 8, 2
RATIOS = (Fraction(1, 2), Fraction(3, 4))
PRELU = {"head": 0.25, "blocks.0.conv1": -0.5, "blocks.1.conv1": 0.5, "up.0": 0.25}
SEED = 20261128

# The near ties of blocks.0.conv1's negative side (module text): per output bits, the shift n
# (31 - NEG_SHIFT), the odd 31-bit multiplier M- and the accumulator magnitude a1 with
# a1 M- = (2 k + 1) 2^(n-1) - d, 1 <= d < 2^10, found by `near_tie_search(n, k_max)`.
NEAR_SITE, NEAR_CHANNELS = "blocks.0.conv1", (2, 3)
NEAR_TIES = {4: (59, 1610612733, 536870913), 16: (47, 1083818845, 537138308)}


def dyadic(x: Fraction) -> bool:
    """x = k / 2^e: exact in binary floating point."""
    return x.denominator & (x.denominator - 1) == 0


def corner_model(bits: str = "4/4/8", seed: int = SEED):
    """(cfg, params, state) of the constructed SRResNet x2 (8 channels, 2 blocks)."""
    cfg = preset("srresnet", 2, bits, blocks=BLOCKS, channels=CHANNELS, branch_relu=True)
    params, state = init_model(cfg, np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    bits_d, L = bits_of(cfg), layer_specs(cfg)
    scale = {"image.in": Fraction(1)}   # tensor (site) -> scale, exact
    acc_scales = {}                      # conv -> (accumulator scale, its ratio to the output's)

    def activation(site, fmt, s: Fraction):
        assert dyadic(s), (site, s)
        params[site + ".interval"] = np.array(levels(QuantSpec(fmt.bits, fmt.signed))[0] * float(s))
        scale[site] = s

    def conv(spec, x_site, x_fmt, s_y: Fraction):
        """Codes, bias and intervals of one conv reading x_site, writing at scale s_y."""
        n = spec.name
        s_x = scale[x_site]
        if reads_requantized(spec, x_fmt, bits_d):
            in_fmt = x_fmt._replace(bits=bits_d[spec.in_bits], site=n + ".in")
            activation(n + ".in", in_fmt, 2 * s_x)      # the requantization halves the codes
            s_x = scale[n + ".in"]
        # acc scale -> output scale by 1/2, or by 3/4 where 1/2 would need a weight
        # scale with a factor 1/3 (not exact in binary).
        ratio = next(r for r in RATIOS if dyadic(r * s_y / s_x))
        s_w = ratio * s_y / s_x
        n_w = levels(QuantSpec(cfg.wt, True))[0]
        params[n + ".w.interval"] = np.array(n_w * float(s_w))
        codes = weight_codes(rng, (spec.cout, spec.cin, spec.k, spec.k), n_w)
        params[n + ".w"] = codes * float(s_w)
        bias = rng.integers(-3, 4, spec.cout)
        if spec.out_bits is None:
            bias[0] = 4 * 255    # the tail's channel 0 saturates the image high, too
        bias = bias * float(s_x * s_w)
        if spec.bn:
            params[n + ".gamma"] = np.ones(spec.cout)
            params[n + ".beta"] = bias
            state[n + ".bn_mean"] = np.zeros(spec.cout)
            state[n + ".bn_var"] = np.full(spec.cout, 1.0 - cfg.bn_eps)
        else:
            params[n + ".b"] = bias
        if spec.act == "prelu":
            params[n + ".prelu"] = np.full(1, PRELU[n])
        acc_scales[n] = (s_x * s_w, ratio)
        y_fmt = out_format(spec, bits_d)
        if spec.out_bits is not None:
            activation(n + ".out", y_fmt, s_y)
        return n + ".out", y_fmt

    def add(site, s_a: Fraction):
        """y = 3/2 a + 3/4 b: ties, saturates, and rounds the sum, not the operands."""
        s_y = s_a * Fraction(2, 3)
        activation(site + ".out", skip_fmt._replace(site=site + ".out"), s_y)
        return site + ".out", s_y * Fraction(3, 4)   # (output, the branch's scale)

    # Three adds each divide the skip scale by 3/2: the head's scale carries 3^3.
    s_head = Fraction(27, 2 ** 7)
    skip, skip_fmt = conv(L.head, "image.in", dict(input_formats(cfg))[L.head], s_head)
    for i, (conv1, conv2) in enumerate(L.blocks):
        s_a = scale[skip]
        t, t_fmt = conv(conv1, skip, skip_fmt, s_a)
        out, s_branch = add(f"blocks.{i}.add", s_a)
        conv(conv2, t, t_fmt, s_branch)
        skip = out
    long_out, s_branch = add("long_add", s_head)
    conv(L.trunk, skip, skip_fmt, s_branch)
    u, fmt = long_out, skip_fmt
    for spec in L.up:
        u, fmt = conv(spec, u, fmt, Fraction(3, 2 ** 4))
    conv(L.tail, u, fmt, Fraction(1))                  # image.out: s = 1 on 0..255 pixels
    for key in [k for k in state if k.endswith(".daia_count")]:
        state[key] = np.asarray(10 ** 6, dtype=state[key].dtype)   # warm-up long over
    set_near_ties(cfg, params, state, bits_d["fm"], *acc_scales[NEAR_SITE])
    return cfg, params, state


def near_tie_search(n: int, k_max: int, lo: int = 2 ** 29, hi: int = 2 ** 30, chunk: int = 1 << 22):
    """(M, a) with M odd in [2^30, 2^31), a in [lo, hi] and a M = (2 k + 1) 2^(n-1) - d for some
    k < k_max, 1 <= d < 2^10, where float64 gets the rounding wrong and M rounded to 24 and to
    16 bits grows (so the product crosses the tie): the first in order of k, then a. NEAR_TIES
    holds what it returns for (59, 4) and (47, 2^14) (1 s and 5 s)."""
    for k in range(k_max):
        t = (2 * k + 1) << (n - 1)
        a_lo, a_hi = max(lo, t // 2 ** 31 + 1), min(hi, t // 2 ** 30)
        for start in range(a_lo, a_hi, chunk):
            a = np.arange(start, min(start + chunk, a_hi), dtype=np.int64)
            d = t % a
            m = (t - d) // a
            ok = (d >= 1) & (d < 1024) & (m & 1 == 1) & (m >= 2 ** 30) & (m < 2 ** 31) & \
                (m % 2 ** 7 >= 2 ** 6) & (m % 2 ** 15 >= 2 ** 14)
            for i in np.nonzero(ok)[0]:
                if precision_variants(int(a[i]), int(m[i]), n)["float64"] != k:
                    return int(m[i]), int(a[i])
    return None


def precision_variants(a: int, m: int, n: int) -> dict:
    """rrs(a m, n) (SPEC 6.4) and what ports of lower precision compute instead: the product
    in float64 or float32 (floor(a * M / 2^n + 1/2)), M held to 24 or 16 bits (rounded half
    up, or truncated)."""
    out = {"exact": (a * m + (1 << (n - 1))) >> n}
    for name, dtype in (("float64", np.float64), ("float32", np.float32)):
        p = dtype(a) * dtype(m) / dtype(2.0 ** n) + dtype(0.5)
        out[name] = int(np.floor(p))
    for bits in (24, 16):
        drop = 31 - bits
        for name, held in (("round", ((m + (1 << (drop - 1))) >> drop) << drop), ("trunc", m >> drop << drop)):
            out[f"m{bits}_{name}"] = (a * held + (1 << (n - 1))) >> n
    return out


def near_tie_accumulators(bits: int) -> tuple:
    """(n, M-, [a1, a2]): a1 just below a tie (NEAR_TIES), a2 just above another, the first
    from 2^29 + 2^28 on for which the two together catch every variant of precision_variants."""
    n, m, a1 = NEAR_TIES[bits]
    first = precision_variants(a1, m, n)
    caught = {k for k, v in first.items() if v != first["exact"]}
    half = 1 << (n - 1)
    j = ((2 ** 29 + 2 ** 28) * m) >> n
    while True:       # a2 m - j 2^n - 2^(n-1) in [1, M]: just above the tie of j + 1/2
        a2 = -(-(j * (1 << n) + half + 1) // m)
        second = precision_variants(a2, m, n)
        if caught | {k for k, v in second.items() if v != second["exact"]} == set(first) - {"exact"}:
            return n, m, [a1, a2]
        j += 1


def set_near_ties(cfg, params, state, bits: int, s_acc: Fraction, ratio: Fraction) -> None:
    """Give NEAR_SITE's negative side the multiplier of NEAR_TIES (its slope times `ratio`,
    the accumulator scale s_acc over the output scale, is M- 2^-n) and its channels
    NEAR_CHANNELS the biases that put their accumulators at -a1 and -a2
    (near_tie_accumulators) in the interior of the `zeros` stimulus, where the image, and so
    every tensor up to NEAR_SITE, is the same at every pixel of any size."""
    from .integer.model import convert
    from .integer.run import run_ops
    n, m, accs = near_tie_accumulators(bits)
    bias = params[NEAR_SITE + (".beta" if NEAR_SITE + ".beta" in params else ".b")]
    bias[list(NEAR_CHANNELS)] = 0.0
    record = {}
    run_ops(convert(cfg, params, state), np.zeros((1, 3, 3, 3), np.uint8), "plain", record)
    for o, a in zip(NEAR_CHANNELS, accs):
        bias[o] = float((-a - int(record[NEAR_SITE + ".acc"][0, o, 1, 1])) * s_acc)
    params[NEAR_SITE + ".prelu"] = np.full(1, -float(Fraction(m, 2 ** n) / ratio))


def weight_codes(rng, shape, n):
    """Mostly -1, 0, 1, so that many outputs stay inside the code range and round
    there; output channel 0 has four taps at +n and channel 1 four at -n, so that the
    clamps saturate at both ends. At 16 bits those channels reach accumulators of
    2^31 to 2^33: beyond int32, within the int64 product acc * M of SPEC 6.4."""
    codes = rng.choice([-1, 0, 0, 1], size=shape)
    for channel, code in ((0, n), (1, -n)):
        taps = np.zeros(codes[channel].size, codes.dtype)
        taps[rng.choice(taps.size, 4, replace=False)] = code
        codes[channel] = taps.reshape(codes[channel].shape)
    return codes


# ------------------------------------------------------------ can a site tie at all?

def _v2(m: int) -> int:
    """2-adic valuation of m != 0 (trailing zero bits)."""
    return (m & -m).bit_length() - 1


def _product_can_tie(m: int, shift: int, bound: int) -> bool:
    """Is there an integer x, 0 < |x| <= bound, whose x * m / 2^n is an odd multiple of
    1/2 (n = 31 - shift, SPEC 6.4)? Exactly when x * m has 2-adic valuation n - 1, i.e.
    x is an odd multiple of 2^(n - 1 - v2(m)): the smallest such |x| must fit."""
    n = 31 - shift
    if n <= 0 or m == 0:
        return False
    e = n - 1 - _v2(m)
    return e >= 0 and 2 ** e <= bound


def _add_can_tie(m_a: int, m_b: int, shift: int, a_range, b_range) -> bool:
    """Is there an operand pair (a, b) in the ranges with a m_a + b m_b an odd multiple of
    2^(n-1)? For each a: b m_b = t (mod 2^n), t = 2^(n-1) - a m_a, has solutions iff
    2^v2(m_b) divides t; they form one residue class of b modulo 2^(n - v2(m_b))."""
    n = 31 - shift
    if n <= 0:
        return False
    vb = _v2(m_b) if m_b else n
    modulus = 1 << max(n - vb, 0)
    inverse = pow(m_b >> vb, -1, modulus) if modulus > 1 else 0
    b_lo, b_hi = b_range
    for a in range(a_range[0], a_range[1] + 1):
        t = ((1 << (n - 1)) - a * m_a) % (1 << n)
        if t % (1 << vb):
            continue
        b0 = ((t >> vb) * inverse) % modulus if modulus > 1 else 0
        first = b_lo + (b0 - b_lo) % modulus        # the class's first member >= b_lo
        if first <= b_hi:
            return True
    return False


def reachable_ties(model) -> dict:
    """Per rounding site of an integer model (fqsr_ref.integer.IntModel): can any input
    make it round an exact tie? Conv sites ("<conv>" for acc >= 0, "<conv> (acc < 0)")
    take any accumulator within acc_bound (a superset of what inputs reach, so False is
    a proof); requant sites any input code; adds every pair of operand codes (the
    branch >= 0 behind Eq. 7's ReLU). A trained model's multipliers approximate
    arbitrary ratios to 31 bits, and its sites cannot tie at all: no constructed input
    of its own ops exercises the tie rule. That is why the corner models construct
    their multipliers too."""
    tensors, out = model.tensors, {}
    for op in model.ops:
        if op.kind == "conv":
            out[op.name] = _product_can_tie(op.multiplier, op.shift, op.acc_bound)
            out[op.name + " (acc < 0)"] = _product_can_tie(op.neg_multiplier, op.neg_shift,
                                                           op.acc_bound)
        elif op.kind == "requant":
            t = tensors[op.input]
            out[op.name] = _product_can_tie(op.multiplier, op.shift, max(-t.qmin, t.qmax))
        elif op.kind == "add":
            a, b = tensors[op.input], tensors[op.branch]
            b_range = (max(b.qmin, 0) if op.branch_relu else b.qmin, b.qmax)
            out[op.name] = _add_can_tie(op.multiplier, op.branch_multiplier, op.shift,
                                        (a.qmin, a.qmax), b_range)
    return out
