"""DAIA (Eq. 4): the interval starts at the mean of the warm-up maxima of |V|."""
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fqsr_ref.quant import (DAIA_MIN_INTERVAL, DAIA_WARMUP, daia_active, daia_init, daia_interval,
                            daia_observe)

tensors = arrays(st.sampled_from([np.float32, np.float64]), st.integers(1, 20),
                 elements={"min_value": -1e6, "max_value": 1e6, "allow_nan": False})


@given(st.lists(tensors, min_size=1, max_size=25))
def test_interval_is_the_mean_of_the_recorded_maxima(vs):
    state = daia_init()
    for v in vs:
        state = daia_observe(state, v)
    assert state["count"] == len(vs)
    mean = np.mean([float(np.max(np.abs(v))) for v in vs])
    assert daia_interval(state) == pytest.approx(max(mean, DAIA_MIN_INTERVAL), rel=1e-12)


def test_warm_up_protocol():
    # The model's loop: while active, pass through and observe; the observation that
    # makes it inactive is the one at which the interval is set (Eq. 4, l = 20).
    rng = np.random.default_rng(0)
    state, maxima, set_at = daia_init(), [], None
    for it in range(30):
        if daia_active(state):
            v = rng.normal(size=(4, 5)) * (it + 1)
            maxima.append(np.max(np.abs(v)))
            state = daia_observe(state, v)
            if not daia_active(state):
                set_at, interval = it, daia_interval(state)
    assert DAIA_WARMUP == 20 and set_at == 19 and len(maxima) == 20
    assert interval == pytest.approx(np.mean(maxima), rel=1e-14)
    assert daia_active(daia_init(), warmup_iters=1) and not daia_active(daia_init(), 0)


def test_all_zero_tensor_gets_the_positive_floor():
    state = daia_init()
    for _ in range(3):
        state = daia_observe(state, np.zeros((2, 2), np.float32))
    assert daia_interval(state) == DAIA_MIN_INTERVAL > 0
    assert np.float32(DAIA_MIN_INTERVAL) > 0


def test_state_is_functional_and_fits_an_npz():
    state = daia_init()
    new = daia_observe(state, np.array([-3.0, 2.0]))
    assert state["count"] == 0 and state["max_sum"] == 0      # not mutated
    assert new["count"].dtype == np.int64 and new["max_sum"].dtype == np.float64
    buf = io.BytesIO()
    np.savez(buf, **{"site.daia_" + k: a for k, a in new.items()})
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        loaded = {k: z["site.daia_" + k] for k in ("count", "max_sum")}
    assert daia_interval(loaded) == 3.0
    assert daia_interval(daia_observe(loaded, np.array([5.0]))) == 4.0


def test_errors():
    with pytest.raises(ValueError, match="no maxima recorded"):
        daia_interval(daia_init())
    with pytest.raises(ValueError, match=r"daia_observe\(conv1.out\): v contains NaN"):
        daia_observe(daia_init(), np.array([1.0, np.nan]), "conv1.out")
    with pytest.raises(ValueError, match="non-empty float array"):
        daia_observe(daia_init(), np.zeros(0))
    with pytest.raises(ValueError, match="keys count, max_sum"):
        daia_observe({"count": 0}, np.ones(2))
    with pytest.raises(ValueError, match="count must be a non-negative integer"):
        daia_interval({"count": np.array(-1), "max_sum": np.array(1.0)})
