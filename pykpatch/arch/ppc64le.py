"""ppc64le (ELFv2): relocation types, TOC indirection, local entry points, ``_mcount`` hooks.

- A function's global entry sets up the TOC pointer (r2) from r12; callers
  inside the object use its *local entry*, ``st_other``'s offset past it.  With
  GCC 6+ and -ffunction-sections the word ``.TOC.-func`` sits before the
  function, which so starts 8 bytes into its section.
- Data is reached through ``.toc`` (``-mcmodel=large``): code loads an entry
  with ``R_PPC64_TOC16_HA``/``_LO_DS``; ``.rela.toc`` says what each entry
  points at.  Entries move between builds, so references are compared through
  the entry they load (``ArchInfo.indirect_table``).
- ``-mprofile-kernel``: a patchable function calls ``_mcount`` right after its
  global entry sequence.
- The module loader reaches a kernel function from a module through a stub
  and restores r2 in the ``nop`` after the ``bl``: a call with no ``nop`` slot
  cannot leave the module, and a sibling call (``b``) returns to the caller
  with the module's TOC (kpatch refuses both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
from pykpatch.elf.constants import EM, STT

if TYPE_CHECKING:
    from pykpatch.elf.model import ElfObject, Relocation, Section, Symbol

RELOCS = reloc_table((
    (0, "R_PPC64_NONE", 0, False),
    (1, "R_PPC64_ADDR32", 4, False),
    (2, "R_PPC64_ADDR24", 4, False),
    (3, "R_PPC64_ADDR16", 2, False),
    (4, "R_PPC64_ADDR16_LO", 2, False),
    (5, "R_PPC64_ADDR16_HI", 2, False),
    (6, "R_PPC64_ADDR16_HA", 2, False),
    (7, "R_PPC64_ADDR14", 4, False),
    (8, "R_PPC64_ADDR14_BRTAKEN", 4, False),
    (9, "R_PPC64_ADDR14_BRNTAKEN", 4, False),
    (10, "R_PPC64_REL24", 4, True),
    (11, "R_PPC64_REL14", 4, True),
    (12, "R_PPC64_REL14_BRTAKEN", 4, True),
    (13, "R_PPC64_REL14_BRNTAKEN", 4, True),
    (14, "R_PPC64_GOT16", 2, False),
    (15, "R_PPC64_GOT16_LO", 2, False),
    (16, "R_PPC64_GOT16_HI", 2, False),
    (17, "R_PPC64_GOT16_HA", 2, False),
    (19, "R_PPC64_COPY", 4, False),
    (20, "R_PPC64_GLOB_DAT", 8, False),
    (21, "R_PPC64_JMP_SLOT", 8, False),
    (22, "R_PPC64_RELATIVE", 8, False),
    (24, "R_PPC64_UADDR32", 4, False),
    (25, "R_PPC64_UADDR16", 2, False),
    (26, "R_PPC64_REL32", 4, True),
    (27, "R_PPC64_PLT32", 4, False),
    (28, "R_PPC64_PLTREL32", 4, True),
    (29, "R_PPC64_PLT16_LO", 2, False),
    (30, "R_PPC64_PLT16_HI", 2, False),
    (31, "R_PPC64_PLT16_HA", 2, False),
    (33, "R_PPC64_SECTOFF", 4, False),
    (34, "R_PPC64_SECTOFF_LO", 2, False),
    (35, "R_PPC64_SECTOFF_HI", 2, False),
    (36, "R_PPC64_SECTOFF_HA", 2, False),
    (37, "R_PPC64_ADDR30", 4, False),
    (38, "R_PPC64_ADDR64", 8, False),
    (39, "R_PPC64_ADDR16_HIGHER", 2, False),
    (40, "R_PPC64_ADDR16_HIGHERA", 2, False),
    (41, "R_PPC64_ADDR16_HIGHEST", 2, False),
    (42, "R_PPC64_ADDR16_HIGHESTA", 2, False),
    (43, "R_PPC64_UADDR64", 8, False),
    (44, "R_PPC64_REL64", 8, True),
    (45, "R_PPC64_PLT64", 8, False),
    (46, "R_PPC64_PLTREL64", 8, True),
    (47, "R_PPC64_TOC16", 2, False),
    (48, "R_PPC64_TOC16_LO", 2, False),
    (49, "R_PPC64_TOC16_HI", 2, False),
    (50, "R_PPC64_TOC16_HA", 2, False),
    (51, "R_PPC64_TOC", 8, False),
    (52, "R_PPC64_PLTGOT16", 2, False),
    (53, "R_PPC64_PLTGOT16_LO", 2, False),
    (54, "R_PPC64_PLTGOT16_HI", 2, False),
    (55, "R_PPC64_PLTGOT16_HA", 2, False),
    (56, "R_PPC64_ADDR16_DS", 2, False),
    (57, "R_PPC64_ADDR16_LO_DS", 2, False),
    (58, "R_PPC64_GOT16_DS", 2, False),
    (59, "R_PPC64_GOT16_LO_DS", 2, False),
    (60, "R_PPC64_PLT16_LO_DS", 2, False),
    (61, "R_PPC64_SECTOFF_DS", 2, False),
    (62, "R_PPC64_SECTOFF_LO_DS", 2, False),
    (63, "R_PPC64_TOC16_DS", 2, False),
    (64, "R_PPC64_TOC16_LO_DS", 2, False),
    (65, "R_PPC64_PLTGOT16_DS", 2, False),
    (66, "R_PPC64_PLTGOT16_LO_DS", 2, False),
    (67, "R_PPC64_TLS", 0, False),
    (68, "R_PPC64_DTPMOD64", 8, False),
    (69, "R_PPC64_TPREL16", 2, False),
    (70, "R_PPC64_TPREL16_LO", 2, False),
    (71, "R_PPC64_TPREL16_HI", 2, False),
    (72, "R_PPC64_TPREL16_HA", 2, False),
    (73, "R_PPC64_TPREL64", 8, False),
    (74, "R_PPC64_DTPREL16", 2, False),
    (75, "R_PPC64_DTPREL16_LO", 2, False),
    (76, "R_PPC64_DTPREL16_HI", 2, False),
    (77, "R_PPC64_DTPREL16_HA", 2, False),
    (78, "R_PPC64_DTPREL64", 8, False),
    (79, "R_PPC64_GOT_TLSGD16", 2, False),
    (80, "R_PPC64_GOT_TLSGD16_LO", 2, False),
    (81, "R_PPC64_GOT_TLSGD16_HI", 2, False),
    (82, "R_PPC64_GOT_TLSGD16_HA", 2, False),
    (83, "R_PPC64_GOT_TLSLD16", 2, False),
    (84, "R_PPC64_GOT_TLSLD16_LO", 2, False),
    (85, "R_PPC64_GOT_TLSLD16_HI", 2, False),
    (86, "R_PPC64_GOT_TLSLD16_HA", 2, False),
    (87, "R_PPC64_GOT_TPREL16_DS", 2, False),
    (88, "R_PPC64_GOT_TPREL16_LO_DS", 2, False),
    (89, "R_PPC64_GOT_TPREL16_HI", 2, False),
    (90, "R_PPC64_GOT_TPREL16_HA", 2, False),
    (91, "R_PPC64_GOT_DTPREL16_DS", 2, False),
    (92, "R_PPC64_GOT_DTPREL16_LO_DS", 2, False),
    (93, "R_PPC64_GOT_DTPREL16_HI", 2, False),
    (94, "R_PPC64_GOT_DTPREL16_HA", 2, False),
    (95, "R_PPC64_TPREL16_DS", 2, False),
    (96, "R_PPC64_TPREL16_LO_DS", 2, False),
    (97, "R_PPC64_TPREL16_HIGHER", 2, False),
    (98, "R_PPC64_TPREL16_HIGHERA", 2, False),
    (99, "R_PPC64_TPREL16_HIGHEST", 2, False),
    (100, "R_PPC64_TPREL16_HIGHESTA", 2, False),
    (101, "R_PPC64_DTPREL16_DS", 2, False),
    (102, "R_PPC64_DTPREL16_LO_DS", 2, False),
    (103, "R_PPC64_DTPREL16_HIGHER", 2, False),
    (104, "R_PPC64_DTPREL16_HIGHERA", 2, False),
    (105, "R_PPC64_DTPREL16_HIGHEST", 2, False),
    (106, "R_PPC64_DTPREL16_HIGHESTA", 2, False),
    (107, "R_PPC64_TLSGD", 0, False),
    (108, "R_PPC64_TLSLD", 0, False),
    (109, "R_PPC64_TOCSAVE", 4, False),
    (110, "R_PPC64_ADDR16_HIGH", 2, False),
    (111, "R_PPC64_ADDR16_HIGHA", 2, False),
    (112, "R_PPC64_TPREL16_HIGH", 2, False),
    (113, "R_PPC64_TPREL16_HIGHA", 2, False),
    (114, "R_PPC64_DTPREL16_HIGH", 2, False),
    (115, "R_PPC64_DTPREL16_HIGHA", 2, False),
    (116, "R_PPC64_REL24_NOTOC", 4, True),
    (117, "R_PPC64_ADDR64_LOCAL", 4, False),
    (118, "R_PPC64_ENTRY", 8, False),
    (123, "R_PPC64_PCREL_OPT", 4, True),
    (132, "R_PPC64_PCREL34", 4, True),
    (133, "R_PPC64_GOT_PCREL34", 4, True),
    (240, "R_PPC64_REL16_HIGH", 2, True),
    (241, "R_PPC64_REL16_HIGHA", 2, True),
    (242, "R_PPC64_REL16_HIGHER", 2, True),
    (243, "R_PPC64_REL16_HIGHERA", 2, True),
    (244, "R_PPC64_REL16_HIGHEST", 2, True),
    (245, "R_PPC64_REL16_HIGHESTA", 2, True),
    (247, "R_PPC64_JMP_IREL", 8, False),
    (248, "R_PPC64_IRELATIVE", 8, False),
    (249, "R_PPC64_REL16", 2, True),
    (250, "R_PPC64_REL16_LO", 2, True),
    (251, "R_PPC64_REL16_HI", 2, True),
    (252, "R_PPC64_REL16_HA", 2, True),
))

_REL24 = named_types(RELOCS, "R_PPC64_REL24")
_REL64 = named_types(RELOCS, "R_PPC64_REL64")
# The TOC word before a bundled function's global entry.
TOC_WORD = 8
NOP = 0x60000000
HOOK = "_mcount"


def local_entry_offset(other: int) -> int:
    """Bytes from the global to the local entry point, from ``st_other`` (ELFv2's STO_PPC64_LOCAL)."""
    return ((1 << ((other >> 5) & 7)) >> 2) << 2


def _word(code: bytes, offset: int) -> int:
    return int.from_bytes(code[offset:offset + 4], "little")


def _is_branch(word: int) -> bool:
    """``b``/``bl`` with a relative target (primary opcode 18, AA = 0)."""
    return word >> 26 == 18 and not word & 2


class Ppc64leHooks(ArchHooks):
    def bundled_offset(self, sym: Symbol) -> int:
        """A function with a local entry starts after its section's TOC word (kpatch's
        is_gcc6_localentry_bundled_sym)."""
        return TOC_WORD if local_entry_offset(sym.other) and sym.value == TOC_WORD else 0

    def _hook_call(self, sym: Symbol) -> Relocation | None:
        relsec = sym.section.rela if sym.section is not None else None
        if relsec is None:
            return None
        start, end = sym.value, sym.value + max(sym.size, 1)
        return min((r for r in relsec.relocations or () if r.symbol is not None and r.symbol.name == HOOK
                    and start <= r.offset < end), key=lambda r: r.offset, default=None)

    def ftrace_hooked(self, sym: Symbol) -> bool:
        return self._hook_call(sym) is not None

    def ftrace_site(self, sym: Symbol) -> int | None:
        call = self._hook_call(sym)
        return None if call is None else call.offset

    def line_change_sites(self, old: bytes, new: bytes) -> list[int] | None:
        """``li r4,imm`` / ``li r5,imm`` (addi rD,0,imm: bytes 3 and 2 of the LE word are 38 80 / 38 a0)."""
        if len(old) != len(new) or len(new) % 4:
            return None
        sites = []
        for offset in range(0, len(new), 4):
            if old[offset:offset + 4] == new[offset:offset + 4]:
                continue
            if not (_is_line_load(old, offset) and _is_line_load(new, offset)):
                return None
            sites.append(offset + 4)
        return sites

    def size_follows_data_layout(self, sym: Symbol) -> bool:
        """Every function: its size in the distribution's build is not that of its own section.

        Two effects, both measured on 6.1: GCC's section anchors (one ``.data``
        lets a function load one address and reach several variables by offset,
        keeping it in a saved register: fs/binfmt_misc.ko's init_misc_binfmt is
        112 bytes, 104 with -fdata-sections), and loop alignment, which the
        assembler pads relative to the section start: walk_process_tree is 360
        bytes in vmlinux at 0x4fd0 of one ``.text``, 340 alone in its section.
        """
        return True

    def keeps_normal_reference(self, rel: Relocation, base: Section) -> bool:
        """REL64 is the TOC word (``.TOC.-func``) except in ``__jump_table`` (relative jump labels)."""
        return rel.type in _REL64 and base.name != "__jump_table"

    def resolve_live_even_if_exported(self, sym: Symbol) -> bool:
        """A reference to a function of the patched object means its local entry: a normal relocation
        would give the global one, so the livepatch core resolves it (kpatch)."""
        return sym.type == STT.FUNC and local_entry_offset(sym.other) != 0

    def object_problems(self, obj: ElfObject) -> list[str]:
        if obj.layout.endian != "little":
            return ["big-endian ppc64 (ELFv1) objects are not supported, only ppc64le"]
        return []

    def code_problems(self, functions: Iterable[tuple[Symbol, bool]], in_patch: Callable[[Symbol], bool]) -> list[str]:
        problems = []
        for sym, changed in functions:
            problems += _call_problems(sym, changed, in_patch)
        return problems


def _is_line_load(code: bytes, offset: int) -> bool:
    return code[offset + 3] == 0x38 and code[offset + 2] in (0x80, 0xA0)


def _call_problems(sym: Symbol, changed: bool, in_patch: Callable[[Symbol], bool]) -> list[str]:
    """Sibling calls from a changed function, and calls without the ``nop`` the stub restores r2 in."""
    sec = sym.section
    if sec is None or sec.rela is None:
        return []
    code = bytes(sec.data)
    start, end = sym.value, sym.value + sym.size
    problems = []
    for rel in sec.rela.relocations or ():
        if rel.type not in _REL24 or not start <= rel.offset < end or rel.symbol is None:
            continue
        word = _word(code, rel.offset)
        if not _is_branch(word) or rel.symbol.name == HOOK:
            continue
        where = f"{sym.name}+{rel.offset - start:#x}"
        if not word & 1:
            if changed:
                problems.append(f"sibling call from {where} to {rel.symbol.name}: unsupported on ppc64le (the "
                                f"stub would write the module's TOC into the caller's frame); add "
                                f"__attribute__((optimize(\"-fno-optimize-sibling-calls\"))) to {sym.name}()")
            continue
        if not in_patch(rel.symbol) and (rel.offset + 8 > len(code) or _word(code, rel.offset + 4) != NOP):
            problems.append(f"call from {where} to {rel.symbol.name} has no nop after it: the module loader "
                            "cannot restore the TOC pointer there (build with kpatch's ppc64le GCC plugin or call "
                            "through a global function)")
    return problems


_FEATURE_FIXUPS = ("__ftr_fixup", "__mmu_ftr_fixup", "__fw_ftr_fixup")

ARCH = ArchInfo(
    name="ppc64le",
    machine=EM.PPC64,
    relocs=RELOCS,
    roles={
        Role.ABS64: named_types(RELOCS, "R_PPC64_ADDR64"),
        Role.ABSOLUTE: named_types(RELOCS, "R_PPC64_ADDR64", "R_PPC64_ADDR32"),
        Role.CALL: _REL24,
        Role.INDIRECT: named_types(RELOCS, "R_PPC64_TOC16_HA", "R_PPC64_TOC16_LO_DS"),
        # The global entry's TOC setup: the module loader computes it for the module's own TOC.
        Role.LOADER_ONLY: named_types(RELOCS, "R_PPC64_REL16_HA", "R_PPC64_REL16_LO", "R_PPC64_ENTRY"),
    },
    hooks=Ppc64leHooks(),
    ftrace_hooks=(HOOK,),
    indirect_table=".toc",
    # arch/powerpc/kernel/module_64.c apply_relocate_add.
    module_types=named_types(
        RELOCS, "R_PPC64_ADDR32", "R_PPC64_ADDR64", "R_PPC64_TOC", "R_PPC64_TOC16", "R_PPC64_TOC16_LO",
        "R_PPC64_TOC16_DS", "R_PPC64_TOC16_LO_DS", "R_PPC64_TOC16_HA", "R_PPC64_REL24", "R_PPC64_REL64",
        "R_PPC64_REL32", "R_PPC64_TOCSAVE", "R_PPC64_ENTRY", "R_PPC64_REL16_HA", "R_PPC64_REL16_LO"),
    special_sections=COMMON_SPECIAL_SECTIONS + (PRINTK_INDEX_SECTION,) + tuple(
        SpecialSection(name, "FIXUP_STRUCT_SIZE") for name in _FEATURE_FIXUPS) + (
        SpecialSection("__lwsync_fixup", fixed_size=8),
        SpecialSection("__barrier_nospec_fixup", fixed_size=8),
    ),
    struct_probes=COMMON_STRUCT_PROBES + (
        StructProbe("FIXUP_STRUCT_SIZE", "fixup_entry", "1", (), None,
                    copied_from="arch/powerpc/lib/feature-fixups.c"),
        PRINTK_INDEX_PROBE,
    ),
    kernel_arch="powerpc",
    srcarch="powerpc",
    uname="ppc64le",
    cross_compile="powerpc64le-linux-gnu-",
)
