"""A static busybox of another architecture, for the initramfs of a cross lab guest.

A ppc64le or s390x guest needs a userspace of its own architecture, and
Debian has one ready: ``busybox-static`` of ``ppc64el``/``s390x``.  It is
fetched with apt, through the machine's own sources and keys (so the
archive's signatures are checked as for any package), but with a private
apt state in the cache: the host is not given a foreign architecture
(``dpkg --add-architecture``) and its package lists are not touched.  The
first fetch costs a few seconds (that architecture's package lists, then
one ~1 MB package); later ones return the cached binary.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from pathlib import Path

from pykpatch.arch import arch_named
from pykpatch.errors import LabError
from pykpatch.lab.cache import locked, read_stamp, remove_tree, write_stamp
from pykpatch.lab.debian import debian_cache_root
from pykpatch.lab.machines import LabMachine
from pykpatch.lab.prereqs import is_static_elf

PACKAGE = "busybox-static"
STAMP = "busybox.json"


def apt_options(apt_dir: Path, deb_arch: str) -> list[str]:
    """apt-get options for a private state of ``deb_arch`` under ``apt_dir``.  Pure.

    Sources, keys and proxies stay the machine's (``Dir::Etc`` untouched);
    lists, caches and the dpkg status are private (an empty status: nothing
    of that architecture is installed).
    """
    return [
        "-q",
        "-o", f"Dir::State={apt_dir / 'state'}",
        "-o", f"Dir::State::status={apt_dir / 'status'}",
        "-o", f"Dir::Cache={apt_dir / 'cache'}",
        "-o", f"APT::Architecture={deb_arch}",
        "-o", f"APT::Architectures={deb_arch}",
        "-o", "Acquire::Languages=none",
        # The private directories are root's (or the user's); apt's _apt user could not write them.
        "-o", "APT::Sandbox::User=root",
    ]


def foreign_busybox(machine: LabMachine, root: Path | None = None) -> Path:
    """The static busybox of ``machine``'s architecture, fetched once into the cache."""
    if machine.busybox_arch is None:
        raise LabError(f"the lab's {machine.arch} guest uses the host's busybox, not a fetched one")
    deb_arch = machine.busybox_arch
    base = (root or debian_cache_root()) / "foreign" / deb_arch
    found = _cached(base)
    if found is not None:
        return found
    with locked(base):
        found = _cached(base)
        if found is not None:
            return found
        return _fetch(base, machine, deb_arch)


def _cached(base: Path) -> Path | None:
    data = read_stamp(base / STAMP)
    if data is None:
        return None
    path = base / "root" / "bin" / "busybox"
    return path if path.is_file() else None


def _fetch(base: Path, machine: LabMachine, deb_arch: str) -> Path:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise LabError(f"cannot fetch {deb_arch}'s busybox-static: {tool} is missing",
                           hint="the cross lab guests need a Debian (or derived) host with apt")
    started = time.monotonic()
    apt_dir = base / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "status").touch()
    options = apt_options(apt_dir, deb_arch)
    _apt(["apt-get", *options, "update"], base, f"apt-get update for {deb_arch}")
    staging = base / "download"
    remove_tree(staging)
    staging.mkdir()
    _apt(["apt-get", *options, "download", PACKAGE], staging, f"apt-get download {PACKAGE}:{deb_arch}")
    debs = sorted(staging.glob(f"{PACKAGE}_*_{deb_arch}.deb"))
    if len(debs) != 1:
        raise LabError(f"apt-get download {PACKAGE} for {deb_arch} gave {len(debs)} packages, not one")
    unpacked = base / "root"
    remove_tree(unpacked)
    proc = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], capture_output=True, text=True,
                          errors="replace", stdin=subprocess.DEVNULL)
    busybox = unpacked / "bin" / "busybox"
    if proc.returncode != 0 or not busybox.is_file():
        raise LabError(f"cannot unpack {debs[0].name}: {(proc.stderr.strip().splitlines() or ['no bin/busybox'])[-1]}")
    _require_machine(busybox, machine)
    write_stamp(base / STAMP, {"deb": debs[0].name, "seconds": round(time.monotonic() - started, 1)})
    return busybox


def _apt(cmd: list[str], cwd: Path, what: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise LabError(f"{what} failed (exit {proc.returncode}): {detail}",
                       hint="is Debian's archive reachable from this machine (apt's sources.list)?")


def _require_machine(busybox: Path, machine: LabMachine) -> None:
    """The fetched binary must be static and of the machine's ``e_machine`` and byte order."""
    arch = arch_named(machine.arch)
    head = busybox.read_bytes()[:20]
    endian = ">" if head[5:6] == b"\x02" else "<"
    e_machine = struct.unpack_from(endian + "H", head, 18)[0] if len(head) == 20 else -1
    if arch is None or e_machine != arch.machine or (endian == ">") != arch.big_endian:
        raise LabError(f"{busybox} is not a {machine.arch} executable (e_machine {e_machine})")
    if not is_static_elf(busybox):
        raise LabError(f"{busybox} is dynamically linked: the initramfs has no libc")
