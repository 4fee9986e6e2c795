"""Debian packages fetched once into a cache and unpacked there (no install).

``apt-get download`` fetches a ``.deb`` by name and exact version from the
machine's configured archive; ``dpkg-deb -x`` unpacks it into a directory.
Several packages can share one directory, which a set of packages with
relative symlinks between them needs (Debian's kernel headers point into
``linux-kbuild-*``).  Everything lands under ``~/.cache/pykpatch/debian``
(beside the lab's kernels; ``PYKPATCH_LAB_CACHE`` moves both), and a
directory is trusted only once its stamp is written, so an interrupted
fetch is redone, never used.

``debian_kernel`` uses this for Debian's own 6.1 kernel: the
``linux-image-*`` package built from the same source version as the
installed ``linux-source-6.1`` (the lab's source), with its headers and
kbuild scripts so that modules can be built against it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pykpatch.distro.debian import Package, download
from pykpatch.errors import DistroError, LabError
from pykpatch.lab.cache import cache_root, locked, read_stamp, remove_tree, write_stamp
from pykpatch.lab.logrun import run_logged
from pykpatch.lab.source import find_source

UNPACKED_STAMP = "unpacked.json"
# Debian's image metapackage: one version per source upload, depending on the exact image.
IMAGE_METAPACKAGE = "linux-image-amd64"


def debian_cache_root() -> Path:
    """``~/.cache/pykpatch/distro/debian`` (next to the lab's ``lab/``): the distribution provider's cache too.

    The lab's guest kernel and kpatch-build's distro route fetch the same
    packages (the image, the headers): one cache, one download.
    """
    return cache_root().parent / "distro" / "debian"


def _require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise LabError(f"cannot fetch Debian packages: missing {', '.join(missing)}",
                       hint="this needs a Debian (or derived) host with apt and dpkg")


def apt_show(name: str) -> list[dict[str, str]]:
    """Every version of ``name`` in the local apt index, as field dicts (``apt-cache show``)."""
    _require_tools("apt-cache")
    proc = subprocess.run(["apt-cache", "show", name], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        return []
    return parse_stanzas(proc.stdout)


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """Debian control stanzas (blank-line separated ``Field: value`` blocks).  Pure."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, ""
        elif line[0] in " \t" and last:
            current[last] += "\n" + line.strip()
        elif ":" in line:
            last, _, value = line.partition(":")
            current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def fetch(packages: Sequence[Package], dest: Path) -> Path:
    """Unpack ``packages`` together into ``dest`` (cached: done once per set of versions).

    The .debs are kept in ``dest``'s parent's ``debs/`` directory, so a
    second set that shares a package does not download it again.
    """
    want = sorted(p.spec for p in packages)
    stamp = dest / UNPACKED_STAMP
    data = read_stamp(stamp)
    if data is not None and data.get("packages") == want:
        return dest
    with locked(dest.parent):
        data = read_stamp(stamp)
        if data is not None and data.get("packages") == want:
            return dest
        _require_tools("dpkg-deb")
        debs = dest.parent / "debs"
        started = time.monotonic()
        try:
            files = [download(p, debs) for p in packages]
        except DistroError as err:
            raise LabError(err.message, hint=err.hint) from None
        remove_tree(dest)
        dest.mkdir(parents=True)
        for deb in files:
            run_logged(["dpkg-deb", "-x", str(deb), str(dest)], dest, dest.parent / f"{dest.name}.log",
                       what=f"dpkg-deb -x {deb.name}")
        write_stamp(stamp, {"packages": want, "seconds": round(time.monotonic() - started, 1)})
    return dest


@dataclass(frozen=True)
class DebianKernel:
    """Debian's kernel image with its modules and headers, unpacked in the cache.

    ``vmlinuz`` boots under QEMU (it needs an initramfs for a disk root:
    virtio and ext4 are modules); ``headers`` is a kbuild tree for
    ``make -C headers M=DIR`` (Debian's ``.kernelvariables`` select gcc-12).
    """

    release: str            # 6.1.0-57-amd64
    version: str            # 6.1.192-3, the source package version
    root: Path

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.release

    @property
    def headers(self) -> Path:
        return self.root / "usr" / "src" / f"linux-headers-{self.release}"


_IMAGE_DEP = re.compile(r"^(linux-image-(\d+\.\d+\.\d+-\d+)-([a-z0-9]+))\s*\(=\s*([^)]+)\)")


def image_for_version(version: str, stanzas: Sequence[dict[str, str]]) -> Package:
    """The image package of the metapackage stanza whose version is ``version``.  Pure."""
    for stanza in stanzas:
        if stanza.get("Version") != version:
            continue
        for dep in stanza.get("Depends", "").split(","):
            m = _IMAGE_DEP.match(dep.strip())
            if m:
                return Package(m.group(1), m.group(4).strip())
    have = ", ".join(s.get("Version", "?") for s in stanzas) or "none"
    raise LabError(f"no {IMAGE_METAPACKAGE} {version} in the apt index (it has: {have})",
                   hint="apt-get update; the image must come from the same source version as linux-source")


def kernel_packages(image: Package) -> list[Package]:
    """The image and what building modules against it needs (headers, common headers, kbuild)."""
    m = _IMAGE_DEP.match(f"{image.name} (= {image.version})")
    if m is None:
        raise LabError(f"{image.name} does not look like a Debian kernel image package")
    release, abi = image.name.removeprefix("linux-image-"), m.group(2)
    series = ".".join(abi.split(".")[:2])
    return [image, Package(f"linux-headers-{release}", image.version),
            Package(f"linux-headers-{abi}-common", image.version),
            Package(f"linux-kbuild-{series}", image.version)]


def relocate_headers(kernel: DebianKernel) -> None:
    """Point the flavour's headers Makefile at the unpacked common headers.

    Debian's ``linux-headers-RELEASE/Makefile`` is a single ``include
    /usr/src/linux-headers-ABI-common/Makefile``: an absolute path, which is
    only right once the package is installed.
    """
    makefile = kernel.headers / "Makefile"
    text = makefile.read_text()
    fixed = re.sub(r"^include \S*/usr/src/", f"include {kernel.root}/usr/src/", text, flags=re.M)
    if fixed != text:
        makefile.write_text(fixed)


def debian_kernel(source_version: str | None = None, root: Path | None = None) -> DebianKernel:
    """Debian's kernel built from the lab's source version, fetched once into the cache."""
    version = source_version or find_source().version
    image = image_for_version(version, apt_show(IMAGE_METAPACKAGE))
    dest = (root or debian_cache_root()) / f"{image.name}_{image.version}"
    fetch(kernel_packages(image), dest)
    kernel = DebianKernel(image.name.removeprefix("linux-image-"), version, dest)
    relocate_headers(kernel)
    for needed in (kernel.vmlinuz, kernel.modules_dir, kernel.headers / "Module.symvers"):
        if not needed.exists():
            raise LabError(f"{needed} missing after unpacking {image.spec}")
    return kernel


# What mounting an ext4 root on a virtio disk needs in Debian's kernel (all modules there).
DISK_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")


def modules_with_dependencies(kernel: DebianKernel, names: Sequence[str] = DISK_MODULES) -> list[Path]:
    """The .ko files of ``names`` and of what they depend on (.modinfo ``depends``), dependencies first.

    Debian's image package ships no modules.dep (depmod makes it at
    install), so the dependencies are read from each module itself.
    """
    from pykpatch.manage.modfile import module_info, module_name

    index = {module_name(p.name): p for p in kernel.modules_dir.rglob("*.ko")}
    ordered: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        path = index.get(name)
        if path is None:
            raise LabError(f"module {name} not found in {kernel.modules_dir}")
        for dep in filter(None, module_info(path).modinfo.get("depends", "").split(",")):
            visit(module_name(dep))
        ordered.append(path)

    for name in names:
        visit(module_name(name))
    return ordered
