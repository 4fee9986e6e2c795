"""What the diff requires of its inputs and guarantees of its outputs.

Inputs (``check_input``, right after reading): the reader has already
refused what no ELF file may hold; on top of that a kernel object the diff
can turn into a live patch keeps the gABI's sh_link/sh_info rules, no
processor-specific section indexes, alignments the writer can honour, and
at most one relocation section per section.  The relocations the output
copies from the patched object use only types the kernel's module loader
applies (allocated sections) or the machine defines (debug sections)
(``check_copied_relocations``, once the output is planned).  A damaged
object fails with ``DiffInputError`` naming the file, the section and the
problem.

Outputs (``validate_output``, just before writing): the serialized bytes
are read back with the reader (every relocation inside its section, every
index and link in range) and checked as the kernel will use them: gABI
links, locals first, relocation types the module loader applies, every
livepatch relocation (``.pykpatch.relocs``) inside its destination and
naming a symbol of the parent's table with its recorded ``sympos``, every
patched function (``.pykpatch.funcs``) a function of the parent with its
``sympos``.  A failure is a bug in the diff (its inputs were checked):
``DiffOutputError``, and nothing is written.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from operator import attrgetter

from pykpatch.arch import ArchInfo
from pykpatch.elf.constants import SHN, STB, STT
from pykpatch.elf.model import ElfObject, Relocation, RelocationSection, Section
from pykpatch.elf.reader import parse_elf
from pykpatch.elf.validate import link_problems, symbol_order_problems
from pykpatch.elf.writer import MAX_ALIGN
from pykpatch.errors import DiffInputError, DiffOutputError, ElfFormatError, PykpatchError
from pykpatch.records import FUNC_RECORD, FUNCS_SECTION

# Section indexes a symbol of a kernel object may carry without a section.
PLAIN_INDEXES = frozenset({SHN.UNDEF, SHN.ABS, SHN.COMMON})
SHOWN = 3  # problems quoted in one error message


# -- inputs -----------------------------------------------------------------------------------------

def check_input(obj: ElfObject, arch: ArchInfo) -> None:
    """Refuse an input object the diff cannot safely turn into a live patch (see the module docstring)."""
    problems = input_problems(obj, arch)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DiffInputError(f"{os.path.basename(obj.path)}: {problems[0]}{more}",
                             hint="the object is damaged or was not built as kernel code")


def input_problems(obj: ElfObject, arch: ArchInfo) -> list[str]:
    problems = link_problems(obj) + shared_target_problems(obj) + reserved_index_problems(obj)
    return problems + alignment_problems(obj) + arch.hooks.object_problems(obj)


def check_copied_relocations(obj: ElfObject, klp_types: list[int], arch: ArchInfo, patched: ElfObject) -> None:
    """Relocation types reach the output as the patched object has them: refuse one the module loader
    cannot apply, as an input problem.

    Checked on the output (a few sections) rather than on the whole input
    (~100k relocations): a bad type in code the patch does not carry is harmless.
    """
    problems = relocation_type_problems(obj, arch)
    problems += [f"livepatch relocation of type {arch.reloc_name(t)}: the kernel's module loader does not apply it"
                 for t in sorted(set(klp_types) - arch.module_types)]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DiffInputError(f"{os.path.basename(patched.path)}: {problems[0]}{more}",
                             hint="the object is damaged or was not built as kernel code")


_TYPE = attrgetter("type")


def relocation_type_problems(obj: ElfObject, arch: ArchInfo) -> list[str]:
    """Allocated sections: types the module loader applies; others (debug info): types the machine defines.

    The fuzzer's outputs carried R_X86_64_PC16 and unknown types into
    ``.rela.text.*``: the module would fail to load ("Unknown rela relocation").
    """
    problems = []
    defined = arch.relocs.keys()
    for relsec in obj.sections:
        if not isinstance(relsec, RelocationSection) or not relsec.relocations:
            continue
        loaded = isinstance(relsec.info, Section) and relsec.info.is_alloc
        bad = set(map(_TYPE, relsec.relocations)) - (arch.module_types if loaded else defined)
        if bad:
            rtype = min(bad)
            first = next(r for r in relsec.relocations if r.type == rtype)
            why = ("the kernel's module loader does not apply it" if loaded and rtype in arch.relocs
                   else f"not an {arch.name} relocation type")
            problems.append(f"{relsec.name}: relocation type {arch.reloc_name(rtype)} at {first.offset:#x}: {why}")
    return problems


def shared_target_problems(obj: ElfObject) -> list[str]:
    """One relocation section per section: the model, like kpatch's, keeps one (``Section.rela``,
    which the reader points at the last; any other relocation section of that target is extra)."""
    return [f"section {s.info.name} has more than one relocation section ({s.name}, {s.info.rela.name})"
            for s in obj.relocation_sections() if isinstance(s.info, Section) and s.info.rela is not s
            and s.info.rela is not None]


def reserved_index_problems(obj: ElfObject) -> list[str]:
    """A symbol outside any section must be undefined, absolute or common: kernel code has no other kind.

    The reader keeps processor- and OS-specific indexes (0xff00...); copied
    into an output they name no section of it.
    """
    return [f"symbol {sym.name or sym.index}: reserved section index {sym.shndx:#x}"
            for sym in obj.symbols if sym.section is None and sym.shndx not in PLAIN_INDEXES]


def alignment_problems(obj: ElfObject) -> list[str]:
    """Alignments past the writer's limit are damage (a kernel object aligns to a page at most)."""
    return [f"section {sec.name}: alignment {sec.align:#x} is larger than {MAX_ALIGN:#x}"
            for sec in obj.sections if sec.align > MAX_ALIGN]


# -- outputs ------------------------------------------------------------------------------------------

class ParentSymbols:
    """The parent's symbol table as the livepatch core will search it: by name, with sympos.

    ``table`` is a ``KernelSymbolTable`` (indexed by name once, and counting
    ``sympos`` the way the kernel does) or any object with a ``symbols``
    list; ``symvers`` (a ``ModuleSymvers`` or None) says which module
    exports a symbol.
    """

    def __init__(self, table, parent: str, symvers=None) -> None:
        self.table = table
        self.parent = parent
        self.symvers = symvers
        self._named: Callable[[str], list] | None = getattr(table, "by_name", None)
        self._index: dict[str, list] | None = None

    def named(self, name: str) -> list:
        if self._named is not None:
            return self._named(name)
        if self._index is None:
            self._index = {}
            for ksym in self.table.symbols:
                self._index.setdefault(ksym.name, []).append(ksym)
        return self._index.get(name, [])

    def sympos(self, ksym, same: list) -> int:
        counted = getattr(self.table, "sympos", None)
        if counted is not None:
            return counted(ksym)
        return 1 + [s for s in same if s.bind == STB.LOCAL].index(ksym)

    def resolves(self, name: str, objname: str, sympos: int, func: bool = False) -> bool:
        """Would ``klp_find_object_symbol`` find ``name`` (a function, if ``func``) at ``sympos``?"""
        if objname != self.parent:
            entry = self.symvers.lookup(name) if self.symvers is not None else None
            return entry is not None and sympos == 0
        same = [s for s in self.named(name) if _defined(s) and (not func or s.type == STT.FUNC)]
        if sympos == 0:
            return any(s.bind != STB.LOCAL for s in same)
        return any(s.bind == STB.LOCAL and self.sympos(s, same) == sympos for s in same)


def _defined(ksym) -> bool:
    defined = getattr(ksym, "defined", None)
    return bool(defined) if defined is not None else getattr(ksym, "shndx", 1) != SHN.UNDEF


def validate_output(blob: bytes, name: str, arch: ArchInfo, parent: ParentSymbols) -> ElfObject:
    """Read the output's bytes back and check them; raise ``DiffOutputError`` listing every problem."""
    try:
        obj = parse_elf(blob, f"{name} (output)")
    except ElfFormatError as err:
        raise DiffOutputError(name, [err.problem]) from None
    problems = output_problems(obj, arch, parent)
    if problems:
        raise DiffOutputError(name, problems)
    return obj


def output_problems(obj: ElfObject, arch: ArchInfo, parent: ParentSymbols) -> list[str]:
    problems = link_problems(obj) + symbol_order_problems(obj) + relocation_type_problems(obj, arch)
    problems += reserved_index_problems(obj)
    return problems + livepatch_relocation_problems(obj, arch, parent) + patched_function_problems(obj, parent)


def livepatch_relocation_problems(obj: ElfObject, arch: ArchInfo, parent: ParentSymbols) -> list[str]:
    """Each ``.pykpatch.relocs`` record: a loader type, inside its destination, resolving in the parent."""
    from pykpatch.kpatch_build.klp import read_klp_relocations  # klp reads the diff's format: import it late

    try:
        records = read_klp_relocations(obj)
    except PykpatchError as err:
        return [str(err)]
    problems = []
    for k in records:
        where = f"livepatch relocation to {k.name},{k.sympos} at {k.section.name}+{k.offset:#x}"
        width = arch.reloc_size(k.type)
        if k.type not in arch.module_types:
            problems.append(f"{where}: type {arch.reloc_name(k.type)} is not one the module loader applies")
        elif k.offset < 0 or k.offset + max(width, 1) > k.section.size:
            problems.append(f"{where}: its {width} bytes are outside {k.section.name} ({k.section.size:#x} bytes)")
        if not parent.resolves(k.name, k.objname, k.sympos):
            problems.append(f"{where}: {k.objname} has no symbol {k.name} with sympos {k.sympos}")
    return problems


def patched_function_problems(obj: ElfObject, parent: ParentSymbols) -> list[str]:
    """Each ``.pykpatch.funcs`` record names a function of the parent with its sympos."""
    sec = next((s for s in obj.sections if s.name == FUNCS_SECTION), None)
    if sec is None:
        return []
    if sec.size % FUNC_RECORD:
        return [f"{FUNCS_SECTION}: size {sec.size:#x} is not a multiple of {FUNC_RECORD}"]
    relocs = {r.offset: r for r in sec.rela.relocations or ()} if isinstance(sec.rela, RelocationSection) else {}
    fmt = ("<" if obj.layout.endian == "little" else ">") + "Q"
    problems = []
    for base in range(0, sec.size, FUNC_RECORD):
        (sympos,) = struct.unpack_from(fmt, sec.data, base + 24)
        name, objname = _record_string(relocs.get(base + 8)), _record_string(relocs.get(base + 16))
        if relocs.get(base) is None or name is None or objname is None:
            problems.append(f"{FUNCS_SECTION}: record {base // FUNC_RECORD} lacks its function, name or object")
        elif not parent.resolves(name, objname, sympos, func=True):
            problems.append(f"patched function {name},{sympos}: {objname} has no such function")
    return problems


def _record_string(rel: Relocation | None) -> str | None:
    """The string a metadata field points at (``.pykpatch.strings`` + offset), or None."""
    if rel is None or rel.symbol is None or rel.symbol.section is None:
        return None
    try:
        return rel.symbol.section.string_at(rel.symbol.value + rel.addend)
    except IndexError:
        return None


__all__ = ["ParentSymbols", "check_copied_relocations", "check_input", "input_problems", "output_problems",
           "validate_output"]
