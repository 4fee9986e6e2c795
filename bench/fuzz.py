#!/usr/bin/env python3
"""Fuzz the ELF reader/writer and the diff engine with mutated corpus objects.

    python3 bench/fuzz.py [--corpus DIR] [--elf N] [--diff N] [--seed S] [--time-limit SECONDS]

The properties are those of the test suite (``tests/fuzz_cases.py``), run
on many more cases: ``--elf`` damaged objects read, written and read again,
``--diff`` damaged pairs diffed (the patched object damaged, the original,
or both) and every output checked by the independent oracle.  Each case has
its own random generator (seeded with ``SEED:kind:N``), so a failure prints
what reproduces it.  Prints the count of each outcome; crashes (a
traceback, a typed error admitting a bug, an invalid output) and hangs
(no result within the per-case time limit) must both be 0: the exit
status is 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import elf_mutations as mut  # noqa: E402
from fuzz_cases import (  # noqa: E402
    DIFF_MUTATORS,
    ELF_MUTATORS,
    ELF_SEEDS,
    CaseTimeout,
    check_diff,
    check_elf,
    damage,
    load_diff_pairs,
    time_limit,
)


def run_case(kind: str, index: int, args, seeds: list[bytes], pairs, workdir: Path) -> str:
    """One case; returns its outcome label ("crash: ..." and "hang" are failures)."""
    d = mut.RandomDraw(random.Random(f"{args.seed}:{kind}:{index}"))
    try:
        with time_limit(args.time_limit):
            if kind == "elf":
                return check_elf(damage(d.pick(seeds), d, ELF_MUTATORS))
            pair = d.pick(pairs)
            which = d.pick(("patched", "patched", "patched", "orig", "both"))
            orig = damage(pair.orig, d, DIFF_MUTATORS) if which in ("orig", "both") else pair.orig
            patched = damage(pair.patched, d, DIFF_MUTATORS) if which in ("patched", "both") else pair.patched
            return check_diff(pair, orig, patched, workdir)
    except CaseTimeout:
        return "hang"
    except AssertionError as err:
        return f"crash: {err}"
    except Exception as err:
        return f"crash: {type(err).__name__}: {err}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(REPO.parent / "shared/corpus/x86_64"))
    ap.add_argument("--elf", type=int, default=4000, help="ELF reader/writer cases")
    ap.add_argument("--diff", type=int, default=10000, help="diff cases")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--time-limit", type=float, default=20.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--show", type=int, default=10, help="failures to print in full")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    seeds = [(corpus / name).read_bytes() for name in ELF_SEEDS]
    pairs = load_diff_pairs(corpus, json.loads((corpus / "cases.json").read_text()))

    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, count in (("elf", args.elf), ("diff", args.diff)):
            outcomes: Counter[str] = Counter()
            start = time.perf_counter()
            slowest = 0.0
            for i in range(count):
                t0 = time.perf_counter()
                outcome = run_case(kind, i, args, seeds, pairs, Path(tmp))
                slowest = max(slowest, time.perf_counter() - t0)
                if outcome.startswith("crash") or outcome == "hang":
                    failures.append(f"{kind} case {i} (--seed {args.seed}): {outcome}")
                    outcome = outcome.split(":")[0]
                outcomes[outcome] += 1
            elapsed = time.perf_counter() - start
            print(f"{kind}: {count} cases in {elapsed:.1f} s ({elapsed / max(count, 1) * 1000:.1f} ms each, "
                  f"slowest {slowest:.2f} s)")
            for outcome, n in sorted(outcomes.items(), key=lambda kv: -kv[1]):
                print(f"  {n:6d}  {outcome}")
    crashes = sum(1 for f in failures if ": crash" in f)
    hangs = len(failures) - crashes
    print(f"crashes: {crashes}, hangs: {hangs}")
    for line in failures[:args.show]:
        print("  " + line[:400])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
