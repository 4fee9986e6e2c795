"""``kpatch-build`` (also ``pykpatch build``): from patch files to a livepatch module.

Flags follow kpatch-build so scripts written for it keep working::

    kpatch-build [-s SRCDIR] [-c CONFIG] [-v VMLINUX] [-j N] [-t TARGET]... [-n NAME] [-o OUTDIR]
                 [-R|--non-replace] [-d|--debug] [--skip-cleanup] [--skip-compiler-check] PATCH...
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

HELP = "build a livepatch module from patch files (kpatch-build)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("patches", nargs="+", metavar="PATCH", help="patch file(s), applied in order with -p1")
    parser.add_argument("-s", "--sourcedir", default=os.environ.get("KPATCH_SRCDIR"),
                        help="kernel source tree (built in place, never O=)")
    parser.add_argument("-c", "--config", help="kernel .config (default: the tree's own)")
    parser.add_argument("-v", "--vmlinux", help="the target kernel's vmlinux (default: SRCDIR/vmlinux)")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="parallel make jobs")
    parser.add_argument("-t", "--target", action="append", default=[],
                        help="make target of the original build (default: vmlinux modules)")
    parser.add_argument("-n", "--name", help="module name (default: from the first patch file)")
    parser.add_argument("-o", "--output", default=".", help="output directory")
    parser.add_argument("-R", "--non-replace", action="store_true", help="do not replace loaded live patches")
    parser.add_argument("-d", "--debug", action="store_true", help="keep the scratch directory, more output")
    parser.add_argument("--skip-cleanup", action="store_true", help="keep the scratch directory")
    parser.add_argument("--skip-compiler-check", action="store_true",
                        help="build even if gcc differs from the one that built vmlinux")


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so every cleanup (patch revert) runs."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised by the integration tests
    raise Terminated()


def run(args: argparse.Namespace) -> int:
    from pykpatch.kpatch_build.pipeline import BuildOptions, kpatch_build
    from pykpatch.errors import UsageError

    if not args.sourcedir:
        raise UsageError("no kernel source tree given", hint="use -s SRCDIR (or set KPATCH_SRCDIR)")
    opts = BuildOptions(
        patches=[Path(p) for p in args.patches],
        srcdir=Path(args.sourcedir).resolve(),
        config=Path(args.config) if args.config else None,
        vmlinux=Path(args.vmlinux) if args.vmlinux else None,
        jobs=args.jobs,
        targets=args.target,
        name=args.name,
        outdir=Path(args.output),
        replace=not args.non_replace,
        debug=args.debug,
        skip_cleanup=args.skip_cleanup,
        skip_compiler_check=args.skip_compiler_check,
    )
    started = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        result = kpatch_build(opts, progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(result.module)
    if args.debug:
        print(f"timings: {result.timings}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kpatch-build`` command."""
    from pykpatch.cli import standalone_main

    return standalone_main("kpatch-build", sys.modules[__name__], argv)
