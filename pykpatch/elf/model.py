"""Mutable in-memory model of an ELF relocatable object.

Sections, symbols and relocations refer to each other as Python objects, not
by index: a relocation holds its ``Symbol``, a symbol its ``Section``, a
relocation section its target ``Section``.  Indexes (``index`` attributes)
are what the reader found; the writer recomputes all of them, so stages of
the diff can add, drop and move elements freely and still get a valid file.

One class per section kind, as in pyelftools:

- ``Section``               any section whose bytes we keep as they are
- ``StringTableSection``    SHT_STRTAB (rebuilt by the writer when it backs
                            ``.symtab`` names or section names)
- ``SymbolTableSection``    SHT_SYMTAB (contents = ``ElfObject.symbols``)
- ``SymtabShndxSection``    SHT_SYMTAB_SHNDX (rebuilt by the writer)
- ``RelocationSection``     SHT_RELA / SHT_REL (contents = ``relocations``)
- ``GroupSection``          SHT_GROUP (flag word + member sections)
"""

from __future__ import annotations

from collections.abc import Iterator

from pykpatch.elf.constants import EM, ET, SHF, SHN, SHT, STB, STT, STV, ElfClass, ElfData
from pykpatch.elf.structs import ElfLayout, layout_for
from pykpatch.errors import ElfWriteError


class Section:
    """A section whose contents are kept as raw bytes.

    ``link`` is the linked ``Section`` (or None); ``info`` is a ``Section``
    when the format says sh_info names a section (relocation targets,
    SHF_INFO_LINK), otherwise the raw integer.
    """

    __slots__ = (
        "name", "type", "flags", "addr", "align", "entsize", "link", "info",
        "data", "_nobits_size", "index", "rela", "group", "symbol",
    )

    def __init__(
        self,
        name: str,
        type: int = SHT.PROGBITS,
        flags: int = 0,
        data: bytes = b"",
        align: int = 1,
        entsize: int = 0,
        addr: int = 0,
        link: Section | None = None,
        info: Section | int = 0,
        nobits_size: int = 0,
    ) -> None:
        self.name = name
        self.type = int(type)
        self.flags = int(flags)
        self.addr = addr
        self.align = align
        self.entsize = entsize
        self.link = link
        self.info = info
        self.data = data
        self._nobits_size = nobits_size
        self.index = 0
        # Back-references filled by the reader (and kept up to date by users):
        self.rela: RelocationSection | None = None  # relocations applying to this section
        self.group: GroupSection | None = None  # the group this section belongs to
        self.symbol: Symbol | None = None  # its STT_SECTION symbol, if any

    # -- size -------------------------------------------------------------
    @property
    def size(self) -> int:
        if self.type == SHT.NOBITS:
            return self._nobits_size
        return len(self.data)

    @size.setter
    def size(self, value: int) -> None:
        if self.type != SHT.NOBITS:
            raise ValueError(f"{self.name}: only SHT_NOBITS sections have a free size")
        self._nobits_size = value

    # -- predicates used throughout the diff ------------------------------
    @property
    def is_text(self) -> bool:
        return bool(self.flags & SHF.EXECINSTR)

    @property
    def is_alloc(self) -> bool:
        return bool(self.flags & SHF.ALLOC)

    @property
    def is_rela(self) -> bool:
        return self.type in (SHT.RELA, SHT.REL)

    @property
    def is_string_merge(self) -> bool:
        return (self.flags & (SHF.MERGE | SHF.STRINGS)) == (SHF.MERGE | SHF.STRINGS)

    def string_at(self, offset: int) -> str:
        """The NUL-terminated string starting at ``offset`` (for string sections)."""
        data = self.data
        if offset < 0 or offset >= len(data):
            raise IndexError(f"{self.name}: string offset {offset:#x} out of range")
        end = data.find(b"\0", offset)
        if end < 0:
            end = len(data)
        return bytes(data[offset:end]).decode("latin-1")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} [{self.index}] size={self.size:#x}>"


class StringTableSection(Section):
    """SHT_STRTAB.  Its bytes are rebuilt on write when it names symbols or sections."""

    __slots__ = ()


class SymbolTableSection(Section):
    """SHT_SYMTAB.  Its entries are ``ElfObject.symbols``; ``data`` is rebuilt on write."""

    __slots__ = ()


class SymtabShndxSection(Section):
    """SHT_SYMTAB_SHNDX: section indexes of symbols whose st_shndx is SHN_XINDEX."""

    __slots__ = ()


class GroupSection(Section):
    """SHT_GROUP: a COMDAT or plain group of sections, named by a signature symbol."""

    __slots__ = ("group_flags", "members", "signature")

    def __init__(self, name: str, **kwargs) -> None:
        super().__init__(name, type=SHT.GROUP, **kwargs)
        self.group_flags = 0
        self.members: list[Section] = []
        self.signature: Symbol | None = None


class RelocationSection(Section):
    """SHT_RELA / SHT_REL: relocations applying to ``target``.

    For SHT_REL the addend lives in the target's bytes; ``Relocation.addend``
    is then 0 and the bytes are kept unchanged.  ``relocations`` is None when
    the reader was told not to decode them: ``data`` is then written as is.
    """

    __slots__ = ("relocations",)

    def __init__(self, name: str, target: Section | None = None, rela: bool = True, **kwargs) -> None:
        super().__init__(name, type=SHT.RELA if rela else SHT.REL, **kwargs)
        self.info = target if target is not None else 0
        self.relocations: list[Relocation] | None = []

    def decoded_relocations(self) -> list[Relocation]:
        """``relocations``, for code that must have them (to add entries, say).

        Only a section of an object read with ``relocations=False`` has none:
        code editing such an object is a bug, reported as a model that cannot
        be written rather than as a crash on ``None``.
        """
        if self.relocations is None:
            raise ElfWriteError(f"{self.name}: its relocations were not decoded (read with relocations=False), "
                                "so none can be added or changed")
        return self.relocations

    @property
    def target(self) -> Section:
        """The section these relocations patch, for callers that know there is one (every relocation
        section of a relocatable object; only an executable's dynamic relocations have sh_info 0).
        Not checked here: the diff reads it per relocation."""
        return self.info  # type: ignore[return-value]  # an int only for sh_info 0 (see above)

    @target.setter
    def target(self, section: Section) -> None:
        self.info = section


class Symbol:
    """A symbol-table entry.

    ``section`` is the defining ``Section``, or None with ``shndx`` one of
    SHN_UNDEF / SHN_ABS / SHN_COMMON / SHN_LIVEPATCH.
    """

    __slots__ = ("name", "bind", "type", "other", "section", "shndx", "value", "size", "index")

    def __init__(
        self,
        name: str,
        bind: int = STB.LOCAL,
        type: int = STT.NOTYPE,
        section: Section | None = None,
        value: int = 0,
        size: int = 0,
        other: int = 0,
        shndx: int = SHN.UNDEF,
    ) -> None:
        self.name = name
        self.bind = int(bind)
        self.type = int(type)
        self.other = other
        self.section = section
        self.shndx = int(shndx)
        self.value = value
        self.size = size
        self.index = 0

    @property
    def visibility(self) -> int:
        return self.other & 0x3

    @property
    def is_local(self) -> bool:
        return self.bind == STB.LOCAL

    @property
    def is_func(self) -> bool:
        return self.type == STT.FUNC

    @property
    def is_object(self) -> bool:
        return self.type == STT.OBJECT

    @property
    def is_section(self) -> bool:
        return self.type == STT.SECTION

    @property
    def is_file(self) -> bool:
        return self.type == STT.FILE

    @property
    def is_undefined(self) -> bool:
        return self.section is None and self.shndx == SHN.UNDEF

    def __repr__(self) -> str:
        where = self.section.name if self.section is not None else f"shndx={self.shndx:#x}"
        bind = STB(self.bind).name if self.bind in STB._value2member_map_ else self.bind
        return f"<Symbol {self.name!r} {bind}/{self.type} {where}+{self.value:#x}>"


class Relocation:
    """One relocation: patch ``offset`` of the target with ``symbol`` + ``addend``."""

    __slots__ = ("offset", "type", "symbol", "addend")

    def __init__(self, offset: int, type: int, symbol: Symbol | None, addend: int = 0) -> None:
        self.offset = offset
        self.type = type
        self.symbol = symbol  # None only for r_sym == 0 (e.g. R_*_NONE)
        self.addend = addend

    def __repr__(self) -> str:
        name = self.symbol.name if self.symbol is not None else "<none>"
        return f"<Relocation {self.offset:#x} type={self.type} {name}{self.addend:+#x}>"


class ElfObject:
    """An ELF file as a graph of sections, symbols and relocations."""

    def __init__(
        self,
        elf_class: int = ElfClass.ELFCLASS64,
        data: int = ElfData.ELFDATA2LSB,
        machine: int = EM.X86_64,
        e_type: int = ET.REL,
        path: str = "<memory>",
    ) -> None:
        self.path = path
        self.layout: ElfLayout = layout_for(elf_class, data)
        self.machine = int(machine)
        self.e_type = int(e_type)
        self.e_flags = 0
        self.e_version = 1
        self.e_entry = 0
        self.osabi = 0
        self.abiversion = 0
        self.sections: list[Section] = []
        self.symbols: list[Symbol] = []  # without the null symbol
        self.symtab: SymbolTableSection | None = None
        self.shstrtab: StringTableSection | None = None

    # -- look-ups -----------------------------------------------------------
    def section_map(self) -> dict[str, Section]:
        """Name -> section (the first of that name).  Build once per stage, not per query."""
        result: dict[str, Section] = {}
        for sec in self.sections:
            result.setdefault(sec.name, sec)
        return result

    def symbol_map(self) -> dict[str, Symbol]:
        """Name -> symbol (the first of that name, skipping section symbols)."""
        result: dict[str, Symbol] = {}
        for sym in self.symbols:
            if sym.type != STT.SECTION:
                result.setdefault(sym.name, sym)
        return result

    def find_section(self, name: str) -> Section | None:
        for sec in self.sections:
            if sec.name == name:
                return sec
        return None

    def relocation_sections(self) -> Iterator[RelocationSection]:
        for sec in self.sections:
            if isinstance(sec, RelocationSection):
                yield sec

    def symbol_name(self, sym: Symbol) -> str:
        """The name a person would use: section symbols are named after their section."""
        if sym.type == STT.SECTION and sym.section is not None and not sym.name:
            return sym.section.name
        return sym.name

    # -- edits ----------------------------------------------------------------
    def add_section(self, section: Section) -> Section:
        self.sections.append(section)
        return section

    def remove_sections(self, doomed: set[Section] | list[Section]) -> None:
        """Remove sections, the symbols defined in them, and back-links to them."""
        doomed_ids = {id(s) for s in doomed}
        self.sections = [s for s in self.sections if id(s) not in doomed_ids]
        self.symbols = [s for s in self.symbols if s.section is None or id(s.section) not in doomed_ids]
        for sec in self.sections:
            if sec.rela is not None and id(sec.rela) in doomed_ids:
                sec.rela = None

    def add_symbol(self, symbol: Symbol) -> Symbol:
        self.symbols.append(symbol)
        return symbol

    def ensure_relocation_section(self, target: Section) -> RelocationSection:
        """Return ``target``'s relocation section, creating ``.rela<name>`` if needed."""
        if target.rela is not None:
            return target.rela
        rela = RelocationSection(
            ".rela" + target.name,
            target=target,
            rela=True,
            flags=SHF.INFO_LINK,
            align=8 if self.layout.is64 else 4,
            entsize=self.layout.rela.size,
            link=self.symtab,
        )
        target.rela = rela
        self.sections.append(rela)
        return rela

    @property
    def is_rel(self) -> bool:
        return self.e_type == ET.REL

    def __repr__(self) -> str:
        return f"<ElfObject {self.path} sections={len(self.sections)} symbols={len(self.symbols)}>"


__all__ = [
    "ElfObject", "Section", "StringTableSection", "SymbolTableSection", "SymtabShndxSection",
    "GroupSection", "RelocationSection", "Symbol", "Relocation", "STV",
]
