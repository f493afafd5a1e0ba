"""The C port (tools/cport) under AddressSanitizer and UndefinedBehaviorSanitizer, fed a few
hundred mutated model.txt files: every run must exit 0 or 2 (2 with one line naming the line
of model.txt, and then nothing written at all), never crash, never report a sanitizer error
(memory, leaks, signed overflow, bad shifts), and never create a file outside PORT_DIR.

Skipped where no C compiler is found or the sanitizer runtimes are missing (a trivial
program is built and run with the same flags first)."""
import collections
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "tools" / "cport" / "fqsr_port.c", ROOT / "tools" / "cport" / "fqsr_ops.c"]
CORNER = ROOT / "vectors" / "corner_x2_4-4-8"
STIMULUS = "checker"                       # 8x8: a valid run takes milliseconds
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
CFLAGS = ["-std=c99", "-O1", "-g", "-Wall", "-Werror", *SANITIZE]
SANITIZER_EXIT = 86                        # any sanitizer report ends the run with this code
ENV = {**os.environ,
       "ASAN_OPTIONS": f"exitcode={SANITIZER_EXIT}:detect_leaks=1:abort_on_error=0",
       "LSAN_OPTIONS": f"exitcode={SANITIZER_EXIT}",
       "UBSAN_OPTIONS": f"exitcode={SANITIZER_EXIT}:print_stacktrace=1:halt_on_error=1"}
CASES = 500
SEED = 20240612
TIMEOUT = 10                               # seconds a run; a valid one takes ~0.05 s

EXTREMES = ["0", "-1", "1", "2", "3", "4", "7", "16", "17", "31", "32", "40", "62", "63", "64", "255",
            "256", "65535", "65536", "-65536", "268435456", "2147483647", "2147483648", "-2147483648",
            "-2147483649", "4294967296", "1099511627776", "4611686018427387904", "9223372036854775807",
            "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
            "18446744073709551616", "100000000000000000000000000000", "-0", "+1", "1e3", "0x10", "1.5",
            "--1", "abc"]
NAMES = ["../x", "../../escaped", "a/b", "/tmp", "..", ".", "...", "..x", "x..", "./x", "-", "x" * 63,
         "y" * 64, "z" * 300, "image.in", "image.out", "weights", "head.acc", "a b", "\u00e9", "a%sb", "%n"]
DTYPES = ["uint8", "int8", "int16", "int32", "int64", "float32", "int", "uint16"]


def compiler():
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


@pytest.fixture(scope="module")
def sanitized_port(tmp_path_factory):
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH; the C port cannot be built here")
    work = tmp_path_factory.mktemp("cport_asan")
    probe = work / "probe.c"
    probe.write_text("#include <stdlib.h>\nint main(void) { char *p = malloc(4); p[0] = 1; "
                     "free(p); return 0; }\n")
    build = subprocess.run([cc, *SANITIZE, "-o", str(work / "probe"), str(probe)], capture_output=True, text=True)
    if build.returncode != 0:
        last = (build.stderr.strip().splitlines() or [""])[-1]
        pytest.skip(f"{cc} cannot build with {' '.join(SANITIZE)} (sanitizer runtime missing?): {last}")
    run = subprocess.run([str(work / "probe")], capture_output=True, text=True, env=ENV, timeout=60)
    if run.returncode != 0:
        pytest.skip(f"a program built with {' '.join(SANITIZE)} does not run here: {run.stderr.strip()[:200]}")
    exe = work / "fqsr_port"
    build = subprocess.run([cc, *CFLAGS, "-o", str(exe), *map(str, SOURCES)], capture_output=True, text=True)
    assert build.returncode == 0, f"{cc} {' '.join(CFLAGS)} failed:\n{build.stderr}"
    return exe


def base_lines():
    """corner_x2_4-4-8's model.txt with one stimulus left."""
    return [line for line in (CORNER / "model.txt").read_text().splitlines()
            if not line.startswith("stimulus ") or line.split()[1] == STIMULUS]


def is_int(text):
    try:
        int(text)
        return True
    except ValueError:
        return False


def mutate(lines, rng):
    """One or two mutations of the model.txt lines; returns (lines, description)."""
    lines = list(lines)
    done = []
    for _ in range(1 if rng.random() < 0.8 else 2):
        content = [i for i, line in enumerate(lines) if line and not line.startswith("#")]
        i = int(rng.choice(content))
        fields = lines[i].split(" ")
        kind = rng.choice(["number", "number", "number", "name", "dtype", "drop", "duplicate",
                           "truncate", "swap", "delete_line", "duplicate_line"])
        numbers = [j for j, f in enumerate(fields) if j > 0 and is_int(f)]
        names = [j for j, f in enumerate(fields) if j > 0 and not is_int(f) and f not in DTYPES]
        dtypes = [j for j, f in enumerate(fields) if f in DTYPES]
        if kind == "number" and numbers:
            j = int(rng.choice(numbers))
            fields[j] = str(rng.choice(EXTREMES))
        elif kind == "name" and names:
            j = int(rng.choice(names))
            fields[j] = str(rng.choice(NAMES))
        elif kind == "dtype" and dtypes:
            j = int(rng.choice(dtypes))
            fields[j] = str(rng.choice(DTYPES))
        elif kind == "drop" and len(fields) > 1:
            del fields[int(rng.integers(1, len(fields)))]
        elif kind == "duplicate":
            j = int(rng.integers(0, len(fields)))
            fields.insert(j, fields[j])
        elif kind == "truncate":
            lines[i] = lines[i][:int(rng.integers(0, len(lines[i])))]
            fields = None
        elif kind == "swap":
            k = int(rng.choice(content))
            lines[i], lines[k] = lines[k], lines[i]
            fields = None
        elif kind == "delete_line":
            del lines[i]
            fields = None
        elif kind == "duplicate_line":
            lines.insert(i, lines[i])
            fields = None
        else:                                      # nothing of that kind on this line: an extreme
            fields[-1] = str(rng.choice(EXTREMES))  # last field (numeric or not)
            kind = "last_field"
        if fields is not None:
            lines[i] = " ".join(fields)
        done.append(f"{kind}@{i + 1}")
    return lines, "+".join(done)


# table rows of issue 12 as fixed cases, ahead of the random ones
TABLE_ROWS = [
    ("stimulus checker", "stimulus ../escaped"),
    ("stimulus checker", "stimulus ../../escaped"),
    ("stimulus checker", "stimulus a/b"),
    ("tensor up.0.shuffle", "tensor ../up.0.shuffle"),
    ("long_add.out 0 1610612736 805306368 1", "long_add.out 0 1610612736 805306368 40"),
    ("trunk.in 1073741824 0", "trunk.in 1099511627776 0"),
    ("up.0.shuffle 2", "up.0.shuffle 65536"),
    ("stimulus checker 1 3 8 8", "stimulus checker 1 -3 8 8"),
    ("conv trunk trunk.in trunk.out 8 8 3", "conv trunk trunk.in trunk.out -8 8 3"),
]


def cases():
    base = base_lines()
    text = "\n".join(base) + "\n"
    out = [("unmutated", base)]
    for old, new in TABLE_ROWS:
        assert old in text
        out.append((f"table:{new}", text.replace(old, new, 1).splitlines()))
    rng = np.random.default_rng(SEED)
    while len(out) < CASES:
        lines, what = mutate(base, rng)
        out.append((what, lines))
    return out


def tree(root):
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_case(exe, shared, root, index, what, lines):
    """One run in root/<index>/ (golden/ links to the shared weights and stimulus; port/ is
    PORT_DIR). Returns (exit code, stderr, files created outside port/)."""
    case = root / f"{index:03d}"
    golden = case / "g" / "golden"       # two levels deep, so ../../x stays inside case/
    golden.mkdir(parents=True)
    (golden / "weights").symlink_to(shared / "weights")
    (golden / STIMULUS).symlink_to(shared / STIMULUS)
    (golden / "model.txt").write_text("\n".join(lines) + "\n")
    before = tree(case)
    started = time.perf_counter()
    try:
        result = subprocess.run([str(exe), str(golden), str(case / "g" / "port")], capture_output=True,
                                text=True, errors="replace", env=ENV, timeout=TIMEOUT)
        code, stderr = result.returncode, result.stderr
    except subprocess.TimeoutExpired:
        code, stderr = "timeout", ""
    seconds = time.perf_counter() - started
    outside = sorted(p for p in tree(case) - before if not p.startswith(os.path.join("g", "port")))
    return dict(index=index, what=what, code=code, stderr=stderr, outside=outside, seconds=seconds,
                port_exists=(case / "g" / "port").exists())


def test_mutated_model_txt_never_crashes_the_port(sanitized_port, tmp_path):
    shared = tmp_path / "shared"
    (shared / STIMULUS).mkdir(parents=True)
    shutil.copytree(CORNER / "weights", shared / "weights")
    shutil.copy(CORNER / STIMULUS / "image.in.bin", shared / STIMULUS)
    root = tmp_path / "cases"
    root.mkdir()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda c: run_case(sanitized_port, shared, root, c[0], *c[1]),
                                enumerate(cases())))
    elapsed = time.perf_counter() - started

    problems = []
    for r in results:
        tag = f"case {r['index']} ({r['what']})"
        if r["code"] not in (0, 2):
            problems.append(f"{tag}: exit {r['code']}\n{r['stderr'][-2000:]}")
        elif "Sanitizer" in r["stderr"] or "runtime error" in r["stderr"]:
            problems.append(f"{tag}: sanitizer report\n{r['stderr'][-2000:]}")
        elif r["outside"]:
            problems.append(f"{tag}: created outside PORT_DIR: {r['outside']}")
        elif r["code"] == 2:
            lines = r["stderr"].splitlines()
            if len(lines) != 1 or " line " not in lines[0] or "model.txt" not in lines[0]:
                problems.append(f"{tag}: exit 2 without one line naming model.txt's line: {r['stderr']!r}")
            elif r["port_exists"]:
                problems.append(f"{tag}: exit 2 after creating PORT_DIR")
    escaped = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("shared", "cases"))
    if escaped:
        problems.append(f"files created beside the cases: {escaped}")

    codes = collections.Counter(r["code"] for r in results)
    slowest = max(results, key=lambda r: r["seconds"])
    print(f"\nfuzz: {len(results)} cases in {elapsed:.1f} s, exit codes {dict(sorted(codes.items()))}, "
          f"slowest {slowest['seconds']:.2f} s ({slowest['what']})")
    assert not problems, f"{len(problems)} of {len(results)} runs misbehaved:\n" + "\n\n".join(problems[:10])
    # not a vacuous fuzz: the unmutated copy runs, the table rows are refused, both outcomes occur
    assert results[0]["code"] == 0, results[0]["stderr"]
    assert all(r["code"] == 2 for r in results[1:1 + len(TABLE_ROWS)])
    assert codes[2] >= CASES // 3 and codes[0] >= 10, codes
