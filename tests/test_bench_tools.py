"""The benchmark scripts' thread check: a figure claimed for n threads must not have used more.

(tools/benchmark.py and tools/compare_pytorch.py time every case with min_times and refuse
their figures through check_threads; issue 28 found PyTorch's side on two threads.)
"""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture(scope="module")
def benchmark():
    sys.path.insert(0, str(TOOLS))
    try:
        spec = importlib.util.spec_from_file_location("benchmark_under_test", TOOLS / "benchmark.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(TOOLS))


def test_check_threads_names_a_case_that_used_more_cores(benchmark):
    times = {"torch": (0.57, 1.136), "plain": (0.59, 0.58)}   # issue 28's torch figure
    with pytest.raises(RuntimeError, match=r"not on 1 thread\(s\): torch CPU / wall 1.99$"):
        benchmark.check_threads(times, 1)
    benchmark.check_threads(times, 2)                  # two threads claimed: both fine
    benchmark.check_threads({"shared": (1.0, 0.4)}, 1)  # a core taken by others: not an error


def test_min_times_measures_wall_and_cpu_of_the_fastest_round(benchmark):
    a = np.random.default_rng(0).random((200, 200))
    calls = []
    times = benchmark.min_times({"sum": lambda: calls.append(float((a * a).sum()))}, 3)
    wall, cpu = times["sum"]
    assert len(calls) == 4 and 0 < wall and 0 <= cpu   # warm-up + 3 rounds
    benchmark.check_threads(times, 1)                     # elementwise NumPy: one thread
    assert benchmark.min_seconds({"sum": lambda: None}, 2)["sum"] >= 0
