"""gABI rules that files in the wild may bend, checked for consumers that need them.

The reader (``pykpatch.elf.reader``) refuses what no valid ELF file can
hold: offsets, sizes and indexes outside the file or outside the section
they refer to.  The rules here are the gABI's too, but breaking them
breaks no reader - binutils itself links an old ``.stab`` section to
``.stabstr`` without SHF_LINK_ORDER - so a reader of arbitrary objects
keeps such files, and a consumer that produces objects for the kernel (the
diff, for its inputs and its outputs) asks here.  Each function returns one
line per problem, naming the section, and an empty list for a good object.
"""

from __future__ import annotations

from pykpatch.elf.constants import SHF, SHT, STB
from pykpatch.elf.model import ElfObject, Section

# Section types whose sh_link and sh_info the gABI fixes at 0, unless SHF_LINK_ORDER
# (sh_link names the section this one is ordered with) or SHF_INFO_LINK (sh_info names a section).
PLAIN_TYPES = frozenset({SHT.PROGBITS, SHT.NOBITS, SHT.NOTE, SHT.STRTAB, SHT.INIT_ARRAY, SHT.FINI_ARRAY,
                         SHT.PREINIT_ARRAY})

# Section types whose sh_info holds a symbol index (first non-local symbol, group signature).
SYMBOL_INDEX_INFO = frozenset({SHT.SYMTAB, SHT.DYNSYM, SHT.GROUP})


def link_problems(obj: ElfObject) -> list[str]:
    """sh_link / sh_info of plain sections: 0, or a section when their flag says so; no SHF_INFO_LINK
    where sh_info is a symbol index.

    The fuzzer's diff outputs kept a ``.text`` with a random sh_link and a
    ``.strtab`` with a random sh_info, copied from a damaged input.
    """
    problems = []
    for sec in obj.sections:
        if sec.type in SYMBOL_INDEX_INFO and sec.flags & SHF.INFO_LINK:
            problems.append(f"section {sec.name}: SHF_INFO_LINK, but its sh_info is a symbol index")
        if sec.type not in PLAIN_TYPES:
            continue
        if sec.flags & SHF.LINK_ORDER:
            if sec.link is None:
                problems.append(f"section {sec.name}: SHF_LINK_ORDER without the section it is ordered with")
        elif sec.link is not None:
            problems.append(f"section {sec.name}: sh_link names {sec.link.name} without SHF_LINK_ORDER "
                            "(the gABI wants 0)")
        if not isinstance(sec.info, Section) and sec.info:
            problems.append(f"section {sec.name}: sh_info {sec.info} without SHF_INFO_LINK (the gABI wants 0)")
    return problems


def symbol_order_problems(obj: ElfObject) -> list[str]:
    """Locals first, and .symtab's sh_info one past the last of them (the module loader relies on it).

    Only meaningful for an object as read back from its bytes: the writer
    recomputes both, so this checks the writer.
    """
    symtab = obj.symtab
    if symtab is None:
        return []
    first_global = next((s.index for s in obj.symbols if s.bind != STB.LOCAL), len(obj.symbols) + 1)
    late = [s for s in obj.symbols if s.bind == STB.LOCAL and s.index > first_global]
    problems = []
    if symtab.info != first_global:
        problems.append(f"{symtab.name}: sh_info {symtab.info} is not the first non-local symbol ({first_global})")
    if late:
        problems.append(f"{symtab.name}: local symbol {late[0].name!r} comes after a global one")
    return problems


__all__ = ["PLAIN_TYPES", "link_problems", "symbol_order_problems"]
