"""pykpatch.kbuild (release, compiler, config) and kpatch_build.struct_sizes against the real lab kernel (Debian 6.1, gcc 12).

The struct sizes found by compiling a probe against the tree are checked
against two independent witnesses: the DWARF of vmlinux (what kpatch-build
itself reads) and the sizes of vmlinux's special sections, which must be
whole multiples of their entry size.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pykpatch.arch import StructProbe
from pykpatch.elf.constants import SHT
from pykpatch.elf.headers import ElfHeaders
from pykpatch.errors import KernelInfoError
from pykpatch.kbuild.compiler import check_compiler, compiler_of, compiler_of_vmlinux
from pykpatch.kbuild.config import config_value, read_config
from pykpatch.kbuild.release import kernel_release_from_tree, kernel_release_from_vmlinux
from pykpatch.kpatch_build import struct_sizes as kernelinfo
from pykpatch.kpatch_build.struct_sizes import probe_struct_sizes
from pykpatch.lab import KernelBuild
from pykpatch.symtab import KernelSymbolTable, ModuleSymvers

# The lab's configuration (pykpatch/lab/data fragment + olddefconfig) on x86_64:
# BUG/GENERIC_BUG, JUMP_LABEL, PARAVIRT (not XXL), UNWINDER_ORC and inline static
# calls are on; PRINTK_INDEX is off, so there is no pi_entry size.
LAB_SIZES = {
    "BUG_STRUCT_SIZE": 12,
    "EX_STRUCT_SIZE": 12,
    "JUMP_STRUCT_SIZE": 16,
    "ALT_STRUCT_SIZE": 12,
    "PARA_STRUCT_SIZE": 16,
    "ORC_STRUCT_SIZE": 6,
    "STATIC_CALL_STRUCT_SIZE": 8,
}

STRUCT_OF_KEY = {
    "BUG_STRUCT_SIZE": "bug_entry",
    "EX_STRUCT_SIZE": "exception_table_entry",
    "JUMP_STRUCT_SIZE": "jump_entry",
    "ALT_STRUCT_SIZE": "alt_instr",
    "PARA_STRUCT_SIZE": "paravirt_patch_site",
    "ORC_STRUCT_SIZE": "orc_entry",
    "STATIC_CALL_STRUCT_SIZE": "static_call_site",
    "PRINTK_INDEX_STRUCT_SIZE": "pi_entry",
}

# Special sections that vmlinux keeps as sections of their own (6.1/x86_64
# folds __jump_table and .static_call_sites into .data / .init.data).
SECTION_OF_KEY = {
    "BUG_STRUCT_SIZE": "__bug_table",
    "EX_STRUCT_SIZE": "__ex_table",
    "ALT_STRUCT_SIZE": ".altinstructions",
    "PARA_STRUCT_SIZE": ".parainstructions",
    "ORC_STRUCT_SIZE": ".orc_unwind",
}



def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is required by this test (apt-get install binutils make gcc)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def probed(lab_kernel: KernelBuild, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, int], float]:
    """The probe's answer for the lab tree, and how long it took (run once)."""
    work = tmp_path_factory.mktemp("probe")
    start = time.monotonic()
    sizes = probe_struct_sizes(lab_kernel.tree, work)
    return sizes, time.monotonic() - start


def dwarf_struct_sizes(vmlinux: Path, names: set[str]) -> dict[str, int]:
    """Struct byte sizes from ``readelf --debug-dump=info`` of vmlinux, first definition of each.

    The dump is streamed and abandoned as soon as every name is found (the
    full dump of a distribution vmlinux is gigabytes).  Declarations have no
    DW_AT_byte_size and are skipped, as kpatch-build's awk script does.
    """
    readelf = need("readelf")
    found: dict[str, int] = {}
    tag = name = size = None
    die = re.compile(r"^\s*<\d+><[0-9a-f]+>: Abbrev Number: \d+ \((DW_TAG_\w+)\)")
    # "DW_AT_name : (strp) (offset: 0x8cc): bug_entry" (binutils 2.40; older ones print
    # "(indirect string, offset: 0x8cc): bug_entry"): the name is the last word.
    attr_name = re.compile(r"DW_AT_name\s*:.*?(\S+)\s*$")
    attr_size = re.compile(r"DW_AT_byte_size\s*:\s*(?:\(\w+\)\s*)?(\d+)\s*$")

    def close() -> None:
        if tag == "DW_TAG_structure_type" and name in names and name not in found and size is not None:
            found[name] = size

    with subprocess.Popen([readelf, "--debug-dump=info", "--wide", str(vmlinux)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = die.match(line)
            if match:
                close()
                if len(found) == len(names):
                    break
                tag, name, size = match.group(1), None, None
                continue
            if tag != "DW_TAG_structure_type":
                continue
            match = attr_name.search(line)
            if match:
                name = match.group(1)
                continue
            match = attr_size.search(line)
            if match:
                size = int(match.group(1))
        else:
            close()
        proc.kill()
    return found


def test_release_from_vmlinux(lab_kernel: KernelBuild):
    assert kernel_release_from_vmlinux(lab_kernel.vmlinux) == lab_kernel.kernelrelease == "6.1.192"


def test_symbol_table_and_symvers_of_the_lab_kernel(lab_kernel: KernelBuild):
    table = KernelSymbolTable.load(lab_kernel.vmlinux)
    assert len(table.symbols) > 10_000 and len(table.file_blocks) > 100
    start_kernel = table.by_name("start_kernel")
    assert start_kernel and table.sympos(start_kernel[0]) == 0
    symvers = ModuleSymvers.load(lab_kernel.module_symvers)
    assert len(symvers) > 1000 and symvers.lookup("_printk").is_vmlinux


def test_release_from_tree(lab_kernel: KernelBuild):
    assert kernel_release_from_tree(lab_kernel.tree) == lab_kernel.kernelrelease
    need("make")
    assert kernel_release_from_tree(lab_kernel.tree, run_make=True) == lab_kernel.kernelrelease


def test_compiler(lab_kernel: KernelBuild):
    need("gcc")
    kernel = compiler_of_vmlinux(lab_kernel.vmlinux)
    assert re.fullmatch(r"GCC: \(.+\) \d+\.\d+\.\d+", kernel), kernel
    # The lab built its kernel with this machine's gcc (its cache key includes gcc --version).
    assert compiler_of("gcc") == kernel
    check_compiler(lab_kernel.vmlinux, "gcc")


def test_config(lab_kernel: KernelBuild):
    assert config_value(lab_kernel.config, "LIVEPATCH") == "y"
    assert config_value(lab_kernel.config, "CONFIG_UNWINDER_ORC") == "y"
    assert config_value(lab_kernel.config, "PRINTK_INDEX") is None
    assert config_value(lab_kernel.config, "LOCALVERSION") == ""
    assert read_config(lab_kernel.config) == read_config(lab_kernel.tree / ".config")


def test_probe_sizes_and_time(lab_kernel: KernelBuild, probed):
    sizes, elapsed = probed
    print(f"\nprobe_struct_sizes: {elapsed:.2f} s -> {sizes}")
    assert sizes == LAB_SIZES


def test_probe_agrees_with_dwarf(lab_kernel: KernelBuild, probed):
    sizes, _ = probed
    start = time.monotonic()
    dwarf = dwarf_struct_sizes(lab_kernel.vmlinux, {STRUCT_OF_KEY[key] for key in sizes})
    print(f"\nDWARF (readelf, stopped when all found): {time.monotonic() - start:.2f} s -> {dwarf}")
    assert dwarf, "no struct sizes in vmlinux's DWARF: the lab kernel must have CONFIG_DEBUG_INFO"
    assert {key: dwarf.get(STRUCT_OF_KEY[key]) for key in sizes} == sizes


def test_probe_agrees_with_special_sections(lab_kernel: KernelBuild, probed):
    sizes, _ = probed
    with ElfHeaders(lab_kernel.vmlinux) as elf:
        headers = {h.name: h for h in elf.sections}
    for key, section in SECTION_OF_KEY.items():
        header = headers[section]
        assert header.type == SHT.PROGBITS and header.size > 0, section
        assert header.size % sizes[key] == 0, f"{section}: {header.size} bytes is not a multiple of {key}={sizes[key]}"


def test_probe_leaves_the_tree_alone(lab_kernel: KernelBuild, tmp_path):
    watched = [lab_kernel.tree / p for p in (".config", "include/config/auto.conf",
                                             "include/generated/autoconf.h", "Module.symvers", "vmlinux")]
    before = {p: p.stat().st_mtime_ns for p in watched}
    probe_struct_sizes(lab_kernel.tree, tmp_path / "work", log=tmp_path / "build.log")
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert "CC [M]" in (tmp_path / "build.log").read_text()
    assert not list(lab_kernel.tree.glob("probe*"))


def test_probe_compile_failure_names_the_log(lab_kernel: KernelBuild, tmp_path, monkeypatch):
    bogus = StructProbe("BOGUS_STRUCT_SIZE", "pykpatch_no_such_struct", "1", ("linux/types.h",), None)
    real_probes = kernelinfo._probes_for
    monkeypatch.setattr(kernelinfo, "_probes_for", lambda tree: (*real_probes(tree), bogus))
    with pytest.raises(KernelInfoError) as info:
        probe_struct_sizes(lab_kernel.tree, tmp_path / "work")
    message = str(info.value)
    assert str(tmp_path / "work" / "probe.log") in message
    assert "pykpatch_no_such_struct" in message  # gcc's "invalid application of 'sizeof' to incomplete type"
    assert "pykpatch_no_such_struct" in (tmp_path / "work" / "probe.log").read_text()
