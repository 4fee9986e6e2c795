"""One patch for several Debian kernels: ``kpatch-build --kernels`` against one run per kernel.

    python3 bench/bench_fleet.py [--kernels 6.1:amd64,...,6.12:rt-amd64] [--patch FILE] [--one-only]

Both sides start from never-built trees (an empty CACHEDIR each); the
packages come from the distribution cache (``PYKPATCH_DISTRO_CACHE``,
default ``~/.cache/pykpatch/distro/debian``), fetched once beforehand and not
timed.  Wall and CPU time (user+sys of the whole process tree, from
``getrusage(RUSAGE_CHILDREN)``) are printed for each side, and the share of
the built kernels' time spent in kbuild in the kernel tree (configure,
prepare, the original and patched compiles: ``kbuild_seconds`` of each
kernel's result) against the rest (unpacking, symbol tables, diff, module).
A kernel refused up front (6.1's rt) counts in the wall and CPU times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pykpatch.distro.debian import DebianProvider, release_built_from
from pykpatch.errors import EXIT_SOME_BUILT, PykpatchError
from pykpatch.lab.debian import debian_cache_root

HERE = Path(__file__).resolve().parent
PATCH = HERE.parent / "tests" / "integration" / "patches" / "01-cmdline-string.patch"
SIX = "6.1:amd64,6.1:cloud-amd64,6.1:rt-amd64,6.12:amd64,6.12:cloud-amd64,6.12:rt-amd64"


def timed(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of the whole process tree, exit code (one of ``ok``, else the bench stops)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in ok:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def kernel_list(spec: str) -> list[str]:
    """SERIES:FLAVOUR,... -> the releases built from the installed linux-source-SERIES."""
    releases = []
    for item in spec.split(","):
        series, flavour = item.split(":", 1)
        releases.append(release_built_from(f"linux-source-{series}", flavour))
    return releases


def share(kbuild: float, total: float) -> str:
    return f"{kbuild:.0f} s of {total:.0f} s kernel-seconds in kbuild ({100 * kbuild / total:.0f} %)" if total else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", default=SIX, help=f"SERIES:FLAVOUR,... (default {SIX})")
    parser.add_argument("--patch", type=Path, default=PATCH)
    parser.add_argument("--one-only", action="store_true", help="measure the one command only")
    args = parser.parse_args()
    distro_cache = Path(os.environ.get("PYKPATCH_DISTRO_CACHE") or debian_cache_root())
    releases = kernel_list(args.kernels)
    for release in releases:      # downloads are not what is measured (a refused kernel is refused here too)
        try:
            DebianProvider(distro_cache).artifacts(release, lambda m: print(f"  {m}", flush=True))
        except PykpatchError as err:
            print(f"  {release}: {err.message}", flush=True)
    base = [sys.executable, "-m", "pykpatch.cli", "build", str(args.patch.resolve())]

    work = Path(tempfile.mkdtemp(prefix="pykpatch-bench-fleet-"))
    try:
        env = {**os.environ, "CACHEDIR": str(work / "one"), "PYKPATCH_DISTRO_CACHE": str(distro_cache)}
        report = work / "report.json"
        wall, cpu, rc = timed([*base, "--kernels", ",".join(releases), "-o", str(work / "out-one"),
                               "--report", str(report)], env, ok=(0, EXIT_SOME_BUILT))
        kernels = json.loads(report.read_text())["kernels"]
        built = [k for k in kernels if k["status"] == "built"]
        kbuild = sum(k["kbuild_seconds"] or 0 for k in built)
        print(f"--kernels ({len(releases)} kernels, {len(built)} built, one command): wall {wall:.0f} s, "
              f"CPU {cpu:.0f} s; {share(kbuild, sum(k['seconds'] for k in built))}", flush=True)
        if args.one_only:
            return
        total_wall = total_cpu = kbuild = seconds = 0.0
        for n, release in enumerate(releases):
            env = {**os.environ, "CACHEDIR": str(work / f"sep{n}"), "PYKPATCH_DISTRO_CACHE": str(distro_cache)}
            result = work / f"result-{n}.json"
            wall, cpu, rc = timed([*base, "--kernel", release, "-o", str(work / f"out-{n}"), "--result-json",
                                   str(result)], env, ok=(0, 1, 2))
            print(f"  --kernel {release}: wall {wall:.0f} s, CPU {cpu:.0f} s, exit {rc}", flush=True)
            total_wall += wall
            total_cpu += cpu
            if rc == 0:
                kbuild += json.loads(result.read_text())["kbuild_seconds"]
                seconds += wall
        print(f"separate runs, one after the other: wall {total_wall:.0f} s, CPU {total_cpu:.0f} s; "
              f"{share(kbuild, seconds)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
