"""Stage 4: patch-author markers, ftrace-hook check, and what goes into the output.

Inclusion starts from changed functions, new globals, callbacks and
force-marked functions, and follows relocations: a changed or new section
brings what it references; an unchanged function or variable is only
*referenced* (resolved in the running kernel), not copied.
"""

from __future__ import annotations

from pykpatch.diff import rules
from pykpatch.diff.compare import function_changed
from pykpatch.diff.state import DiffState, Status
from pykpatch.elf.constants import STB, STT
from pykpatch.elf.model import RelocationSection, Section, Symbol

# Patch-author markers (see pykpatch/data/pykpatch-macros.h):
IGNORE_SECTIONS = ".kpatch.ignore.sections"
IGNORE_FUNCTIONS = ".kpatch.ignore.functions"
FORCE_SECTION = ".kpatch.force"
SYSCALL_HINT = ("a system call's inner functions are inline, hence notrace: define the syscall in the patch "
                "with KPATCH_SYSCALL_DEFINEn from kpatch-syscall.h instead of SYSCALL_DEFINEn")
TEMP_SYMBOL_PREFIXES = ("__kpatch_ignore_func_", "__UNIQUE_ID_kpatch_ignore_section_", "__kpatch_force_func_")


def mark_ignored_sections(st: DiffState) -> None:
    """``.discard*`` sections and KPATCH_IGNORE_SECTION("name") targets are never compared."""
    secmap = st.patched.obj.section_map()
    for sec in st.patched.obj.sections:
        if sec.name.startswith(".discard") or sec.name.startswith(".rela.discard"):
            st.patched.ignored.add(sec)
    marker = secmap.get(IGNORE_SECTIONS)
    if marker is None or marker.rela is None:
        return
    for rel in marker.rela.relocations or ():
        sym = rel.symbol
        strsec = sym.section if sym is not None else None
        if sym is None or strsec is None:
            continue
        st.status[strsec] = Status.CHANGED
        include_section(st, strsec)
        name = st.patched.string.get(rel)
        if name is None:
            try:
                name = strsec.string_at(sym.value + rel.addend)
            except IndexError:
                continue
        target = secmap.get(name)
        if target is None:
            st.error(f"KPATCH_IGNORE_SECTION: there is no section {name}")
            continue
        if isinstance(target, RelocationSection) and isinstance(target.info, Section):
            target = target.info
        st.patched.ignored.add(target)
        twin = st.section_twin.get(target)
        if twin is not None:
            st.orig.ignored.add(twin)


def mark_ignored_same(st: DiffState) -> None:
    """Ignored functions (KPATCH_IGNORE_FUNCTION) and sections count as unchanged."""
    secmap = st.patched.obj.section_map()
    marker = secmap.get(IGNORE_FUNCTIONS)
    if marker is not None and marker.rela is not None:
        for rel in marker.rela.relocations or ():
            sym = rel.symbol
            if sym is None or sym.section is None or sym.type != STT.FUNC:
                st.error(f"KPATCH_IGNORE_FUNCTION: {sym.name if sym else '?'} is not a function of this object")
                continue
            if st.status.get(sym) != Status.CHANGED:
                st.notes.append(f"no change detected in ignored function {sym.name}")
            _mark_function_same(st, sym)
    by_section: dict[Section, list[Symbol]] = {}
    for sym in st.patched.obj.symbols:
        if sym.section is not None:
            by_section.setdefault(sym.section, []).append(sym)
    for sec in st.patched.ignored:
        st.status[sec] = Status.SAME
        if not isinstance(sec, RelocationSection):
            if sec.symbol is not None:
                st.status[sec.symbol] = Status.SAME
            if sec.rela is not None:
                st.status[sec.rela] = Status.SAME
        for sym in by_section.get(sec, ()):
            st.status[sym] = Status.SAME
    for sym in st.patched.obj.symbols:
        if sym.name.startswith(TEMP_SYMBOL_PREFIXES):
            st.status[sym] = Status.SAME


def _mark_function_same(st: DiffState, sym: Symbol) -> None:
    st.status[sym] = Status.SAME
    sec = sym.section
    if sec is not None:
        st.status[sec] = Status.SAME
        if sec.symbol is not None:
            st.status[sec.symbol] = Status.SAME
        if sec.rela is not None:
            st.status[sec.rela] = Status.SAME
    for child in st.patched.children.get(sym, ()):
        _mark_function_same(st, child)


def check_ftrace_hooks(st: DiffState) -> None:
    """Every changed function must be patchable through ftrace in the *original* kernel."""
    for sym in st.patched.obj.symbols:
        if sym.type != STT.FUNC or st.status.get(sym) != Status.CHANGED:
            continue
        parent = st.patched.parent.get(sym)
        if parent is not None and st.status.get(parent) == Status.CHANGED:
            continue
        twin = st.symbol_twin.get(sym)
        if twin is None or twin not in st.orig.has_hook:
            hint = f" ({SYSCALL_HINT})" if rules.is_syscall_body(sym.name) else ""
            st.error(f"function {sym.name} has no ftrace hook ({st.arch.ftrace_hook} call) in the original object: "
                     f"it cannot be patched{hint}")


# -- inclusion ----------------------------------------------------------------

def include_section(st: DiffState, sec: Section) -> None:
    """Include a section, its section symbol, its relocations and (recursively) what they reference."""
    stack: list[Section] = [sec]
    while stack:
        cur = stack.pop()
        if cur in st.include:
            continue
        st.include.add(cur)
        if cur.symbol is not None:
            st.include.add(cur.symbol)
        st.include.update(st.patched.prefix_of.get(cur, ()))
        if cur.rela is None:
            continue
        st.include.add(cur.rela)
        for rel in cur.rela.relocations or ():
            target = _include_symbol_shallow(st, rel.symbol)
            if target is not None:
                stack.append(target)


def _include_symbol_shallow(st: DiffState, sym: Symbol | None) -> Section | None:
    """Mark a symbol included; return its section when that must be included too."""
    if sym is None or sym in st.include:
        return None
    st.include.add(sym)
    # A section symbol can only be resolved inside this object; a changed or
    # new function/object is copied; an unchanged one is resolved in the kernel.
    if sym.section is not None and (sym.type == STT.SECTION or st.status.get(sym, Status.SAME) != Status.SAME):
        return sym.section
    return None


def include_symbol(st: DiffState, sym: Symbol | None) -> None:
    sec = _include_symbol_shallow(st, sym)
    if sec is not None:
        include_section(st, sec)


def include_standard_elements(st: DiffState) -> None:
    """String literal sections and ``.rodata`` (switch tables) come along unconditionally."""
    for sec in st.patched.obj.sections:
        name = sec.name
        if name in (".shstrtab", ".strtab", ".symtab", ".toc", ".rodata") or (
            name.startswith(".rodata.") and ".str1." in name
        ):
            include_section(st, sec)


def include_changed_functions(st: DiffState) -> int:
    count = 0
    for sym in st.patched.obj.symbols:
        if sym.type == STT.FUNC and st.status.get(sym) == Status.CHANGED:
            count += 1
            include_symbol(st, sym)
        elif sym.type == STT.FILE:
            st.include.add(sym)
    return count


def include_callbacks(st: DiffState) -> bool:
    found = False
    for sec in st.patched.obj.sections:
        if not rules.is_callback_section(sec):
            continue
        found = True
        st.include.add(sec)
        if isinstance(sec, RelocationSection):
            for rel in (sec.relocations or [])[:1]:
                st.notes.append(f"found callback: {rel.symbol.name if rel.symbol else '?'}")
                include_symbol(st, rel.symbol)
        elif sec.symbol is not None:
            st.include.add(sec.symbol)
    for sym in st.patched.obj.symbols:
        if sym.type == STT.OBJECT and sym.section is not None and rules.is_callback_section(sym.section):
            st.include.discard(sym)
    return found


def include_forced(st: DiffState) -> None:
    for sec in st.patched.obj.sections:
        if sec.name not in (FORCE_SECTION, ".rela" + FORCE_SECTION):
            continue
        st.include.add(sec)
        if isinstance(sec, RelocationSection):
            for rel in sec.relocations or ():
                st.notes.append(f"function {rel.symbol.name if rel.symbol else '?'} marked with KPATCH_FORCE_UNSAFE")
        elif sec.symbol is not None:
            st.include.add(sec.symbol)
    for sym in st.patched.obj.symbols:
        if sym.name.startswith("__kpatch_force_func_"):
            st.include.discard(sym)


def include_new_globals(st: DiffState) -> int:
    count = 0
    for sym in st.patched.obj.symbols:
        if sym.bind == STB.GLOBAL and sym.section is not None and st.status.get(sym) == Status.NEW:
            include_symbol(st, sym)
            count += 1
    return count


def include_debug_sections(st: DiffState) -> None:
    """Debug info comes along, minus the entries describing code that is not in the patch."""
    for sec in st.patched.obj.sections:
        if rules.is_debug_section(sec):
            st.include.add(sec)
            if not isinstance(sec, RelocationSection) and sec.symbol is not None:
                st.include.add(sec.symbol)
    for sec in st.patched.obj.sections:
        if isinstance(sec, RelocationSection) and rules.is_debug_section(sec) and sec.relocations is not None:
            sec.relocations = [r for r in sec.relocations
                               if r.symbol is not None and r.symbol.section is not None
                               and r.symbol.section in st.include]


def check_arch_code(st: DiffState) -> None:
    """The arch's refusals for code going into the patch (ppc64le: sibling calls, calls without a TOC slot)."""
    functions = [(sym, st.status.get(sym) == Status.CHANGED) for sym in st.patched.obj.symbols
                 if sym.type == STT.FUNC and sym.section is not None and sym in st.include
                 and st.status.get(sym) in (Status.CHANGED, Status.NEW)]
    def in_patch(sym: Symbol) -> bool:
        return sym.section is not None and sym.section in st.include

    for problem in st.arch.hooks.code_problems(functions, in_patch):
        st.error(problem)


def refuse_runtime_constants(st: DiffState) -> None:
    """An included function with a boot-time constant site (``rules.is_runtime_const_section``) is refused."""
    for sec in st.patched.obj.sections:
        if not rules.is_runtime_const_section(sec.name) or sec.rela is None:
            continue
        users: dict[str, None] = {}
        for rel in sec.rela.relocations or ():
            sym = rel.symbol
            if sym is None or sym.section is None:
                continue
            owner = sym if sym.type == STT.FUNC else st.patched.bundled.get(sym.section)
            if owner is not None and owner.type == STT.FUNC and owner in st.include:
                users[owner.name] = None
        for name in users:
            st.error(f"function {name} uses the runtime constant {sec.name}: the kernel writes its value into "
                     "vmlinux's code at boot and never into a module's, so a copy in the patch would run with "
                     "the placeholder")


def verify_patchability(st: DiffState) -> None:
    """Refuse what cannot be live patched; every problem becomes one reason line.

    A section and its relocation section are one problem: a changed
    ``__init`` function changes ``.init.text`` and ``.rela.init.text``, and
    is reported once, by function name.
    """
    reported: set[tuple[int, str]] = set()
    for sec in st.patched.obj.sections:
        base = sec.info if isinstance(sec, RelocationSection) and isinstance(sec.info, Section) else sec
        for kind, reason in _patchability_problems(st, sec, base):
            if (id(base), kind) not in reported:
                reported.add((id(base), kind))
                st.error(reason)


def _patchability_problems(st: DiffState, sec: Section, base: Section) -> list[tuple[str, str]]:
    """(kind, reason) of each problem of one section; ``base`` is the section it belongs to."""
    status = st.status.get(sec, Status.SAME)
    included = sec in st.include
    problems = []
    if status == Status.CHANGED and not included:
        problems.append(("unincluded", _unincluded_reason(st, sec, base)))
    if status != Status.SAME and sec in st.patched.grouped:
        problems.append(("grouped", f"changed section {sec.name} is part of a section group"))
    if sec.type == 17 and status == Status.NEW:  # SHT_GROUP
        problems.append(("group", f"new or changed section group {sec.name} is not supported"))
    if included and status != Status.NEW and rules.is_data_section_name(sec.name):
        problems.append(("data", f"data section {sec.name} selected for inclusion: "
                                 "existing data cannot be live patched"))
    return problems


def _unincluded_reason(st: DiffState, sec: Section, base: Section) -> str:
    if rules.is_init_section_name(base.name):
        kind = "__exit" if base.name.startswith(".exit") else "__init"
        when = "when its module is removed" if kind == "__exit" else "at boot"
        names = _changed_functions_in(st, base)
        if names:
            plural = "s" if len(names) > 1 else ""
            return (f"changed {kind} function{plural} {', '.join(names)} (in {base.name}): {kind} code runs only "
                    f"{when}, it cannot be live patched")
        return f"changed section {base.name} not selected for inclusion ({kind} code or data runs only {when}: " \
               "it cannot be live patched)"
    if rules.is_data_section_name(base.name) or base.name.startswith(".rodata"):
        return (f"changed section {sec.name} not selected for inclusion (changed data of an existing variable "
                "cannot be live patched; use a shadow variable)")
    return f"changed section {sec.name} not selected for inclusion"


def _changed_functions_in(st: DiffState, sec: Section) -> list[str]:
    """The new or changed functions of a section that holds several (``.init.text``)."""
    names = []
    for sym in st.patched.obj.symbols:
        if sym.section is sec and sym.type == STT.FUNC:
            twin = st.symbol_twin.get(sym)
            if twin is None or function_changed(st, twin, sym):
                names.append(sym.name)
    return names
