"""Damage to ELF files, shared by the fuzz tests and ``bench/fuzz.py``.

A mutator takes a ``bytearray`` holding an ELF file, an ``ElfView`` of the
valid seed it came from (where the headers and tables are) and a ``Draw``
(where its choices come from: hypothesis in the tests, ``random.Random`` in
the benchmark), and overwrites part of the file in place.  Values are drawn
from three pools: boundary values, arbitrary 64-bit numbers, and values
*plausible for that field of that object* (an index of an existing section,
a known relocation type, an offset near the end of the target section...).
The plausible pool is what reaches the diff engine: random numbers are
refused by the reader's first checks, plausible ones get through them.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pykpatch.arch import generic_arch
from pykpatch.elf.constants import SHF, SHN, SHT, STB, STT, ElfClass, ElfData
from pykpatch.elf.structs import _FORMATS, EHDR_FIELDS, SHDR_FIELDS, SYM32_FIELDS, SYM64_FIELDS

T = TypeVar("T")

BOUNDARY = [0, 1, 2, 3, 4, 7, 8, 0x3F, 0x40, 0x7F, 0x80, 0xFF, 0x100, 0xFEFF, 0xFF00, 0xFF20, 0xFFF1,
            0xFFF2, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000,
            2**63 - 1, 2**63, 2**64 - 1]

SECTION_TYPES = [SHT.NULL, SHT.PROGBITS, SHT.SYMTAB, SHT.STRTAB, SHT.RELA, SHT.NOBITS, SHT.REL, SHT.NOTE,
                 SHT.GROUP, SHT.SYMTAB_SHNDX, 0x6FFFFFF5]
SECTION_FLAG_BITS = [SHF.WRITE, SHF.ALLOC, SHF.EXECINSTR, SHF.MERGE, SHF.STRINGS, SHF.INFO_LINK,
                     SHF.LINK_ORDER, SHF.GROUP, SHF.TLS]
SPECIAL_SHNDX = [SHN.UNDEF, SHN.ABS, SHN.COMMON, SHN.XINDEX, SHN.LIVEPATCH, SHN.LORESERVE]


class Draw(Protocol):
    """Where a mutator's choices come from."""

    def integer(self, lo: int, hi: int) -> int: ...

    def boolean(self) -> bool: ...

    def pick(self, items: Sequence[T]) -> T: ...


class HypothesisDraw:
    """Choices drawn from hypothesis (``st.data()``): shrinkable, derandomizable."""

    def __init__(self, data) -> None:
        from hypothesis import strategies as st

        self.data = data
        # One strategy drawn and folded into each range: building st.integers(lo, hi)
        # anew for every draw costs more than the case being tested.
        self.word = st.integers(0, 2**64 - 1)

    def integer(self, lo: int, hi: int) -> int:
        return lo + self.data.draw(self.word) % (hi - lo + 1)

    def boolean(self) -> bool:
        return self.integer(0, 1) == 1

    def pick(self, items: Sequence[T]) -> T:
        return items[self.integer(0, len(items) - 1)]


class RandomDraw:
    """Choices drawn from a seeded ``random.Random``: fast, for the long benchmark run."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def boolean(self) -> bool:
        return self.rng.random() < 0.5

    def pick(self, items: Sequence[T]) -> T:
        return items[self.rng.randrange(len(items))]


@dataclass
class Table:
    """One table-shaped section of the seed: its header fields and record layout."""

    index: int
    header: tuple  # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, ...
    fmt: str
    fields: tuple[str, ...]

    @property
    def entry_size(self) -> int:
        return struct.calcsize("<" + self.fmt)

    @property
    def count(self) -> int:
        return self.header[5] // self.entry_size


class ElfView:
    """Where things are in a valid seed, read once before it is damaged."""

    def __init__(self, blob: bytes) -> None:
        self.is64 = blob[4] == ElfClass.ELFCLASS64
        self.fmts = _FORMATS[ElfClass.ELFCLASS64 if self.is64 else ElfClass.ELFCLASS32]
        self.endian = ">" if blob[5] == ElfData.ELFDATA2MSB else "<"
        ehdr = struct.unpack_from(self.endian + self.fmts["ehdr"], blob, 0)
        self.machine = ehdr[2]
        self.shoff, shnum = ehdr[6], ehdr[12]
        shdr = struct.Struct(self.endian + self.fmts["shdr"])
        self.shdr_size = shdr.size
        self.headers = [shdr.unpack_from(blob, self.shoff + i * shdr.size) for i in range(shnum)]
        self.relocation_types = sorted(generic_arch(self.machine).relocs) or list(range(12))
        self.info_shift = 32 if self.is64 else 8
        self.tables = [t for t in (self.table(i, h) for i, h in enumerate(self.headers)) if t is not None]
        symtab = next((t for t in self.tables if t.header[1] == SHT.SYMTAB), None)
        self.symbol_count = symtab.count if symtab is not None else 0

    def table(self, index: int, header: tuple) -> Table | None:
        kind, size = header[1], header[5]
        if not size:
            return None
        if kind == SHT.SYMTAB:
            return Table(index, header, self.fmts["sym"], SYM64_FIELDS if self.is64 else SYM32_FIELDS)
        if kind in (SHT.RELA, SHT.REL):
            fmt = self.fmts["rela" if kind == SHT.RELA else "rel"]
            return Table(index, header, fmt, ("r_offset", "r_info", "r_addend")[: len(fmt)])
        if kind in (SHT.GROUP, SHT.SYMTAB_SHNDX):
            return Table(index, header, "I", ("word",))
        return None

    def section_size(self, index: int) -> int:
        return self.headers[index][5] if 0 <= index < len(self.headers) else 0

    def put(self, blob: bytearray, offset: int, code: str, value: int) -> None:
        """Store ``value`` (wrapped to the field's width) if the field is still inside the file."""
        size = struct.calcsize("<" + code)
        if offset >= 0 and offset + size <= len(blob):
            struct.pack_into(self.endian + code.upper(), blob, offset, value % (1 << (8 * size)))


def record_fields(fmt: str, names: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """(name, offset, struct code) of each field of a packed record."""
    out, offset = [], 0
    codes = [c for c in fmt.replace("16s", "s") if c.isalpha()]
    for name, code in zip(names, codes, strict=True):
        if code == "s":
            out.append((name, offset, "16s"))
            offset += 16
        else:
            out.append((name, offset, code))
            offset += struct.calcsize("<" + code)
    return out


# -- values -----------------------------------------------------------------------------------

def any_value(d: Draw) -> int:
    kind = d.integer(0, 2)
    if kind == 0:
        return d.pick(BOUNDARY)
    if kind == 1:
        return d.integer(0, 2**64 - 1)
    return d.integer(0, 0x1000)


def near(d: Draw, base: int, spread: int = 8) -> int:
    return max(0, base + d.integer(-spread, spread))


def plausible_section_field(d: Draw, view: ElfView, name: str, header: tuple) -> int:
    """A value the reader's range checks may well accept for this section header field."""
    nsec = len(view.headers)
    if name in ("sh_link", "sh_info"):
        return d.integer(0, nsec)
    if name == "sh_type":
        return d.pick(SECTION_TYPES)
    if name == "sh_flags":
        return header[2] ^ d.pick(SECTION_FLAG_BITS)
    if name == "sh_size":
        return near(d, header[5], 16) if d.boolean() else view.section_size(d.integer(0, nsec - 1))
    if name == "sh_entsize":
        return d.pick([0, 1, 4, 8, 12, 16, 24, header[9]])
    if name == "sh_addralign":
        return d.pick([0, 1, 2, 4, 8, 16, 32, 3, 4096])
    if name == "sh_name":
        return near(d, header[0], 4)
    return near(d, header[view_field_index(name)], 16)


def view_field_index(name: str) -> int:
    return SHDR_FIELDS.index(name)


def plausible_table_field(d: Draw, view: ElfView, table: Table, name: str, record: tuple) -> int:
    """A value for a symbol, relocation or group field that stays inside the object's ranges."""
    nsec, nsym = len(view.headers), view.symbol_count
    if name == "r_info":
        sym = record[1] >> view.info_shift if d.boolean() else d.integer(0, nsym)
        rtype = record[1] & ((1 << view.info_shift) - 1) if d.boolean() else d.pick(view.relocation_types)
        return sym << view.info_shift | rtype
    if name == "r_offset":
        target = view.section_size(table.header[7])
        return d.pick([near(d, target, 8), d.integer(0, max(0, target)), near(d, record[0], 4)])
    if name == "r_addend":
        return near(d, record[2], 64) if len(record) > 2 else 0
    if name == "st_shndx":
        return d.integer(0, nsec) if d.boolean() else d.pick(SPECIAL_SHNDX)
    if name == "st_info":
        return d.pick(list(STB)) << 4 | d.pick([STT.NOTYPE, STT.OBJECT, STT.FUNC, STT.SECTION, STT.FILE, STT.TLS])
    if name in ("st_value", "st_size"):
        return near(d, record[table.fields.index(name)], 16) if d.boolean() else view.section_size(
            d.integer(0, nsec - 1))
    if name == "st_other":
        return d.integer(0, 3)
    if name == "word":  # group flags or member, .symtab_shndx entry
        return d.integer(0, nsec)
    return near(d, record[table.fields.index(name)], 16)


def field_value(d: Draw, plausible: Callable[[], int]) -> int:
    return plausible() if d.integer(0, 2) else any_value(d)


# -- mutators -----------------------------------------------------------------------------------

def flip_bytes(blob: bytearray, view: ElfView, d: Draw) -> None:
    for _ in range(d.integer(1, 16)):
        pos = d.integer(0, len(blob) - 1)
        blob[pos] ^= d.integer(1, 255)


def truncate(blob: bytearray, view: ElfView, d: Draw) -> None:
    del blob[d.integer(0, len(blob)):]


def elf_header_field(blob: bytearray, view: ElfView, d: Draw) -> None:
    fields = [f for f in record_fields(view.fmts["ehdr"], EHDR_FIELDS) if f[2] != "16s"]
    fields += [("ei_class", 4, "B"), ("ei_data", 5, "B"), ("ei_version", 6, "B")]
    _name, offset, code = d.pick(fields)
    view.put(blob, offset, code, any_value(d))


def section_header_field(blob: bytearray, view: ElfView, d: Draw) -> None:
    index = d.integer(0, len(view.headers) - 1)
    header = view.headers[index]
    name, offset, code = d.pick(record_fields(view.fmts["shdr"], SHDR_FIELDS))
    value = field_value(d, lambda: plausible_section_field(d, view, name, header))
    view.put(blob, view.shoff + index * view.shdr_size + offset, code, value)


def table_field(blob: bytearray, view: ElfView, d: Draw) -> None:
    """A field of an entry of .symtab, .symtab_shndx, a relocation or a group section."""
    if not view.tables:
        return flip_bytes(blob, view, d)
    table = d.pick(view.tables)
    index = d.integer(0, max(0, table.count - 1))
    at = table.header[4] + index * table.entry_size
    if at + table.entry_size > len(blob):
        return None
    record = struct.unpack_from(view.endian + table.fmt, blob, at)
    name, offset, code = d.pick(record_fields(table.fmt, table.fields))
    value = field_value(d, lambda: plausible_table_field(d, view, table, name, record))
    view.put(blob, at + offset, code, value)
    return None


def section_bytes(blob: bytearray, view: ElfView, d: Draw) -> None:
    """Overwrite a byte of some section's contents (code, data, strings, tables)."""
    header = d.pick(view.headers[1:]) if len(view.headers) > 1 else None
    if header is None or not header[5] or header[1] == SHT.NOBITS:
        return
    pos = header[4] + d.integer(0, header[5] - 1)
    if pos < len(blob):
        blob[pos] = d.integer(0, 255)


Mutator = Callable[[bytearray, ElfView, Draw], None]
STRUCTURAL: tuple[Mutator, ...] = (section_header_field, table_field, section_bytes)


def mixed_damage(blob: bytearray, view: ElfView, d: Draw, mutators: Sequence[Mutator] = STRUCTURAL,
                 most: int = 6) -> None:
    """Several mutations of the given kinds, then possibly a truncation."""
    for _ in range(d.integer(1, most)):
        d.pick(mutators)(blob, view, d)
    if d.integer(0, 7) == 0:
        truncate(blob, view, d)


def mutated(seed: bytes, d: Draw, mutator: Mutator, repeat: tuple[int, int] = (1, 1)) -> bytearray:
    """A damaged copy of ``seed``: ``mutator`` applied a drawn number of times."""
    blob = bytearray(seed)
    view = ElfView(seed)
    for _ in range(d.integer(*repeat)):
        mutator(blob, view, d)
    return blob


class FieldEditor:
    """One valid ELF64 little-endian file, edited field by field by section and symbol name.

    For the targeted regression tests: ``FieldEditor(blob).set_header(".rela.text", "sh_info", 0)``.
    Indexes are those of the valid file (read once with ``parse_elf``).
    """

    def __init__(self, blob: bytes) -> None:
        from pykpatch.elf import parse_elf

        obj = parse_elf(blob)
        self.bytes = bytearray(blob)
        self.view = ElfView(blob)
        self.index = {sec.name: sec.index for sec in obj.sections}
        self.symbol_index = {sym.name: sym.index for sym in obj.symbols if sym.name}

    def header(self, section: str) -> tuple:
        return self.view.headers[self.index[section]]

    def set_header(self, section: str, field: str, value: int) -> FieldEditor:
        offset, code = _field(self.view.fmts["shdr"], SHDR_FIELDS, field)
        self.view.put(self.bytes, self.view.shoff + self.index[section] * self.view.shdr_size + offset, code, value)
        return self

    def set_entry(self, section: str, entry: int, fmt: str, names: tuple[str, ...], field: str,
                  value: int) -> FieldEditor:
        offset, code = _field(fmt, names, field)
        self.view.put(self.bytes, self.header(section)[4] + entry * struct.calcsize("<" + fmt) + offset, code, value)
        return self

    def set_relocation(self, entry: int, field: str, value: int, section: str = ".rela.text") -> FieldEditor:
        return self.set_entry(section, entry, "QQq", ("r_offset", "r_info", "r_addend"), field, value)

    def relocation(self, entry: int, section: str) -> tuple[int, int, int]:
        """(r_offset, r_info, r_addend) of one entry, as it is now."""
        return struct.unpack_from("<QQq", self.bytes, self.header(section)[4] + 24 * entry)

    def set_symbol(self, entry: int | str, field: str, value: int) -> FieldEditor:
        index = self.symbol_index[entry] if isinstance(entry, str) else entry
        return self.set_entry(".symtab", index, "IBBHQQ", SYM64_FIELDS, field, value)

    def parse(self, **kwargs):
        from pykpatch.elf import parse_elf

        return parse_elf(bytes(self.bytes), "test.o", **kwargs)


def _field(fmt: str, names: tuple[str, ...], field: str) -> tuple[int, str]:
    (offset, code), = [(o, c) for n, o, c in record_fields(fmt, names) if n == field]
    return offset, code
