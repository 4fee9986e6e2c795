"""Stage 1: facts about each object on its own, before the two are correlated.

- bundle_symbols: which function/object owns each -ffunction-sections section
- detect_children: ``foo.cold`` / ``foo.part.N`` belong to ``foo``
- find_ftrace_hooks: which functions start with a ``__fentry__`` call
- replace_section_symbols: relocations against ``.text.foo`` (the section
  symbol) rewritten to ``foo`` (the symbol really meant), so that both
  objects' relocations can be compared and resolved by name
- find_string_targets: the literal a relocation into a string section points at
"""

from __future__ import annotations

from collections import defaultdict

from pykpatch.diff import rules
from pykpatch.diff.state import ObjectFacts
from pykpatch.arch import ArchInfo
from pykpatch.elf.constants import STB, STT
from pykpatch.elf.model import ElfObject, GroupSection, Relocation, RelocationSection, Section, Symbol
from pykpatch.errors import PykpatchError


class DiffInputError(PykpatchError):
    """An input object is not what the diff expects (not built with -ffunction-sections...)."""


def analyze(obj: ElfObject, arch: ArchInfo, name: str) -> ObjectFacts:
    facts = ObjectFacts(obj)
    bundle_symbols(facts, name)
    detect_children(facts, name)
    mark_grouped_sections(facts)
    map_file_blocks(facts)
    replace_section_symbols(facts, arch)
    find_string_targets(facts, arch)
    find_ftrace_hooks(facts, arch)
    return facts


def bundle_symbols(facts: ObjectFacts, name: str) -> None:
    # With call padding (CONFIG_CALL_PADDING) a function starts after its
    # __pfx_ symbol's NOPs, 16 bytes into its own section.
    prefix_size: dict[tuple[Section, str], int] = {}
    for sym in facts.obj.symbols:
        target = rules.prefix_symbol_target(sym.name)
        if target is not None and sym.section is not None and sym.value == 0:
            prefix_size[(sym.section, target)] = sym.size
            facts.prefix_of.setdefault(sym.section, []).append(sym)
    for sym in facts.obj.symbols:
        sec = sym.section
        if sec is None or sym.type not in (STT.FUNC, STT.OBJECT):
            continue
        if rules.bundle_prefix_matches(sym, sec):
            if sym.value != prefix_size.get((sec, sym.name), 0):
                raise DiffInputError(
                    f"{name}: symbol {sym.name} is at offset {sym.value:#x} of its own section {sec.name}, expected 0"
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


def _symbols_by_section(obj: ElfObject) -> dict[Section, list[Symbol]]:
    by_sec: dict[Section, list[Symbol]] = defaultdict(list)
    for sym in obj.symbols:
        if sym.section is not None and sym.type != STT.SECTION:
            by_sec[sym.section].append(sym)
    return by_sec


def pcrel_adjust(arch: ArchInfo, relsec: RelocationSection, rel: Relocation) -> int | None:
    """Bytes between a PC-relative relocation's field and the end of its instruction.

    x86 measures PC-relative displacements from the end of the instruction,
    so ``lea sym+off(%rip)`` has addend ``off - 4`` when nothing follows the
    displacement, more when an immediate does.  Returns None when the
    relocation is not one we can map to a symbol offset.
    """
    target = relsec.target
    name = arch.reloc_name(rel.type)
    # Outside code, and for absolute types, the addend is the offset itself.
    if not rules.is_text(target) or name in ("R_X86_64_64", "R_X86_64_32S", "R_X86_64_32"):
        return 0
    if name not in ("R_X86_64_PC32", "R_X86_64_PLT32"):
        return None
    try:
        from pykpatch.arch.x86_64.insn import insn_containing
    except ImportError:  # pragma: no cover - decoder not available
        return 4
    try:
        insn = insn_containing(target.data, rel.offset)
    except PykpatchError:
        return 4
    return insn.offset + insn.length - rel.offset


def replace_section_symbols(facts: ObjectFacts, arch: ArchInfo) -> None:
    """Point relocations at the function/object they mean instead of at a section symbol.

    GCC often writes ``.text.foo+0`` or ``.data+0x40`` where it means ``foo``
    or the variable at 0x40; kpatch-build needs symbol names to compare
    references and to resolve them in the running kernel.
    """
    by_sec: dict[Section, list[Symbol]] | None = None
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
                by_sec = _symbols_by_section(facts.obj)
            target_sec = sym.section
            # A data reference just past the section's end (an array's end marker) means its last object.
            end_marker = (not rules.is_text(target_sec) and rel.addend == target_sec.size
                          and arch.reloc_name(rel.type) == "R_X86_64_32S")
            for cand in by_sec.get(target_sec, ()):
                start, end = cand.value, cand.value + cand.size
                at_end = end_marker and end == target_sec.size
                if not at_end and not (start <= rel.addend + add_off < end):
                    continue
                rel.symbol = cand
                rel.addend -= start
                break


def find_string_targets(facts: ObjectFacts, arch: ArchInfo) -> None:
    """Record the literal each string-section relocation points at, to compare by content."""
    strings = {sec for sec in facts.obj.sections if rules.is_string_section(sec)}  # once, not per relocation
    for relsec in facts.obj.relocation_sections():
        if relsec.relocations is None or not isinstance(relsec.info, Section):
            continue
        text = rules.is_text(relsec.target)
        for rel in relsec.relocations:
            sym = rel.symbol
            if sym is None or sym.section not in strings:
                continue
            offset = sym.value + rel.addend
            if text and arch.is_pcrel(rel.type):
                offset += 4
            try:
                facts.string[rel] = sym.section.string_at(offset)
            except IndexError:
                continue


def find_ftrace_hooks(facts: ObjectFacts, arch: ArchInfo) -> None:
    """Functions that call ``__fentry__`` first (or are listed in ``__mcount_loc``) can be patched.

    The livepatch core redirects a function through its ftrace hook; a
    function without one (notrace, ``.cold`` parts) cannot be replaced.
    """
    hook = arch.ftrace_hook
    mcount_targets: set[Symbol] = set()
    for sec in facts.obj.sections:
        if sec.name == "__mcount_loc" and sec.rela is not None and sec.rela.relocations:
            for rel in sec.rela.relocations:
                if rel.symbol is not None:
                    mcount_targets.add(rel.symbol)
    for sym in facts.obj.symbols:
        if sym.type != STT.FUNC or sym.section is None:
            continue
        if sym in mcount_targets:
            facts.has_hook.add(sym)
            continue
        relsec = sym.section.rela
        if relsec is None or not relsec.relocations:
            continue
        first = min(relsec.relocations, key=lambda r: r.offset)
        if first.symbol is not None and first.symbol.name in (hook, "mcount", "_mcount", "__mcount"):
            facts.has_hook.add(sym)
