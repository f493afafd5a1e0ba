"""A vector directory on disk: atomic writing, path safety, reading the manifest and arrays back.

Reading checks before it trusts: the schema version, names that stay plain file
names, paths that stay inside the directory, and every listed file's sha256.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np

from ..files import umask_mode
from .encodings import sha256

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)   # 2 adds product_bits to the ops and PRODUCT_BITS to model.txt
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def write_tree(out_dir, files: dict, marker: str = "manifest.json") -> Path:
    """Write files into a temporary directory next to out_dir, then rename it into place.

    An existing out_dir is replaced only if it is a vector directory (has
    manifest.json; a stream directory: `marker` stream.json) or empty, so a mistyped --out
    cannot wipe unrelated files. A reader sees the old directory or the new one, never a
    half-written one.
    """
    out = check_out(out_dir, marker)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise ValueError(f"vectors: cannot write {out}: {exc.strerror or exc}") from None
    try:
        _fill_and_swap(out, tmp, files)
    except OSError as exc:
        raise ValueError(f"vectors: cannot write {out}: {exc.strerror or exc}") from None
    return out


def check_out(out_dir, marker: str = "manifest.json") -> Path:
    """out_dir as an absolute path, or ValueError (before any work) if it cannot become a
    vector directory: it exists and is not one, or no folder on its way can be written."""
    out = Path(out_dir).absolute()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file())):
        raise ValueError(f"vectors: {out} exists and is not a vector directory; refusing to replace it")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"vectors: cannot write {out}: {parent} is not a writable directory")
    return out


def _fill_and_swap(out: Path, tmp: Path, files: dict) -> None:
    try:
        for rel, data in sorted(files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        os.chmod(tmp, umask_mode(0o777))   # mkdtemp makes 0700 directories whatever the umask
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            try:
                os.replace(out, old)      # over an empty directory: allowed on POSIX
            except BaseException:
                os.rmdir(old)             # nothing moved: leave no .old-* behind
                raise
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)      # put the previous set back
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def compare_tree(vec_dir, files: dict) -> list:
    """Relative paths that differ between vec_dir and files (missing, extra or changed)."""
    root = Path(vec_dir)
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    diff = sorted(on_disk ^ set(files))
    diff += sorted(rel for rel in on_disk & set(files) if (root / rel).read_bytes() != files[rel])
    return diff


def safe_path(root: Path, rel: str) -> Path:
    """root / rel, refusing paths that are absolute, contain '..' or resolve outside root
    (a symlink out of the directory)."""
    p = PurePosixPath(rel)
    if not rel or "\\" in rel or p.is_absolute() or any(part in ("..", "") for part in rel.split("/")):
        raise ValueError(f"manifest path {rel!r} leaves the vector directory {root}")
    full = root / p
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(full)]) != real_root:
        raise ValueError(f"manifest path {rel!r} resolves outside the vector directory {root}")
    return full


KNOWN_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "int64")
OP_KINDS = ("conv", "requant", "add", "shuffle")
_INT = "an integer"


def _type_ok(value, want) -> bool:
    if want is int:
        return type(value) is int                       # not bool, not float
    if want is float:
        return type(value) in (int, float)
    return isinstance(value, want)


_TYPE_TEXT = {dict: "an object", list: "a list", str: "a string", int: _INT, bool: "true or false",
              float: "a number"}


def _field(obj: dict, key: str, want, where: str, path, required: bool = True):
    """obj[key], checked to be of type want; ValueError names the field path."""
    if key not in obj:
        if required:
            raise ValueError(f"vectors: {path}: {where}.{key} is missing")
        return None
    value = obj[key]
    if not _type_ok(value, want):
        raise ValueError(f"vectors: {path}: {where}.{key} is {_short(value)}, expected {_TYPE_TEXT[want]}")
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dtype_field(obj: dict, key: str, where: str, path, required: bool = True) -> None:
    value = _field(obj, key, str, where, path, required)
    if value is not None and value not in KNOWN_DTYPES:
        raise ValueError(f"vectors: {path}: {where}.{key} is {_short(value)}, expected one of "
                         f"{', '.join(KNOWN_DTYPES)}")


def _shape_field(obj: dict, key: str, where: str, path, required: bool = True) -> None:
    value = _field(obj, key, list, where, path, required)
    if value is not None and not all(type(n) is int and n >= 0 for n in value):
        raise ValueError(f"vectors: {path}: {where}.{key} is {_short(value)}, expected a list of "
                         "non-negative integers")


def check_structure(manifest, path) -> None:
    """ValueError naming the field path unless every field the readers (verify, read_model,
    read_stimuli, regenerate) use has the right type: objects, lists, strings and integers
    where they belong, dtypes among KNOWN_DTYPES, shapes lists of non-negative integers.
    A manifest that is JSON but of the wrong structure is bad input, never a port mismatch."""
    if not isinstance(manifest, dict):
        raise ValueError(f"vectors: {path}: the manifest is {type(manifest).__name__}, expected an object")
    top = {"model": dict, "tensors": dict, "ops": list, "stimuli": dict, "files": dict}
    for key, want in top.items():
        if key not in manifest:
            raise ValueError(f"vectors: {path}: no {key!r} entry")
        _field(manifest, key, want, "manifest", path)
    model = manifest["model"]
    _field(model, "source", str, "model", path, required=False)
    cfg = _field(model, "config", dict, "model", path)
    _field(cfg, "arch", str, "model.config", path)
    for key in ("scale", "wt", "fm", "sc"):
        _field(cfg, key, int, "model.config", path)
    for name, t in manifest["tensors"].items():
        where = f"tensors[{name!r}]"
        if not isinstance(t, dict):
            raise ValueError(f"vectors: {path}: {where} is {_short(t)}, expected an object")
        _field(t, "kind", str, where, path)
        _dtype_field(t, "dtype", where, path, required=False)
        _shape_field(t, "shape", where, path, required=False)
        for key, want in (("bits", int), ("signed", bool), ("scale", float), ("qmin", int), ("qmax", int)):
            _field(t, key, want, where, path)
    for i, op in enumerate(manifest["ops"]):
        where = f"ops[{i}]"
        if not isinstance(op, dict):
            raise ValueError(f"vectors: {path}: {where} is {_short(op)}, expected an object")
        kind = _field(op, "kind", str, where, path)
        if kind not in OP_KINDS:
            raise ValueError(f"vectors: {path}: {where}.kind is {kind!r}, expected one of {', '.join(OP_KINDS)}")
        for key in ("name", "input", "output"):
            _field(op, key, str, where, path)
        strings, ints = (), ()
        if kind == "conv":
            strings = ("weight", "bias", "accumulator")
            ints = ("multiplier", "shift", "neg_multiplier", "neg_shift", "neg_sign", "acc_bound")
            _dtype_field(op, "acc_dtype", where, path)
            pad = _field(op, "pad_value", list, where, path, required=False)
            if pad is not None and not all(type(v) is int for v in pad):
                raise ValueError(f"vectors: {path}: {where}.pad_value is {_short(pad)}, expected a list of integers")
        elif kind == "requant":
            ints = ("multiplier", "shift")
        elif kind == "add":
            strings, ints = ("branch",), ("multiplier", "branch_multiplier", "shift")
            _field(op, "branch_relu", bool, where, path)
        else:
            ints = ("factor",)
        if kind != "shuffle":
            _field(op, "product_bits", int, where, path, required=False)
        for key in strings:
            _field(op, key, str, where, path)
        for key in ints:
            _field(op, key, int, where, path)
    for name, e in manifest["stimuli"].items():
        where = f"stimuli[{name!r}]"
        if not isinstance(e, dict):
            raise ValueError(f"vectors: {path}: {where} is {_short(e)}, expected an object")
        _field(e, "description", str, where, path, required=False)
        formats = _field(e, "formats", list, where, path, required=False)
        if formats is not None and not all(isinstance(f, str) for f in formats):
            raise ValueError(f"vectors: {path}: {where}.formats is {_short(formats)}, expected a list of strings")
        for key in ("coverage", "saturation"):
            table = _field(e, key, dict, where, path, required=key == "saturation" and "coverage" in e)
            for op, counts in (table or {}).items():
                if not isinstance(counts, dict) or not all(type(v) is int for v in counts.values()):
                    raise ValueError(f"vectors: {path}: {where}.{key}[{op!r}] is {_short(counts)}, "
                                     "expected an object of integer counts")
    for rel, rec in manifest["files"].items():
        where = f"files[{rel!r}]"
        if not isinstance(rec, dict):
            raise ValueError(f"vectors: {path}: {where} is {_short(rec)}, expected an object")
        _field(rec, "sha256", str, where, path)
        _field(rec, "tensor", str, where, path, required=False)
        array = rel.endswith((".npy", ".bin", ".hex"))
        _dtype_field(rec, "dtype", where, path, required=array)
        _shape_field(rec, "shape", where, path, required=array)


def read_manifest(vec_dir, check_files: bool = True) -> dict:
    """The manifest of a vector directory, its structure checked (check_structure), with
    every listed file's path and sha256 checked."""
    root = Path(vec_dir)
    path = root / "manifest.json"
    try:
        manifest = json.loads(path.read_text("ascii"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"vectors: cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") not in READABLE_VERSIONS:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ValueError(f"vectors: {path}: schema_version {version!r}, this reader knows "
                         f"{', '.join(map(str, READABLE_VERSIONS))}")
    check_structure(manifest, path)
    names = list(manifest["stimuli"]) + [op.get(k, "") for op in manifest["ops"]
                                         for k in ("name", "input", "output", "branch", "accumulator") if k in op]
    bad = [n for n in names if not isinstance(n, str) or not NAME_RE.match(n)]
    if bad:
        raise ValueError(f"vectors: {path}: names {bad[:3]} are not plain file names; "
                         "they would lead out of the directory")
    for rel, rec in sorted(manifest["files"].items()):
        full = safe_path(root, rel)
        if not check_files:
            continue
        try:
            data = full.read_bytes()
        except OSError as exc:
            raise ValueError(f"vectors: {full}: {exc.strerror or exc}") from None
        if sha256(data) != rec.get("sha256"):
            raise ValueError(f"vectors: {full}: sha256 {sha256(data)} does not match the manifest "
                             f"({rec.get('sha256')}); the file is corrupt, truncated or replaced")
    return manifest


def load_array(root: Path, rel: str, rec: dict) -> np.ndarray:
    """One listed array file (.npy or .bin) as an ndarray; never unpickles, and allocates
    only after the file's size proves it holds the manifest's shape (a .npy header
    declaring a huge shape is refused, not allocated)."""
    full = safe_path(root, rel)
    dtype, shape = np.dtype(rec["dtype"]).newbyteorder("<"), tuple(rec["shape"])
    want = dtype.itemsize * int(np.prod(shape, dtype=object))    # Python int: no overflow
    try:
        size = os.stat(full).st_size
        if rel.endswith(".npy"):
            with open(full, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                got_shape, fortran, got_dtype = read_header(f)
                start = f.tell()
        else:
            got_shape, fortran, got_dtype, start = shape, False, dtype, 0
    except (ValueError, TypeError, SyntaxError, EOFError) as exc:
        raise ValueError(f"vectors: {full}: not a .npy file this reader accepts ({exc})") from None
    if got_dtype != dtype or tuple(got_shape) != shape or fortran:
        raise ValueError(f"vectors: {full}: {got_dtype} {tuple(got_shape)}{' Fortran order' if fortran else ''}, "
                         f"manifest says {dtype.name} {shape}")
    if size != start + want:
        raise ValueError(f"vectors: {full}: {size} bytes, expected {start + want} ({shape} {dtype.name})")
    with open(full, "rb") as f:
        f.seek(start)
        arr = np.frombuffer(f.read(want), dtype).reshape(shape)
    return np.array(arr, dtype=dtype.newbyteorder("="))


def find_array(root: Path, manifest: dict, stem: str) -> np.ndarray:
    for fmt in ("npy", "bin"):
        rel = f"{stem}.{fmt}"
        if rel in manifest["files"]:
            return load_array(root, rel, manifest["files"][rel])
    raise ValueError(f"vectors: {root}: no .npy or .bin file for {stem!r} in the manifest")
