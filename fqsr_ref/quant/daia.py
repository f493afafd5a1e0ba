"""DAIA, the data-aware interval initialisation of Eq. 4, as functional state.

For the first l iterations (warm-up, default 20) a quantizer passes its input through
unquantized (qv = v) and records max|V_i|. When l maxima are recorded, the interval
parameter is set to their arithmetic mean (Eq. 4) and from then on trains with Adam
like any other parameter.

The state is a dict of two 0-d arrays, so it goes into an .npz checkpoint as is:
    count    int64    number of recorded maxima
    max_sum  float64  sum of the recorded max|V_i| (float64 whatever the tensor dtype)
Functions return new state; they never mutate their argument.
"""
import numpy as np

DAIA_WARMUP = 20
# The interval must be positive; a tensor that was exactly zero for the whole warm-up
# (e.g. a zero-initialised conv) has mean maximum 0. 1e-8 is a normal float32 and far
# below any interval that Eq. 4 gives for a live tensor, so only that case is touched.
DAIA_MIN_INTERVAL = 1e-8


def daia_init():
    """Fresh state: dict(count=int64 0-d array 0, max_sum=float64 0-d array 0)."""
    return {"count": np.array(0, dtype=np.int64), "max_sum": np.array(0.0, dtype=np.float64)}


def _check_state(state, where):
    if not isinstance(state, dict) or set(state) != {"count", "max_sum"}:
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{where}: state must be a dict with keys count, max_sum; got {keys}")
    count, max_sum = np.asarray(state["count"]), np.asarray(state["max_sum"])
    if count.shape != () or not np.issubdtype(count.dtype, np.integer) or count < 0:
        raise ValueError(f"{where}: state count must be a non-negative integer scalar, "
                         f"got {state['count']!r}")
    if max_sum.shape != () or not np.isfinite(max_sum) or max_sum < 0:
        raise ValueError(f"{where}: state max_sum must be a finite non-negative scalar, "
                         f"got {state['max_sum']!r}")
    return int(count), float(max_sum)


def daia_observe(state, v, name="v"):
    """Record max|v| of one warm-up iteration (Eq. 4). v: float array, non-empty, finite.

    Returns the new state (count + 1, max_sum + max|v|).
    """
    where = f"daia_observe({name})"
    count, max_sum = _check_state(state, where)
    v = np.asarray(v)
    if v.size == 0 or not np.issubdtype(v.dtype, np.floating):
        raise ValueError(f"{where}: v must be a non-empty float array, got {v.shape} {v.dtype}")
    peak = float(np.max(np.abs(v)))
    if not np.isfinite(peak):
        raise ValueError(f"{where}: v contains NaN or inf (max|v| = {peak})")
    return {"count": np.array(count + 1, dtype=np.int64),
            "max_sum": np.array(max_sum + peak, dtype=np.float64)}


def daia_interval(state):
    """Eq. 4: I = (1/l) * sum_i max|V_i|, as a Python float.

    Returns max(mean, DAIA_MIN_INTERVAL) so the interval is always positive;
    ValueError if nothing was recorded.
    """
    count, max_sum = _check_state(state, "daia_interval")
    if count == 0:
        raise ValueError("daia_interval: no maxima recorded (count = 0); call daia_observe first")
    return max(max_sum / count, DAIA_MIN_INTERVAL)


def daia_active(state, warmup_iters=DAIA_WARMUP):
    """True while the quantizer is still in warm-up (count < warmup_iters)."""
    count, _ = _check_state(state, "daia_active")
    return count < warmup_iters
