"""``kpatch-build`` (also ``pykpatch build``): from patch files to a livepatch module.

Flags follow kpatch-build so scripts written for it keep working::

    kpatch-build [-s SRCDIR] [-c CONFIG] [-v VMLINUX] [-j N] [-t TARGET]... [-n NAME] [-o OUTDIR]
                 [-R|--non-replace] [-d|--debug] [--skip-cleanup] [--skip-compiler-check]
                 [--sign-key KEY [--sign-cert CERT] | --no-sign] [--allow-empty-replace]
                 [--kernel|-r RELEASE] [--full-build] [--modules-dir DIR] [--distcc] PATCH...
    kpatch-build --kernels LIST|FILE|installed [--report FILE.json] [-o OUTDIR] [...] PATCH...

Without -s, the running kernel's (or --kernel RELEASE's) sources, config,
vmlinux and modules come from the distribution's packages (Debian).
--kernels builds one module per kernel into OUTDIR/RELEASE/ (``fleet``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

HELP = "build a livepatch module from patch files (kpatch-build)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("patches", nargs="+", metavar="PATCH", help="patch file(s), applied in order with -p1")
    parser.add_argument("-s", "--sourcedir", default=None,
                        help="kernel source tree (built in place, never O=); default: the distribution's sources")
    parser.add_argument("-r", "--kernel", metavar="RELEASE",
                        help="the kernel to patch, as uname -r says it (default: the running one)")
    parser.add_argument("--kernels", metavar="LIST",
                        help="build for many kernels: comma-separated releases, a file with one a line, or "
                             "'installed' (the package manager's); one module each in OUTDIR/RELEASE/")
    parser.add_argument("--report", metavar="FILE.json",
                        help="with --kernels: write the per-kernel report (module, functions, time, refusal)")
    parser.add_argument("--result-json", metavar="FILE", help=argparse.SUPPRESS)  # a --kernels child's result
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
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="parallel make jobs (default: one per CPU; with --distcc, what its hosts take: distcc -j)")
    parser.add_argument("--distcc", action="store_true",
                        help="send compiles to the distcc hosts of DISTCC_HOSTS (behind ccache when installed), each "
                             "host's compiler checked first; CC='distcc gcc-12' or 'icecc gcc-12' works as well")
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
        jobs=args.jobs or _default_jobs(args.distcc, default_jobs),
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
        distcc=args.distcc,
    )


def _default_jobs(distcc: bool, local: Callable[[], int]) -> int:
    """One job per CPU here, or with --distcc as many as the distcc hosts take (and at least that)."""
    if not distcc:
        return local()
    from pykpatch.kbuild.wrappers import distcc_jobs

    return max(local(), distcc_jobs() or 0)


# Options that are one kernel's own: with --kernels, each kernel's come from its packages.
PER_KERNEL_OPTIONS = (("sourcedir", "-s"), ("kernel", "--kernel"), ("config", "-c"), ("vmlinux", "-v"),
                      ("modules_dir", "--modules-dir"), ("result_json", "--result-json"))


def _progress_printer() -> Callable[[str], None]:
    started = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return progress


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    from pykpatch.errors import UsageError
    from pykpatch.kpatch_build.pipeline import kpatch_build

    if args.kernels:
        return run_fleet(args)
    if args.report:
        raise UsageError("--report is the report of a --kernels build", hint="add --kernels LIST")
    opts = options_from(args)
    with _signals_raise():
        result = kpatch_build(opts, _progress_printer())
    if args.result_json:
        from pykpatch.safeio import atomic_write_text

        atomic_write_text(Path(args.result_json), json.dumps({
            "module": str(result.module), "changed_objects": result.changed_objects,
            "changed_functions": result.changed_functions, "new_functions": result.new_functions,
            "timings": result.timings, "kbuild_seconds": result.kbuild_seconds}), mode=0o644)
    print(result.module)
    if args.debug:
        print(f"timings: {result.timings}", file=sys.stderr)
    return 0


def forwarded_options(args: argparse.Namespace) -> list[str]:
    """The options every kernel of a --kernels build shares, as each child's command line."""
    words: list[str] = []
    flags = (("non_replace", "-R"), ("allow_empty_replace", "--allow-empty-replace"), ("debug", "-d"),
             ("skip_cleanup", "--skip-cleanup"), ("skip_compiler_check", "--skip-compiler-check"),
             ("no_sign", "--no-sign"), ("full_build", "--full-build"), ("distcc", "--distcc"))
    words += [flag for attr, flag in flags if getattr(args, attr)]
    valued = (("name", "-n"), ("sign_key", "--sign-key"), ("sign_cert", "--sign-cert"), ("arch", "--arch"))
    for attr, flag in valued:
        value = getattr(args, attr)
        if value:
            words += [flag, str(Path(value).resolve()) if attr.startswith("sign_") else value]
    if args.distro_cache:
        words += ["--distro-cache", str(Path(args.distro_cache).resolve())]
    for target in args.target:
        words += ["-t", target]
    return words


def run_fleet(args: argparse.Namespace) -> int:
    """--kernels: one child kpatch-build per kernel (pykpatch.kpatch_build.fleet)."""
    from pykpatch.distro.base import installed_releases
    from pykpatch.errors import UsageError
    from pykpatch.kpatch_build import check, fleet

    for attr, flag in PER_KERNEL_OPTIONS:
        if getattr(args, attr):
            raise UsageError(f"--kernels and {flag} contradict each other",
                             hint="with --kernels each kernel's sources, config and vmlinux come from its packages")
    opts = options_from(args)
    check.read_patches(opts)                   # every child would refuse the same patch: refuse it once, now
    releases = fleet.parse_kernel_list(args.kernels, installed_releases)
    outdir = opts.outdir.resolve()
    jobs = fleet.plan(releases, outdir, opts.jobs)
    at_once = fleet.concurrency(len(jobs), opts.jobs)
    patches = [p.resolve() for p in opts.patches]
    forwarded = forwarded_options(args)
    progress = _progress_printer()
    progress(f"{len(jobs)} kernels, {at_once} at a time: {', '.join(releases)}")
    started = time.monotonic()
    with _signals_raise():
        outcomes = fleet.run_fleet(jobs, lambda job: fleet.child_command(job, forwarded, patches), progress,
                                   at_once)
    seconds = time.monotonic() - started
    if args.report:
        fleet.write_report(Path(args.report), fleet.report_json(patches, outcomes, seconds))
    print(fleet.summary_table(outcomes), file=sys.stderr)
    for outcome in outcomes:
        if outcome.module:
            print(outcome.module)
    return fleet.fleet_exit_code(outcomes)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kpatch-build`` command."""
    from pykpatch.cli import standalone_main

    return standalone_main("kpatch-build", sys.modules[__name__], argv)


if __name__ == "__main__":  # python -m pykpatch.commands.kpatch_build_cmd: a --kernels child
    sys.exit(main())
