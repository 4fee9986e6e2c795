"""Declarative on-disk layouts of ELF records for each class and byte order.

One ``ElfLayout`` per (class, endianness) holds precompiled ``struct.Struct``
objects; the reader and writer never hard-code a size or a field order.
ELF32 and ELF64 differ in field order for symbols and in how ``r_info``
packs the symbol index and relocation type, so those live here too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache

from pykpatch.elf.constants import ElfClass, ElfData

# Field names, in file order, so that unpacked tuples can be read by name.
EHDR_FIELDS = (
    "e_ident", "e_type", "e_machine", "e_version", "e_entry", "e_phoff", "e_shoff",
    "e_flags", "e_ehsize", "e_phentsize", "e_phnum", "e_shentsize", "e_shnum", "e_shstrndx",
)
SHDR_FIELDS = (
    "sh_name", "sh_type", "sh_flags", "sh_addr", "sh_offset", "sh_size",
    "sh_link", "sh_info", "sh_addralign", "sh_entsize",
)
SYM64_FIELDS = ("st_name", "st_info", "st_other", "st_shndx", "st_value", "st_size")
SYM32_FIELDS = ("st_name", "st_value", "st_size", "st_info", "st_other", "st_shndx")

_FORMATS = {
    ElfClass.ELFCLASS64: {
        "ehdr": "16sHHIQQQIHHHHHH",
        "shdr": "IIQQQQIIQQ",
        "sym": "IBBHQQ",
        "rela": "QQq",
        "rel": "QQ",
        "word": "I",
        "addr": "Q",
    },
    ElfClass.ELFCLASS32: {
        "ehdr": "16sHHIIIIIHHHHHH",
        "shdr": "IIIIIIIIII",
        "sym": "IIIBBH",
        "rela": "IIi",
        "rel": "II",
        "word": "I",
        "addr": "I",
    },
}


@dataclass(frozen=True)
class ElfLayout:
    """Record layouts for one ELF class and byte order."""

    elf_class: ElfClass
    data: ElfData
    ehdr: struct.Struct
    shdr: struct.Struct
    sym: struct.Struct
    rela: struct.Struct
    rel: struct.Struct
    word: struct.Struct
    addr: struct.Struct

    @property
    def is64(self) -> bool:
        return self.elf_class == ElfClass.ELFCLASS64

    @property
    def endian(self) -> str:
        """``'little'`` or ``'big'``, as ``int.from_bytes`` wants it."""
        return "little" if self.data == ElfData.ELFDATA2LSB else "big"

    def r_info(self, sym_index: int, rtype: int) -> int:
        """Pack ``r_info`` (ELF64: sym<<32|type, ELF32: sym<<8|type)."""
        if self.is64:
            return (sym_index << 32) | (rtype & 0xFFFFFFFF)
        return (sym_index << 8) | (rtype & 0xFF)

    def r_sym_type(self, info: int) -> tuple[int, int]:
        """Unpack ``r_info`` into (symbol index, type)."""
        if self.is64:
            return info >> 32, info & 0xFFFFFFFF
        return info >> 8, info & 0xFF

    def unpack_sym(self, raw: tuple) -> tuple[int, int, int, int, int, int]:
        """Normalize an unpacked symbol to (name, info, other, shndx, value, size)."""
        if self.is64:
            return raw
        name, value, size, info, other, shndx = raw
        return name, info, other, shndx, value, size

    def pack_sym(self, name: int, info: int, other: int, shndx: int, value: int, size: int) -> bytes:
        if self.is64:
            return self.sym.pack(name, info, other, shndx, value, size)
        return self.sym.pack(name, value, size, info, other, shndx)


@cache
def layout_for(elf_class: int, data: int) -> ElfLayout:
    """Return the (cached, immutable) layout for a class/byte-order pair."""
    cls = ElfClass(elf_class)
    order = ElfData(data)
    prefix = "<" if order == ElfData.ELFDATA2LSB else ">"
    fmts = _FORMATS[cls]
    return ElfLayout(
        elf_class=cls,
        data=order,
        **{key: struct.Struct(prefix + fmt) for key, fmt in fmts.items()},
    )
