"""``kpatch-build`` (also ``pykpatch build``): from patch files to a livepatch module.

Flags follow kpatch-build so scripts written for it keep working::

    kpatch-build [-s SRCDIR] [-c CONFIG] [-v VMLINUX] [-j N] [-t TARGET]... [-n NAME] [-o OUTDIR]
                 [-R|--non-replace] [-d|--debug] [--skip-cleanup] [--skip-compiler-check]
                 [--sign-key KEY [--sign-cert CERT] | --no-sign] [--allow-empty-replace]
                 [--kernel|-r RELEASE] [--full-build] [--modules-dir DIR] PATCH...

Without -s, the running kernel's (or --kernel RELEASE's) sources, config,
vmlinux and modules come from the distribution's packages (Debian).
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
    parser.add_argument("-s", "--sourcedir", default=None,
                        help="kernel source tree (built in place, never O=); default: the distribution's sources")
    parser.add_argument("-r", "--kernel", metavar="RELEASE",
                        help="the kernel to patch, as uname -r says it (default: the running one)")
    parser.add_argument("--full-build", action="store_true",
                        help="build the whole tree once (cached) instead of only what the patch reaches")
    parser.add_argument("--modules-dir", metavar="DIR",
                        help="the running kernel's modules (DIR/kernel/**.ko), for a tree never built")
    parser.add_argument("--distro-cache", metavar="DIR",
                        help="where distribution packages are fetched "
                             "(default: $PYKPATCH_DISTRO_CACHE or CACHEDIR/distro)")
    parser.add_argument("-c", "--config", help="kernel .config (default: the tree's own)")
    parser.add_argument("--arch", metavar="ARCH",
                        help="build for another architecture's kernel (x86_64, ppc64le, s390x, aarch64, loongarch64; "
                             "kbuild's ARCH names too): make gets ARCH= and Debian's CROSS_COMPILE=")
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
    from pykpatch.arch import require_arch
    from pykpatch.errors import UsageError
    from pykpatch.kpatch_build.context import BuildOptions, SigningOptions, default_jobs
    from pykpatch.kpatch_build.workspace import default_cachedir

    sourcedir = args.sourcedir or os.environ.get("KPATCH_SRCDIR")
    if sourcedir and args.kernel:
        raise UsageError("-s SRCDIR and --kernel RELEASE contradict each other",
                         hint="the release of a given tree comes from its vmlinux (-v)")
    cachedir = default_cachedir()
    if args.no_sign and (args.sign_key or args.sign_cert):
        raise UsageError("--no-sign and --sign-key/--sign-cert contradict each other")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"-j {args.jobs}: the number of jobs must be at least 1")
    return BuildOptions(
        patches=[Path(p) for p in args.patches],
        srcdir=Path(sourcedir).resolve() if sourcedir else None,
        cachedir=cachedir,
        kernel=args.kernel,
        distro_cache=Path(args.distro_cache or os.environ.get("PYKPATCH_DISTRO_CACHE") or cachedir / "distro"),
        modules_dir=Path(args.modules_dir) if args.modules_dir else None,
        full_build=args.full_build,
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
        arch=require_arch(args.arch).name if args.arch else None,
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
