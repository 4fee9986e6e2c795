"""loongarch64: relocation types, patchable-entry ftrace sites, local labels as relocation targets.

LoongArch kernels record ftrace sites with ``-fpatchable-function-entry=2``
(two NOPs at the function's entry, ``__patchable_function_entries``).  GCC
points relocations at local labels (``.LPFE3827``, ``.LBB7266``) instead of
section symbols; they are rewritten to their section's symbol first, as
kpatch does, so that references compare and resolve by section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pykpatch.arch import (
    COMMON_SPECIAL_SECTIONS,
    COMMON_STRUCT_PROBES,
    ArchHooks,
    ArchInfo,
    Role,
    SpecialSection,
    StructProbe,
    named_types,
    reloc_table,
)
from pykpatch.elf.constants import EM, STB, STT

if TYPE_CHECKING:
    from pykpatch.elf.model import ElfObject, Section, Symbol

RELOCS = reloc_table((
    (0, "R_LARCH_NONE", 0, False),
    (1, "R_LARCH_32", 4, False),
    (2, "R_LARCH_64", 8, False),
    (3, "R_LARCH_RELATIVE", 8, False),
    (4, "R_LARCH_COPY", 0, False),
    (5, "R_LARCH_JUMP_SLOT", 8, False),
    (6, "R_LARCH_TLS_DTPMOD32", 4, False),
    (7, "R_LARCH_TLS_DTPMOD64", 8, False),
    (8, "R_LARCH_TLS_DTPREL32", 4, False),
    (9, "R_LARCH_TLS_DTPREL64", 8, False),
    (10, "R_LARCH_TLS_TPREL32", 4, False),
    (11, "R_LARCH_TLS_TPREL64", 8, False),
    (12, "R_LARCH_IRELATIVE", 8, False),
    (20, "R_LARCH_MARK_LA", 0, False),
    (21, "R_LARCH_MARK_PCREL", 0, True),
    (22, "R_LARCH_SOP_PUSH_PCREL", 0, True),
    (23, "R_LARCH_SOP_PUSH_ABSOLUTE", 0, False),
    (24, "R_LARCH_SOP_PUSH_DUP", 0, False),
    (25, "R_LARCH_SOP_PUSH_GPREL", 0, False),
    (26, "R_LARCH_SOP_PUSH_TLS_TPREL", 0, False),
    (27, "R_LARCH_SOP_PUSH_TLS_GOT", 0, False),
    (28, "R_LARCH_SOP_PUSH_TLS_GD", 0, False),
    (29, "R_LARCH_SOP_PUSH_PLT_PCREL", 0, True),
    (30, "R_LARCH_SOP_ASSERT", 0, False),
    (31, "R_LARCH_SOP_NOT", 0, False),
    (32, "R_LARCH_SOP_SUB", 0, False),
    (33, "R_LARCH_SOP_SL", 0, False),
    (34, "R_LARCH_SOP_SR", 0, False),
    (35, "R_LARCH_SOP_ADD", 0, False),
    (36, "R_LARCH_SOP_AND", 0, False),
    (37, "R_LARCH_SOP_IF_ELSE", 0, False),
    (38, "R_LARCH_SOP_POP_32_S_10_5", 4, False),
    (39, "R_LARCH_SOP_POP_32_U_10_12", 4, False),
    (40, "R_LARCH_SOP_POP_32_S_10_12", 4, False),
    (41, "R_LARCH_SOP_POP_32_S_10_16", 4, False),
    (42, "R_LARCH_SOP_POP_32_S_10_16_S2", 4, False),
    (43, "R_LARCH_SOP_POP_32_S_5_20", 4, False),
    (44, "R_LARCH_SOP_POP_32_S_0_5_10_16_S2", 4, False),
    (45, "R_LARCH_SOP_POP_32_S_0_10_10_16_S2", 4, False),
    (46, "R_LARCH_SOP_POP_32_U", 4, False),
    (47, "R_LARCH_ADD8", 1, False),
    (48, "R_LARCH_ADD16", 2, False),
    (49, "R_LARCH_ADD24", 3, False),
    (50, "R_LARCH_ADD32", 4, False),
    (51, "R_LARCH_ADD64", 8, False),
    (52, "R_LARCH_SUB8", 1, False),
    (53, "R_LARCH_SUB16", 2, False),
    (54, "R_LARCH_SUB24", 3, False),
    (55, "R_LARCH_SUB32", 4, False),
    (56, "R_LARCH_SUB64", 8, False),
    (57, "R_LARCH_GNU_VTINHERIT", 0, False),
    (58, "R_LARCH_GNU_VTENTRY", 0, False),
    (64, "R_LARCH_B16", 4, True),
    (65, "R_LARCH_B21", 4, True),
    (66, "R_LARCH_B26", 4, True),
    (67, "R_LARCH_ABS_HI20", 4, False),
    (68, "R_LARCH_ABS_LO12", 4, False),
    (69, "R_LARCH_ABS64_LO20", 4, False),
    (70, "R_LARCH_ABS64_HI12", 4, False),
    (71, "R_LARCH_PCALA_HI20", 4, True),
    (72, "R_LARCH_PCALA_LO12", 4, False),
    (73, "R_LARCH_PCALA64_LO20", 4, False),
    (74, "R_LARCH_PCALA64_HI12", 4, False),
    (75, "R_LARCH_GOT_PC_HI20", 4, True),
    (76, "R_LARCH_GOT_PC_LO12", 4, False),
    (77, "R_LARCH_GOT64_PC_LO20", 4, False),
    (78, "R_LARCH_GOT64_PC_HI12", 4, False),
    (79, "R_LARCH_GOT_HI20", 4, False),
    (80, "R_LARCH_GOT_LO12", 4, False),
    (81, "R_LARCH_GOT64_LO20", 4, False),
    (82, "R_LARCH_GOT64_HI12", 4, False),
    (83, "R_LARCH_TLS_LE_HI20", 4, False),
    (84, "R_LARCH_TLS_LE_LO12", 4, False),
    (85, "R_LARCH_TLS_LE64_LO20", 4, False),
    (86, "R_LARCH_TLS_LE64_HI12", 4, False),
    (87, "R_LARCH_TLS_IE_PC_HI20", 4, True),
    (88, "R_LARCH_TLS_IE_PC_LO12", 4, False),
    (89, "R_LARCH_TLS_IE64_PC_LO20", 4, False),
    (90, "R_LARCH_TLS_IE64_PC_HI12", 4, False),
    (91, "R_LARCH_TLS_IE_HI20", 4, False),
    (92, "R_LARCH_TLS_IE_LO12", 4, False),
    (93, "R_LARCH_TLS_IE64_LO20", 4, False),
    (94, "R_LARCH_TLS_IE64_HI12", 4, False),
    (95, "R_LARCH_TLS_LD_PC_HI20", 4, True),
    (96, "R_LARCH_TLS_LD_HI20", 4, False),
    (97, "R_LARCH_TLS_GD_PC_HI20", 4, True),
    (98, "R_LARCH_TLS_GD_HI20", 4, False),
    (99, "R_LARCH_32_PCREL", 4, True),
    (100, "R_LARCH_RELAX", 0, False),
    (101, "R_LARCH_DELETE", 0, False),
    (102, "R_LARCH_ALIGN", 0, False),
    (103, "R_LARCH_PCREL20_S2", 4, True),
    (104, "R_LARCH_CFA", 0, False),
    (105, "R_LARCH_ADD6", 1, False),
    (106, "R_LARCH_SUB6", 1, False),
    (107, "R_LARCH_ADD_ULEB128", 1, False),
    (108, "R_LARCH_SUB_ULEB128", 1, False),
    (109, "R_LARCH_64_PCREL", 8, True),
    (110, "R_LARCH_CALL36", 8, True),
))


def _section_symbol(obj: ElfObject, sec: Section, cache: dict[Section, Symbol]) -> Symbol:
    sym = cache.get(sec) or sec.symbol
    if sym is None:
        from pykpatch.elf.model import Symbol as ElfSymbol
        sym = ElfSymbol("", STB.LOCAL, STT.SECTION, sec)
        obj.add_symbol(sym)
        sec.symbol = sym
    cache[sec] = sym
    return sym


class LoongArchHooks(ArchHooks):
    def ftrace_site(self, sym: Symbol) -> int | None:
        return sym.value

    def normalize(self, obj: ElfObject) -> None:
        """``.LBB7266+0`` -> ``.text.foo+0x1c``: a local label is its section at the label's offset."""
        cache: dict[Section, Symbol] = {}
        for relsec in obj.relocation_sections():
            for rel in relsec.relocations or ():
                sym = rel.symbol
                if sym is None or sym.section is None or not _is_local_label(sym):
                    continue
                rel.addend += sym.value
                rel.symbol = _section_symbol(obj, sym.section, cache)
        # Nothing refers to the labels any more; their names (``L0^A``) repeat and would pair wrongly.
        obj.symbols = [s for s in obj.symbols if not _is_local_label(s)]


def _is_local_label(sym: Symbol) -> bool:
    """A defined, local, untyped symbol: an assembler label (``.LBB6``, ``.LPFE3827``, ``L0^A``)."""
    return sym.section is not None and sym.type == STT.NOTYPE and sym.bind == STB.LOCAL


ARCH = ArchInfo(
    name="loongarch64",
    machine=EM.LOONGARCH,
    relocs=RELOCS,
    roles={
        Role.ABS64: named_types(RELOCS, "R_LARCH_64"),
        Role.ABSOLUTE: named_types(RELOCS, "R_LARCH_64", "R_LARCH_32"),
        Role.CALL: named_types(RELOCS, "R_LARCH_B26"),
    },
    hooks=LoongArchHooks(),
    ftrace_hooks=("__patchable_function_entries",),
    # arch/loongarch/kernel/module.c reloc_rela_handlers (32_PCREL/64_PCREL since 6.5, in stable 6.1 too).
    module_types=named_types(
        RELOCS, "R_LARCH_NONE", "R_LARCH_32", "R_LARCH_64", "R_LARCH_MARK_LA", "R_LARCH_MARK_PCREL",
        "R_LARCH_SOP_PUSH_PCREL", "R_LARCH_SOP_PUSH_ABSOLUTE", "R_LARCH_SOP_PUSH_DUP", "R_LARCH_SOP_PUSH_PLT_PCREL",
        "R_LARCH_SOP_SUB", "R_LARCH_SOP_SL", "R_LARCH_SOP_SR", "R_LARCH_SOP_ADD", "R_LARCH_SOP_AND",
        "R_LARCH_SOP_IF_ELSE", "R_LARCH_SOP_POP_32_S_10_5", "R_LARCH_SOP_POP_32_U_10_12", "R_LARCH_SOP_POP_32_S_10_12",
        "R_LARCH_SOP_POP_32_S_10_16", "R_LARCH_SOP_POP_32_S_10_16_S2", "R_LARCH_SOP_POP_32_S_5_20",
        "R_LARCH_SOP_POP_32_S_0_5_10_16_S2", "R_LARCH_SOP_POP_32_S_0_10_10_16_S2", "R_LARCH_SOP_POP_32_U",
        "R_LARCH_ADD32", "R_LARCH_ADD64", "R_LARCH_SUB32", "R_LARCH_SUB64", "R_LARCH_B26", "R_LARCH_PCALA_HI20",
        "R_LARCH_PCALA_LO12", "R_LARCH_PCALA64_LO20", "R_LARCH_PCALA64_HI12", "R_LARCH_GOT_PC_HI20",
        "R_LARCH_GOT_PC_LO12", "R_LARCH_32_PCREL", "R_LARCH_64_PCREL"),
    special_sections=COMMON_SPECIAL_SECTIONS + (SpecialSection(".altinstructions", "ALT_STRUCT_SIZE"),),
    struct_probes=COMMON_STRUCT_PROBES + (
        StructProbe("ALT_STRUCT_SIZE", "alt_instr", "1", ("asm/alternative.h",),
                    "arch/loongarch/include/asm/alternative.h"),
        StructProbe("ORC_STRUCT_SIZE", "orc_entry", "defined(CONFIG_UNWINDER_ORC)", ("asm/orc_types.h",),
                    "arch/loongarch/include/asm/orc_types.h"),
    ),
    uses_patchable_entries=True,
    kernel_arch="loongarch",
    srcarch="loongarch",
    uname="loongarch64",
    cross_compile="loongarch64-linux-gnu-",
)
