"""Time the kernel lab: cold build (on request), cached reuse, boot round trips.

    python3 bench/bench_lab.py            # cached reuse + boots (builds first if nothing is cached)
    python3 bench/bench_lab.py --cold     # also a full cold build into a scratch cache (~7 min on 2 cores)

The boot round trip is the acceptance scenario: boot the lab kernel, load
``livepatch-sample.ko``, wait for the transition, check /proc/cmdline,
disable, unload, check again, reboot.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pykpatch.errors import PykpatchError
from pykpatch.lab import boot, ensure_kernel, insmod, read, rmmod, wait_for, wait_until_gone, write

KLP = "/sys/kernel/livepatch/livepatch_sample"


def _say(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cold", action="store_true", help="also time a cold build into a scratch cache")
    ap.add_argument("--keep-cold", action="store_true", help="keep the scratch cache of --cold")
    ap.add_argument("--boots", type=int, default=3, help="boot round trips to time (default 3)")
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args(argv)

    try:
        if args.cold:
            scratch = Path(tempfile.mkdtemp(prefix="pykpatch-lab-cold-"))
            t = time.monotonic()
            kb = ensure_kernel(root=scratch, jobs=args.jobs, progress=_say)
            print(f"cold build (unpack+config+make+snapshot): {time.monotonic() - t:7.1f} s   [{kb.cache_dir}]")
            if not args.keep_cold:
                import shutil
                shutil.rmtree(scratch)

        t = time.monotonic()
        kb = ensure_kernel(jobs=args.jobs, progress=_say)
        first = time.monotonic() - t
        label = "cached reuse" if kb.reused else "build (nothing was cached)"
        print(f"{label}: {first * 1000:9.1f} ms")
        reuse = []
        for _ in range(5):
            t = time.monotonic()
            ensure_kernel(jobs=args.jobs)
            reuse.append(time.monotonic() - t)
        print(f"cached reuse, median of 5: {statistics.median(reuse) * 1000:6.1f} ms")

        sample = kb.module("livepatch-sample")
        steps = [
            read("/proc/cmdline"),
            insmod(sample),
            wait_for(f"{KLP}/transition", "0"),
            read("/proc/cmdline"),
            write(f"{KLP}/enabled", "0"),
            wait_until_gone(KLP),
            rmmod("livepatch_sample"),
            read("/proc/cmdline"),
        ]
        times = []
        for i in range(args.boots):
            r = boot(kb.bzimage, steps, modules=[sample], timeout=120)
            if not r.ok or "this has been live patched" not in r.steps[3].output:
                print(f"boot {i}: FAILED: {r.failures()}", file=sys.stderr)
                return 1
            times.append(r.seconds)
        print(f"boot round trip with livepatch-sample ({args.boots}x): "
              f"min {min(times):.2f} s, median {statistics.median(times):.2f} s, max {max(times):.2f} s")
        r = boot(kb.bzimage, ["true"], timeout=120)
        print(f"bare boot + one step + reboot: {r.seconds:.2f} s (ok={r.ok})")
    except PykpatchError as err:
        print(f"bench_lab: error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"bench_lab: hint: {err.hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
