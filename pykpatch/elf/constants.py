"""ELF constants (System V gABI), as named integer enums.

Only numbers live here; human-readable descriptions are in
``pykpatch.elf.describe`` so that parsing and presentation stay apart.
"""

from __future__ import annotations

from enum import IntEnum

ELF_MAGIC = b"\x7fELF"


class ElfClass(IntEnum):
    ELFCLASS32 = 1
    ELFCLASS64 = 2


class ElfData(IntEnum):
    ELFDATA2LSB = 1
    ELFDATA2MSB = 2


class ET(IntEnum):
    NONE = 0
    REL = 1
    EXEC = 2
    DYN = 3
    CORE = 4


class EM(IntEnum):
    NONE = 0
    SPARC = 2
    X86_386 = 3
    MIPS = 8
    PPC = 20
    PPC64 = 21
    S390 = 22
    ARM = 40
    X86_64 = 62
    AARCH64 = 183
    RISCV = 243
    LOONGARCH = 258


class SHT(IntEnum):
    NULL = 0
    PROGBITS = 1
    SYMTAB = 2
    STRTAB = 3
    RELA = 4
    HASH = 5
    DYNAMIC = 6
    NOTE = 7
    NOBITS = 8
    REL = 9
    SHLIB = 10
    DYNSYM = 11
    INIT_ARRAY = 14
    FINI_ARRAY = 15
    PREINIT_ARRAY = 16
    GROUP = 17
    SYMTAB_SHNDX = 18


class SHF(IntEnum):
    """Section flag bits.  An IntEnum, not IntFlag: ``flags & SHF.X`` then stays a
    plain int operation, which matters in loops over 100k+ relocations."""

    WRITE = 0x1
    ALLOC = 0x2
    EXECINSTR = 0x4
    MERGE = 0x10
    STRINGS = 0x20
    INFO_LINK = 0x40
    LINK_ORDER = 0x80
    OS_NONCONFORMING = 0x100
    GROUP = 0x200
    TLS = 0x400
    COMPRESSED = 0x800
    # Linux livepatch: relocations resolved by the livepatch core at patch time
    # (Documentation/livepatch/module-elf-format.rst).
    RELA_LIVEPATCH = 0x00100000
    GNU_RETAIN = 0x00200000
    EXCLUDE = 0x80000000


class SHN(IntEnum):
    UNDEF = 0
    LORESERVE = 0xFF00
    # Linux livepatch: symbol resolved by the livepatch core (.klp.sym.*).
    LIVEPATCH = 0xFF20
    ABS = 0xFFF1
    COMMON = 0xFFF2
    XINDEX = 0xFFFF


class STB(IntEnum):
    LOCAL = 0
    GLOBAL = 1
    WEAK = 2
    GNU_UNIQUE = 10


class STT(IntEnum):
    NOTYPE = 0
    OBJECT = 1
    FUNC = 2
    SECTION = 3
    FILE = 4
    COMMON = 5
    TLS = 6
    GNU_IFUNC = 10


class STV(IntEnum):
    DEFAULT = 0
    INTERNAL = 1
    HIDDEN = 2
    PROTECTED = 3


GRP_COMDAT = 0x1


def st_info(bind: int, typ: int) -> int:
    """Pack a symbol's binding and type into ``st_info``."""
    return ((bind & 0xF) << 4) | (typ & 0xF)
