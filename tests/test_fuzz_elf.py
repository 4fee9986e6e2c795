"""Property: no byte sequence makes the ELF reader or writer crash.

Mutated corpus objects (and model-built ELF32 / big-endian ones): random byte
flips, truncations, and overwrites of ELF header, section header, symbol and
relocation fields with boundary, random or plausible values
(``tests/elf_mutations.py``).  ``parse_elf`` must either return a model —
which ``serialize`` then writes (or refuses with ``ElfWriteError`` /
``ElfFormatError``) and which reads back — or raise ``ElfFormatError``.  Any
other exception is a reader bug, to be fixed with a precise check
(``tests/fuzz_cases.py``: ``check_elf``).

Deterministic (``derandomize``) so CI runs the same inputs every time;
several thousand inputs in total.  ``bench/fuzz.py`` runs many more.
"""

from __future__ import annotations

import os

import elf_mutations as mut
import pytest
from fuzz_cases import ELF_SEEDS, check_elf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pykpatch.elf import (
    ElfObject,
    GroupSection,
    Relocation,
    RelocationSection,
    Section,
    StringTableSection,
    Symbol,
    SymbolTableSection,
    SymtabShndxSection,
    parse_elf,
    serialize,
)
from pykpatch.elf.constants import EM, GRP_COMDAT, SHF, SHN, SHT, STB, STT, ElfClass, ElfData

# PYKPATCH_FUZZ_EXAMPLES=N raises the count; PYKPATCH_FUZZ_RANDOM=1 draws fresh inputs (for bug hunts).
FUZZ = settings(
    max_examples=int(os.environ.get("PYKPATCH_FUZZ_EXAMPLES", "2000")),
    derandomize=not os.environ.get("PYKPATCH_FUZZ_RANDOM"),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def built_seed(elf_class: int, data: int, machine: int) -> bytes:
    """A small object through the model, for the 32-bit and big-endian code paths,
    with the section kinds the corpus lacks (a COMDAT group, .symtab_shndx)."""
    obj = ElfObject(elf_class, data, machine)
    word = 8 if elf_class == ElfClass.ELFCLASS64 else 4
    group = obj.add_section(GroupSection(".group", align=4, entsize=4))
    text = obj.add_section(Section(".text", SHT.PROGBITS, SHF.ALLOC | SHF.EXECINSTR | SHF.GROUP, bytes(32), align=16))
    dat = obj.add_section(Section(".data", SHT.PROGBITS, SHF.ALLOC | SHF.WRITE, bytes(4 * word), align=word))
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
    blobs = [(corpus_dir / name).read_bytes() for name in ELF_SEEDS]
    blobs += [built_seed(ElfClass.ELFCLASS32, ElfData.ELFDATA2MSB, EM.PPC),
              built_seed(ElfClass.ELFCLASS64, ElfData.ELFDATA2MSB, EM.S390),
              built_seed(ElfClass.ELFCLASS32, ElfData.ELFDATA2LSB, EM.X86_386)]
    for blob in blobs:  # every seed is itself valid
        parse_elf(blob)
    SEEDS[:] = blobs


def damaged(data, mutator: mut.Mutator, repeat: tuple[int, int] = (1, 1)) -> bytearray:
    d = mut.HypothesisDraw(data)
    return mut.mutated(SEEDS[d.integer(0, len(SEEDS) - 1)], d, mutator, repeat)


@FUZZ
@given(data=st.data())
def test_byte_flips(data):
    check_elf(damaged(data, mut.flip_bytes))


@FUZZ
@given(data=st.data())
def test_truncation(data):
    check_elf(damaged(data, mut.truncate))


@FUZZ
@given(data=st.data())
def test_elf_header_fields(data):
    check_elf(damaged(data, mut.elf_header_field, (1, 3)))


@FUZZ
@given(data=st.data())
def test_section_header_fields(data):
    check_elf(damaged(data, mut.section_header_field, (1, 4)))


@FUZZ
@given(data=st.data())
def test_symbol_and_relocation_fields(data):
    """Overwrite fields of entries of .symtab, .symtab_shndx, relocation and group sections."""
    check_elf(damaged(data, mut.table_field, (1, 4)))


@FUZZ
@given(data=st.data())
def test_mixed_damage(data):
    """Several kinds of damage at once, then possibly a truncation."""
    check_elf(damaged(data, mut.mixed_damage))
