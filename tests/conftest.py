"""Shared test set-up: hypothesis profiles.

The "ci" profile (the default) is derandomized and has no deadline, because the
first call of a Numba kernel compiles it and would blow any per-example deadline.
Set HYPOTHESIS_PROFILE=dev for random exploration while developing.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=60,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
