"""Shared helpers of the benchmark scripts."""

from __future__ import annotations

import resource
import subprocess
import time


def best_of(runs: int, func) -> tuple[float, object]:
    """Best wall time of ``runs`` calls (the least disturbed by other load), and the last result."""
    best, result = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def timed_children(commands: list[list[str]], **kwargs) -> tuple[float, float]:
    """Wall time and CPU time (user + sys of the child processes) of running ``commands`` one after another."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    for cmd in commands:
        subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, **kwargs)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def best_children(runs: int, commands: list[list[str]], **kwargs) -> tuple[float, float]:
    """Best wall time and best CPU time over ``runs`` runs of ``commands`` (each the least disturbed)."""
    figures = [timed_children(commands, **kwargs) for _ in range(runs)]
    return min(f[0] for f in figures), min(f[1] for f in figures)
