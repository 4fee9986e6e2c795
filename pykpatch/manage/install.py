"""``kpatch install`` / ``uninstall``: patches that come back after a reboot.

Layout (all paths are ``System`` fields)::

    /var/lib/kpatch/RELEASE/livepatch-fix.ko      the installed modules
    /var/lib/kpatch/RELEASE/load-order            "FILE NAME" per line, oldest first
    /usr/local/libexec/kpatch/kpatch-load-installed   the boot-time loader (POSIX sh)
    /etc/systemd/system/kpatch.service            runs it early at boot
    /etc/systemd/system/sysinit.target.wants/kpatch.service -> ../kpatch.service

The first install writes the loader and the unit and enables the unit
(the same symlink ``systemctl enable kpatch`` makes, relative so that it
also holds in an image prepared offline); the last uninstall (no patch
left for any release) disables and removes them.  Reinstalling a file
moves it to the end of the load order: it is the newest patch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from pykpatch.errors import ManageError
from pykpatch.manage.checks import refuse_non_livepatch, refuse_other_release
from pykpatch.manage.modfile import module_info, module_name
from pykpatch.manage.system import System

ORDER_FILE = "load-order"
UNIT_NAME = "kpatch.service"
LOADER_NAME = "kpatch-load-installed"
WANTED_BY = "sysinit.target"


def _data(name: str) -> bytes:
    return resources.files("pykpatch").joinpath("data", name).read_bytes()


def _guarded(what: str, action: Callable[[], None]) -> None:
    """Run a file operation; an OSError becomes one line naming the path."""
    try:
        action()
    except OSError as err:
        where = err.filename or what
        raise ManageError(f"cannot {what}: {where}: {err.strerror}",
                          hint="kpatch install/uninstall write below /var/lib, /etc and /usr/local: run as root") \
            from None


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


def release_dir(system: System, release: str) -> Path:
    return system.install_root / release


def read_order(directory: Path) -> list[tuple[str, str]]:
    """(file, kernel name) pairs of a release's load-order, oldest first."""
    try:
        text = (directory / ORDER_FILE).read_text()
    except OSError:
        return []
    pairs = []
    for line in text.splitlines():
        words = line.split()
        if words:
            pairs.append((words[0], words[1] if len(words) > 1 else module_name(words[0])))
    return pairs


def installed_pairs(system: System, release: str) -> list[tuple[Path, str]]:
    """Installed modules for ``release`` in load order: listed ones first, then the rest by name.

    The same order the boot-time loader uses.
    """
    directory = release_dir(system, release)
    listed = [(directory / f, n) for f, n in read_order(directory) if (directory / f).is_file()]
    seen = {p.name for p, _ in listed}
    rest = [(p, module_name(p.name)) for p in sorted(directory.glob("*.ko")) if p.name not in seen]
    return listed + rest


def installed(system: System, release: str) -> list[Path]:
    return [p for p, _ in installed_pairs(system, release)]


def installed_releases(system: System) -> list[str]:
    if not system.install_root.is_dir():
        return []
    return sorted(d.name for d in system.install_root.iterdir() if d.is_dir() and any(d.glob("*.ko")))


def _write_order(directory: Path, pairs: list[tuple[str, str]]) -> None:
    _write_atomic(directory / ORDER_FILE, "".join(f"{f} {n}\n" for f, n in pairs).encode())


def install(system: System, ko: Path, kernel_release: str) -> Path:
    """Copy a module where the boot-time loader (and ``kpatch load --all``) finds it."""
    if not ko.is_file():
        raise ManageError(f"{ko}: no such module file")
    info = module_info(ko)
    refuse_non_livepatch(info)
    whose = "the running kernel" if kernel_release == system.release else "the release to install for"
    refuse_other_release(info, kernel_release, whose)
    directory = release_dir(system, kernel_release)
    dest = directory / ko.name

    def copy() -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(ko, tmp)
        os.replace(tmp, dest)
        pairs = [(f, n) for f, n in read_order(directory) if f != ko.name]
        _write_order(directory, [*pairs, (ko.name, info.kernel_name)])

    _guarded(f"install {ko.name} into {directory}", copy)
    enable_boot_service(system)
    return dest


def uninstall(system: System, name: str, kernel_release: str) -> Path:
    """Remove an installed module (by file or kernel name); the last one takes the unit along."""
    want = module_name(name)
    directory = release_dir(system, kernel_release)
    for path, kname in installed_pairs(system, kernel_release):
        if want in (kname, module_name(path.name)):
            def remove(path: Path = path) -> None:
                path.unlink()
                _write_order(directory, [(f, n) for f, n in read_order(directory) if f != path.name])

            _guarded(f"uninstall {path.name}", remove)
            if not installed_releases(system):
                disable_boot_service(system)
            return path
    raise ManageError(f"{name} is not installed for kernel {kernel_release}",
                      hint="kpatch install --list shows what is installed")


def unit_text(system: System) -> bytes:
    text = _data(UNIT_NAME).decode()
    return (text.replace("@LOADER@", str(system.libexec_dir / LOADER_NAME))
                .replace("@INSTALL_ROOT@", str(system.install_root))).encode()


def wants_link(system: System) -> Path:
    return system.unit_dir / f"{WANTED_BY}.wants" / UNIT_NAME


def boot_service_enabled(system: System) -> bool:
    return wants_link(system).is_symlink() and (system.unit_dir / UNIT_NAME).is_file()


def enable_boot_service(system: System) -> None:
    """Write the loader and the unit (refreshed on every install) and enable the unit."""
    def write() -> None:
        _write_atomic(system.libexec_dir / LOADER_NAME, _data(LOADER_NAME), 0o755)
        _write_atomic(system.unit_dir / UNIT_NAME, unit_text(system))
        link = wants_link(system)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(Path("..") / UNIT_NAME)

    _guarded(f"enable {UNIT_NAME}", write)
    _daemon_reload(system)


def disable_boot_service(system: System) -> None:
    def remove() -> None:
        for path in (wants_link(system), system.unit_dir / UNIT_NAME, system.libexec_dir / LOADER_NAME):
            if path.is_symlink() or path.exists():
                path.unlink()

    _guarded(f"disable {UNIT_NAME}", remove)
    _daemon_reload(system)


def _daemon_reload(system: System) -> None:
    """Tell a running systemd that the unit changed (not needed for the next boot)."""
    if not system.systemd_runtime.is_dir():
        return
    systemctl = shutil.which(system.systemctl)
    if systemctl is None:
        system.say(f"{system.systemctl} not found: systemd learns of {UNIT_NAME} at the next boot")
        return
    proc = subprocess.run([systemctl, "daemon-reload"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        system.say(f"systemctl daemon-reload failed: {(proc.stderr or proc.stdout).strip()}")
