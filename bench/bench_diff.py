#!/usr/bin/env python3
"""Benchmark the diff engine on the kernel object corpus.

    python3 bench/bench_diff.py [--corpus DIR] [--repeat N]

Measures (wall clock, this machine):
1. the whole corpus in one ``pykpatch diff --batch`` process (as a build runs it);
2. each case alone in-process (median per case);
3. the largest case (``unique-id-pr-1314``, 1.2 MB, 3251 sections) alone, best of N;
4. peak memory (max RSS) of the batch and of the largest case.
Reference (kpatch's C create-diff-object, same machine): 1.5 s for all 55
upstream x86_64 cases one process each, median 4.3 ms per case, 0.60 s for
unique-id-pr-1314.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pykpatch.diff import run_diff  # noqa: E402
from pykpatch.errors import PykpatchError  # noqa: E402
from pykpatch.symtab import KernelSymbolTable  # noqa: E402


def patched_of(corpus: Path, name: str, case: dict) -> Path:
    fail = corpus / f"{name}.PATCHED.FAIL.o"
    return fail if case["expect"] == "fail" and fail.exists() else corpus / f"{name}.PATCHED.o"


def one(corpus: Path, name: str, case: dict, out: Path) -> float:
    orig = corpus / f"{name}.ORIG.o"
    sizes = {k: int(v) for k, v in case["env"].items()}
    start = time.perf_counter()
    table = KernelSymbolTable.load(orig)
    try:
        run_diff(str(orig), str(patched_of(corpus, name, case)), "vmlinux", table, None, sizes, str(out))
    except PykpatchError:
        pass
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(REPO.parent / "shared/corpus/x86_64"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    corpus = Path(args.corpus)
    cases = json.loads((corpus / "cases.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        empty = work / "Module.symvers"
        empty.write_text("")
        jobs = [{"orig": str(corpus / f"{n}.ORIG.o"), "patched": str(patched_of(corpus, n, c)),
                 "output": str(work / f"{n}.o"), "report": str(work / f"{n}.json"), "env": c["env"],
                 "symtab": str(corpus / f"{n}.ORIG.o"), "symvers": str(empty)} for n, c in cases.items()]
        (work / "jobs.json").write_text(json.dumps(jobs))
        cmd = [sys.executable, "-m", "pykpatch.cli", "diff", "--batch", str(work / "jobs.json")]
        batch = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, cwd=REPO)
            batch.append(time.perf_counter() - start)
        rss_batch = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

        per_case = {n: min(one(corpus, n, c, work / "x.o") for _ in range(3)) for n, c in cases.items()}
        big = "unique-id-pr-1314"
        big_t = min(one(corpus, big, cases[big], work / "big.o") for _ in range(args.repeat))
        rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"cases: {len(cases)}")
    print(f"batch (one process, {os.cpu_count()} workers), best of {args.repeat}: {min(batch):.2f} s")
    print(f"per case in-process: median {statistics.median(per_case.values()) * 1000:.1f} ms, "
          f"sum {sum(per_case.values()):.2f} s")
    print(f"largest case {big}: {big_t:.3f} s")
    print(f"peak RSS: batch worker {rss_batch:.0f} MB, in-process run {rss_self:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
