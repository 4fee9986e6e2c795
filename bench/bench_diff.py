#!/usr/bin/env python3
"""Benchmark the diff engine on the kernel object corpora.

    python3 bench/bench_diff.py [--corpus DIR] [--arch ARCH|all] [--repeat N] [--reference CREATE_DIFF_OBJECT]

Measures (this machine), per architecture corpus (``--arch all``: every
folder of the corpus root that has a ``cases.json``):
1. all cases in one ``pykpatch diff --batch`` process: wall time and CPU
   time (user + sys of the process and its workers), interpreter start-up
   included;
2. all cases one after another in this process, as ``kpatch-build`` runs
   the diff (in its own process, no interpreter start-up): CPU time;
3. with ``--reference``, kpatch's C create-diff-object run once per case,
   one after another (as kpatch's kpatch-build runs it): wall and CPU time;
and for x86_64 also each case alone in-process (median), the largest case
(``unique-id-pr-1314``, 1.2 MB, 3251 sections) alone, and peak memory.
Figures are the best of N runs (the least disturbed by other load).  The
package's bytecode is compiled first, as an installed pykpatch has it: with
``PYTHONDONTWRITEBYTECODE`` set, every batch would otherwise pay for
compiling its modules.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.benchutil import best_children  # noqa: E402
from pykpatch.diff import run_diff  # noqa: E402
from pykpatch.errors import PykpatchError  # noqa: E402
from pykpatch.symtab import KernelSymbolTable  # noqa: E402

LOCALENTRY = re.compile(r"\s+\[<localentry>: \d+\]")


def patched_of(corpus: Path, name: str, case: dict) -> Path:
    fail = corpus / f"{name}.PATCHED.FAIL.o"
    return fail if case["expect"] == "fail" and fail.exists() else corpus / f"{name}.PATCHED.o"


def runnable(corpus: Path) -> dict[str, dict]:
    """The cases whose inputs are all there (the ppc64le corpus lacks one patched object)."""
    cases = json.loads((corpus / "cases.json").read_text())
    return {n: c for n, c in cases.items() if patched_of(corpus, n, c).exists()}


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


def in_process_cpu(corpus: Path, cases: dict, work: Path, repeat: int) -> float:
    """Best CPU time (user + sys of this process) of one pass over every case, after a warm-up pass."""
    def one_pass() -> float:
        before = resource.getrusage(resource.RUSAGE_SELF)
        for n, c in cases.items():
            one(corpus, n, c, work / "inproc.o")
        after = resource.getrusage(resource.RUSAGE_SELF)
        return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    one_pass()
    return min(one_pass() for _ in range(repeat))


def batch_figures(corpus: Path, cases: dict, work: Path, repeat: int) -> tuple[float, float]:
    empty = work / "Module.symvers"
    empty.write_text("")
    jobs = [{"orig": str(corpus / f"{n}.ORIG.o"), "patched": str(patched_of(corpus, n, c)),
             "output": str(work / f"{n}.o"), "report": str(work / f"{n}.json"), "env": c["env"],
             "symtab": str(corpus / f"{n}.ORIG.o"), "symvers": str(empty)} for n, c in cases.items()]
    (work / "jobs.json").write_text(json.dumps(jobs))
    cmd = [sys.executable, "-m", "pykpatch.cli", "diff", "--batch", str(work / "jobs.json")]
    return best_children(repeat, [cmd], cwd=REPO)


def reference_figures(tool: str, corpus: Path, cases: dict, work: Path, repeat: int) -> tuple[float, float]:
    """create-diff-object once per case, with kpatch-build's readelf symbol dump (localentry marks dropped)."""
    import subprocess

    empty = work / "Module.symvers"
    empty.write_text("")
    commands = []
    for n, c in cases.items():
        orig = corpus / f"{n}.ORIG.o"
        dump = subprocess.run(["readelf", "-s", "--wide", str(orig)], capture_output=True, text=True).stdout
        symtab = work / f"{n}.symtab"
        symtab.write_text(LOCALENTRY.sub("", dump))
        env = " ".join(f"{k}={v}" for k, v in c["env"].items())
        commands.append(["env", *env.split(), tool, str(orig), str(patched_of(corpus, n, c)), "vmlinux", str(symtab),
                         str(empty), "livepatch_bench", str(work / f"{n}.ref.o")])
    return best_children(repeat, commands)


def x86_extras(corpus: Path, cases: dict, work: Path, repeat: int) -> None:
    per_case = {n: min(one(corpus, n, c, work / "x.o") for _ in range(3)) for n, c in cases.items()}
    big = "unique-id-pr-1314"
    big_t = min(one(corpus, big, cases[big], work / "big.o") for _ in range(repeat))
    print(f"  per case in-process: median {statistics.median(per_case.values()) * 1000:.1f} ms, "
          f"sum {sum(per_case.values()):.2f} s")
    print(f"  largest case {big}: {big_t:.3f} s")
    print(f"  peak RSS: batch worker {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB, "
          f"in-process run {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(REPO.parent / "shared/corpus"),
                    help="the corpus root (holding ARCH/ folders) or one ARCH folder")
    ap.add_argument("--arch", default="x86_64", help="an arch folder of the corpus root, or 'all'")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--reference", help="kpatch's create-diff-object, to time it on the same cases")
    args = ap.parse_args()
    root = Path(args.corpus)
    if (root / "cases.json").is_file():
        corpora = [root]
    elif args.arch == "all":
        corpora = sorted(p for p in root.iterdir() if (p / "cases.json").is_file())
    else:
        corpora = [root / args.arch]
    compileall.compile_dir(str(REPO / "pykpatch"), quiet=1)
    print(f"{os.cpu_count()} CPUs, best of {args.repeat}")
    for corpus in corpora:
        cases = runnable(corpus)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            wall, cpu = batch_figures(corpus, cases, work, args.repeat)
            inproc = in_process_cpu(corpus, cases, work, args.repeat)
            print(f"{corpus.name}: {len(cases)} cases, pykpatch batch: wall {wall:.2f} s, CPU {cpu:.2f} s; "
                  f"in-process (as kpatch-build runs it): CPU {inproc:.2f} s")
            if args.reference:
                rwall, rcpu = reference_figures(args.reference, corpus, cases, work, args.repeat)
                print(f"  create-diff-object, one process per case: wall {rwall:.2f} s, CPU {rcpu:.2f} s "
                      f"(pykpatch CPU / C CPU: batch {cpu / rcpu:.2f}, in-process {inproc / rcpu:.2f})")
            if corpus.name == "x86_64" and "unique-id-pr-1314" in cases:
                x86_extras(corpus, cases, work, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
