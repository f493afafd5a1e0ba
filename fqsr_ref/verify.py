"""Check a port's tensors against a golden vector directory, layer by layer.

    python -m fqsr_ref.verify GOLDEN_DIR PORT_DIR [--show N] [--require GROUPS]
                              [--layer NAMES]... [--stimulus NAMES]...

The port writes, for every stimulus S of the golden manifest, files named like the
golden ones: PORT_DIR/S/<name>.bin (raw little-endian, the golden dtype), .npy
(the golden dtype, little-endian, C order), .hex (what Verilog's $readmemh reads and
$writememh writes, each value the golden storage width) or .mem (the same at the
tensor's own width: $writememh of a reg [BITS-1:0] memory). Every op's output is required. The other files of
S that the golden set lists come in groups, each checked as a whole once the port
wrote any file of it for S (or always, with --require): `acc` (every conv's
accumulators <conv>.acc), `planes` (every conv's bit-plane partials
<conv>.plane.row, .col, .pop), `input` (image.in, the codes the port read). A layer
(one op for one stimulus) passes when every file the port wrote for it, its output,
accumulator, plane files and (for the op that reads it) image.in, equals the golden
tensor element for element. --layer and --stimulus (repeatable, or comma lists)
check only the named ops and stimuli (a simulation that dumped one layer). Port
files that no check read (layouts it does not compare, such as .nhwc.mem, or names
the golden set lacks) are listed at the end.

Exit status: 0 every layer passes; 1 a layer fails or a file it needs is missing;
2 unusable input (golden directory unreadable, a manifest of the wrong structure, a
sha256 that does not match, a manifest path that leaves the directory, PORT_DIR not
a directory, PORT_DIR that is or lies inside GOLDEN_DIR, a port file that is a
symlink or hard link to golden data, out of memory); 130 interrupted (Ctrl-C).
Errors are one line on stderr, never a traceback.
Golden files are read only after their sha256 is checked; no .npy file is ever
unpickled, and a port file is read only after its size (and a .npy header's dtype,
order and shape) proves it holds the golden tensor.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import stat
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

# Only what reading and comparing needs: the store (no build, no integer engines, so
# neither Numba nor SciPy loads and the verifier starts fast).
from .vectors.encodings import FORMATS
from .vectors.store import find_array, read_manifest

EXIT_PASS, EXIT_FAIL, EXIT_UNUSABLE = 0, 1, 2
EXIT_INTERRUPTED = 130                         # Ctrl-C, as train
MEM = "mem"                                    # a port's $writememh dump at the tensor's own width
PORT_FORMATS = FORMATS + (MEM,)
GROUPS = ("acc", "planes", "input")            # optional file groups; op outputs are always required
GROUP_TEXT = {"acc": "accumulators", "planes": "bit-plane files", "input": "input files"}
PLANES = ("row", "col", "pop")
NPY_MAGIC = b"\x93NUMPY"
NPY_MAX_HEADER = 65536
HEX_MIN_LIMIT = 1 << 20                        # a .hex file may be this large, or 64 x its canonical size


class RefusedPort(ValueError):
    """The port directory is the golden one, or a port file is (a link to) golden data: exit 2."""


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


# ---------------------------------------------------------------------------
# Refusing golden data offered as the port's
# ---------------------------------------------------------------------------

def inside(path: str, root: str) -> bool:
    return os.path.commonpath([root, path]) == root


class GoldenGuard:
    """Knows the golden directory (real path) and the device and inode of every golden
    file, and refuses a port path that leads to either."""

    def __init__(self, golden: Path, manifest: dict):
        self.golden = golden
        self.real = os.path.realpath(golden)
        self.inodes = {}
        for rel in ["manifest.json", *manifest["files"]]:
            try:
                st = os.stat(golden / rel)
            except OSError:
                continue
            self.inodes[(st.st_dev, st.st_ino)] = rel

    def check_dir(self, port: Path) -> None:
        real = os.path.realpath(port)
        if inside(real, self.real):
            what = "is the golden directory" if real == self.real else "lies inside the golden directory"
            raise RefusedPort(f"port directory {port} {what} {self.golden}; a port must write its own files")

    def check_file(self, path: Path, st: os.stat_result | None = None) -> None:
        """path (st: its stat, following symlinks, when known) is not golden data."""
        if st is None:
            try:
                st = os.stat(path)
            except OSError:
                return                      # dangling or unreadable: fails the layer when read
        rel = self.inodes.get((st.st_dev, st.st_ino))
        real = os.path.realpath(path)
        if rel is None and not inside(real, self.real):
            return
        if rel is None:
            how = f"resolves to {real}, inside the golden directory {self.golden}"
        elif real != os.path.realpath(self.golden / rel):
            how = f"is a hard link to the golden file {self.golden / rel} (same device and inode)"
        elif os.path.islink(path):
            how = f"is a symlink to the golden file {self.golden / rel}"
        else:
            how = f"resolves (through a symlinked directory) to the golden file {self.golden / rel}"
        raise RefusedPort(f"port file {path} {how}; a port must write its own files")


# ---------------------------------------------------------------------------
# Reading a port's file: .bin, .npy, .hex
# ---------------------------------------------------------------------------

def read_port_array(path: Path, fmt: str, dtype: np.dtype, shape: tuple,
                    guard: GoldenGuard | None = None, bits: tuple | None = None) -> np.ndarray:
    """A port's tensor file as an int64 array of the golden shape; ValueError says why not.

    .bin must hold exactly the golden dtype (little-endian); .npy must declare the
    golden dtype (little-endian), C order and the golden shape; .hex is parsed as
    $readmemh would (parse_hex); .mem likewise with values of the tensor's own width,
    bits = (BITS, signed). The file must be a regular file (a FIFO or a
    directory fails, nothing blocks); its size is checked before its data is read.
    """
    dtype, shape = np.dtype(dtype), tuple(shape)
    size = int(np.prod(shape, dtype=np.int64))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ValueError(f"cannot open: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if guard is not None:
            guard.check_file(path, st)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        if fmt == "npy":
            arr = read_npy(f, st.st_size, dtype, shape)
        elif fmt == "bin":
            want = dtype.itemsize * size
            if st.st_size != want:
                raise ValueError(f"{st.st_size} bytes, expected {want} ({dtype.name} {shape})")
            arr = np.frombuffer(f.read(want), dtype.newbyteorder("<"))
        else:
            limit = max(HEX_MIN_LIMIT, 64 * size * (2 * dtype.itemsize + 1))
            if st.st_size > limit:
                raise ValueError(f"{st.st_size} bytes, more than the {limit} this verifier reads for "
                                 f"{size} {dtype.name} values; not read")
            if fmt == MEM and bits is None:
                raise ValueError("no width known for a .mem file of this tensor; write .hex")
            arr = parse_hex(f.read(), dtype, size, bits if fmt == MEM else None)
    if arr.size != size:
        raise ValueError(f"{arr.size} elements, expected {size} ({shape})")
    return arr.reshape(shape).astype(np.int64)


def npy_descrs(dtype: np.dtype) -> tuple:
    """The .npy `descr` strings of dtype, little-endian ('|i1' and '<i1' for one byte)."""
    little = dtype.newbyteorder("<").str
    return (little, "<" + little[1:]) if dtype.itemsize == 1 else (little,)


def descr_text(descr) -> str:
    if not isinstance(descr, str):
        return f"{descr!r} (a structured dtype)"
    try:
        dt = np.dtype(descr)
    except (TypeError, ValueError):
        return repr(descr)
    order = {"<": ", little-endian", ">": ", big-endian", "=": ", native byte order (unstated)"}
    return f"{descr} ({dt.name}{order.get(descr[:1], '') if dt.itemsize > 1 else ''})"


def read_npy(f, file_size: int, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """The data of an open .npy file (format 1.0, 2.0 or 3.0), after its header proved
    it holds `shape` elements of dtype, little-endian, C order; never unpickles."""
    head = f.read(12)
    if head[:6] != NPY_MAGIC:
        raise ValueError("not a .npy file (no \\x93NUMPY magic)")
    if len(head) < 10:
        raise ValueError(f"a .npy file of {len(head)} bytes, shorter than its preamble")
    version = (head[6], head[7])
    if version == (1, 0):
        start, length = 10, int.from_bytes(head[8:10], "little")
    elif version in ((2, 0), (3, 0)):
        if len(head) < 12:
            raise ValueError(f"a .npy file of {len(head)} bytes, shorter than its preamble")
        start, length = 12, int.from_bytes(head[8:12], "little")
    else:
        raise ValueError(f".npy format version {version[0]}.{version[1]}; "
                         "this verifier reads 1.0, 2.0 and 3.0")
    if length > NPY_MAX_HEADER or start + length > file_size:
        raise ValueError(f".npy header of {length} bytes in a file of {file_size}; not read")
    f.seek(start)
    text = f.read(length).decode("utf-8" if version == (3, 0) else "latin1", errors="replace")
    try:
        header = ast.literal_eval(text)
    except Exception:     # SyntaxError, ValueError, RecursionError, MemoryError: all mean garbage
        raise ValueError("the .npy header is not a Python dict literal") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError("the .npy header is not a dict of exactly 'descr', 'fortran_order', 'shape'")
    descr, fortran, got_shape = header["descr"], header["fortran_order"], header["shape"]
    if descr not in npy_descrs(dtype):
        pickles = ("; it holds pickled Python objects, and .npy files are read without pickles"
                   if isinstance(descr, str) and descr.lstrip("|<>=").startswith("O") else "")
        order = ", little-endian" if dtype.itemsize > 1 else ""
        raise ValueError(f"dtype {descr_text(descr)}, expected {' or '.join(npy_descrs(dtype))} "
                         f"({dtype.name}{order}){pickles}")
    if fortran is not False:
        raise ValueError(f"fortran_order {fortran!r}, expected False (C order, last index fastest)")
    if not isinstance(got_shape, tuple) or not all(type(n) is int and n >= 0 for n in got_shape):
        raise ValueError(f"the .npy header's shape {got_shape!r} is not a tuple of sizes")
    if got_shape != shape:
        raise ValueError(f"the .npy header declares shape {got_shape}, expected {shape}; data not read")
    want = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if file_size != start + length + want:
        raise ValueError(f"{file_size - start - length} data bytes after the .npy header, "
                         f"expected {want} ({dtype.name} {shape})")
    return np.frombuffer(f.read(want), dtype.newbyteorder("<"))


HEX_TOKEN = re.compile(r"""
    (?P<nl>\n)
  | (?P<space>[^\S\n]+)
  | (?P<comment>//[^\n]*)
  | (?P<block>/\*.*?\*/)
  | (?P<open>/\*)
  | (?P<addr>@[^\s/@]*)
  | (?P<word>[^\s/@]+)
  | (?P<bad>.)
""", re.S | re.X | re.A)
HEX_DIGITS = re.compile(r"[0-9a-fA-F][0-9a-fA-F_]*", re.A)


def parse_hex(data: bytes, dtype: np.dtype, size: int | None = None,
              bits: tuple | None = None) -> np.ndarray:
    """$readmemh text -> a flat array of dtype, two's complement, `size` elements.

    Accepted: values of exactly 2 * itemsize hex digits (either case, `_` allowed
    after the first digit), any number a line, separated by whitespace or comments;
    `//` comments to the end of the line; `/* */` comments (may span lines); blank
    lines; `@ADDR` (hex element index, < size) after which values continue from ADDR
    (a later value for the same element replaces the earlier one, as in $readmemh).
    Every element must be written. Errors name the 1-based line of the file.
    size None: as many elements as the file writes.
    bits = (BITS, signed): values of the tensor's own width instead of the storage
    width, ceil(BITS / 4) digits, a BITS-bit two's complement pattern when signed (what
    $writememh writes for a reg [BITS-1:0] memory); bits above BITS must be 0.
    """
    dtype = np.dtype(dtype)
    width = 2 * dtype.itemsize
    text = data.decode("latin1")
    if bits is None:
        canonical = re.fullmatch(rf"(?:[0-9a-fA-F]{{{width}}}\n)*", text)
        if canonical and (size is None or len(text) == size * (width + 1)):    # the generator's own form
            raw = bytes.fromhex(text.replace("\n", ""))
            return np.frombuffer(raw, dtype.newbyteorder(">")).astype(dtype)
        bits, signed = 8 * dtype.itemsize, dtype.kind == "i"
    else:
        bits, signed = bits
        width = -(-bits // 4)
    values, line, ptr, addressed = {}, 1, 0, False
    for m in HEX_TOKEN.finditer(text):
        kind, tok = m.lastgroup, m.group()
        if kind == "nl":
            line += 1
        elif kind == "block":
            line += tok.count("\n")
        elif kind == "open":
            raise ValueError(f"line {line}: '/*' comment is never closed")
        elif kind == "bad":
            raise ValueError(f"line {line}: unexpected {tok!r} (a comment is '//' or '/* */')")
        elif kind == "addr":
            if not HEX_DIGITS.fullmatch(tok[1:]):
                raise ValueError(f"line {line}: address {tok!r} is not '@' and hex digits")
            ptr, addressed = int(tok[1:].replace("_", ""), 16), True
            if size is not None and ptr >= size:
                raise ValueError(f"line {line}: address {tok} (element {ptr}) is out of range: "
                                 f"the tensor has {size} elements, @0 to @{size - 1:x}")
        elif kind == "word":
            digits = tok.replace("_", "")
            if not HEX_DIGITS.fullmatch(tok):
                unknown = set(tok) & set("xXzZ?")
                why = ("contains x or z digits (unknown values), not hex digits of a code" if unknown
                       else "contains characters that are not hex digits")
                raise ValueError(f"line {line}: {tok!r} {why}")
            if len(digits) != width:
                raise ValueError(f"line {line} is {tok!r}: expected {width} hex digits "
                                 f"({dtype.name if bits == 8 * dtype.itemsize else f'{bits} bits'})")
            if size is not None and ptr >= size:
                raise ValueError(f"line {line}: value {tok!r} would be element {ptr}, past the "
                                 f"tensor's {size} elements")
            v = int(digits, 16)
            if v >> bits:
                raise ValueError(f"line {line}: {tok!r} has bits set above bit {bits - 1} ({bits}-bit values)")
            values[ptr] = v - (1 << bits) if signed and v >> (bits - 1) else v
            ptr += 1
    n = len(values)
    if size is None:
        size = max(values, default=-1) + 1
    if n != size:
        hole = next(i for i in range(size) if i not in values)
        where = f"element {hole} (address @{hole:x}) is never written" if addressed else "too few values"
        raise ValueError(f"{n} values, expected {size}: {where}")
    return np.array([values[i] for i in range(size)], dtype)


# ---------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------

def compare(expected: np.ndarray, got: np.ndarray, show: int) -> Mismatch | None:
    diff = expected.astype(np.int64) != got
    if not diff.any():
        return None
    flat = np.flatnonzero(diff)
    first = [(tuple(int(i) for i in np.unravel_index(f, expected.shape)), int(expected.flat[f]),
              int(got.flat[f])) for f in flat[:show]]
    delta = np.abs(expected.astype(np.int64)[diff] - got[diff])
    return Mismatch(int(flat.size), int(expected.size), first, int(delta.max()))


def port_formats(port: Path, stem: str) -> list:
    """The formats in which something exists at port/stem.<fmt> (a file, a link, anything)."""
    return [fmt for fmt in PORT_FORMATS if os.path.lexists(port / f"{stem}.{fmt}")]


def own_width(manifest: dict, stem: str, dtype: np.dtype) -> tuple:
    """(BITS, signed) of a port's .mem file of stem: a code tensor's bits, a weight's,
    an accumulator's ACC_BITS (the narrowest width holding +-acc_bound); plane.pop
    counts at their storage width."""
    if stem.endswith(".plane.pop"):
        return 8 * dtype.itemsize, True
    rec = next((manifest["files"][f"{stem}.{fmt}"] for fmt in FORMATS if f"{stem}.{fmt}" in manifest["files"]), {})
    t = manifest["tensors"].get(rec.get("tensor", ""))
    if not isinstance(t, dict):
        return 8 * dtype.itemsize, dtype.kind == "i"
    if t.get("kind") == "acc":
        return int(t["qmax"]).bit_length() + 1, True
    return int(t["bits"]), bool(t["signed"])


def check_tensor(golden: Path, manifest: dict, port: Path, stim: str, tensor: str,
                 show: int, guard: GoldenGuard | None = None) -> TensorCheck | None:
    """Compare every port file of one tensor (stops at the first bad one); None when
    the port wrote none."""
    stem = f"{stim}/{tensor}"
    formats = port_formats(port, stem)
    if not formats:
        return None
    expected = find_array(golden, manifest, stem)
    for fmt in formats:
        path = port / f"{stem}.{fmt}"
        try:
            got = read_port_array(path, fmt, expected.dtype, expected.shape, guard,
                                  own_width(manifest, stem, expected.dtype) if fmt == MEM else None)
        except RefusedPort:
            raise
        except (OSError, ValueError) as exc:
            return TensorCheck(tensor, fmt, f"{path}: {exc}", None)
        mismatch = compare(expected, got, show)
        if mismatch is not None:
            index, exp, val = mismatch.first[0]
            return TensorCheck(tensor, fmt, f"{mismatch.count} of {mismatch.size} elements differ, first "
                               f"at index {index}: expected {exp}, got {val}", mismatch)
    return TensorCheck(tensor, "+".join(formats), "", None)


def layer_tensors(op: dict) -> tuple:
    """(required tensors, optional tensors) of one op, before the manifest's file list
    is consulted (see stimulus_layers)."""
    conv = op["kind"] == "conv"
    return (op["output"],), ((op["accumulator"],) + tuple(f"{op['name']}.plane.{p}" for p in PLANES)
                             if conv else ())


def stimulus_layers(manifest: dict, stim: str) -> list:
    """[(layer name, [(tensor, group)])] for one stimulus: every op with its output
    (group "output") and those of its accumulator ("acc") and plane files ("planes")
    that the golden set lists; the input image.in ("input") with the first op that
    reads it; any other golden tensor of the stimulus as a layer of its own ("other")."""
    prefix = stim + "/"
    listed = {rel[len(prefix):].rsplit(".", 1)[0] for rel in manifest["files"]
              if rel.startswith(prefix) and "/" not in rel[len(prefix):] and rel.rsplit(".", 1)[-1] in FORMATS}
    produced = {op["output"] for op in manifest["ops"]}
    used, layers = set(), []
    for op in manifest["ops"]:
        required, optional = layer_tensors(op)
        items = [(t, "output") for t in required]
        for t in (op["input"], op.get("branch")):
            if t and t in listed and t not in produced and t not in used and (t, "input") not in items:
                items.append((t, "input"))
        items += [(t, "acc" if t == op.get("accumulator") else "planes") for t in optional if t in listed]
        used.update(t for t, _ in items)
        layers.append((op["name"], items))
    layers += [(t, [(t, "other")]) for t in sorted(listed - used)]
    return layers


def select(names, known, what: str) -> set | None:
    """The selected names (None: all); ValueError naming those that are not in known."""
    if not names:
        return None
    wanted = {n.strip() for text in names for n in text.split(",") if n.strip()}
    unknown = sorted(wanted - set(known))
    if unknown or not wanted:
        raise ValueError(f"--{what} {', '.join(unknown) or repr(names)}: not a {what} of the golden set "
                         f"(it has {', '.join(known)})")
    return wanted


def verify(golden_dir, port_dir, show: int = 8, out=None, require=(), layers=None, stimuli=None) -> int:
    """Print per layer PASS/FAIL and details of each stimulus's first failing layer.

    require: groups ("acc", "planes", "input") whose files are required even when
    the port wrote none of them. layers, stimuli: lists of names (or comma lists) to
    check only those ops and stimuli; None or empty: all."""
    out = out or sys.stdout
    if set(require) - set(GROUPS):
        raise ValueError(f"require: {sorted(set(require) - set(GROUPS))} are not among {GROUPS}")
    golden, port = Path(golden_dir), Path(port_dir)
    manifest = read_manifest(golden)      # ValueError (exit 2) unless every sha256 matches
    if not port.is_dir():
        raise ValueError(f"port directory {port} " + ("is not a directory" if port.exists() else "does not exist"))
    only_layers = select(layers, [op["name"] for op in manifest["ops"]], "layer")
    only_stimuli = select(stimuli, sorted(manifest["stimuli"]), "stimulus")
    guard = GoldenGuard(golden, manifest)
    guard.check_dir(port)
    plan = {stim: [(name, items) for name, items in stimulus_layers(manifest, stim)
                   if only_layers is None or name in only_layers]
            for stim in sorted(manifest["stimuli"]) if only_stimuli is None or stim in only_stimuli}
    for stim, layers in plan.items():          # refuse golden data before printing anything
        for _, items in layers:
            for tensor, _ in items:
                for fmt in port_formats(port, f"{stim}/{tensor}"):
                    guard.check_file(port / stim / f"{tensor}.{fmt}")
    cfg = manifest["model"]["config"]
    print(f"golden {golden}: {cfg['arch']} x{cfg['scale']} {cfg['wt']}/{cfg['fm']}/{cfg['sc']}, "
          f"{len(manifest['files'])} files, sha256 ok", file=out)
    print(f"port   {port}", file=out)
    if only_layers or only_stimuli:
        print(f"only   layers {', '.join(sorted(only_layers)) if only_layers else 'all'}; "
              f"stimuli {', '.join(sorted(only_stimuli)) if only_stimuli else 'all'}", file=out)
    passed = failed = 0
    for stim, layers in plan.items():
        written = {group for _, items in layers for tensor, group in items
                   if port_formats(port, f"{stim}/{tensor}")}
        first_fail = None
        for name, items in layers:
            checks, problems = [], []
            for tensor, group in items:
                c = check_tensor(golden, manifest, port, stim, tensor, show, guard)
                if c is None and (group == "output" or group in require or
                                  (group in written and group != "other")):
                    why = ("" if group == "output" else f" (--require {group})" if group in require
                           else f" (the port wrote other {GROUP_TEXT[group]} of {stim}; all are checked)")
                    c = TensorCheck(tensor, "", f"missing: no {stim}/{tensor}.bin, .npy or .hex{why}", None)
                if c is not None:
                    checks.append(c)
                    problems += [c] if c.problem else []
            if not checks:
                continue                      # a golden tensor outside the ops, not written: not asked for
            what = ", ".join(f"{c.tensor}.{c.fmt}" if c.fmt else c.tensor for c in checks)
            if problems:
                failed += 1
                first_fail = first_fail or (name, problems[0])
                print(f"FAIL  {stim:8s} {name:20s} {problems[0].tensor}: {problems[0].problem}", file=out)
            else:
                passed += 1
                print(f"PASS  {stim:8s} {name:20s} {what}", file=out)
        if first_fail:
            describe(stim, *first_fail, out)
    print_coverage(manifest, out)
    report_unread(port, manifest, plan, out)
    print(f"{passed} layers PASS, {failed} FAIL", file=out)
    return EXIT_PASS if failed == 0 else EXIT_FAIL


def _read_set(plan: dict) -> set:
    return {f"{stim}/{tensor}.{fmt}" for stim, layers in plan.items() for _, items in layers
            for tensor, _ in items for fmt in PORT_FORMATS}


def report_unread(port: Path, manifest: dict, plan: dict, out, show: int = 10) -> None:
    """Name the port's files that no check read: layouts the verifier does not compare
    (`.nhwc.mem`, `.planes.mem`, `.ohwi.mem`) and names the golden set lacks, so that
    a team that dumped them does not believe they were checked; files left out by
    --stimulus / --layer are only counted."""
    everything = _read_set({stim: stimulus_layers(manifest, stim) for stim in manifest["stimuli"]})
    read = _read_set(plan)
    unread = []
    for folder, dirs, files in os.walk(port):
        dirs.sort()
        rel = Path(folder).relative_to(port).as_posix()
        unread += sorted(name if rel == "." else f"{rel}/{name}" for name in files)
    unknown = [f for f in unread if f not in everything]
    skipped = sum(f in everything and f not in read for f in unread)
    if unknown:
        more = f" and {len(unknown) - show} more" if len(unknown) > show else ""
        print(f"not compared: {len(unknown)} port file{'s' * (len(unknown) != 1)} of a layout or name the "
              f"verifier does not check: {', '.join(unknown[:show])}{more}", file=out)
    if skipped:
        print(f"not compared: {skipped} port file{'s' * (skipped != 1)} outside --layer/--stimulus", file=out)


COVERAGE = (("ties_positive", "ties+"), ("ties_negative", "ties-"), ("low", "sat lo"),
            ("high", "sat hi"), ("negative_acc", "acc<0"), ("branch_negative", "branch<0"))


def print_coverage(manifest: dict, out) -> None:
    """What the golden vectors exercise, per op, summed over the stimuli (manifest
    `coverage` and `saturation`): a PASS is worth the rules these counts reach."""
    totals = {}
    for entry in manifest["stimuli"].values():
        for op, counts in entry.get("coverage", {}).items():
            t = totals.setdefault(op, {})
            for key, value in {**counts, **entry["saturation"].get(op, {})}.items():
                t[key] = t.get(key, 0) + value
    if not totals:
        return
    print("coverage (summed over the stimuli; '-' where the rule does not apply):", file=out)
    print(f"  {'op':20s}" + "".join(f"{label:>9s}" for _, label in COVERAGE), file=out)
    for op, t in totals.items():
        cells = "".join(f"{t[key]:9d}" if key in t else f"{'-':>9s}" for key, _ in COVERAGE)
        print(f"  {op:20s}{cells}", file=out)


def describe(stim: str, layer: str, c: TensorCheck, out) -> None:
    print(f"  first failing layer of {stim}: {layer} ({c.tensor}, port .{c.fmt or '?'}): {c.problem}",
          file=out)
    if c.mismatch is not None:
        for index, exp, got in c.mismatch.first:
            print(f"    index {index}: expected {exp}, got {got}", file=out)
        print(f"    largest |difference|: {c.mismatch.max_abs_diff}", file=out)


def parse_groups(text: str) -> tuple:
    groups = [g.strip() for g in text.split(",") if g.strip()]
    if groups == ["all"]:
        return GROUPS
    bad = [g for g in groups if g not in GROUPS]
    if bad or not groups:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'all' or a comma list of {', '.join(GROUPS)}")
    return tuple(groups)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m fqsr_ref.verify", description=__doc__.split("\n\n")[0],
                                epilog="exit status: 0 every selected layer passes; 1 a layer fails or a file "
                                       "it needs is missing; 2 unusable input (bad golden set, manifest or "
                                       "option, unknown --layer/--stimulus name, PORT not a directory, golden "
                                       "data offered as the port's, out of memory), one line on stderr; "
                                       "130 interrupted")
    p.add_argument("golden", help="golden vector directory (with manifest.json)")
    p.add_argument("port", help="directory the port wrote its tensors into (same names)")
    p.add_argument("--layer", action="append", metavar="NAMES",
                   help="check only these ops (repeatable, or a comma list), e.g. --layer head,tail")
    p.add_argument("--stimulus", action="append", metavar="NAMES",
                   help="check only these stimuli (repeatable, or a comma list)")
    p.add_argument("--show", type=int, default=8, help="mismatching elements to print (default 8)")
    p.add_argument("--require", type=parse_groups, default=(), metavar="GROUPS",
                   help="file groups the port must write for every stimulus even if it wrote none of "
                        "them: a comma list of acc, planes, input, or all (default: none; a group "
                        "is checked in full once the port wrote any file of it)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return verify(args.golden, args.port, max(args.show, 1), require=args.require,
                      layers=args.layer, stimuli=args.stimulus)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except MemoryError:
        print(f"error: out of memory checking {args.port} against {args.golden}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
