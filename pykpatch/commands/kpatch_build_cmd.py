"""``kpatch-build`` (also ``pykpatch build``): from patch files to a livepatch module.

Flags follow kpatch-build so scripts written for it keep working::

    kpatch-build [-s SRCDIR] [-c CONFIG] [-v VMLINUX] [-j N] [-t TARGET]... [-n NAME] [-o OUTDIR]
                 [-R|--non-replace] [-d|--debug] [--skip-cleanup] [--skip-compiler-check]
                 [--sign-key KEY [--sign-cert CERT] | --no-sign] [--allow-empty-replace] PATCH...
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

HELP = "build a livepatch module from patch files (kpatch-build)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("patches", nargs="+", metavar="PATCH", help="patch file(s), applied in order with -p1")
    parser.add_argument("-s", "--sourcedir", default=os.environ.get("KPATCH_SRCDIR"),
                        help="kernel source tree (built in place, never O=)")
    parser.add_argument("-c", "--config", help="kernel .config (default: the tree's own)")
    parser.add_argument("-v", "--vmlinux", help="the target kernel's vmlinux (default: SRCDIR/vmlinux)")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="parallel make jobs (default: one per CPU)")
    parser.add_argument("-t", "--target", action="append", default=[],
                        help="make target of the original build (default: vmlinux modules)")
    parser.add_argument("-n", "--name", help="module name, used as given (default: livepatch-PATCHNAME)")
    parser.add_argument("-o", "--output", default=".", help="output directory")
    parser.add_argument("-R", "--non-replace", action="store_true", help="do not replace loaded live patches")
    parser.add_argument("--allow-empty-replace", action="store_true",
                        help="build a replace-mode module even if it patches no function (it unpatches everything)")
    parser.add_argument("-d", "--debug", action="store_true", help="keep the scratch directory, more output")
    parser.add_argument("--skip-cleanup", action="store_true", help="keep the scratch directory")
    parser.add_argument("--skip-compiler-check", action="store_true",
                        help="build even if gcc differs from the one that built vmlinux")
    parser.add_argument("--sign-key", metavar="KEY", help="sign the module with this PEM private key")
    parser.add_argument("--sign-cert", metavar="CERT", help="the key's X.509 certificate (default: in KEY)")
    parser.add_argument("--no-sign", action="store_true", help="do not sign, even where a default key exists")


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, turned into an exception so every cleanup (the tree's restore) runs."""


def _on_signal(signum: int, frame: FrameType | None) -> None:  # pragma: no cover - exercised by the integration tests
    raise Terminated()


def options_from(args: argparse.Namespace):  # -> BuildOptions (imported lazily: fast --help)
    from pykpatch.errors import UsageError
    from pykpatch.kpatch_build.context import BuildOptions, SigningOptions, default_jobs
    from pykpatch.kpatch_build.workspace import default_cachedir

    if not args.sourcedir:
        raise UsageError("no kernel source tree given", hint="use -s SRCDIR (or set KPATCH_SRCDIR)")
    if args.no_sign and (args.sign_key or args.sign_cert):
        raise UsageError("--no-sign and --sign-key/--sign-cert contradict each other")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"-j {args.jobs}: the number of jobs must be at least 1")
    return BuildOptions(
        patches=[Path(p) for p in args.patches],
        srcdir=Path(args.sourcedir).resolve(),
        cachedir=default_cachedir(),
        config=Path(args.config) if args.config else None,
        vmlinux=Path(args.vmlinux) if args.vmlinux else None,
        jobs=args.jobs or default_jobs(),
        targets=args.target,
        name=args.name,
        outdir=Path(args.output),
        replace=not args.non_replace,
        allow_empty_replace=args.allow_empty_replace,
        debug=args.debug,
        skip_cleanup=args.skip_cleanup,
        skip_compiler_check=args.skip_compiler_check,
        signing=SigningOptions(Path(args.sign_key) if args.sign_key else None,
                               Path(args.sign_cert) if args.sign_cert else None, args.no_sign),
    )


def run(args: argparse.Namespace) -> int:
    from pykpatch.kpatch_build.pipeline import kpatch_build

    opts = options_from(args)
    started = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        result = kpatch_build(opts, progress)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(result.module)
    if args.debug:
        print(f"timings: {result.timings}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kpatch-build`` command."""
    from pykpatch.cli import standalone_main

    return standalone_main("kpatch-build", sys.modules[__name__], argv)
