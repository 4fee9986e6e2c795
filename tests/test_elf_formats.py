"""ELF32 and big-endian objects: model -> bytes -> model, checked by binutils.

The corpus is x86_64 only, so every class/byte-order pair is exercised with
objects built through the model (and, when the cross binutils are installed,
with real objects assembled by s390x / i686 ``as``).  The host ``readelf``
reads any class and byte order.
"""

from __future__ import annotations

import shutil
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
from pykpatch.elf.constants import EM, GRP_COMDAT, SHF, SHN, SHT, STB, STT, ElfClass, ElfData

LSB, MSB = ElfData.ELFDATA2LSB, ElfData.ELFDATA2MSB
C32, C64 = ElfClass.ELFCLASS32, ElfClass.ELFCLASS64

# (id, class, byte order, machine, RELA?, a relocation type that readelf names)
FLAVOURS = [
    ("elf64-lsb-x86_64", C64, LSB, EM.X86_64, True, 2, "R_X86_64_PC32"),
    ("elf64-msb-s390x", C64, MSB, EM.S390, True, 22, "R_390_64"),
    ("elf32-lsb-i386", C32, LSB, EM.X86_386, False, 1, "R_386_32"),
    ("elf32-msb-ppc", C32, MSB, EM.PPC, True, 1, "R_PPC_ADDR32"),
]


def build_object(elf_class: int, data: int, machine: int, rela: bool, rtype: int) -> ElfObject:
    """A small object using every kind of section and symbol the model knows."""
    obj = ElfObject(elf_class, data, machine)
    word = 8 if elf_class == C64 else 4
    text = obj.add_section(Section(".text.func", SHT.PROGBITS, SHF.ALLOC | SHF.EXECINSTR, bytes(range(32)), align=16))
    dat = obj.add_section(Section(".data", SHT.PROGBITS, SHF.ALLOC | SHF.WRITE, b"\x11" * 16, align=word))
    bss = obj.add_section(Section(".bss", SHT.NOBITS, SHF.ALLOC | SHF.WRITE, align=32, nobits_size=0x100))
    rostr = obj.add_section(Section(".rodata.str1.1", SHT.PROGBITS, SHF.ALLOC | SHF.MERGE | SHF.STRINGS,
                                    b"hello\0world\0", entsize=1))
    comdat = obj.add_section(Section(".text.inline", SHT.PROGBITS,
                                     SHF.ALLOC | SHF.EXECINSTR | SHF.GROUP, b"\x90" * 8, align=4))
    strtab = obj.add_section(StringTableSection(".strtab", type=SHT.STRTAB))
    obj.symtab = obj.add_section(SymbolTableSection(".symtab", type=SHT.SYMTAB, align=word, link=strtab,
                                                    entsize=obj.layout.sym.size))
    obj.shstrtab = obj.add_section(StringTableSection(".shstrtab", type=SHT.STRTAB))

    obj.add_symbol(Symbol("fmt.c", STB.LOCAL, STT.FILE, shndx=SHN.ABS))
    section_syms = {}
    for sec in (text, dat, bss, rostr, comdat):
        sym = obj.add_symbol(Symbol("", STB.LOCAL, STT.SECTION, sec))
        sec.symbol = section_syms[sec.name] = sym
    helper = obj.add_symbol(Symbol("helper", STB.LOCAL, STT.FUNC, text, value=16, size=16))
    counter = obj.add_symbol(Symbol("counter", STB.LOCAL, STT.OBJECT, bss, value=0x20, size=4))
    func = obj.add_symbol(Symbol("func", STB.GLOBAL, STT.FUNC, text, size=16))
    inline = obj.add_symbol(Symbol("inline_fn", STB.WEAK, STT.FUNC, comdat, size=8, other=2))  # hidden
    ext = obj.add_symbol(Symbol("external", STB.GLOBAL, STT.NOTYPE))
    obj.add_symbol(Symbol("common_buf", STB.GLOBAL, STT.OBJECT, value=word, size=64, shndx=SHN.COMMON))
    obj.add_symbol(Symbol("abs_value", STB.GLOBAL, STT.NOTYPE, value=0x1234, shndx=SHN.ABS))

    group = obj.add_section(GroupSection(".group", align=4, entsize=4, link=obj.symtab))
    group.group_flags = GRP_COMDAT
    group.members = [comdat]
    group.signature = inline
    comdat.group = group
    obj.sections.remove(group)
    obj.sections.insert(0, group)  # groups precede their members, as gas does

    for target, relocs in (
        (text, [(4, ext, -4), (8, helper, 0), (12, section_syms[".rodata.str1.1"], 6)]),
        (dat, [(0, func, 0), (word, counter, 0)]),
    ):
        sec = RelocationSection((".rela" if rela else ".rel") + target.name, target=target, rela=rela,
                                flags=SHF.INFO_LINK, align=word,
                                entsize=(obj.layout.rela if rela else obj.layout.rel).size, link=obj.symtab)
        sec.relocations = [Relocation(off, rtype, sym, addend if rela else 0) for off, sym, addend in relocs]
        target.rela = sec
        obj.add_section(sec)
    return obj


def summary(obj: ElfObject) -> dict:
    """Everything that must survive a round trip, by name rather than index."""
    def sym_key(s):
        return (s.name, s.bind, s.type, s.other, s.section.name if s.section else s.shndx, s.value, s.size)

    rebuilt = (StringTableSection, SymbolTableSection, RelocationSection, GroupSection)  # by the writer
    return {
        "header": (obj.layout.elf_class, obj.layout.data, obj.machine, obj.e_type, obj.e_flags),
        "sections": [(s.name, s.type, s.flags, s.align, s.entsize,
                      None if isinstance(s, rebuilt) else (s.size, bytes(s.data)),
                      s.link.name if s.link is not None else None,
                      s.info.name if isinstance(s.info, Section) else None if isinstance(s, rebuilt) else s.info)
                     for s in obj.sections],
        "symbols": sorted(map(sym_key, obj.symbols), key=repr),
        "relocations": {sec.name: [(r.offset, r.type, r.symbol.name if r.symbol else None,
                                    obj.symbol_name(r.symbol) if r.symbol else None, r.addend)
                                   for r in sec.relocations]
                        for sec in obj.relocation_sections()},
        "groups": [(g.name, g.group_flags, [m.name for m in g.members], g.signature.name)
                   for g in obj.sections if isinstance(g, GroupSection)],
    }


@pytest.mark.parametrize("flavour", FLAVOURS, ids=[f[0] for f in FLAVOURS])
def test_model_built_object_round_trips(flavour, tmp_path):
    _, elf_class, data, machine, rela, rtype, rname = flavour
    obj = build_object(elf_class, data, machine, rela, rtype)
    blob = serialize(obj)
    back = parse_elf(blob, "built.o")
    assert summary(back) == summary(obj)
    assert serialize(back) == blob

    path = tmp_path / "built.o"
    path.write_bytes(blob)
    header = subprocess.run(["readelf", "-hW", str(path)], capture_output=True, text=True, check=True).stdout
    assert ("ELF64" if elf_class == C64 else "ELF32") in header
    assert ("little endian" if data == LSB else "big endian") in header
    proc = subprocess.run(["readelf", "-SsrgW", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    out = proc.stdout
    for name in ("helper", "counter", "func", "inline_fn", "external", "common_buf", "abs_value", "fmt.c"):
        assert f" {name}\n" in out
    assert rname in out
    assert "COMDAT group section [    1] `.group' [inline_fn] contains 1 section" in out
    assert f"'.{'rela' if rela else 'rel'}.text.func' at offset" in out and "contains 3 entries" in out
    # readelf's own view: sh_info of .symtab = first non-local (1 + FILE + 5 section syms + 2 locals = 9)
    symtab_row = next(line for line in out.splitlines() if "] .symtab" in line)
    assert symtab_row.split()[-3:-1] == [str(back.symtab.link.index), "9"]


@pytest.mark.parametrize("flavour", FLAVOURS, ids=[f[0] for f in FLAVOURS])
def test_reader_reads_class_and_byte_order_from_ident(flavour):
    _, elf_class, data, machine, rela, rtype, _ = flavour
    back = parse_elf(serialize(build_object(elf_class, data, machine, rela, rtype)))
    assert back.layout.elf_class == elf_class and back.layout.data == data and back.machine == machine
    func = back.symbol_map()["func"]
    assert (func.section.name, func.size) == (".text.func", 16)
    assert back.find_section(".bss").size == 0x100


# -- real objects from cross binutils (Debian: binutils-s390x-linux-gnu, binutils-i686-linux-gnu) ----

ASM = """\
        .file   "cross.c"
        .section .text.helper,"ax",@progbits
        .type   helper, @function
helper:
        .long   0, 0
        .size   helper, .-helper
        .section .text.entry,"ax",@progbits
        .globl  entry
        .type   entry, @function
entry:
        .long   0, 0, 0, 0
        .size   entry, .-entry
        .section .data.table,"aw"
        .type   table, @object
table:
        .{word} helper
        .{word} entry + 4
        .{word} external_symbol
        .size   table, .-table
        .section .rodata.str1.1,"aMS",@progbits,1
.LC0:   .string "pykpatch"
        .section .data.ptr,"aw"
        .{word} .LC0
        .local  counter
        .comm   counter,16,8
        .section .text.comdat,"axG",@progbits,comdat_fn,comdat
        .weak   comdat_fn
        .type   comdat_fn, @function
comdat_fn:
        .long   0
        .size   comdat_fn, .-comdat_fn
"""

CROSS = [
    ("s390x", "s390x-linux-gnu-as", [], "quad", "ELF64", "big endian"),
    ("i686", "i686-linux-gnu-as", ["--32"], "long", "ELF32", "little endian"),
]


@pytest.mark.parametrize("cross", CROSS, ids=[c[0] for c in CROSS])
def test_cross_assembled_object_round_trips(cross, tmp_path, readelf_view):
    name, assembler, flags, word, klass, order = cross
    if shutil.which(assembler) is None:
        pytest.fail(f"{assembler} not installed (apt-get install binutils-{assembler.rsplit('-', 1)[0]})")
    src = tmp_path / "cross.s"
    src.write_text(ASM.format(word=word))
    orig = tmp_path / "cross.o"
    subprocess.run([assembler, *flags, "-o", str(orig), str(src)], check=True, capture_output=True)
    header = subprocess.run(["readelf", "-h", str(orig)], capture_output=True, text=True, check=True).stdout
    assert klass in header and order in header

    obj = read_elf(orig)
    assert obj.layout.elf_class == (C64 if klass == "ELF64" else C32)
    table_rel = next(s for s in obj.relocation_sections() if s.target.name == ".data.table")
    assert [obj.symbol_name(r.symbol) for r in table_rel.relocations][-1] == "external_symbol"
    out = tmp_path / "rewritten.o"
    write_elf(obj, out)
    assert readelf_view(out) == readelf_view(orig)
    linker = assembler[:-2] + "ld"
    if shutil.which(linker):
        proc = subprocess.run([linker, "-r", "-o", str(tmp_path / "linked.o"), str(out)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
