"""x86_64: relocation types, the ``__fentry__`` hook, special sections and ``__LINE__`` loads.

The instruction decoder (``insn.py``) gives instruction boundaries: a
PC-relative displacement is measured from the end of its instruction, and a
``mov $imm32, %esi``/``%edx`` is how GCC passes ``__LINE__`` to WARN and
might_sleep helpers.
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
from pykpatch.arch.x86_64.insn import decode, insn_containing
from pykpatch.elf.constants import EM
from pykpatch.errors import PykpatchError

if TYPE_CHECKING:
    from pykpatch.elf.model import Relocation, Section, Symbol

RELOCS = reloc_table((
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
))

_ABSOLUTE = named_types(RELOCS, "R_X86_64_64", "R_X86_64_32S", "R_X86_64_32")
_DISPLACEMENTS = named_types(RELOCS, "R_X86_64_PC32", "R_X86_64_PLT32")
_HOOK_NAMES = frozenset({"__fentry__", "mcount", "_mcount", "__mcount"})
# mov $imm32, %esi / %edx: __LINE__ as the second or third argument.
_LINE_LOADS = frozenset({0xBE, 0xBA})
_CALL_OPCODE_BYTES = 1  # e8 rel32: the hook's relocation is one byte into the call


class X86Hooks(ArchHooks):
    def target_bias(self, target: Section, rel: Relocation) -> int | None:
        """``lea sym+off(%rip)`` has addend ``off - 4`` when nothing follows the displacement, more
        when an immediate does: the decoder finds the instruction's end."""
        if not is_code(target) or rel.type in _ABSOLUTE:
            return 0
        if rel.type not in _DISPLACEMENTS:
            return None
        try:
            insn = insn_containing(target.data, rel.offset)
        except PykpatchError:
            return 4
        return insn.offset + insn.length - rel.offset

    def string_bias(self, target: Section, rel: Relocation) -> int:
        return 4 if is_code(target) and ARCH.is_pcrel(rel.type) else 0

    def ftrace_hooked(self, sym: Symbol) -> bool:
        """The function's first relocation is its ``call __fentry__`` (or an old kernel's mcount)."""
        relsec = sym.section.rela if sym.section is not None else None
        if relsec is None or not relsec.relocations:
            return False
        first = min(relsec.relocations, key=lambda r: r.offset)
        return first.symbol is not None and first.symbol.name in _HOOK_NAMES

    def ftrace_site(self, sym: Symbol) -> int | None:
        relsec = sym.section.rela if sym.section is not None else None
        if relsec is None:
            return None
        first = min((r for r in relsec.relocations or () if r.symbol is not None
                     and r.symbol.name == "__fentry__"), key=lambda r: r.offset, default=None)
        return None if first is None else first.offset - _CALL_OPCODE_BYTES

    def line_change_sites(self, old: bytes, new: bytes) -> list[int] | None:
        """Example (might_sleep): ``be f7 01 00 00   mov $0x1f7,%esi`` then a call to ``__might_sleep``."""
        offset, size, sites = 0, len(new), []
        try:
            while offset < size:
                i1 = decode(old, offset)
                i2 = decode(new, offset)
                if i1.length != i2.length:
                    return None
                end = offset + i1.length
                if old[offset:end] != new[offset:end]:
                    if not (i1.opcode == i2.opcode and i1.opcode in _LINE_LOADS):
                        return None
                    sites.append(end)
                offset = end
        except PykpatchError:
            return None
        return sites


ARCH = ArchInfo(
    branch_relaxation=4,
    objtool_sections=frozenset({".static_call_sites", ".retpoline_sites", ".return_sites", ".call_sites",
                                ".ibt_endbr_seal", ".orc_unwind", ".orc_unwind_ip", ".orc_header"}),
    name="x86_64",
    machine=EM.X86_64,
    relocs=RELOCS,
    roles={
        Role.ABS64: named_types(RELOCS, "R_X86_64_64"),
        Role.ABSOLUTE: _ABSOLUTE,
        Role.CALL: _DISPLACEMENTS,
        # mov $func, %reg (kernel code model): &func
        Role.FUNC_POINTER: named_types(RELOCS, "R_X86_64_32S"),
        Role.DATA_END: named_types(RELOCS, "R_X86_64_32S"),
    },
    hooks=X86Hooks(),
    ftrace_hooks=("__fentry__", "mcount", "_mcount", "__mcount"),
    # arch/x86/kernel/module.c: NONE, 64, 32, 32S, PC32, PLT32, PC64.
    module_types=named_types(RELOCS, "R_X86_64_NONE", "R_X86_64_64", "R_X86_64_32", "R_X86_64_32S",
                             "R_X86_64_PC32", "R_X86_64_PLT32", "R_X86_64_PC64"),
    special_sections=COMMON_SPECIAL_SECTIONS + (
        PRINTK_INDEX_SECTION,
        SpecialSection(".smp_locks", fixed_size=4),
        SpecialSection(".parainstructions", "PARA_STRUCT_SIZE"),
        SpecialSection(".static_call_sites", "STATIC_CALL_STRUCT_SIZE"),
        SpecialSection(".retpoline_sites", fixed_size=4),
        SpecialSection(".return_sites", fixed_size=4),
        SpecialSection(".call_sites", fixed_size=4),
        SpecialSection(".ibt_endbr_seal", fixed_size=4),
        SpecialSection(".altinstructions", "ALT_STRUCT_SIZE"),
    ),
    struct_probes=COMMON_STRUCT_PROBES + (
        StructProbe("ALT_STRUCT_SIZE", "alt_instr", "defined(CONFIG_X86)",
                    ("asm/alternative.h",), "arch/x86/include/asm/alternative.h"),
        StructProbe("PARA_STRUCT_SIZE", "paravirt_patch_site", "defined(CONFIG_X86) && defined(CONFIG_PARAVIRT)",
                    ("asm/paravirt.h",), "arch/x86/include/asm/paravirt_types.h"),
        StructProbe("ORC_STRUCT_SIZE", "orc_entry", "defined(CONFIG_X86) && defined(CONFIG_UNWINDER_ORC)",
                    ("asm/orc_types.h",), "arch/x86/include/asm/orc_types.h"),
        StructProbe("STATIC_CALL_STRUCT_SIZE", "static_call_site", "defined(CONFIG_HAVE_STATIC_CALL_INLINE)",
                    ("linux/static_call_types.h",), "include/linux/static_call_types.h"),
        PRINTK_INDEX_PROBE,
    ),
    kernel_arch="x86_64",
    srcarch="x86",
    uname="x86_64",
    cross_compile="x86_64-linux-gnu-",
)
