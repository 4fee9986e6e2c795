"""Stage 2: pair each element of the original object with its twin in the patched one.

Sections and symbols are paired by name, ignoring compiler numbering
(``rules.canonical_name``).  A paired patched element takes its twin's exact
name, so later stages and the running kernel see the original names.
Static local variables are then re-paired by *use*: ``counter.12`` in the
original is the ``counter.N`` that the same function references in the
patched object, whatever N became.
"""

from __future__ import annotations

from collections import defaultdict

from pykpatch.diff import rules
from pykpatch.diff.state import DiffState
from pykpatch.elf.constants import STT
from pykpatch.elf.describe import describe_shndx
from pykpatch.elf.model import ElfObject, GroupSection, Relocation, RelocationSection, Section, Symbol


def section_key(sec: Section) -> str:
    return rules.canonical_name(sec.name)


def symbol_key(sym: Symbol) -> str:
    if sym.type == STT.SECTION and sym.section is not None:
        return rules.canonical_name(sym.section.name)
    return rules.canonical_name(sym.name)


def correlate_section(st: DiffState, a: Section, b: Section) -> None:
    """Pair two sections and what comes with them: relocation section, section symbol, owner symbol."""
    st.correlate(a, b)
    if isinstance(a, RelocationSection):
        if isinstance(a.info, Section) and isinstance(b.info, Section):
            st.correlate(a.info, b.info)
            a, b = a.info, b.info
    elif a.rela is not None and b.rela is not None:
        st.correlate(a.rela, b.rela)
    if a.symbol is not None and b.symbol is not None:
        st.correlate(a.symbol, b.symbol)
    owner_a = st.orig.bundled.get(a)
    owner_b = st.patched.bundled.get(b)
    if owner_a is not None and owner_b is not None:
        st.correlate(owner_a, owner_b)


def _groups_equal(a: GroupSection, b: GroupSection) -> bool:
    """Changed section groups are not supported: only identical groups pair up."""
    if a.group_flags != b.group_flags or len(a.members) != len(b.members):
        return False
    return all(section_key(x) == section_key(y) for x, y in zip(a.members, b.members, strict=True))


def never_correlated_section(st: DiffState, a: Section) -> bool:
    """Reasons an original section pairs with no section at all (they do not depend on the candidate,
    so they are asked once per section rather than once per same-named candidate)."""
    owner_sec = a.info if isinstance(a, RelocationSection) and isinstance(a.info, Section) else a
    secsym = owner_sec.symbol if isinstance(owner_sec, Section) else None
    # Special statics' sections (__warned.N's .data.unlikely...) are per call site.
    if rules.is_special_static(secsym, st.orig.bundled):
        return True
    return rules.is_local_label_section(owner_sec if isinstance(owner_sec, Section) else a)


def _group_mismatch(a: Section, b: Section) -> bool:
    """A group pairs only with an identical group."""
    if isinstance(a, GroupSection):
        return not isinstance(b, GroupSection) or not _groups_equal(a, b)
    return False


def correlate_sections(st: DiffState) -> None:
    candidates: dict[str, list[Section]] = defaultdict(list)
    for sec in st.patched.obj.sections:
        candidates[section_key(sec)].append(sec)
    for a in st.orig.obj.sections:
        if a in st.section_twin or never_correlated_section(st, a):
            continue
        for b in candidates.get(section_key(a), ()):
            if b in st.section_twin:
                continue
            if _group_mismatch(a, b):
                continue
            correlate_section(st, a, b)
            break


def _symbol_mismatch(st: DiffState, a: Symbol, b: Symbol) -> bool:
    """Reasons a same-named candidate is not ``a``'s twin (``a`` passed ``never_correlated_symbol``)."""
    if a.type != b.type:
        return True
    # Section symbols pair only through their sections (correlate_section).
    if a.type == STT.SECTION:
        return st.section_twin.get(a.section) is not b.section if a.section is not None else True
    # A group's signature symbol follows its (identical) group.
    return isinstance(a.section, GroupSection) and st.section_twin.get(a.section) is not b.section


def never_correlated_symbol(st: DiffState, a: Symbol) -> bool:
    """Reasons a (non-section) original symbol pairs with no symbol at all.  They do not depend on
    the candidate: asked once per symbol, not once per same-named candidate (an arm64 object has
    thousands of ``$x``, which made the candidate loop quadratic)."""
    # __warned.N, __key.N, _rs.N: one per call site, numbers mean nothing.
    if rules.is_special_static(a, st.orig.bundled):
        return True
    # .LC0 string labels: the number drifts; strings are compared by content.
    if rules.is_local_label(a):
        return True
    # The object that owns an assembler-label section (s390's OBJECT .Lubsan_data167 in
    # .data.rel.local..Lubsan_data167) follows its section, which is never paired.
    if a.section is not None and rules.is_local_label_section(a.section) and a.section.name.endswith("." + a.name):
        return True
    # arm's $x / $d mark code and data inside a section; every section has its own.
    return st.arch.hooks.is_mapping_symbol(a)


def correlate_symbols(st: DiffState) -> None:
    candidates: dict[str, list[Symbol]] = defaultdict(list)
    for sym in st.patched.obj.symbols:
        candidates[symbol_key(sym)].append(sym)
    for a in st.orig.obj.symbols:
        if a in st.symbol_twin or (a.type != STT.SECTION and never_correlated_symbol(st, a)):
            continue
        for b in candidates.get(symbol_key(a), ()):
            if b in st.symbol_twin:
                continue
            if _symbol_mismatch(st, a, b):
                continue
            st.correlate(a, b)
            # FILE-block membership decides which vmlinux locals a symbol is.
            file_sym = st.orig.file_of.get(a)
            if file_sym is not None and b not in st.patched.file_of:
                st.patched.file_of[b] = file_sym
            break


# -- static locals --------------------------------------------------------------

def _function_name(st: DiffState, relsec: RelocationSection) -> str:
    base = relsec.info if isinstance(relsec.info, Section) else relsec
    owner = st.orig.bundled.get(base) or st.patched.bundled.get(base)
    return owner.name if owner is not None else base.name


def _correlated_parent(st: DiffState, sym: Symbol) -> Symbol | None:
    """Nearest ancestor (``foo`` of an original ``foo.part.1``) that has a twin."""
    parent_map = st.orig.parent
    while True:
        parent = parent_map.get(sym)
        if parent is None:
            return None
        if parent in st.symbol_twin:
            return parent
        sym = parent


def _find_uncorrelated_reference(st: DiffState, relsec: RelocationSection, sym: Symbol) -> Symbol | None:
    for rel in relsec.relocations or ():
        cand = rel.symbol
        if cand is None or cand in st.symbol_twin:
            continue
        if cand.type != sym.type or (sym.type == STT.OBJECT and cand.size != sym.size):
            continue
        if not rules.mangled_equal(cand.name, sym.name):
            continue
        return cand
    return None


def _find_in_children(st: DiffState, parent: Symbol, sym: Symbol) -> Symbol | None:
    """The reference may have moved into ``parent.cold`` / ``parent.part.N`` (issue #1054)."""
    for child in st.patched.children.get(parent, ()):
        csec = child.section
        if csec is None or csec.rela is None or csec.rela is (parent.section.rela if parent.section else None):
            continue
        found = _find_uncorrelated_reference(st, csec.rela, sym) or _find_in_children(st, child, sym)
        if found is not None:
            return found
    return None


def _static_twin(st: DiffState, relsec: RelocationSection, sym: Symbol) -> Symbol | None:
    if relsec not in st.section_twin:
        base = relsec.info if isinstance(relsec.info, Section) else None
        owner = st.orig.bundled.get(base) if base is not None else None
        if owner is not None:
            parent = _correlated_parent(st, owner)
            if parent is not None and parent.section is not None and parent.section.rela is not None:
                relsec = parent.section.rela
    twin = _relocation_twin(st, relsec)
    if twin is None:
        return None
    found = _find_uncorrelated_reference(st, twin, sym)
    if found is not None:
        return found
    base = twin.info if isinstance(twin.info, Section) else None
    owner = st.patched.bundled.get(base) if base is not None else None
    if owner is not None:
        return _find_in_children(st, owner, sym)
    return None


def _relocation_twin(st: DiffState, relsec: RelocationSection) -> RelocationSection | None:
    """The twin of a relocation section, if it is one: a patched ``.rela.text.foo`` whose sh_type
    changed pairs by name (compare then reports the differing headers) but holds no references."""
    twin = st.section_twin.get(relsec)
    return twin if isinstance(twin, RelocationSection) else None


def _has_reference_to(st: DiffState, relsec: RelocationSection, target: Symbol) -> bool:
    if any(rel.symbol is target for rel in relsec.relocations or ()):
        return True
    base = relsec.info if isinstance(relsec.info, Section) else None
    owner = st.patched.bundled.get(base) if base is not None else None
    if owner is None:
        return False
    for child in st.patched.children.get(owner, ()):
        csec = child.section
        if csec is None or csec.rela is None or csec.rela is relsec:
            continue
        if _has_reference_to(st, csec.rela, target):
            return True
    return False


def _uncorrelate_static(st: DiffState, sym: Symbol) -> None:
    st.uncorrelate(sym)
    sec = sym.section
    if sec is not None and st.orig.bundled.get(sec) is sym and sec in st.section_twin:
        st.uncorrelate(sec)
        if sec.symbol is not None:
            st.uncorrelate(sec.symbol)
        if sec.rela is not None:
            st.uncorrelate(sec.rela)


def _code_relocations(obj: ElfObject) -> list[tuple[RelocationSection, Section, list[Relocation]]]:
    """(relocation section, the section it patches, its relocations) for each non-debug one that has any."""
    found = []
    for relsec in obj.relocation_sections():
        if relsec.relocations and not rules.is_debug_section(relsec) and isinstance(relsec.info, Section):
            found.append((relsec, relsec.info, relsec.relocations))
    return found


def _owned_section(bundled: dict[Section, Symbol], sym: Symbol) -> Section | None:
    """The section ``sym`` owns whole (``.data.counter.12`` of a -fdata-sections static), or None."""
    sec = sym.section
    return sec if sec is not None and bundled.get(sec) is sym else None


def _sections_paired(st: DiffState, a: Section | None, b: Section | None) -> bool:
    """Are the sections of two statics twins (two statics without a section count as paired)?"""
    return (st.section_twin.get(a) if a is not None else None) is b


def correlate_static_locals(st: DiffState) -> None:
    """Pair ``var.N`` statics through the functions that use them (numbers drift between builds)."""
    bundled_o = st.orig.bundled
    for local in st.orig.obj.symbols:
        if rules.is_normal_static_local(local, bundled_o):
            _uncorrelate_static(st, local)

    orig_relsecs = _code_relocations(st.orig.obj)
    for relsec, base, relocations in orig_relsecs:
        for rel in relocations:
            sym = rel.symbol
            if sym is None or sym in st.symbol_twin or not rules.is_normal_static_local(sym, bundled_o):
                continue
            owned = _owned_section(bundled_o, sym)
            if owned is not None and owned is base:
                continue  # a static that references itself: use another reference
            twin = _static_twin(st, relsec, sym)
            if twin is None:
                st.error(f"reference to static local variable {sym.name} in {_function_name(st, relsec)} was removed")
                continue
            twin_owned = _owned_section(st.patched.bundled, twin)
            if (owned is None) != (twin_owned is None):
                st.error(f"static local {sym.name}: bundled in one object but not in the other")
                continue
            if owned is None and not _sections_paired(st, sym.section, twin.section):
                st.error(f"static local {sym.name}: sections {describe_shndx(sym)} and {describe_shndx(twin)} "
                         "are not correlated")
                continue
            st.correlate(sym, twin)
            if owned is not None and twin_owned is not None:
                correlate_section(st, owned, twin_owned)

    # Every reference in the original must still exist in the patched object.
    for relsec, base, relocations in orig_relsecs:
        for rel in relocations:
            sym = rel.symbol
            if sym is None or not rules.is_normal_static_local(sym, bundled_o):
                continue
            target = relsec
            if relsec not in st.section_twin:
                owner = bundled_o.get(base)
                parent = _correlated_parent(st, owner) if owner is not None else None
                if parent is not None and parent.section is not None and parent.section.rela is not None:
                    target = parent.section.rela
            twin_sym = st.symbol_twin.get(sym)
            twin_sec = _relocation_twin(st, target)
            if twin_sym is None or twin_sec is None:
                msg = f"reference to static local variable {sym.name} in {_function_name(st, target)} was removed"
            elif not _has_reference_to(st, twin_sec, twin_sym):
                msg = (f"static local {sym.name} has been correlated with {twin_sym.name}, "
                       f"but patched {_function_name(st, twin_sec)} is missing a reference to it")
            else:
                continue
            if msg not in st.errors:
                st.error(msg)


def correlate(st: DiffState) -> None:
    correlate_sections(st)
    correlate_symbols(st)
    correlate_static_locals(st)
