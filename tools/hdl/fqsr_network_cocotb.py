"""cocotb version of the whole-network streaming testbench (issue 26 item 3): the network
fqsr_network.py generates (compiled with -DFQSR_COCOTB: no clock, source, sink or run of its
own) driven from Python, the golden values read with NumPy from the set's .npy files (.bin
where a stimulus has no .npy). Needs cocotb (2.x) and Icarus Verilog.

    python tools/hdl/fqsr_network_cocotb.py --set vectors/corner_x2_4-4-8 --stimulus column \
        [--pe 4] [--seed 1] [--build DIR] [--rounding 1]

image.in is encoded into beats here (raster order, PE channels a beat, TUSER on the first beat
of a frame, TLAST on the last beat of a line: vectors/README.md "Stream-order vectors") and fed
with seeded random gaps; image.out is taken with seeded random backpressure. Every op's output
beat (data, TUSER, TLAST) and every conv's accumulator beat is compared, by its index in the
tensor's stream, with the beat encoded from the set's arrays (timing plays no part). The
stream directory (`vectors --stream SET --pe P --simd P`) is written only for the ROM images and
headers the units read. Exit 0 on PASS. As a cocotb test module it reads FQSR_COCOTB_SET,
FQSR_COCOTB_STIMULUS, FQSR_COCOTB_STREAM, FQSR_COCOTB_SEED.
"""
import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TOP = "fqsr_network_tb"
UNITS = ("fqsr_stream_conv.v", "fqsr_stream_requant.v", "fqsr_stream_add.v", "fqsr_stream_shuffle.v",
         "fqsr_stream_fifo.v", "fqsr_bitplane_mac.v", "fqsr_requantizer.v")
sys.path.insert(0, str(HERE))
from fqsr_conv_cocotb import load, preflight, run_test  # noqa: E402  (.npy, else .bin; never unpickles)
from fqsr_network import ident, read_params, uident  # noqa: E402


def beats(codes: np.ndarray, bits: int, lanes: int, markers: bool = True) -> list:
    """(N, C, H, W) codes -> stream words: beats over (n, y, x, g), lane l = channel g*lanes + l
    as a BITS-bit pattern (0 past C), TUSER at bit lanes*bits, TLAST at bit lanes*bits + 1."""
    n, c, h, w = codes.shape
    groups = -(-c // lanes)
    mask = (1 << bits) - 1
    out = []
    for b in range(n):
        for y in range(h):
            for x in range(w):
                for g in range(groups):
                    word = 0
                    for lane in range(lanes):
                        ch = g * lanes + lane
                        if ch < c:
                            word |= (int(codes[b, ch, y, x]) & mask) << (lane * bits)
                    if markers:
                        word |= int(y == 0 and x == 0 and g == 0) << (lanes * bits)
                        word |= int(x == w - 1 and g == groups - 1) << (lanes * bits + 1)
                    out.append(word)
    return out


try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge, ReadOnly
except ImportError:            # the runner below reports it; importing this file stays possible
    cocotb = None


def value(handle):
    """An unsigned int, or None while the value holds X or Z."""
    v = handle.value
    if isinstance(v, int):
        return v
    if hasattr(v, "to_unsigned"):          # a vector
        return v.to_unsigned() if v.is_resolvable else None
    return int(str(v)) if str(v) in ("0", "1") else None     # one bit


if cocotb is not None:
    @cocotb.test()
    async def network_matches_golden(dut):
        golden = Path(os.environ["FQSR_COCOTB_SET"])
        stimulus, stream = os.environ["FQSR_COCOTB_STIMULUS"], Path(os.environ["FQSR_COCOTB_STREAM"])
        seed = int(os.environ.get("FQSR_COCOTB_SEED", "1"))
        manifest = json.loads((golden / "manifest.json").read_text())
        meta = json.loads((stream / "stream.json").read_text())
        pe, tensors = meta["pe"], manifest["tensors"]
        ops = meta["ops"]
        rng = random.Random(seed)
        # every tensor the network carries: its handles and its golden beats from the arrays
        probes = {}
        for t in [ops[0]["input"]] + [op["output"] for op in ops]:
            n = ident(t)
            probes[t] = dict(valid=getattr(dut, f"{n}_valid"), ready=getattr(dut, f"{n}_ready"),
                             word=(getattr(dut, f"{n}_last"), getattr(dut, f"{n}_user"), getattr(dut, f"{n}_data")),
                             bits=tensors[t]["bits"],
                             gold=beats(load(golden, manifest, f"{stimulus}/{t}"), tensors[t]["bits"], pe),
                             got=0, bad=0, first=None, last=None)
        accs = {}
        for op in ops:
            if op["kind"] == "conv":
                acc_bits = read_params(stream / stimulus / f"{op['name']}.stream.svh")["ACC_BITS"]
                accs[op["output"]] = dict(
                    name=op["name"], handle=getattr(dut, f"{uident(op['name'])}_acc"),
                    gold=beats(load(golden, manifest, f"{stimulus}/{op['name']}.acc"), acc_bits, pe, markers=False),
                    got=0, bad=0)
        source, sink = ops[0]["input"], ops[-1]["output"]
        src, snk = probes[source], probes[sink]
        # no beat anywhere for this long: a deadlock (as fqsr_network.py's watchdog)
        idle = 1000 + 20 * max(op_k * -(-cin // pe) + 2 for op_k, cin in
                               ((m["kernel"] ** 2, m["cin"]) for m in manifest["ops"] if m["kind"] == "conv"))
        mismatches = []

        def word_of(p):
            last, user, data = (value(h) for h in p["word"])
            if None in (last, user, data):
                return None
            return (last << (len(p["word"][2]) + 1)) | (user << len(p["word"][2])) | data

        Clock(dut.clk, 10, unit="ns").start()
        src_v, snk_r = getattr(dut, f"{ident(source)}_v"), getattr(dut, f"{ident(sink)}_r")
        dut.rst.value = 1
        src_v.value = 0
        snk_r.value = 0
        for _ in range(2):
            await FallingEdge(dut.clk)
        dut.rst.value = 0
        cycles = progress = 0
        while snk["got"] < len(snk["gold"]) and cycles - progress < idle:
            await FallingEdge(dut.clk)
            cycles += 1
            # the source: a random gap, else the next beat of image.in; the sink: random backpressure
            more = src["got"] < len(src["gold"])
            src_v.value = int(more and rng.randrange(3) != 0)
            if more:
                dut.cocotb_beat.value = src["gold"][src["got"]]
            snk_r.value = int(rng.randrange(3) != 0)
            await ReadOnly()
            # every handshake of the coming rising edge, checked against the beat of its index
            for t, p in probes.items():
                if value(p["valid"]) != 1 or value(p["ready"]) != 1:
                    continue
                progress = cycles
                i = p["got"]
                got = word_of(p)
                if i >= len(p["gold"]) or got != p["gold"][i]:
                    p["bad"] += 1
                    mismatches.append(f"{t} beat {i}: expected {p['gold'][i] if i < len(p['gold']) else None:x}, "
                                      f"got {got if got is None else hex(got)}")
                if t in accs:
                    a = accs[t]
                    got_acc = value(a["handle"])
                    if a["got"] >= len(a["gold"]) or got_acc != a["gold"][a["got"]]:
                        a["bad"] += 1
                        mismatches.append(f"{a['name']} accumulator beat {a['got']}")
                    a["got"] += 1
                p["got"] += 1
                p["first"] = cycles if p["first"] is None else p["first"]
                p["last"] = cycles
        await FallingEdge(dut.clk)
        log = dut._log.info
        log("fqsr_network_cocotb: per op: output beats, mismatches, cycles of the first and last beat")
        for op in ops:
            p = probes[op["output"]]
            extra = (f", {accs[op['output']]['got']} accumulator beats ({accs[op['output']]['bad']} differ)"
                     if op["output"] in accs else "")
            log(f"  {op['name']:<20} {p['got']:5d} of {len(p['gold'])} beats ({p['bad']} differ){extra}  "
                f"first {p['first']}  last {p['last']}")
        verilog_bad = value(dut.bad_total)       # the generated probes (the .mem files) agree
        complete = all(p["got"] == len(p["gold"]) for p in probes.values() if p is not src) and all(
            a["got"] == len(a["gold"]) for a in accs.values())
        checked = sum(p["got"] for t, p in probes.items() if t != source)
        acc_beats = sum(a["got"] for a in accs.values())
        if cycles - progress >= idle:
            log(f"stalled: no beat moved for {idle} cycles from cycle {progress} (a deadlock)")
        for m in mismatches[:5]:
            log("mismatch: " + m)
        if not mismatches and complete and verilog_bad == 0:
            log(f"fqsr_network_cocotb: PASS {len(ops)} ops, {checked + acc_beats} beats checked ({snk['got']} of "
                f"image.out, {acc_beats} accumulator beats) from the .npy files, {cycles} cycles "
                f"(random gaps and backpressure, seed {seed})")
        else:
            log(f"fqsr_network_cocotb: FAIL {len(mismatches)} beats differ, {snk['got']} of {len(snk['gold'])} "
                f"image.out beats received, {cycles} cycles")
        assert not mismatches and complete and verilog_bad == 0, f"{len(mismatches)} mismatches"


def run(golden: Path, stimulus: str, pe: int, build: Path, seed: int = 1, rounding: int = 0) -> bool:
    """Write the stream directory and the testbench, build with Icarus, run; True on PASS."""
    from cocotb_tools.runner import get_runner
    import fqsr_network
    build.mkdir(parents=True, exist_ok=True)
    stream = build / "stream"
    subprocess.run([sys.executable, "-m", "fqsr_ref.vectors", "--stream", str(golden), "--pe", str(pe),
                    "--simd", str(pe), "--stimulus", stimulus, "--out", str(stream)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    tb = build / "fqsr_network_tb.v"
    tb.write_text(fqsr_network.build(stream, stimulus))
    defines = {"FQSR_COCOTB": 1, **({"FQSR_TIE_HALF_AWAY": 1} if rounding else {})}
    runner = get_runner("icarus")
    runner.build(sources=[tb, *(HERE / f for f in UNITS)], hdl_toplevel=TOP, build_dir=build / "sim",
                 always=True, timescale=("1ns", "1ps"), defines=defines)
    # run in the stream directory: the units' ROM images and the probes' .mem paths are relative to it
    return run_test(runner, build / "results.xml", hdl_toplevel=TOP, test_module="fqsr_network_cocotb",
                    test_dir=stream, build_dir=build / "sim",
                    extra_env={"FQSR_COCOTB_SET": str(golden), "FQSR_COCOTB_STIMULUS": stimulus,
                               "FQSR_COCOTB_STREAM": str(stream), "FQSR_COCOTB_SEED": str(seed),
                               "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])})

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", required=True, type=Path, help="golden vector directory")
    ap.add_argument("--stimulus", required=True)
    ap.add_argument("--pe", type=int, default=4, help="channels a beat (SIMD = PE)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random gaps and backpressure")
    ap.add_argument("--build", type=Path, default=HERE / "build" / "network-cocotb", help="build directory")
    ap.add_argument("--rounding", type=int, choices=(0, 1), default=0,
                    help="1: the tie-rule mutant (-DFQSR_TIE_HALF_AWAY); the corner sets must then fail")
    args = ap.parse_args(argv)
    if preflight(args):
        return 2
    manifest = json.loads((args.set / "manifest.json").read_text())
    if args.stimulus not in manifest["stimuli"]:
        print(f"error: --stimulus {args.stimulus}: not a stimulus of {args.set}", file=sys.stderr)
        return 2
    ok = run(args.set.resolve(), args.stimulus, args.pe, args.build.resolve(), args.seed, args.rounding)
    print(f"fqsr_network_cocotb: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
