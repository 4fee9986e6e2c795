"""Shared helpers of the benchmark scripts."""

from __future__ import annotations

import time


def best_of(runs: int, func) -> tuple[float, object]:
    """Best wall time of ``runs`` calls (the least disturbed by other load), and the last result."""
    best, result = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result
