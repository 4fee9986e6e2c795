"""``pykpatch lab``: build the cached test kernel and boot kernels under QEMU.

``lab build`` builds (or reuses) the tiny livepatch kernel and prints its
paths; ``lab boot`` boots any bzImage (the lab's by default, or a distro's
``vmlinuz``) with modules and shell steps and prints each step's output and
exit code; ``lab info`` shows the cache.  Exit status of ``lab boot`` is 0
only when every step succeeded and the kernel stayed healthy, so it can gate
a script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pykpatch.errors import EXIT_ERROR, EXIT_OK, LabError, UsageError
from pykpatch.lab import build as lab_build
from pykpatch.lab import info as lab_info
from pykpatch.lab import prereqs, qemu
from pykpatch.lab.cache import cache_root
from pykpatch.lab.config import DEFAULT_SERIES, SERIES, default_fragment
from pykpatch.lab.machines import MACHINES, X86_64, lab_machine
from pykpatch.lab.source import DEFAULT_TARBALL, find_source
from pykpatch.lab.steps import MODULE_DIR, Step

HELP = "build the cached test kernel and boot kernels under QEMU with livepatch steps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION")
    sub.required = True

    b = sub.add_parser("build", help="build or reuse the cached tiny livepatch kernel; print its paths")
    b.add_argument("--jobs", "-j", type=int, default=None, help="parallel make jobs (default: number of CPUs)")
    b.add_argument("--rebuild", action="store_true", help="run make again and take a new snapshot")
    b.add_argument("--series", choices=SERIES, default=DEFAULT_SERIES,
                   help="the kernel series: 6.1 (Debian 12) or 6.12 (with IBT, call padding, call depth tracking)")
    b.add_argument("--arch", choices=sorted(MACHINES), default=X86_64.arch,
                   help="the kernel's architecture: x86_64 (default), or ppc64le/s390x cross-built (6.1)")
    b.add_argument("--quiet", "-q", action="store_true", help="no progress messages")
    b.set_defaults(_lab=_run_build)

    t = sub.add_parser(
        "boot",
        help="boot a kernel with modules and shell steps; print each step's output and exit code",
        description=(
            "Boot a bzImage under QEMU with a busybox initramfs that runs the given steps. "
            f"Modules are copied to {MODULE_DIR} in the guest. Exit status is non-zero on a panic, "
            "oops, BUG, WARN, timeout or failed step."
        ),
    )
    t.add_argument("--kernel", type=Path, default=None,
                   help="bzImage/vmlinuz to boot (default: the cached lab kernel of --arch)")
    t.add_argument("--arch", choices=sorted(MACHINES), default=X86_64.arch,
                   help="the guest's architecture (QEMU board, console, busybox): x86_64 (default), ppc64le, s390x")
    t.add_argument("--module", action="append", default=[], metavar="X.ko",
                   help="module file to copy into the guest (or the name of a lab-built module); repeatable")
    t.add_argument("--step", action="append", default=[], metavar="'shell cmd'",
                   help="shell command to run in the guest, in order; repeatable")
    t.add_argument("--timeout", type=float, default=qemu.DEFAULT_TIMEOUT,
                   help=f"hard limit in seconds for the whole run (default {qemu.DEFAULT_TIMEOUT:g})")
    t.add_argument("--memory", default=qemu.DEFAULT_MEMORY, help=f"guest memory (default {qemu.DEFAULT_MEMORY})")
    t.add_argument("--append", default="", help="extra kernel command line")
    t.add_argument("--accel", choices=qemu.ACCELS, default="tcg",
                   help="tcg (default), kvm, or auto (kvm only when it can really create a VM)")
    t.add_argument("--stop-on-failure", action="store_true", help="skip the remaining steps after a failed one")
    t.add_argument("--console", action="store_true", help="stream the guest console to stderr while it runs")
    t.add_argument("--workdir", type=Path, default=None,
                   help="keep the run's files (initramfs, console.log, results.log) in this directory")
    t.set_defaults(_lab=_run_boot)

    i = sub.add_parser("info", help="where the lab cache is and what it holds")
    i.set_defaults(_lab=_run_info)


def run(args: argparse.Namespace) -> int:
    return int(args._lab(args))


def _progress(quiet: bool):
    if quiet:
        return None
    return lambda msg: print(f"lab: {msg}", file=sys.stderr, flush=True)


def _run_build(args: argparse.Namespace) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    kb = lab_build.ensure_kernel(jobs=args.jobs, progress=_progress(args.quiet), rebuild=args.rebuild,
                                 series=args.series, arch=args.arch)
    how = "reused from cache" if kb.reused else f"built in {kb.build_seconds:.0f} s"
    print(f"kernel {kb.kernelrelease} ({kb.source_version}, {kb.arch}), {how}")
    print(f"boot image      {kb.boot_image}")
    print(f"vmlinux         {kb.vmlinux}")
    print(f"System.map      {kb.system_map}")
    print(f"Module.symvers  {kb.module_symvers}")
    print(f"config          {kb.config}")
    print(f"modules         {kb.snapshot / 'modules'} ({len(kb.modules)} .ko)")
    print(f"tree            {kb.tree}   (build modules with: make -C {kb.tree} M=DIR)")
    print(f"build log       {kb.build_log}")
    return EXIT_OK


def _resolve_kernel(args: argparse.Namespace) -> tuple[Path, lab_build.KernelBuild | None]:
    if args.kernel is not None:
        return args.kernel, None
    kb = _cached_build(args.arch)
    if kb is None:
        raise LabError(f"no --kernel given and no {args.arch} lab kernel is built",
                       hint=f"run `pykpatch lab build --arch {args.arch}` first")
    return kb.boot_image, kb


def _cached_build(arch: str = X86_64.arch) -> lab_build.KernelBuild | None:
    """The lab kernel of ``arch`` that `lab build` would give now, else the newest built one of it."""
    try:
        current = lab_build.lab_key(find_source(), default_fragment(DEFAULT_SERIES, arch), lab_machine(arch))
    except LabError:
        current = None
    built = [e.build for e in lab_info.list_cache() if e.build is not None and e.build.arch == arch]
    for kb in built:
        if kb.key == current:
            return kb
    built.sort(key=lambda kb: kb.snapshot.stat().st_mtime, reverse=True)
    return built[0] if built else None


def _resolve_modules(names: list[str], kb: lab_build.KernelBuild | None, args_arch: str) -> list[Path]:
    out = []
    for name in names:
        path = Path(name)
        if path.is_file():
            out.append(path)
            continue
        kb = kb or _cached_build(args_arch)
        if kb is None or path.parent != Path("."):
            raise LabError(f"module not found: {name}")
        out.append(kb.module(name))
    return out


def _run_boot(args: argparse.Namespace) -> int:
    kernel, kb = _resolve_kernel(args)
    modules = _resolve_modules(args.module, kb, args.arch)
    def echo_console(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    on_console = echo_console if args.console else None
    result = qemu.boot(
        kernel,
        [Step(s) for s in args.step],
        modules=modules,
        timeout=args.timeout,
        memory=args.memory,
        append=args.append,
        accel=args.accel,
        keep_going=not args.stop_on_failure,
        workdir=args.workdir,
        on_console=on_console,
        machine=lab_machine(args.arch),
    )
    for step in result.steps:
        print(f"--- step {step.index}: {step.command}")
        if step.output:
            sys.stdout.write(step.output if step.output.endswith("\n") else step.output + "\n")
        rc = "not run" if not step.started else ("did not finish" if step.rc is None else str(step.rc))
        print(f"--- step {step.index}: rc={rc}")
    failures = result.failures()
    if result.ok:
        print(f"lab: ok ({len(result.steps)} step(s), {result.seconds:.1f} s)")
        return EXIT_OK
    for line in failures or ["the run did not complete"]:
        print(f"lab: FAILED: {line}", file=sys.stderr)
    if result.trouble.lines and not args.console:
        print("lab: kernel said:", file=sys.stderr)
        for line in result.trouble.lines[:10]:
            print(f"lab:   {line}", file=sys.stderr)
    if not args.console:
        tail = result.console.rstrip("\n").splitlines()[-15:]
        print("lab: last console lines:", file=sys.stderr)
        for line in tail:
            print(f"lab:   {line}", file=sys.stderr)
    if args.workdir is not None:
        print(f"lab: run files kept in {args.workdir}", file=sys.stderr)
    return EXIT_ERROR


def _run_info(args: argparse.Namespace) -> int:
    root = cache_root()
    print(f"cache           {root}")
    entries = lab_info.list_cache(root)
    if not entries:
        print("cached kernels  none (run `pykpatch lab build`)")
    for e in entries:
        print(f"{e.key}: {e.state}")
        if e.build is not None:
            kb = e.build
            print(f"  kernel        {kb.kernelrelease} from {kb.source_version} ({kb.arch}), "
                  f"built in {kb.build_seconds:.0f} s")
            print(f"  boot image    {kb.boot_image}")
            print(f"  vmlinux       {kb.vmlinux}")
            print(f"  modules       {len(kb.modules)} .ko in {kb.snapshot / 'modules'}")
            print(f"  tree          {kb.tree}{'' if kb.tree.is_dir() else ' (missing)'}")
        if e.build_log is not None:
            print(f"  build log     {e.build_log}")
    missing = prereqs.missing_for_build(DEFAULT_TARBALL) + prereqs.missing_for_boot()
    if missing:
        pkgs = " ".join(sorted({m.package for m in missing}))
        print(f"prerequisites   missing: {'; '.join(m.what for m in missing)} (apt-get install -y {pkgs})")
    else:
        print("prerequisites   all present")
    print(f"kvm             {'usable' if qemu.kvm_usable() else 'not usable (TCG is used)'}")
    return EXIT_OK
