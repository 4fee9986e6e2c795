"""Time kpatch-build on the lab kernel: the first run (original build) and runs with the cache.

    python3 bench/bench_kpatch_build.py           # cached runs on the lab tree (+ the recorded first run)
    python3 bench/bench_kpatch_build.py --cold    # also a real first run, on a scratch lab tree (~20 min on 2 cores)

What "first run" means: kpatch-build on a kernel tree that has been built
the ordinary way (as the lab builds it, as a distribution builds its
kernel) but never with kpatch's flags, and an empty CACHEDIR.  Its
'orig' stage then recompiles every object of vmlinux and the modules with
``-ffunction-sections -fdata-sections`` (kbuild sees the new flags in every
.cmd file); nothing is ``touch``ed to force it.  Later runs find the
stamp of that build in CACHEDIR and only rebuild the objects the patch
reaches.

Without --cold the first-run figure is the one recorded when the lab
tree's cached original build was made (CACHEDIR/original-build.json,
"seconds": the orig stage alone), and /tmp/kb/run1.log's total if that log
exists.  With --cold, a fresh lab kernel is built into a scratch cache
(unpack, config, plain build: the state described above, not timed), then
kpatch-build runs on it twice with a scratch CACHEDIR: first run, then a
cached run.  The lab tree and its cache are never touched by --cold.

The cached runs use the acceptance suite's patches: a one-file change
(01-cmdline-string) and a header change that reaches 36 objects
(11-header-inline).  Stage timings come from ``kpatch-build -d``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pykpatch.lab import ensure_kernel

ROOT = Path(__file__).resolve().parents[1]
PATCHES = ROOT / "tests" / "integration" / "patches"
CACHEDIR = Path(os.environ.get("PYKPATCH_KPATCH_CACHEDIR", str(Path.home() / ".cache/pykpatch/kpatch-lab")))
STAGES = ("check", "patches", "orig", "patched", "diff", "module")
UPSTREAM = "upstream kpatch-build, same kernel: first run 263 s, later runs 30-34 s"


def _say(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def kpatch_build(tree: Path, vmlinux: Path, cachedir: Path, patch: Path, outdir: Path, jobs: int) -> dict:
    """One kpatch-build -d run; returns wall time and stage timings."""
    cmd = [sys.executable, "-m", "pykpatch.cli", "build", "-d", "-s", str(tree), "-v", str(vmlinux), "-j", str(jobs),
           "-n", "bench", "-o", str(outdir), str(patch)]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CACHEDIR": str(cachedir)})
    wall = time.monotonic() - started
    kept = re.search(r"scratch directory kept: (\S+)", proc.stderr)
    if kept:  # -d keeps the scratch directory; the timings are all we want from it
        shutil.rmtree(kept.group(1), ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"kpatch-build failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    m = re.search(r"^timings: (\{.*\})$", proc.stderr, re.M)
    timings = ast.literal_eval(m.group(1)) if m else {}
    compiled = re.findall(r"patched build: (\d+) object\(s\) to rebuild", proc.stderr)
    return {"wall": wall, "timings": timings, "objects": int(compiled[0]) if compiled else None}


def show(label: str, run: dict) -> None:
    stages = "  ".join(f"{s} {run['timings'].get(s, 0):6.1f}" for s in STAGES)
    objs = f" ({run['objects']} objects rebuilt)" if run.get("objects") else ""
    print(f"{label:<34} {run['wall']:7.1f} s   [{stages}]{objs}")


def recorded_first_run() -> None:
    stamp = CACHEDIR / "original-build.json"
    try:
        data = json.loads(stamp.read_text())
        print(f"{'first run, orig stage (recorded)':<34} {data['seconds']:7.1f} s   [{stamp}, {data['finished']}]")
    except (OSError, ValueError, KeyError):
        print(f"first run: no recorded original build in {stamp} (run the suite or kpatch-build once, or --cold)")
    log = Path("/tmp/kb/run1.log")
    if log.exists():
        text = log.read_text()
        orig = re.search(r"^\[\s*([\d.]+)s\] original build: done, (\d+) files", text, re.M)
        done = re.search(r"^\[\s*([\d.]+)s\] done: ", text, re.M)
        if orig and done:
            print(f"{'first run, whole (run1.log)':<34} {float(done.group(1)):7.1f} s   "
                  f"[orig {float(orig.group(1)):.1f} s, {orig.group(2)} files compiled; {log}]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cold", action="store_true", help="also time a real first run on a scratch lab tree")
    ap.add_argument("--keep-cold", action="store_true", help="keep the scratch lab tree of --cold")
    ap.add_argument("--jobs", type=int, default=max(1, len(os.sched_getaffinity(0))))
    ap.add_argument("--repeat", type=int, default=1, help="cached runs of each patch (default 1)")
    args = ap.parse_args(argv)

    out = Path(tempfile.mkdtemp(prefix="pykpatch-bench-out-"))
    try:
        if args.cold:
            scratch = Path(tempfile.mkdtemp(prefix="pykpatch-bench-cold-"))
            try:
                _say(f"building a fresh lab kernel (plain flags) in {scratch}: not timed")
                kb = ensure_kernel(root=scratch / "lab", jobs=args.jobs, progress=_say)
                cache = scratch / "kpatch-cache"
                _say("first run: kpatch-build with an empty CACHEDIR")
                show("first run (--cold)", kpatch_build(kb.tree, kb.vmlinux, cache, PATCHES / "01-cmdline-string.patch",
                                                        out, args.jobs))
                show("second run (--cold tree, cached)",
                     kpatch_build(kb.tree, kb.vmlinux, cache, PATCHES / "01-cmdline-string.patch", out, args.jobs))
            finally:
                if not args.keep_cold:
                    shutil.rmtree(scratch, ignore_errors=True)
        else:
            recorded_first_run()

        kb = ensure_kernel(jobs=args.jobs, progress=_say)
        for name in ("01-cmdline-string", "11-header-inline"):
            for i in range(args.repeat):
                run = kpatch_build(kb.tree, kb.vmlinux, CACHEDIR, PATCHES / f"{name}.patch", out, args.jobs)
                if run["timings"].get("orig", 0) > 60:
                    _say("note: the original build was not cached: that was a first run")
                show(f"cached run: {name}" + (f" #{i + 1}" if args.repeat > 1 else ""), run)
        print(UPSTREAM)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
