"""aarch64 (arm64): relocation types, -fpatchable-function-entry ftrace sites, mapping symbols.

arm64 kernels record each function's ftrace site with
``-fpatchable-function-entry=2`` (``__patchable_function_entries``, one
section per function); with CONFIG_DYNAMIC_FTRACE_WITH_CALL_OPS two more
NOPs sit before the function, which then starts 8 bytes into its section.
``$x``/``$d`` mapping symbols mark code and data and name nothing.
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
    named_types,
    reloc_table,
)
from pykpatch.elf.constants import EM, STB, STT

if TYPE_CHECKING:
    from pykpatch.elf.model import Symbol

RELOCS = reloc_table((
    (0, "R_AARCH64_NONE", 0, False),
    (257, "R_AARCH64_ABS64", 8, False),
    (258, "R_AARCH64_ABS32", 4, False),
    (259, "R_AARCH64_ABS16", 2, False),
    (260, "R_AARCH64_PREL64", 8, True),
    (261, "R_AARCH64_PREL32", 4, True),
    (262, "R_AARCH64_PREL16", 2, True),
    (263, "R_AARCH64_MOVW_UABS_G0", 4, False),
    (264, "R_AARCH64_MOVW_UABS_G0_NC", 4, False),
    (265, "R_AARCH64_MOVW_UABS_G1", 4, False),
    (266, "R_AARCH64_MOVW_UABS_G1_NC", 4, False),
    (267, "R_AARCH64_MOVW_UABS_G2", 4, False),
    (268, "R_AARCH64_MOVW_UABS_G2_NC", 4, False),
    (269, "R_AARCH64_MOVW_UABS_G3", 4, False),
    (270, "R_AARCH64_MOVW_SABS_G0", 4, False),
    (271, "R_AARCH64_MOVW_SABS_G1", 4, False),
    (272, "R_AARCH64_MOVW_SABS_G2", 4, False),
    (273, "R_AARCH64_LD_PREL_LO19", 4, True),
    (274, "R_AARCH64_ADR_PREL_LO21", 4, True),
    (275, "R_AARCH64_ADR_PREL_PG_HI21", 4, True),
    (276, "R_AARCH64_ADR_PREL_PG_HI21_NC", 4, True),
    (277, "R_AARCH64_ADD_ABS_LO12_NC", 4, False),
    (278, "R_AARCH64_LDST8_ABS_LO12_NC", 4, False),
    (279, "R_AARCH64_TSTBR14", 4, True),
    (280, "R_AARCH64_CONDBR19", 4, True),
    (282, "R_AARCH64_JUMP26", 4, True),
    (283, "R_AARCH64_CALL26", 4, True),
    (284, "R_AARCH64_LDST16_ABS_LO12_NC", 4, False),
    (285, "R_AARCH64_LDST32_ABS_LO12_NC", 4, False),
    (286, "R_AARCH64_LDST64_ABS_LO12_NC", 4, False),
    (287, "R_AARCH64_MOVW_PREL_G0", 4, True),
    (288, "R_AARCH64_MOVW_PREL_G0_NC", 4, True),
    (289, "R_AARCH64_MOVW_PREL_G1", 4, True),
    (290, "R_AARCH64_MOVW_PREL_G1_NC", 4, True),
    (291, "R_AARCH64_MOVW_PREL_G2", 4, True),
    (292, "R_AARCH64_MOVW_PREL_G2_NC", 4, True),
    (293, "R_AARCH64_MOVW_PREL_G3", 4, True),
    (299, "R_AARCH64_LDST128_ABS_LO12_NC", 4, False),
    (300, "R_AARCH64_MOVW_GOTOFF_G0", 4, False),
    (301, "R_AARCH64_MOVW_GOTOFF_G0_NC", 4, False),
    (302, "R_AARCH64_MOVW_GOTOFF_G1", 4, False),
    (303, "R_AARCH64_MOVW_GOTOFF_G1_NC", 4, False),
    (304, "R_AARCH64_MOVW_GOTOFF_G2", 4, False),
    (305, "R_AARCH64_MOVW_GOTOFF_G2_NC", 4, False),
    (306, "R_AARCH64_MOVW_GOTOFF_G3", 4, False),
    (307, "R_AARCH64_GOTREL64", 8, False),
    (308, "R_AARCH64_GOTREL32", 4, False),
    (309, "R_AARCH64_GOT_LD_PREL19", 4, True),
    (310, "R_AARCH64_LD64_GOTOFF_LO15", 4, False),
    (311, "R_AARCH64_ADR_GOT_PAGE", 4, True),
    (312, "R_AARCH64_LD64_GOT_LO12_NC", 4, False),
    (313, "R_AARCH64_LD64_GOTPAGE_LO15", 4, False),
    (512, "R_AARCH64_TLSGD_ADR_PREL21", 4, True),
    (513, "R_AARCH64_TLSGD_ADR_PAGE21", 4, True),
    (514, "R_AARCH64_TLSGD_ADD_LO12_NC", 4, False),
    (515, "R_AARCH64_TLSGD_MOVW_G1", 4, False),
    (516, "R_AARCH64_TLSGD_MOVW_G0_NC", 4, False),
    (517, "R_AARCH64_TLSLD_ADR_PREL21", 4, True),
    (518, "R_AARCH64_TLSLD_ADR_PAGE21", 4, True),
    (519, "R_AARCH64_TLSLD_ADD_LO12_NC", 4, False),
    (520, "R_AARCH64_TLSLD_MOVW_G1", 4, False),
    (521, "R_AARCH64_TLSLD_MOVW_G0_NC", 4, False),
    (522, "R_AARCH64_TLSLD_LD_PREL19", 4, True),
    (523, "R_AARCH64_TLSLD_MOVW_DTPREL_G2", 4, True),
    (524, "R_AARCH64_TLSLD_MOVW_DTPREL_G1", 4, True),
    (525, "R_AARCH64_TLSLD_MOVW_DTPREL_G1_NC", 4, True),
    (526, "R_AARCH64_TLSLD_MOVW_DTPREL_G0", 4, True),
    (527, "R_AARCH64_TLSLD_MOVW_DTPREL_G0_NC", 4, True),
    (528, "R_AARCH64_TLSLD_ADD_DTPREL_HI12", 4, True),
    (529, "R_AARCH64_TLSLD_ADD_DTPREL_LO12", 4, True),
    (530, "R_AARCH64_TLSLD_ADD_DTPREL_LO12_NC", 4, True),
    (531, "R_AARCH64_TLSLD_LDST8_DTPREL_LO12", 4, True),
    (532, "R_AARCH64_TLSLD_LDST8_DTPREL_LO12_NC", 4, True),
    (533, "R_AARCH64_TLSLD_LDST16_DTPREL_LO12", 4, True),
    (534, "R_AARCH64_TLSLD_LDST16_DTPREL_LO12_NC", 4, True),
    (535, "R_AARCH64_TLSLD_LDST32_DTPREL_LO12", 4, True),
    (536, "R_AARCH64_TLSLD_LDST32_DTPREL_LO12_NC", 4, True),
    (537, "R_AARCH64_TLSLD_LDST64_DTPREL_LO12", 4, True),
    (538, "R_AARCH64_TLSLD_LDST64_DTPREL_LO12_NC", 4, True),
    (539, "R_AARCH64_TLSIE_MOVW_GOTTPREL_G1", 4, True),
    (540, "R_AARCH64_TLSIE_MOVW_GOTTPREL_G0_NC", 4, True),
    (541, "R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21", 4, True),
    (542, "R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC", 4, True),
    (543, "R_AARCH64_TLSIE_LD_GOTTPREL_PREL19", 4, True),
    (544, "R_AARCH64_TLSLE_MOVW_TPREL_G2", 4, True),
    (545, "R_AARCH64_TLSLE_MOVW_TPREL_G1", 4, True),
    (546, "R_AARCH64_TLSLE_MOVW_TPREL_G1_NC", 4, True),
    (547, "R_AARCH64_TLSLE_MOVW_TPREL_G0", 4, True),
    (548, "R_AARCH64_TLSLE_MOVW_TPREL_G0_NC", 4, True),
    (549, "R_AARCH64_TLSLE_ADD_TPREL_HI12", 4, True),
    (550, "R_AARCH64_TLSLE_ADD_TPREL_LO12", 4, True),
    (551, "R_AARCH64_TLSLE_ADD_TPREL_LO12_NC", 4, True),
    (552, "R_AARCH64_TLSLE_LDST8_TPREL_LO12", 4, True),
    (553, "R_AARCH64_TLSLE_LDST8_TPREL_LO12_NC", 4, True),
    (554, "R_AARCH64_TLSLE_LDST16_TPREL_LO12", 4, True),
    (555, "R_AARCH64_TLSLE_LDST16_TPREL_LO12_NC", 4, True),
    (556, "R_AARCH64_TLSLE_LDST32_TPREL_LO12", 4, True),
    (557, "R_AARCH64_TLSLE_LDST32_TPREL_LO12_NC", 4, True),
    (558, "R_AARCH64_TLSLE_LDST64_TPREL_LO12", 4, True),
    (559, "R_AARCH64_TLSLE_LDST64_TPREL_LO12_NC", 4, True),
    (560, "R_AARCH64_TLSDESC_LD_PREL19", 4, True),
    (561, "R_AARCH64_TLSDESC_ADR_PREL21", 4, True),
    (562, "R_AARCH64_TLSDESC_ADR_PAGE21", 4, True),
    (563, "R_AARCH64_TLSDESC_LD64_LO12", 4, False),
    (564, "R_AARCH64_TLSDESC_ADD_LO12", 4, False),
    (565, "R_AARCH64_TLSDESC_OFF_G1", 4, False),
    (566, "R_AARCH64_TLSDESC_OFF_G0_NC", 4, False),
    (567, "R_AARCH64_TLSDESC_LDR", 4, False),
    (568, "R_AARCH64_TLSDESC_ADD", 4, False),
    (569, "R_AARCH64_TLSDESC_CALL", 4, False),
    (570, "R_AARCH64_TLSLE_LDST128_TPREL_LO12", 4, True),
    (571, "R_AARCH64_TLSLE_LDST128_TPREL_LO12_NC", 4, True),
    (572, "R_AARCH64_TLSLD_LDST128_DTPREL_LO12", 4, True),
    (573, "R_AARCH64_TLSLD_LDST128_DTPREL_LO12_NC", 4, True),
    (1024, "R_AARCH64_COPY", 0, False),
    (1025, "R_AARCH64_GLOB_DAT", 8, False),
    (1026, "R_AARCH64_JUMP_SLOT", 8, False),
    (1027, "R_AARCH64_RELATIVE", 8, False),
    (1028, "R_AARCH64_TLS_DTPMOD", 8, False),
    (1029, "R_AARCH64_TLS_DTPREL", 8, True),
    (1030, "R_AARCH64_TLS_TPREL", 8, True),
    (1031, "R_AARCH64_TLSDESC", 16, False),
    (1032, "R_AARCH64_IRELATIVE", 8, False),
))

NOP = bytes.fromhex("1f2003d5")  # d503201f, little endian
# Two NOPs before the function (CALL_OPS): its entry is 8 bytes into its section.
CALL_OPS_PADDING = 8


def _nops_before(sym: Symbol) -> int:
    """Bytes of NOPs between the start of ``sym``'s section and ``sym`` (0 or the CALL_OPS pair)."""
    sec = sym.section
    if sec is None or sym.value != CALL_OPS_PADDING:
        return 0
    return CALL_OPS_PADDING if bytes(sec.data[0:CALL_OPS_PADDING]) == NOP * 2 else 0


class Arm64Hooks(ArchHooks):
    def bundled_offset(self, sym: Symbol) -> int:
        return _nops_before(sym)

    def ftrace_site(self, sym: Symbol) -> int | None:
        """The first patchable NOP: the CALL_OPS pair before the function, else its entry (the
        records of the object itself are preferred; this is for a function without one)."""
        return sym.value - _nops_before(sym)

    def is_mapping_symbol(self, sym: Symbol) -> bool:
        return sym.name.startswith("$") and sym.type == STT.NOTYPE and sym.bind == STB.LOCAL


ARCH = ArchInfo(
    name="aarch64",
    machine=EM.AARCH64,
    relocs=RELOCS,
    roles={
        Role.ABS64: named_types(RELOCS, "R_AARCH64_ABS64"),
        Role.ABSOLUTE: named_types(RELOCS, "R_AARCH64_ABS64"),
        Role.CALL: named_types(RELOCS, "R_AARCH64_CALL26", "R_AARCH64_JUMP26"),
        # kpatch's end-of-data-section case: a loop bound just past an array.
        Role.DATA_END: named_types(RELOCS, "R_AARCH64_ABS64"),
    },
    hooks=Arm64Hooks(),
    ftrace_hooks=("__patchable_function_entries",),
    # arch/arm64/kernel/module.c apply_relocate_add.
    module_types=named_types(
        RELOCS, "R_AARCH64_NONE", "R_AARCH64_ABS64", "R_AARCH64_ABS32", "R_AARCH64_ABS16", "R_AARCH64_PREL64",
        "R_AARCH64_PREL32", "R_AARCH64_PREL16", "R_AARCH64_MOVW_UABS_G0_NC", "R_AARCH64_MOVW_UABS_G0",
        "R_AARCH64_MOVW_UABS_G1_NC", "R_AARCH64_MOVW_UABS_G1", "R_AARCH64_MOVW_UABS_G2_NC", "R_AARCH64_MOVW_UABS_G2",
        "R_AARCH64_MOVW_UABS_G3", "R_AARCH64_MOVW_SABS_G0", "R_AARCH64_MOVW_SABS_G1", "R_AARCH64_MOVW_SABS_G2",
        "R_AARCH64_MOVW_PREL_G0_NC", "R_AARCH64_MOVW_PREL_G0", "R_AARCH64_MOVW_PREL_G1_NC", "R_AARCH64_MOVW_PREL_G1",
        "R_AARCH64_MOVW_PREL_G2_NC", "R_AARCH64_MOVW_PREL_G2", "R_AARCH64_MOVW_PREL_G3", "R_AARCH64_LD_PREL_LO19",
        "R_AARCH64_ADR_PREL_LO21", "R_AARCH64_ADR_PREL_PG_HI21_NC", "R_AARCH64_ADR_PREL_PG_HI21",
        "R_AARCH64_ADD_ABS_LO12_NC", "R_AARCH64_LDST8_ABS_LO12_NC", "R_AARCH64_LDST16_ABS_LO12_NC",
        "R_AARCH64_LDST32_ABS_LO12_NC", "R_AARCH64_LDST64_ABS_LO12_NC", "R_AARCH64_LDST128_ABS_LO12_NC",
        "R_AARCH64_TSTBR14", "R_AARCH64_CONDBR19", "R_AARCH64_JUMP26", "R_AARCH64_CALL26"),
    special_sections=COMMON_SPECIAL_SECTIONS + (
        PRINTK_INDEX_SECTION,
        SpecialSection(".altinstructions", "ALT_STRUCT_SIZE"),
    ),
    struct_probes=COMMON_STRUCT_PROBES + (
        StructProbe("ALT_STRUCT_SIZE", "alt_instr", "1", ("asm/alternative.h",),
                    "arch/arm64/include/asm/alternative.h"),
        PRINTK_INDEX_PROBE,
    ),
    uses_patchable_entries=True,
    # kpatch: on arm64 only __warn_printk's line argument is recognised (mov w2, #line).
    line_macro_callees=("__warn_printk",),
    kernel_arch="arm64",
    srcarch="arm64",
    uname="aarch64",
    cross_compile="aarch64-linux-gnu-",
)
