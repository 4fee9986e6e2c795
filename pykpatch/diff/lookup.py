"""Resolve the patched object's symbols against the running kernel's symbol table.

Two questions, as kpatch's ``lookup.c`` answers them:

1. *Which locals are this file's?*  A static ``foo`` may exist in many files.
   The object's FILE block (the locals following its STT_FILE symbol) is
   matched against the parent's FILE blocks of the same name: the block
   whose local functions and objects are exactly the object's (ignoring
   symbols the linker may drop) is "this file".  No match or two matches
   are errors that name the file.
2. *How is a referenced symbol reached?*  A local gets a livepatch
   relocation with ``sympos`` = its 1-based position among same-named
   locals of the parent in address order (kallsyms order, as
   ``klp_find_object_symbol`` counts); a global that is not exported, or exported by a module, gets one
   with sympos 0; a symbol exported by vmlinux is linked normally.
"""

from __future__ import annotations

from dataclasses import dataclass

from pykpatch.elf.constants import STB, STT
from pykpatch.elf.model import ElfObject, Symbol
from pykpatch.errors import SymbolLookupError


@dataclass(frozen=True)
class LookupResult:
    objname: str
    sympos: int
    addr: int
    size: int
    is_global: bool
    exported: bool


def maybe_discarded(name: str) -> bool:
    """Locals the final link may or may not keep, so they never decide a FILE-block match."""
    return (
        name.startswith(("__exitcall_", "__initcall_", "__brk_reservation_fn_", "__func_stack_frame_non_standard_",
                         ".L", "__kstrtab_", "__kstrtabns_", "__ksymtab_", "__crc_", "__setup_", "__param_",
                         "__mod_", "__UNIQUE_ID_", "__already_done", "__warned", "__key", "__func__",
                         "__FUNCTION__", "__print_once", "_rs", "CSWTCH", "__pfx_", "__cfi_", "__tpstrtab_",
                         "__export_symbol_", "__addressable_"))
        or "__addressable_" in name
        or "__UNIQUE_ID_" in name
        or ".__func__" in name
    )


def _is_match_candidate(type_: int) -> bool:
    return type_ in (STT.FUNC, STT.OBJECT)


@dataclass
class _Entry:
    name: str
    type: int
    bind: int
    value: int
    size: int
    defined: bool
    ksym: object = None


class ParentLookup:
    """The parent's symbol table indexed for the diff (built once per table)."""

    def __init__(self, table, objname: str, symvers=None) -> None:
        self.objname = objname
        self.symvers = symvers
        entries: list[_Entry] = []
        for ks in table.symbols:
            section = getattr(ks, "section", None)
            defined = getattr(ks, "defined", None)
            if defined is None:
                defined = section not in (None, "", "UND", 0)
            entries.append(_Entry(ks.name, int(ks.type), int(ks.bind), int(ks.value), int(ks.size), bool(defined), ks))
        self.entries = entries
        self.table = table
        self.local_pos: list[int] = [0] * len(entries)
        counts: dict[str, int] = {}
        self.globals: dict[str, int] = {}
        self.files: dict[str, list[int]] = {}
        for i, e in enumerate(entries):
            if e.type == STT.FILE:
                self.files.setdefault(e.name, []).append(i)
                continue
            if e.bind == STB.LOCAL:
                counts[e.name] = counts.get(e.name, 0) + 1
                self.local_pos[i] = counts[e.name]
            elif e.defined and e.type != STT.SECTION:
                self.globals.setdefault(e.name, i)
        self.block_of: dict[int, int] = {}  # object FILE symbol id -> table FILE index
        self._blocks: dict[int, dict[str, list[int]]] = {}

    # -- FILE block matching -----------------------------------------------------
    def _table_block(self, start: int) -> list[_Entry]:
        out = []
        for e in self.entries[start + 1:]:
            if e.type == STT.FILE:
                break
            if e.bind == STB.LOCAL:
                out.append(e)
        return out

    @staticmethod
    def _object_block(obj: ElfObject, file_sym: Symbol) -> list[Symbol]:
        syms = obj.symbols
        idx = syms.index(file_sym)
        out = []
        for s in syms[idx + 1:]:
            if s.type == STT.FILE:
                break
            if s.bind == STB.LOCAL:
                out.append(s)
        return out

    def _locals_match(self, table_block: list[_Entry], obj_block: list[Symbol]) -> bool:
        obj_keys = {(s.name, s.type) for s in obj_block}
        table_keys = {(e.name, e.type) for e in table_block}
        for e in table_block:
            if _is_match_candidate(e.type) and (e.name, e.type) not in obj_keys:
                return False
        for s in obj_block:
            if _is_match_candidate(s.type) and not maybe_discarded(s.name) and (s.name, s.type) not in table_keys:
                return False
        return True

    def match_file_blocks(self, obj: ElfObject, objname_for_errors: str) -> None:
        """Find, for each FILE symbol of ``obj``, its block in the parent table."""
        for file_sym in obj.symbols:
            if file_sym.type != STT.FILE:
                continue
            obj_block = self._object_block(obj, file_sym)
            if not any(_is_match_candidate(s.type) for s in obj_block):
                continue
            matches = [i for i in self.files.get(file_sym.name, ())
                       if self._locals_match(self._table_block(i), obj_block)]
            if not matches:
                raise SymbolLookupError(
                    f"{objname_for_errors}: couldn't find the local symbols of {file_sym.name} in the {self.objname} "
                    "symbol table",
                    hint="is the symbol table (-v VMLINUX / --symtab) from the same build as the original object?",
                )
            if len(matches) > 1:
                raise SymbolLookupError(
                    f"{objname_for_errors}: found {len(matches)} blocks of local symbols for {file_sym.name} in the "
                    f"{self.objname} symbol table; cannot tell which one is this file"
                )
            self.block_of[id(file_sym)] = matches[0]

    # -- symbol look-up ------------------------------------------------------------
    def lookup_local(self, name: str, file_sym: Symbol | None) -> LookupResult | None:
        if file_sym is None:
            return None
        start = self.block_of.get(id(file_sym))
        if start is None:
            return None
        matches = self._block_locals(start).get(name, ())
        if len(matches) > 1:
            raise SymbolLookupError(
                f"duplicate local symbol {name} in {file_sym.name} of the {self.objname} symbol table")
        if not matches:
            return None
        found = matches[0]
        e = self.entries[found]
        return LookupResult(self.objname, self._sympos(found), e.value, e.size, False, False)

    def _block_locals(self, start: int) -> dict[str, list[int]]:
        """Locals of the FILE block starting at ``start``, by name (built once per block)."""
        cached = self._blocks.get(start)
        if cached is None:
            cached = {}
            for i in range(start + 1, len(self.entries)):
                e = self.entries[i]
                if e.type == STT.FILE:
                    break
                if e.bind == STB.LOCAL:
                    cached.setdefault(e.name, []).append(i)
            self._blocks[start] = cached
        return cached

    def _sympos(self, index: int) -> int:
        """kpatch's rule, as the kernel counts (address order): see KernelSymbolTable.sympos."""
        sympos = getattr(self.table, "sympos", None)
        entry = self.entries[index]
        if sympos is not None and entry.ksym is not None:
            return sympos(entry.ksym)
        return self.local_pos[index]

    def lookup_exported(self, name: str) -> LookupResult | None:
        if self.symvers is None:
            return None
        entry = self.symvers.lookup(name)
        if entry is None:
            return None
        module = entry.module
        objname = "vmlinux" if module in ("vmlinux", "") or module.endswith("/vmlinux") else module.rsplit("/", 1)[-1]
        return LookupResult(objname.replace("-", "_"), 0, 0, 0, True, True)

    def lookup_global(self, name: str) -> LookupResult | None:
        i = self.globals.get(name)
        if i is None:
            return None
        e = self.entries[i]
        return LookupResult(self.objname, 0, e.value, e.size, True, False)

    def lookup(self, sym: Symbol, file_sym: Symbol | None) -> LookupResult | None:
        if sym.bind == STB.LOCAL:
            found = self.lookup_local(sym.name, file_sym)
            if found is not None:
                return found
        return self.lookup_exported(sym.name) or self.lookup_global(sym.name)
