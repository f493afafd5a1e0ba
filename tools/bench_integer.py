"""Superseded by tools/benchmark.py, issue 13's one benchmark script (this name runs it).

    python tools/bench_integer.py [--quick]   ==   python tools/benchmark.py [--quick]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark  # noqa: E402  (sets one BLAS thread before numpy is imported)

if __name__ == "__main__":
    benchmark.main()
