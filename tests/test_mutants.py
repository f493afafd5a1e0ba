"""tools/mutants.py: an independent Python port of the integer graph with one switch
per arithmetic rule. The correct port must pass every committed set; every mutation
must change its rule on a constructed input (no mutation is a no-op); every mutant
must be caught by the committed sets (the corner sets catch what the trained ones
cannot); and the verifier must catch every mutant whose tensors differ from the
correct port's."""
import ast
import dataclasses
import hashlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fqsr_ref.verify import EXIT_PASS, verify

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "mutants.py"
SETS = [REPO / "vectors" / "srresnet_x2_4-4-8", REPO / "vectors" / "srresnet_x2_8-8-8"]


def load_tool():
    spec = importlib.util.spec_from_file_location("fqsr_mutants", TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod           # dataclasses and worker processes look the module up
    spec.loader.exec_module(mod)
    return mod


M = load_tool()
ALL_SETS = [Path(p) for p in M.committed_sets()]   # the corner sets too
CORRECT = M.CORRECT
Q8 = (-127, 127, np.dtype(np.int8))        # an 8-bit narrow output
Q4 = (-7, 7, np.dtype(np.int8))            # a 4-bit narrow output, stored int8
HALF = 1 << 30                             # with SHIFT 0 (n = 31): the multiplier 1/2


def requant(x, rules, m=HALF, shift=0, q=Q8):
    return M.requant_output(np.array(x), {"multiplier": m, "shift": shift}, *q, rules)


def conv_out(acc, rules, m=HALF, shift=0, m_neg=HALF, shift_neg=0, sign=1, q=Q8):
    op = {"multiplier": m, "shift": shift, "neg_multiplier": m_neg, "neg_shift": shift_neg, "neg_sign": sign}
    return M.conv_output(np.array(acc), op, *q, rules)


def add(a, b, rules, name="blocks.0.add", relu=False, m=HALF, m_b=HALF, shift=1):
    op = {"name": name, "branch_relu": relu, "multiplier": m, "branch_multiplier": m_b, "shift": shift}
    return M.add_output(np.array(a), np.array(b), op, *Q8, rules)


def acc(x, w, b, rules):
    return M.conv_acc(np.array(x), np.array(w), np.array(b), rules)


# A near tie (fqsr_ref/corner.py NEAR_TIES, 4 bits): a * M = 3 * 2^58 - 3, n = 59, so
# rrs = 1; the product past 2^53 rounds onto the tie in float64, and M rounded to 24 or 16
# bits grows, so each of the precision mutants gives 2.
NEAR_A, NEAR_M, NEAR_SHIFT = 536870913, 1610612733, 31 - 59
X3 = np.arange(1, 10).reshape(1, 1, 3, 3)                        # an asymmetric 3x3 image
W3 = np.array([[[[1, 2, 0], [0, 0, 0], [0, 0, -1]]]])              # an asymmetric 3x3 kernel

# For every mutation: a constructed input on which its rule gives another result than
# the documented one (the result is computed with the rules passed in).
WITNESS = {
    # x / 2 at the ties +-3/2, +-5/2: half up gives [2, -1, 3, -2]
    "tie_half_even": lambda r: requant([3, -3, 5, -5], r),
    "tie_half_away": lambda r: requant([3, -3, 5, -5], r),
    "tie_half_down": lambda r: requant([3, -3, 5, -5], r),
    # PReLU slope 1/2 on acc -3: the product -3/2 rounds half up to -1, by magnitude to -2
    "prelu_magnitude": lambda r: conv_out([-3], r),
    "residual_dropped": lambda r: add([10], [6], r),
    "branch_relu_removed": lambda r: add([10], [-6], r, relu=True),
    "branch_relu_added": lambda r: add([10], [-6], r, relu=False),
    # 1 x 1 conv: 1 * 1 + (2^31 - 1) = 2^31, which wraps to -2^31 in int32
    "acc_int32_wrap": lambda r: acc([[[[1]]]], [[[[1]]]], [2**31 - 1], r),
    "floor_shift": lambda r: requant([7], r, m=1 << 29),             # 7/4: 2 rounded, 1 floored
    "trunc_shift": lambda r: requant([-7], r, m=1 << 29),            # -7/4: -2 rounded, -1 truncated
    # n = 32: (2^30 + 1) / 2^32 = 0.25+ rounds to 0; rounded at 2^31 first it is 1, then 1/2 -> 1
    "double_rounding": lambda r: requant([1], r, m=HALF + 1, shift=-1),
    "shift_plus_one": lambda r: requant([100], r),
    "shift_minus_one": lambda r: requant([100], r),
    "clamp_storage_dtype": lambda r: requant([100], r, q=Q4),        # 50: 7 saturated, 50 in int8
    "wrap_not_saturate": lambda r: requant([100], r, q=Q4),          # 50: 7 saturated, 2 wrapped in 4 bits
    "edge_padding": lambda r: acc(X3, np.ones((1, 1, 3, 3), int), [0], r),
    "flipped_kernel": lambda r: acc(X3, W3, [0], r),
    "missing_bias": lambda r: acc(X3, W3, [5], r),
    "shuffle_channels_last": lambda r: M.shuffle_output(np.arange(8).reshape(1, 8, 1, 1), 2, r),
    "one_add_multiplier": lambda r: add([10], [6], r, m_b=HALF // 2),
    # 1/2 + 1/2 = 1 rounded once; rounded separately 1 + 1 = 2
    "add_rounded_separately": lambda r: add([1], [1], r, m=1 << 29, m_b=1 << 29),
    "prelu_sign_ignored": lambda r: conv_out([-4], r, sign=-1),
    "prelu_identity": lambda r: conv_out([-16], r, shift_neg=-2),
    "requant_float64": lambda r: requant([NEAR_A], r, m=NEAR_M, shift=NEAR_SHIFT),
    "requant_float32": lambda r: requant([NEAR_A], r, m=NEAR_M, shift=NEAR_SHIFT),
    "multiplier_24_bits": lambda r: requant([NEAR_A], r, m=NEAR_M, shift=NEAR_SHIFT),
    "multiplier_16_bits": lambda r: requant([NEAR_A], r, m=NEAR_M, shift=NEAR_SHIFT),
}

# What the trained sets cannot catch: they have no exact rounding tie, no add with
# Eq. 7's branch ReLU, no accumulator beyond int32, no product close enough to a tie for
# float requantization or a 24-bit multiplier to matter. The corner sets catch these.
TRAINED_SETS_MISS = {"tie_half_even", "tie_half_away", "tie_half_down", "prelu_magnitude",
                     "branch_relu_removed", "acc_int32_wrap", "requant_float64", "requant_float32",
                     "multiplier_24_bits"}


def test_every_mutation_has_a_witness_and_changes_exactly_one_rule():
    assert set(WITNESS) == set(M.MUTATIONS)
    for name, m in M.MUTATIONS.items():
        changed = [f.name for f in dataclasses.fields(M.Rules)
                   if getattr(m.rules, f.name) != getattr(CORRECT, f.name)]
        assert len(changed) == 1, (name, changed)
    switched = {f.name for f in dataclasses.fields(M.Rules)
                if any(getattr(m.rules, f.name) != getattr(CORRECT, f.name) for m in M.MUTATIONS.values())}
    assert switched == {f.name for f in dataclasses.fields(M.Rules)}, "a rule switch without a mutant"


@pytest.mark.parametrize("name", list(M.MUTATIONS))
def test_mutation_changes_its_rule(name):
    right = WITNESS[name](CORRECT)
    wrong = WITNESS[name](M.MUTATIONS[name].rules)
    assert right.shape == wrong.shape
    assert not np.array_equal(right, wrong), f"{name} gives the documented result on its witness: a no-op"


def test_documented_rules_on_the_witnesses():
    """The correct port's results on a few witnesses, worked out by hand from SPEC 6."""
    assert requant([3, -3, 5, -5], CORRECT).tolist() == [2, -1, 3, -2]         # ties towards +infinity
    assert conv_out([-3], CORRECT).tolist() == [-1]                           # -3/2 half up
    assert conv_out([-4], CORRECT, sign=-1).tolist() == [2]                   # negative slope
    assert requant([1], CORRECT, m=HALF + 1, shift=-1).tolist() == [0]        # single rounding
    assert add([1], [1], CORRECT, m=1 << 29, m_b=1 << 29).tolist() == [1]
    assert requant([100], CORRECT, q=Q4).tolist() == [7]
    assert acc([[[[1]]]], [[[[1]]]], [2**31 - 1], CORRECT).tolist() == [[[[2**31]]]]
    x = np.arange(8).reshape(1, 8, 1, 1)
    assert M.shuffle_output(x, 2, CORRECT)[0].tolist() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    assert acc(X3, W3, [0], CORRECT)[0, 0, 1, 1] == 1 * 1 + 2 * 2 - 9     # correlation, centre pixel
    assert NEAR_A * NEAR_M == 3 * 2 ** 58 - 3
    assert requant([NEAR_A], CORRECT, m=NEAR_M, shift=NEAR_SHIFT).tolist() == [1]    # 3/2 - 3/2^59


@pytest.mark.parametrize("name", sorted(n for n, m in M.MUTATIONS.items() if m.ties_only))
def test_tie_mutants_differ_only_at_ties(name):
    """The tie mutants change one rule, the tie rule: equal away from ties, different at some."""
    rules = M.MUTATIONS[name].rules
    acc_ = np.arange(-4096, 4097)
    for shift in (0, -1, -3):                    # n = 31, 32, 34 with the multiplier 2^30
        if name == "prelu_magnitude":           # the negative side's product, slope 1/2^(1 - shift)
            right, wrong = conv_out(acc_, CORRECT, shift_neg=shift), conv_out(acc_, rules, shift_neg=shift)
        else:
            right, wrong = requant(acc_, CORRECT, shift=shift), requant(acc_, rules, shift=shift)
        n = 31 - shift
        tie = (acc_ * HALF) % (1 << n) == 1 << (n - 1)
        assert np.array_equal(right[~tie], wrong[~tie])
        assert (right[tie] != wrong[tie]).any()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """Every mutant on every committed set, as the CLI runs them."""
    tmp = tmp_path_factory.mktemp("mutants")
    names = list(M.MUTATIONS)
    return {(o.mutant, o.set_name): o for o in M.run_harness([str(p) for p in ALL_SETS], names, 2, str(tmp))}


@pytest.mark.parametrize("golden", [Path(p) for p in M.committed_sets()], ids=lambda p: p.name)
def test_unmutated_port_passes_the_committed_set(golden, tmp_path):
    vs = M.VectorSet(golden)
    outputs = M.run_port(vs)
    port = M.write_port(vs, outputs, tmp_path / "port")
    out = io.StringIO()
    assert verify(golden, port, out=out) == EXIT_PASS, out.getvalue()
    text = out.getvalue()
    assert "FAIL  " not in text and "missing" not in text
    # every file the golden set lists for a stimulus was written (outputs, acc, planes, image.in)
    for stim in vs.stimuli:
        listed = {rel.split("/", 1)[1].rsplit(".", 1)[0] for rel in vs.files if rel.startswith(stim + "/")
                  and rel.rsplit(".", 1)[-1] in ("npy", "bin", "hex")}      # not the hardware kit's files
        written = {p.name[:-len(".npy")] for p in (port / stim).iterdir()}
        assert written == listed, stim
    # the bit-plane counts rebuild the accumulator (vectors/README, bit-plane partials)
    for stim in vs.stimuli:
        for conv, e in vs.manifest["stimuli"][stim]["bitplane"].items():
            pop = outputs[stim][f"{conv}.plane.pop"]
            rebuilt = M.plane_acc(pop, e["bias"], e["row_bits"], e["row_signed"], e["col_bits"], e["col_signed"])
            op = next(o for o in vs.ops if o["name"] == conv)
            assert rebuilt == e["acc"] == outputs[stim][op["accumulator"]][tuple(e["element"])]


@pytest.mark.parametrize("name", sorted(M.MUTATIONS))
def test_mutant_is_caught_by_the_committed_sets(harness, name):
    """Issue 15's target: a port with any one rule changed fails the committed vectors."""
    outcomes = [harness[(name, p.name)] for p in ALL_SETS]
    assert any(o.caught for o in outcomes), [o.detail for o in outcomes]


@pytest.mark.parametrize("name", sorted(set(M.MUTATIONS) - TRAINED_SETS_MISS))
def test_mutant_is_caught_by_the_trained_sets(harness, name):
    outcomes = [harness[(name, p.name)] for p in SETS]
    assert any(o.caught for o in outcomes), [o.detail for o in outcomes]


def test_verifier_catches_every_mutant_whose_tensors_differ(harness):
    """No NOT CAUGHT row is a hole in the verifier: a mutant survives only where its
    tensors equal the correct port's (the vectors never exercise its rule)."""
    for (name, set_name), o in harness.items():
        assert o.caught == o.changed, (name, set_name, o.detail)


def test_committed_sets_include_the_two_srresnet_sets():
    assert {str(p) for p in SETS} <= set(M.committed_sets())


def test_port_is_independent_of_the_reference_engines():
    """The port imports nothing of fqsr_ref but the verifier."""
    tree = ast.parse(TOOL.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{a.name}" if node.module == "fqsr_ref" else node.module
                         for a in node.names}
    assert {m for m in imported if m.startswith("fqsr_ref")} == {"fqsr_ref.verify"}


def run_cli(*args):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120)


def table(stdout):
    """{(mutant, set): result} of the CLI's table."""
    rows = [[f.strip() for f in ln.split(" | ")] for ln in stdout.splitlines() if ln.count(" | ") == 3]
    return {(r[0], r[1]): r[2] for r in rows[1:] if not r[0].startswith("-")}


def test_cli_table_and_exit_codes():
    sets = [str(p) for p in SETS]
    names = ("flipped_kernel", "tie_half_even")
    r = run_cli(*sets, "--mutants", ",".join(names), "--require-all", "--jobs", "1")
    assert sum("layers PASS, 0 FAIL" in ln for ln in r.stdout.splitlines()) == 2, r.stdout + r.stderr
    rows = table(r.stdout)
    assert set(rows) == {(m, p.name) for m in names for p in SETS}
    assert all(rows[("flipped_kernel", p.name)] == "caught" for p in SETS)
    every = sum(all(rows[(m, p.name)] == "caught" for p in SETS) for m in names)
    some = sum(any(rows[(m, p.name)] == "caught" for p in SETS) for m in names)
    assert f"{every} of 2 mutants caught by every set" in r.stdout
    assert f"{some} of 2 by at least one set" in r.stdout
    # --require-all: exit 1 exactly when some mutant is caught by no set
    assert r.returncode == (0 if some == 2 else 1), r.stderr
    r = run_cli(sets[0], "--mutants", "flipped_kernel", "--require-all")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 of 1 mutants caught by every set" in r.stdout
    assert run_cli(*sets, "--mutants", "no_such_mutant").returncode == 2


def test_cli_stops_when_the_unmutated_port_fails(tmp_path):
    """A golden set the correct port does not reproduce (a bias changed, its sha256
    updated): exit 1 with the verifier's report, no mutant table."""
    golden = tmp_path / "golden"
    shutil.copytree(SETS[0], golden)
    rel = "weights/head.b.bin"
    path = golden / rel
    bias = np.frombuffer(path.read_bytes(), "<i4").copy()
    bias[0] += 1000
    path.write_bytes(bias.tobytes())
    manifest = json.loads((golden / "manifest.json").read_text())
    manifest["files"][rel]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (golden / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=1))
    r = run_cli(str(golden), "--mutants", "flipped_kernel", "--jobs", "1")
    assert r.returncode == 1
    assert "FAIL" in r.stdout and "head" in r.stdout and "unmutated port does not pass" in r.stderr
    assert " | " not in r.stdout
