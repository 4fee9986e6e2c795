"""Kernel symbol tables (ELF and `readelf -s --wide` dumps) and Module.symvers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pykpatch.elf import (
    ElfObject,
    Section,
    StringTableSection,
    Symbol,
    SymbolTableSection,
    parse_elf,
    read_elf,
    serialize,
    write_elf,
)
from pykpatch.elf.constants import EM, ET, SHF, SHN, SHT, STB, STT, ElfClass, ElfData
from pykpatch.errors import SymtabError
from pykpatch.symtab import FileBlock, KernelSymbolTable, KSym, ModuleSymvers, SymversEntry

KERNEL_TEXT = 0xFFFFFFFF81000000


def dump(path: Path, out: Path) -> Path:
    with open(out, "wb") as fh:
        subprocess.run(["readelf", "-s", "--wide", str(path)], stdout=fh, check=True)
    return out


def key(sym: KSym) -> tuple:
    # readelf prints section symbols under their section's name; the ELF path keeps st_name ("")
    return (sym.name if sym.type != STT.SECTION else "", sym.type, sym.bind, sym.value, sym.size, sym.shndx, sym.index)


# -- a vmlinux-like table ---------------------------------------------------------------------

def vmlinux_like(files: list[tuple[str, list[tuple[str, int, int]]]], globals_: list[tuple[str, int, int]],
                 elf_class: int = ElfClass.ELFCLASS64, data: int = ElfData.ELFDATA2LSB,
                 machine: int = EM.X86_64) -> ElfObject:
    """FILE blocks of (name, type, address) locals, then (name, type, address) globals."""
    obj = ElfObject(elf_class, data, machine, ET.EXEC)
    text = obj.add_section(Section(".text", SHT.PROGBITS, SHF.ALLOC | SHF.EXECINSTR, b"\xcc" * 16,
                                   addr=KERNEL_TEXT & ((1 << (64 if elf_class == ElfClass.ELFCLASS64 else 32)) - 1)))
    dat = obj.add_section(Section(".data", SHT.PROGBITS, SHF.ALLOC | SHF.WRITE, b"\0" * 16))
    strtab = obj.add_section(StringTableSection(".strtab", type=SHT.STRTAB))
    obj.symtab = obj.add_section(SymbolTableSection(".symtab", type=SHT.SYMTAB, link=strtab,
                                                    entsize=obj.layout.sym.size, align=8))
    obj.shstrtab = obj.add_section(StringTableSection(".shstrtab", type=SHT.STRTAB))
    obj.add_symbol(Symbol("", STB.LOCAL, STT.SECTION, text, value=text.addr))  # before any FILE, as ld puts them
    for fname, syms in files:
        obj.add_symbol(Symbol(fname, STB.LOCAL, STT.FILE, shndx=SHN.ABS))
        for name, typ, addr in syms:
            obj.add_symbol(Symbol(name, STB.LOCAL, typ, text if typ == STT.FUNC else dat, value=addr, size=8))
    for name, typ, addr in globals_:
        obj.add_symbol(Symbol(name, STB.GLOBAL, typ, text if typ == STT.FUNC else dat, value=addr, size=8))
    obj.add_symbol(Symbol("undefined_thing", STB.GLOBAL, STT.NOTYPE))
    return obj


F, O = STT.FUNC, STT.OBJECT
# `helper` is static in three files; by address core.c's (in the second block) comes first.
SAMPLE = vmlinux_like(
    files=[
        ("main.c", [("helper", F, KERNEL_TEXT + 0x300), ("init_thing", F, KERNEL_TEXT + 0x10), ("count", O, 0x2000)]),
        ("core.c", [("helper", F, KERNEL_TEXT + 0x100), ("core_only", F, KERNEL_TEXT + 0x180)]),
        ("main.c", [("helper", F, KERNEL_TEXT + 0x500), ("count", O, 0x1000)]),
        ("empty.c", []),
    ],
    globals_=[("start_kernel", F, KERNEL_TEXT), ("core_only_global", F, KERNEL_TEXT + 0x600),
              ("count", O, 0x100)],
)


@pytest.fixture(scope="module")
def sample_paths(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("symtab")
    elf = tmp / "vmlinux"
    write_elf(SAMPLE, elf)
    return elf, dump(elf, tmp / "vmlinux.symtab")


@pytest.fixture(scope="module", params=["elf", "readelf"])
def sample(request, sample_paths) -> KernelSymbolTable:
    return KernelSymbolTable.load(sample_paths[0 if request.param == "elf" else 1])


def test_symbols_in_table_order(sample):
    assert [s.name for s in sample.symbols if s.type != STT.SECTION] == [
        "main.c", "helper", "init_thing", "count", "core.c", "helper", "core_only", "main.c", "helper", "count",
        "empty.c", "start_kernel", "core_only_global", "count", "undefined_thing"]
    assert [s.index for s in sample.symbols] == list(range(1, len(sample.symbols) + 1))
    init = sample.by_name("init_thing")[0]
    assert (init.type, init.bind, init.value, init.size, init.shndx) == (STT.FUNC, STB.LOCAL, KERNEL_TEXT + 0x10, 8, 1)
    assert init.section == (".text" if sample.format == "elf" else "1")
    und = sample.by_name("undefined_thing")[0]
    assert (und.shndx, und.section, und.is_undefined, und.file) == (0, "UND", True, None)
    assert sample.by_name("main.c")[0].section == "ABS" and sample.by_name("main.c")[0].shndx == SHN.ABS


def test_file_blocks(sample):
    blocks = sample.file_blocks
    assert [(b.name, [s.name for s in b.symbols]) for b in blocks] == [
        ("main.c", ["helper", "init_thing", "count"]),
        ("core.c", ["helper", "core_only"]),
        ("main.c", ["helper", "count"]),
        ("empty.c", []),
    ]
    assert all(isinstance(b, FileBlock) and b.file_sym.is_file and b.file_sym.file is b for b in blocks)
    assert [b.file_sym.index for b in sample.blocks_named("main.c")] == [blocks[0].file_sym.index, blocks[2].file_sym.index]
    assert sample.blocks_named("nope.c") == []
    for block in blocks:
        assert all(s.file is block for s in block.symbols)
    assert all(s.file is None for s in sample.symbols if s.bind != STB.LOCAL)
    assert sample.symbols[0].is_section and sample.symbols[0].file is None  # before any FILE symbol


def test_by_name(sample):
    helpers = sample.by_name("helper")
    assert [h.file.name for h in helpers] == ["main.c", "core.c", "main.c"]
    assert [s.bind for s in sample.by_name("count")] == [STB.LOCAL, STB.LOCAL, STB.GLOBAL]
    assert sample.by_name("missing") == []
    helpers.clear()  # a copy: the index is not affected
    assert len(sample.by_name("helper")) == 3


def test_sympos(sample):
    """kpatch rule: 1-based rank by address among same-named locals of the whole table; globals 0."""
    main1, core, main2 = sample.by_name("helper")
    assert [sample.sympos(s) for s in (main1, core, main2)] == [2, 1, 3]  # core.c's is lowest in memory
    local_count = [s for s in sample.by_name("count") if s.is_local]
    assert [sample.sympos(s) for s in local_count] == [2, 1]
    assert sample.sympos(sample.by_name("count")[-1]) == 0  # the global
    assert sample.sympos(sample.by_name("init_thing")[0]) == 1  # unique static: 1, as kpatch writes it
    assert sample.sympos(sample.by_name("start_kernel")[0]) == 0
    with pytest.raises(ValueError):
        sample.sympos(KSym("helper", STT.FUNC, STB.LOCAL, 0, 0, 1, ".text", 99))


def test_sympos_matches_reference_outputs(corpus_dir, corpus_cases):
    """cases.json: funcs / klp_symbols were resolved against the ORIG object's own table."""
    checked = 0
    for case, info in corpus_cases.items():
        entries = [e for e in info.get("funcs", []) + info.get("klp_symbols", []) if e[1] == "vmlinux"]
        if not entries:
            continue
        table = KernelSymbolTable.load(corpus_dir / f"{case}.ORIG.o")
        for name, _objname, sympos in entries:
            syms = [s for s in table.by_name(name) if s.type not in (STT.SECTION, STT.FILE) and not s.is_undefined]
            local = [s for s in syms if s.is_local]
            if local:
                assert [table.sympos(s) for s in local] == [sympos] * len(local), (case, name)
            else:
                assert sympos == 0, (case, name)
            checked += 1
    assert checked > 150


# -- ELF and readelf input agree ------------------------------------------------------------

def test_elf_and_readelf_dump_agree_on_corpus(corpus_object, tmp_path):
    elf = KernelSymbolTable.load(corpus_object)
    text = KernelSymbolTable.load(dump(corpus_object, tmp_path / "dump.txt"))
    assert (elf.format, text.format) == ("elf", "readelf")
    assert list(map(key, elf.symbols)) == list(map(key, text.symbols))
    assert [(b.name, [s.index for s in b.symbols]) for b in elf.file_blocks] == \
        [(b.name, [s.index for s in b.symbols]) for b in text.file_blocks]
    model = read_elf(corpus_object, relocations=False)
    assert [s.section for s in elf.symbols] == [
        m.section.name if m.section is not None else {0: "UND", SHN.ABS: "ABS", SHN.COMMON: "COM"}[m.shndx]
        for m in model.symbols]


@pytest.mark.parametrize("flavour", [
    (ElfClass.ELFCLASS32, ElfData.ELFDATA2LSB, EM.X86_386),
    (ElfClass.ELFCLASS32, ElfData.ELFDATA2MSB, EM.PPC),
    (ElfClass.ELFCLASS64, ElfData.ELFDATA2MSB, EM.S390),
], ids=["elf32-lsb", "elf32-msb", "elf64-msb"])
def test_other_classes_and_byte_orders(flavour, tmp_path):
    obj = vmlinux_like([("a.c", [("f", F, 0x1000), ("v", O, 0x2000)]), ("b.c", [("f", F, 0x800)])],
                       [("g", F, 0x3000)], *flavour)
    path = tmp_path / "vmlinux"
    write_elf(obj, path)
    elf = KernelSymbolTable.load(path)
    text = KernelSymbolTable.load(dump(path, tmp_path / "dump"))
    assert list(map(key, elf.symbols)) == list(map(key, text.symbols))
    assert [(s.name, s.value) for s in elf.by_name("f")] == [("f", 0x1000), ("f", 0x800)]
    assert [elf.sympos(s) for s in elf.by_name("f")] == [2, 1]
    assert [b.name for b in elf.file_blocks] == ["a.c", "b.c"]


def test_extended_section_numbering(tmp_path):
    """Symbols in sections past 0xff00 are read through .symtab_shndx."""
    obj = ElfObject()
    for i in range(0xFF10):
        sec = obj.add_section(Section(f".t{i}", SHT.PROGBITS, SHF.ALLOC | SHF.EXECINSTR, b"\xc3"))
        if i % 4096 == 0 or i >= 0xFEF0:
            obj.add_symbol(Symbol(f"f{i}", STB.GLOBAL, STT.FUNC, sec, size=1))
    strtab = obj.add_section(StringTableSection(".strtab", type=SHT.STRTAB))
    obj.symtab = obj.add_section(SymbolTableSection(".symtab", type=SHT.SYMTAB, link=strtab, entsize=24, align=8))
    path = tmp_path / "many.o"
    write_elf(obj, path)
    table = KernelSymbolTable.load(path)
    for i in (0, 0xF000, 0xFEFF, 0xFF00, 0xFF0F):
        sym = table.by_name(f"f{i}")[0]
        assert (sym.shndx, sym.section) == (i + 1, f".t{i}")


# -- speed -------------------------------------------------------------------------------------

def test_150k_symbols_load(tmp_path):
    """A vmlinux-sized table loads whole (its speed: bench/bench_symtab.py)."""
    files = [(f"file{f % 2000}.c", [(f"s{f}_{i}" if i > 1 else f"helper{i}", F if i % 3 else O,
                                      KERNEL_TEXT + (f * 20 + i) * 64) for i in range(20)])
             for f in range(4800)]
    globals_ = [(f"global_{g}", F, KERNEL_TEXT + 0x10000000 + g * 64) for g in range(50_000)]
    path = tmp_path / "vmlinux"
    write_elf(vmlinux_like(files, globals_), path)
    table = KernelSymbolTable.load(path)
    assert len(table.symbols) > 150_000 and len(table.file_blocks) == 4800
    assert [table.sympos(s) for s in table.by_name("helper1")[:3]] == [1, 2, 3]
    assert len(table.blocks_named("file7.c")) == 3


# -- readelf dump details ----------------------------------------------------------------------

DUMP_HEADER = "\nSymbol table '.symtab' contains {n} entries:\n   Num:    Value          Size Type    Bind   Vis      Ndx Name\n"
NULL = "     0: 0000000000000000     0 NOTYPE  LOCAL  DEFAULT  UND \n"


def write_dump(tmp_path: Path, body: str, n: int | None = None, name: str = "dump.txt") -> Path:
    lines = body.splitlines(keepends=True)
    path = tmp_path / name
    path.write_text(DUMP_HEADER.format(n=n if n is not None else len(lines) + 1) + NULL + body)
    return path


def test_dump_special_columns(tmp_path):
    path = write_dump(tmp_path, (
        "     1: 0000000000000000     0 FILE    LOCAL  DEFAULT  ABS livepatch.c\n"
        "     2: 0000000000000000 0x186a0 OBJECT LOCAL  DEFAULT    5 big_table\n"
        "     3: 0000000000000000     0 FUNC    GLOBAL DEFAULT OS [0xff20] .klp.sym.vmlinux.printk,0\n"
        "     4: 0000000000000010    16 IFUNC   GLOBAL DEFAULT    2 resolver\n"
        "     5: 0000000000000020     8 OBJECT  UNIQUE DEFAULT    3 uniq\n"
        "     6: 0000000000000030     8 TLS     LOCAL  DEFAULT    4 tls_var\n"
        "     7: 0000000000000040     4 <OS specific>: 11 WEAK DEFAULT    2 os_type\n"
        "     8: 0000000000000050     4 FUNC    LOCAL  DEFAULT [<localentry>: 8]     2 ppc_local\n"
        "     9: 0000000000000000    64 OBJECT  GLOBAL DEFAULT  COM common_buf\n"
    ))
    table = KernelSymbolTable.load(path)
    got = {s.name: (s.type, s.bind, s.size, s.shndx, s.section) for s in table.symbols}
    assert got["big_table"] == (STT.OBJECT, STB.LOCAL, 100_000, 5, "5")
    assert got[".klp.sym.vmlinux.printk,0"] == (STT.FUNC, STB.GLOBAL, 0, SHN.LIVEPATCH, "OS [0xff20]")
    assert got["resolver"][:2] == (STT.GNU_IFUNC, STB.GLOBAL)
    assert got["uniq"][1] == STB.GNU_UNIQUE
    assert got["tls_var"][0] == STT.TLS
    assert got["os_type"][:2] == (11, STB.WEAK)
    assert got["ppc_local"] == (STT.FUNC, STB.LOCAL, 4, 2, "2")
    assert got["common_buf"][3:] == (SHN.COMMON, "COM")
    assert [s.name for s in table.file_blocks[0].symbols] == ["big_table", "tls_var", "ppc_local"]


def test_dump_skips_dynsym_and_handles_several_tables(tmp_path):
    body = ("\nSymbol table '.dynsym' contains 2 entries:\n   Num:    Value          Size Type    Bind   Vis      Ndx Name\n"
            + NULL + "     1: 0000000000001000     8 FUNC    GLOBAL DEFAULT    1 exported\n")
    symtab = (DUMP_HEADER.format(n=3) + NULL + "     1: 0000000000000000     0 FILE    LOCAL  DEFAULT  ABS x.c\n"
              "     2: 0000000000001000     8 FUNC    GLOBAL DEFAULT    1 exported\n")
    path = tmp_path / "ppc.txt"
    path.write_text(body + symtab)
    table = KernelSymbolTable.load(path)
    assert [s.name for s in table.symbols] == ["x.c", "exported"]


def test_dump_without_headers(tmp_path):
    path = tmp_path / "bare.txt"
    path.write_text("     1: 0000000000000000     0 FILE    LOCAL  DEFAULT  ABS x.c\n"
                    "     2: ffffffff81000000    16 FUNC    LOCAL  DEFAULT    1 f\n")
    table = KernelSymbolTable.load(path)
    assert [(b.name, [s.name for s in b.symbols]) for b in table.file_blocks] == [("x.c", ["f"])]


@pytest.mark.parametrize("content, message", [
    ("", "not an ELF file and not a `readelf -s --wide` dump (empty file)"),
    ("hello world\nthis is text\n", "not an ELF file and not a `readelf -s --wide` dump"),
    ("\0\1\2binary", "not an ELF file and not a `readelf -s --wide` dump"),
    (DUMP_HEADER.format(n=3) + NULL + "     1: 0000000000000000     0 FILE    LOCAL  DEFAULT  ABS x.c\n"
     "     2: garbage here\n", "line 6: malformed symbol line: '2: garbage here'"),
    (DUMP_HEADER.format(n=5) + NULL + "     1: 0000000000000000     0 FILE    LOCAL  DEFAULT  ABS x.c\n",
     "line 2: table says 5 entries, found 2 (truncated dump?)"),
    (DUMP_HEADER.format(n=2) + NULL + "     1: 0000000000000000     0 FUNC    LOCAL  DEFAULT    1 a_very_long_name_t[...]\n",
     "is truncated; dump the table with `readelf -s --wide`"),
    (DUMP_HEADER.format(n=2) + NULL + "     1: 0000000000000000     0 BOGUS   LOCAL  DEFAULT    1 f\n",
     "line 5: unknown symbol type 'BOGUS'"),
    (DUMP_HEADER.format(n=2) + NULL + "     1: 0000000000000000     0 FUNC    SOMETIMES DEFAULT    1 f\n",
     "line 5: unknown symbol binding 'SOMETIMES'"),
])
def test_bad_dumps(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content.encode())
    with pytest.raises(SymtabError) as err:
        KernelSymbolTable.load(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: ") and message in text, text


# -- ELF errors ----------------------------------------------------------------------------------

def _elf_variant(kind: str) -> bytes:
    blob = bytearray(serialize(SAMPLE))
    obj = parse_elf(bytes(blob))
    shoff = int.from_bytes(blob[0x28:0x30], "little")
    symtab_hdr = shoff + 64 * obj.symtab.index
    if kind == "truncated":
        return bytes(blob[:0x30])
    if kind == "half":
        return bytes(blob[: len(blob) // 2])
    if kind == "bad-class":
        blob[4] = 9
    elif kind == "symtab-past-end":
        blob[symtab_hdr + 24: symtab_hdr + 32] = (len(blob) * 2).to_bytes(8, "little")
    elif kind == "symtab-entsize":
        blob[symtab_hdr + 56: symtab_hdr + 64] = (16).to_bytes(8, "little")
    elif kind == "symtab-link":
        blob[symtab_hdr + 40: symtab_hdr + 44] = (1).to_bytes(4, "little")  # .text, not a string table
    elif kind == "name-offset":
        symoff = int.from_bytes(blob[symtab_hdr + 24: symtab_hdr + 32], "little")
        blob[symoff + 24 * 2: symoff + 24 * 2 + 4] = (0xFFFFFF).to_bytes(4, "little")
    elif kind == "shndx":
        symoff = int.from_bytes(blob[symtab_hdr + 24: symtab_hdr + 32], "little")
        blob[symoff + 24 * 3 + 6: symoff + 24 * 3 + 8] = (0x7000).to_bytes(2, "little")
    elif kind == "stripped":
        blob[symtab_hdr + 4: symtab_hdr + 8] = (SHT.PROGBITS).to_bytes(4, "little")
    return bytes(blob)


@pytest.mark.parametrize("kind, message", [
    ("truncated", "ELF header"),
    ("half", "past the end of the file"),
    ("bad-class", "unknown ELF class 9"),
    ("symtab-past-end", ".symtab"),
    ("symtab-entsize", "symbol table entry size 16"),
    ("symtab-link", "not linked to a string table"),
    ("name-offset", "symbol [2] name offset 0xffffff is outside its string table"),
    ("shndx", "section index 28672 out of range"),
    ("stripped", "no .symtab section (stripped?)"),
])
def test_bad_elf(tmp_path, kind, message):
    path = tmp_path / "vmlinux"
    path.write_bytes(_elf_variant(kind))
    with pytest.raises(SymtabError) as err:
        KernelSymbolTable.load(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: ") and message in text, text


def test_missing_and_directory(tmp_path):
    with pytest.raises(SymtabError, match="cannot read: No such file or directory"):
        KernelSymbolTable.load(tmp_path / "nope")
    with pytest.raises(SymtabError, match="cannot read: Is a directory"):
        KernelSymbolTable.load(tmp_path)


# -- Module.symvers -------------------------------------------------------------------------------

def test_symvers_pre_5_4(tmp_path):
    path = tmp_path / "Module.symvers"
    path.write_text("0x1234abcd\tprintk\tvmlinux\tEXPORT_SYMBOL\n"
                    "0x00000001\tusb_submit_urb\tdrivers/usb/core/usbcore\tEXPORT_SYMBOL_GPL\n")
    sv = ModuleSymvers.load(path)
    assert sv.lookup("printk") == SymversEntry(0x1234ABCD, "vmlinux", "EXPORT_SYMBOL", "")
    urb = sv.lookup("usb_submit_urb")
    assert (urb.module, urb.objname, urb.export_type, urb.is_vmlinux) == (
        "drivers/usb/core/usbcore", "usbcore", "EXPORT_SYMBOL_GPL", False)
    assert sv.lookup("nothing") is None and "printk" in sv and len(sv) == 2


def test_symvers_5_4_to_5_9_namespace_third(tmp_path):
    path = tmp_path / "Module.symvers"
    path.write_text("0x11111111\tusb_stor_probe\tUSB_STORAGE\tdrivers/usb/storage/usb-storage\tEXPORT_SYMBOL_GPL\n"
                    "0x22222222\tprintk\t\tvmlinux\tEXPORT_SYMBOL\n")
    sv = ModuleSymvers.load(path)
    entry = sv.lookup("usb_stor_probe")
    assert entry == SymversEntry(0x11111111, "drivers/usb/storage/usb-storage", "EXPORT_SYMBOL_GPL", "USB_STORAGE")
    assert entry.objname == "usb_storage"  # kpatch's make_modname: basename, '-' -> '_'
    assert sv.lookup("printk") == SymversEntry(0x22222222, "vmlinux", "EXPORT_SYMBOL", "")


def test_symvers_5_10_on_namespace_last(tmp_path):
    path = tmp_path / "Module.symvers"
    path.write_text("0x2e168e85\tinit_uts_ns\tvmlinux\tEXPORT_SYMBOL_GPL\t\n"
                    "0x33333333\tusb_stor_probe\tdrivers/usb/storage/usb-storage\tEXPORT_SYMBOL_GPL\tUSB_STORAGE\n")
    sv = ModuleSymvers.load(path)
    assert sv.lookup("init_uts_ns") == SymversEntry(0x2E168E85, "vmlinux", "EXPORT_SYMBOL_GPL", "")
    assert sv.lookup("usb_stor_probe").namespace == "USB_STORAGE"


def test_symvers_ancient_three_columns_and_empty(tmp_path):
    path = tmp_path / "Module.symvers"
    path.write_text("0x00000000\tprintk\tvmlinux\n")
    assert ModuleSymvers.load(path).lookup("printk") == SymversEntry(0, "vmlinux", "", "")
    path.write_text("")
    assert len(ModuleSymvers.load(path)) == 0


@pytest.mark.parametrize("content, message", [
    ("0x1\tprintk\n", "line 1: expected 4 or 5 tab-separated columns, got 2"),
    ("0x1\tprintk\tvmlinux\tEXPORT_SYMBOL\n0x2\ta\tb\tc\td\te\n", "line 2: expected 4 or 5 tab-separated columns, got 6"),
    ("zzz\tprintk\tvmlinux\tEXPORT_SYMBOL\n", "line 1: bad CRC 'zzz'"),
    ("0x1\tprintk\tvmlinux\tEXPORT_SYMBOL\tNS\n0x2\tf\tNS\tmod\tWHATEVER\n", "line 2: no EXPORT_* column"),
    ("0x1\tprintk\tvmlinux\tEXPORT_SYMBOL\n\n0x2\tprintk\tvmlinux\tEXPORT_SYMBOL\n",
     "line 3: symbol 'printk' exported twice (first at line 1)"),
    ("0x1\t\tvmlinux\tEXPORT_SYMBOL\n", "line 1: empty or malformed symbol/module column"),
    ("\0\0\0", "not a Module.symvers file"),
])
def test_symvers_errors(tmp_path, content, message):
    path = tmp_path / "Module.symvers"
    path.write_bytes(content.encode())
    with pytest.raises(SymtabError) as err:
        ModuleSymvers.load(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: ") and message in text, text


def test_symvers_missing(tmp_path):
    with pytest.raises(SymtabError, match="cannot read"):
        ModuleSymvers.load(tmp_path / "Module.symvers")
