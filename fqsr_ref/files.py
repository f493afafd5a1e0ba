"""Writing files so that nothing is lost: a temporary file beside the target, flushed to
disk, given the mode the umask asks for, then renamed over the target in one step.

A killed or failing writer (a full disk, Ctrl-C) leaves the old file or the new one,
never half of one, and no temporary behind.
"""
from __future__ import annotations

import os
import tempfile


def temporary_prefix(path) -> str:
    """Name prefix of the temporaries of `path` (so that stale ones can be found)."""
    return "." + os.path.basename(path) + ".tmp-"


def umask_mode(base: int = 0o666) -> int:
    """base less the process's umask: the mode open() (0o666) or mkdir (0o777) would give."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def write_atomic(path, write, suffix: str = "") -> None:
    """Call write(f) on a binary file that becomes `path` only once it is complete.

    OSError names `path` (not the temporary) when the folder cannot take the file."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=suffix, dir=folder)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())   # mkstemp makes 0600 files whatever the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
