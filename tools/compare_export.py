"""How far the QDQ and QONNX exports are from the integer model (issue 22, items 3-4).

    python tools/compare_export.py [--crop N] [--sets DIR ...]

For every committed vector set and every bundled photograph (fqsr_ref/data/photos,
240 x 240, whole unless --crop), runs

  qdq          the QDQ graph in onnxruntime, default optimisations (ORT_ENABLE_ALL: its
               QDQ fusion may run a DQ -> Conv -> Q group as an int8 QLinearConv)
  qdq-basic    the same graph at ORT_ENABLE_BASIC (no QDQ fusion: the float ops as written)
  qonnx        the QONNX graph in qonnx's own executor (qonnx.core.onnx_exec)

and compares image.out with the integer model (fqsr_ref.integer.run): % of output codes
equal, % within 1 code, the largest difference.

Where differences come from: every op of each form is also run on its own, fed the
integer model's input codes for that op, so each difference it shows arises in that op
(not upstream). Each such element is classed by the integer model's exact pre-rounding
value t = numerator / 2^n (SPEC 6.4, 6.8):
  tie      t is exactly k + 1/2: the form's rounding rule decides (QuantizeLinear half to
           even, QONNX HALF_UP half away from zero; ours half towards +infinity)
  float32  off by one and not a tie: the float32 scales / float32 sums moved t across a
           half; 'dist' is the largest |frac(t) - 1/2| among them (in codes)
  >1 code  larger than rounding can explain (an int8 kernel's saturation, float32 sums
           that are not exact for wide codes)
onnxruntime runs with intra_op_num_threads=1. A script, not a test: it prints a table.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fqsr_ref.data.images import read_image  # noqa: E402
from fqsr_ref.export.common import DEFAULT_OPSET, INT16_QDQ_OPSET  # noqa: E402
from fqsr_ref.export.qdq_graph import qdq_graph, qdq_op_model  # noqa: E402
from fqsr_ref.export.qonnx_graph import execute_qonnx, qonnx_graph, qonnx_op_model  # noqa: E402
from fqsr_ref.integer.model import AddOp, ConvOp, RequantOp  # noqa: E402
from fqsr_ref.integer.run import run_ops  # noqa: E402
from fqsr_ref.vectors.sources import committed_dirs, read_model  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1] / "fqsr_ref" / "data" / "photos"
FORMS = ("qdq", "qdq-basic", "qonnx")


def opset_for(vm) -> int:
    """The default opset, or 21 where codes need int16 QuantizeLinear."""
    wide = any(max(-t.qmin, t.qmax) > 255 for t in vm.model.tensors.values())
    wide |= any(op.w_bits > 8 for op in vm.model.ops if isinstance(op, ConvOp))
    return INT16_QDQ_OPSET if wide else DEFAULT_OPSET


def ort_runner(model, level_name: str):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level_name)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(None, feeds)))


def runners(model):
    """form -> callable(feeds) -> {output: array}"""
    return {"qdq": ort_runner(model["qdq"], "ORT_ENABLE_ALL"),
            "qdq-basic": ort_runner(model["qdq"], "ORT_ENABLE_BASIC"),
            "qonnx": lambda feeds: execute_qonnx(model["qonnx"], feeds)}


def rounding_numerator(op, ref, rec, idx):
    """(numerator, n) of the integer model's exact value numerator / 2^n at the
    positions idx (a tuple of index arrays) of op's output, as Python ints."""
    if isinstance(op, ConvOp):
        acc = rec[op.name + ".acc"][idx].astype(object)
        pos = acc >= 0
        num = np.where(pos, acc * op.multiplier, op.neg_sign * acc * op.neg_multiplier)
        n = np.where(pos, 31 - op.shift, 31 - op.neg_shift)
        return num, n
    if isinstance(op, RequantOp):
        x = ref[op.input][idx].astype(object)
        return x * op.multiplier, np.full(x.shape, 31 - op.shift, dtype=object)
    if isinstance(op, AddOp):
        a = ref[op.input][idx].astype(object)
        b = ref[op.branch][idx].astype(object)
        if op.branch_relu:
            b = np.where(b > 0, b, 0)
        return a * op.multiplier + b * op.branch_multiplier, np.full(a.shape, 31 - op.shift, dtype=object)
    return None, None


def classify(op, ref, rec, got):
    """(tie, float32, big, dist) of the elements of op's output that differ from ref."""
    want = ref[op.output].astype(np.int64)
    d = np.abs(got.astype(np.int64) - want)
    big = int(np.count_nonzero(d > 1))
    idx = np.nonzero(d == 1)
    if idx[0].size == 0:
        return 0, 0, big, 0.0
    num, n = rounding_numerator(op, ref, rec, idx)
    if num is None:                      # a shuffle moves codes: any difference is a bug
        return 0, 0, big + idx[0].size, 0.0
    ties, dist = 0, 0.0
    for v, k in zip(num, n):
        k = int(k)
        if k == 0:                       # an integer already: nothing to round
            continue
        frac = int(v) % (1 << k)
        if frac == 1 << (k - 1):
            ties += 1
        else:
            dist = max(dist, abs(frac / 2.0 ** k - 0.5))
    return ties, idx[0].size - ties, big, dist


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--crop", type=int, default=0, help="use the top-left N x N of every photo (0: whole)")
    p.add_argument("--sets", nargs="*", default=None, help="vector directories (default: every committed set)")
    args = p.parse_args(argv)
    photos = sorted(PHOTOS.glob("*.png"))
    images = []
    for path in photos:
        img = read_image(path)
        if args.crop:
            img = img[:args.crop, :args.crop]
        images.append((path.name, np.ascontiguousarray(img.transpose(2, 0, 1)[None])))
    sets = [Path(s) for s in args.sets] if args.sets else committed_dirs()
    print(f"{len(images)} photographs, {images[0][1].shape[2]} x {images[0][1].shape[3]} each; "
          f"onnxruntime intra_op_num_threads=1")
    table, origins = [], []
    for d in sets:
        t0 = time.time()
        vm = read_model(d)
        opset = opset_for(vm)
        full = runners({"qdq": qdq_graph(vm, opset), "qonnx": qonnx_graph(vm, opset)})
        per_op = [(op, runners({"qdq": qdq_op_model(vm, op, opset), "qonnx": qonnx_op_model(vm, op, opset)}))
                  for op in vm.model.ops]
        stats = {f: [0, 0, 0, 0] for f in FORMS}          # equal, within 1, total, max
        arise = {f: defaultdict(lambda: [0, 0, 0, 0.0]) for f in FORMS}
        for _, x in images:
            rec = {}
            ref = run_ops(vm.model, x, record=rec)
            want = ref["image.out"].astype(np.int64)
            for form, run in full.items():
                d_out = np.abs(run({"image.in": x})["image.out"].astype(np.int64) - want)
                s = stats[form]
                s[0] += int(np.count_nonzero(d_out == 0))
                s[1] += int(np.count_nonzero(d_out <= 1))
                s[2] += d_out.size
                s[3] = max(s[3], int(d_out.max()))
            for op, run_op in per_op:
                reads = [op.input] + ([op.branch] if isinstance(op, AddOp) else [])
                codes = {name: ref[name] for name in reads}
                reals = {name + ".in": (ref[name] * np.float64(vm.model.tensors[name].scale)).astype(np.float32)
                         for name in reads}
                for form, run in run_op.items():
                    got = run(codes if form == "qonnx" else reals)[op.output]
                    tie, f32, big, dist = classify(op, ref, rec, got)
                    a = arise[form][op.name]
                    a[0] += tie
                    a[1] += f32
                    a[2] += big
                    a[3] = max(a[3], dist)
        for form in FORMS:
            eq, w1, total, mx = stats[form]
            table.append((d.name, form, opset, 100 * eq / total, 100 * w1 / total, mx))
            for name, (tie, f32, big, dist) in arise[form].items():
                if tie or f32 or big:
                    origins.append((d.name, form, name, tie, f32, big, dist))
        print(f"  {d.name}: {time.time() - t0:.1f} s", file=sys.stderr)

    print("\nimage.out against the integer model (all photographs)")
    print(f"{'set':22s} {'form':10s} {'opset':>5s} {'% equal':>9s} {'% within 1':>11s} {'max diff':>9s}")
    for name, form, opset, eq, w1, mx in table:
        print(f"{name:22s} {form:10s} {opset:5d} {eq:9.3f} {w1:11.3f} {mx:9d}")
    print("\nwhere differences arise (each op fed the integer model's own inputs; elements summed over photos)")
    print(f"{'set':22s} {'form':10s} {'op':18s} {'tie':>7s} {'float32':>8s} {'>1 code':>8s} {'dist':>9s}")
    for name, form, op, tie, f32, big, dist in origins:
        print(f"{name:22s} {form:10s} {op:18s} {tie:7d} {f32:8d} {big:8d} {dist:9.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
