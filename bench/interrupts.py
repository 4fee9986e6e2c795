"""Interrupt kpatch-build at random moments; the tree must always come back exactly as it was.

    python3 bench/interrupts.py [--runs 60] [--seed 1] [--tree DIR] [--keep]

On a copy of the lab tree (``cp -a``, made once into a scratch directory,
then brought up to date for its new path with one plain ``make`` of the
patched object: objtool's .cmd files hold absolute paths), each round:

1. starts ``kpatch-build`` on the one-file cmdline patch in a process group
   of its own, waits a random time between 0 and the duration of a normal
   run (measured first), and sends SIGINT, SIGTERM or SIGKILL to the whole
   group (as a terminal's Ctrl-C, ``kill``, or the OOM killer would);
2. after SIGINT/SIGTERM: the tree must be identical to before (every file's
   size and mtime, the hash of every file kpatch-build touches:
   ``tests/lab/tree_state.py``);
3. runs kpatch-build normally (after SIGKILL this run repairs the tree
   first): it must succeed, leave the tree identical, and build the same
   module as the reference run, byte for byte.

The stage a signal hit is the last progress line kpatch-build printed.
Prints a table: runs per signal and stage, and failures (must be 0).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from lab.tree_state import differences, tree_state  # noqa: E402

from pykpatch.lab import ensure_kernel  # noqa: E402

PATCH = HERE.parent / "tests" / "integration" / "patches" / "01-cmdline-string.patch"
OBJECT, SOURCE = "fs/proc/cmdline.o", "fs/proc/cmdline.c"
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}
STAGES = (("patched build: tree put back", "restore"), ("patched build:", "patched"), ("original objects", "originals"),
          ("checking 1 patch", "patches"), ("original build", "orig"), ("diff", "diff"), ("building", "module"),
          ("done", "done"), ("checking the kernel", "check"))


def kpatch_build(tree: Path, vmlinux: Path, cache: Path, out: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "pykpatch.cli", "build", "-s", str(tree), "-v", str(vmlinux),
           "-n", "livepatch-bench", "-o", str(out), str(PATCH)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CACHEDIR": str(cache)}, start_new_session=True)


def stage_of(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if re.match(r"^\[\s*[\d.]+s\]", ln)]
    if not lines:
        return "start"
    last = lines[-1]
    for needle, stage in STAGES:
        if needle in last:
            return stage
    return "other"


def prepare_copy(source: Path, dest: Path) -> None:
    print(f"copying {source} to {dest} ...", flush=True)
    subprocess.run(["cp", "-a", str(source), str(dest)], check=True)
    subprocess.run(["make", "-C", str(dest), "-j2", OBJECT], check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tree", type=Path, help="use (or create) this copy of the lab tree")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    kernel = ensure_kernel(progress=lambda m: print(f"lab: {m}", flush=True))
    scratch = Path(tempfile.mkdtemp(prefix="pykpatch-interrupts-"))
    tree = args.tree or scratch / "tree"
    if not tree.exists():
        prepare_copy(kernel.tree, tree)
    cache = scratch / "cache"
    before = tree_state(tree, [OBJECT], [SOURCE])

    started = time.monotonic()
    ref = kpatch_build(tree, kernel.vmlinux, cache, scratch / "ref")
    _, err = ref.communicate()
    normal_seconds = time.monotonic() - started
    if ref.returncode != 0:
        print(err[-3000:])
        return 1
    module = (scratch / "ref" / "livepatch-bench.ko").read_bytes()
    print(f"reference run: {normal_seconds:.1f} s", flush=True)

    table: collections.Counter[tuple[str, str]] = collections.Counter()
    failures: list[str] = []
    for i in range(args.runs):
        name = rng.choice(list(SIGNALS))
        delay = rng.uniform(0, normal_seconds)
        proc = kpatch_build(tree, kernel.vmlinux, cache, scratch / "out")
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, SIGNALS[name])
        _, err = proc.communicate()
        stage = stage_of(err) if proc.returncode != 0 else "finished"
        table[(name, stage)] += 1
        problems = []
        if name != "SIGKILL" and proc.returncode not in (0, 130):
            problems.append(f"rc {proc.returncode}: {err.strip().splitlines()[-1:]}")
        if "Traceback" in err:
            problems.append("traceback")
        if name != "SIGKILL":
            problems += differences(before, tree_state(tree, [OBJECT], [SOURCE]))[:5]
        again = kpatch_build(tree, kernel.vmlinux, cache, scratch / "again")
        _, err2 = again.communicate()
        if again.returncode != 0:
            problems.append(f"next run rc {again.returncode}: {err2.strip().splitlines()[-2:]}")
        elif (scratch / "again" / "livepatch-bench.ko").read_bytes() != module:
            problems.append("next run built a different module")
        problems += [f"after next run: {d}" for d in differences(before, tree_state(tree, [OBJECT], [SOURCE]))[:5]]
        verdict = "ok" if not problems else "FAIL " + "; ".join(problems)
        print(f"[{i + 1:3d}/{args.runs}] {name:7s} after {delay:5.1f} s in {stage:10s} "
              f"rc {proc.returncode:4d}: {verdict}",
              flush=True)
        if problems:
            failures.append(f"run {i + 1} ({name} in {stage}): {verdict}")

    print("\nruns per signal and stage:")
    stages = sorted({s for _, s in table})
    print(f"{'':8s}" + "".join(f"{s:>11s}" for s in stages) + f"{'total':>8s}")
    for name in SIGNALS:
        row = [table[(name, s)] for s in stages]
        print(f"{name:8s}" + "".join(f"{n:11d}" for n in row) + f"{sum(row):8d}")
    print(f"\nfailures: {len(failures)}")
    for f in failures:
        print(f"  {f}")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
