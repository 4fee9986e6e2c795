"""The reader's checks of offsets, sizes, indexes and links (issue 9, item 8).

Each test damages one field of a small valid object in a way that the
fuzzer found, or that the gABI forbids, and expects ``ElfFormatError``
naming the section or symbol; the neighbouring valid cases (an unknown
relocation type inside its section, addresses in an executable, flags
that allow sh_link/sh_info) must still read.
"""

from __future__ import annotations

import struct

import pytest
from elf_mutations import FieldEditor

from pykpatch.elf import (
    ElfObject,
    GroupSection,
    Relocation,
    Section,
    StringTableSection,
    Symbol,
    SymbolTableSection,
    SymtabShndxSection,
    serialize,
)
from pykpatch.elf.constants import EM, ET, GRP_COMDAT, SHF, SHN, SHT, STB, STT
from pykpatch.elf.validate import link_problems, symbol_order_problems
from pykpatch.errors import ElfFormatError

R_X86_64_64, R_X86_64_PC32 = 1, 2


def small_object(machine: int = EM.X86_64, e_type: int = ET.REL) -> ElfObject:
    """.text (32 bytes) with two relocations, .data, .bss, a COMDAT group and a few symbols."""
    obj = ElfObject(machine=machine, e_type=e_type)
    group = obj.add_section(GroupSection(".group", align=4, entsize=4))
    text = obj.add_section(Section(".text", SHT.PROGBITS, SHF.ALLOC | SHF.EXECINSTR | SHF.GROUP, bytes(32), align=16))
    data = obj.add_section(Section(".data", SHT.PROGBITS, SHF.ALLOC | SHF.WRITE, bytes(16), align=8))
    obj.add_section(Section(".bss", SHT.NOBITS, SHF.ALLOC | SHF.WRITE, align=8, nobits_size=64))
    strtab = obj.add_section(StringTableSection(".strtab", type=SHT.STRTAB))
    obj.symtab = obj.add_section(SymbolTableSection(".symtab", type=SHT.SYMTAB, align=8, link=strtab, entsize=24))
    obj.shstrtab = obj.add_section(StringTableSection(".shstrtab", type=SHT.STRTAB))
    func = obj.add_symbol(Symbol("func", STB.GLOBAL, STT.FUNC, text, size=32))
    obj.add_symbol(Symbol("var", STB.GLOBAL, STT.OBJECT, data, value=8, size=8))
    ext = obj.add_symbol(Symbol("external", STB.GLOBAL))
    group.group_flags, group.members, group.signature = GRP_COMDAT, [text], func
    group.link = obj.symtab
    rela = obj.ensure_relocation_section(text)
    rela.relocations = [Relocation(4, R_X86_64_PC32, ext, -4), Relocation(16, R_X86_64_64, ext, 0)]
    return obj


def Blob(obj: ElfObject) -> FieldEditor:
    return FieldEditor(serialize(obj))


def refused(blob: FieldEditor, *words: str, **kwargs) -> str:
    with pytest.raises(ElfFormatError) as err:
        blob.parse(**kwargs)
    message = str(err.value)
    assert not err.value.problem.startswith("malformed ELF ("), message  # a precise check, not the safety net
    for word in words:
        assert word in message, message
    return message


def test_the_small_object_is_valid():
    obj = Blob(small_object()).parse()
    assert [(r.offset, r.type) for r in obj.find_section(".rela.text").relocations] == [(4, 2), (16, 1)]


# -- relocation offsets ----------------------------------------------------------------------------

def test_relocation_far_past_its_section_is_refused():
    """The fuzzer's R_X86_64_PC32 at +0x80000000: the module loader would write out of bounds."""
    refused(Blob(small_object()).set_relocation(0, "r_offset", 0x80000000), ".rela.text", "0x80000000", ".text")


def test_relocation_whose_bytes_cross_the_section_end_is_refused():
    """R_X86_64_64 patches 8 bytes: at 28 in a 32-byte section its last 4 bytes are outside."""
    refused(Blob(small_object()).set_relocation(1, "r_offset", 28), ".rela.text", "0x1c", "R_X86_64_64")


def test_relocation_ending_exactly_at_the_section_end_is_read():
    obj = Blob(small_object()).set_relocation(1, "r_offset", 24).parse()
    assert obj.find_section(".rela.text").relocations[1].offset == 24


def test_unknown_relocation_type_inside_its_section_is_read():
    """The reader describes arbitrary objects: a type it has no width for is not an error."""
    obj = Blob(small_object()).set_relocation(1, "r_info", 3 << 32 | 200).parse()
    assert obj.find_section(".rela.text").relocations[1].type == 200


def test_unknown_machine_relocation_must_start_inside_its_section():
    blob = Blob(small_object(machine=0x9999))
    assert blob.set_relocation(1, "r_offset", 31).parse().find_section(".rela.text").relocations[1].offset == 31
    refused(blob.set_relocation(1, "r_offset", 32), ".rela.text", "0x20")


def test_executable_relocation_offsets_are_addresses():
    """In ET_EXEC / ET_DYN r_offset is a virtual address, not an offset into the section."""
    obj = Blob(small_object(e_type=ET.EXEC)).set_relocation(0, "r_offset", 0x401000).parse()
    assert obj.find_section(".rela.text").relocations[0].offset == 0x401000


def test_relocation_links_checked_without_decoding():
    """relocations=False keeps the bytes; the links are still checked (the offsets need decoding)."""
    refused(Blob(small_object()).set_header(".rela.text", "sh_link", 5), ".rela.text", "symbol table",
            relocations=False)


# -- relocation section links ------------------------------------------------------------------

def test_relocation_section_linked_to_a_string_table_is_refused():
    blob = Blob(small_object())
    refused(blob.set_header(".rela.text", "sh_link", blob.index[".strtab"]), ".rela.text", "symbol table")


@pytest.mark.parametrize("target,why", [(".rela.text", "relocation section"), (".bss", "SHT_NOBITS"),
                                        (".symtab", "symbol table")])
def test_relocation_section_applying_to_a_section_without_bytes_is_refused(target, why):
    blob = Blob(small_object())
    refused(blob.set_header(".rela.text", "sh_info", blob.index[target]), ".rela.text", target, why)


def test_relocatable_object_relocations_must_apply_to_a_section():
    refused(Blob(small_object()).set_header(".rela.text", "sh_info", 0), ".rela.text", "sh_info 0")


def test_stray_sh_info_on_a_plain_section_is_a_link_problem():
    """The fuzzer's outputs kept a .strtab/.text with a random sh_info: the gABI wants 0.

    A conformance rule (``pykpatch.elf.validate``), not a reader error: files in
    the wild bend it (binutils links .stab to .stabstr without SHF_LINK_ORDER).
    """
    obj = Blob(small_object()).set_header(".data", "sh_info", 2).parse()
    problems = link_problems(obj)
    assert len(problems) == 1 and ".data" in problems[0] and "SHF_INFO_LINK" in problems[0], problems


def test_stray_sh_link_on_a_plain_section_is_a_link_problem():
    obj = Blob(small_object()).set_header(".text", "sh_link", 3).parse()
    problems = link_problems(obj)
    assert len(problems) == 1 and ".text" in problems[0] and "SHF_LINK_ORDER" in problems[0], problems


def test_sh_link_and_sh_info_allowed_by_their_flags_are_read():
    blob = Blob(small_object())
    assert link_problems(blob.parse()) == []
    text = blob.index[".text"]
    blob.set_header(".data", "sh_flags", SHF.ALLOC | SHF.WRITE | SHF.INFO_LINK | SHF.LINK_ORDER)
    obj = blob.set_header(".data", "sh_info", text).set_header(".data", "sh_link", text).parse()
    data = obj.find_section(".data")
    assert data.info is obj.find_section(".text") and data.link is obj.find_section(".text")
    assert link_problems(obj) == []


def test_symbol_table_sh_info_stays_a_symbol_index_under_shf_info_link():
    """Was: a damaged .symtab with SHF_INFO_LINK read its sh_info as a section (fuzz seed 3)."""
    obj = Blob(small_object()).set_header(".symtab", "sh_flags", SHF.INFO_LINK).parse()
    assert obj.symtab.info == 1 and symbol_order_problems(obj) == []
    problems = link_problems(obj)
    assert len(problems) == 1 and ".symtab" in problems[0] and "symbol index" in problems[0], problems


def test_symbol_order_of_a_written_object_is_right():
    blob = Blob(small_object())
    assert symbol_order_problems(blob.parse()) == []
    problems = symbol_order_problems(blob.set_header(".symtab", "sh_info", 3).parse())
    assert problems and "sh_info 3" in problems[0], problems


# -- section table -----------------------------------------------------------------------------------

def test_second_symbol_table_is_refused():
    blob = Blob(small_object())
    refused(blob.set_header(".data", "sh_type", SHT.SYMTAB), "more than one symbol table", ".data", ".symtab")


def test_null_section_header_claiming_to_be_a_symbol_table_is_no_symbol_table():
    """Header 0 describes no section (an AssertionError while this check was being written, fuzz seed 4)."""
    blob = Blob(small_object())
    blob.view.put(blob.bytes, blob.view.shoff + 4, "I", SHT.SYMTAB)  # sh_type of header 0
    assert blob.parse().symtab.name == ".symtab"


def test_section_name_table_must_be_a_string_table():
    blob = Blob(small_object())
    struct.pack_into("<H", blob.bytes, 0x3E, blob.index[".data"])  # e_shstrndx
    refused(blob, "section name table", "SHT_STRTAB")


@pytest.mark.parametrize("align", [3, 0x99, 2**40 + 1])
def test_alignment_not_a_power_of_two_is_refused(align):
    refused(Blob(small_object()).set_header(".data", "sh_addralign", align), ".data", "alignment")


# -- groups -------------------------------------------------------------------------------------------

GROUP_WORD = ("I", ("word",))


def test_group_member_that_is_a_group_is_refused():
    blob = Blob(small_object())
    refused(blob.set_entry(".group", 1, *GROUP_WORD, "word", blob.index[".group"]), ".group", "member")


def test_section_in_a_group_twice_is_refused():
    blob = Blob(small_object())
    blob.set_header(".group", "sh_size", 12)  # flags, .text, and the next word (.text again, below)
    blob.bytes[blob.header(".group")[4] + 8:blob.header(".group")[4] + 12] = struct.pack("<I", blob.index[".text"])
    refused(blob, ".group", ".text")


def test_group_not_linked_to_the_symbol_table_is_refused():
    blob = Blob(small_object())
    refused(blob.set_header(".group", "sh_link", blob.index[".strtab"]), ".group", "symbol table")


# -- symbols ------------------------------------------------------------------------------------------

def test_symbol_past_its_section_is_refused():
    """st_value is an offset into the section in a relocatable object."""
    refused(Blob(small_object()).set_symbol(2, "st_value", 12), "var", ".data")


def test_symbol_ending_at_its_section_end_is_read():
    obj = Blob(small_object()).set_symbol(2, "st_value", 8).parse()
    assert obj.symbol_map()["var"].value == 8


def test_symbol_sized_past_its_section_is_refused():
    refused(Blob(small_object()).set_symbol(1, "st_size", 33), "func", ".text")


def test_symbol_xindex_naming_no_section_is_refused():
    obj = small_object()
    shndx = obj.add_section(SymtabShndxSection(".symtab_shndx", type=SHT.SYMTAB_SHNDX, align=4, entsize=4))
    shndx.link = obj.symtab
    blob = Blob(obj)
    refused(blob.set_symbol(2, "st_shndx", SHN.XINDEX), "var", "SHN_XINDEX")
