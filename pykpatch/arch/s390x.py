"""s390x: relocation types, the ``jgnop`` ftrace site, expolines, special sections (big endian).

s390 kernels build with ``-mfentry -mnop-mcount``: a patchable function
starts with ``jgnop 0`` (``c0 04 00 00 00 00``), which ftrace turns into a
call; hotpatch kernels (``-mhotpatch``) record the site in ``__mcount_loc``.
Instructions are 2, 4 or 6 bytes long (the top two bits of the first byte),
and a PC-relative ``*DBL`` field sits 2 bytes into its instruction, whose
start the displacement is measured from.  Expoline thunks
(``__s390_indirect_jump_rN``) are provided by the module's own link.
Everything is big endian: the object, the module, the klp sections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pykpatch.arch import (
    COMMON_SPECIAL_SECTIONS,
    COMMON_STRUCT_PROBES,
    PRINTK_INDEX_PROBE,
    PRINTK_INDEX_SECTION,
    ArchHooks,
    ArchInfo,
    Role,
    SpecialSection,
    StructProbe,
    is_code,
    named_types,
    reloc_table,
)
from pykpatch.elf.constants import EM

if TYPE_CHECKING:
    from pykpatch.elf.model import Relocation, Section, Symbol

RELOCS = reloc_table((
    (0, "R_390_NONE", 0, False),
    (1, "R_390_8", 1, False),
    (2, "R_390_12", 2, False),
    (3, "R_390_16", 2, False),
    (4, "R_390_32", 4, False),
    (5, "R_390_PC32", 4, True),
    (6, "R_390_GOT12", 2, False),
    (7, "R_390_GOT32", 4, False),
    (8, "R_390_PLT32", 4, True),
    (9, "R_390_COPY", 0, False),
    (10, "R_390_GLOB_DAT", 8, False),
    (11, "R_390_JMP_SLOT", 8, False),
    (12, "R_390_RELATIVE", 8, False),
    (13, "R_390_GOTOFF32", 4, False),
    (14, "R_390_GOTPC", 4, False),
    (15, "R_390_GOT16", 2, False),
    (16, "R_390_PC16", 2, True),
    (17, "R_390_PC16DBL", 2, True),
    (18, "R_390_PLT16DBL", 2, True),
    (19, "R_390_PC32DBL", 4, True),
    (20, "R_390_PLT32DBL", 4, True),
    (21, "R_390_GOTPCDBL", 4, True),
    (22, "R_390_64", 8, False),
    (23, "R_390_PC64", 8, True),
    (24, "R_390_GOT64", 8, False),
    (25, "R_390_PLT64", 8, True),
    (26, "R_390_GOTENT", 4, True),
    (27, "R_390_GOTOFF16", 2, False),
    (28, "R_390_GOTOFF64", 8, False),
    (29, "R_390_GOTPLT12", 2, True),
    (30, "R_390_GOTPLT16", 2, True),
    (31, "R_390_GOTPLT32", 4, True),
    (32, "R_390_GOTPLT64", 8, True),
    (33, "R_390_GOTPLTENT", 4, True),
    (34, "R_390_PLTOFF16", 2, False),
    (35, "R_390_PLTOFF32", 4, False),
    (36, "R_390_PLTOFF64", 8, False),
    (37, "R_390_TLS_LOAD", 0, False),
    (38, "R_390_TLS_GDCALL", 0, False),
    (39, "R_390_TLS_LDCALL", 0, False),
    (40, "R_390_TLS_GD32", 4, False),
    (41, "R_390_TLS_GD64", 8, False),
    (42, "R_390_TLS_GOTIE12", 2, False),
    (43, "R_390_TLS_GOTIE32", 4, False),
    (44, "R_390_TLS_GOTIE64", 8, False),
    (45, "R_390_TLS_LDM32", 4, False),
    (46, "R_390_TLS_LDM64", 8, False),
    (47, "R_390_TLS_IE32", 4, False),
    (48, "R_390_TLS_IE64", 8, False),
    (49, "R_390_TLS_IEENT", 4, True),
    (50, "R_390_TLS_LE32", 4, False),
    (51, "R_390_TLS_LE64", 8, False),
    (52, "R_390_TLS_LDO32", 4, False),
    (53, "R_390_TLS_LDO64", 8, False),
    (54, "R_390_TLS_DTPMOD", 8, False),
    (55, "R_390_TLS_DTPOFF", 8, False),
    (56, "R_390_TLS_TPOFF", 8, False),
    (57, "R_390_20", 4, False),
    (58, "R_390_GOT20", 4, False),
    (59, "R_390_GOTPLT20", 4, True),
    (60, "R_390_TLS_GOTIE20", 4, False),
    (61, "R_390_IRELATIVE", 8, False),
    (62, "R_390_PC12DBL", 4, True),
    (63, "R_390_PLT12DBL", 4, True),
    (64, "R_390_PC24DBL", 3, True),
    (65, "R_390_PLT24DBL", 3, True),
))

# A *DBL field is 2 bytes into its instruction; the displacement counts from the instruction.
_FIELD_IN_INSN = named_types(RELOCS, "R_390_GOTENT", "R_390_PLT32DBL", "R_390_PC32DBL")
_PLAIN = named_types(RELOCS, "R_390_32", "R_390_64", "R_390_PC32", "R_390_PC64")
JGNOP = bytes.fromhex("c00400000000")
# lghi %r3,imm / lghi %r4,imm: __LINE__ as the second or third argument.
_LINE_LOADS = (bytes.fromhex("a739"), bytes.fromhex("a749"))
EXPOLINE_PREFIX = "__s390_indirect_jump_r"


def insn_length(first_byte: int) -> int:
    """2, 4 or 6 bytes, from the instruction's first two bits (z/Architecture's ILC)."""
    return (2, 4, 4, 6)[first_byte >> 6]


class S390Hooks(ArchHooks):
    def target_bias(self, target: Section, rel: Relocation) -> int | None:
        if rel.type in _FIELD_IN_INSN:
            return -2
        return 0 if rel.type in _PLAIN else None

    def string_bias(self, target: Section, rel: Relocation) -> int:
        return -2 if rel.type in _FIELD_IN_INSN else 0

    def ftrace_hooked(self, sym: Symbol) -> bool:
        sec = sym.section
        return sec is not None and bytes(sec.data[sym.value:sym.value + len(JGNOP)]) == JGNOP

    def ftrace_site(self, sym: Symbol) -> int | None:
        return sym.value

    def line_change_sites(self, old: bytes, new: bytes) -> list[int] | None:
        offset, size, sites = 0, len(new), []
        while offset < size:
            n = insn_length(old[offset])
            if insn_length(new[offset]) != n or offset + n > size:
                return None
            end = offset + n
            if old[offset:end] != new[offset:end]:
                if old[offset:offset + 2] not in _LINE_LOADS or new[offset:offset + 2] != old[offset:offset + 2]:
                    return None
                sites.append(end)
            offset = end
        return sites

    def size_follows_data_layout(self, sym: Symbol) -> bool:
        """A function that references data: GCC's section anchors (on by default on s390) address a
        plain build's ``.bss``/``.data`` through one base register, ``-fdata-sections`` each variable
        by its own ``larl``/``stgrl``.  Measured on 6.1's kernel/fork.o: proc_caches_init is 220 bytes
        in vmlinux, 230 alone."""
        relsec = sym.section.rela if sym.section is not None else None
        if relsec is None:
            return False
        start, end = sym.value, sym.value + sym.size
        return any(start <= r.offset < end and r.symbol is not None and r.symbol.section is not None
                   and not is_code(r.symbol.section) for r in relsec.relocations or ())

    def keeps_normal_reference(self, rel: Relocation, base: Section) -> bool:
        return rel.symbol is not None and rel.symbol.name.startswith(EXPOLINE_PREFIX)


_EXPOLINE_SECTIONS = (".s390_return_mem", ".s390_return_reg", ".s390_indirect_call", ".s390_indirect_branches",
                      ".s390_indirect_jump")

ARCH = ArchInfo(
    name="s390x",
    machine=EM.S390,
    relocs=RELOCS,
    roles={
        Role.ABS64: named_types(RELOCS, "R_390_64"),
        Role.ABSOLUTE: named_types(RELOCS, "R_390_64", "R_390_32"),
        Role.CALL: named_types(RELOCS, "R_390_PLT32DBL", "R_390_PC32DBL"),
        # larl/lgrl of a function's GOT slot: &func (kpatch's function_ptr_rela).
        Role.FUNC_POINTER_GOT: named_types(RELOCS, "R_390_GOTENT"),
    },
    hooks=S390Hooks(),
    ftrace_hooks=("__fentry__",),
    # arch/s390/kernel/module.c apply_rela (the shared-object types are refused there).
    module_types=named_types(
        RELOCS, "R_390_NONE", "R_390_8", "R_390_12", "R_390_16", "R_390_20", "R_390_32", "R_390_64", "R_390_PC16",
        "R_390_PC16DBL", "R_390_PC32DBL", "R_390_PC32", "R_390_PC64", "R_390_GOT12", "R_390_GOT16", "R_390_GOT20",
        "R_390_GOT32", "R_390_GOT64", "R_390_GOTENT", "R_390_GOTPLT12", "R_390_GOTPLT16", "R_390_GOTPLT20",
        "R_390_GOTPLT32", "R_390_GOTPLT64", "R_390_GOTPLTENT", "R_390_PLT16DBL", "R_390_PLT32DBL", "R_390_PLT32",
        "R_390_PLT64", "R_390_PLTOFF16", "R_390_PLTOFF32", "R_390_PLTOFF64", "R_390_GOTOFF16", "R_390_GOTOFF32",
        "R_390_GOTOFF64", "R_390_GOTPC", "R_390_GOTPCDBL"),
    special_sections=COMMON_SPECIAL_SECTIONS + (
        PRINTK_INDEX_SECTION,
        SpecialSection(".altinstructions", "ALT_STRUCT_SIZE"),
    ) + tuple(SpecialSection(name, fixed_size=4) for name in _EXPOLINE_SECTIONS),
    struct_probes=COMMON_STRUCT_PROBES + (
        StructProbe("ALT_STRUCT_SIZE", "alt_instr", "1", ("asm/alternative.h",), "arch/s390/include/asm/alternative.h"),
        PRINTK_INDEX_PROBE,
    ),
    kernel_arch="s390",
    srcarch="s390",
    uname="s390x",
    cross_compile="s390x-linux-gnu-",
    big_endian=True,
)
