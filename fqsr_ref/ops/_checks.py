"""Argument checks shared by the float ops: one diagnostic ValueError per mistake."""
import numpy as np

FLOATS = (np.float32, np.float64)


def describe(a):
    """'float32 (2, 3)' for an array, the type name for anything else."""
    if isinstance(a, np.ndarray):
        return f"{a.dtype} {a.shape}"
    return f"{type(a).__name__} {np.shape(a) if np.ndim(a) else ''}".rstrip()


def check_float(op, **arrays):
    """All named arrays are ndarrays of one float dtype (float32 or float64); returns it.

    Mixed float dtypes are refused rather than cast: a float64 tensor in a float32
    graph is a bug upstream, not something to paper over.
    """
    bad = {k: a for k, a in arrays.items()
           if not isinstance(a, np.ndarray) or a.dtype.type not in FLOATS}
    dtypes = {a.dtype for a in arrays.values() if isinstance(a, np.ndarray)}
    if bad or len(dtypes) > 1:
        got = ", ".join(f"{k} {describe(a)}" for k, a in arrays.items())
        raise ValueError(f"{op}: expected float32 or float64 arrays of one dtype, got {got}")
    return dtypes.pop()


def check_rank(op, name, a, ndim, layout):
    """a.ndim == ndim (or ndim is a tuple of allowed ranks); layout names the axes."""
    allowed = ndim if isinstance(ndim, tuple) else (ndim,)
    if a.ndim not in allowed:
        raise ValueError(f"{op}: {name} must be {layout}, got shape {a.shape}")


def check_same_shape(op, **arrays):
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) > 1:
        got = ", ".join(f"{k} {a.shape}" for k, a in arrays.items())
        raise ValueError(f"{op}: shapes must match, got {got}")
