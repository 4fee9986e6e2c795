"""Symbol tables from ELF files (vmlinux, ``.ko``): ``.symtab``, its strings and ``.symtab_shndx`` only.

A distribution vmlinux is ~600 MB; ``pykpatch.elf.headers`` reads its header
and section headers, and only the three sections needed are read from disk,
never the ``pykpatch.elf`` object model.
"""

from __future__ import annotations

import struct

from pykpatch.elf.constants import SHN, SHT
from pykpatch.elf.headers import ElfHeaders, SectionHeader
from pykpatch.elf.structs import ElfLayout
from pykpatch.errors import ElfFormatError, SymtabError
from pykpatch.symtab.table import KSym

_SPECIAL_SHNDX = {SHN.UNDEF: "UND", SHN.ABS: "ABS", SHN.COMMON: "COM"}


def read_elf_symbols(path: str) -> tuple[int, list[KSym]]:
    """(e_type, symbols) of an ELF file; every problem is a ``SymtabError`` naming the file."""
    try:
        with ElfHeaders(path) as elf:
            return elf.e_type, _symbols(elf, path)
    except ElfFormatError as err:
        raise SymtabError(err.message) from None


def _symbols(elf: ElfHeaders, path: str) -> list[KSym]:
    if not elf.sections:
        raise SymtabError(f"{path}: no section headers, so no symbol table")
    symtabs = elf.of_type(SHT.SYMTAB)
    if not symtabs:
        raise SymtabError(f"{path}: no .symtab section (stripped?)")
    sym_h = symtabs[0]
    layout = elf.layout
    entsize = layout.sym.size
    if sym_h.entsize != entsize:
        raise SymtabError(f"{path}: symbol table entry size {sym_h.entsize} (expected {entsize})")
    if sym_h.size % entsize:
        raise SymtabError(f"{path}: symbol table size {sym_h.size:#x} is not a multiple of {entsize}")
    link = sym_h.link
    if not 0 < link < len(elf.sections) or elf.sections[link].type != SHT.STRTAB:
        raise SymtabError(f"{path}: symbol table is not linked to a string table (sh_link {link})")
    symdata = elf.data(sym_h)
    strtab = elf.data(elf.sections[link]).decode("latin-1")
    nsyms = sym_h.size // entsize
    xindex = _xindex(elf, sym_h, nsyms, layout, path)
    secnames = [h.name for h in elf.sections]
    return _decode_symbols(layout, symdata, strtab, xindex, secnames, path)


def _xindex(elf: ElfHeaders, sym_h: SectionHeader, nsyms: int, layout: ElfLayout, path: str) -> tuple[int, ...] | None:
    for h in elf.of_type(SHT.SYMTAB_SHNDX):
        if h.link == sym_h.index:
            if h.size < nsyms * 4:
                raise SymtabError(f"{path}: .symtab_shndx is shorter than the symbol table")
            raw = elf.read_at(h.offset, nsyms * 4, ".symtab_shndx")
            return struct.unpack(("<" if layout.endian == "little" else ">") + f"{nsyms}I", raw)
    return None


def _decode_symbols(layout: ElfLayout, symdata: bytes, strtab: str, xindex: tuple[int, ...] | None,
                    secnames: list[str], path: str) -> list[KSym]:
    """The hot loop: ~150k iterations for a vmlinux."""
    nsec = len(secnames)
    rows = layout.sym.iter_unpack(symdata)
    next(rows, None)  # the null symbol
    special = {int(k): v for k, v in _SPECIAL_SHNDX.items()}
    find = strtab.find
    strlen = len(strtab)
    names: dict[int, str] = {}
    symbols: list[KSym] = []
    append = symbols.append
    lo_reserve, x_index = SHN.LORESERVE, SHN.XINDEX
    is64 = layout.is64
    for index, row in enumerate(rows, 1):
        if is64:
            st_name, info, _other, shndx, value, size = row
        else:
            st_name, value, size, info, _other, shndx = row
        name = names.get(st_name)
        if name is None:
            if st_name >= strlen:
                raise SymtabError(f"{path}: symbol [{index}] name offset {st_name:#x} is outside its string table")
            end = find("\0", st_name)
            if end < 0:
                raise SymtabError(f"{path}: symbol [{index}] name is not NUL-terminated")
            name = names[st_name] = strtab[st_name:end]
        if shndx == x_index:
            if xindex is None:
                raise SymtabError(f"{path}: symbol [{index}] uses SHN_XINDEX but there is no .symtab_shndx")
            shndx = xindex[index]
            section = secnames[shndx] if 0 < shndx < nsec else None
        elif 0 < shndx < lo_reserve:
            section = secnames[shndx] if shndx < nsec else None
        else:
            section = special.get(shndx) or f"{shndx:#x}"
        if section is None:
            raise SymtabError(f"{path}: symbol {name or f'[{index}]'!r}: section index {shndx} out of range")
        append(KSym(name, info & 0xF, info >> 4, value, size, shndx, section, index))
    return symbols

