"""Check a port's tensors against a golden vector directory, layer by layer.

    python -m fqsr_ref.verify GOLDEN_DIR PORT_DIR [--show N]

The port writes, for every stimulus S of the golden manifest and every op, the
op's output as PORT_DIR/S/<tensor>.bin (raw little-endian, the golden dtype),
.npy or .hex (one two's complement element a line, the golden width); conv
accumulators (<conv>.acc.*) are checked when present. A layer passes when every
file the port wrote for it equals the golden tensor element for element.

Exit status: 0 every layer passes; 1 a layer fails or its output is missing;
2 unusable input (golden directory unreadable, a sha256 that does not match,
a manifest path that leaves the directory, PORT_DIR not a directory).
Golden files are read only after their sha256 is checked; .npy files are read
with allow_pickle=False.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .vectors import FORMATS, find_array, read_manifest

EXIT_PASS, EXIT_FAIL, EXIT_UNUSABLE = 0, 1, 2


class Mismatch(NamedTuple):
    """A tensor that differs: how many elements, the first few, the largest |difference|."""
    count: int
    size: int
    first: list          # [(index tuple, expected, got)]
    max_abs_diff: int


class TensorCheck(NamedTuple):
    tensor: str
    fmt: str             # the port file's format, or "" when none was found
    problem: str         # "" when the tensor passes
    mismatch: Mismatch | None


def read_port_array(path: Path, fmt: str, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """A port's tensor file as an int64 array of the golden shape; ValueError says why not.

    .bin must hold exactly the golden dtype (little-endian); .hex one element a
    line of exactly 2 * itemsize hex digits; .npy any integer dtype of the shape.
    """
    if fmt == "npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"not a readable .npy file without pickles ({exc})") from None
        if arr.dtype.kind not in "iu":
            raise ValueError(f"holds {arr.dtype}, expected integer codes")
    else:
        data = path.read_bytes()
        if fmt == "bin":
            want = dtype.itemsize * int(np.prod(shape))
            if len(data) != want:
                raise ValueError(f"{len(data)} bytes, expected {want} ({dtype.name} {shape})")
            arr = np.frombuffer(data, dtype.newbyteorder("<"))
        else:
            arr = parse_hex(data, dtype)
    if arr.size != int(np.prod(shape)) or (fmt == "npy" and arr.shape != shape):
        raise ValueError(f"shape {arr.shape}, expected {shape}")
    return arr.reshape(shape).astype(np.int64)


def parse_hex(data: bytes, dtype: np.dtype) -> np.ndarray:
    """Lines of 2 * itemsize hex digits, two's complement, -> values of dtype."""
    width = 2 * dtype.itemsize
    lines = data.decode("ascii", errors="replace").split()
    bad = next((i for i, line in enumerate(lines) if len(line) != width), None)
    if bad is not None:
        raise ValueError(f"line {bad + 1} is {lines[bad]!r}: expected {width} hex digits ({dtype.name})")
    try:
        raw = bytes.fromhex("".join(lines))
    except ValueError:
        raise ValueError("contains characters that are not hex digits") from None
    return np.frombuffer(raw, dtype.newbyteorder(">"))   # each line is big-endian text


def compare(expected: np.ndarray, got: np.ndarray, show: int) -> Mismatch | None:
    diff = expected.astype(np.int64) != got
    if not diff.any():
        return None
    flat = np.flatnonzero(diff)
    first = [(tuple(int(i) for i in np.unravel_index(f, expected.shape)), int(expected.flat[f]),
              int(got.flat[f])) for f in flat[:show]]
    delta = np.abs(expected.astype(np.int64)[diff] - got[diff])
    return Mismatch(int(flat.size), int(expected.size), first, int(delta.max()))


def check_tensor(golden: Path, manifest: dict, port: Path, stim: str, tensor: str,
                 show: int) -> TensorCheck | None:
    """Compare every port file of one tensor (stops at the first bad one); None when
    the port wrote none."""
    stem = f"{stim}/{tensor}"
    expected = find_array(golden, manifest, stem)
    found = []
    for fmt in FORMATS:
        path = port / f"{stem}.{fmt}"
        if not path.is_file():
            continue
        try:
            got = read_port_array(path, fmt, expected.dtype, expected.shape)
        except (OSError, ValueError) as exc:
            return TensorCheck(tensor, fmt, f"{path}: {exc}", None)
        mismatch = compare(expected, got, show)
        if mismatch is not None:
            return TensorCheck(tensor, fmt, f"{mismatch.count} of {mismatch.size} elements differ",
                               mismatch)
        found.append(fmt)
    return TensorCheck(tensor, "+".join(found), "", None) if found else None


def layer_tensors(op: dict) -> tuple:
    """(required tensors, optional tensors) a port is checked on for one op."""
    return (op["output"],), ((op["accumulator"],) if op["kind"] == "conv" else ())


def verify(golden_dir, port_dir, show: int = 8, out=None) -> int:
    """Print per layer PASS/FAIL and details of each stimulus's first failing layer."""
    out = out or sys.stdout
    golden, port = Path(golden_dir), Path(port_dir)
    manifest = read_manifest(golden)      # ValueError (exit 2) unless every sha256 matches
    if not port.is_dir():
        raise ValueError(f"port directory {port} does not exist")
    cfg = manifest["model"]["config"]
    print(f"golden {golden}: {cfg['arch']} x{cfg['scale']} {cfg['wt']}/{cfg['fm']}/{cfg['sc']}, "
          f"{len(manifest['files'])} files, sha256 ok", file=out)
    print(f"port   {port}", file=out)
    passed = failed = 0
    for stim in sorted(manifest["stimuli"]):
        first_fail = None
        for op in manifest["ops"]:
            required, optional = layer_tensors(op)
            checks, problems = [], []
            for tensor in required + optional:
                c = check_tensor(golden, manifest, port, stim, tensor, show)
                if c is None and tensor in required:
                    c = TensorCheck(tensor, "", f"missing: no {stim}/{tensor}.bin, .npy or .hex", None)
                if c is not None:
                    checks.append(c)
                    problems += [c] if c.problem else []
            what = ", ".join(f"{c.tensor}.{c.fmt}" if c.fmt else c.tensor for c in checks)
            if problems:
                failed += 1
                first_fail = first_fail or (op["name"], problems[0])
                print(f"FAIL  {stim:8s} {op['name']:20s} {problems[0].tensor}: {problems[0].problem}", file=out)
            else:
                passed += 1
                print(f"PASS  {stim:8s} {op['name']:20s} {what}", file=out)
        if first_fail:
            describe(stim, *first_fail, out)
    print(f"{passed} layers PASS, {failed} FAIL", file=out)
    return EXIT_PASS if failed == 0 else EXIT_FAIL


def describe(stim: str, layer: str, c: TensorCheck, out) -> None:
    print(f"  first failing layer of {stim}: {layer} ({c.tensor}, port .{c.fmt or '?'}): {c.problem}",
          file=out)
    if c.mismatch is not None:
        for index, exp, got in c.mismatch.first:
            print(f"    index {index}: expected {exp}, got {got}", file=out)
        print(f"    largest |difference|: {c.mismatch.max_abs_diff}", file=out)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m fqsr_ref.verify", description=__doc__.split("\n\n")[0])
    p.add_argument("golden", help="golden vector directory (with manifest.json)")
    p.add_argument("port", help="directory the port wrote its tensors into (same names)")
    p.add_argument("--show", type=int, default=8, help="mismatching elements to print (default 8)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return verify(args.golden, args.port, max(args.show, 1))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE


if __name__ == "__main__":
    sys.exit(main())
