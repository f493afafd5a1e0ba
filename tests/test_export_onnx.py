"""The bit-exact ONNX export (fqsr_ref/export/integer_graph.py, SPEC 6.10), run by onnxruntime.

The proof is the golden vectors: every op output and accumulator of every stimulus of
every committed set, the corner sets' ties, saturations and int64 accumulators
included. Beside it: the requantization node group against exact integer arithmetic
(hypothesis), the byte-part and channel-chunk convolution against the reference conv,
models of other architectures and scales on odd shapes and batches, the command line,
and mutants of the export that the vectors must catch.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fqsr_ref.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from fqsr_ref.export import integer_graph as IG  # noqa: E402
from fqsr_ref.export.common import DEFAULT_OPSET, nchw_value  # noqa: E402
from fqsr_ref.integer.engine_plain import int_conv2d_exact  # noqa: E402
from fqsr_ref.integer.model import ConvOp, Tensor  # noqa: E402
from fqsr_ref.integer.run import run_ops  # noqa: E402
from fqsr_ref.models import preset  # noqa: E402
from fqsr_ref.vectors.sources import calibrated_params, committed_dirs, read_model  # noqa: E402
from fqsr_ref.vectors.stimuli import read_stimuli  # noqa: E402
from fqsr_ref.vectors.store import find_array, read_manifest  # noqa: E402

SETS = {d.name: d for d in committed_dirs()}


def session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_all(sess, codes) -> dict:
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image.in": codes})))


def mismatches(vec_dir: Path, model) -> list:
    """(stimulus, tensor) pairs whose onnxruntime output is not the golden tensor."""
    m, sess, bad = read_manifest(vec_dir), session(model), []
    for stim in read_stimuli(vec_dir):
        for name, got in run_all(sess, stim.codes).items():
            want = find_array(vec_dir, m, f"{stim.name}/{name}")
            if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
                bad.append((stim.name, name))
    return bad


@pytest.mark.parametrize("name", sorted(SETS))
def test_every_committed_tensor_bit_exact(name):
    vm = read_model(SETS[name])
    model = IG.integer_graph(vm.model, all_outputs=True)
    outputs = {o.name for o in model.graph.output}
    ops = vm.model.ops
    assert outputs == {op.output for op in ops} | {op.name + ".acc" for op in ops if isinstance(op, ConvOp)}
    assert mismatches(SETS[name], model) == []


@pytest.mark.parametrize("opset", [13, 21])
def test_other_opsets(opset):
    d = SETS["corner_x2_16-16-16"]
    assert mismatches(d, IG.integer_graph(read_model(d).model, opset, all_outputs=True)) == []


# --- mutants: a wrong rule in the export must fail on the committed sets ------------------

def _truncating_div(self, p, n):
    return p if n == 0 else self.node("Div", [p, self.const(1 << n, np.int64)])


def _no_clip(self, y, qmin, qmax, out):
    return self.cast(y, IG.code_dtype(qmin, qmax), out)


def _no_prelu(g, op, acc):
    return IG._requant(g, acc, op.acc_bound, op.multiplier, op.shift)


def _tie_down(g, acc, bound, multiplier, shift):
    # round half down: subtract one before adding the half
    n = 31 - shift
    p = g.node("Mul", [acc, g.const(multiplier, np.int64)])
    return g.floor_div(g.node("Add", [p, g.const((1 << (n - 1)) - 1 if n else 0, np.int64)]), n)


MUTANTS = {
    "truncating division": (IG._Graph, "floor_div", _truncating_div),
    "no saturation": (IG._Graph, "clamp_cast", _no_clip),
    "one multiplier for PReLU": (IG, "_conv_requant", _no_prelu),
    "ties rounded down": (IG, "_requant", _tie_down),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutants_are_caught(mutant, monkeypatch):
    owner, attr, replacement = MUTANTS[mutant]
    monkeypatch.setattr(owner, attr, replacement)
    caught = [name for name in ("corner_x2_4-4-8", "corner_x2_16-16-16")
              if mismatches(SETS[name], IG.integer_graph(read_model(SETS[name]).model, all_outputs=True))]
    assert caught, f"mutant {mutant!r} passes every corner set"


# --- the requantization node group: exact for every accumulator up to its bound -----------

def requant_graph(bound: int, multiplier: int, shift: int):
    g = IG._Graph()
    y = IG._requant(g, "acc", bound, multiplier, shift)
    g.node("Identity", [y], "y")
    vi = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(g.nodes, "rq", [vi("acc", onnx.TensorProto.INT64, ["n"])],
                                   [vi("y", onnx.TensorProto.INT64, ["n"])], g.inits)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", DEFAULT_OPSET)],
                                  ir_version=10)


def exact_rq(acc: int, multiplier: int, shift: int) -> int:
    n = 31 - shift
    return (acc * multiplier + ((1 << (n - 1)) if n else 0)) >> n


@given(bound_bits=st.integers(1, 45), m=st.integers(1 << 30, (1 << 31) - 1), sign=st.sampled_from([1, -1]),
       shift=st.integers(-31, 0), data=st.data())
def test_requant_nodes_exact(bound_bits, m, sign, shift, data):
    """Both paths (one int64 product, and the 16-bit halves of M where the product could
    pass 2^63) equal round_half_up(acc * M / 2^n) in Python integers, ties and bounds included."""
    bound = (1 << bound_bits) - 1
    n = 31 - shift
    accs = data.draw(st.lists(st.integers(-bound, bound), min_size=1, max_size=20))
    accs += [bound, -bound, 0]
    if n:   # exact ties near the bound, when some acc reaches one
        accs += [a for a in (((1 << (n - 1)) * k) // (m & -m) for k in (1, -1, 3)) if abs(a) <= bound]
    sess = session(requant_graph(bound, sign * m, shift))
    got = sess.run(None, {"acc": np.array(accs, np.int64)})[0]
    assert [int(v) for v in got] == [exact_rq(a, sign * m, shift) for a in accs]


def test_requant_refuses_what_int64_cannot_hold():
    with pytest.raises(ValueError, match="cannot be requantized exactly"):
        requant_graph(1 << 50, (1 << 31) - 1, -31)


# --- the convolution: byte parts and channel chunks against the reference conv ----------

@pytest.mark.parametrize("x_bits,x_signed,w_bits,channels", [
    (8, False, 8, 3), (4, True, 4, 5), (8, True, 8, 7), (12, True, 16, 3), (16, False, 10, 2),
    (16, True, 16, 3700),   # 9 x 3700 x 255 x 255 > 2^31: channels in chunks
])
def test_conv_parts_and_chunks(x_bits, x_signed, w_bits, channels):
    rng = np.random.default_rng(x_bits * 100 + channels)
    lo, hi = (-(1 << (x_bits - 1)), (1 << (x_bits - 1))) if x_signed else (0, 1 << x_bits)
    x = rng.integers(lo, hi, (2, channels, 5, 3))
    x[0, :, 0, 0] = lo                                   # the extreme codes
    wl = 1 << (w_bits - 1)
    w = rng.integers(-wl, wl, (4, channels, 3, 3))
    w[0] = -wl
    bias = rng.integers(-1000, 1000, 4)
    want = int_conv2d_exact(x, x_bits, x_signed, w, w_bits, True, bias)
    dtype = IG.code_dtype(lo, hi - 1)
    op = ConvOp("conv", "c", "x", "y", w.astype(IG.code_dtype(-wl, wl - 1)), w_bits, bias.astype(np.int32),
                1 << 30, 0, 1 << 30, 0, 1, 0, want.dtype.name)
    g = IG._Graph()
    IG._conv(g, op, Tensor("x", x_bits, x_signed, 1.0, lo, hi - 1), want_acc=True)
    graph = onnx.helper.make_graph(g.nodes, "conv", [nchw_value("x", dtype, channels)],
                                   [nchw_value("c.acc", want.dtype, 4)], g.inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", DEFAULT_OPSET)],
                                   ir_version=10)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    got = ort.InferenceSession(model.SerializeToString(), options).run(None, {"x": x.astype(dtype)})[0]
    assert got.dtype == want.dtype and np.array_equal(got, want)
    n_conv = sum(node.op_type == "ConvInteger" for node in g.nodes)
    byte_pairs = (1 + (x_bits > 8)) * (1 + (w_bits > 8))
    assert n_conv == byte_pairs if channels < 3000 else n_conv > byte_pairs


# --- other architectures, scales and shapes, against the integer engine -----------------

@pytest.fixture(scope="module")
def other_models(tmp_path_factory):
    """Calibrated untrained models the committed sets do not cover: EDSR x3 (mean shift,
    res_scale, the authors' PReLU blocks), SRResNet x4 with Eq. 7's ReLU and the image
    requantized, EDSR x2 whose head pads with the image mean's codes."""
    rng = np.random.default_rng(0)
    batch = rng.random((2, 3, 12, 12))
    out = {}
    for name, cfg in {
        "edsr_x3_6-6-8": dataclasses.replace(preset("edsr", 3, "6/6/8", blocks=1, channels=8), res_scale=0.1,
                                             block_act="prelu"),
        "srresnet_x4_5-4-8": dataclasses.replace(preset("srresnet", 4, "5/4/8", blocks=1, channels=8),
                                                 branch_relu=True, requant_image=True),
        "edsr_x2_8-8-8_mean_pad": dataclasses.replace(preset("edsr", 2, "8/8/8", blocks=1, channels=8),
                                                      head_pad="mean"),
    }.items():
        params, state = calibrated_params(cfg, np.random.default_rng(1), batch)
        path = tmp_path_factory.mktemp(name) / "q.npz"
        save_checkpoint(str(path), Checkpoint(cfg, params, state, {}, {}))
        out[name] = path
    return out


@pytest.mark.parametrize("name", ["edsr_x3_6-6-8", "srresnet_x4_5-4-8", "edsr_x2_8-8-8_mean_pad"])
def test_checkpoint_models_on_odd_shapes(name, other_models, tmp_path):
    out = tmp_path / "m.onnx"
    r = subprocess.run([sys.executable, "-m", "fqsr_ref.export", "--checkpoint", str(other_models[name]),
                        "--all-outputs", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = read_model_of(other_models[name])
    rng = np.random.default_rng(2)
    for shape in [(1, 3, 1, 1), (2, 3, 5, 3), (1, 3, 7, 12)]:
        codes = rng.integers(0, 256, shape, dtype=np.uint8)
        codes.reshape(-1)[:3] = (0, 255, 255)
        record = {}
        want = run_ops(model, codes, record=record)
        want.update(record)
        got = run_all(sess, codes)
        assert set(got) <= set(want)
        for tensor, value in got.items():
            assert value.dtype == want[tensor].dtype and np.array_equal(value, want[tensor]), (shape, tensor)


def read_model_of(path):
    from fqsr_ref.vectors.sources import from_checkpoint
    return from_checkpoint(path).model


# --- the command line ------------------------------------------------------------------

def cli(*args):
    return subprocess.run([sys.executable, "-m", "fqsr_ref.export", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_port_run_verifies(tmp_path):
    d = SETS["srresnet_x2_4-4-8"]
    out = tmp_path / "m.onnx"
    r = cli("--vectors", d, "--all-outputs", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    r = subprocess.run([sys.executable, "-m", "fqsr_ref.export.run_port", out, d, tmp_path / "port"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "fqsr_ref.verify", d, tmp_path / "port", "--require", "acc"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:]
    assert " 0 FAIL" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--opset", "9"], "--opset 9: supported opsets"),
    (["--out", "{tmp}/m.txt"], "ending in .onnx"),
    (["--out", "{tmp}/missing/m.onnx"], "does not exist"),
    (["--out", "{tmp}/exists.onnx"], "exists; give --overwrite"),
    (["--vectors", "{tmp}/nothing"], "nothing"),
])
def test_cli_refusals(tmp_path, args, message):
    (tmp_path / "exists.onnx").write_bytes(b"keep")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    base = {"--vectors": str(SETS["srresnet_x2_8-8-8"]), "--out": str(tmp_path / "m.onnx")}
    for flag in ("--vectors", "--out"):
        if flag not in args:
            args += [flag, base[flag]]
    r = cli(*args)
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr
    assert (tmp_path / "exists.onnx").read_bytes() == b"keep"
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("bits", ["4/4/8", "8/8/8"])
def test_whole_photograph(bits):
    """A whole photograph, border included, as the integer engine computes it."""
    from fqsr_ref.data import photos_dir
    from fqsr_ref.data.images import read_image
    from fqsr_ref.integer.run import run_image
    from fqsr_ref.vectors.sources import bundled_model

    model = bundled_model(bits).model
    lr = read_image(str(Path(photos_dir()) / "coins.png"))
    sess = session(IG.integer_graph(model))
    got = sess.run(["image.out"], {"image.in": np.ascontiguousarray(lr.transpose(2, 0, 1)[None])})[0]
    assert np.array_equal(got[0].transpose(1, 2, 0), run_image(model, lr))


def test_cli_refuses_a_full_precision_checkpoint(tmp_path):
    from fqsr_ref.models import init_model
    cfg = preset("edsr", 2, "32/32/32", blocks=1, channels=4)
    save_checkpoint(str(tmp_path / "fp.npz"), Checkpoint(cfg, *init_model(cfg, np.random.default_rng(0)), {}, {}))
    r = cli("--checkpoint", tmp_path / "fp.npz", "--out", tmp_path / "m.onnx")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "fp.npz" in r.stderr and "quantize it first" in r.stderr
