"""Float64 centred finite-difference gradient checks, shared by the op tests.

Every analytic gradient is checked against the centred difference of the scalar
    L(x) = sum(f(x) * dout)
for a fixed random `dout`, element by element, so a wrong index anywhere shows.
"""
import numpy as np


def numeric_grad(loss, x, h=1e-6):
    """Centred differences of the scalar function loss() w.r.t. array x (mutated and restored)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = loss()
        flat[i] = old - h
        down = loss()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


def rel_error(a, b):
    """max |a - b| / max(|a|, |b|, 1e-8), elementwise-max: the figure the tests bound."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-8)
    return float(np.max(np.abs(a - b) / denom)) if a.size else 0.0


def assert_grad(name, analytic, loss, x, tol=1e-6, h=1e-6, atol=1e-9):
    """Assert the analytic gradient of loss() w.r.t. x matches centred differences.

    Elements whose both values are below `atol` in magnitude count as equal: their
    relative error is rounding noise of the difference quotient.
    """
    numeric = numeric_grad(loss, x, h)
    assert analytic.shape == x.shape, f"{name}: gradient shape {analytic.shape} != {x.shape}"
    # NaN would compare as "not >= tol" and pass: refuse it outright.
    assert np.all(np.isfinite(numeric)) and np.all(np.isfinite(analytic)), \
        f"{name}: non-finite gradient (step h = {h!r})"
    small = (np.abs(analytic) < atol) & (np.abs(numeric) < atol)
    err = rel_error(np.where(small, 0, analytic), np.where(small, 0, numeric))
    if err >= tol:
        idx = np.unravel_index(np.argmax(np.abs(analytic - numeric)), x.shape)
        raise AssertionError(
            f"{name}: relative error {err:.3e} >= {tol:g}; worst at {idx}: "
            f"analytic {analytic[idx]!r}, numeric {numeric[idx]!r}")
