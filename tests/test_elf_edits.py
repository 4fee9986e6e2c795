"""Editing the model (what the diff stages do) and the writer's guarantees.

After removing sections or symbols, adding symbols out of order or adding
relocation sections, the written object must be valid — locals first with
.symtab sh_info = first non-local, relocation sections linked to .symtab and
to their target — and an inconsistent model must raise ``ElfWriteError``
rather than produce a corrupt file.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from pykpatch.elf import (
    ElfObject,
    GroupSection,
    Relocation,
    RelocationSection,
    Section,
    StringTableSection,
    Symbol,
    SymbolTableSection,
    parse_elf,
    read_elf,
    serialize,
    write_elf,
)
from pykpatch.elf.constants import GRP_COMDAT, SHF, SHT, STB, STT
from pykpatch.errors import ElfWriteError

R_X86_64_64 = 1
SMALL = "cmdline-ubsan.ORIG.o"


@pytest.fixture
def small(corpus_dir):
    return read_elf(corpus_dir / SMALL)


def check_valid(path, tmp_path) -> str:
    """readelf reads it without complaint and ld -r accepts it; return readelf -SsrW."""
    proc = subprocess.run(["readelf", "-SsrW", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    ld = subprocess.run(["ld", "-r", "-o", str(tmp_path / "linked.o"), str(path)], capture_output=True, text=True)
    assert ld.returncode == 0, ld.stderr
    return proc.stdout


def symtab_layout(blob: bytes) -> tuple[int, list[int]]:
    """(sh_info of .symtab, binding of every entry) straight from the bytes."""
    obj = parse_elf(blob)
    raw = obj.layout.shdr.unpack_from(blob, obj.layout.ehdr.unpack_from(blob)[6] + obj.symtab.index * 64)
    binds = [entry[1] >> 4 for entry in obj.layout.sym.iter_unpack(obj.symtab.data)]
    return raw[7], binds


def reloc_view(obj: ElfObject) -> dict[str, list[tuple]]:
    return {sec.name + f"@{sec.target.name}": [(r.offset, r.type, obj.symbol_name(r.symbol) if r.symbol else None, r.addend)
                                              for r in sec.relocations]
            for sec in obj.relocation_sections()}


def remove_with_dependents(obj: ElfObject, doomed: set[Section]) -> None:
    """Drop sections plus their relocation sections, SHF_LINK_ORDER dependents, symbols and references."""
    doomed = set(doomed)
    grew = True
    while grew:
        extra = {s for s in obj.sections if s not in doomed and (
            (isinstance(s, RelocationSection) and s.target in doomed) or
            (s.flags & SHF.LINK_ORDER and s.link in doomed))}
        grew = bool(extra)
        doomed |= extra
    gone = {id(sym) for sym in obj.symbols if sym.section in doomed}
    obj.remove_sections(doomed)  # drops the symbols defined in them too
    assert not any(id(sym) in gone for sym in obj.symbols)
    for sec in obj.relocation_sections():
        sec.relocations = [r for r in sec.relocations if r.symbol is None or id(r.symbol) not in gone]


def test_remove_section_and_dependents(small, tmp_path):
    init_text = small.find_section(".init.text")
    before = reloc_view(small)
    remove_with_dependents(small, {init_text})
    out = tmp_path / "edited.o"
    write_elf(small, out)
    listing = check_valid(out, tmp_path)
    assert not re.search(r"\s(\.init\.text|\.rela\.init\.text|proc_cmdline_init|__pfx_proc_cmdline_init)$", listing, re.M)
    assert listing.count("] __patchable_function_entries") == 1  # the SHF_LINK_ORDER one of .init.text went too
    back = read_elf(out)
    assert back.find_section(".init.text") is None
    # surviving relocations still name the same symbols (indexes were renumbered)
    after = reloc_view(back)
    assert after[".rela.text.cmdline_proc_show@.text.cmdline_proc_show"] == \
        before[".rela.text.cmdline_proc_show@.text.cmdline_proc_show"]
    assert after[".rela__mcount_loc@__mcount_loc"] == [(8, R_X86_64_64, ".text.cmdline_proc_show", 0x10)]


def test_remove_sections_drops_symbols_and_back_links(small):
    init_text = small.find_section(".init.text")
    rela = init_text.rela
    small.remove_sections({init_text, rela})
    assert all(sym.section is not init_text for sym in small.symbols)
    assert "proc_cmdline_init" not in small.symbol_map()
    # relocations elsewhere still point at the dropped symbols: the writer names the first one
    with pytest.raises(ElfWriteError, match=r"relocation in '\.rela\.initcall5\.init' at 0x0 refers to symbol '', "
                                            r"which is not in the symbol table"):
        serialize(small)


def test_removed_section_still_referenced_by_a_symbol(small):
    small.sections.remove(small.find_section(".init.text"))  # bypassing remove_sections
    with pytest.raises(ElfWriteError, match=r"symbol .* refers to section '\.init\.text', which is not in the object"):
        serialize(small)


def test_removed_section_still_linked(small):
    """SHF_LINK_ORDER __patchable_function_entries keeps an sh_link to the removed section."""
    init_text = small.find_section(".init.text")
    small.remove_sections({init_text, init_text.rela})
    small.symbols = [s for s in small.symbols if s.section is not init_text]
    for sec in small.relocation_sections():
        sec.relocations = [r for r in sec.relocations if r.symbol is None or r.symbol.section is not init_text]
    with pytest.raises(ElfWriteError, match=r"sh_link refers to section '\.init\.text'"):
        serialize(small)


def test_relocation_to_symbol_not_in_table(small):
    target = small.symbol_map()["seq_puts"]
    small.symbols.remove(target)
    with pytest.raises(ElfWriteError, match=r"refers to symbol 'seq_puts', which is not in the symbol table"):
        serialize(small)


def test_relocation_to_foreign_symbol(small):
    data = small.find_section(".data..Lubsan_type7")
    stranger = Symbol("never_added", STB.GLOBAL)
    small.ensure_relocation_section(data).relocations.append(Relocation(0, R_X86_64_64, stranger))
    with pytest.raises(ElfWriteError, match="never_added"):
        serialize(small)


def test_remove_unreferenced_symbols(small, tmp_path):
    doomed = {"__UNIQUE_ID___addressable_proc_cmdline_init246", "__pfx_cmdline_proc_show", "seq_putc"}
    referenced = {id(r.symbol) for sec in small.relocation_sections() for r in sec.relocations}
    victims = [s for s in small.symbols if s.name in doomed]
    assert len(victims) == 3 and not any(id(s) in referenced for s in victims[:2])
    # seq_putc is called: drop those calls too
    for sec in small.relocation_sections():
        sec.relocations = [r for r in sec.relocations if r.symbol not in victims]
    small.symbols = [s for s in small.symbols if s not in victims]
    out = tmp_path / "fewer.o"
    write_elf(small, out)
    listing = check_valid(out, tmp_path)
    assert not any(name in listing for name in doomed)
    assert len(read_elf(out).symbols) == 17


def test_locals_first_whatever_the_model_order(small, tmp_path):
    """A local appended after the globals is written before them; sh_info follows."""
    text = small.find_section(".text.cmdline_proc_show")
    small.symbols.insert(0, Symbol("new_global", STB.GLOBAL, STT.FUNC, text, value=0x10, size=4))
    late_local = small.add_symbol(Symbol("late_local", STB.LOCAL, STT.OBJECT, small.find_section(".data..Lubsan_type7")))
    data = small.find_section(".data..Lubsan_type7")
    small.ensure_relocation_section(data).relocations.append(Relocation(8, R_X86_64_64, late_local, 4))
    nlocals = sum(1 for s in small.symbols if s.bind == STB.LOCAL)
    before = reloc_view(small)

    blob = serialize(small)
    info, binds = symtab_layout(blob)
    assert info == nlocals + 1  # first non-local, counting the null entry
    assert all(b == STB.LOCAL for b in binds[:info]) and all(b != STB.LOCAL for b in binds[info:])
    back = parse_elf(blob)
    assert reloc_view(back) == before
    out = tmp_path / "reordered.o"
    out.write_bytes(blob)
    check_valid(out, tmp_path)


def test_ensure_relocation_section(small, tmp_path):
    data = small.find_section(".data..Lubsan_type7")
    assert data.rela is None
    rela = small.ensure_relocation_section(data)
    assert small.ensure_relocation_section(data) is rela  # idempotent
    assert (rela.name, rela.type, rela.link, rela.target) == (".rela.data..Lubsan_type7", SHT.RELA, small.symtab, data)
    rela.relocations.append(Relocation(0, R_X86_64_64, small.symbol_map()["saved_command_line"], 8))

    new = small.add_section(Section(".kpatch.funcs", SHT.PROGBITS, SHF.ALLOC, b"\0" * 16, align=8))
    small.ensure_relocation_section(new).relocations.append(
        Relocation(8, R_X86_64_64, small.symbol_map()["cmdline_proc_show"], 0))

    out = tmp_path / "with-rela.o"
    write_elf(small, out)
    listing = check_valid(out, tmp_path)
    sections = {m.group(2): int(m.group(1)) for m in re.finditer(r"\[\s*(\d+)\] (\S+)", listing)}
    for name, target in ((".rela.data..Lubsan_type7", ".data..Lubsan_type7"), (".rela.kpatch.funcs", ".kpatch.funcs")):
        row = re.search(rf"\] {re.escape(name)}\s+RELA\s+\S+\s+\S+\s+\S+\s+18\s+I\s+(\d+)\s+(\d+)\s+8", listing)
        assert row, f"{name} header:\n{listing}"
        assert (int(row.group(1)), int(row.group(2))) == (sections[".symtab"], sections[target])
    assert re.search(r"Relocation section '\.rela\.data\.\.Lubsan_type7' at offset 0x[0-9a-f]+ contains 1 entry", listing)
    assert re.search(r"R_X86_64_64\s+0+\s+saved_command_line \+ 8", listing)
    assert re.search(r"R_X86_64_64\s+0+10\s+cmdline_proc_show \+ 0", listing)


def test_group_signature_must_be_in_table(tmp_path):
    obj = ElfObject()
    strtab = obj.add_section(StringTableSection(".strtab", type=SHT.STRTAB))
    obj.symtab = obj.add_section(SymbolTableSection(".symtab", type=SHT.SYMTAB, align=8, entsize=24, link=strtab))
    member = obj.add_section(Section(".text.f", SHT.PROGBITS, SHF.ALLOC | SHF.EXECINSTR | SHF.GROUP, b"\xc3"))
    group = GroupSection(".group", align=4, entsize=4)
    group.group_flags, group.members = GRP_COMDAT, [member]
    obj.sections.insert(0, group)
    sig = obj.add_symbol(Symbol("f", STB.WEAK, STT.FUNC, member, size=1))
    group.signature = sig
    out = tmp_path / "group.o"
    write_elf(obj, out)
    assert "COMDAT group section [    1] `.group' [f] contains 1 section" in \
        subprocess.run(["readelf", "-gW", str(out)], capture_output=True, text=True).stdout
    check_valid(out, tmp_path)

    obj.symbols.remove(sig)
    with pytest.raises(ElfWriteError, match="signature 'f' is not in the symbol table"):
        serialize(obj)
    obj.symbols.append(sig)
    obj.remove_sections({member})
    with pytest.raises(ElfWriteError):
        serialize(obj)
