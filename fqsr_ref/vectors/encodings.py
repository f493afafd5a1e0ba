"""Array encodings of the vector files: .npy, raw little-endian .bin, .hex for $readmemh.

Every array is written little-endian and C order, in its storage dtype, by code
here (not np.save), so the bytes cannot change with the numpy version or the machine.
"""
from __future__ import annotations

import hashlib

import numpy as np

FORMATS = ("npy", "bin", "hex")


def storage_dtype(qmin: int, qmax: int) -> np.dtype:
    """The dtype a code tensor is stored in: the integer model's (SPEC 1, code_dtype)."""
    from ..integer.requant import code_dtype     # not at the top: the verifier imports this module
    return np.dtype(code_dtype(qmin, qmax))


def little_endian(arr: np.ndarray) -> np.ndarray:
    return np.asarray(arr).astype(arr.dtype.newbyteorder("<"), order="C")   # keeps 0-d arrays 0-d


def npy_bytes(arr: np.ndarray) -> bytes:
    """NPY format 1.0 bytes of an integer array, header written here (not by np.save)
    so that the bytes cannot change with the numpy version."""
    arr = little_endian(arr)
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (arr.dtype.str, tuple(arr.shape))
    # magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64
    pad = -(10 + len(header) + 1) % 64
    header = (header + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + arr.tobytes()


def hex_bytes(arr: np.ndarray) -> bytes:
    """One element a line, C order, two's complement, 2 * itemsize lowercase hex digits."""
    arr = little_endian(arr)
    width = 2 * arr.dtype.itemsize
    unsigned = arr.view(arr.dtype.str.replace("i", "u"))
    return "".join(f"{v:0{width}x}\n" for v in unsigned.ravel().tolist()).encode("ascii")


def encode(arr: np.ndarray, fmt: str) -> bytes:
    if fmt == "npy":
        return npy_bytes(arr)
    if fmt == "bin":
        return little_endian(arr).tobytes()
    if fmt == "hex":
        return hex_bytes(arr)
    raise ValueError(f"vectors: unknown format {fmt!r}; expected one of {FORMATS}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
