"""The guard's size check (kpatch_build/guard.py): a function of another size in the kernel is reported,
except where the arch says the size follows the data layout."""

from __future__ import annotations

from test_diff_cross import compile_for

from pykpatch.diff.lookup import ParentLookup
from pykpatch.elf import read_elf
from pykpatch.kpatch_build.guard import size_mismatches
from pykpatch.symtab import KernelSymbolTable

SOURCE = """
    static int first, second;
    int __attribute__((noinline)) touches_data(int x) { first += x; second -= x; return first; }
    int __attribute__((noinline)) pure_math(int x) { return x * 7 + 3; }
"""
# The "kernel" was built from other code: both functions are longer there.
OTHER = SOURCE.replace("return first;", "return first * second + x / 3;").replace("x * 7 + 3", "x * x * 7 / (x + 3)")


def mismatches(arch: str, tmp_path) -> list[str]:
    here = read_elf(compile_for(arch, tmp_path, "here", SOURCE))
    kernel = compile_for(arch, tmp_path, "kernel", OTHER)
    return size_mismatches(here, ParentLookup(KernelSymbolTable.load(kernel), "vmlinux"))


def names(lines: list[str]) -> list[str]:
    return sorted(line.split(" ", 1)[0] for line in lines)


def test_s390x_reports_code_only_functions_of_another_size(tmp_path):
    assert names(mismatches("s390x", tmp_path)) == ["pure_math"]


def test_ppc64le_compares_no_sizes(tmp_path):
    assert mismatches("ppc64le", tmp_path) == []


def test_same_code_has_no_mismatch(tmp_path):
    here = read_elf(compile_for("s390x", tmp_path, "same", SOURCE))
    assert size_mismatches(here, ParentLookup(KernelSymbolTable.load(tmp_path / "same" / "demo.o"), "vmlinux")) == []
