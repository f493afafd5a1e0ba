"""The constructed corner sets: every rounding site ties in both directions, every
clamp saturates at both ends, PReLU's negative side and the branches (and their
ReLU) change results, and the 16-bit set needs int64 accumulators. Counted from the
committed manifests, which record what each op's vectors exercise."""
import numpy as np
import pytest

from fqsr_ref import vectors as V
from fqsr_ref.corner import (NEAR_CHANNELS, NEAR_SITE, NEAR_TIES, _add_can_tie, _product_can_tie, corner_model,
                             near_tie_accumulators, near_tie_search, precision_variants, reachable_ties)
from test_integer_model import code_differences, photo_crop

CORNER = [V.corner_dir(bits) for bits in V.CORNER_BITS]


def totals(manifest):
    """op -> what its vectors exercise, summed over the stimuli."""
    out = {}
    for entry in manifest["stimuli"].values():
        for op, counts in entry["coverage"].items():
            t = out.setdefault(op, {})
            sat = entry["saturation"][op]
            for key, value in {**counts, "saturated_low": sat["low"],
                               "saturated_high": sat["high"]}.items():
                t[key] = t.get(key, 0) + value
    return out


@pytest.mark.parametrize("vec_dir", CORNER, ids=[d.name for d in CORNER])
def test_every_rule_is_exercised(vec_dir):
    m = V.read_manifest(vec_dir)
    ops = {op["name"]: op for op in m["ops"]}
    for name, t in totals(m).items():
        op = ops[name]
        # A negative PReLU slope makes every output >= 0 (NEG_SIGN -1): its products,
        # and so its ties and saturations, are all on the positive side.
        one_sided = op["kind"] == "conv" and op["neg_sign"] == -1
        need = ["ties_positive", "saturated_high"] + ([] if one_sided else
                                                     ["ties_negative", "saturated_low"])
        if op["kind"] == "conv":
            need.append("negative_acc")
        if op["kind"] == "add":
            need += ["branch_nonzero", "branch_negative"]
        assert all(t[k] > 0 for k in need), (vec_dir.name, name, t)
    assert any(op["kind"] == "conv" and op["neg_sign"] == -1 for op in m["ops"])
    assert all(op["branch_relu"] for op in m["ops"] if op["kind"] == "add" and op["name"] != "long_add")


def test_wide_set_needs_int64_accumulators():
    vec_dir = V.corner_dir("16/16/16")
    m = V.read_manifest(vec_dir)
    wide = [op["name"] for op in m["ops"] if op["kind"] == "conv" and op["acc_dtype"] == "int64"]
    assert len(wide) >= 5
    beyond = [name for name in wide
              if np.abs(V.find_array(vec_dir, m, f"natural/{name}.acc")).max() >= 2 ** 31]
    assert beyond, "no accumulator of the 16-bit set leaves int32: a wrapping port would pass"


@pytest.mark.parametrize("bits", V.CORNER_BITS)
def test_corner_float_model_agrees_with_integer_model_at_ties(bits):
    """The float64 fake-quantized model rounds the same exact ties as the integer model. Not
    NEAR_SITE's near ties, built so that float64 gets them wrong: at 4/4/8 every code of its
    channels NEAR_CHANNELS lies within 2^-16 of a tie, and 5 of the crop's flip by 1 (and
    cascade to 15 downstream codes, by 1)."""
    cfg, params, state = corner_model(bits)
    report = [r for r in code_differences(cfg, params, state, photo_crop(16)) if r[1]]
    if bits == "4/4/8":
        assert report[0][0] == NEAR_SITE + ".out" and all(worst == 1 for _, _, _, worst in report), report
        assert sum(differ for _, differ, _, _ in report) <= 25, report
    else:
        assert report == []


@pytest.mark.parametrize("vec_dir", V.committed_dirs(), ids=lambda d: d.name)
def test_only_constructed_multipliers_can_tie(vec_dir):
    """The trained sets' rounding sites cannot tie for any input (so no standalone op
    case with their own multipliers could exercise the tie rule); every site of the
    corner sets can but one, the negative side of NEAR_SITE (its 31-bit multiplier makes near
    ties instead), and the coverage test above shows that their vectors do."""
    sites = reachable_ties(V.read_model(vec_dir).model)
    assert len(sites) >= 17
    if vec_dir.name.startswith("corner"):
        assert [k for k, v in sites.items() if not v] == [NEAR_SITE + " (acc < 0)"]
    else:
        assert not any(sites.values()), [k for k, v in sites.items() if v]


@pytest.mark.parametrize("m_a,m_b,shift,a_range,b_range", [
    (3 << 29, 3 << 28, 1, (-7, 7), (0, 7)),         # the corner adds
    (1_894_405_992, 1_234_567_891, 3, (-7, 7), (-7, 7)),
    (6, 10, 29, (-3, 3), (-3, 3)),                  # n = 2: ties at odd multiples of 2
    (4, 8, 29, (-3, 3), (-3, 3)),                   # every product divisible by 4: never
    (12, 0, 28, (-3, 3), (0, 0)),                   # branch multiplier 0
])
def test_add_tie_search_against_brute_force(m_a, m_b, shift, a_range, b_range):
    n = 31 - shift
    brute = any((a * m_a + b * m_b) % (1 << n) == 1 << (n - 1)
                for a in range(a_range[0], a_range[1] + 1)
                for b in range(b_range[0], b_range[1] + 1))
    assert _add_can_tie(m_a, m_b, shift, a_range, b_range) == brute


@pytest.mark.parametrize("m,shift,bound", [(1 << 30, 30, 1), (1 << 30, 0, 1), (3 << 29, 30, 5), (1_894_405_992, -4, 1000),
                                           (1_894_405_992, 27, 100), (5, 29, 1), (5, 29, 2)])
def test_conv_tie_search_against_brute_force(m, shift, bound):
    n = 31 - shift
    brute = any((x * m) % (1 << n) == 1 << (n - 1) for x in range(-bound, bound + 1) if x)
    assert _product_can_tie(m, shift, bound) == brute


@pytest.mark.parametrize("bits", [4, 16])
def test_near_ties_catch_every_precision_variant(bits):
    """Two accumulators of NEAR_SITE, one just below a tie (past 2^53), one just above
    another: together they tell the exact rounding from float64, float32 and a multiplier
    held to 24 or 16 bits, rounded or truncated."""
    n, m, accs = near_tie_accumulators(bits)
    assert m & 1 and 2 ** 30 <= m < 2 ** 31
    below, above = ((a * m) % (1 << n) - (1 << (n - 1)) for a in accs)
    assert -1024 < below < 0 < above <= m and accs[0] * m >= 2 ** 53
    results = [precision_variants(a, m, n) for a in accs]
    for variant in results[0]:
        if variant != "exact":
            assert any(r[variant] != r["exact"] for r in results), variant


@pytest.mark.parametrize("vec_dir", [V.corner_dir(b) for b in V.CORNER_BITS], ids=lambda d: d.name)
def test_corner_sets_hold_the_near_ties(vec_dir):
    """The committed zeros stimulus reaches both accumulators at NEAR_SITE, on its negative side."""
    m = V.read_manifest(vec_dir)
    op = next(op for op in m["ops"] if op["name"] == NEAR_SITE)
    bits = m["model"]["config"]["fm"]
    n, mult, accs = near_tie_accumulators(bits)
    assert (op["neg_multiplier"], 31 - op["neg_shift"], op["neg_sign"]) == (mult, n, -1)
    acc = V.find_array(vec_dir, m, f"zeros/{NEAR_SITE}.acc")
    for o, a in zip(NEAR_CHANNELS, accs):
        assert acc[0, o, 4, 4] == -a


def test_near_tie_search_finds_the_4_bit_constants():
    n, m, a = NEAR_TIES[4]
    assert near_tie_search(n, 4) == (m, a)
