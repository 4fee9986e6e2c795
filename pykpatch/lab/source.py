"""The kernel source the lab builds: Debian's ``linux-source-6.1`` tarball.

Using the distro's source package (rather than a download) keeps the lab
offline and pins the exact version a distro kernel was built from, so the
lab's kernel and Debian's ``linux-image-6.1.0-*`` share code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pykpatch.errors import LabError
from pykpatch.lab.cache import TREE_DIR, UNPACK_STAMP, read_stamp, remove_tree, write_stamp

DEFAULT_PACKAGE = "linux-source-6.1"
DEFAULT_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
INSTALL_HINT = "apt-get install -y linux-source-6.1"


@dataclass(frozen=True)
class KernelSource:
    """A kernel source tarball and the version that identifies it in the cache."""

    tarball: Path
    version: str


def find_source(tarball: Path | None = None, package: str = DEFAULT_PACKAGE, series: str | None = None) -> KernelSource:
    """Locate the source tarball and work out its version.

    The version comes from dpkg when the tarball belongs to the installed
    package (so an upgraded package gives a new cache key); for a tarball
    from elsewhere it is derived from its name, size and mtime, which is
    enough to notice that it was replaced.
    """
    if series is not None:
        package = f"linux-source-{series}"
    path = Path(tarball) if tarball is not None else Path(f"/usr/src/{package}.tar.xz")
    if not path.is_file():
        raise LabError(f"kernel source tarball not found: {path}", hint=f"apt-get install -y {package}")
    version = None
    if tarball is None:
        version = _dpkg_version(package)
    if version is None:
        st = path.stat()
        stem = path.name.split(".tar")[0]
        version = f"{stem}-{st.st_size}-{int(st.st_mtime)}"
    return KernelSource(tarball=path, version=version)


def _dpkg_version(package: str) -> str | None:
    """Installed version of a Debian package, or None when dpkg cannot tell."""
    if shutil.which("dpkg-query") is None:
        return None
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}|${Version}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or "install ok installed" not in proc.stdout:
        return None
    return proc.stdout.rsplit("|", 1)[1].strip() or None


def unpack(source: KernelSource, key_dir: Path) -> Path:
    """Unpack the tarball into ``key_dir/tree`` unless a finished unpack exists.

    Unpacks into a temporary directory beside the target and renames it into
    place, then writes the stamp: a crash at any point leaves either nothing
    or an unstamped tree, which the next call removes and redoes.  Caller
    holds the cache lock.
    """
    tree = key_dir / TREE_DIR
    stamp = key_dir / UNPACK_STAMP
    if read_stamp(stamp) is not None and (tree / "Makefile").is_file():
        return tree
    # Anything here without a stamp is a leftover of an interrupted run.
    remove_tree(stamp)
    remove_tree(tree)
    for leftover in key_dir.glob(".unpack-*"):
        remove_tree(leftover)

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=key_dir))
    try:
        proc = subprocess.run(
            ["tar", "-xf", str(source.tarball), "-C", str(tmp)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise LabError(
                f"unpacking {source.tarball} failed (tar exited {proc.returncode}): "
                f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no message'}",
                hint="is xz-utils installed and is there free disk space?",
            )
        top = [p for p in tmp.iterdir()]
        if len(top) != 1 or not (top[0] / "Makefile").is_file():
            raise LabError(f"{source.tarball}: expected one top-level kernel directory, found {len(top)} entries")
        os.replace(top[0], tree)
    finally:
        remove_tree(tmp)
    write_stamp(
        stamp,
        {"tarball": str(source.tarball), "version": source.version, "seconds": round(time.monotonic() - started, 1)},
    )
    return tree
