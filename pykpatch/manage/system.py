"""Where the live system's state is, and the few things ``kpatch`` asks of it.

Every path and tool ``kpatch`` touches is a field here, so that the whole
logic runs against a scratch directory in the tests (``System.under(tmp)``)
and against ``/`` on a real machine.  Time is a field too (``clock`` and
``sleep``): the transition logic waits for the kernel, and a test drives
that clock instead of sleeping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SYSFS_LIVEPATCH = Path("/sys/kernel/livepatch")
SYS_MODULE = Path("/sys/module")
PROC = Path("/proc")
INSTALL_ROOT = Path("/var/lib/kpatch")
UNIT_DIR = Path("/etc/systemd/system")
LIBEXEC_DIR = Path("/usr/local/libexec/kpatch")
SYSTEMD_RUNTIME = Path("/run/systemd/system")


def _running_release() -> str:
    return os.uname().release


def _quiet(_message: str) -> None:
    """The default progress sink: library code prints nothing by itself."""


@dataclass
class System:
    """The machine ``kpatch`` acts on (paths overridable for tests).

    ``release`` is the running kernel's (``uname -r``), ``euid`` the
    caller's; ``say`` receives progress lines (the CLI prints them on
    stderr).  ``systemd_runtime`` exists only while systemd runs the
    machine: then a changed unit is followed by ``systemctl daemon-reload``.
    """

    sysfs: Path = SYSFS_LIVEPATCH
    sys_module: Path = SYS_MODULE
    proc: Path = PROC
    install_root: Path = INSTALL_ROOT
    unit_dir: Path = UNIT_DIR
    libexec_dir: Path = LIBEXEC_DIR
    systemd_runtime: Path = SYSTEMD_RUNTIME
    insmod: str = "insmod"
    rmmod: str = "rmmod"
    systemctl: str = "systemctl"
    release: str = field(default_factory=_running_release)
    euid: int = field(default_factory=os.geteuid)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    say: Callable[[str], None] = _quiet

    @classmethod
    def under(cls, root: Path, **overrides: object) -> System:
        """The same layout below ``root`` instead of ``/`` (a chroot, a test's scratch tree)."""
        def moved(path: Path) -> Path:
            return root / path.relative_to("/")

        paths = {name: moved(default) for name, default in (
            ("sysfs", SYSFS_LIVEPATCH), ("sys_module", SYS_MODULE), ("proc", PROC),
            ("install_root", INSTALL_ROOT), ("unit_dir", UNIT_DIR), ("libexec_dir", LIBEXEC_DIR),
            ("systemd_runtime", SYSTEMD_RUNTIME))}
        paths.update(overrides)  # type: ignore[arg-type]
        return cls(**paths)  # type: ignore[arg-type]


def read_value(path: Path) -> str:
    """A sysfs/procfs value, stripped; "" when the file is absent or unreadable."""
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""
