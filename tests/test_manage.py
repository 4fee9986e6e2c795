"""``kpatch`` load/unload/list/info/install against a scratch sysfs and fake insmod/rmmod."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import load_cases
from pykpatch import manage
from pykpatch.elf import ElfObject, Section, write_elf
from pykpatch.elf.constants import SHF, SHT


def fake_tool(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def system(tmp_path):
    sysfs = tmp_path / "sys/kernel/livepatch"
    sysfs.mkdir(parents=True)
    insmod = fake_tool(tmp_path / "insmod", f"""\
        name=$(basename "$1" .ko | tr - _)
        mkdir -p {sysfs}/$name && echo 1 > {sysfs}/$name/enabled && echo "${{TRANSITION:-0}}" > {sysfs}/$name/transition
        """)
    rmmod = fake_tool(tmp_path / "rmmod", f'rm -rf {sysfs}/"$1"\n')
    return manage.System(sysfs=sysfs, install_root=tmp_path / "lib/kpatch", insmod=insmod, rmmod=rmmod,
                         sleep=lambda _s: None)


def make_ko(path: Path, vermagic: str = "6.1.192 SMP mod_unload modversions ") -> Path:
    obj = ElfObject()
    obj.add_section(Section(".modinfo", SHT.PROGBITS, SHF.ALLOC,
                            f"vermagic={vermagic}\0livepatch=Y\0".encode(), align=1))
    write_elf(obj, path)
    return path


def test_load_list_unload(system, tmp_path):
    ko = make_ko(tmp_path / "livepatch-fix.ko")
    assert manage.load(system, ko, timeout=1) == "livepatch_fix"
    assert manage.list_loaded(system) == [manage.LoadedPatch("livepatch_fix", True, False)]
    assert manage.unload(system, "livepatch-fix", timeout=0.2) == "livepatch_fix"
    assert manage.list_loaded(system) == []


def test_stuck_transition_is_reported_with_advice(system, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSITION", "1")
    ko = make_ko(tmp_path / "livepatch-slow.ko")
    with pytest.raises(manage.ManageError, match="did not complete") as err:
        manage.load(system, ko, timeout=0.2)
    assert "patch_state" in err.value.hint


def test_failed_insmod_is_a_clear_error(system, tmp_path):
    system.insmod = fake_tool(tmp_path / "insmod-fail", "echo 'insmod: ERROR: could not insert module' >&2; exit 1\n")
    with pytest.raises(manage.ManageError, match="could not insert"):
        manage.load(system, make_ko(tmp_path / "livepatch-x.ko"), timeout=1)


def test_unloading_what_is_not_loaded(system):
    with pytest.raises(manage.ManageError, match="not a loaded live patch"):
        manage.unload(system, "livepatch_nothing", timeout=0.1)


def test_install_checks_the_kernel_release(system, tmp_path):
    ko = make_ko(tmp_path / "livepatch-fix.ko")
    dest = manage.install(system, ko, "6.1.192")
    assert dest == system.install_root / "6.1.192" / "livepatch-fix.ko" and dest.exists()
    assert manage.installed(system, "6.1.192") == [dest]
    with pytest.raises(manage.ManageError, match="built for kernel 6.1.192"):
        manage.install(system, ko, "6.8.0")
    assert manage.uninstall(system, "livepatch_fix", "6.1.192") == dest
    assert not dest.exists()


def test_info_lists_patched_functions(corpus_dir, tmp_path):
    name = "bug-table-section"
    orig = corpus_dir / f"{name}.ORIG.o"
    out = tmp_path / "out.o"
    proc = subprocess.run(
        [sys.executable, "-m", "pykpatch.cli", "diff", str(orig), str(corpus_dir / f"{name}.PATCHED.o"),
         "--symtab", str(orig), "-o", str(out)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **load_cases(corpus_dir)[name]["env"]},
    )
    assert proc.returncode == 0, proc.stderr
    info = manage.module_info(out)
    assert info.functions == [("vmlinux", "sysctl_head_grab", 1)]
    cli = subprocess.run([sys.executable, "-m", "pykpatch.cli", "manage", "info", str(out)],
                         capture_output=True, text=True)
    assert cli.returncode == 0 and "vmlinux: sysctl_head_grab (sympos 1)" in cli.stdout


def test_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pykpatch.cli", "manage", "info", str(tmp_path / "nope.ko")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "nope.ko" in proc.stderr
