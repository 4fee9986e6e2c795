"""Stage 3: decide what changed.

Sections are compared byte for byte and relocation by relocation (by
target name, addend and, for string literals, content).  Symbols then take
the status of the section they own.  Changes that only move ``__LINE__``
constants passed to ``__might_sleep``/WARN helpers are not changes.
"""

from __future__ import annotations

from pykpatch.arch import Role
from pykpatch.diff import rules
from pykpatch.diff.analyze import table_entry
from pykpatch.diff.state import DiffState, Status
from pykpatch.elf.constants import SHN, SHT, STT
from pykpatch.elf.model import Relocation, RelocationSection, Section, Symbol

# Sections rebuilt from scratch in the output: their differences do not matter.
REBUILT_SECTIONS = frozenset({"__mcount_loc", ".rela__mcount_loc",
                              "__patchable_function_entries", ".rela__patchable_function_entries"})


def relocations_equal(st: DiffState, r1: Relocation, r2: Relocation, shift: int = 0) -> bool:
    """Same relocation, ``r2`` being ``shift`` bytes further into its section than ``r1``."""
    if r1.type != r2.type or r1.offset + shift != r2.offset:
        return False
    if r1.type in st.indirect_types:
        return _indirect_equal(st, r1, r2)
    return _targets_equal(st, r1, r2)


def _indirect_equal(st: DiffState, r1: Relocation, r2: Relocation) -> bool:
    """References through a table entry (ppc64 ``.toc``): the entries' offsets drift between
    builds, so compare what the entries refer to, or their constants when they hold one."""
    t1, t2 = table_entry(st.orig, r1), table_entry(st.patched, r2)
    if t1 is None or t2 is None:
        if t1 is not None or t2 is not None:
            return False
        return _table_constant(r1) == _table_constant(r2)
    return _targets_equal(st, t1, t2)


def _table_constant(rel: Relocation) -> bytes:
    """The 8 bytes of a table entry that has no relocation (a constant the code loads)."""
    sym = rel.symbol
    if sym is None or sym.section is None:
        return b""
    start = sym.value + rel.addend
    return bytes(sym.section.data[start:start + 8])


def _targets_equal(st: DiffState, r1: Relocation, r2: Relocation) -> bool:
    """Same target: name (compiler numbering aside), addend, or string literal content."""
    s1, s2 = r1.symbol, r2.symbol
    if s1 is None or s2 is None:
        return s1 is s2 and r1.addend == r2.addend
    # .altinstr_aux is inert boot-time code; its offsets may drift (kpatch #1014).
    if s1.name == ".altinstr_aux" or (s1.section is not None and s1.section.name == ".altinstr_aux"):
        if s2.name == ".altinstr_aux" or (s2.section is not None and s2.section.name == ".altinstr_aux"):
            return True
    str1 = st.orig.string.get(r1)
    if str1 is not None:
        return st.patched.string.get(r2) == str1
    if r1.addend != r2.addend:
        return False
    n1 = s1.section.name if s1.type == STT.SECTION and s1.section is not None else s1.name
    n2 = s2.section.name if s2.type == STT.SECTION and s2.section is not None else s2.name
    return rules.mangled_equal(n1, n2)


def _relocations_within(sec: Section, start: int, size: int) -> list[Relocation]:
    rela = sec.rela
    return sorted((r for r in (rela.relocations or ()) if start <= r.offset < start + size),
                  key=lambda r: r.offset) if rela is not None else []


def function_changed(st: DiffState, a: Symbol, b: Symbol) -> bool:
    """Does function ``b`` differ from its twin ``a``, judged on its own bytes and relocations?

    For sections holding several functions (``.init.text``: ``__init`` has no
    -ffunction-sections section of its own), where the section's status
    cannot say which of them changed.  Offsets count from each function's start.
    """
    sa, sb = a.section, b.section
    if sa is None or sb is None or a.size != b.size:
        return True
    if sa.data[a.value:a.value + a.size] != sb.data[b.value:b.value + b.size]:
        return True
    ra, rb = _relocations_within(sa, a.value, a.size), _relocations_within(sb, b.value, b.size)
    shift = b.value - a.value
    return len(ra) != len(rb) or not all(relocations_equal(st, r1, r2, shift) for r1, r2 in zip(ra, rb, strict=True))


def compare_relocation_sections(st: DiffState, a: RelocationSection, b: RelocationSection) -> Status:
    ra, rb = a.relocations or [], b.relocations or []
    if len(ra) != len(rb):
        return Status.CHANGED
    for r1, r2 in zip(ra, rb, strict=False):
        if not relocations_equal(st, r1, r2):
            return Status.CHANGED
    return Status.SAME


def compare_section(st: DiffState, a: Section, b: Section) -> Status:
    if a.type != b.type or a.flags != b.flags or a.entsize != b.entsize or (
        a.align != b.align and not rules.is_text(a)
    ):
        st.error(f"section {b.name}: header details (type, flags, entry size or alignment) differ")
        return Status.CHANGED
    if a.name in REBUILT_SECTIONS or _is_table_relocations(st, a):
        return Status.SAME
    if isinstance(a, RelocationSection) and isinstance(b, RelocationSection):
        return compare_relocation_sections(st, a, b)
    if a.size != b.size:
        return Status.CHANGED
    if a.type == SHT.NOBITS or a.data == b.data:
        return Status.SAME
    return Status.CHANGED


def _is_table_relocations(st: DiffState, sec: Section) -> bool:
    """``.rela.toc``: its entries are compared through the references that load them, and the
    table comes along whole (kpatch includes .toc as a standard element)."""
    return isinstance(sec, RelocationSection) and sec.info is st.orig.table and st.orig.table is not None


def _line_only_relocs_follow(st: DiffState, relsec: RelocationSection, after: int) -> bool:
    """After a changed ``__LINE__`` load: only strings / __warned, then a line-taking call."""
    callees = st.arch.line_macro_callees
    indirect = st.arch.types(Role.INDIRECT)
    for rel in relsec.relocations or ():
        if rel.offset < after:
            continue
        if rel.type in indirect:
            target = table_entry(st.patched, rel)
            if target is None:
                continue  # a constant in the table
            rel = target
        if rel in st.patched.string:
            continue
        sym = rel.symbol
        name = sym.name if sym is not None else ""
        if name.startswith(("__warned.", "__already_done.", "__func__.")):
            continue
        if sym is not None and sym.type == STT.SECTION:
            continue
        return rules.is_line_macro_callee(name, callees)
    return False


def line_macro_change_only(st: DiffState, sec: Section) -> bool:
    """True when a function differs only in ``__LINE__`` immediates (WARN/might_sleep sites).

    Example (x86 might_sleep):  ``be f7 01 00 00   mov $0x1f7,%esi`` then a call to
    ``__might_sleep``; adding a line above changes 0x1f7 and nothing else.
    The arch finds the changed loads; each must be followed by such a call.
    """
    twin = st.section_twin.get(sec)
    if (st.status.get(sec) != Status.CHANGED or isinstance(sec, RelocationSection) or not rules.is_text(sec)
            or twin is None or twin.size != sec.size or sec.rela is None
            or st.status.get(sec.rela) != Status.SAME):
        return False
    sites = st.arch.hooks.line_change_sites(twin.data, sec.data)
    if not sites:
        return False
    relsec = sec.rela
    return all(_line_only_relocs_follow(st, relsec, end) for end in sites)


def _needs_parent_hook(st: DiffState, sym: Symbol) -> bool:
    """A changed child without its own ftrace hook (``.cold``) can only be patched via its parent."""
    for child in st.patched.children.get(sym, ()):
        if child in st.patched.has_hook:
            continue
        changed = child.section is not None and st.status.get(child.section) == Status.CHANGED
        if changed or _needs_parent_hook(st, child):
            return True
    return False


def compare_sections(st: DiffState) -> None:
    sections = st.patched.obj.sections
    for sec in sections:
        twin = st.section_twin.get(sec)
        st.status[sec] = compare_section(st, twin, sec) if twin is not None else Status.NEW
    for sec in sections:
        if line_macro_change_only(st, sec):
            st.status[sec] = Status.SAME
            st.notes.append(f"{sec.name}: only __LINE__ constants changed, not patched")
    bundled = st.patched.bundled
    for sec in sections:
        if isinstance(sec, RelocationSection):
            base = sec.info if isinstance(sec.info, Section) else None
            owner = bundled.get(base) if base is not None else None
        else:
            owner = bundled.get(sec)
        if owner is None:
            continue
        if st.status.get(owner) != Status.CHANGED:
            st.status[owner] = st.status[sec]
        if not isinstance(sec, RelocationSection) and st.status[owner] == Status.SAME and _needs_parent_hook(st, owner):
            st.status[owner] = Status.CHANGED


def _subsection(sec: Section) -> str:
    if sec.name.startswith(".text.unlikely."):
        return "unlikely"
    if sec.name.startswith(".text.hot."):
        return "hot"
    return "normal"


def compare_symbol(st: DiffState, a: Symbol, b: Symbol) -> None:
    if a.bind != b.bind or a.type != b.type or (a.section is None) != (b.section is None):
        if a.type == b.type and a.section is not None and b.section is not None:
            # Bind changed (global <-> static): the function itself is compared
            # through its section; linkage is resolved against the original.
            pass
        else:
            st.error(f"symbol {b.name}: type, binding or definition changed")
            return
    if a.section is not None and b.section is not None and st.section_twin.get(a.section) is not b.section:
        moved_from_ignored = b.section in st.section_twin and st.section_twin[b.section] in st.orig.ignored
        if moved_from_ignored or _subsection(a.section) != _subsection(b.section):
            st.status[b] = Status.CHANGED
        else:
            st.error(f"symbol {b.name} moved from section {a.section.name} to {b.section.name}")
    if a.type == STT.OBJECT and a.size != b.size:
        st.error(f"data object {b.name} changed size ({a.size} -> {b.size} bytes): its layout cannot be live patched")
    if a.section is None and a.shndx in (SHN.UNDEF, SHN.ABS):
        st.status[b] = Status.SAME


def compare_symbols(st: DiffState) -> None:
    for sym in st.patched.obj.symbols:
        twin = st.symbol_twin.get(sym)
        if twin is None:
            st.status[sym] = Status.NEW
        else:
            st.status.setdefault(sym, Status.SAME)
            compare_symbol(st, twin, sym)


def compare(st: DiffState) -> None:
    compare_sections(st)
    compare_symbols(st)
