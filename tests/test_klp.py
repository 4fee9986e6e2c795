"""klp conversion (pykpatch.kpatch_build.klp) and module naming, without a kernel."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import load_cases

from pykpatch.elf import read_elf, write_elf
from pykpatch.elf.constants import SHF, SHN
from pykpatch.kpatch_build.klp import convert_to_klp, klp_summary, read_klp_relocations
from pykpatch.kpatch_build.kmod import ModuleBuildError, sanitize_name


@pytest.fixture
def diff_output(corpus_dir, tmp_path):
    """The bug-table-section case: one changed local function, one static (sysctl_lock) via klp."""
    name = "bug-table-section"
    case = load_cases(corpus_dir)[name]
    orig = corpus_dir / f"{name}.ORIG.o"
    out = tmp_path / "out.o"
    proc = subprocess.run(
        [sys.executable, "-m", "pykpatch.cli", "diff", str(orig), str(corpus_dir / f"{name}.PATCHED.o"),
         "--symtab", str(orig), "-o", str(out)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **case["env"]},
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_livepatch_relocations_become_klp_sections(diff_output, tmp_path):
    obj = read_elf(diff_output)
    relocs = read_klp_relocations(obj)
    assert {(r.name, r.objname, r.sympos) for r in relocs} == {("sysctl_lock", "vmlinux", 1)}
    assert all(r.section.name == ".text.sysctl_head_grab" for r in relocs)
    count = convert_to_klp(obj)
    assert count == len(relocs)
    final = tmp_path / "klp.o"
    write_elf(obj, final)
    back = read_elf(final)
    secs, syms = klp_summary(back)
    assert secs == [".klp.rela.vmlinux..text.sysctl_head_grab"]
    assert syms == [".klp.sym.vmlinux.sysctl_lock,1"]
    klp_sec = next(s for s in back.sections if s.name == secs[0])
    assert klp_sec.flags & SHF.RELA_LIVEPATCH and klp_sec.flags & SHF.ALLOC
    assert klp_sec.info.name == ".text.sysctl_head_grab"
    assert all(r.symbol.shndx == SHN.LIVEPATCH for r in klp_sec.relocations)
    assert not any(s.name.startswith(".pykpatch.relocs") or s.name == ".rela.pykpatch.relocs" for s in back.sections)
    # readelf accepts it and shows the livepatch symbol as such
    out = subprocess.run(["readelf", "-sW", str(final)], capture_output=True, text=True, check=True).stdout
    assert ".klp.sym.vmlinux.sysctl_lock,1" in out


@pytest.mark.parametrize("given,expected", [
    ("fix", "livepatch-fix"),
    ("livepatch-fix", "livepatch-fix"),
    ("CVE-2024.1234 fix", "livepatch-CVE-2024-1234-fix"),
    ("x" * 100, "livepatch-" + "x" * 45),
])
def test_module_names_are_sanitized(given, expected):
    assert sanitize_name(given) == expected
    assert len(sanitize_name(given)) <= 55


def test_unusable_module_name_is_refused():
    with pytest.raises(ModuleBuildError):
        sanitize_name("...")
