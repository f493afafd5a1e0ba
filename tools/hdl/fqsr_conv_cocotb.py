"""cocotb test of tools/hdl/fqsr_conv_unit.v (with fqsr_bitplane_mac.v, fqsr_requantizer.v) against one conv of a golden vector set, reading
the arrays with NumPy (the .npy files, or the .bin ones where a stimulus has no .npy) and the
parameters from manifest.json. Needs cocotb (2.x) and Icarus Verilog.

    python tools/hdl/fqsr_conv_cocotb.py --set vectors/corner_x2_4-4-8 --stimulus natural \
        --conv blocks.0.conv2 [--build DIR] [--rounding 1]

Exit 0 when every accumulator, code and plane partial matches. As a cocotb test module it
reads the set, stimulus and conv from FQSR_COCOTB_SET, FQSR_COCOTB_STIMULUS, FQSR_COCOTB_CONV.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TOP = "fqsr_conv_unit"


def load(golden: Path, manifest: dict, stem: str) -> np.ndarray:
    """The array of file stem (relative to the set): .npy if written, else .bin (little-endian,
    dtype and shape from the manifest). Never unpickles."""
    if (golden / f"{stem}.npy").is_file():
        return np.load(golden / f"{stem}.npy", allow_pickle=False)
    record = manifest["files"][f"{stem}.bin"]
    data = np.fromfile(golden / f"{stem}.bin", dtype=np.dtype(record["dtype"]).newbyteorder("<"))
    return data.reshape(record["shape"])


def conv_setup(golden: Path, stimulus: str, conv: str):
    """(op entry, unit parameters, arrays) of one conv for one stimulus."""
    manifest = json.loads((golden / "manifest.json").read_text())
    ops = {op["name"]: op for op in manifest["ops"] if op["kind"] == "conv"}
    if conv not in ops:
        raise SystemExit(f"error: --conv {conv}: not a conv of {golden} (convs: {', '.join(ops)})")
    if stimulus not in manifest["stimuli"]:
        raise SystemExit(f"error: --stimulus {stimulus}: not a stimulus of {golden}")
    op = ops[conv]
    x_t, w_t, y_t = (manifest["tensors"][op[k]] for k in ("input", "weight", "output"))
    arrays = {
        "x": load(golden, manifest, f"{stimulus}/{op['input']}"),
        "w": load(golden, manifest, f"weights/{op['weight']}"),
        "b": load(golden, manifest, f"weights/{op['bias']}"),
        "acc": load(golden, manifest, f"{stimulus}/{op['accumulator']}"),
        "out": load(golden, manifest, f"{stimulus}/{op['output']}"),
    }
    if f"{stimulus}/{conv}.plane.pop.bin" in manifest["files"]:
        arrays["pop"] = load(golden, manifest, f"{stimulus}/{conv}.plane.pop")
    fan_in = op["cin"] * op["kernel"] ** 2
    params = {
        "CIN": op["cin"], "A_BITS": x_t["bits"], "A_SIGNED": int(x_t["signed"]),
        "B_BITS": w_t["bits"], "B_SIGNED": int(w_t["signed"]),
        "ACC_W": int(op["acc_bound"]).bit_length() + 1, "POP_W": fan_in.bit_length(),
        "OUT_BITS": y_t["bits"], "QMIN": op["clamp"][0], "QMAX": op["clamp"][1],
    }
    return op, params, arrays


def planes(codes, bits: int) -> int:
    """The unit's plane input for C codes: bit c of plane m (at bits [m C, (m+1) C)) is bit m
    of code c's two's complement pattern (SPEC 6.7)."""
    n = len(codes)
    word = 0
    for m in range(bits):
        for c, v in enumerate(codes):
            word |= ((int(v) >> m) & 1) << (m * n + c)
    return word


try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge
except ImportError:            # the runner below reports it; importing this file stays possible
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def conv_matches_golden(dut):
        """Every accumulator and output code of the conv, and the plane partials of its
        bit-plane element, from the unit driven tap by tap."""
        golden = Path(os.environ["FQSR_COCOTB_SET"])
        stimulus, conv = os.environ["FQSR_COCOTB_STIMULUS"], os.environ["FQSR_COCOTB_CONV"]
        op, p, a = conv_setup(golden, stimulus, conv)
        x, w, b, acc, out = a["x"], a["w"], a["b"], a["acc"], a["out"]
        n_img, cin, h, wd = x.shape
        k, pad, pop_w = op["kernel"], op["kernel"] // 2, p["POP_W"]
        out_mask = (1 << p["OUT_BITS"]) - 1
        Clock(dut.clk, 10, unit="ns").start()
        dut.start.value = 0
        dut.valid.value = 0
        dut.mult.value = op["multiplier"]
        dut.rshift.value = op["right_shift"]
        dut.neg_mult.value = op["neg_multiplier"]
        dut.neg_rshift.value = op["neg_right_shift"]
        dut.neg_negate.value = int(op["neg_sign"] < 0)
        # the planes of every pixel and every tap, built once
        pixels = [[[planes(x[i, :, yy, xx], p["A_BITS"]) for xx in range(wd)] for yy in range(h)]
                  for i in range(n_img)]
        taps = [[[planes(w[o, :, ky, kx], p["B_BITS"]) for kx in range(k)] for ky in range(k)]
                for o in range(op["cout"])]
        bad = []
        for i in range(n_img):
            for o in range(op["cout"]):
                for oy in range(h):
                    for ox in range(wd):
                        await FallingEdge(dut.clk)
                        dut.start.value = 1
                        dut.bias.value = int(b[o])
                        await FallingEdge(dut.clk)
                        dut.start.value = 0
                        dut.valid.value = 1
                        for ky in range(k):
                            for kx in range(k):
                                iy, ix = oy + ky - pad, ox + kx - pad
                                inside = 0 <= iy < h and 0 <= ix < wd
                                dut.a_planes.value = pixels[i][iy][ix] if inside else 0
                                dut.b_planes.value = taps[o][ky][kx]
                                await FallingEdge(dut.clk)
                        dut.valid.value = 0
                        got_acc = dut.acc.value.to_signed()
                        got_code = dut.code.value.to_unsigned()
                        if got_acc != int(acc[i, o, oy, ox]):
                            bad.append(f"accumulator [{i}, {o}, {oy}, {ox}]: expected {int(acc[i, o, oy, ox])}, "
                                       f"got {got_acc}")
                        if got_code != int(out[i, o, oy, ox]) & out_mask:
                            bad.append(f"code [{i}, {o}, {oy}, {ox}] of accumulator {got_acc}: expected "
                                       f"{int(out[i, o, oy, ox])}, got pattern {got_code:x}")
                        if "pop" in a and (i, o, oy, ox) == (0, 0, h // 2, wd // 2):
                            pops = dut.pops.value.to_unsigned()
                            for m in range(p["A_BITS"]):
                                for q in range(p["B_BITS"]):
                                    got = (pops >> ((m * p["B_BITS"] + q) * pop_w)) & ((1 << pop_w) - 1)
                                    if got != int(a["pop"][m, q]):
                                        bad.append(f"plane partial P[{m}, {q}]: expected {int(a['pop'][m, q])}, "
                                                   f"got {got}")
        outputs = acc.size
        dut._log.info("fqsr_conv_cocotb: %s %s: %d accumulators, %d codes, %d plane partials checked, "
                      "%d mismatches", stimulus, conv, outputs, outputs, a["pop"].size if "pop" in a else 0,
                      len(bad))
        assert not bad, f"{len(bad)} mismatches, first: " + "; ".join(bad[:5])


def run(golden: Path, stimulus: str, conv: str, build: Path, rounding: int = 0) -> bool:
    """Build the unit with Icarus, run the cocotb test; True if it passed."""
    from cocotb_tools.runner import get_runner
    _, params, _ = conv_setup(golden, stimulus, conv)
    runner = get_runner("icarus")
    runner.build(sources=[HERE / f for f in ("fqsr_conv_unit.v", "fqsr_bitplane_mac.v", "fqsr_requantizer.v")], hdl_toplevel=TOP, build_dir=build, always=True,
                 timescale=("1ns", "1ps"),
                 parameters={**params, "ROUNDING": rounding})
    return run_test(runner, build / "results.xml", hdl_toplevel=TOP, test_module="fqsr_conv_cocotb",
                    test_dir=HERE, build_dir=build,
                    extra_env={"FQSR_COCOTB_SET": str(golden), "FQSR_COCOTB_STIMULUS": stimulus,
                               "FQSR_COCOTB_CONV": conv, "PYTHONPATH": str(HERE)})


def run_test(runner, results: Path, **test_args) -> bool:
    """runner.test(**test_args) writing results; True if its tests ran and none failed."""
    from cocotb_tools.runner import get_results
    results.unlink(missing_ok=True)
    try:
        runner.test(results_xml=str(results), **test_args)
    except SystemExit:         # the runner exits when a test fails; the results file says how
        pass
    if not results.is_file():
        return False
    tests, failed = get_results(results)
    return tests > 0 and failed == 0


def preflight(args) -> int:
    """2 (saying why on stderr) when cocotb is missing or --set is not a vector set, else 0."""
    if cocotb is None:
        print("error: cocotb is not installed (pip install cocotb, or pip install -e '.[hdl]')", file=sys.stderr)
        return 2
    if not (args.set / "manifest.json").is_file():
        print(f"error: --set {args.set}: no manifest.json", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", required=True, type=Path, help="golden vector directory")
    ap.add_argument("--stimulus", required=True)
    ap.add_argument("--conv", required=True)
    ap.add_argument("--build", type=Path, default=HERE / "build" / "cocotb", help="build directory")
    ap.add_argument("--rounding", type=int, choices=(0, 1), default=0,
                    help="1: a wrong tie rule (half away from zero); the corner sets must then fail")
    args = ap.parse_args(argv)
    if preflight(args):
        return 2
    ok = run(args.set.resolve(), args.stimulus, args.conv, args.build.resolve(), args.rounding)
    print(f"fqsr_conv_cocotb: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
