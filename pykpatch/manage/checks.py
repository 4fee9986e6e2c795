"""Refusals made before calling the kernel, one line each with both values.

``insmod`` of a wrong module fails with a terse errno ("Invalid module
format", "Operation not permitted"), or worse succeeds: with MODVERSIONS
the kernel skips the release part of vermagic, so a live patch built for
another release of the same series can load and patch functions whose code
differs.  Each predicate below names the real case it guards against.
"""

from __future__ import annotations

import shutil

from pykpatch.errors import ManageError, ModuleRefused
from pykpatch.manage.modfile import ModuleInfo
from pykpatch.manage.system import System


def refuse_non_livepatch(info: ModuleInfo) -> None:
    """A plain module (a driver, a helper) is not a live patch: modpost marks
    CONFIG_LIVEPATCH modules with ``livepatch=Y`` in .modinfo."""
    if not info.is_livepatch:
        found = info.modinfo.get("livepatch", "")
        raise ModuleRefused(
            f"{info.path.name} is not a live patch module: its .modinfo has "
            f"livepatch={found or '(absent)'}, a live patch has livepatch=Y",
            found=found, expected="Y", hint="kpatch loads live patch modules only; use insmod for others")


def refuse_other_release(info: ModuleInfo, release: str, whose: str = "the running kernel") -> None:
    """A patch built for another kernel release patches code that may differ
    (the kernel itself ignores the release when MODVERSIONS is on)."""
    if info.release != release:
        raise ModuleRefused(
            f"{info.path.name} is built for kernel {info.release or '(no vermagic)'}, "
            f"not {release} ({whose})",
            found=info.release, expected=release,
            hint="build the patch against the running kernel's tree (kpatch-build -s/-v), "
                 "or install it for its own release with -k")


def refuse_non_root(system: System, action: str) -> None:
    """Loading, disabling and removing modules needs uid 0 (CAP_SYS_MODULE and sysfs writes)."""
    if system.euid != 0:
        raise ModuleRefused(f"kpatch {action} needs root: running as uid {system.euid}, needs uid 0",
                            found=str(system.euid), expected="0", hint=f"sudo kpatch {action} ...")


def refuse_without_livepatch(system: System) -> None:
    """A kernel built without CONFIG_LIVEPATCH has no /sys/kernel/livepatch:
    the module would load and its klp_enable_patch() fail."""
    if not system.sysfs.is_dir():
        raise ModuleRefused(f"this kernel has no live patching: {system.sysfs} does not exist",
                            found="absent", expected=str(system.sysfs),
                            hint="the running kernel needs CONFIG_LIVEPATCH=y")


def tool(command: str) -> str:
    """The path of insmod/rmmod/systemctl, or a clear error naming the package."""
    found = shutil.which(command)
    if found is None:
        package = "systemd" if command.endswith("systemctl") else "kmod"
        raise ManageError(f"{command} not found", hint=f"apt-get install {package} (or dnf install {package})")
    return found


def check_loadable(system: System, info: ModuleInfo) -> None:
    """Everything that can be known about ``kpatch load`` before insmod."""
    refuse_non_livepatch(info)
    refuse_other_release(info, system.release)
    refuse_without_livepatch(system)
    refuse_non_root(system, "load")
    tool(system.insmod)
