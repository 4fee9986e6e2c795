"""Debian's kernel packages: found installed, or fetched with apt into the cache (never installed).

For a release R (``6.1.0-57-amd64``) at image package version V (``6.1.192-3``):

==========================  ===================================================
``linux-image-R``           /boot/vmlinuz-R, /lib/modules/R/kernel/**.ko
``linux-image-R-dbg``       /usr/lib/debug/boot/vmlinux-R (vmlinux with symbols)
``linux-headers-R``         /usr/src/linux-headers-R/{.config, Module.symvers,
                            .kernelvariables}
``linux-source-X.Y``        /usr/src/linux-source-X.Y.tar.xz, at version V too
==========================  ===================================================

An installed package is used when its version is V; otherwise the package
``NAME=V`` is downloaded (``apt-get download``) into ``CACHE/debs`` and the
parts needed are unpacked into ``CACHE/R_V`` (``dpkg-deb``; from the 858 MB
-dbg package only vmlinux).  A piece is trusted only once its stamp is
written, so an interrupted fetch is redone.  The source tarball is checked
against the package's md5sums.  Versions must match exactly: a source of
another version builds other code, and the refusal names both.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pykpatch.distro.base import KernelArtifacts, Progress, series_of
from pykpatch.errors import DistroError
from pykpatch.safeio import atomic_write_text, ensure_private_dir, exclusive_lock

STAMP = ".complete"


@dataclass(frozen=True)
class Package:
    name: str
    version: str

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(cmd[0]) is None:
        raise DistroError(f"{cmd[0]} is needed to {what}", hint="this needs a Debian (or derived) system")
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)


def installed_version(name: str) -> str | None:
    proc = _run(["dpkg-query", "-W", "-f=${Status}\t${Version}", name], "ask dpkg what is installed")
    if proc.returncode != 0 or not proc.stdout.startswith("install ok installed"):
        return None
    return proc.stdout.split("\t", 1)[1].strip() or None


# linux-image-RELEASE; not the -dbg, -unsigned (the signed one is the same kernel) or meta packages.
IMAGE_PACKAGE_RE = re.compile(r"^linux-image-(\d+\.\d+[A-Za-z0-9.+~-]*?)(?<!-dbg)(?<!-unsigned)$")


def installed_kernel_releases() -> list[str]:
    """Releases of the installed ``linux-image-RELEASE`` packages (``dpkg-query``)."""
    proc = _run(["dpkg-query", "-W", "-f=${Package}\t${Status}\n", "linux-image-*"], "ask dpkg what is installed")
    releases: list[str] = []
    for line in proc.stdout.splitlines():
        name, _, status = line.partition("\t")
        m = IMAGE_PACKAGE_RE.match(name)
        if m and status.endswith(" installed") and m.group(1) not in releases:
            releases.append(m.group(1))
    return releases


def available_versions(name: str) -> list[str]:
    """Versions of ``name`` in apt's lists, newest first (``apt-cache madison``)."""
    proc = _run(["apt-cache", "madison", name], "read apt's package lists")
    versions: list[str] = []
    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 2 and parts[0] == name and parts[1] not in versions:
            versions.append(parts[1])
    return versions


def download(package: Package, debs: Path) -> Path:
    """The package's .deb in ``debs`` (downloaded once)."""
    found = sorted(debs.glob(f"{package.name}_{package.version.replace(':', '%3a')}_*.deb"))
    if found:
        return found[0]
    staging = debs / ".download"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, mode=0o700)
    proc = subprocess.run(["apt-get", "download", "-q", package.spec], cwd=staging, capture_output=True, text=True,
                          errors="replace", stdin=subprocess.DEVNULL)
    got = sorted(staging.glob("*.deb"))
    if proc.returncode != 0 or len(got) != 1:
        detail = (proc.stderr.strip().splitlines() or ["no .deb"])[-1]
        raise DistroError(f"apt-get download {package.spec} failed: {detail}",
                          hint="is the archive reachable and apt's list up to date (apt-get update)?")
    dest = debs / got[0].name
    got[0].replace(dest)
    shutil.rmtree(staging, ignore_errors=True)
    return dest


def unpack(deb: Path, dest: Path, members: list[str] | None = None) -> None:
    """``dpkg-deb -x`` (all of it), or only ``members`` (``./path`` names) through tar, stopping once found."""
    dest.mkdir(parents=True, exist_ok=True)
    if members is None:
        proc = _run(["dpkg-deb", "-x", str(deb), str(dest)], "unpack Debian packages")
    else:
        cmd = f"dpkg-deb --fsys-tarfile {_q(deb)} | tar -x --occurrence -C {_q(dest)} " + " ".join(map(_q, members))
        proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DistroError(f"cannot unpack {deb.name}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")


def _q(path: object) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


def package_md5sums(deb: Path | None, name: str) -> dict[str, str]:
    """path (without leading /) -> md5 of an installed package, or of a .deb's control data."""
    if deb is None:
        text = Path(f"/var/lib/dpkg/info/{name}.md5sums").read_text() if Path(
            f"/var/lib/dpkg/info/{name}.md5sums").is_file() else ""
    else:
        text = _run(["dpkg-deb", "-I", str(deb), "md5sums"], "read a package's checksums").stdout
    sums = {}
    for line in text.splitlines():
        digest, _, path = line.partition("  ")
        if path:
            sums[path.strip()] = digest.strip()
    return sums


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Debian builds its rt flavours from linux-source plus the PREEMPT_RT patch series of the linux source
# package (debian/patches-rt), which linux-source-X.Y does not ship.  PREEMPT_RT itself went upstream in
# 6.12, but Debian's 6.12 rt still carries part of the series (measured on 6.12.118+deb12-rt-amd64: its
# config asks for PREEMPT_NONE and PREEMPT_VOLUNTARY, which the preemption choice of the plain sources
# does not offer with PREEMPT_RT; lazy preemption, in that series, went upstream in 6.13).
RT_UPSTREAM_SINCE = (6, 13)


def refuse_unshipped_featureset(release: str, series: str) -> None:
    """An rt kernel of a series before 6.13 cannot be rebuilt from linux-source: say so before any download.

    Found on 6.1.0-57-rt-amd64: its objects need the PREEMPT_RT patches, and
    without them its config asked for 7 options the plain sources lack; on
    6.12.118+deb12-rt-amd64, 2 options.  Later series are left to the
    config check (it names the options).
    """
    if "-rt-" not in f"-{release}-":
        return
    major, minor = (int(x) for x in series.split(".")[:2])
    if (major, minor) < RT_UPSTREAM_SINCE:
        raise DistroError(
            f"{release} is Debian's PREEMPT_RT flavour: it is built from linux-source-{series} plus the "
            f"PREEMPT_RT patches of Debian's linux source package, which linux-source-{series} does not ship",
            hint="build it from the patched tree: apt-get source linux, apply debian/patches-rt, then "
                 f"kpatch-build -s TREE -c /boot/config-{release} -v VMLINUX")


class DebianProvider:
    """See the module docstring."""

    name = "debian"

    def __init__(self, cache: Path, root: Path = Path("/")) -> None:
        self.cache = cache
        self.root = root

    # -- the one question ---------------------------------------------------------
    def artifacts(self, release: str, progress: Progress, vmlinux: bool = True) -> KernelArtifacts:
        series = series_of(release)
        if series is None:
            raise DistroError(f"{release!r} is not a kernel release (like 6.1.0-57-amd64)")
        refuse_unshipped_featureset(release, series)
        ensure_private_dir(self.cache, "distribution cache")
        image, version = image_package(release)
        if version is None:
            raise DistroError(f"no package {image} is installed or in apt's lists",
                              hint="check the release (uname -r of the target), or apt-get update")
        with exclusive_lock(self.cache / ".lock", progress, "the distribution cache"):
            return self._artifacts(release, series, version, progress, vmlinux)

    def _artifacts(self, release: str, series: str, version: str, progress: Progress,
                   want_vmlinux: bool) -> KernelArtifacts:
        source = self.source_tarball(series, version, release, progress)
        headers = self.headers(release, version, progress)
        vmlinux = self.vmlinux(release, version, progress) if want_vmlinux else None
        modules, vmlinuz = self.image(release, version, progress)
        kernelvariables = headers / ".kernelvariables"
        return KernelArtifacts("debian", release, version, source, headers / ".config", headers / "Module.symvers",
                               vmlinux, modules, kernelvariables if kernelvariables.is_file() else None, vmlinuz,
                               lambda path: self.module_symbols(release, version, path, progress))

    # -- each piece -----------------------------------------------------------------
    def _piece(self, release: str, version: str, kind: str) -> Path:
        return self.cache / f"{release}_{version}" / kind

    def _fetch(self, package: Package, dest: Path, members: list[str] | None, progress: Progress) -> Path:
        if (dest / STAMP).is_file():
            return dest
        debs = self.cache / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        progress(f"fetching {package.spec} (apt-get download into {debs})")
        deb = download(package, debs)
        progress(f"unpacking {deb.name}" + (f": {', '.join(m.lstrip('./') for m in members)}" if members else ""))
        shutil.rmtree(dest, ignore_errors=True)
        unpack(deb, dest, members)
        atomic_write_text(dest / STAMP, json.dumps({"package": package.spec, "deb": deb.name}), mode=0o600)
        return dest

    def source_tarball(self, series: str, version: str, release: str, progress: Progress) -> Path:
        name = f"linux-source-{series}"
        rel = f"usr/src/{name}.tar.xz"
        have = installed_version(name)
        if have == version:
            tarball = self.root / rel
            self._verify_tarball(tarball, package_md5sums(None, name).get(rel), name)
            return tarball
        if version not in available_versions(name):
            found = f"{name} {have} is installed" if have else f"{name} is not installed"
            raise DistroError(
                f"the kernel {release} is built from {name} {version}, but {found} and apt's lists "
                f"have no {name} {version}",
                hint=f"install {name}={version} (or give the sources with -s SRCDIR)")
        package = Package(name, version)
        dest = self._fetch(package, self.cache / "sources" / f"{name}_{version}", [f"./{rel}"], progress)
        tarball = dest / rel
        deb = download(package, self.cache / "debs")
        self._verify_tarball(tarball, package_md5sums(deb, name).get(rel), name)
        return tarball

    @staticmethod
    def _verify_tarball(tarball: Path, expected: str | None, name: str) -> None:
        if not tarball.is_file():
            raise DistroError(f"{tarball} is missing although {name} is installed", hint=f"reinstall {name}")
        if expected is not None and md5_of(tarball) != expected:
            raise DistroError(f"{tarball} does not match the checksum of package {name}",
                              hint=f"reinstall {name}: the tarball was changed or is damaged")

    def headers(self, release: str, version: str, progress: Progress) -> Path:
        name = f"linux-headers-{release}"
        installed = self.root / "usr" / "src" / name
        if installed_version(name) == version and (installed / ".config").is_file():
            return installed
        dest = self._fetch(Package(name, version), self._piece(release, version, "headers"),
                           [f"./usr/src/{name}/.config", f"./usr/src/{name}/Module.symvers",
                            f"./usr/src/{name}/.kernelvariables"], progress)
        return dest / "usr" / "src" / name

    def vmlinux(self, release: str, version: str, progress: Progress) -> Path:
        rel = f"usr/lib/debug/boot/vmlinux-{release}"
        for name in (f"linux-image-{release}-dbg", f"linux-image-{release}-unsigned-dbg"):
            if installed_version(name) == version and (self.root / rel).is_file():
                return self.root / rel
        for name in (f"linux-image-{release}-dbg", f"linux-image-{release}-unsigned-dbg"):
            if version in available_versions(name):
                dest = self._fetch(Package(name, version), self._piece(release, version, "dbg"), [f"./{rel}"],
                                   progress)
                return dest / rel
        raise DistroError(f"no linux-image-{release}-dbg {version} (the vmlinux with symbols) in apt's lists",
                          hint="add the archive that carries -dbg packages, or give the vmlinux with -v VMLINUX")

    def module_symbols(self, release: str, version: str, module_path: str, progress: Progress) -> Path | None:
        """A module's .ko with its full symbol table (FILE symbols included), from the -dbg package.

        The image package's modules are stripped of debug information, and
        ``strip --strip-debug`` drops STT_FILE symbols with it: the lookup of
        a module's statics by FILE block (kpatch's find_local_syms) needs
        the -dbg package's copy, of the very same build.  Extracted one
        module at a time (tar stops once it has it), cached.
        """
        rel = f"usr/lib/debug/lib/modules/{release}/kernel/{module_path}.ko"
        for name in (f"linux-image-{release}-dbg", f"linux-image-{release}-unsigned-dbg"):
            if installed_version(name) == version and (self.root / rel).is_file():
                return self.root / rel
        dest = self._piece(release, version, "dbg-modules") / module_path.replace("/", "__")
        if (dest / STAMP).is_file():
            return dest / rel if (dest / rel).is_file() else None
        with exclusive_lock(self.cache / ".lock", progress, "the distribution cache"):
            for name in (f"linux-image-{release}-dbg", f"linux-image-{release}-unsigned-dbg"):
                if version in available_versions(name):
                    try:
                        self._fetch(Package(name, version), dest, [f"./{rel}"], progress)
                    except DistroError:
                        return None
                    return dest / rel if (dest / rel).is_file() else None
        return None

    def image(self, release: str, version: str, progress: Progress) -> tuple[Path, Path | None]:
        name, _ = image_package(release)
        modules = self.root / "lib" / "modules" / release
        if installed_version(name) == version and (modules / "kernel").is_dir():
            vmlinuz = self.root / "boot" / f"vmlinuz-{release}"
            return modules, vmlinuz if vmlinuz.is_file() else None
        dest = self._fetch(Package(name, version), self._piece(release, version, "image"), None, progress)
        vmlinuz = dest / "boot" / f"vmlinuz-{release}"
        return dest / "lib" / "modules" / release, vmlinuz if vmlinuz.is_file() else None


def image_package(release: str) -> tuple[str, str | None]:
    """The package with ``release``'s vmlinuz and modules, and its version (None: none installed or listed).

    The signed ``linux-image-R``, else ``linux-image-R-unsigned`` (the same
    kernel and modules, without the Secure Boot signatures): the signed
    packages come from another source package that can lag behind (on
    2026-12-02 bookworm-security had 6.12.118's images only unsigned).
    """
    for name in (f"linux-image-{release}", f"linux-image-{release}-unsigned"):
        version = installed_version(name) or next(iter(available_versions(name)), None)
        if version is not None:
            return name, version
    return f"linux-image-{release}", None


def release_built_from(source_package: str, flavour: str = "amd64") -> str:
    """The release of the ``flavour`` kernel built from the installed ``linux-source-X.Y``, e.g. 6.1.0-57-amd64.

    Debian's ``linux-image-FLAVOUR`` metapackage of the same version depends
    on exactly that image (``linux-image-6.1.0-57-amd64 (= 6.1.192-3)``).
    The metapackage can lag behind: on 2026-12-02 bookworm-security had
    linux-source-6.12 and its images at 6.12.118-1~deb12u1 but the
    ``linux-image-6.12-FLAVOUR`` metapackages still at 6.12.117.  Then the
    images themselves are asked for by name and version.
    """
    version = installed_version(source_package)
    if version is None:
        raise DistroError(f"{source_package} is not installed", hint=f"apt-get install {source_package}")
    series = source_package.removeprefix("linux-source-")
    # Debian 12's own series has linux-image-FLAVOUR; a backported series linux-image-X.Y-FLAVOUR.
    for meta in (f"linux-image-{series}-{flavour}", f"linux-image-{flavour}"):
        proc = _run(["apt-cache", "show", f"{meta}={version}"], "read apt's package lists")
        m = re.search(r"^Depends:.*?\blinux-image-(\S+?)(?:-unsigned)? \(= " + re.escape(version) + r"\)",
                      proc.stdout, re.MULTILINE)
        if m is not None:
            return m.group(1)
    found = images_of_version(series, flavour, version)
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(found)})"
        raise DistroError(f"apt's lists have {what} linux-image-*-{flavour} {version} built from {source_package}",
                          hint="apt-get update")
    return found[0]


def images_of_version(series: str, flavour: str, version: str) -> list[str]:
    """Releases ``X.Y.*-FLAVOUR`` whose image package (signed or ``-unsigned``) has exactly ``version``."""
    names = _run(["apt-cache", "search", "--names-only", f"^linux-image-{re.escape(series)}[.-].*-{flavour}"],
                 "read apt's package lists").stdout
    shape = re.compile(rf"^linux-image-({re.escape(series)}\.[\w.+~]+(?:-\d+)?-{re.escape(flavour)})(?:-unsigned)?$")
    candidates = sorted({line.split(" - ", 1)[0].strip() for line in names.splitlines()
                         if shape.match(line.split(" - ", 1)[0].strip())})
    if not candidates:
        return []
    table = _run(["apt-cache", "madison", *candidates], "read apt's package lists").stdout
    releases = set()
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("|")]
        match = shape.match(cells[0]) if len(cells) >= 2 else None
        if match and cells[1] == version:
            releases.add(match.group(1))
    return sorted(releases)
