"""The number of OpenBLAS threads, whatever was imported first.

OpenBLAS reads OPENBLAS_NUM_THREADS once, when it is loaded (`import numpy` loads
NumPy's copy, `import scipy.linalg` SciPy's own). Setting the variable later changes
nothing, so `set_blas_threads` also calls openblas_set_num_threads in every OpenBLAS
the process has already loaded. They are found with ctypes, without loading anything
new: on Linux by /proc/self/maps, elsewhere in the bundled-library folders of NumPy
and SciPy. No OpenBLAS (another BLAS, a platform without ctypes) is a silent no-op.
"""
from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

# Exported names of the OpenBLAS builds in use: "openblas_" (system libraries, older
# wheels) and "scipy_openblas_" (NumPy >= 2 and SciPy wheels), with the "64_" suffix
# on ILP64 builds. The names ending in "_" without "64" are the Fortran entry points
# (they take a pointer) and are not tried.
_PREFIXES = ("scipy_openblas_", "openblas_")
_SUFFIXES = ("", "64_")
# Where wheels bundle their shared libraries (auditwheel, delocate, delvewheel).
_BUNDLE_DIRS = ("{name}.libs", "{name}/.libs", "{name}/.dylibs")


def _is_openblas(path: str) -> bool:
    name = os.path.basename(path).lower()
    return "openblas" in name and any(ext in name for ext in (".so", ".dylib", ".dll"))


def _loaded_paths() -> list[str]:
    """Paths of the OpenBLAS libraries this process may have loaded, in a stable order."""
    try:
        with open("/proc/self/maps") as f:
            # address perms offset dev inode path; the path may hold spaces
            paths = {fields[5] for fields in (line.rstrip("\n").split(maxsplit=5) for line in f)
                     if len(fields) == 6}
        return sorted(p for p in paths if _is_openblas(p))
    except OSError:   # not Linux: the wheels' folders of the packages already imported
        paths = set()
        for name in ("numpy", "scipy"):
            module = sys.modules.get(name)
            if module is None or not getattr(module, "__file__", None):
                continue
            site = Path(module.__file__).resolve().parent.parent
            for pattern in _BUNDLE_DIRS:
                folder = site / pattern.format(name=name)
                if folder.is_dir():
                    paths |= {str(p) for p in folder.iterdir() if _is_openblas(str(p))}
        return sorted(paths)


def _open_loaded(path: str):
    """A ctypes handle on the library at path if it is already loaded, else None."""
    # RTLD_NOLOAD: never load a second OpenBLAS, only reach the one in use. Where it does
    # not exist (Windows), the folders searched are those of packages already imported.
    mode = (os.RTLD_NOLOAD | os.RTLD_LAZY) if hasattr(os, "RTLD_NOLOAD") else ctypes.DEFAULT_MODE
    try:
        return ctypes.CDLL(path, mode=mode)
    except OSError:
        return None


def _function(lib, name: str):
    for prefix in _PREFIXES:
        for suffix in _SUFFIXES:
            f = getattr(lib, f"{prefix}{name}{suffix}", None)
            if f is not None:
                return f
    return None


def _openblas_functions():
    """(path, set_num_threads, get_num_threads) of every loaded OpenBLAS."""
    found = []
    for path in _loaded_paths():
        lib = _open_loaded(path)
        if lib is None:
            continue
        set_n, get_n = _function(lib, "set_num_threads"), _function(lib, "get_num_threads")
        if set_n is not None and get_n is not None:
            set_n.argtypes, set_n.restype = [ctypes.c_int], None
            get_n.argtypes, get_n.restype = [], ctypes.c_int
            found.append((path, set_n, get_n))
    return found


def blas_threads() -> dict[str, int]:
    """{library path: threads it uses} of every OpenBLAS loaded in this process."""
    return {path: int(get_n()) for path, _, get_n in _openblas_functions()}


def set_blas_threads(n: int) -> list[str]:
    """Make OpenBLAS use n threads: every copy already loaded, and (through
    OPENBLAS_NUM_THREADS) any loaded later. Returns the paths of the libraries set
    now; empty if none is loaded, which is not an error.

    `import fqsr_ref` calls set_blas_threads(1) unless OPENBLAS_NUM_THREADS is set.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_blas_threads: n must be an integer >= 1, not {n!r}")
    os.environ["OPENBLAS_NUM_THREADS"] = str(n)
    done = []
    for path, set_n, _ in _openblas_functions():
        set_n(n)
        done.append(path)
    return done
