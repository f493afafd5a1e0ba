"""The constructed corner sets: every rounding site ties in both directions, every
clamp saturates at both ends, PReLU's negative side and the branches (and their
ReLU) change results, and the 16-bit set needs int64 accumulators. Counted from the
committed manifests, which record what each op's vectors exercise."""
import numpy as np
import pytest

from fqsr_ref import vectors as V
from fqsr_ref.corner import corner_model
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
    """The float64 fake-quantized model rounds the same exact ties as the integer model."""
    cfg, params, state = corner_model(bits)
    for site, differ, total, worst in code_differences(cfg, params, state, photo_crop(16)):
        assert differ == 0, (site, differ, total, worst)
