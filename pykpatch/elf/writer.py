"""Lay out an ``ElfObject`` as a valid ELF relocatable file.

Everything index- or offset-shaped is recomputed here: section indexes from
list order, symbol order (locals first, ``sh_info`` = first non-local),
string tables, relocation and group contents, extended section numbering
(``SHN_XINDEX`` / ``.symtab_shndx``) when there are 0xff00 sections or more,
and file offsets honouring each section's alignment.
"""

from __future__ import annotations

import os
import struct

from pykpatch.elf.constants import ELF_MAGIC, SHN, SHT, STB, st_info
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
from pykpatch.errors import ElfWriteError
from pykpatch.safeio import atomic_write


class StringTableBuilder:
    """Collects NUL-terminated strings, each stored once."""

    def __init__(self) -> None:
        self._offsets: dict[str, int] = {"": 0}
        self._parts: list[bytes] = [b"\0"]
        self._size = 1

    def add(self, text: str) -> int:
        offset = self._offsets.get(text)
        if offset is None:
            raw = text.encode("latin-1") + b"\0"
            offset = self._size
            self._offsets[text] = offset
            self._parts.append(raw)
            self._size += len(raw)
        return offset

    def data(self) -> bytes:
        return b"".join(self._parts)


# Relocatable objects align sections to at most a page or so; a larger value
# is a corrupt header and would make the writer pad gigabytes of zeros.
MAX_ALIGN = 1 << 16


def _align(value: int, alignment: int) -> int:
    if alignment <= 1:
        return value
    return (value + alignment - 1) // alignment * alignment


def ordered_symbols(obj: ElfObject) -> list[Symbol]:
    """Symbols in file order: locals first (as the gABI requires), stable otherwise."""
    local = [s for s in obj.symbols if s.bind == STB.LOCAL]
    other = [s for s in obj.symbols if s.bind != STB.LOCAL]
    return local + other


def write_elf(obj: ElfObject, path: str | os.PathLike) -> None:
    """Write ``obj`` to ``path`` whole or not at all (see ``write_bytes``)."""
    write_bytes(serialize(obj), path)


def write_bytes(blob: bytes, path: str | os.PathLike) -> None:
    """Write bytes already serialized (and checked by the caller) to ``path``, whole or not at all.

    ``pykpatch.safeio.atomic_write``: the temporary file has an unpredictable
    name and is created exclusively without following symlinks (in a shared
    output directory, a link planted at a guessable name cannot make root
    overwrite another file), and is fsynced before it is renamed into place.
    """
    atomic_write(path, blob, mode=0o644)


def serialize(obj: ElfObject) -> bytes:
    """Return the bytes of ``obj`` as an ELF file.  Updates ``index`` attributes."""
    return _Writer(obj).build()


class _Writer:
    def __init__(self, obj: ElfObject) -> None:
        self.obj = obj
        self.layout = obj.layout
        self.fmt = "<" if self.layout.endian == "little" else ">"

    def build(self) -> bytes:
        obj = self.obj
        sections = list(obj.sections)
        symbols = ordered_symbols(obj)
        needs_xindex = len(sections) + 1 >= SHN.LORESERVE
        shndx_sec = next((s for s in sections if isinstance(s, SymtabShndxSection)), None)
        if needs_xindex and obj.symtab is not None and shndx_sec is None:
            shndx_sec = SymtabShndxSection(".symtab_shndx", type=SHT.SYMTAB_SHNDX, align=4, entsize=4)
            shndx_sec.link = obj.symtab
            sections.append(shndx_sec)
        for i, sec in enumerate(sections, start=1):
            sec.index = i
        self.section_ids = {id(s) for s in sections}
        for i, sym in enumerate(symbols, start=1):
            sym.index = i
        self.symbol_ids = {id(s) for s in symbols}

        contents = self.build_tables(sections, symbols, shndx_sec)
        return self.lay_out(sections, contents, symbols)

    # -- tables -----------------------------------------------------------------
    def check_section(self, sec: Section | None, what: str) -> int:
        if sec is None:
            return 0
        if id(sec) not in self.section_ids:
            raise ElfWriteError(f"{self.obj.path}: {what} refers to section {sec.name!r}, which is not in the object")
        return sec.index

    def build_tables(self, sections: list[Section], symbols: list[Symbol], shndx_sec) -> dict[int, bytes]:
        obj = self.obj
        contents: dict[int, bytes] = {}
        symstr = obj.symtab.link if obj.symtab is not None else None
        shstr = obj.shstrtab
        if shstr is None or id(shstr) not in self.section_ids:
            shstr = next((s for s in sections if s.name == ".shstrtab" and isinstance(s, StringTableSection)), None)
        if shstr is None:
            shstr = StringTableSection(".shstrtab", type=SHT.STRTAB)
            sections.append(shstr)
            shstr.index = len(sections)
            self.section_ids.add(id(shstr))
        self.shstr = shstr

        names = StringTableBuilder()
        self.sh_name = {id(s): names.add(s.name) for s in sections}
        sym_names = names if symstr is shstr else StringTableBuilder()
        if obj.symtab is not None:
            contents[id(obj.symtab)], xindex = self.symtab_bytes(symbols, sym_names)
            if shndx_sec is not None:
                contents[id(shndx_sec)] = struct.pack(f"{self.fmt}{len(xindex)}I", *xindex)
            if symstr is not None and symstr is not shstr:
                contents[id(symstr)] = sym_names.data()
        contents[id(shstr)] = names.data()

        for sec in sections:
            if isinstance(sec, RelocationSection) and sec.relocations is not None:
                contents[id(sec)] = self.relocation_bytes(sec, sec.relocations)
            elif isinstance(sec, GroupSection):
                idx = [self.check_section(m, f"group {sec.name!r}") for m in sec.members]
                contents[id(sec)] = struct.pack(f"{self.fmt}{len(idx) + 1}I", sec.group_flags, *idx)
        return contents

    def symtab_bytes(self, symbols: list[Symbol], names: StringTableBuilder) -> tuple[bytes, list[int]]:
        pack = self.layout.sym.pack if self.layout.is64 else self.layout.pack_sym  # the ELF64 order is the file's
        out = [pack(0, 0, 0, 0, 0, 0)]
        xindex = [0]
        section_ids = self.section_ids
        for sym in symbols:
            if sym.section is not None:
                # (the message of check_section is only built for a section that is missing)
                shndx = sym.section.index if id(sym.section) in section_ids else self.check_section(
                    sym.section, f"symbol {sym.name!r}")
                if shndx >= SHN.LORESERVE:
                    xindex.append(shndx)
                    shndx = SHN.XINDEX
                else:
                    xindex.append(0)
            else:
                shndx = sym.shndx if sym.shndx >= SHN.LORESERVE else SHN.UNDEF
                xindex.append(0)
            out.append(pack(names.add(sym.name), st_info(sym.bind, sym.type), sym.other, shndx, sym.value, sym.size))
        return b"".join(out), xindex

    def relocation_bytes(self, sec: RelocationSection, relocations: list[Relocation]) -> bytes:
        """The entries of ``sec`` (its decoded ``relocations``, passed apart from it) as the file stores them."""
        layout = self.layout
        ids = self.symbol_ids
        # r_info packing inlined (see ElfLayout.r_info): this loop is the writer's hottest
        shift, mask = (32, 0xFFFFFFFF) if layout.is64 else (8, 0xFF)
        rela = sec.type == SHT.RELA
        flat: list[int] = []
        extend = flat.extend
        for r in relocations:
            sym = r.symbol
            if sym is None:
                index = 0
            elif id(sym) in ids:
                index = sym.index
            else:
                index = self.reloc_symbol_index(sec, r, ids)  # raises ElfWriteError
            info = (index << shift) | (r.type & mask)
            extend((r.offset, info, r.addend) if rela else (r.offset, info))
        record = (layout.rela if rela else layout.rel).format[1:]
        return struct.pack(f"{self.fmt}{record * len(relocations)}", *flat)

    def reloc_symbol_index(self, sec: RelocationSection, rel: Relocation, ids: set[int]) -> int:
        sym = rel.symbol
        if sym is None:
            return 0
        if id(sym) not in ids:
            raise ElfWriteError(
                f"{self.obj.path}: relocation in {sec.name!r} at {rel.offset:#x} refers to symbol {sym.name!r}, "
                "which is not in the symbol table"
            )
        return sym.index

    # -- file layout ------------------------------------------------------------
    def header_link_info(self, sec: Section, symbols: list[Symbol]) -> tuple[int, int]:
        link = self.check_section(sec.link, f"section {sec.name!r} sh_link")
        if isinstance(sec, SymbolTableSection):
            info = 1 + sum(1 for s in symbols if s.bind == STB.LOCAL)
        elif isinstance(sec, RelocationSection):
            if self.obj.symtab is not None and sec.relocations is not None:
                link = self.check_section(self.obj.symtab, f"section {sec.name!r} sh_link")
            if isinstance(sec.info, Section):
                info = self.check_section(sec.info, f"relocation section {sec.name!r}")
            else:
                info = int(sec.info)
        elif isinstance(sec, GroupSection):
            if sec.signature is not None and id(sec.signature) not in self.symbol_ids:
                raise ElfWriteError(f"{self.obj.path}: group {sec.name!r} signature {sec.signature.name!r} "
                                    "is not in the symbol table")
            info = sec.signature.index if sec.signature is not None else 0
            if self.obj.symtab is not None:
                link = self.obj.symtab.index
        elif isinstance(sec.info, Section):
            info = self.check_section(sec.info, f"section {sec.name!r} sh_info")
        else:
            info = int(sec.info)
        return link, info

    def lay_out(self, sections: list[Section], contents: dict[int, bytes], symbols: list[Symbol]) -> bytes:
        layout = self.layout
        obj = self.obj
        chunks: list[bytes] = []
        offset = layout.ehdr.size
        headers = [layout.shdr.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
        for sec in sections:
            data = contents.get(id(sec), sec.data)
            entsize = sec.entsize
            if isinstance(sec, SymbolTableSection):
                entsize = layout.sym.size
            elif isinstance(sec, RelocationSection) and sec.relocations is not None:
                entsize = layout.rela.size if sec.type == SHT.RELA else layout.rel.size
            if sec.align > MAX_ALIGN or (sec.align > 1 and sec.align & (sec.align - 1)):
                raise ElfWriteError(
                    f"{obj.path}: section {sec.name!r} has alignment {sec.align:#x}, "
                    "which is not a power of two up to 64 KiB"
                )
            start = _align(offset, sec.align)
            if start > offset:
                chunks.append(b"\0" * (start - offset))
            if sec.type == SHT.NOBITS:
                size = sec.size
                offset = start
            else:
                chunks.append(bytes(data))
                size = len(data)
                offset = start + size
            link, info = self.header_link_info(sec, symbols)
            flags = sec.flags
            headers.append(layout.shdr.pack(
                self.sh_name[id(sec)], sec.type, flags, sec.addr, start, size, link, info, sec.align, entsize,
            ))
        count = len(sections) + 1
        shstrndx = self.shstr.index
        if count >= SHN.LORESERVE or shstrndx >= SHN.LORESERVE:
            headers[0] = layout.shdr.pack(
                0, 0, 0, 0, 0, count if count >= SHN.LORESERVE else 0,
                shstrndx if shstrndx >= SHN.LORESERVE else 0, 0, 0, 0,
            )
        shoff = _align(offset, 8 if layout.is64 else 4)
        if shoff > offset:
            chunks.append(b"\0" * (shoff - offset))
        ident = ELF_MAGIC + bytes([layout.elf_class, layout.data, 1, obj.osabi, obj.abiversion]) + b"\0" * 7
        ehdr = layout.ehdr.pack(
            ident, obj.e_type, obj.machine, obj.e_version, obj.e_entry, 0, shoff, obj.e_flags,
            layout.ehdr.size, 0, 0, layout.shdr.size,
            count if count < SHN.LORESERVE else 0,
            shstrndx if shstrndx < SHN.LORESERVE else SHN.XINDEX,
        )
        return b"".join([ehdr, *chunks, *headers])
