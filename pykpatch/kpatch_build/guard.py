"""Stage "guard": the original objects compiled here must be the running kernel's code.

In the targeted route nothing of the tree was built before: the original
objects are compiled now, from the distribution's source, config and
compiler, and compared against what the distribution shipped.  If any of
these differs (another source version, a config of another flavour, another
gcc), the objects are not the kernel's and a live patch built from them
could be wrong in ways no later stage detects.  Two checks per object,
against its parent's symbol table (vmlinux or the module's .ko):

- its FILE block of local symbols is found in the parent (kpatch's
  ``find_local_syms``: the same statics, by name and type);
- every function it defines that the parent has has the same size there,
  give or take branch relaxation: in the distribution's build (one
  ``.text``) the assembler shortens a jump to a nearby function to 2 bytes;
  with ``-ffunction-sections`` every jump to another function is a
  relocated rel32 (5 bytes, 6 for a conditional one).  So an original may
  be longer by at most the architecture's ``branch_relaxation`` bytes per
  relocated PC-relative reference to another section, never shorter.  Weak functions are not
  compared (the kernel's symbol may be the strong override elsewhere:
  ``arch_report_meminfo`` of fs/proc/meminfo.c against arch/x86's).
  Nor are functions whose size follows the data layout (the arch's
  ``size_follows_data_layout``): on s390x those that reference data (GCC's
  section anchors address one ``.data`` through a base register), on
  ppc64le every function (anchors, and loop alignment padded from the
  section's start); there the FILE block check is what remains.

A mismatch stops the build naming the object and the symbols; building the
whole tree (``--full-build``) and diffing against that build is the way out
when the distribution's binaries cannot be matched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pykpatch.arch import ArchInfo, arch_for
from pykpatch.diff.lookup import ParentLookup
from pykpatch.elf.constants import STB, STT
from pykpatch.elf.model import ElfObject, Symbol
from pykpatch.elf.reader import read_elf
from pykpatch.errors import GuardError, SymbolLookupError
from pykpatch.kpatch_build.reach import Reached
from pykpatch.symtab import KernelSymbolTable

SHOWN = 4


def _file_of(obj: ElfObject) -> dict[int, Symbol]:
    current: Symbol | None = None
    out: dict[int, Symbol] = {}
    for sym in obj.symbols:
        if sym.type == STT.FILE:
            current = sym
        elif sym.bind == STB.LOCAL and current is not None:
            out[id(sym)] = current
    return out


def relocated_branches(sym: Symbol, arch: ArchInfo | None) -> int:
    """PC-relative references from ``sym``'s code to other sections: each may be a branch the plain build relaxed."""
    rela = sym.section.rela if sym.section is not None else None
    if rela is None or arch is None:
        return 0
    start, end = sym.value, sym.value + sym.size
    return sum(1 for r in rela.relocations or () if start <= r.offset < end and arch.is_pcrel(r.type)
               and r.symbol is not None and r.symbol.section is not sym.section)


def size_mismatches(obj: ElfObject, lookup: ParentLookup) -> list[str]:
    """'name (N here, M in the kernel)' for each defined function whose size the parent disagrees with."""
    file_of = _file_of(obj)
    arch = arch_for(obj.machine)
    out = []
    for sym in obj.symbols:
        if sym.type != STT.FUNC or sym.section is None or sym.bind == STB.WEAK:
            continue
        if arch is not None and arch.hooks.size_follows_data_layout(sym):
            continue
        found = lookup.lookup(sym, file_of.get(id(sym)))
        if found is None or not found.size or found.size == sym.size:
            continue
        excess = sym.size - found.size
        if arch is not None and 0 < excess <= arch.branch_relaxation * relocated_branches(sym, arch):
            continue
        out.append(f"{sym.name} ({sym.size} bytes here, {found.size} in {lookup.objname})")
    return out


def check_object(path: Path, reached: Reached, table: KernelSymbolTable) -> str | None:
    """One problem line for an original object that is not the kernel's code, or None."""
    obj = read_elf(path)
    lookup = ParentLookup(table, reached.parent)
    try:
        lookup.match_file_blocks(obj, reached.obj)
    except SymbolLookupError as err:
        return f"{reached.obj}: its local symbols are not those of {reached.parent} ({err.message})"
    bad = size_mismatches(obj, lookup)
    if bad:
        more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        return f"{reached.obj}: functions differ in size from {reached.parent}: {', '.join(bad[:SHOWN])}{more}"
    return None


def guard_originals(reached: list[Reached], orig_dir: Path, symtab: Callable[[Path], KernelSymbolTable],
                    progress: Callable[[str], None]) -> None:
    problems = []
    for r in reached:
        problem = check_object(orig_dir / r.obj, r, symtab(r.symtab))
        if problem:
            problems.append(problem)
    if problems:
        for p in problems:
            progress(f"  mismatch: {p}")
        raise GuardError(
            f"{len(problems)} original object(s) compiled here are not the running kernel's code: "
            + "; ".join(problems[:2]),
            hint="the source, config or compiler differs from the kernel's; use the kernel's own sources and "
                 "config, or --full-build to build the tree and patch against that build",
        )
    progress(f"guard: {len(reached)} original object(s) match the kernel's symbols and function sizes")
