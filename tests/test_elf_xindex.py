"""Extended section numbering: objects with 0xff00 sections or more.

gABI: past SHN_LORESERVE sections, e_shnum is 0 and the count lives in sh_size
of section header 0, e_shstrndx is SHN_XINDEX with the index in sh_link of
header 0, and symbols of such sections carry SHN_XINDEX with the real index in
.symtab_shndx.  A kernel object built with -ffunction-sections can get there.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from pykpatch.elf import (
    ElfObject,
    Relocation,
    Section,
    StringTableSection,
    Symbol,
    SymbolTableSection,
    SymtabShndxSection,
    parse_elf,
    read_elf,
    serialize,
    write_elf,
)
from pykpatch.elf.constants import SHF, SHN, SHT, STB, STT

NSECTIONS = 70_000  # > 0xff00 = 65280: well into extended numbering


def many_sections(count: int) -> ElfObject:
    """``count`` one-byte text sections, each with a local and a global symbol, plus a relocation."""
    obj = ElfObject()
    for i in range(count):
        sec = obj.add_section(Section(f".text.f{i}", SHT.PROGBITS, SHF.ALLOC | SHF.EXECINSTR, b"\xc3"))
        obj.add_symbol(Symbol(f"f{i}", STB.GLOBAL, STT.FUNC, sec, size=1))
        if i % 1000 == 0:
            obj.add_symbol(Symbol(f"local{i}", STB.LOCAL, STT.FUNC, sec, size=1))
    strtab = obj.add_section(StringTableSection(".strtab", type=SHT.STRTAB))
    obj.symtab = obj.add_section(SymbolTableSection(".symtab", type=SHT.SYMTAB, align=8, entsize=24, link=strtab))
    obj.shstrtab = obj.add_section(StringTableSection(".shstrtab", type=SHT.STRTAB))
    data = obj.add_section(Section(".data", SHT.PROGBITS, SHF.ALLOC | SHF.WRITE, b"\0" * 8, align=8))
    last = obj.symbol_map()[f"f{count - 1}"]
    obj.ensure_relocation_section(data).relocations.append(Relocation(0, 1, last, 0))  # R_X86_64_64
    return obj


@pytest.fixture(scope="module")
def big_object(tmp_path_factory):
    path = tmp_path_factory.mktemp("xindex") / "many.o"
    start = time.perf_counter()
    write_elf(many_sections(NSECTIONS), path)
    return path, time.perf_counter() - start


def readelf(*args: str) -> str:
    proc = subprocess.run(["readelf", *args], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    return proc.stdout


def test_header_carries_the_real_count(big_object):
    path, _ = big_object
    header = readelf("-h", str(path))
    m = re.search(r"Number of section headers:\s+0 \((\d+)\)", header)
    assert m, header
    total = int(m.group(1))
    assert total == NSECTIONS + 7  # null + sections + .strtab .symtab .shstrtab .data .rela.data .symtab_shndx
    m = re.search(r"Section header string table index:\s+65535 \((\d+)\)", header)
    assert m and int(m.group(1)) == NSECTIONS + 3


def test_symbols_point_at_their_sections(big_object):
    path, _ = big_object
    obj = read_elf(path)
    assert len(obj.sections) == NSECTIONS + 6
    assert any(isinstance(s, SymtabShndxSection) for s in obj.sections)
    syms = obj.symbol_map()
    for i in (0, 1, 0xFEFE, 0xFEFF, 0xFF00, 0xFFFF, 0x10000, NSECTIONS - 1):
        sym = syms[f"f{i}"]
        assert sym.section.name == f".text.f{i}" and sym.section.index == i + 1
    assert syms["local69000"].section.name == ".text.f69000"
    rela = obj.find_section(".rela.data")
    assert rela.relocations[0].symbol is syms[f"f{NSECTIONS - 1}"]
    # readelf agrees, through .symtab_shndx
    out = readelf("-sW", str(path))
    assert re.search(rf"FUNC\s+GLOBAL\s+DEFAULT\s+{NSECTIONS} f{NSECTIONS - 1}$", out, re.M)


def test_rewrite_is_a_fixed_point(big_object):
    path, _ = big_object
    blob = path.read_bytes()
    assert serialize(parse_elf(blob)) == blob


def test_ld_accepts_it(big_object, tmp_path):
    path, write_seconds = big_object
    start = time.perf_counter()
    proc = subprocess.run(["ld", "-r", "-o", str(tmp_path / "linked.o"), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    linked = read_elf(tmp_path / "linked.o")
    assert linked.symbol_map()[f"f{NSECTIONS - 1}"].section.name == f".text.f{NSECTIONS - 1}"
    print(f"write {write_seconds:.2f} s, ld -r {time.perf_counter() - start:.2f} s")


@pytest.mark.parametrize("headers", [0xFEFF, 0xFF00])
def test_boundary(headers):
    """0xfeff section headers still fit e_shnum; from 0xff00 on, extended numbering."""
    count = headers - 6  # + null, .strtab, .symtab, .shstrtab, .data, .rela.data
    blob = serialize(many_sections(count))
    back = parse_elf(blob)
    extended = headers >= SHN.LORESERVE
    assert len(back.sections) + 1 == headers + extended  # the writer adds .symtab_shndx only when needed
    assert (int.from_bytes(blob[0x3C:0x3E], "little") == 0) == extended  # e_shnum
    assert any(isinstance(s, SymtabShndxSection) for s in back.sections) == extended
    assert back.symbol_map()[f"f{count - 1}"].section.name == f".text.f{count - 1}"
