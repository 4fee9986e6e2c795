"""Per-architecture facts: relocation type names, sizes and PC-relativity.

The ELF model itself is architecture-neutral; stages that must understand a
relocation (the diff compares code with relocations masked out, the klp
conversion rewrites them) ask this table.  Architectures are added here as
their support lands (x86_64 first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pykpatch.elf.constants import EM


@dataclass(frozen=True)
class RelocType:
    """One relocation type: name, bytes patched at the offset, PC-relative or not."""

    name: str
    size: int
    pcrel: bool = False


@dataclass(frozen=True)
class ArchInfo:
    """What the diff and klp stages need to know about one machine."""

    name: str
    machine: int
    relocs: dict[int, RelocType] = field(default_factory=dict)
    # Bytes of the instruction a PC-relative relocation is measured from the
    # end of (x86: the 4-byte displacement ends the instruction, hence -4).
    pcrel_bias: int = 0
    # Name of the profiling hook every patchable function calls first.
    ftrace_hook: str = "__fentry__"
    # Types the kernel's module loader applies to a module's allocated sections
    # (apply_relocate_add); any other type makes the module fail to load.
    module_types: frozenset[int] = frozenset()

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


def _table(*rows: tuple[int, str, int, bool]) -> dict[int, RelocType]:
    return {num: RelocType(name, size, pcrel) for num, name, size, pcrel in rows}


X86_64 = ArchInfo(
    name="x86_64",
    machine=EM.X86_64,
    pcrel_bias=-4,
    # arch/x86/kernel/module.c: NONE, 64, 32, 32S, PC32, PLT32, PC64.
    module_types=frozenset({0, 1, 10, 11, 2, 4, 24}),
    relocs=_table(
        (0, "R_X86_64_NONE", 0, False),
        (1, "R_X86_64_64", 8, False),
        (2, "R_X86_64_PC32", 4, True),
        (3, "R_X86_64_GOT32", 4, False),
        (4, "R_X86_64_PLT32", 4, True),
        (5, "R_X86_64_COPY", 0, False),
        (6, "R_X86_64_GLOB_DAT", 8, False),
        (7, "R_X86_64_JUMP_SLOT", 8, False),
        (8, "R_X86_64_RELATIVE", 8, False),
        (9, "R_X86_64_GOTPCREL", 4, True),
        (10, "R_X86_64_32", 4, False),
        (11, "R_X86_64_32S", 4, False),
        (12, "R_X86_64_16", 2, False),
        (13, "R_X86_64_PC16", 2, True),
        (14, "R_X86_64_8", 1, False),
        (15, "R_X86_64_PC8", 1, True),
        (16, "R_X86_64_DTPMOD64", 8, False),
        (17, "R_X86_64_DTPOFF64", 8, False),
        (18, "R_X86_64_TPOFF64", 8, False),
        (19, "R_X86_64_TLSGD", 4, True),
        (20, "R_X86_64_TLSLD", 4, True),
        (21, "R_X86_64_DTPOFF32", 4, False),
        (22, "R_X86_64_GOTTPOFF", 4, True),
        (23, "R_X86_64_TPOFF32", 4, False),
        (24, "R_X86_64_PC64", 8, True),
        (25, "R_X86_64_GOTOFF64", 8, False),
        (26, "R_X86_64_GOTPC32", 4, True),
        (27, "R_X86_64_GOT64", 8, False),
        (28, "R_X86_64_GOTPCREL64", 8, True),
        (29, "R_X86_64_GOTPC64", 8, True),
        (30, "R_X86_64_GOTPLT64", 8, False),
        (31, "R_X86_64_PLTOFF64", 8, False),
        (32, "R_X86_64_SIZE32", 4, False),
        (33, "R_X86_64_SIZE64", 8, False),
        (34, "R_X86_64_GOTPC32_TLSDESC", 4, True),
        (35, "R_X86_64_TLSDESC_CALL", 0, False),
        (36, "R_X86_64_TLSDESC", 16, False),
        (37, "R_X86_64_IRELATIVE", 8, False),
        (38, "R_X86_64_RELATIVE64", 8, False),
        (41, "R_X86_64_GOTPCRELX", 4, True),
        (42, "R_X86_64_REX_GOTPCRELX", 4, True),
    ),
)

_ARCHES = {X86_64.machine: X86_64}


def arch_for(machine: int) -> ArchInfo | None:
    """The ``ArchInfo`` for an ``e_machine`` value, or None if not supported yet."""
    return _ARCHES.get(machine)


def generic_arch(machine: int) -> ArchInfo:
    """An ``ArchInfo`` with no relocation knowledge, for describing unknown machines."""
    return _ARCHES.get(machine) or ArchInfo(name=f"em{machine}", machine=machine)
