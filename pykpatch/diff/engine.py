"""The diff pipeline, stage by stage (kpatch calls this create-diff-object).

    check inputs -> analyze -> correlate -> compare -> mark ignored -> check hooks
            -> include -> special sections -> verify -> output -> validate -> write

Each stage is a module of this package; this one only runs them in order,
collects unsupported changes, and produces the result and report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pykpatch.arch import arch_for
from pykpatch.diff import compare as compare_stage
from pykpatch.diff import correlate as correlate_stage
from pykpatch.diff import include as inc
from pykpatch.diff.analyze import analyze
from pykpatch.diff.lookup import ParentLookup
from pykpatch.diff.output import build_output
from pykpatch.diff.special import STRUCT_SIZE_VARIABLES, SpecialSectionFilter
from pykpatch.diff.state import DiffState, Status
from pykpatch.diff.validate import ParentSymbols, check_copied_relocations, check_input, validate_output
from pykpatch.elf.constants import ET, STB, STT
from pykpatch.elf.model import ElfObject
from pykpatch.elf.reader import read_elf
from pykpatch.elf.writer import serialize, write_bytes
from pykpatch.errors import DiffInputError, DiffOutputError, ElfWriteError, NoChangeError, UnsupportedChangeError
from pykpatch.gcpause import gc_paused


@dataclass
class DiffResult:
    changed: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    funcs: list[dict] = field(default_factory=list)
    klp_symbols: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    output: ElfObject | None = None

    def report(self, errors: list[str] | None = None) -> dict:
        return {
            "changed": self.changed,
            "new": self.new,
            "funcs": self.funcs,
            "klp_symbols": self.klp_symbols,
            "errors": list(errors or []),
            "notes": self.notes,
        }


def struct_sizes_from_env(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """Special-section struct sizes from kpatch's environment variable names (``os.environ`` by default)."""
    source = os.environ if env is None else env
    sizes: dict[str, int] = {}
    for var in STRUCT_SIZE_VARIABLES:
        value = source.get(var)
        if value:
            try:
                sizes[var] = int(value, 0)
            except ValueError:
                raise DiffInputError(f"{var}={value!r} is not a number") from None
    return sizes


def check_pair(orig: ElfObject, patched: ElfObject, name: str) -> None:
    lo, lp = orig.layout, patched.layout
    if (lo.elf_class, lo.data, orig.machine, orig.e_type, orig.e_flags) != (
        lp.elf_class, lp.data, patched.machine, patched.e_type, patched.e_flags
    ):
        raise DiffInputError(f"{name}: the original and patched objects have different ELF headers")
    if orig.e_type != ET.REL:
        raise DiffInputError(f"{name}: not a relocatable object (.o)")


def _function_lists(st: DiffState) -> tuple[list[str], list[str]]:
    changed, new = [], []
    for sym in st.patched.obj.symbols:
        if sym.type != STT.FUNC or sym.section is None or sym not in st.include or sym in st.patched.parent:
            continue
        status = st.status.get(sym)
        if status == Status.CHANGED:
            changed.append(sym.name)
        elif status == Status.NEW:
            new.append(sym.name)
    return changed, new


@gc_paused()  # the two models live until the end: see gcpause
def run_diff(
    orig_path: str,
    patched_path: str,
    parent: str,
    table,
    symvers=None,
    struct_sizes: dict[str, int] | None = None,
    output_path: str | None = None,
) -> DiffResult:
    """Diff two objects; write the live-patch object; raise on unsupported or no change.

    ``table`` is the parent's ``KernelSymbolTable`` (or any object with a
    ``symbols`` list of name/type/bind/value/size/section entries).
    """
    name = os.path.basename(orig_path)
    orig = read_elf(orig_path)
    patched = read_elf(patched_path)
    check_pair(orig, patched, name)
    arch = arch_for(orig.machine)
    if arch is None:
        raise DiffInputError(f"{name}: machine {orig.machine} is not supported yet")
    check_input(orig, arch)
    check_input(patched, arch)
    sizes = struct_sizes if struct_sizes is not None else struct_sizes_from_env()

    st = DiffState(analyze(orig, arch, name), analyze(patched, arch, name), arch, name)
    lookup = ParentLookup(table, parent, symvers)
    lookup.match_file_blocks(orig, name)

    correlate_stage.correlate(st)
    # Locals are looked up through the original's FILE symbols.
    st.patched.file_of = {s: st.symbol_twin.get(f, f) for s, f in st.patched.file_of.items()}
    inc.mark_ignored_sections(st)
    compare_stage.compare(st)
    inc.mark_ignored_same(st)
    inc.check_ftrace_hooks(st)

    inc.include_standard_elements(st)
    n_changed = inc.include_changed_functions(st)
    has_callbacks = inc.include_callbacks(st)
    inc.include_forced(st)
    n_globals = inc.include_new_globals(st)
    inc.include_debug_sections(st)
    SpecialSectionFilter(st, sizes, lambda sym: _exported_by_module(lookup, sym)).run()
    inc.check_arch_code(st)
    inc.refuse_runtime_constants(st)
    inc.verify_patchability(st)

    result = DiffResult(notes=st.notes)
    result.changed, result.new = _function_lists(st)
    if st.errors:
        raise UnsupportedChangeError(st.errors, f"{name}: {len(st.errors)} unsupported change(s)")
    if not n_changed and not n_globals and not has_callbacks:
        raise NoChangeError(f"{name}: no changed functions found")

    plan = build_output(st, lookup, parent)
    if st.errors:
        raise UnsupportedChangeError(st.errors, f"{name}: {len(st.errors)} unsupported change(s)")
    check_copied_relocations(plan.obj, [k.type for k in plan.klp_relocs], arch, patched)
    result.funcs = [{"name": f.name, "objname": f.objname, "sympos": f.sympos} for f in plan.funcs]
    seen = set()
    for k in plan.klp_relocs:
        key = (k.name, k.objname, k.sympos)
        if key not in seen:
            seen.add(key)
            result.klp_symbols.append({"name": k.name, "objname": k.objname, "sympos": k.sympos})
    blob = _serialize_output(plan.obj, name)
    validate_output(blob, name, arch, ParentSymbols(table, parent, symvers))
    result.output = plan.obj
    if output_path:
        write_bytes(blob, output_path)
    return result


def _serialize_output(obj: ElfObject, name: str) -> bytes:
    """The output's bytes; a model the writer refuses is the diff's bug, reported like a failed validation."""
    try:
        return serialize(obj)
    except ElfWriteError as err:
        raise DiffOutputError(name, [str(err)]) from None


def _exported_by_module(lookup: ParentLookup, name: str) -> bool:
    """Is this (undefined) symbol defined in a module rather than vmlinux?"""
    found = lookup.lookup_exported(name)
    if found is not None:
        return found.objname != "vmlinux"
    return lookup.objname != "vmlinux" and lookup.lookup_global(name) is not None


__all__ = ["DiffResult", "run_diff", "struct_sizes_from_env", "STB"]
