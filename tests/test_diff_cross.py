"""The diff on ppc64le, s390x and aarch64 objects compiled here with Debian's cross compilers.

The corpora cover what the reference tool was tested on; these small C
files cover each architecture's own rules: the ftrace hook each kernel
builds with, the records rebuilt for it, refused ``__init`` changes, new
functions, livepatch relocations to statics, byte order, and ppc64le's
TOC/stub rules (a call leaving the module needs the ``nop`` the loader
restores r2 in; a changed function's sibling call is refused).  Flags are
those the kernels build with (``arch/*/Makefile``) plus kpatch's.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from pykpatch.arch import arch_named
from pykpatch.diff import run_diff
from pykpatch.elf import read_elf
from pykpatch.elf.constants import SHF, SHT, STB, STT
from pykpatch.elf.model import ElfObject, Relocation, Section, Symbol
from pykpatch.errors import UnsupportedChangeError
from pykpatch.kpatch_build.klp import read_klp_relocations
from pykpatch.symtab import KernelSymbolTable

COMMON = ["-O2", "-c", "-ffunction-sections", "-fdata-sections", "-fno-asynchronous-unwind-tables",
          "-fno-stack-protector", "-fno-pic"]
COMPILERS = {
    # arch/powerpc/Makefile (ELFv2, -mprofile-kernel) + kpatch's -mcmodel=large
    "ppc64le": ("powerpc64le-linux-gnu-gcc", ["-pg", "-mprofile-kernel", "-mcmodel=large",
                                             "-mno-pointers-to-nested-functions"]),
    # arch/s390/Makefile: -mfentry -mnop-mcount -mrecord-mcount; kpatch adds -fno-section-anchors
    "s390x": ("s390x-linux-gnu-gcc", ["-pg", "-mfentry", "-mnop-mcount", "-mrecord-mcount",
                                      "-fno-section-anchors"]),
    # arch/arm64/Makefile (DYNAMIC_FTRACE_WITH_REGS): two patchable NOPs, no -pg
    "aarch64": ("aarch64-linux-gnu-gcc", ["-fpatchable-function-entry=2"]),
}

BASE = """
    int shared_counter;
    extern int exported_helper(int x);
    static int __attribute__((noinline)) helper(int x) { return x * 3 + shared_counter; }
    int __attribute__((noinline)) api(int x) { return helper(x) + 1; }
    int __attribute__((noinline)) outward(int x) { return exported_helper(x) * 2 + 1; }
    int __attribute__((noinline, section(".init.text"))) boot(int x) { return x + 7; }
"""


def compile_for(arch: str, tmp: Path, name: str, source: str) -> Path:
    gcc, flags = COMPILERS[arch]
    assert shutil.which(gcc), f"{gcc} is needed (apt-get install gcc-{gcc.removesuffix('-gcc')})"
    d = tmp / name
    d.mkdir(exist_ok=True)
    (d / "demo.c").write_text(textwrap.dedent(source))
    subprocess.run([gcc, *COMMON, *flags, "demo.c", "-o", "demo.o"], cwd=d, check=True, stdin=subprocess.DEVNULL)
    return d / "demo.o"


def diff(arch: str, tmp: Path, orig_src: str, patched_src: str):
    orig = compile_for(arch, tmp, "orig", orig_src)
    patched = compile_for(arch, tmp, "patched", patched_src)
    out = tmp / "out.o"
    result = run_diff(str(orig), str(patched), "vmlinux", KernelSymbolTable.load(orig), None, {}, str(out))
    return result, read_elf(out)


@pytest.mark.parametrize("arch", sorted(COMPILERS))
def test_changed_function_keeps_its_ftrace_record_and_byte_order(arch, tmp_path):
    result, out = diff(arch, tmp_path, BASE, BASE.replace("* 2 + 1", "* 2 + 5"))
    assert result.changed == ["outward"]
    assert result.funcs == [{"name": "outward", "objname": "vmlinux", "sympos": 0}]
    spec = arch_named(arch)
    assert spec is not None and out.machine == spec.machine
    assert out.layout.endian == ("big" if spec.big_endian else "little")
    records = [s for s in out.sections if s.name in ("__mcount_loc", "__patchable_function_entries")]
    assert records, "the rebuilt ftrace record of the changed function"
    outward = next(s for s in out.symbols if s.name == "outward")
    for sec in records:
        assert sec.rela is not None
        targets = {r.symbol.section for r in sec.rela.relocations if r.symbol is not None}
        assert targets == {outward.section}
        if sec.name == "__patchable_function_entries":  # as GCC makes them: ordered, linked to the code
            assert sec.flags & SHF.LINK_ORDER and sec.link is outward.section


@pytest.mark.parametrize("arch", sorted(COMPILERS))
def test_changed_init_function_is_refused(arch, tmp_path):
    with pytest.raises(UnsupportedChangeError) as info:
        diff(arch, tmp_path, BASE, BASE.replace("x + 7", "x + 9"))
    assert any("__init" in reason and "boot" in reason for reason in info.value.reasons)


@pytest.mark.parametrize("arch", sorted(COMPILERS))
def test_new_function_is_linked_in(arch, tmp_path):
    patched = BASE.replace(
        "int __attribute__((noinline)) outward(int x) { return exported_helper(x) * 2 + 1; }",
        "int __attribute__((noinline)) brand_new(int x) { return exported_helper(x) - 3; }\n"
        "    int __attribute__((noinline)) outward(int x) { return brand_new(x) * 2 + 1; }")
    result, _ = diff(arch, tmp_path, BASE, patched)
    assert "brand_new" in result.new and "outward" in result.changed


@pytest.mark.parametrize("arch", ["s390x", "aarch64"])
def test_call_to_a_static_becomes_a_livepatch_relocation(arch, tmp_path):
    result, _ = diff(arch, tmp_path, BASE, BASE.replace("helper(x) + 1", "helper(x) + 4"))
    assert result.changed == ["api"]
    assert {"name": "helper", "objname": "vmlinux", "sympos": 1} in result.klp_symbols


def test_ppc64le_local_call_without_toc_slot_is_refused(tmp_path):
    """GCC calls a static with a bare ``bl``: from the module the loader's stub would need the nop after it."""
    with pytest.raises(UnsupportedChangeError) as info:
        diff("ppc64le", tmp_path, BASE, BASE.replace("helper(x) + 1", "helper(x) + 4"))
    assert any("api+" in r and "helper" in r and "no nop" in r for r in info.value.reasons)


def test_ppc64le_sibling_call_is_refused():
    """A ``b`` to another function from a changed function: the stub would return with the module's TOC.

    GCC emits no sibling calls with -pg, so the code is built here: ``bl _mcount``, then ``b target``.
    """
    arch = arch_named("ppc64le")
    assert arch is not None
    words = [0x48000001, 0x48000000]  # bl _mcount; b target (both still to be relocated)
    text = Section(".text.forward", SHT.PROGBITS, SHF.ALLOC | SHF.EXECINSTR,
                   b"".join(w.to_bytes(4, "little") for w in words))
    forward = Symbol("forward", STB.GLOBAL, STT.FUNC, text, 0, 8)
    target = Symbol("target", STB.GLOBAL, STT.NOTYPE, None)
    mcount = Symbol("_mcount", STB.GLOBAL, STT.NOTYPE, None)
    rel24 = next(num for num, info in arch.relocs.items() if info.name == "R_PPC64_REL24")
    obj = ElfObject(machine=arch.machine)
    obj.add_section(text)
    obj.ensure_relocation_section(text).relocations.extend([Relocation(0, rel24, mcount), Relocation(4, rel24, target)])
    problems = arch.hooks.code_problems([(forward, True)], lambda sym: False)
    assert len(problems) == 1 and "sibling call from forward+0x4 to target" in problems[0]
    assert arch.hooks.code_problems([(forward, False)], lambda sym: False) == []  # a new function may


def test_ppc64le_data_through_the_toc(tmp_path):
    """``shared_counter`` is loaded through a .toc entry: the livepatch relocation fills that entry."""
    result, out = diff("ppc64le", tmp_path, BASE, BASE.replace("* 2 + 1", "* 2 + shared_counter"))
    assert result.changed == ["outward"]
    assert {"name": "shared_counter", "objname": "vmlinux", "sympos": 0} in result.klp_symbols
    records = [k for k in read_klp_relocations(out) if k.name == "shared_counter"]
    assert records and all(k.section.name == ".toc" for k in records)


@pytest.mark.parametrize("arch", ["s390x", "x86_64"])
def test_guard_skips_sizes_of_code_that_references_data_only_where_anchors_exist(arch, tmp_path):
    """s390x's section anchors change the code of functions touching data with -fdata-sections; x86 has none."""
    obj = read_elf(compile_for("s390x", tmp_path, "anchors", """
        static int first, second;
        int __attribute__((noinline)) touches_data(int x) { first += x; second -= x; return first; }
        int __attribute__((noinline)) pure_math(int x) { return x * 7 + 3; }
    """))
    hooks = arch_named(arch).hooks
    funcs = {s.name: s for s in obj.symbols if s.type == STT.FUNC}
    assert hooks.size_follows_data_layout(funcs["touches_data"]) == (arch == "s390x")
    assert not hooks.size_follows_data_layout(funcs["pure_math"])
    # ppc64le: never comparable (loop alignment too), so every function is skipped
    assert arch_named("ppc64le").hooks.size_follows_data_layout(funcs["pure_math"])
