"""Manage live patches on a running system: load, unload, list, info, install.

The livepatch core's state is in sysfs (Documentation/ABI/testing/sysfs-kernel-livepatch):
``/sys/kernel/livepatch/NAME/{enabled,transition,force}``.  Loading a patch
module starts a transition that completes once every task has left the
patched functions; unloading is "disable, wait for the reverse transition,
then remove the module".  Paths are parameters so the logic can be tested
against a scratch directory.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pykpatch.diff.output import FUNC_RECORD, FUNCS_SECTION
from pykpatch.elf.reader import read_elf
from pykpatch.errors import PykpatchError
from pykpatch.kpatch_build.klp import KLP_RELA_PREFIX, KLP_SYM_PREFIX

SYSFS_LIVEPATCH = Path("/sys/kernel/livepatch")
INSTALL_ROOT = Path("/var/lib/kpatch")


class ManageError(PykpatchError):
    """A live patch could not be loaded, unloaded or installed."""


@dataclass
class System:
    """Where the live system's state is (overridable for tests)."""

    sysfs: Path = SYSFS_LIVEPATCH
    install_root: Path = INSTALL_ROOT
    insmod: str = "insmod"
    rmmod: str = "rmmod"
    sleep: Callable[[float], None] = time.sleep


@dataclass
class LoadedPatch:
    name: str
    enabled: bool
    transition: bool


@dataclass
class ModuleInfo:
    path: Path
    name: str
    modinfo: dict[str, str] = field(default_factory=dict)
    functions: list[tuple[str, str, int]] = field(default_factory=list)  # (objname, name, sympos)
    klp_symbols: list[str] = field(default_factory=list)
    klp_sections: list[str] = field(default_factory=list)


def module_name(path_or_name: str) -> str:
    """``/x/livepatch-fix.ko`` or ``livepatch-fix`` -> ``livepatch_fix`` (the kernel's spelling)."""
    base = os.path.basename(path_or_name)
    if base.endswith(".ko"):
        base = base[:-3]
    return base.replace("-", "_")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def list_loaded(system: System) -> list[LoadedPatch]:
    if not system.sysfs.is_dir():
        return []
    return [LoadedPatch(d.name, _read(d / "enabled") == "1", _read(d / "transition") == "1")
            for d in sorted(system.sysfs.iterdir()) if d.is_dir()]


def wait_transition(system: System, name: str, timeout: float, gone_ok: bool = False) -> None:
    """Wait until NAME's transition is over (or its directory is gone, when unloading)."""
    d = system.sysfs / name
    deadline = time.monotonic() + timeout
    while True:
        if not d.exists():
            if gone_ok:
                return
            raise ManageError(f"{name} is not a loaded live patch")
        if _read(d / "transition") == "0":
            return
        if time.monotonic() > deadline:
            raise ManageError(
                f"{name}: the patch transition did not complete in {timeout:.0f} s",
                hint="some task sleeps in a patched function; see /proc/*/task/*/patch_state, "
                     "or send SIGSTOP/SIGCONT to it, or write 1 to the patch's force file (unsafe)",
            )
        system.sleep(0.1)


def load(system: System, ko: Path, timeout: float = 60.0) -> str:
    name = module_name(str(ko))
    if not ko.is_file():
        raise ManageError(f"{ko}: no such module file")
    proc = subprocess.run([system.insmod, str(ko)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ManageError(f"insmod {ko.name} failed: {(proc.stderr or proc.stdout).strip()}",
                          hint="see dmesg for the kernel's reason (wrong kernel? pre-patch callback refused?)")
    wait_transition(system, name, timeout)
    return name


def unload(system: System, name_or_ko: str, timeout: float = 60.0) -> str:
    name = module_name(name_or_ko)
    d = system.sysfs / name
    if not d.exists():
        raise ManageError(f"{name} is not a loaded live patch")
    if _read(d / "enabled") == "1":
        try:
            (d / "enabled").write_text("0")
        except OSError as err:
            raise ManageError(f"cannot disable {name}: {err.strerror}") from None
    wait_transition(system, name, timeout, gone_ok=True)
    deadline = time.monotonic() + timeout
    while d.exists() and time.monotonic() < deadline:
        system.sleep(0.1)
    proc = subprocess.run([system.rmmod, name], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ManageError(f"rmmod {name} failed: {(proc.stderr or proc.stdout).strip()}")
    return name


def _modinfo(obj) -> dict[str, str]:
    sec = next((s for s in obj.sections if s.name == ".modinfo"), None)
    out: dict[str, str] = {}
    if sec is None:
        return out
    for item in bytes(sec.data).split(b"\0"):
        if b"=" in item:
            key, _, value = item.decode("latin-1").partition("=")
            out.setdefault(key, value)
    return out


def module_info(path: Path) -> ModuleInfo:
    """What a livepatch module built by pykpatch patches (read from the .ko, no kernel needed)."""
    obj = read_elf(path)
    info = ModuleInfo(path, module_name(str(path)), _modinfo(obj))
    funcs = next((s for s in obj.sections if s.name == FUNCS_SECTION), None)
    if funcs is not None and funcs.rela is not None:
        rels = {r.offset: r for r in funcs.rela.relocations or ()}
        fmt = "<Q" if obj.layout.endian == "little" else ">Q"
        for base in range(0, funcs.size, FUNC_RECORD):
            name_rel, obj_rel = rels.get(base + 8), rels.get(base + 16)
            if name_rel is None or obj_rel is None or name_rel.symbol is None or obj_rel.symbol is None:
                continue
            name = name_rel.symbol.section.string_at(name_rel.symbol.value + name_rel.addend)
            objname = obj_rel.symbol.section.string_at(obj_rel.symbol.value + obj_rel.addend)
            sympos = struct.unpack_from(fmt, funcs.data, base + 24)[0]
            info.functions.append((objname, name, sympos))
    info.klp_symbols = [s.name for s in obj.symbols if s.name.startswith(KLP_SYM_PREFIX)]
    info.klp_sections = [s.name for s in obj.sections if s.name.startswith(KLP_RELA_PREFIX)]
    return info


def install(system: System, ko: Path, kernel_release: str) -> Path:
    """Copy a module where ``kpatch load --all`` (and the boot service) finds it."""
    info = module_info(ko)
    vermagic = info.modinfo.get("vermagic", "")
    if vermagic and vermagic.split()[0] != kernel_release:
        raise ManageError(f"{ko.name} is built for kernel {vermagic.split()[0]}, not {kernel_release}",
                          hint="install it with -k RELEASE for the kernel it was built for")
    dest_dir = system.install_root / kernel_release
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / ko.name
    tmp = dest.with_suffix(".ko.tmp")
    shutil.copyfile(ko, tmp)
    os.replace(tmp, dest)
    return dest


def uninstall(system: System, name: str, kernel_release: str) -> Path:
    want = module_name(name)
    for ko in sorted((system.install_root / kernel_release).glob("*.ko")):
        if module_name(str(ko)) == want:
            ko.unlink()
            return ko
    raise ManageError(f"{name} is not installed for kernel {kernel_release}")


def installed(system: System, kernel_release: str) -> list[Path]:
    return sorted((system.install_root / kernel_release).glob("*.ko"))
