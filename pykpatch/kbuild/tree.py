"""A kernel source tree as kbuild builds it in place: compiles, identity, and what make rewrites.

Both kpatch-build passes build *in the tree* with ``-ffunction-sections
-fdata-sections`` (never ``O=``): in-tree, ``__FILE__`` is a relative path,
so the objects match the distribution's own build and their local symbols
can be matched to the running vmlinux.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pykpatch.kbuild.make import MakeRun, Progress, run_make
from pykpatch.kbuild.release import kernel_release_from_tree

KPATCH_CFLAGS = "-ffunction-sections -fdata-sections"


def data_dir() -> Path:
    """pykpatch/data: kpatch-macros.h, the patch author's header."""
    return Path(str(resources.files("pykpatch").joinpath("data")))


def patch_author_env() -> dict[str, str]:
    """pykpatch/data on gcc's include path through CPATH, for ``#include "kpatch-macros.h"``.

    Not ``KCFLAGS=-I...``: kbuild records every object's command line in its
    .cmd file and rebuilds what was built with other flags, so an -I in the
    original build would change the cache key (a full rebuild for every
    existing cache), and one in the patched build only would make the
    prepare stage's objects (asm-offsets, bounds) out of date.  CPATH acts
    as a trailing ``-I`` (also with -nostdinc), is not part of any recorded
    command, and the tree's own headers keep precedence.
    """
    cpath = os.environ.get("CPATH", "")
    return {"CPATH": os.pathsep.join(p for p in (str(data_dir()), cpath) if p)}


@dataclass
class KernelTree:
    path: Path
    log: Path
    jobs: int = 1
    variables: dict[str, str] = field(default_factory=dict)  # e.g. CC=gcc-12, on every make command line
    env: dict[str, str] = field(default_factory=dict)  # for every make: compile wrappers (kbuild/wrappers.py)
    make_seconds: float = 0.0  # time spent in make here so far (a fleet report's compile share)

    def make(self, *targets: str, kcflags: str | None = KPATCH_CFLAGS, progress: Progress | None = None,
             what: str = "build", on_start: Callable[[int], None] | None = None, capture: bool = False,
             expected: int | None = None, object_flags: str | None = None) -> MakeRun:
        """make in the tree (never O=) with the tree's variables and ``KCFLAGS`` (None: none); output to the log.

        ``object_flags``: the flags go to the objects asked for only, as kbuild's
        per-object ``CFLAGS_NAME.o`` (scripts/Makefile.lib), instead of
        KCFLAGS: KCFLAGS also reaches the prepare stage (asm-offsets, bounds,
        modpost), which kbuild then rebuilds for every run -- 9 of the 12
        seconds of a one-file patch on a plainly built tree.
        """
        variables = {**self.variables, **flag_variables(self.path, targets, kcflags, object_flags)}
        run = run_make(self.path, targets, log=self.log, what=what, jobs=self.jobs, variables=variables,
                       extra_env={**patch_author_env(), **self.env}, progress=progress, on_start=on_start,
                       capture=capture, expected=expected)
        self.make_seconds += run.seconds
        return run

    def kernelrelease(self) -> str:
        return kernel_release_from_tree(self.path)

    def source_version(self) -> str:
        """What identifies the sources: the Makefile's version and, if present, the Debian version file."""
        parts = []
        for name in ("Makefile", "debian/changelog", ".scmversion", "localversion"):
            p = self.path / name
            if p.exists():
                parts.append(hashlib.sha256(p.read_bytes()[:65536]).hexdigest()[:16])
        return "-".join(parts)


def flag_variables(tree: Path, targets: tuple[str, ...] | list[str], kcflags: str | None,
                   object_flags: str | None) -> dict[str, str]:
    """The make variables that carry extra C flags: ``KCFLAGS``, or per object ``CFLAGS_stem.o``.

    A ``CFLAGS_stem.o`` given on make's command line replaces the one the
    object's Makefile sets (a command-line variable overrides every makefile
    assignment): arch/x86/mm/Makefile's ``CFLAGS_fault.o := -I
    $(src)/../include/asm/trace`` was lost and fault.c no longer found its
    trace header.  So when the Makefile of any target names its own
    ``CFLAGS_stem.o``, the flags go as KCFLAGS for that make run instead.
    """
    variables: dict[str, str] = {}
    if kcflags is not None:
        variables["KCFLAGS"] = kcflags
    if object_flags is None:
        return variables
    objects = [t for t in targets if t.endswith(".o")]
    if any(makefile_sets_object_flags(tree, t) for t in objects):
        variables["KCFLAGS"] = " ".join(f for f in (kcflags, object_flags) if f)
        return variables
    variables.update({f"CFLAGS_{Path(t).name}": object_flags for t in objects})
    return variables


def makefile_sets_object_flags(tree: Path, target: str) -> bool:
    """Whether the kbuild file of ``target``'s directory assigns ``CFLAGS_stem.o`` itself."""
    name = f"CFLAGS_{Path(target).name}"
    directory = tree / Path(target).parent
    for kbuild_file in ("Kbuild", "Makefile"):
        try:
            if name in (directory / kbuild_file).read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False


# What make may rewrite besides the objects it is asked for, when the C flags
# change (measured on 6.1: asm-offsets, bounds, the syscall check and modpost
# are rebuilt with the new KCFLAGS) or the tree was moved (host tools whose
# .cmd files hold absolute paths are rebuilt: objtool).  Each is a directory
# (everything below it) or a glob, relative to the tree.
BUILD_STATE_DIRS = ("scripts", "tools/objtool", "tools/bpf/resolve_btfids", "include/generated", "include/config")
BUILD_STATE_GLOBS = (
    "arch/*/include/generated/**/*", "arch/*/kernel/asm-offsets*", "arch/*/kernel/.asm-offsets*",
    "kernel/bounds.s", "kernel/.bounds.s.cmd", ".missing-syscalls.d", ".tmp_*", ".version",
)


def build_state_files(tree: Path) -> list[str]:
    """Existing files make may rewrite outside the objects asked for (see BUILD_STATE_*)."""
    found: set[str] = set()
    for d in BUILD_STATE_DIRS:
        found.update(_files_below(tree, d))
    for pattern in BUILD_STATE_GLOBS:
        found.update(str(p.relative_to(tree)) for p in tree.glob(pattern) if p.is_file() and not p.is_symlink())
    return sorted(found)


def build_state_dirs(tree: Path) -> list[str]:
    """Directories where make may create files besides the objects' own (removed again afterwards)."""
    dirs = {"."}
    for d in BUILD_STATE_DIRS:
        dirs.update(os.path.relpath(dp, tree) for dp, _dn, _fn in os.walk(tree / d))
    for p in tree.glob("arch/*/include/generated"):
        dirs.update(os.path.relpath(dp, tree) for dp, _dn, _fn in os.walk(p))
    dirs.update(str(p.relative_to(tree)) for p in tree.glob("arch/*/kernel"))
    dirs.add("kernel")
    return sorted(dirs)


def _files_below(tree: Path, rel: str) -> Iterator[str]:
    for dirpath, _dirnames, filenames in os.walk(tree / rel):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                yield os.path.relpath(full, tree)
