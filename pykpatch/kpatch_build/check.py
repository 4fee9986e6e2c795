"""Stage "check": everything that can be checked before a compile starts.

A kpatch-build run can take minutes of compiling; a mistake found after
them is an hour lost on a distribution kernel.  So, before any compile:
the patches are safe and apply (``patches.py``: the dry run *is* the
application, done in a scratch copy), a leftover of an interrupted run is
put back, the vmlinux exists and its release and compiler match the tree
and the compiler here (the one the config names: ``gcc-12`` for Debian),
the tools the config needs are installed, and the disk has room for what
the chosen mode will write.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pykpatch.arch import cross_make_variables, require_arch
from pykpatch.errors import KernelInfoError, KernelMismatchError, PatchError, TreeError
from pykpatch.kbuild.compiler import check_compiler, compiler_of
from pykpatch.kbuild.config import srcarch_of
from pykpatch.kbuild.release import kernel_release_from_tree, kernel_release_from_vmlinux
from pykpatch.kbuild.wrappers import check_remote_compilers, choose_wrappers, masquerade_environment
from pykpatch.kpatch_build.context import BuildContext, BuildOptions
from pykpatch.kpatch_build.journal import TreeJournal
from pykpatch.kpatch_build.patches import PatchFile, all_names, dry_run, parse_patches
from pykpatch.kpatch_build.prepare import tree_release


@dataclass
class TargetKernel:
    """The kernel the live patch is for, as read from its vmlinux."""

    vmlinux: Path
    release: str
    compiler: str            # the local compiler, in .comment format


@dataclass
class PatchPlan:
    """The patches and their exact result: the content of every file they change (None: deleted)."""

    patches: list[PatchFile]
    result: dict[str, bytes | None]

    @property
    def files(self) -> list[str]:
        return list(self.result)


def read_patches(opts: BuildOptions) -> list[PatchFile]:
    """Parse and check every patch's file names: pure, nothing is created or changed yet."""
    for p in opts.patches:
        if not p.is_file():
            raise PatchError(f"{p}: no such patch file")
    return parse_patches(opts.patches)


def require_kernel_tree(srcdir: Path) -> None:
    if not (srcdir / "Makefile").is_file() or not (srcdir / "kernel").is_dir():
        raise TreeError(f"{srcdir} is not a kernel source tree", hint="give it with -s SRCDIR")


def recover_interrupted_run(ctx: BuildContext) -> None:
    """Put back what a killed run left in the tree (its journal), stopping its orphaned make first."""
    journal = TreeJournal.load(ctx.workspace.journal_dir)
    if journal is None:
        return
    report = journal.restore()
    stopped = f", stopped its make (process group {report.stopped_make})" if report.stopped_make else ""
    ctx.progress(f"an interrupted run had left {ctx.srcdir} changed: put back {len(report.restored)} "
                 f"file(s), removed {len(report.removed)}{stopped}")


def check_target(ctx: BuildContext, vmlinux: Path, cc: str) -> TargetKernel:
    """vmlinux's release, and the compiler ``cc`` against the one that built vmlinux."""
    if not vmlinux.is_file():
        raise TreeError(f"{vmlinux} does not exist", hint="give the running kernel's vmlinux with -v VMLINUX")
    release = kernel_release_from_vmlinux(vmlinux)
    compiler = compiler_of(cc)
    if not ctx.opts.skip_compiler_check:
        check_compiler(vmlinux, cc)
    ctx.progress(f"kernel {release}, compiler {cc}: {compiler}")
    return TargetKernel(vmlinux, release, compiler)


def check_compile_wrappers(ctx: BuildContext, cc: str) -> None:
    """distcc/icecc/ccache in front of ``cc`` (``--distcc``, or ``CC="distcc gcc-12"``), every remote checked.

    The remote compilers are compared with the local one by a probe compiled
    on each host before anything else compiles (``kbuild/wrappers.py``); the
    wrappers then stand in for ``cc`` on make's PATH so that kbuild's
    recorded commands stay the kernel's own.
    """
    wrappers = choose_wrappers(ctx.opts.distcc, os.environ.get("CC"), cc)
    if not wrappers:
        return
    ctx.progress(f"compiles go through {wrappers.describe()}")
    check_remote_compilers(wrappers, ctx.scratch / "compile-probe", log=ctx.progress)
    ctx.tree.env.update(masquerade_environment(wrappers, ctx.scratch / "compile-wrappers"))
    with open(ctx.log, "a") as fh:
        fh.write(f"compile wrappers: {wrappers.describe()}, environment {ctx.tree.env}\n")


def check_config_compiler(cc: str, config: dict[str, str | None], skip: bool) -> None:
    """kbuild's own check: the compiler must print exactly the config's CONFIG_CC_VERSION_TEXT."""
    want = config.get("CONFIG_CC_VERSION_TEXT")
    if skip or not want:
        return
    have = _version_line(cc)
    if " ".join(have.split()) != " ".join(want.split()):
        raise KernelMismatchError(
            f"the kernel's config was made with '{want}', but {cc} here is '{have}'",
            kernel=want, local=have,
            hint=f"install the compiler that built the kernel ({want.split()[0]}), or pass --skip-compiler-check",
        )


def _version_line(cc: str) -> str:
    try:
        proc = subprocess.run([cc, "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise KernelInfoError(f"cannot run {cc} --version: {err}",
                              hint="install the compiler that built the kernel") from None
    return (proc.stdout.splitlines() or [""])[0]


def check_release(srcdir: Path, target: TargetKernel) -> bool:
    """The tree must build the release the vmlinux is (what vermagic will say); False if it cannot tell yet."""
    have = tree_release(srcdir)
    if have is None and (srcdir / "include/config/kernel.release").is_file():
        have = kernel_release_from_tree(srcdir)
    if have is None:
        return False
    if have != target.release:
        raise KernelMismatchError(
            f"the source tree builds kernel {have}, but {target.vmlinux} is {target.release}",
            kernel=target.release, local=have,
            hint="use the sources and config of the running kernel (for a distribution kernel, its "
                 "packages: kpatch-build --kernel RELEASE)",
        )
    return True


# What a config needs installed before anything compiles, found by option.
TOOLS_FOR_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("CONFIG_DEBUG_INFO_BTF", "pahole", "dwarves"),
)
HEADERS_FOR_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("CONFIG_OBJTOOL", "/usr/include/gelf.h", "libelf-dev"),
    ("CONFIG_STACK_VALIDATION", "/usr/include/gelf.h", "libelf-dev"),
    ("CONFIG_MODULE_SIG", "/usr/include/openssl/opensslv.h", "libssl-dev"),
    ("CONFIG_SYSTEM_TRUSTED_KEYRING", "/usr/include/openssl/opensslv.h", "libssl-dev"),
)
ALWAYS_TOOLS = (("make", "make"), ("bison", "bison"), ("flex", "flex"), ("bc", "bc"), ("patch", "patch"))


def check_tools(config: dict[str, str | None]) -> None:
    """Refuse, naming the packages, when a tool or header the config's build needs is missing."""
    missing: dict[str, str] = {}
    for program, package in ALWAYS_TOOLS:
        if shutil.which(program) is None:
            missing[program] = package
    for option, program, package in TOOLS_FOR_OPTIONS:
        if config.get(option) == "y" and shutil.which(program) is None:
            missing[f"{program} (for {option})"] = package
    for option, header, package in HEADERS_FOR_OPTIONS:
        if config.get(option) == "y" and not Path(header).is_file():
            missing[f"{header} (for {option})"] = package
    if missing:
        raise KernelInfoError(f"missing what this kernel's build needs: {', '.join(missing)}",
                              hint=f"apt-get install {' '.join(sorted(set(missing.values())))}")


def check_disk(path: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise TreeError(f"{what} needs about {needed / 1e9:.1f} GB in {path}, which has {free / 1e9:.1f} GB free",
                        hint="free some space, or choose another CACHEDIR / source tree")


def plan_patches(ctx: BuildContext, patches: list[PatchFile]) -> PatchPlan:
    """Dry run (= the application, in scratch): what each patched file will contain."""
    ctx.stages.start("patches", f"checking {len(patches)} patch(es): {len(all_names(patches))} file(s)")
    result = dry_run(ctx.srcdir, patches, ctx.scratch / "dry-run")
    if not result:
        raise PatchError("the patches change nothing in the tree", hint="are they already applied?")
    return PatchPlan(patches, result)


def cross_variables(requested: str | None, config: dict[str, str | None]) -> dict[str, str]:
    """``ARCH``/``CROSS_COMPILE`` for make when the kernel is another architecture's (``--arch``).

    The tree's configuration must be of that architecture (its SRCARCH); a
    native build needs nothing.
    """
    if requested is None:
        return {}
    arch = require_arch(requested)
    configured = srcarch_of(config)
    if configured != arch.srcarch:
        raise TreeError(f"--arch {requested}: the kernel's .config is for {configured}, not {arch.srcarch}",
                        hint="configure the tree for that architecture (make ARCH=... olddefconfig) or drop --arch")
    return cross_make_variables(arch, platform.machine())
