"""Parse an ELF file into the ``pykpatch.elf.model`` object graph.

Every structural problem (truncation, offsets or indexes out of range,
unknown class or byte order) raises ``ElfFormatError`` naming the file and
the problem; no other exception escapes ``read_elf`` for bad bytes.

What the reader checks is what is invalid in *any* ELF file: an offset,
size or index that points outside the file or outside the section it
refers to, a link to the wrong kind of section (a relocation section not
linked to the symbol table, or applying to a section without bytes of its
own; a group not linked to it; two symbol tables), an alignment that is not
a power of two.  A relocation of a relocatable object must lie inside its
section: the bytes it patches are counted with the machine's psABI width
(``pykpatch.arch``) when the type is known, and only its start is
checked when it is not - the reader describes arbitrary objects, so an
unknown type or machine is not an error.  Rules that real toolchains bend
(the gABI's zero ``sh_link``/``sh_info`` for plain sections: binutils links
``.stab`` to ``.stabstr``) live in ``pykpatch.elf.validate``; what one
consumer needs (relocation types the kernel's module loader applies) lives
with that consumer (``pykpatch.diff.validate``).
"""

from __future__ import annotations

import os
import struct

from pykpatch.arch import generic_arch
from pykpatch.elf.constants import ELF_MAGIC, ET, SHF, SHN, SHT, STT, ElfClass, ElfData
from pykpatch.elf.model import (
    ElfObject,
    GroupSection,
    Relocation,
    RelocationSection,
    Section,
    StringTableSection,
    Symbol,
    SymbolTableSection,
    SymtabShndxSection,
)
from pykpatch.elf.structs import layout_for
from pykpatch.errors import ElfFormatError

_SECTION_CLASS = {
    SHT.STRTAB: StringTableSection,
    SHT.SYMTAB: SymbolTableSection,
    SHT.SYMTAB_SHNDX: SymtabShndxSection,
}


# Section types whose bytes a relocation cannot patch: none at all, or tables the writer rebuilds.
_NO_RELOCATABLE_BYTES: dict[int, str] = {
    SHT.NULL: "the null section", SHT.NOBITS: "an SHT_NOBITS section", SHT.REL: "a relocation section",
    SHT.RELA: "a relocation section", SHT.SYMTAB: "the symbol table", SHT.DYNSYM: "a symbol table",
    SHT.STRTAB: "a string table", SHT.GROUP: "a section group", SHT.SYMTAB_SHNDX: "an SHT_SYMTAB_SHNDX section",
}


# Symbol types whose st_size counts bytes of their section (functions, variables, TLS, ifuncs).
_SIZED_TYPES = frozenset({STT.FUNC, STT.OBJECT, STT.TLS, STT.GNU_IFUNC})


def _is_dynamic_symtab(sec: Section | None) -> bool:
    """``.rela.dyn`` of an executable links ``.dynsym``: fine when relocations are not decoded."""
    return sec is not None and sec.type == SHT.DYNSYM


class _Raw:
    """Section header fields as read, before objects are linked together."""

    __slots__ = ("name", "type", "flags", "addr", "offset", "size", "link", "info", "align", "entsize")

    def __init__(self, fields: tuple) -> None:
        (self.name, self.type, self.flags, self.addr, self.offset, self.size,
         self.link, self.info, self.align, self.entsize) = fields


def read_elf(path: str | os.PathLike, *, relocations: bool = True) -> ElfObject:
    """Read the ELF file at ``path``.

    ``relocations=False`` skips decoding relocation entries (their bytes are
    kept), which is what symbol-table-only users of a big vmlinux want.
    """
    path_s = os.fspath(path)
    try:
        with open(path_s, "rb") as fh:
            blob = fh.read()
    except OSError as err:
        raise ElfFormatError(path_s, f"cannot read: {err.strerror or err}") from None
    return parse_elf(blob, path_s, relocations=relocations)


def parse_elf(blob: bytes, path: str = "<memory>", *, relocations: bool = True) -> ElfObject:
    """Parse ELF bytes (see ``read_elf``)."""
    try:
        return _Parser(blob, path).parse(relocations)
    except ElfFormatError:
        raise
    except (struct.error, IndexError, ValueError, KeyError, OverflowError, MemoryError) as err:
        # Safety net: every check below should have caught malformed input
        # with a precise message; this keeps a missed case a clean error.
        raise ElfFormatError(path, f"malformed ELF ({type(err).__name__}: {err})") from None


class _Parser:
    def __init__(self, blob: bytes, path: str) -> None:
        self.blob = blob
        self.view = memoryview(blob)
        self.path = path

    def fail(self, problem: str) -> ElfFormatError:
        return ElfFormatError(self.path, problem)

    # -- header ---------------------------------------------------------------
    def parse(self, want_relocations: bool) -> ElfObject:
        blob = self.blob
        if len(blob) < 16 or blob[:4] != ELF_MAGIC:
            raise self.fail("not an ELF file (bad magic)")
        if blob[4] not in (ElfClass.ELFCLASS32, ElfClass.ELFCLASS64):
            raise self.fail(f"unknown ELF class {blob[4]}")
        if blob[5] not in (ElfData.ELFDATA2LSB, ElfData.ELFDATA2MSB):
            raise self.fail(f"unknown ELF byte order {blob[5]}")
        layout = layout_for(blob[4], blob[5])
        self.layout = layout
        if len(blob) < layout.ehdr.size:
            raise self.fail("truncated ELF header")
        (ident, e_type, machine, version, entry, _phoff, shoff, flags, _ehsize,
         _phentsize, _phnum, shentsize, shnum, shstrndx) = layout.ehdr.unpack_from(blob, 0)

        obj = ElfObject(blob[4], blob[5], machine, e_type, path=self.path)
        self.e_type, self.machine = e_type, machine
        obj.e_flags, obj.e_version, obj.e_entry = flags, version, entry
        obj.osabi, obj.abiversion = ident[7], ident[8]

        raws = self.read_section_headers(shoff, shentsize, shnum, shstrndx)
        self.raws = raws
        sections = self.make_sections(raws)
        obj.sections = sections[1:]
        for i, sec in enumerate(sections):
            sec.index = i
        self.sections = sections
        self.name_sections(raws, sections)
        if self.shstrndx:
            shstr = sections[self.shstrndx]
            if isinstance(shstr, StringTableSection):
                obj.shstrtab = shstr
        self.link_sections(raws, sections)
        obj.symtab, obj.symbols = self.read_symbols(raws, sections)
        self.decode_groups(obj, raws, sections)
        self.decode_relocations(obj, raws, sections, want_relocations)
        return obj

    def read_section_headers(self, shoff: int, shentsize: int, shnum: int, shstrndx: int) -> list[_Raw]:
        layout, blob = self.layout, self.blob
        if shoff == 0:
            self.shstrndx = 0
            return []
        if shentsize != layout.shdr.size:
            raise self.fail(f"section header size {shentsize} (expected {layout.shdr.size})")
        if shoff + layout.shdr.size > len(blob):
            raise self.fail(f"section header table at {shoff:#x} is past the end of the file")
        first = _Raw(layout.shdr.unpack_from(blob, shoff))
        count = shnum if shnum != 0 else first.size  # extended numbering: count in sh_size of [0]
        if shstrndx == SHN.XINDEX:
            shstrndx = first.link
        if count == 0:
            count = 1
        end = shoff + count * layout.shdr.size
        if end > len(blob):
            raise self.fail(f"section header table ({count} entries at {shoff:#x}) is truncated")
        raws = [_Raw(f) for f in layout.shdr.iter_unpack(self.view[shoff:end])]
        if shstrndx >= count:
            raise self.fail(f"section name table index {shstrndx} out of range ({count} sections)")
        self.shstrndx = shstrndx
        return raws

    # -- sections -------------------------------------------------------------
    def make_sections(self, raws: list[_Raw]) -> list[Section]:
        size = len(self.blob)
        sections: list[Section] = []
        for idx, raw in enumerate(raws):
            if idx == 0:
                sections.append(Section("", type=SHT.NULL))
                continue
            if raw.type == SHT.NOBITS:
                data = b""
            else:
                if raw.offset > size or raw.size > size - raw.offset:
                    raise self.fail(
                        f"section [{idx}] data ({raw.size:#x} bytes at {raw.offset:#x}) is past the end of the file"
                    )
                data = self.blob[raw.offset:raw.offset + raw.size]
            if raw.type in (SHT.RELA, SHT.REL):
                sec: Section = RelocationSection("", rela=raw.type == SHT.RELA)
            elif raw.type == SHT.GROUP:
                sec = GroupSection("")
            else:
                sec = _SECTION_CLASS.get(raw.type, Section)("", type=raw.type)
            sec.type = raw.type
            sec.flags = raw.flags
            sec.addr = raw.addr
            sec.align = raw.align
            sec.entsize = raw.entsize
            sec.data = data
            if raw.type == SHT.NOBITS:
                sec._nobits_size = raw.size
            sections.append(sec)
        return sections

    def name_sections(self, raws: list[_Raw], sections: list[Section]) -> None:
        if not raws:
            return
        if self.shstrndx and raws[self.shstrndx].type != SHT.STRTAB:
            raise self.fail(f"section name table [{self.shstrndx}] is not a string table (SHT_STRTAB)")
        strtab = sections[self.shstrndx].data if self.shstrndx else b""
        for idx in range(1, len(raws)):
            sections[idx].name = self.string(strtab, raws[idx].name, f"section [{idx}] name")

    def string(self, table: bytes, offset: int, what: str) -> str:
        if offset == 0:
            return ""
        if offset >= len(table):
            raise self.fail(f"{what}: string offset {offset:#x} outside its string table ({len(table):#x} bytes)")
        end = table.find(b"\0", offset)
        if end < 0:
            raise self.fail(f"{what}: string at {offset:#x} is not NUL-terminated")
        return table[offset:end].decode("latin-1")

    def section_ref(self, sections: list[Section], index: int, what: str) -> Section:
        if index <= 0 or index >= len(sections):
            raise self.fail(f"{what}: section index {index} out of range ({len(sections)} sections)")
        return sections[index]

    def link_sections(self, raws: list[_Raw], sections: list[Section]) -> None:
        for idx in range(1, len(raws)):
            raw, sec = raws[idx], sections[idx]
            if raw.align > 1 and raw.align & (raw.align - 1):
                raise self.fail(f"section {sec.name!r}: alignment {raw.align:#x} is not a power of two")
            if raw.link:
                sec.link = self.section_ref(sections, raw.link, f"section {sec.name!r} sh_link")
            if isinstance(sec, RelocationSection):
                self.link_relocation_section(raw, sec, sections)
            elif isinstance(sec, (GroupSection, SymbolTableSection)) or raw.type == SHT.DYNSYM:
                # A symbol index (the group's signature, a table's first non-local), even with SHF_INFO_LINK set
                sec.info = raw.info
            elif raw.flags & SHF.INFO_LINK and raw.info:
                sec.info = self.section_ref(sections, raw.info, f"section {sec.name!r} sh_info")
            else:
                sec.info = raw.info

    def link_relocation_section(self, raw: _Raw, sec: RelocationSection, sections: list[Section]) -> None:
        """sh_link: the symbol table (checked with the symbols); sh_info: the section it patches."""
        if not raw.info:
            # Dynamic relocations of executables apply to no one section; a relocatable
            # object's always patch one.
            if self.e_type == ET.REL and raw.size:
                raise self.fail(f"relocation section {sec.name!r}: sh_info 0 names no section to relocate")
            sec.info = 0
            return
        target = self.section_ref(sections, raw.info, f"relocation section {sec.name!r} sh_info")
        without = _NO_RELOCATABLE_BYTES.get(target.type)
        if without is not None:
            raise self.fail(f"relocation section {sec.name!r} applies to {target.name!r}, {without}")
        sec.info = target
        target.rela = sec

    # -- symbols ----------------------------------------------------------------
    def read_symbols(self, raws: list[_Raw], sections: list[Section]) -> tuple[SymbolTableSection | None, list[Symbol]]:
        layout = self.layout
        tables = [i for i in range(1, len(raws)) if raws[i].type == SHT.SYMTAB]  # header 0 is no section
        if not tables:
            return None, []
        if len(tables) > 1:  # gABI: "an object file may have only one section of each type"
            both = " and ".join(repr(sections[i].name) for i in tables[:2])
            raise self.fail(f"more than one symbol table ({both})")
        symtab_idx = tables[0]
        symtab = sections[symtab_idx]
        assert isinstance(symtab, SymbolTableSection)
        raw = raws[symtab_idx]
        if raw.entsize != layout.sym.size:
            raise self.fail(f"symbol table entry size {raw.entsize} (expected {layout.sym.size})")
        if raw.size % layout.sym.size:
            raise self.fail(f"symbol table size {raw.size:#x} is not a multiple of its entry size")
        strtab = symtab.link
        if not isinstance(strtab, StringTableSection):
            raise self.fail("symbol table is not linked to a string table")
        names = strtab.data
        xindex = self.symtab_shndx(raws, sections, symtab_idx, raw.size // layout.sym.size)

        symbols: list[Symbol] = []
        nsec = len(sections)
        # In a relocatable object st_value is an offset into the section: it must lie inside it.
        sizes = [r.size for r in raws] if self.e_type == ET.REL else None
        string = self.string
        rows = layout.sym.iter_unpack(symtab.data)
        if not layout.is64:  # ELF32 field order, normalized once here rather than per call (ElfLayout.unpack_sym)
            rows = ((n, i, o, x, v, s) for n, v, s, i, o, x in rows)
        for i, (st_name, info, other, shndx, value, size) in enumerate(rows):
            if i == 0:
                continue
            sym = Symbol(string(names, st_name, f"symbol [{i}] name"), info >> 4, info & 0xF,
                         None, value, size, other, shndx)
            sym.index = i
            if shndx == SHN.XINDEX:
                if xindex is None:
                    raise self.fail(f"symbol [{i}] uses SHN_XINDEX but there is no .symtab_shndx")
                shndx = xindex[i]
                if shndx == 0:
                    raise self.fail(f"symbol {sym.name or f'[{i}]'!r} uses SHN_XINDEX but its .symtab_shndx entry is 0")
            if 0 < shndx < SHN.LORESERVE or (shndx >= SHN.LORESERVE and sym.shndx == SHN.XINDEX):
                if shndx >= nsec:
                    raise self.fail(f"symbol {sym.name or f'[{i}]'!r}: section index {shndx} out of range")
                sym.section = sections[shndx]
                sym.shndx = shndx
                if sizes is not None and (value > sizes[shndx] or (size and sym.type in _SIZED_TYPES
                                                                   and value + size > sizes[shndx])):
                    raise self.fail(f"symbol {sym.name or f'[{i}]'!r} ({value:#x}, {size:#x} bytes) is outside its "
                                    f"section {sym.section.name!r} ({sizes[shndx]:#x} bytes)")
                if sym.type == STT.SECTION and sym.section.symbol is None:
                    sym.section.symbol = sym
            symbols.append(sym)
        return symtab, symbols

    def symtab_shndx(self, raws: list[_Raw], sections: list[Section], symtab_idx: int, count: int) -> list[int] | None:
        for i, r in enumerate(raws):
            if r.type == SHT.SYMTAB_SHNDX and r.link == symtab_idx:
                data = sections[i].data
                if len(data) < count * 4:
                    raise self.fail(".symtab_shndx is shorter than the symbol table")
                fmt = ("<" if self.layout.endian == "little" else ">") + f"{count}I"
                return list(struct.unpack_from(fmt, data, 0))
        return None

    # -- groups and relocations -------------------------------------------------
    def symbol_ref(self, obj: ElfObject, index: int, what: str) -> Symbol:
        if index <= 0 or index > len(obj.symbols):
            raise self.fail(f"{what}: symbol index {index} out of range ({len(obj.symbols) + 1} symbols)")
        return obj.symbols[index - 1]

    def decode_groups(self, obj: ElfObject, raws: list[_Raw], sections: list[Section]) -> None:
        word = self.layout.word
        for idx in range(1, len(raws)):
            sec = sections[idx]
            if not isinstance(sec, GroupSection):
                continue
            data = sec.data
            if len(data) < 4 or len(data) % 4:
                raise self.fail(f"group section {sec.name!r} has a bad size {len(data):#x}")
            if obj.symtab is None or sec.link is not obj.symtab:
                raise self.fail(f"group section {sec.name!r} is not linked to the symbol table")
            words = [w[0] for w in word.iter_unpack(data)]
            sec.group_flags = words[0]
            sec.members = [self.group_member(sec, w, sections) for w in words[1:]]
            if raws[idx].info:  # sh_info: the signature's symbol index (link_sections kept it as is)
                sec.signature = self.symbol_ref(obj, raws[idx].info, f"group {sec.name!r} signature")
            sec.info = 0

    def group_member(self, group: GroupSection, index: int, sections: list[Section]) -> Section:
        """A section belongs to one group at most, once, and a group holds no group (gABI)."""
        member = self.section_ref(sections, index, f"group {group.name!r} member")
        if isinstance(member, GroupSection):
            raise self.fail(f"group {group.name!r}: member {member.name!r} is itself a section group")
        if member.group is not None:
            raise self.fail(f"section {member.name!r} is listed twice in groups "
                            f"({member.group.name!r}, {group.name!r})")
        member.group = group
        return member

    def decode_relocations(self, obj: ElfObject, raws: list[_Raw], sections: list[Section], want: bool) -> None:
        layout = self.layout
        nsyms = len(obj.symbols)
        symbols = [None, *obj.symbols]
        arch = generic_arch(self.machine)
        # Any relocation starting at or below this distance from its section's end fits, whatever its type.
        widest = max((r.size for r in arch.relocs.values()), default=1)
        for idx in range(1, len(raws)):
            sec = sections[idx]
            if not isinstance(sec, RelocationSection):
                continue
            if sec.data and sec.link is not obj.symtab and (want or not _is_dynamic_symtab(sec.link)):
                raise self.fail(f"relocation section {sec.name!r} is not linked to the symbol table")
            rec = layout.rela if sec.type == SHT.RELA else layout.rel
            if not want:
                sec.relocations = None  # bytes kept as they are; see RelocationSection
                continue
            if len(sec.data) % rec.size:
                raise self.fail(f"relocation section {sec.name!r} size is not a multiple of {rec.size}")
            # r_offset is an offset into the target in a relocatable object (an address otherwise).
            target = sec.info if isinstance(sec.info, Section) and self.e_type == ET.REL else None
            fits = target.size - widest if target is not None else 1 << 64
            relocs: list[Relocation] = []
            append = relocs.append
            # r_info split inlined (see ElfLayout.r_sym_type): this loop is the reader's hottest
            shift, mask = (32, 0xFFFFFFFF) if layout.is64 else (8, 0xFF)
            entries = rec.iter_unpack(sec.data)
            if sec.type != SHT.RELA:
                entries = ((offset, info, 0) for offset, info in entries)
            for offset, info, addend in entries:
                sym_idx = info >> shift
                if sym_idx > nsyms or offset > fits:
                    self.check_relocation(sec, target, arch, offset, info & mask, sym_idx, nsyms)
                append(Relocation(offset, info & mask, symbols[sym_idx], addend))
            sec.relocations = relocs

    def check_relocation(self, sec: RelocationSection, target: Section | None, arch, offset: int, rtype: int,
                         sym_idx: int, nsyms: int) -> None:
        """The slow path of ``decode_relocations``: raise for a relocation that is really wrong."""
        if sym_idx > nsyms:
            raise self.fail(f"relocation in {sec.name!r} at {offset:#x}: symbol index {sym_idx} out of range")
        if target is None:
            return
        width = max(arch.reloc_size(rtype), 1)  # a zero-width marker (R_*_NONE) still annotates a byte
        if offset + width > target.size:
            what = f"{arch.reloc_name(rtype)} ({width} bytes)" if rtype in arch.relocs else f"type {rtype}"
            raise self.fail(f"relocation in {sec.name!r} at {offset:#x}, {what}, is outside {target.name!r} "
                            f"({target.size:#x} bytes)")
