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

from .encodings import sha256

SCHEMA_VERSION = 1
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def write_tree(out_dir, files: dict) -> Path:
    """Write files into a temporary directory next to out_dir, then rename it into place.

    An existing out_dir is replaced only if it is a vector directory (has
    manifest.json) or empty, so a mistyped --out cannot wipe unrelated files.
    A reader sees the old directory or the new one, never a half-written one.
    """
    out = Path(out_dir).absolute()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise ValueError(f"vectors: {out} exists and is not a vector directory; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for rel, data in sorted(files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old)      # over an empty directory: allowed on POSIX
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


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


def read_manifest(vec_dir, check_files: bool = True) -> dict:
    """The manifest of a vector directory, with every listed file's path and sha256 checked."""
    root = Path(vec_dir)
    path = root / "manifest.json"
    try:
        manifest = json.loads(path.read_text("ascii"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"vectors: cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ValueError(f"vectors: {path}: schema_version {version!r}, this reader knows {SCHEMA_VERSION}")
    for key in ("model", "tensors", "ops", "stimuli", "files"):
        if key not in manifest:
            raise ValueError(f"vectors: {path}: no {key!r} entry")
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
    """One listed array file (.npy or .bin) as an ndarray; never unpickles."""
    full = safe_path(root, rel)
    dtype, shape = np.dtype(rec["dtype"]).newbyteorder("<"), tuple(rec["shape"])
    if rel.endswith(".npy"):
        arr = np.load(full, allow_pickle=False)
    else:
        data = full.read_bytes()
        if len(data) != dtype.itemsize * int(np.prod(shape)):
            raise ValueError(f"vectors: {full}: {len(data)} bytes, expected {shape} {dtype.name}")
        arr = np.frombuffer(data, dtype).reshape(shape)
    if arr.dtype != dtype or arr.shape != shape:
        raise ValueError(f"vectors: {full}: {arr.dtype} {arr.shape}, manifest says {dtype.name} {shape}")
    return np.array(arr, dtype=dtype.newbyteorder("="))


def find_array(root: Path, manifest: dict, stem: str) -> np.ndarray:
    for fmt in ("npy", "bin"):
        rel = f"{stem}.{fmt}"
        if rel in manifest["files"]:
            return load_array(root, rel, manifest["files"][rel])
    raise ValueError(f"vectors: {root}: no .npy or .bin file for {stem!r} in the manifest")
