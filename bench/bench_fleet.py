"""One patch for several Debian kernels: ``kpatch-build --kernels`` against one run per kernel.

    python3 bench/bench_fleet.py [--series 6.1] [--flavours amd64,cloud-amd64,rt-amd64] [--patch FILE]

Both sides start from never-built trees (an empty CACHEDIR each); the
packages come from the distribution cache (``PYKPATCH_DISTRO_CACHE``,
default ``~/.cache/pykpatch/distro/debian``), fetched once beforehand and not
timed.  Wall and CPU time (user+sys of the whole process tree, from
``getrusage(RUSAGE_CHILDREN)``) are printed for each side.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds of the whole process tree, stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", default="6.1")
    parser.add_argument("--flavours", default="amd64,cloud-amd64,rt-amd64")
    parser.add_argument("--patch", type=Path, default=PATCH)
    args = parser.parse_args()
    distro_cache = Path(os.environ.get("PYKPATCH_DISTRO_CACHE") or debian_cache_root())
    releases = [release_built_from(f"linux-source-{args.series}", f) for f in args.flavours.split(",")]
    for release in releases:      # downloads are not what is measured
        DebianProvider(distro_cache).artifacts(release, lambda m: print(f"  {m}", flush=True))
    base = [sys.executable, "-m", "pykpatch.cli", "build", str(args.patch.resolve())]

    work = Path(tempfile.mkdtemp(prefix="pykpatch-bench-fleet-"))
    try:
        env = {**os.environ, "CACHEDIR": str(work / "one"), "PYKPATCH_DISTRO_CACHE": str(distro_cache)}
        wall, cpu, _ = timed([*base, "--kernels", ",".join(releases), "-o", str(work / "out-one")], env)
        print(f"--kernels ({len(releases)} kernels, one command): wall {wall:.0f} s, CPU {cpu:.0f} s", flush=True)
        total_wall = total_cpu = 0.0
        for n, release in enumerate(releases):
            env = {**os.environ, "CACHEDIR": str(work / f"sep{n}"), "PYKPATCH_DISTRO_CACHE": str(distro_cache)}
            wall, cpu, _ = timed([*base, "--kernel", release, "-o", str(work / f"out-{n}")], env)
            print(f"  --kernel {release}: wall {wall:.0f} s, CPU {cpu:.0f} s", flush=True)
            total_wall += wall
            total_cpu += cpu
        print(f"separate runs, one after the other: wall {total_wall:.0f} s, CPU {total_cpu:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
