"""Symbol tables from ``readelf -s --wide`` dumps (kpatch-build's symtab format)."""

from __future__ import annotations

import re

from pykpatch.elf.constants import SHN
from pykpatch.errors import SymtabError
from pykpatch.symtab.table import KSym

# "   12: ffffffff81000000   123 FUNC    LOCAL  DEFAULT    1 name"
# Type/Bind can be "<OS specific>: 11"; Vis can carry "[...]" notes (ppc64
# localentry, aarch64 VARIANT_PCS); Ndx can be "OS [0xff20]" (SHN_LIVEPATCH).
_SYMBOL_LINE = re.compile(
    r"\s*(\d+):\s+([0-9a-fA-F]+)\s+(0x[0-9a-fA-F]+|\d+)"
    r"\s+(<[^>]*>: \d+|\S+)\s+(<[^>]*>: \d+|\S+)\s+(\S+)(?:\s+\[[^\]]*\])*"
    r"\s+((?:PRC|OS |RSV|LOOS|HIOS)\s?\[0x[0-9a-fA-F]+\]|\S+)(?: (.*))?$"
)
_TABLE_HEADER = re.compile(r"Symbol table '([^']*)' contains (\d+) entr(?:y|ies)")
_TYPES = {"NOTYPE": 0, "OBJECT": 1, "FUNC": 2, "SECTION": 3, "FILE": 4, "COMMON": 5, "TLS": 6,
          "IFUNC": 10, "GNU_IFUNC": 10}
_BINDS = {"LOCAL": 0, "GLOBAL": 1, "WEAK": 2, "UNIQUE": 10, "GNU_UNIQUE": 10}
_NDX = {"UND": SHN.UNDEF, "ABS": SHN.ABS, "COM": SHN.COMMON}


def _enum_field(text: str, table: dict[str, int], what: str, path: str, lineno: int) -> int:
    value = table.get(text)
    if value is not None:
        return value
    m = re.fullmatch(r"<[^>]*>: (\d+)", text)
    if m:
        return int(m.group(1))
    raise SymtabError(f"{path}: line {lineno}: unknown symbol {what} {text!r}")


def _parse_ndx(text: str, path: str, lineno: int) -> int:
    if text.isdigit():
        return int(text)
    special = _NDX.get(text)
    if special is not None:
        return int(special)
    m = re.search(r"\[(0x[0-9a-fA-F]+)\]", text)
    if m:
        return int(m.group(1), 16)
    raise SymtabError(f"{path}: line {lineno}: bad section index {text!r}")


def parse_readelf_dump(raw: bytes, path: str) -> list[KSym]:
    not_dump = f"{path}: not an ELF file and not a `readelf -s --wide` dump"
    if not raw.strip() or b"\0" in raw:
        raise SymtabError(not_dump + (" (empty file)" if not raw.strip() else ""))
    text = raw.decode("latin-1")
    symbols: list[KSym] = []
    append = symbols.append
    match = _SYMBOL_LINE.match
    types, binds = _TYPES, _BINDS
    in_table = False  # inside a table we keep (.symtab, or a table of a headerless dump)
    skipping = False  # inside .dynsym: a subset of .symtab on some arches, skipped as kpatch does
    expected: int | None = None
    seen_table = False
    counted = 0
    header_line = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        m = match(line)
        if m is None:
            stripped = line.strip()
            head = _TABLE_HEADER.match(stripped)
            if head:
                if expected is not None and counted != expected:
                    raise SymtabError(f"{path}: line {header_line}: table says {expected} entries, found {counted}")
                skipping = head.group(1) == ".dynsym"
                in_table = not skipping
                expected = None if skipping else int(head.group(2))
                counted = 0
                header_line = lineno
                seen_table = seen_table or in_table
                continue
            if not stripped or stripped.startswith(("Num:", "File:")):
                continue
            if in_table or skipping or symbols:
                raise SymtabError(f"{path}: line {lineno}: malformed symbol line: {stripped[:80]!r}")
            raise SymtabError(not_dump)
        if skipping:
            continue
        counted += 1
        num, value, size, stype, bind, _vis, ndx, name = m.groups()
        index = int(num)
        if index == 0:
            continue  # the null symbol
        name = (name or "").rstrip()
        if name.endswith("[...]"):
            raise SymtabError(f"{path}: line {lineno}: symbol name {name!r} is truncated; "
                              "dump the table with `readelf -s --wide`")
        t = types.get(stype)
        if t is None:
            t = _enum_field(stype, types, "type", path, lineno)
        b = binds.get(bind)
        if b is None:
            b = _enum_field(bind, binds, "binding", path, lineno)
        shndx = int(ndx) if ndx.isdigit() else _parse_ndx(ndx, path, lineno)
        append(KSym(name, t, b, int(value, 16), int(size, 0) if size[:2] == "0x" else int(size),
                    shndx, ndx, index))
    if expected is not None and counted != expected:
        raise SymtabError(f"{path}: line {header_line}: table says {expected} entries, found {counted} "
                          "(truncated dump?)")
    if not symbols and not seen_table:
        raise SymtabError(not_dump)
    return symbols
