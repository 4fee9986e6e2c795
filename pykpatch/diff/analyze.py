"""Stage 1: facts about each object on its own, before the two are correlated.

- bundle_symbols: which function/object owns each -ffunction-sections section
- detect_children: ``foo.cold`` / ``foo.part.N`` belong to ``foo``
- find_ftrace_hooks: which functions have an ftrace call site (x86: ``__fentry__``)
- replace_section_symbols: relocations against ``.text.foo`` (the section
  symbol) rewritten to ``foo`` (the symbol really meant), so that both
  objects' relocations can be compared and resolved by name
- find_string_targets: the literal a relocation into a string section points at
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict

from pykpatch.arch import ArchInfo, Role
from pykpatch.diff import rules
from pykpatch.diff.state import ObjectFacts
from pykpatch.elf.constants import STB, STT
from pykpatch.elf.model import ElfObject, GroupSection, Relocation, RelocationSection, Section, Symbol
from pykpatch.errors import DiffInputError

# -fpatchable-function-entry's records of ftrace call sites (arm64, loongarch, ppc64le 6.x).
PATCHABLE_ENTRIES = "__patchable_function_entries"


def analyze(obj: ElfObject, arch: ArchInfo, name: str) -> ObjectFacts:
    facts = ObjectFacts(obj)
    arch.hooks.normalize(obj)
    bundle_symbols(facts, arch, name)
    detect_children(facts, name)
    mark_grouped_sections(facts)
    map_file_blocks(facts)
    replace_section_symbols(facts, arch)
    find_string_targets(facts, arch)
    find_ftrace_hooks(facts, arch)
    map_table_entries(facts, arch)
    return facts


def map_table_entries(facts: ObjectFacts, arch: ArchInfo) -> None:
    """Index the relocations of the arch's indirect table (ppc64 ``.toc``) by entry offset."""
    if arch.indirect_table is None:
        return
    table = next((s for s in facts.obj.sections if s.name == arch.indirect_table), None)
    if table is None:
        return
    facts.table = table
    if table.rela is not None:
        facts.table_entries = {rel.offset: rel for rel in table.rela.relocations or ()}


def table_entry(facts: ObjectFacts, rel: Relocation) -> Relocation | None:
    """The relocation a ``Role.INDIRECT`` reference's table entry holds; None for a constant entry
    (or a reference that does not point into the table at all)."""
    sym = rel.symbol
    if sym is None or sym.section is not facts.table or facts.table is None:
        return None
    return facts.table_entries.get(sym.value + rel.addend)


# -fpatchable-function-entry=N,M puts at most a few dozen bytes of NOPs before an entry.
MAX_PADDING = 64


def padded_sections(obj: ElfObject) -> set[Section]:
    """Sections whose code starts with compiler padding before the function (patchable entry at offset 0).

    ``-fpatchable-function-entry=16,16`` (x86 CALL_PADDING on 6.x) writes 16
    NOPs, records their start in ``__patchable_function_entries`` and puts the
    function symbol after them; objtool only adds the ``__pfx_`` symbol over
    them at the vmlinux link, so an object has the padding without it.
    """
    out: set[Section] = set()
    for sec in obj.sections:
        if sec.name != PATCHABLE_ENTRIES or sec.rela is None:
            continue
        for rel in sec.rela.relocations or ():
            target = rel.symbol
            if target is not None and target.section is not None and target.value + rel.addend == 0:
                out.add(target.section)
    return out


def bundle_symbols(facts: ObjectFacts, arch: ArchInfo, name: str) -> None:
    # With call padding (CONFIG_CALL_PADDING) a function starts after its
    # __pfx_ symbol's NOPs, 16 bytes into its own section; elsewhere where
    # the arch puts it (ppc64le: after the TOC word of its global entry).
    prefix_size: dict[tuple[Section, str], int] = {}
    for sym in facts.obj.symbols:
        target = rules.prefix_symbol_target(sym.name)
        if target is not None and sym.section is not None and sym.value == 0:
            prefix_size[(sym.section, target)] = sym.size
            facts.prefix_of.setdefault(sym.section, []).append(sym)
    padded = padded_sections(facts.obj)
    for sym in facts.obj.symbols:
        sec = sym.section
        if sec is None or sym.type not in (STT.FUNC, STT.OBJECT):
            continue
        if rules.bundle_prefix_matches(sym, sec):
            expected = prefix_size.get((sec, sym.name))
            if expected is None and sym.type == STT.FUNC and sec in padded and 0 < sym.value <= MAX_PADDING:
                expected = sym.value  # entry padding before the function (x86 6.x CALL_PADDING, no __pfx_ yet)
            if expected is None:
                expected = arch.hooks.bundled_offset(sym) if sym.type == STT.FUNC else 0
            if sym.value != expected:
                raise DiffInputError(
                    f"{name}: symbol {sym.name} is at offset {sym.value:#x} of its own section {sec.name}, "
                    f"expected {expected:#x}"
                )
            facts.bundled[sec] = sym


def detect_children(facts: ObjectFacts, name: str) -> None:
    """Link ``.cold`` / ``.part.N`` subfunctions to their parent (a changed child changes the parent)."""
    funcs = {s.name: s for s in facts.obj.symbols if s.type == STT.FUNC}
    for sym in facts.obj.symbols:
        if sym.type != STT.FUNC:
            continue
        idx = rules.child_suffix(sym.name)
        if idx <= 0:
            continue
        parent = funcs.get(sym.name[:idx])
        if parent is None:
            if ".cold" in sym.name:
                raise DiffInputError(f"{name}: cannot find the parent function of {sym.name}")
            continue
        facts.parent[sym] = parent
        facts.children.setdefault(parent, []).append(sym)


def mark_grouped_sections(facts: ObjectFacts) -> None:
    for sec in facts.obj.sections:
        if isinstance(sec, GroupSection):
            facts.grouped.update(sec.members)


def map_file_blocks(facts: ObjectFacts) -> None:
    """Remember which FILE symbol each local follows (objects may hold several files)."""
    current: Symbol | None = None
    for sym in facts.obj.symbols:
        if sym.type == STT.FILE:
            current = sym
        elif sym.bind == STB.LOCAL and current is not None:
            facts.file_of[sym] = current


class _SymbolsAt:
    """The symbols of one section, indexed to find which one covers an offset without a scan.

    ``owner(offset, at_end)`` gives what a scan of the symbol table in order
    would: the first symbol (in table order) whose ``[value, value + size)``
    holds ``offset`` -- or, for an end marker, that ends where the section
    ends.  Symbols rarely overlap, so only those starting within the
    section's largest symbol size before ``offset`` are looked at.
    """

    __slots__ = ("starts", "entries", "widest", "first_at_end")

    def __init__(self, section: Section, symbols: list[tuple[int, Symbol]]) -> None:
        ordered = sorted(symbols, key=lambda e: (e[1].value, e[0]))
        self.starts = [sym.value for _, sym in ordered]
        self.entries = ordered
        self.widest = max((sym.size for _, sym in ordered), default=0)
        self.first_at_end = min(((i, sym) for i, sym in symbols if sym.value + sym.size == section.size),
                                key=lambda e: e[0], default=None)

    def owner(self, offset: int, at_end: bool) -> Symbol | None:
        best = self.first_at_end if at_end else None
        hi = bisect_right(self.starts, offset)
        lo = bisect_left(self.starts, offset - self.widest + 1) if self.widest else hi
        for i in range(lo, hi):
            order, sym = self.entries[i]
            if offset < sym.value + sym.size and (best is None or order < best[0]):
                best = (order, sym)
        return best[1] if best is not None else None


class _SectionIndexes:
    """A ``_SymbolsAt`` per section, built when first asked for.

    The symbols are grouped by section in one pass, but only the sections that
    relocations reach through a section symbol (a few of thousands: ``.rodata``,
    ``.data``, shared text sections) are sorted and indexed.
    """

    __slots__ = ("grouped", "built")

    def __init__(self, obj: ElfObject) -> None:
        self.grouped: dict[Section, list[tuple[int, Symbol]]] = defaultdict(list)
        for i, sym in enumerate(obj.symbols):
            if sym.section is not None and sym.type != STT.SECTION:
                self.grouped[sym.section].append((i, sym))
        self.built: dict[Section, _SymbolsAt] = {}

    def get(self, sec: Section) -> _SymbolsAt | None:
        index = self.built.get(sec)
        if index is None:
            syms = self.grouped.get(sec)
            if syms is None:
                return None
            index = self.built[sec] = _SymbolsAt(sec, syms)
        return index


def pcrel_adjust(arch: ArchInfo, relsec: RelocationSection, rel: Relocation) -> int | None:
    """Bytes between a relocation's addend and the offset it refers to (the arch knows: x86
    measures a displacement from the end of its instruction); None when it cannot be mapped."""
    return arch.hooks.target_bias(relsec.target, rel)


def replace_section_symbols(facts: ObjectFacts, arch: ArchInfo) -> None:
    """Point relocations at the function/object they mean instead of at a section symbol.

    GCC often writes ``.text.foo+0`` or ``.data+0x40`` where it means ``foo``
    or the variable at 0x40; kpatch-build needs symbol names to compare
    references and to resolve them in the running kernel.
    """
    by_sec: _SectionIndexes | None = None
    data_end = arch.types(Role.DATA_END)
    for relsec in facts.obj.relocation_sections():
        if relsec.relocations is None or rules.is_debug_section(relsec) or not isinstance(relsec.info, Section):
            continue
        for rel in relsec.relocations:
            sym = rel.symbol
            if sym is None or sym.type != STT.SECTION or sym.section is None:
                continue
            owner = facts.bundled.get(sym.section)
            if owner is not None:
                rel.symbol = owner
                rel.addend -= owner.value
                continue
            add_off = pcrel_adjust(arch, relsec, rel)
            if add_off is None:
                continue
            if by_sec is None:
                by_sec = _SectionIndexes(facts.obj)
            target_sec = sym.section
            # A data reference just past the section's end (an array's end marker) means its last object.
            end_marker = (not rules.is_text(target_sec) and rel.addend == target_sec.size
                          and rel.type in data_end)
            index = by_sec.get(target_sec)
            cand = index.owner(rel.addend + add_off, end_marker) if index is not None else None
            if cand is not None:
                rel.symbol = cand
                rel.addend -= cand.value


def find_string_targets(facts: ObjectFacts, arch: ArchInfo) -> None:
    """Record the literal each string-section relocation points at, to compare by content."""
    strings = {sec for sec in facts.obj.sections if rules.is_string_section(sec)}  # once, not per relocation
    for relsec in facts.obj.relocation_sections():
        if relsec.relocations is None or not isinstance(relsec.info, Section):
            continue
        target = relsec.target
        for rel in relsec.relocations:
            sym = rel.symbol
            if sym is None or sym.section not in strings:
                continue
            offset = sym.value + rel.addend + arch.hooks.string_bias(target, rel)
            try:
                facts.string[rel] = sym.section.string_at(offset)
            except IndexError:
                continue


def find_ftrace_hooks(facts: ObjectFacts, arch: ArchInfo) -> None:
    """Functions with an ftrace call site can be patched: recorded in ``__mcount_loc``, in
    ``__patchable_function_entries`` (where the arch uses them), or recognised by the arch in their code.

    The livepatch core redirects a function through its ftrace hook; a
    function without one (notrace, ``.cold`` parts) cannot be replaced.
    """
    recorded: set[Symbol] = set()
    entries: dict[Section, list[int]] = {}
    for sec in facts.obj.sections:
        if sec.rela is None or not sec.rela.relocations:
            continue
        if sec.name == "__mcount_loc":
            recorded.update(rel.symbol for rel in sec.rela.relocations if rel.symbol is not None)
        elif sec.name == PATCHABLE_ENTRIES and arch.uses_patchable_entries:
            for rel in sec.rela.relocations:
                sym = rel.symbol
                if sym is not None and sym.section is not None:
                    entries.setdefault(sym.section, []).append(sym.value + rel.addend)
    hooked = arch.hooks.ftrace_hooked
    for sym in facts.obj.symbols:
        if sym.type != STT.FUNC or sym.section is None:
            continue
        site = _patchable_entry(sym, entries.get(sym.section))
        if site is not None:
            facts.entry_site[sym] = site
        if sym in recorded or site is not None or hooked(sym):
            facts.has_hook.add(sym)


# -fpatchable-function-entry=N,M puts M of the N NOPs before the function (arm64 CALL_OPS: 2 of 4).
MAX_ENTRY_PADDING = 8


def _patchable_entry(sym: Symbol, sites: list[int] | None) -> int | None:
    """The ``__patchable_function_entries`` record (a section offset) that points into the function
    or into the NOPs just before it, if there is one."""
    for site in sites or ():
        if sym.value - MAX_ENTRY_PADDING <= site < sym.value + max(sym.size, 1):
            return site
    return None
