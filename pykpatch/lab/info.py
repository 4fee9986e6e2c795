"""What the lab cache holds, for ``pykpatch lab info`` and for people.

Reads stamps only (no directory walks over multi-GB trees), so it answers
instantly even while a build runs.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from pykpatch.lab.build import KernelBuild, load_build
from pykpatch.lab.cache import BUILD_LOG, CONFIG_STAMP, LOCK_FILE, TREE_DIR, UNPACK_STAMP, cache_root, read_stamp


@dataclass(frozen=True)
class CacheEntry:
    """One cache directory and how far its build got."""

    key: str
    path: Path
    state: str  # "built", "building", "configured", "unpacked" or "incomplete"
    build: KernelBuild | None
    build_log: Path | None


def list_cache(root: Path | None = None) -> list[CacheEntry]:
    """Every entry under the cache root, newest-named first."""
    base = root or cache_root()
    if not base.is_dir():
        return []
    entries = []
    for path in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True):
        build = load_build(path)
        if build is not None:
            state = "built"
        elif _busy(path):
            state = "building"
        elif read_stamp(path / CONFIG_STAMP) is not None:
            state = "configured"
        elif read_stamp(path / UNPACK_STAMP) is not None and (path / TREE_DIR).is_dir():
            state = "unpacked"
        else:
            state = "incomplete"
        log = path / BUILD_LOG
        entries.append(CacheEntry(path.name, path, state, build, log if log.is_file() else None))
    return entries


def _busy(path: Path) -> bool:
    """True if another process holds the entry's lock (i.e. is building it)."""
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
