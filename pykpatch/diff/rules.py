"""Small named predicates used by the diff stages.

Each rule exists for a real case; its docstring says which.  Keep them
free of state so stages read as a sequence of decisions.
"""

from __future__ import annotations

import re

from pykpatch.elf.constants import SHF, SHT, STB, STT
from pykpatch.elf.model import Section, Symbol

_NUMBERED = re.compile(r"\.\d+")
# SYSCALL_DEFINEn(name) expands (arch/x86/include/asm/syscall_wrapper.h, Linux 4.17+) into
# __x64_sys_name / __ia32_sys_name stubs, __se_sys_name and the body __do_sys_name (compat: _compat_).
_SYSCALL_PART = re.compile(r"__(do|se|x64|ia32|x32)_(compat_)?sys_")
# __UNIQUE_ID_ddebug1130 / __UNIQUE_ID___addressable_foo1639: the counter is
# glued to the name; it shifts whenever an earlier unique ID is added (kpatch PR #1314).
_UNIQUE_ID = re.compile(r"(__UNIQUE_ID_[A-Za-z0-9_]*?)\d+(?=\.|$)")

# Static locals the compiler creates per call site (WARN_ONCE's __warned,
# lockdep's __key, printk_ratelimited's _rs...).  kpatch calls them "special
# statics": never correlated, included with the function that uses them.
SPECIAL_STATIC_NAMES = ("__key", "__warned", "__already_done", "__func__", "__FUNCTION__", "_rs", "CSWTCH", "_entry")

# Functions that take a __LINE__ argument in a register: a patch that only
# moves lines changes their callers' immediates and nothing else.
LINE_MACRO_CALLEES = ("__warn_printk", "__might_sleep", "___might_sleep", "__might_fault", "printk",
                      "_printk", "lockdep_rcu_suspicious", "__might_resched",
                      # btrfs_abort_transaction() & co. pass __LINE__ too (kpatch #1253)
                      "__btrfs_abort_transaction", "__btrfs_handle_fs_error", "__btrfs_panic")



def is_line_macro_callee(name: str, callees: tuple[str, ...] | None = None) -> bool:
    """A function that takes ``__LINE__`` in a register (``callees``: the arch's own list, arm64
    accepts only ``__warn_printk``; default ``LINE_MACRO_CALLEES`` and the old ``warn_slowpath_*``)."""
    if callees is not None:
        return name in callees
    return name.startswith("warn_slowpath_") or name in LINE_MACRO_CALLEES


_NAMES = "|".join(re.escape(n) for n in SPECIAL_STATIC_NAMES)
_SPECIAL_STATIC = re.compile(rf"^(?:{_NAMES})\.|\.(?:{_NAMES})(?:\.|$)")

CALLBACK_SECTIONS = tuple(
    f"{prefix}.kpatch.callbacks.{kind}"
    for prefix in ("", ".rela")
    for kind in ("pre_patch", "post_patch", "pre_unpatch", "post_unpatch")
)


def canonical_name(name: str) -> str:
    """Name with compiler-numbered parts removed (``foo.isra.3`` -> ``foo.isra``).

    GCC numbers clones and static locals (``.isra.N``, ``.constprop.N``,
    ``var.12345``) and the numbers change between builds.  String-literal
    sections (``.rodata.str1.8``) only look numbered and keep their name.
    """
    if "__UNIQUE_ID_" in name:
        name = _UNIQUE_ID.sub(r"\1", name)
    if ".str1." in name or "." not in name:
        return name
    return _NUMBERED.sub("", name)


def mangled_equal(a: str, b: str) -> bool:
    return canonical_name(a) == canonical_name(b)


def is_debug_section(sec: Section) -> bool:
    name = sec.name
    if name.startswith(".rela"):
        name = name[5:]
    return name.startswith(".debug_") or name.startswith(".eh_frame")


def bundle_prefix_matches(sym: Symbol, sec: Section) -> bool:
    """Is ``sec`` the -ffunction-sections / -fdata-sections section of ``sym``?

    ``.text.foo`` holds foo; ``.text.unlikely.foo.cold`` holds foo.cold;
    ``.data.rel.ro.bar``, ``.rodata.bar``, ``.bss.bar`` hold object bar.
    """
    name = sec.name
    if sym.type == STT.FUNC:
        for prefix in (".text.unlikely.", ".text.hot.", ".text."):
            if name.startswith(prefix):
                rest = name[len(prefix):]
                if rest == sym.name:
                    return True
                if prefix == ".text.unlikely." and ".cold" in sym.name and sym.name.startswith(rest):
                    return True
        return False
    if sym.type == STT.OBJECT:
        for prefix in (".data.rel.ro.", ".data.rel.", ".data.", ".rodata.", ".bss.", ".tbss.", ".tdata."):
            if name.startswith(prefix) and name[len(prefix):] == sym.name:
                return True
    return False


def is_dynamic_debug_symbol(sym: Symbol) -> bool:
    """pr_debug() descriptors live in ``__verbose`` / ``__dyndbg`` (issue #990)."""
    sec = sym.section
    if sec is None:
        return False
    if sym.type in (STT.OBJECT, STT.SECTION) and sec.name in ("__verbose", "__dyndbg"):
        return True
    return False


def is_special_static(sym: Symbol | None, bundled: dict[Section, Symbol]) -> bool:
    """Per-call-site statics (``__warned.N``, ``__key.N``, ``_rs.N``...): never correlated."""
    if sym is None:
        return False
    if is_dynamic_debug_symbol(sym):
        return True
    if sym.type == STT.SECTION:
        owner = bundled.get(sym.section) if sym.section is not None else None
        if owner is None:
            return False
        sym = owner
    if sym.type != STT.OBJECT or sym.bind != STB.LOCAL:
        return False
    if sym.section is not None and sym.section.name == ".data.once":
        return True
    # gcc: __warned.12345; clang: func.__warned (one regex: this runs for every symbol pair)
    return _SPECIAL_STATIC.search(sym.name) is not None


def is_normal_static_local(sym: Symbol, bundled: dict[Section, Symbol]) -> bool:
    """A function's ``static`` variable, renamed ``var.N`` by gcc: correlated by use, not by number."""
    if sym.type != STT.OBJECT or sym.bind != STB.LOCAL:
        return False
    if sym.name.startswith(".L") or "." not in sym.name:
        return False
    return not is_special_static(sym, bundled)


def is_string_section(sec: Section | None) -> bool:
    """String literals: ``.rodata.str1.1``, ``.rodata.<func>.str1.8``, clang's ``.rodata.str``."""
    if sec is None:
        return False
    return sec.is_string_merge or ".str1." in sec.name or sec.name.startswith(".rodata.str")


def is_local_label_section(sec: Section) -> bool:
    """Data named after an assembler label: clang's ``.data..L__unnamed_3``, UBSAN's ``.data..Lubsan_data118``.

    The numbers are a per-file counter that any earlier addition shifts, so
    these are never paired: referenced ones come along as new data
    (kpatch clang-unnamed, cmdline-ubsan).
    """
    return "..L" in sec.name


def prefix_symbol_target(name: str) -> str | None:
    """``__pfx_foo`` / ``__cfi_foo`` (call-padding, kCFI) belong to ``foo``, which starts after them."""
    for prefix in ("__pfx_", "__cfi_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return None


def is_text(sec: Section | None) -> bool:
    return sec is not None and bool(sec.flags & SHF.EXECINSTR)


def is_callback_section(sec: Section) -> bool:
    return sec.name in CALLBACK_SECTIONS


def is_group(sec: Section) -> bool:
    return sec.type == SHT.GROUP


def is_local_label(sym: Symbol) -> bool:
    """``.LC0``-style assembler labels point into string tables; their numbers drift freely."""
    return sym.type == STT.NOTYPE and sym.name.startswith(".L")


def child_suffix(name: str) -> int:
    """Index where a child-function suffix (``.cold``, ``.part.N``) starts, or -1."""
    idx = name.find(".cold")
    if idx > 0:
        return idx
    return name.find(".part.")


def is_data_section_name(name: str) -> bool:
    """Existing data may not be patched: ``.data*`` / ``.bss*``.

    ``.data.unlikely`` / ``.data.once`` hold only WARN_ONCE flags.
    """
    if name in (".data.unlikely", ".data.once"):
        return False
    return name.startswith(".data") or name.startswith(".bss")


def is_syscall_body(name: str) -> bool:
    """A function SYSCALL_DEFINEn generated: when ``__do_sys_foo`` is kept out of line it is
    ``static inline``, hence notrace, and has no ftrace hook; kpatch-syscall.h's
    KPATCH_SYSCALL_DEFINEn makes the body a new function instead (README)."""
    return _SYSCALL_PART.match(name) is not None


def is_init_section_name(name: str) -> bool:
    """``__init`` code and data run once at boot; changing them cannot take effect live."""
    base = name[5:] if name.startswith(".rela") else name
    return base.startswith(".init.") or base.startswith(".exit.") or base in (".init.text", ".exit.text")


def is_runtime_const_section(name: str) -> bool:
    """``runtime_ptr_*`` / ``runtime_shift_*`` (Linux 6.12 ``runtime_const_ptr()``, x86): code sites whose
    placeholder constant (0x0123456789abcdef) the kernel overwrites at boot, in vmlinux only.

    A patch module's copy of such code would run with the placeholder: a
    function that uses one (``__access_ok`` through ``USER_PTR_MAX``,
    ``d_hash`` through ``dentry_hashtable``) cannot be live patched.
    """
    return name.startswith(("runtime_ptr_", "runtime_shift_"))
