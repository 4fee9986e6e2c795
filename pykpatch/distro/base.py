"""What a distribution provides for one kernel release, and how a provider is chosen."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

Progress = Callable[[str], None]


@dataclass(frozen=True)
class KernelArtifacts:
    """One distribution kernel's pieces, on local disk (see the package docstring)."""

    distro: str
    release: str                # uname -r: 6.1.0-57-amd64
    version: str                # the image package's version: 6.1.192-3
    source_tarball: Path        # the kernel sources of exactly that version
    config: Path                # the .config the kernel was built with
    symvers: Path               # its Module.symvers
    vmlinux: Path | None        # vmlinux with its symbol table (None: not asked for)
    modules: Path               # directory whose kernel/... holds the shipped .ko files
    kernelvariables: Path | None = None  # Debian: CC, ARCH, KERNELRELEASE for kbuild
    vmlinuz: Path | None = None          # the bootable image (tests, trials)
    # A module's .ko with its full symbol table (the shipped ones may be stripped of FILE symbols), by kbuild path.
    module_symbols: Callable[[str], Path | None] | None = field(default=None, compare=False, repr=False)


class DistroProvider(Protocol):
    """A distribution's packages, as kpatch-build uses them."""

    name: str

    def artifacts(self, release: str, progress: Progress, vmlinux: bool = True) -> KernelArtifacts:
        """Find or fetch everything for ``release``; raise ``DistroError`` naming what is missing."""
        ...


def upstream_version(package_version: str) -> str:
    """'6.1.192-3' -> '6.1.192'; '1:6.12.117-1~deb12u1' -> '6.12.117' (epoch and distribution revision dropped)."""
    version = package_version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def series_of(release: str) -> str | None:
    """'6.1.0-57-amd64' -> '6.1'; '6.12.117+deb12-amd64' -> '6.12' (the linux-source-X.Y series)."""
    m = re.match(r"^(\d+)\.(\d+)", release)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def is_debian_host(root: Path = Path("/")) -> bool:
    return (root / "etc" / "debian_version").is_file() and (root / "usr" / "bin" / "dpkg").exists()


def provider_for_host(cache: Path) -> DistroProvider | None:
    """The provider of the distribution this machine runs, or None (then -s/-c/-v are needed)."""
    if is_debian_host():
        from pykpatch.distro.debian import DebianProvider

        return DebianProvider(cache)
    return None


def installed_releases() -> list[str]:
    """The kernel releases the package manager has installed (``--kernels installed``), in its order."""
    if is_debian_host():
        from pykpatch.distro.debian import installed_kernel_releases

        return installed_kernel_releases()
    return []
