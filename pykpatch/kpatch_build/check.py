"""Stage "check": everything that can be checked before a compile starts.

A kpatch-build run can take minutes of compiling; a mistake found after
them is an hour lost on a distribution kernel.  So, before any compile:
the tree is a kernel tree, the patches are safe and apply (``patches.py``:
the dry run *is* the application, done in a scratch copy), the vmlinux
exists and its release and compiler match the tree and the local compiler,
and a leftover of an interrupted run is put back first.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pykpatch.errors import KernelMismatchError, PatchError, TreeError
from pykpatch.kbuild.compiler import check_compiler, compiler_of
from pykpatch.kbuild.release import kernel_release_from_tree, kernel_release_from_vmlinux
from pykpatch.kpatch_build.context import BuildContext, BuildOptions
from pykpatch.kpatch_build.journal import TreeJournal
from pykpatch.kpatch_build.patches import PatchFile, all_names, dry_run, parse_patches


@dataclass
class TargetKernel:
    """The kernel the live patch is for, as read from its vmlinux."""

    vmlinux: Path
    release: str
    compiler: str
    config_text: str


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
    ctx.progress(f"an interrupted run had left {ctx.opts.srcdir} changed: put back {len(report.restored)} "
                 f"file(s), removed {len(report.removed)}{stopped}")


def check_target(ctx: BuildContext) -> TargetKernel:
    opts = ctx.opts
    vmlinux = opts.vmlinux or (opts.srcdir / "vmlinux")
    if not vmlinux.is_file():
        raise TreeError(f"{vmlinux} does not exist", hint="give the running kernel's vmlinux with -v VMLINUX")
    release = kernel_release_from_vmlinux(vmlinux)
    compiler = compiler_of("gcc")
    if not opts.skip_compiler_check:
        check_compiler(vmlinux, "gcc")
    config_text = sync_config(opts.srcdir, opts.config)
    ctx.progress(f"kernel {release}, {compiler}")
    return TargetKernel(vmlinux, release, compiler, config_text)


def check_release(srcdir: Path, target: TargetKernel) -> None:
    """The tree must build the release the vmlinux is (what vermagic will say)."""
    have = kernel_release_from_tree(srcdir)
    if have and have != target.release:
        raise KernelMismatchError(
            f"the source tree builds kernel {have}, but {target.vmlinux} is {target.release}",
            kernel=target.release, local=have,
            hint="use the source and config of the running kernel",
        )


def tree_knows_its_release(srcdir: Path) -> bool:
    return any((srcdir / rel).is_file() for rel in ("include/generated/utsrelease.h", "include/config/kernel.release"))


def sync_config(tree: Path, config: Path | None) -> str:
    """The tree's .config becomes the requested one (as kpatch-build does); return its text."""
    target = tree / ".config"
    if config is None:
        if not target.exists():
            raise TreeError(f"{tree} has no .config", hint="give the kernel's config with -c CONFIG")
        return target.read_text()
    try:
        text = config.read_text()
    except OSError as err:
        raise TreeError(f"{config}: cannot read the config: {err.strerror or err}") from None
    if not target.exists() or target.read_text() != text:
        shutil.copyfile(config, target)
    return text


def plan_patches(ctx: BuildContext, patches: list[PatchFile]) -> PatchPlan:
    """Dry run (= the application, in scratch): what each patched file will contain."""
    ctx.stages.start("patches", f"checking {len(patches)} patch(es): {len(all_names(patches))} file(s)")
    result = dry_run(ctx.opts.srcdir, patches, ctx.scratch / "dry-run")
    if not result:
        raise PatchError("the patches change nothing in the tree", hint="are they already applied?")
    return PatchPlan(patches, result)
