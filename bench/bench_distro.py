"""Time kpatch-build on Debian's own kernel from its packages: never-built tree to .ko, then a warm run.

    python3 bench/bench_distro.py [--patch FILE] [--flavour amd64] [--full]

- **cold**: an empty CACHEDIR, so the sources are unpacked, configured and
  prepared, and the objects the patch reaches compiled (the packages
  themselves come from the distribution cache, ``PYKPATCH_DISTRO_CACHE``,
  default ``~/.cache/pykpatch/distro/debian``: their download is timed
  separately, once, and not counted);
- **warm**: the same command again (prepared tree cached);
- ``--full``: the full-build route on the same config for comparison: a
  real ``make vmlinux`` of the prepared tree (timed), and the modules
  estimated from the number of compile units ``make -n modules`` lists
  times the per-unit time measured on vmlinux.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pykpatch.distro.debian import DebianProvider, release_built_from
from pykpatch.lab.debian import debian_cache_root

HERE = Path(__file__).resolve().parent
PATCH = HERE.parent / "tests" / "integration" / "patches" / "01-cmdline-string.patch"


def kpatch_build(release: str, cachedir: Path, distro_cache: Path, out: Path, patch: Path) -> tuple[float, str]:
    env = {**os.environ, "CACHEDIR": str(cachedir), "PYKPATCH_DISTRO_CACHE": str(distro_cache)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pykpatch.cli", "build", "--kernel", release, "-o", str(out),
                           str(patch)], capture_output=True, text=True, env=env)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"kpatch-build failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stderr


def stages(stderr: str) -> str:
    m = re.search(r"done: \S+ \((.*)\)", stderr)
    return m.group(1) if m else "?"


def full_build(tree: Path, jobs: int) -> None:
    print("full-build route: make vmlinux (measured) ...", flush=True)
    work = Path(tempfile.mkdtemp(prefix="pykpatch-full-"))
    copy = work / "tree"
    subprocess.run(["cp", "-a", str(tree), str(copy)], check=True)
    count = subprocess.run(["make", "-C", str(copy), "-n", "vmlinux"], capture_output=True, text=True).stdout
    vmlinux_units = sum(1 for ln in count.splitlines() if " -c -o " in ln and not ln.lstrip().startswith("printf"))
    started = time.monotonic()
    subprocess.run(["make", "-C", str(copy), f"-j{jobs}", "vmlinux"], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    listing = subprocess.run(["make", "-C", str(copy), "-n", "modules"], capture_output=True, text=True).stdout
    module_units = sum(1 for ln in listing.splitlines() if " -c -o " in ln and not ln.lstrip().startswith("printf"))
    per_unit = seconds / max(1, vmlinux_units)
    print(f"  vmlinux: {vmlinux_units} compile units in {seconds / 60:.1f} min on {jobs} jobs "
          f"({per_unit:.2f} s a unit)")
    print(f"  modules: {module_units} compile units -> about {module_units * per_unit / 3600:.1f} h more at that rate "
          "(plus ~4,000 module links)")
    shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patch", type=Path, default=PATCH)
    ap.add_argument("--flavour", default="amd64")
    ap.add_argument("--series", default="6.1", help="the linux-source series: 6.1 (Debian 12) or 6.12 (Debian 13)")
    ap.add_argument("--full", action="store_true", help="also measure the full-build route (vmlinux: ~20 min)")
    args = ap.parse_args()
    distro_cache = Path(os.environ.get("PYKPATCH_DISTRO_CACHE") or debian_cache_root())
    release = release_built_from(f"linux-source-{args.series}", args.flavour)
    started = time.monotonic()
    DebianProvider(distro_cache).artifacts(release, lambda m: print(f"  {m}", flush=True))
    print(f"packages of {release}: {time.monotonic() - started:.1f} s (download/unpack, not counted below)")
    work = Path(tempfile.mkdtemp(prefix="pykpatch-bench-distro-"))
    try:
        cold, err = kpatch_build(release, work / "cache", distro_cache, work / "out", args.patch)
        print(f"cold (never-built tree -> .ko): {cold:.1f} s  [{stages(err)}]")
        warm, err = kpatch_build(release, work / "cache", distro_cache, work / "out", args.patch)
        print(f"warm (same tree, prepared):     {warm:.1f} s  [{stages(err)}]")
        if args.full:
            trees = [p for p in (work / "cache" / "sources").glob("*/*") if (p / "Makefile").is_file()]
            full_build(trees[0], len(os.sched_getaffinity(0)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
