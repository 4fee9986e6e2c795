"""The architecture seam: everything the generic stages need to know about one machine.

The ELF model and the diff stages are architecture-neutral.  Where they must
understand a machine -- what a relocation type means, how a function's ftrace
hook looks, which special sections exist, how a ``__LINE__`` immediate is
loaded -- they ask the machine's ``ArchInfo``:

- ``relocs``: every relocation type by number (name, bytes patched, PC-relative);
- ``roles``: relocation types by what the generic code uses them for
  (``Role.ABS64`` writes the diff's metadata pointers, ``Role.FUNC_POINTER``
  marks ``&func`` taken in code...), so no stage compares type names;
- ``hooks``: an ``ArchHooks`` object for the questions only code can answer
  (where a PC-relative reference points, where the ftrace call site is...);
- ``special_sections`` and ``struct_probes``: the kernel's special-section
  tables on this machine and the structs whose sizes split them.

Each architecture is one module of this package (``pykpatch.arch.x86_64``...)
exporting ``ARCH``; ``arch_for(machine)`` finds it by ``e_machine``.  Adding an
architecture means adding one module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the hooks see model objects; the model never imports this package's modules
    from pykpatch.elf.model import ElfObject, Relocation, Section, Symbol


@dataclass(frozen=True)
class RelocType:
    """One relocation type: name, bytes patched at the offset, PC-relative or not."""

    name: str
    size: int
    pcrel: bool = False


class Role(Enum):
    """What the generic stages use a relocation type for (``ArchInfo.roles`` maps each to its types)."""

    # Writes a full pointer: the diff's .pykpatch.* records, __mcount_loc, callback objnames.
    ABS64 = "absolute 64-bit address"
    # Absolute references in code whose addend is the target offset itself (x86: mov $sym, %reg).
    ABSOLUTE = "absolute address in code"
    # A PC-relative call or branch to a function.
    CALL = "PC-relative call or branch"
    # Takes the address of a function in code (``&func``): resolved to the original function.
    FUNC_POINTER = "function address taken in code"
    # Loads a function's address from the GOT (s390 larl/lgrl @GOTENT): &func, whatever the addend.
    FUNC_POINTER_GOT = "function address loaded from the GOT"
    # The address just past a data section (a loop's end marker): means the section's last object.
    DATA_END = "address of a data section's end"
    # Reaches its target through an entry of ArchInfo.indirect_table (ppc64's .toc): compare the entry.
    INDIRECT = "reference through a table entry"
    # Handled by the module loader itself (TOC setup, entry sequences): never a livepatch relocation.
    LOADER_ONLY = "applied by the module loader only"


@dataclass(frozen=True)
class SpecialSection:
    """A kernel table with one fixed-size entry per site (``__bug_table``...), filtered per entry.

    The entry size is the target kernel's struct size (``size_variable``, as
    kpatch names it), a fixed size, or -- for ``.fixup`` -- found from the
    ``__ex_table`` entries that point into it.
    """

    name: str
    size_variable: str | None = None
    fixed_size: int = 0


@dataclass(frozen=True)
class StructProbe:
    """One struct whose size the diff needs to split a special section, and when it exists.

    ``condition`` is a C preprocessor expression over the tree's CONFIG_
    macros.  ``defined_in`` is the header (relative to the tree) that defines
    the struct in the kernels we know; when the tree's copy has no ``struct
    NAME {`` the struct is left out, because that kernel has no such section.
    ``copied_from``: the struct is private to a C file (ppc64's fixup_entry),
    so the probe copies its definition from there instead of including it.
    """

    key: str
    struct: str
    condition: str
    includes: tuple[str, ...]
    defined_in: str | None
    copied_from: str | None = None

    @property
    def symbol(self) -> str:
        return "pykpatch_size_" + self.key.removesuffix("_STRUCT_SIZE")


# The structs every kernel architecture shares (include/linux, include/asm-generic).
COMMON_STRUCT_PROBES: tuple[StructProbe, ...] = (
    StructProbe("BUG_STRUCT_SIZE", "bug_entry", "defined(CONFIG_BUG) && defined(CONFIG_GENERIC_BUG)",
                ("linux/bug.h",), "include/asm-generic/bug.h"),
    StructProbe("EX_STRUCT_SIZE", "exception_table_entry", "1", ("linux/uaccess.h",), None),
    StructProbe("JUMP_STRUCT_SIZE", "jump_entry", "defined(CONFIG_JUMP_LABEL)",
                ("linux/jump_label.h",), "include/linux/jump_label.h"),
)
PRINTK_INDEX_PROBE = StructProbe("PRINTK_INDEX_STRUCT_SIZE", "pi_entry", "defined(CONFIG_PRINTK_INDEX)",
                                 ("linux/printk.h",), "include/linux/printk.h")

# The special sections of every architecture, in the order they are filtered:
# .fixup is regenerated before __ex_table, whose entries point into it.
COMMON_SPECIAL_SECTIONS: tuple[SpecialSection, ...] = (
    SpecialSection("__bug_table", "BUG_STRUCT_SIZE"),
    SpecialSection(".fixup"),
    SpecialSection("__ex_table", "EX_STRUCT_SIZE"),
    SpecialSection("__jump_table", "JUMP_STRUCT_SIZE"),
)
PRINTK_INDEX_SECTION = SpecialSection(".printk_index", "PRINTK_INDEX_STRUCT_SIZE")


class ArchHooks:
    """The questions about a machine that take code to answer; the defaults fit a RISC machine
    whose relocations' addends are the target offsets and whose functions carry no special entry."""

    def target_bias(self, target: Section, rel: Relocation) -> int | None:
        """Bytes to add to ``rel.addend`` to get the offset it refers to in its symbol's section.

        x86 measures PC-relative displacements from the end of the instruction;
        s390's ``*DBL`` types from the instruction's start.  None: this
        relocation cannot be mapped to a symbol offset.
        """
        return 0

    def string_bias(self, target: Section, rel: Relocation) -> int:
        """Like ``target_bias``, for a reference into a string section (the literal's offset)."""
        return 0

    def bundled_offset(self, sym: Symbol) -> int:
        """Where a function sits in its own -ffunction-sections section (ppc64le: after its TOC word)."""
        return 0

    def ftrace_hooked(self, sym: Symbol) -> bool:
        """Does function ``sym`` call the ftrace hook, judged from its own code and relocations?

        Records of ``__mcount_loc`` / ``__patchable_function_entries`` are
        checked by the caller; this is the arch's own recognition.
        """
        return False

    def ftrace_site(self, sym: Symbol) -> int | None:
        """Offset, in ``sym``'s section, of the ftrace call site the rebuilt records point at."""
        return None

    def line_change_sites(self, old: bytes, new: bytes) -> list[int] | None:
        """Where two same-sized functions differ only in immediates that may carry ``__LINE__``.

        Returns the end offset of each differing instruction (which must be a
        load of an argument register), or None when they differ otherwise or
        cannot be decoded.
        """
        return None

    def size_follows_data_layout(self, sym: Symbol) -> bool:
        """Does this function's code size depend on whether data has one section or one per variable?

        The guard compares an original compiled with ``-fdata-sections`` against
        the distribution's build (one ``.data``); where the compiler addresses
        data relative to a shared anchor in the latter, sizes differ by design.
        """
        return False

    def is_mapping_symbol(self, sym: Symbol) -> bool:
        """Assembler mapping symbols (arm's ``$x``/``$d``) mark code/data transitions, they name nothing."""
        return False

    def keeps_normal_reference(self, rel: Relocation, base: Section) -> bool:
        """A reference the module loader or the module's own link resolves (s390 expoline thunks,
        ppc64's TOC pointer): never a livepatch relocation.  ``base``: the section it patches."""
        return False

    def resolve_live_even_if_exported(self, sym: Symbol) -> bool:
        """An exported symbol that must still go through a livepatch relocation (ppc64le: a reference
        to a function of the patched object means its local entry, which a normal relocation misses)."""
        return False

    def object_problems(self, obj: ElfObject) -> list[str]:
        """Reasons this object is not one the arch support handles (ppc64 ELFv1...)."""
        return []

    def code_problems(self, functions: Iterable[tuple[Symbol, bool]], in_patch: Callable[[Symbol], bool]) -> list[str]:
        """Refusals for changed or new code (``(symbol, changed)`` pairs) that this arch cannot patch live;
        ``in_patch(sym)``: is that symbol's code or data part of the patch module (else the kernel's)?"""
        return []

    def normalize(self, obj: ElfObject) -> None:
        """Rewrite what this machine's compiler emits in a form the generic stages expect (in place)."""


@dataclass(frozen=True)
class ArchInfo:
    """What the diff, module and kpatch-build stages need to know about one machine."""

    name: str
    machine: int
    relocs: dict[int, RelocType] = field(default_factory=dict)
    roles: Mapping[Role, frozenset[int]] = field(default_factory=dict)
    hooks: ArchHooks = field(default_factory=ArchHooks)
    # Names the hook symbol may have in relocations (the first is the one messages show).
    ftrace_hooks: tuple[str, ...] = ("__fentry__",)
    # Types the kernel's module loader applies to a module's allocated sections
    # (apply_relocate_add); any other type makes the module fail to load.
    module_types: frozenset[int] = frozenset()
    special_sections: tuple[SpecialSection, ...] = ()
    struct_probes: tuple[StructProbe, ...] = ()
    # ftrace records go in one __patchable_function_entries section per function
    # when the object has them (-fpatchable-function-entry), else in __mcount_loc.
    uses_patchable_entries: bool = False
    # The table Role.INDIRECT references go through (ppc64: ".toc"; its relocations hold the targets).
    indirect_table: str | None = None
    # Functions whose calls pass __LINE__ (None: rules.LINE_MACRO_CALLEES).
    line_macro_callees: tuple[str, ...] | None = None
    # Kernel-side names: kbuild's ARCH and SRCARCH, uname -m, Debian's cross-compiler prefix.
    kernel_arch: str = ""
    srcarch: str = ""
    uname: str = ""
    cross_compile: str = ""
    big_endian: bool = False
    # Bytes a branch to another function may grow by when it is relocated (-ffunction-sections)
    # instead of relaxed by the assembler (one .text): x86's short jcc is 2 bytes, its rel32 form 6.
    branch_relaxation: int = 0
    # Sections objtool writes (it refuses to write one an object already has: "file already has
    # .return_sites, skipping").
    objtool_sections: frozenset[str] = frozenset()

    @property
    def ftrace_hook(self) -> str:
        return self.ftrace_hooks[0] if self.ftrace_hooks else ""

    @property
    def special_section_names(self) -> frozenset[str]:
        names = {s.name for s in self.special_sections}
        return frozenset(names | ({".orc_unwind", ".orc_unwind_ip"} if any(
            p.key == "ORC_STRUCT_SIZE" for p in self.struct_probes) else set()))

    def types(self, role: Role) -> frozenset[int]:
        return self.roles.get(role, frozenset())

    def role_type(self, role: Role) -> int:
        """The one type that plays ``role`` (the first by number): what the diff writes for it."""
        types = self.roles.get(role)
        if not types:
            from pykpatch.errors import PykpatchError
            raise PykpatchError(f"no {role.value} relocation type known for {self.name}")
        return min(types)

    def reloc_name(self, rtype: int) -> str:
        info = self.relocs.get(rtype)
        return info.name if info else f"R_{self.name.upper()}_{rtype}"

    def reloc_size(self, rtype: int) -> int:
        """Bytes a relocation of this type patches (0 when unknown)."""
        info = self.relocs.get(rtype)
        return info.size if info else 0

    def is_pcrel(self, rtype: int) -> bool:
        info = self.relocs.get(rtype)
        return bool(info and info.pcrel)


def reloc_table(rows: Iterable[tuple[int, str, int, bool]]) -> dict[int, RelocType]:
    return {num: RelocType(name, size, pcrel) for num, name, size, pcrel in rows}


def named_types(relocs: Mapping[int, RelocType], *names: str) -> frozenset[int]:
    """Type numbers by name, for role tables; an unknown name is a bug in the arch module."""
    by_name = {info.name: num for num, info in relocs.items()}
    return frozenset(by_name[n] for n in names)


# The gABI's SHF_EXECINSTR.  The ELF reader imports this package for relocation
# sizes, so this module imports nothing of pykpatch.elf at load time.
_SHF_EXECINSTR = 0x4


def is_code(sec: Section | None) -> bool:
    """Executable section: where hooks decode instructions (the diff's ``rules.is_text``)."""
    return sec is not None and bool(sec.flags & _SHF_EXECINSTR)


@cache
def _registry() -> dict[int, ArchInfo]:
    """Every module of this package that exports ``ARCH``, by ``e_machine`` (imported once)."""
    found: dict[int, ArchInfo] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        arch = getattr(module, "ARCH", None)
        if isinstance(arch, ArchInfo):
            found[arch.machine] = arch
    return found


def arch_for(machine: int) -> ArchInfo | None:
    """The ``ArchInfo`` for an ``e_machine`` value, or None if not supported yet."""
    return _registry().get(machine)


def supported_arches() -> list[ArchInfo]:
    return sorted(_registry().values(), key=lambda a: a.name)


def arch_named(name: str) -> ArchInfo | None:
    """The arch a user or a kernel tree names: ``x86_64``, kbuild's ARCH/SRCARCH, or ``uname -m``."""
    for arch in _registry().values():
        if name in (arch.name, arch.kernel_arch, arch.srcarch, arch.uname):
            return arch
    return None


def cross_make_variables(target: ArchInfo, host_machine: str) -> dict[str, str]:
    """kbuild's ``ARCH``/``CROSS_COMPILE`` to build ``target``'s kernel code on a ``host_machine``
    (``uname -m``) host: none for a native build, Debian's cross compiler prefix otherwise."""
    if host_machine == target.uname:
        return {}
    return {"ARCH": target.kernel_arch, "CROSS_COMPILE": target.cross_compile}


def require_arch(name: str) -> ArchInfo:
    """``arch_named`` for a name a person gave (``--arch``): an unknown one is a usage error."""
    arch = arch_named(name)
    if arch is None:
        from pykpatch.errors import UsageError
        raise UsageError(f"architecture {name!r} is not supported",
                         hint="supported: " + ", ".join(a.name for a in supported_arches()))
    return arch


def generic_arch(machine: int) -> ArchInfo:
    """An ``ArchInfo`` with no relocation knowledge, for describing unknown machines."""
    return _registry().get(machine) or ArchInfo(name=f"em{machine}", machine=machine)


def all_struct_size_variables() -> tuple[str, ...]:
    """Every struct-size variable some architecture reads (kpatch's environment names)."""
    keys: dict[str, None] = {}
    for arch in supported_arches():
        for probe in arch.struct_probes:
            keys.setdefault(probe.key)
    return tuple(keys)


__all__ = [
    "COMMON_SPECIAL_SECTIONS",
    "COMMON_STRUCT_PROBES",
    "PRINTK_INDEX_PROBE",
    "PRINTK_INDEX_SECTION",
    "ArchHooks",
    "ArchInfo",
    "RelocType",
    "Role",
    "SpecialSection",
    "StructProbe",
    "all_struct_size_variables",
    "arch_for",
    "arch_named",
    "cross_make_variables",
    "generic_arch",
    "is_code",
    "named_types",
    "reloc_table",
    "require_arch",
    "supported_arches",
]
