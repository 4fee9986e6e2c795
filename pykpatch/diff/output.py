"""Stage 6: build the output object and its livepatch metadata.

Output format (consumed by ``pykpatch module``)
===============================================

The output is an ordinary relocatable object holding the included
sections and symbols (changed functions made LOCAL so no other object of
the patch module links to them), plus three non-ALLOC sections that
describe the live patch.  Every field that names a place uses a normal
relocation, so the description stays correct after kbuild links several
diff outputs into one module (``ld -r`` moves sections; relocations follow).
All integers are in the object's byte order.

The record layouts (``.pykpatch.strings``, ``.pykpatch.funcs``,
``.pykpatch.relocs``, the callbacks) are defined once in ``pykpatch.records``.

The post-link step turns ``.pykpatch.relocs`` into ``.klp.rela.OBJ.SEC``
sections with ``.klp.sym.OBJ.NAME,POS`` symbols (kernel
Documentation/livepatch/module-elf-format.rst); the module's init code turns
``.pykpatch.funcs`` into its ``klp_object``/``klp_func`` arrays.  Callback
records of the patch-author header (``.kpatch.callbacks.*``: ``{fn,
objname}``, 16 bytes) get their ``objname`` field pointed at the parent's
name here.  ``__mcount_loc`` is rebuilt for the
included functions so ftrace knows their entry points.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pykpatch.arch import Role
from pykpatch.diff import rules
from pykpatch.diff.analyze import PATCHABLE_ENTRIES, table_entry
from pykpatch.diff.lookup import LookupResult, ParentLookup
from pykpatch.diff.state import DiffState, Status
from pykpatch.elf.constants import SHF, SHN, SHT, STB, STT
from pykpatch.elf.model import ElfObject, Relocation, RelocationSection, Section, StringTableSection, Symbol
from pykpatch.errors import DiffInputError, PykpatchError, SymbolLookupError
from pykpatch.records import (
    CALLBACK_OBJNAME,
    CALLBACK_PREFIX,
    CALLBACK_RECORD,
    FUNC_NAME,
    FUNC_NEW,
    FUNC_OBJNAME,
    FUNC_RECORD,
    FUNCS_SECTION,
    KLP_PLACEHOLDER,
    OUR_SECTIONS,
    RELOC_DEST,
    RELOC_NAME,
    RELOC_OBJNAME,
    RELOC_RECORD,
    RELOCS_SECTION,
    STRINGS_SECTION,
    FuncRecord,
    KlpReloc,
)


@dataclass
class PatchedFunc:
    name: str
    objname: str
    sympos: int
    symbol: Symbol


@dataclass
class OutputPlan:
    obj: ElfObject
    parent: str = "vmlinux"
    funcs: list[PatchedFunc] = field(default_factory=list)
    klp_relocs: list[KlpReloc] = field(default_factory=list)


class _Strings:
    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}
        self.data = bytearray()

    def add(self, text: str) -> int:
        off = self.offsets.get(text)
        if off is None:
            off = len(self.data)
            self.offsets[text] = off
            self.data += text.encode("latin-1") + b"\0"
        return off


def migrate_included(st: DiffState) -> ElfObject:
    """A new object with only the included sections and symbols (others become undefined references)."""
    src = st.patched.obj
    out = ElfObject(src.layout.elf_class, src.layout.data, src.machine, src.e_type, path=src.path)
    out.e_flags, out.osabi, out.abiversion = src.e_flags, src.osabi, src.abiversion
    included = st.include
    sections = [s for s in src.sections if s in included or s is src.symtab or s is src.shstrtab
                or (src.symtab is not None and s is src.symtab.link)]
    keep = set(sections)
    for sec in sections:
        if isinstance(sec.link, Section) and sec.link not in keep:
            sec.link = None
        if isinstance(sec.info, Section) and sec.info not in keep:
            sec.info = 0
        if sec.rela is not None and sec.rela not in keep:
            sec.rela = None
        if sec.symbol is not None and sec.symbol not in included:
            sec.symbol = None
    out.sections = sections
    out.symtab = src.symtab
    out.shstrtab = src.shstrtab
    symbols = []
    for sym in src.symbols:
        if sym not in included:
            continue
        if sym.section is not None and sym.section not in keep:
            sym.section = None
            sym.shndx = SHN.UNDEF
            sym.value = 0
        symbols.append(sym)
    out.symbols = symbols
    return out


def _is_function_pointer(st: DiffState, rel: Relocation, through_table: set[Relocation]) -> bool:
    """``&func`` taken by changed code must keep pointing at the *original* function.

    A pointer to the replacement could outlive the patch module (callbacks
    stored in kernel structures), so kpatch resolves it to the original.
    Nested functions (names with a dot) and new functions are linked normally.
    ``through_table``: table entries (ppc64 ``.toc``) that code loads a
    function's address from (``function_pointer_entries``).
    """
    sym = rel.symbol
    if sym is None or sym.type != STT.FUNC or sym in st.patched.parent:
        return False
    arch = st.arch
    taken = (rel in through_table or rel.type in arch.types(Role.FUNC_POINTER_GOT)
             or (rel.type in arch.types(Role.FUNC_POINTER) and rel.addend == sym.value))
    return taken and st.status.get(sym) != Status.NEW and "." not in sym.name


def function_pointer_entries(st: DiffState, out: ElfObject) -> set[Relocation]:
    """Table entries (ppc64 ``.toc``) through which included code takes a function's address:
    loaded by a ``Role.INDIRECT`` reference, naming a function at its entry."""
    indirect = st.indirect_types
    if not indirect:
        return set()
    entries: set[Relocation] = set()
    for relsec in out.relocation_sections():
        for rel in relsec.relocations or ():
            if rel.type not in indirect:
                continue
            target = table_entry(st.patched, rel)
            sym = target.symbol if target is not None else None
            if target is not None and sym is not None and sym.type == STT.FUNC and target.addend == sym.value:
                entries.add(target)
    return entries


def _loader_resolves(st: DiffState, rel: Relocation, base: Section) -> bool:
    """References the module loader or the module's own link handle: never livepatch relocations
    (ppc64's TOC setup and entry sequences, s390's expoline thunks)."""
    if rel.type in st.arch.types(Role.LOADER_ONLY):
        return True
    return st.arch.hooks.keeps_normal_reference(rel, base)


def needs_klp(st: DiffState, lookup: ParentLookup, rel: Relocation, base: Section,
              through_table: set[Relocation] | None = None) -> LookupResult | None:
    """The parent-table entry when this relocation must be resolved by the livepatch core."""
    sym = rel.symbol
    if sym is None or sym.type == STT.SECTION or sym.type == STT.FILE:
        return None
    if _loader_resolves(st, rel, base):
        return None
    if sym.section is not None:
        if not _is_function_pointer(st, rel, through_table or set()):
            return None
    found = lookup.lookup(sym, st.patched.file_of.get(sym))
    if found is None:
        if sym.bind == STB.LOCAL and sym.section is None:
            raise SymbolLookupError(
                f"{st.name}: can't find local symbol {sym.name} in the {lookup.objname} symbol table")
        return None  # another object of the patch module, or exported by vmlinux
    if sym.bind == STB.LOCAL:
        if found.is_global:
            raise SymbolLookupError(
                f"{st.name}: can't find local symbol {sym.name} in the {lookup.objname} symbol table")
        return found
    if found.exported:
        if found.objname == "vmlinux" and not st.arch.hooks.resolve_live_even_if_exported(sym):
            return None
        return found
    return found


def plan_output(st: DiffState, lookup: ParentLookup, parent: str) -> OutputPlan:
    out = migrate_included(st)
    plan = OutputPlan(out, parent)
    for func in out.symbols:
        if func.type != STT.FUNC or st.status.get(func) != Status.CHANGED or func in st.patched.parent:
            continue
        found = lookup.lookup(func, st.patched.file_of.get(func))
        if found is None or (func.bind == STB.LOCAL and found.is_global):
            raise SymbolLookupError(f"{st.name}: can't find function {func.name} in the {lookup.objname} symbol table")
        plan.funcs.append(PatchedFunc(func.name, parent, found.sympos, func))
        # Replacement functions must not be linked to by other objects of the module.
        func.bind = STB.LOCAL

    used_normally: set[Symbol] = set()
    converted: set[Symbol] = set()
    placeholder = Symbol(KLP_PLACEHOLDER, STB.GLOBAL, STT.NOTYPE, None)
    special_names = st.arch.special_section_names
    through_table = function_pointer_entries(st, out)
    for relsec in list(out.relocation_sections()):
        if relsec.name in (".rela" + n for n in OUR_SECTIONS) or not isinstance(relsec.info, Section):
            continue
        base = relsec.info
        special = base.name in special_names
        kept = []
        for rel in relsec.relocations or ():
            sym = rel.symbol
            found = needs_klp(st, lookup, rel, base, through_table)
            if found is None or sym is None:  # (needs_klp finds nothing for a relocation without a symbol)
                kept.append(rel)
                if sym is not None:
                    used_normally.add(sym)
                continue
            if special and parent != "vmlinux":
                st.error(f"reference to {sym.name} from special section {base.name} of module {parent} "
                         "cannot be resolved by livepatch")
            plan.klp_relocs.append(KlpReloc(base, rel.offset, rel.type, rel.addend, sym.name,
                                            found.objname, found.sympos, found.exported and found.objname != "vmlinux",
                                            sym.type, sym.bind))
            converted.add(sym)
            kept.append(Relocation(rel.offset, rel.type, placeholder, rel.addend))
        relsec.relocations = kept
    # Symbols only reached through livepatch relocations leave the symbol table.
    out.symbols = [s for s in out.symbols if not (s in converted and s not in used_normally and s.section is None)]
    if plan.klp_relocs:
        out.symbols.append(placeholder)
    return plan


def _section_symbol(out: ElfObject, sec: Section) -> Symbol:
    if sec.symbol is None or sec.symbol not in out.symbols:
        sym = Symbol("", STB.LOCAL, STT.SECTION, sec)
        out.symbols.append(sym)
        sec.symbol = sym
    return sec.symbol


def _abs64(st: DiffState) -> int:
    try:
        return st.arch.role_type(Role.ABS64)
    except PykpatchError as err:
        raise SymbolLookupError(str(err)) from None


def emit_metadata(st: DiffState, plan: OutputPlan) -> None:
    """Write .pykpatch.{strings,funcs,relocs} (see module docstring)."""
    out = plan.obj
    endian = out.layout.endian
    abs64 = _abs64(st)
    strings = _Strings()
    strsec = out.add_section(Section(STRINGS_SECTION, SHT.PROGBITS, SHF.ALLOC, b"", align=1, entsize=1))
    strsym = _section_symbol(out, strsec)

    funcs = out.add_section(Section(FUNCS_SECTION, SHT.PROGBITS, SHF.ALLOC, b"", align=8, entsize=FUNC_RECORD))
    frel = out.ensure_relocation_section(funcs).decoded_relocations()
    fdata = bytearray()
    for i, f in enumerate(plan.funcs):
        base = i * FUNC_RECORD
        fdata += FuncRecord(f.sympos).encode(endian)
        frel.append(Relocation(base + FUNC_NEW, abs64, f.symbol, 0))
        frel.append(Relocation(base + FUNC_NAME, abs64, strsym, strings.add(f.name)))
        frel.append(Relocation(base + FUNC_OBJNAME, abs64, strsym, strings.add(f.objname)))
    funcs.data = bytes(fdata)

    relocs = out.add_section(Section(RELOCS_SECTION, SHT.PROGBITS, 0, b"", align=8, entsize=RELOC_RECORD))
    rrel = out.ensure_relocation_section(relocs).decoded_relocations()
    rdata = bytearray()
    for i, k in enumerate(plan.klp_relocs):
        base = i * RELOC_RECORD
        rdata += k.record.encode(endian)
        rrel.append(Relocation(base + RELOC_DEST, abs64, _section_symbol(out, k.section), k.offset))
        rrel.append(Relocation(base + RELOC_NAME, abs64, strsym, strings.add(k.name)))
        rrel.append(Relocation(base + RELOC_OBJNAME, abs64, strsym, strings.add(k.objname)))
    relocs.data = bytes(rdata)
    emit_callback_objnames(st, out, strsym, strings, plan.parent, abs64)
    strsec.data = bytes(strings.data)


def emit_callback_objnames(st: DiffState, out: ElfObject, strsym: Symbol, strings: _Strings, parent: str,
                           abs64: int) -> None:
    """Point each callback record's ``objname`` at the object this diff patches."""
    for sec in out.sections:
        if not sec.name.startswith(CALLBACK_PREFIX) or isinstance(sec, RelocationSection):
            continue
        rels = out.ensure_relocation_section(sec).decoded_relocations()
        taken = {r.offset for r in rels}
        for base in range(0, sec.size, CALLBACK_RECORD):
            if base + CALLBACK_OBJNAME not in taken:
                rels.append(Relocation(base + CALLBACK_OBJNAME, abs64, strsym, strings.add(parent)))


def _refuse_references_into(st: DiffState, out: ElfObject, doomed: list[Section]) -> None:
    """Code never refers to ``__mcount_loc`` (only ftrace reads it); a damaged object that does
    would keep a relocation to a symbol of the section about to be rebuilt."""
    for relsec in out.relocation_sections():
        if relsec in doomed:
            continue
        for rel in relsec.relocations or ():
            if rel.symbol is not None and rel.symbol.section in doomed:
                raise DiffInputError(f"{os.path.basename(st.patched.obj.path)}: {relsec.name} refers to "
                                     f"{rel.symbol.section.name}, "
                                     "which only ftrace reads and the output rebuilds")


def emit_mcount(st: DiffState, plan: OutputPlan) -> None:
    """Rebuild the ftrace records of the included functions that have an ftrace call site.

    One ``__mcount_loc`` for all of them, or -- where the arch records call
    sites with -fpatchable-function-entry and the object has such records --
    one ``__patchable_function_entries`` section per function, linked to its
    text section (SHF_LINK_ORDER, as the compiler makes them).
    """
    out = plan.obj
    patchable = st.arch.uses_patchable_entries and any(s.name == PATCHABLE_ENTRIES for s in out.sections)
    record_names = ("__mcount_loc", ".rela__mcount_loc", PATCHABLE_ENTRIES, ".rela" + PATCHABLE_ENTRIES)
    old = [s for s in out.sections if s.name in record_names]
    _refuse_references_into(st, out, old)
    out.remove_sections(old)
    abs64 = _abs64(st)
    entries = []
    site_of = st.arch.hooks.ftrace_site
    for sym in out.symbols:
        if sym.type != STT.FUNC or sym.section is None or st.status.get(sym) == Status.SAME:
            continue
        if sym not in st.patched.has_hook:
            continue
        site = st.patched.entry_site.get(sym)
        if site is None:
            site = site_of(sym)
        if site is None:
            continue
        entries.append((sym, site))
    if not entries:
        return
    if patchable:
        _emit_patchable_entries(out, entries, abs64)
        return
    sec = out.add_section(Section("__mcount_loc", SHT.PROGBITS, SHF.ALLOC, bytes(8 * len(entries)), align=8, entsize=8))
    rels = out.ensure_relocation_section(sec).decoded_relocations()
    for i, (sym, site) in enumerate(entries):
        rels.append(Relocation(i * 8, abs64, sym, site - sym.value))


def _emit_patchable_entries(out: ElfObject, entries: list[tuple[Symbol, int]], abs64: int) -> None:
    """One ``__patchable_function_entries`` per function, against its section symbol (as GCC does)."""
    for sym, site in entries:
        text = sym.section
        assert text is not None
        sec = out.add_section(Section(PATCHABLE_ENTRIES, SHT.PROGBITS, SHF.WRITE | SHF.ALLOC | SHF.LINK_ORDER,
                                      bytes(8), align=8, entsize=0, link=text))
        out.ensure_relocation_section(sec).decoded_relocations().append(
            Relocation(0, abs64, _section_symbol(out, text), site))


def order_symbols(out: ElfObject) -> None:
    """FILE, local functions, other locals, globals: the order kpatch's tools expect."""
    def rank(sym: Symbol) -> int:
        if sym.bind != STB.LOCAL:
            return 3
        if sym.type == STT.FILE:
            return 0
        return 1 if sym.type == STT.FUNC else 2
    out.symbols.sort(key=rank)


def check_relocation_ranges(st: DiffState, out: ElfObject) -> None:
    for relsec in out.relocation_sections():
        for rel in relsec.relocations or ():
            sym = rel.symbol
            if sym is None or sym.section is None or sym.type == STT.SECTION and sym.section.type == SHT.NOBITS:
                continue
            if sym.section.type != SHT.NOBITS and sym.value + rel.addend > sym.section.size:
                st.error(f"out-of-range relocation {sym.name}{rel.addend:+#x} in {relsec.name}")


def build_output(st: DiffState, lookup: ParentLookup, parent: str) -> OutputPlan:
    plan = plan_output(st, lookup, parent)
    emit_metadata(st, plan)
    emit_mcount(st, plan)
    order_symbols(plan.obj)
    check_relocation_ranges(st, plan.obj)
    return plan


def string_sections_of(obj: ElfObject) -> list[StringTableSection]:
    return [s for s in obj.sections if isinstance(s, StringTableSection)]


__all__ = ["OutputPlan", "PatchedFunc", "KlpReloc", "build_output", "FUNCS_SECTION", "RELOCS_SECTION",
           "STRINGS_SECTION", "rules"]
