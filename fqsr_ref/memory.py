"""Memory: what the machine has, what a computation takes (measured), sizes as text.

Numbers from flags and files are checked against these before anything is allocated
(docs/SPEC.md 1.1).
"""
from __future__ import annotations


def available_bytes() -> int:
    """MemAvailable of /proc/meminfo (Linux), else 8 GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 8 << 30


def size_text(n: int) -> str:
    if n < 2 ** 30:
        return f"{max(1, round(n / 2 ** 20))} MiB"
    for unit in ("GiB", "TiB", "PiB"):
        n /= 2 ** (30 if unit == "GiB" else 10)
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"


def traced_peak(fn) -> int:
    """Peak bytes of the arrays fn() allocates (tracemalloc sees NumPy's), measured on
    the second of two calls, so that first-call work (compilation, caches) is not counted."""
    import tracemalloc
    fn()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        if started:
            tracemalloc.stop()
