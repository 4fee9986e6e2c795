"""Property: no byte sequence makes the ELF reader or writer crash.

Mutated corpus objects (and model-built ELF32 / big-endian ones): random byte
flips, truncations, and overwrites of ELF header, section header, symbol and
relocation fields with boundary or random values.  ``parse_elf`` must either
return a model — which ``serialize`` then writes or refuses with
``ElfWriteError`` / ``ElfFormatError`` — or raise ``ElfFormatError``.  Any
other exception is a reader bug, to be fixed with a precise check.

Deterministic (``derandomize``) so CI runs the same inputs every time;
several thousand inputs in total.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pykpatch.elf import (
    ElfObject, GroupSection, Relocation, RelocationSection, Section, StringTableSection, Symbol,
    SymbolTableSection, SymtabShndxSection, parse_elf, serialize,
)
from pykpatch.elf.constants import EM, GRP_COMDAT, SHF, SHN, SHT, STB, STT, ElfClass, ElfData
from pykpatch.elf.structs import EHDR_FIELDS, SHDR_FIELDS, _FORMATS
from pykpatch.errors import ElfFormatError, ElfWriteError

# Small, varied corpus objects: fast to parse, so many inputs fit in the time budget.
CORPUS_SEEDS = [
    "cmdline-ubsan.ORIG.o", "clang-unnamed.ORIG.o", "plt32-relocations-issue-975.PATCHED.o",
    "import-ns.PATCHED.o", "meminfo-string.ORIG.o", "oot-issue-928.NOSTRIP.ORIG.o", "this_ip.ORIG.o",
]

# PYKPATCH_FUZZ_EXAMPLES=N raises the count; PYKPATCH_FUZZ_RANDOM=1 draws fresh inputs (for bug hunts).
FUZZ = settings(
    max_examples=int(os.environ.get("PYKPATCH_FUZZ_EXAMPLES", "2000")),
    derandomize=not os.environ.get("PYKPATCH_FUZZ_RANDOM"),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BOUNDARY = [0, 1, 2, 3, 4, 7, 8, 0x3F, 0x40, 0x7F, 0x80, 0xFF, 0x100, 0xFEFF, 0xFF00, 0xFF20, 0xFFF1,
            0xFFF2, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000,
            2**63 - 1, 2**63, 2**64 - 1]


def built_seed(elf_class: int, data: int, machine: int) -> bytes:
    """A small object through the model, for the 32-bit and big-endian code paths,
    with the section kinds the corpus lacks (a COMDAT group, .symtab_shndx)."""
    obj = ElfObject(elf_class, data, machine)
    word = 8 if elf_class == ElfClass.ELFCLASS64 else 4
    group = obj.add_section(GroupSection(".group", align=4, entsize=4))
    text = obj.add_section(Section(".text", SHT.PROGBITS, SHF.ALLOC | SHF.EXECINSTR | SHF.GROUP, bytes(32), align=16))
    dat = obj.add_section(Section(".data", SHT.PROGBITS, SHF.ALLOC | SHF.WRITE, bytes(16), align=word))
    strtab = obj.add_section(StringTableSection(".strtab", type=SHT.STRTAB))
    obj.symtab = obj.add_section(SymbolTableSection(".symtab", type=SHT.SYMTAB, align=word, link=strtab,
                                                    entsize=obj.layout.sym.size))
    obj.add_symbol(Symbol("seed.c", STB.LOCAL, STT.FILE, shndx=SHN.ABS))
    sec_sym = obj.add_symbol(Symbol("", STB.LOCAL, STT.SECTION, text))
    local = obj.add_symbol(Symbol("local_fn", STB.LOCAL, STT.FUNC, text, value=16, size=16))
    glob = obj.add_symbol(Symbol("global_fn", STB.GLOBAL, STT.FUNC, text, size=16))
    ext = obj.add_symbol(Symbol("external", STB.GLOBAL))
    group.group_flags, group.members, group.signature = GRP_COMDAT, [text], glob
    group.link = obj.symtab
    shndx = obj.add_section(SymtabShndxSection(".symtab_shndx", type=SHT.SYMTAB_SHNDX, align=4, entsize=4))
    shndx.link = obj.symtab
    for target, rela in ((text, True), (dat, False)):
        sec = obj.add_section(RelocationSection((".rela" if rela else ".rel") + target.name, target=target,
                                                rela=rela, flags=SHF.INFO_LINK, align=word, link=obj.symtab))
        sec.relocations = [Relocation(0, 1, ext, 4 if rela else 0), Relocation(word, 1, local),
                           Relocation(2 * word, 1, sec_sym), Relocation(3 * word, 1, glob)]
        target.rela = sec
    return serialize(obj)


SEEDS: list[bytes] = []  # filled once per module; drawn by index so failures print short


@pytest.fixture(scope="module", autouse=True)
def _load_seeds(corpus_dir):
    blobs = [(corpus_dir / name).read_bytes() for name in CORPUS_SEEDS]
    blobs += [built_seed(ElfClass.ELFCLASS32, ElfData.ELFDATA2MSB, EM.PPC),
              built_seed(ElfClass.ELFCLASS64, ElfData.ELFDATA2MSB, EM.S390),
              built_seed(ElfClass.ELFCLASS32, ElfData.ELFDATA2LSB, EM.X86_386)]
    for blob in blobs:  # every seed is itself valid
        parse_elf(blob)
    SEEDS[:] = blobs


def draw_seed(data) -> bytes:
    return SEEDS[data.draw(st.integers(0, len(SEEDS) - 1), label="seed index")]


def check(blob: bytes) -> None:
    """The property.  Anything but the two typed errors escapes and fails the test.

    The reader's last-resort net (``malformed ELF (IndexError: ...)``) counts
    as a failure too: each problem must be caught by a precise check.
    """
    try:
        obj = parse_elf(bytes(blob), "fuzz.o")
    except ElfFormatError as err:
        assert not err.problem.startswith("malformed ELF ("), f"reader safety net hit: {err}"
        return
    try:
        serialize(obj)
    except (ElfWriteError, ElfFormatError):
        pass


# -- where the fields are -----------------------------------------------------------------

def _fields(fmt: str, names: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """(name, offset, struct code) of each field of a packed record."""
    out, offset = [], 0
    codes = [c for c in fmt.replace("16s", "s") if c.isalpha()]
    for name, code in zip(names, codes):
        if code == "s":
            out.append((name, offset, "16s"))
            offset += 16
        else:
            out.append((name, offset, code))
            offset += struct.calcsize("<" + code)
    return out


def layout_of(blob: bytes):
    is64 = blob[4] == ElfClass.ELFCLASS64
    fmts = _FORMATS[ElfClass.ELFCLASS64 if is64 else ElfClass.ELFCLASS32]
    endian = ">" if blob[5] == ElfData.ELFDATA2MSB else "<"
    return is64, fmts, endian


def put(blob: bytearray, offset: int, code: str, endian: str, value: int) -> None:
    size = struct.calcsize("<" + code)
    if 0 <= offset and offset + size <= len(blob):
        struct.pack_into(endian + code.upper(), blob, offset, value % (1 << (8 * size)))


def section_headers(blob: bytes) -> tuple[int, int, list[tuple]]:
    is64, fmts, endian = layout_of(blob)
    ehdr = struct.unpack_from(endian + fmts["ehdr"], blob, 0)
    shoff, shnum = ehdr[6], ehdr[12]
    shdr = struct.Struct(endian + fmts["shdr"])
    return shoff, shdr.size, [shdr.unpack_from(blob, shoff + i * shdr.size) for i in range(shnum)]


values = st.one_of(st.sampled_from(BOUNDARY), st.integers(0, 2**64 - 1), st.integers(0, 0x1000))


# -- properties -------------------------------------------------------------------------------

@FUZZ
@given(data=st.data())
def test_byte_flips(data):
    blob = bytearray(draw_seed(data))
    for _ in range(data.draw(st.integers(1, 16))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] ^= data.draw(st.integers(1, 255))
    check(blob)


@FUZZ
@given(data=st.data())
def test_truncation(data):
    blob = draw_seed(data)
    check(blob[: data.draw(st.integers(0, len(blob)))])


@FUZZ
@given(data=st.data())
def test_elf_header_fields(data):
    blob = bytearray(draw_seed(data))
    is64, fmts, endian = layout_of(blob)
    fields = [f for f in _fields(fmts["ehdr"], EHDR_FIELDS) if f[2] != "16s"]
    fields += [("ei_class", 4, "B"), ("ei_data", 5, "B"), ("ei_version", 6, "B")]
    for _ in range(data.draw(st.integers(1, 3))):
        _name, offset, code = data.draw(st.sampled_from(fields))
        put(blob, offset, code, endian, data.draw(values))
    check(blob)


@FUZZ
@given(data=st.data())
def test_section_header_fields(data):
    blob = bytearray(draw_seed(data))
    is64, fmts, endian = layout_of(blob)
    shoff, shsize, headers = section_headers(blob)
    fields = _fields(fmts["shdr"], SHDR_FIELDS)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(headers) - 1))
        _name, offset, code = data.draw(st.sampled_from(fields))
        put(blob, shoff + index * shsize + offset, code, endian, data.draw(values))
    check(blob)


@FUZZ
@given(data=st.data())
def test_symbol_and_relocation_fields(data):
    """Overwrite fields of entries of .symtab, .symtab_shndx, relocation and group sections."""
    blob = bytearray(draw_seed(data))
    is64, fmts, endian = layout_of(blob)
    _, _, headers = section_headers(blob)
    tables = [h for h in headers if h[1] in (SHT.SYMTAB, SHT.RELA, SHT.REL, SHT.GROUP, SHT.SYMTAB_SHNDX) and h[5]]
    for _ in range(data.draw(st.integers(1, 4))):
        h = data.draw(st.sampled_from(tables))
        kind = h[1]
        if kind == SHT.SYMTAB:
            fmt, names = fmts["sym"], (("st_name", "st_info", "st_other", "st_shndx", "st_value", "st_size") if is64
                                       else ("st_name", "st_value", "st_size", "st_info", "st_other", "st_shndx"))
        elif kind in (SHT.RELA, SHT.REL):
            fmt = fmts["rela" if kind == SHT.RELA else "rel"]
            names = ("r_offset", "r_info", "r_addend")[: len(fmt)]
        else:
            fmt, names = "I", ("word",)
        entry = struct.calcsize("<" + fmt)
        index = data.draw(st.integers(0, max(0, h[5] // entry - 1)))
        _name, offset, code = data.draw(st.sampled_from(_fields(fmt, names)))
        value = data.draw(values)
        if names[0] == "r_offset" and _name == "r_info" and data.draw(st.booleans()):
            value = data.draw(st.integers(0, 0x10000)) << (32 if is64 else 8) | data.draw(st.integers(0, 0x30))
        put(blob, h[4] + index * entry + offset, code, endian, value)
    check(blob)


@FUZZ
@given(data=st.data())
def test_mixed_damage(data):
    """Several kinds of damage at once, then possibly a truncation."""
    blob = bytearray(draw_seed(data))
    is64, fmts, endian = layout_of(blob)
    shoff, shsize, headers = section_headers(blob)
    shdr_fields = _fields(fmts["shdr"], SHDR_FIELDS)
    for _ in range(data.draw(st.integers(1, 6))):
        if data.draw(st.booleans()):
            index = data.draw(st.integers(0, len(headers) - 1))
            _name, offset, code = data.draw(st.sampled_from(shdr_fields))
            put(blob, shoff + index * shsize + offset, code, endian, data.draw(values))
        else:
            h = data.draw(st.sampled_from(headers[1:]))
            if h[5] and h[1] != SHT.NOBITS:
                pos = h[4] + data.draw(st.integers(0, h[5] - 1))
                if pos < len(blob):
                    blob[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del blob[data.draw(st.integers(0, len(blob))):]
    check(blob)
