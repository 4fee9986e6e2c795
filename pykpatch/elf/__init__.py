"""ELF relocatable objects: model, reader, writer, constants and arch tables.

Typical use::

    from pykpatch.elf import read_elf, write_elf
    obj = read_elf("fs/proc/cmdline.o")
    ...edit obj.sections / obj.symbols / relocations...
    write_elf(obj, "out.o")
"""

from pykpatch.elf.model import (
    ElfObject,
    GroupSection,
    Relocation,
    RelocationSection,
    Section,
    StringTableSection,
    Symbol,
    SymbolTableSection,
    SymtabShndxSection,
)
from pykpatch.elf.reader import parse_elf, read_elf
from pykpatch.elf.writer import serialize, write_elf

__all__ = [
    "ElfObject", "GroupSection", "Relocation", "RelocationSection", "Section",
    "StringTableSection", "Symbol", "SymbolTableSection", "SymtabShndxSection",
    "parse_elf", "read_elf", "serialize", "write_elf",
]
