"""Stage 5: special sections keep only the entries of included functions.

Tables such as ``__bug_table`` or ``__jump_table`` hold one fixed-size entry
per site, each with relocations pointing into some function.  The output
keeps the entries whose relocations reference an included function, packed
together, with their relocations moved along.  Entry sizes are the target
kernel's struct sizes (``BUG_STRUCT_SIZE``... as kpatch names them).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pykpatch.arch import SpecialSection, all_struct_size_variables
from pykpatch.diff.include import include_symbol
from pykpatch.diff.state import DiffState, Status
from pykpatch.elf.constants import STT
from pykpatch.elf.model import Relocation, RelocationSection, Section
from pykpatch.errors import DiffInputError, UsageError

# kpatch's environment names of the struct sizes, over every architecture.
STRUCT_SIZE_VARIABLES = all_struct_size_variables()


ORC_IP_SIZE = 4


def struct_size(sizes: dict[str, int], variable: str, section: str) -> int:
    size = sizes.get(variable)
    if not size:
        raise UsageError(
            f"{variable} is needed to process {section} and was not given",
            hint=f"set {variable} in the environment (the size of the kernel's struct for {section})",
        )
    return size


class _FixupSizes:
    """.fixup groups vary in size: each starts where an __ex_table entry points."""

    def __init__(self, secmap: dict[str, Section]) -> None:
        ex = secmap.get("__ex_table")
        fixup = secmap.get(".fixup")
        starts = set()
        if ex is not None and ex.rela is not None:
            for rel in ex.rela.relocations or ():
                if rel.symbol is not None and _section_name(rel) == ".fixup":
                    starts.add(rel.addend + (rel.symbol.value if rel.symbol.type != STT.SECTION else 0))
        self.starts = sorted(starts)
        self.end = fixup.size if fixup is not None else 0

    def __call__(self, offset: int) -> int:
        for start in self.starts:
            if start > offset:
                return start - offset
        return self.end - offset


def _section_name(rel: Relocation) -> str:
    sym = rel.symbol
    if sym is None or sym.section is None:
        return ""
    return sym.section.name


def _references_included_function(st: DiffState, relocs: list[Relocation]) -> bool:
    for rel in relocs:
        sym = rel.symbol
        if sym is not None and sym.type == STT.FUNC and sym.section is not None and sym.section in st.include:
            return True
    return False


class SpecialSectionFilter:
    def __init__(self, st: DiffState, sizes: dict[str, int], key_in_module: Callable[[str], bool]) -> None:
        self.st = st
        self.sizes = sizes
        self.key_in_module = key_in_module
        self.secmap = st.patched.obj.section_map()
        self.fixup_moves: list[tuple[int, int, int]] = []  # (src, dest, size) of kept .fixup groups

    def run(self) -> None:
        altinstr_kept = False
        for special in self.st.arch.special_sections:
            sec = self.secmap.get(special.name)
            if sec is None or sec.rela is None or sec.rela.relocations is None:
                continue
            kept = self.regenerate(special, sec)
            if special.name == ".altinstructions" and kept:
                altinstr_kept = True
        if altinstr_kept:
            self.include_altinstr_replacement()
        self.regenerate_orc()

    def group_size_fn(self, special: SpecialSection) -> Callable[[int], int]:
        if special.name == ".fixup":
            return _FixupSizes(self.secmap)
        if special.fixed_size:
            size = special.fixed_size
        else:
            size = struct_size(self.sizes, special.size_variable or "", special.name)
        return lambda _offset: size

    def regenerate(self, special: SpecialSection, sec: Section) -> bool:
        st = self.st
        relsec = sec.rela
        assert relsec is not None and relsec.relocations is not None
        if special.name == "__ex_table":
            self.apply_fixup_moves(relsec)
        size_of = self.group_size_fn(special)
        by_offset = sorted(relsec.relocations, key=lambda r: r.offset)
        new_data = bytearray()
        new_relocs: list[Relocation] = []
        src, idx, total = 0, 0, sec.size
        while src < total:
            size = size_of(src)
            if size <= 0:
                break
            if src + size > total:
                size = total - src  # the last entry may lack tail padding
            while idx < len(by_offset) and by_offset[idx].offset < src:
                idx += 1
            group = []
            j = idx
            while j < len(by_offset) and by_offset[j].offset < src + size:
                group.append(by_offset[j])
                j += 1
            if _references_included_function(st, group) and self.keep_group(special, sec, group):
                self.check_entry(sec, src, size, group)
                dest = len(new_data)
                for rel in group:
                    rel.offset -= src - dest
                    new_relocs.append(rel)
                    # A new object (a pr_debug descriptor keying a jump label,
                    # kpatch #1253) or a section-relative target comes along;
                    # an unchanged one is resolved in the kernel.
                    include_symbol(st, rel.symbol)
                if special.name == ".fixup":
                    self.fixup_moves.append((src, dest, size))
                new_data += sec.data[src:src + size]
            src += size
        if not new_data:
            st.status[sec] = st.status[relsec] = Status.SAME
            st.include.discard(sec)
            st.include.discard(relsec)
            return False
        relsec.relocations = new_relocs
        sec.data = bytes(new_data)
        st.include.update((sec, relsec))
        if sec.symbol is not None:
            st.include.add(sec.symbol)
        return True

    def check_entry(self, sec: Section, src: int, size: int, group: list[Relocation]) -> None:
        """Each relocation of a kept entry patches bytes of that entry: entries move one by one.

        A damaged object whose relocation straddles two entries would keep it
        past the end of the regenerated section (the fuzzer's ``.return_sites``).
        Entries that are dropped are not judged: a struct size that does not
        match the object only matters where an entry is kept.
        """
        for rel in group:
            if rel.offset + self.st.arch.reloc_size(rel.type) > src + size:
                raise DiffInputError(
                    f"{os.path.basename(self.st.patched.obj.path)}: {sec.name}: the relocation at {rel.offset:#x} "
                    f"crosses the end of its {size}-byte entry at {src:#x}"
                )

    def apply_fixup_moves(self, relsec: RelocationSection) -> None:
        """__ex_table entries pointing into .fixup follow their (moved) fixup code."""
        if not self.fixup_moves:
            return
        for rel in relsec.relocations or ():
            if _section_name(rel) != ".fixup":
                continue
            for src, dest, size in self.fixup_moves:
                if src <= rel.addend < src + size:
                    rel.addend -= src - dest
                    break

    def keep_group(self, special: SpecialSection, sec: Section, group: list[Relocation]) -> bool:
        """Jump labels and static calls keyed in a module cannot be applied late (kpatch #946)."""
        if special.name == "__jump_table":
            if len(group) != 3:
                self.st.error(f"{sec.name}: entry with {len(group)} relocations (expected code, target, key)")
                return False
            key = group[2].symbol
            return self._key_ok(key, group[0], "jump label")
        if special.name == ".static_call_sites" and len(group) >= 2:
            return self._key_ok(group[1].symbol, group[0], "static call")
        return True

    def _key_ok(self, key, site: Relocation, what: str) -> bool:
        if key is None:
            return True
        name = key.name
        inert = name.startswith("__tracepoint_") or (
            key.section is not None and key.section.name in ("__verbose", "__dyndbg")
        )
        if key.section is None and self.key_in_module(name):
            if inert:
                return False  # an inert tracepoint / pr_debug is harmless to drop
            where = site.symbol.name if site.symbol is not None else "?"
            self.st.error(
                f"{what} at {where}+{site.addend:#x} uses key {name}, which is defined in a module: "
                "not supported (use static_key_enabled() instead)"
            )
            return False
        return True

    def include_altinstr_replacement(self) -> None:
        st = self.st
        sec = self.secmap.get(".altinstr_replacement")
        if sec is None:
            return
        st.include.add(sec)
        for sym in st.patched.obj.symbols:
            if sym.section is sec:
                st.include.add(sym)
        if sec.rela is not None:
            st.include.add(sec.rela)
            for rel in sec.rela.relocations or ():
                include_symbol(st, rel.symbol)

    def regenerate_orc(self) -> None:
        st = self.st
        orc = self.secmap.get(".orc_unwind")
        ip = self.secmap.get(".orc_unwind_ip")
        if orc is None or ip is None or ip.rela is None or ip.rela.relocations is None:
            return
        entry = struct_size(self.sizes, "ORC_STRUCT_SIZE", ".orc_unwind")
        if orc.size % entry or ip.size != orc.size // entry * ORC_IP_SIZE:
            st.error(".orc_unwind and .orc_unwind_ip sizes do not match ORC_STRUCT_SIZE")
            return
        new_data = bytearray()
        new_relocs: list[Relocation] = []
        for rel in sorted(ip.rela.relocations, key=lambda r: r.offset):
            src_idx = rel.offset // ORC_IP_SIZE
            sym = rel.symbol
            if sym is None or sym.type != STT.FUNC or sym.section is None or sym.section not in st.include:
                continue
            dest_idx = len(new_relocs)
            new_data += orc.data[src_idx * entry:(src_idx + 1) * entry]
            rel.offset = dest_idx * ORC_IP_SIZE
            new_relocs.append(rel)
            st.include.add(sym)
        if not new_relocs:
            for s in (orc, ip, ip.rela):
                st.status[s] = Status.SAME
                st.include.discard(s)
            return
        ip.rela.relocations = new_relocs
        orc.data = bytes(new_data)
        ip.data = bytes(len(new_relocs) * ORC_IP_SIZE)
        st.include.update((orc, ip, ip.rela))
