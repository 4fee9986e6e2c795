"""Check, before starting minutes of work, that the tools the lab needs exist.

A kernel build that dies after four minutes because ``bc`` is missing wastes
the four minutes and buries the cause in a log; checking first names every
missing piece at once together with the Debian package that provides it.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from pykpatch.errors import LabError

BUSYBOX = Path("/bin/busybox")
QEMU = "qemu-system-x86_64"

# The lab's Debian packages, for .ci/run and for hints.
APT_PACKAGES = (
    "linux-source-6.1",
    "qemu-system-x86",
    "busybox-static",
    "build-essential",
    "bc",
    "bison",
    "flex",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "xz-utils",
    # the userspace guest (pykpatch.lab.guest): Debian root made with debootstrap, ext4 images, qcow2 disks
    "debootstrap",
    "e2fsprogs",
    "qemu-utils",
)

_PT_INTERP = 3


@dataclass(frozen=True)
class Missing:
    """One missing prerequisite and the Debian package that provides it."""

    what: str
    package: str


def _tool(name: str, package: str) -> list[Missing]:
    return [] if shutil.which(name) else [Missing(f"command `{name}`", package)]


def _file(path: str, package: str) -> list[Missing]:
    return [] if Path(path).exists() else [Missing(path, package)]


def missing_for_build(tarball: Path, cross_compile: str = "") -> list[Missing]:
    """Everything absent that ``make vmlinux bzImage modules`` will need.

    ``cross_compile``: Debian's prefix of a cross machine's compiler
    (``powerpc64le-linux-gnu-``), whose package is ``gcc-`` + the triplet.
    """
    found: list[Missing] = []
    if cross_compile:
        found += _tool(f"{cross_compile}gcc", f"gcc-{cross_compile.rstrip('-')}")
    for name, package in (
        ("make", "make"),
        ("gcc", "gcc"),
        ("ld", "binutils"),
        ("bc", "bc"),
        ("bison", "bison"),
        ("flex", "flex"),
        ("perl", "perl"),
        ("tar", "tar"),
        ("xz", "xz-utils"),
    ):
        found += _tool(name, package)
    found += _file("/usr/include/gelf.h", "libelf-dev")
    found += _file("/usr/include/openssl/opensslv.h", "libssl-dev")
    if not tarball.is_file():
        found.append(Missing(str(tarball), "linux-source-6.1"))
    return found


def missing_for_boot(busybox: Path = BUSYBOX, qemu: str = QEMU, qemu_package: str = "qemu-system-x86") -> list[Missing]:
    """Everything absent that booting a kernel with a lab initramfs needs (``qemu``: the machine's)."""
    found = _tool(qemu, qemu_package)
    if not busybox.is_file():
        found.append(Missing(str(busybox), "busybox-static"))
    elif not is_static_elf(busybox):
        # Debian's dynamic `busybox` package also installs /bin/busybox, but a
        # dynamic binary cannot run in an initramfs that has no libc.
        found.append(Missing(f"{busybox} is dynamically linked (needs the static build)", "busybox-static"))
    return found


def is_static_elf(path: Path) -> bool:
    """True if ``path`` is an ELF executable without a program interpreter.

    Reads the program headers directly (a few bytes) rather than running
    ``file``, which may not be installed.
    """
    try:
        with path.open("rb") as f:
            ident = f.read(64)
            if len(ident) < 64 or ident[:4] != b"\x7fELF":
                return False
            is64 = ident[4] == 2
            endian = "<" if ident[5] == 1 else ">"
            if is64:
                phoff, = struct.unpack_from(endian + "Q", ident, 32)
                phentsize, phnum = struct.unpack_from(endian + "HH", ident, 54)
            else:
                phoff, = struct.unpack_from(endian + "I", ident, 28)
                phentsize, phnum = struct.unpack_from(endian + "HH", ident, 42)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        p_type, = struct.unpack_from(endian + "I", table, i * phentsize)
        if p_type == _PT_INTERP:
            return False
    return True


def require(missing: list[Missing], purpose: str) -> None:
    """Raise one ``LabError`` listing every missing prerequisite, if any."""
    if not missing:
        return
    what = "; ".join(m.what for m in missing)
    packages = " ".join(sorted({m.package for m in missing}))
    raise LabError(
        f"cannot {purpose}: missing {what}",
        hint=f"apt-get install -y {packages}",
    )
