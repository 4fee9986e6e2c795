"""Which objects the patched files reach, and what each one is part of in the running kernel.

Two ways of knowing, depending on the tree:

- a **built** tree (by the distribution, the user, or a ``--full-build``):
  kbuild's records -- the .cmd dependency lists say which objects include a
  file, the ``*.mod`` files which module an object is part of;
- a **prepared** tree that was never built (a distribution's sources in the
  targeted route): the tree's include graph (``kbuild/includes.py``) says
  which .c files can reach a header, and ``make -n`` on their directories
  (``kbuild/units.py``) which of them the configuration compiles, and into
  vmlinux or which module.

Each object's parent symbol table is vmlinux, or its module's ``.ko``: the
distribution's shipped one when the kernel comes from packages, the tree's
own after a build.  Objects of images that are not the kernel (boot code,
vDSO, purgatory) are left out with a note.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pykpatch.errors import PatchError, TreeError
from pykpatch.kbuild.includes import IncludeGraph
from pykpatch.kbuild.objects import ObjectIndex, module_file, module_of_objects, split_other_images
from pykpatch.kbuild.units import configured_units

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Reached:
    """An object to rebuild, and its parent in the running kernel."""

    obj: str
    parent: str          # "vmlinux" or the module's name (kernel spelling)
    symtab: Path         # the parent's symbol table: vmlinux or the module's .ko


@dataclass(frozen=True)
class Parents:
    """Where parents' symbol tables come from."""

    vmlinux: Path
    modules: Path | None = None   # a directory with kernel/<path>.ko (a distribution's /lib/modules/R)
    # A module's .ko with FILE symbols (a distribution's debug package), preferred over the shipped one.
    module_symbols: Callable[[str], Path | None] | None = None

    def shipped_module(self, module_path: str) -> Path | None:
        if self.module_symbols is not None:
            found = self.module_symbols(module_path)
            if found is not None:
                return found
        if self.modules is None:
            return None
        for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
            candidate = self.modules / "kernel" / f"{module_path}{suffix}"
            if candidate.is_file():
                return candidate
        return None


def _kernel_objects(objects: set[str], progress: Progress) -> list[str]:
    kernel, elsewhere = split_other_images(sorted(objects))
    if elsewhere:
        progress(f"patched build: not live patchable, left alone: {', '.join(elsewhere)} "
                 "(built into an image other than the kernel and its modules)")
    if not kernel:
        raise PatchError("the patch only changes code of images that cannot be live patched: " + ", ".join(elsewhere))
    return kernel


def _none_compiled(files: list[str]) -> PatchError:
    return PatchError("none of the patched files is compiled in this configuration: " + ", ".join(files),
                      hint="check the config (-c) or the patch")


def reached_in_built_tree(tree: Path, files: list[str], parents: Parents, progress: Progress) -> list[Reached]:
    """kbuild's .cmd and .mod records of a built tree (see the module docstring)."""
    per_file = ObjectIndex(tree).objects_for(files)
    if all(not objs for objs in per_file.values()):
        raise _none_compiled(files)
    objects = _kernel_objects({o for objs in per_file.values() for o in objs}, progress)
    modules = module_of_objects(tree)
    out = []
    for obj in objects:
        module = modules.get(obj)
        if module is None:
            out.append(Reached(obj, "vmlinux", parents.vmlinux))
            continue
        ko = module_file(tree, obj, module)
        if ko is None:
            raise TreeError(f"{obj} belongs to module {module}, whose .ko was not built")
        out.append(Reached(obj, module, ko))
    return out


def reached_in_prepared_tree(tree: Path, files: list[str], parents: Parents, graph: IncludeGraph, log: Path,
                             progress: Progress) -> list[Reached]:
    """The include graph and ``make -n`` of a tree never built (see the module docstring)."""
    candidates = {f[:-2] + ".o" for f in graph.c_files_reaching(files)}
    progress(f"patched build: {len(candidates)} C file(s) can include the patched files; asking kbuild which "
             "this configuration compiles")
    units = configured_units(tree, {os.path.dirname(o) or "." for o in candidates}, log)
    chosen = {o for o in candidates if o in units}
    if not chosen:
        raise _none_compiled(files)
    out = []
    skipped = []
    for obj in _kernel_objects(chosen, progress):
        unit = units[obj]
        if unit.module is None:
            out.append(Reached(obj, "vmlinux", parents.vmlinux))
            continue
        ko = parents.shipped_module(unit.module)
        if ko is None:
            skipped.append(f"{obj} ({unit.module}.ko)")
            continue
        out.append(Reached(obj, unit.module_name or unit.module, ko))
    if skipped:
        progress(f"patched build: left out, their module is not shipped with this kernel: {', '.join(skipped)}")
    if not out:
        raise PatchError("the patched files are only compiled into modules this kernel does not ship: "
                         + ", ".join(skipped))
    return out
