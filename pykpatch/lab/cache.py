"""Where the lab keeps unpacked trees and built kernels, and how it names them.

A kernel build costs minutes, so it is cached under
``$XDG_CACHE_HOME/pykpatch/lab/<key>/`` (default ``~/.cache/pykpatch/lab``).
The key covers everything that changes the result: the kernel source version,
the config fragment, the make targets, the compiler, and ``LAYOUT_VERSION``
(bumped whenever this package changes what it stores).  Two rules keep the
cache honest:

* a directory is only trusted when its *stamp* exists, and stamps are written
  last (atomically), so an interrupted unpack or build is never mistaken for a
  finished one;
* work on one key happens under an exclusive ``flock``, so two test sessions
  (or a test and the CLI) never build into the same tree at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pykpatch.errors import LabError

# Bump when the cache layout or the meaning of a stamp changes.
LAYOUT_VERSION = 1

UNPACK_STAMP = "unpacked.stamp"
CONFIG_STAMP = "configured.stamp"
BUILD_STAMP = "built.json"
TREE_DIR = "tree"
SNAPSHOT_DIR = "snapshot"
BUILD_LOG = "build.log"
LOCK_FILE = ".lock"


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """Return the lab's cache root, honouring ``XDG_CACHE_HOME``.

    ``PYKPATCH_LAB_CACHE`` overrides it outright, so a CI job or a test can
    point the lab at a scratch disk without touching the user's cache.
    """
    env = os.environ if environ is None else environ
    explicit = env.get("PYKPATCH_LAB_CACHE")
    if explicit:
        return Path(explicit)
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path(env.get("HOME", str(Path.home()))) / ".cache"
    return base / "pykpatch" / "lab"


def cache_key(source_version: str, fragment: str, targets: tuple[str, ...], compiler: str) -> str:
    """Name the cache directory of one kernel build.

    Pure: the same inputs always give the same key.  The version stays
    readable in the name (so ``ls`` tells what is cached); the hash covers the
    rest.  The fragment is normalised to ignore comments and blank lines, so
    rewording a comment does not cost a rebuild.
    """
    digest = hashlib.sha256()
    for part in (
        f"layout={LAYOUT_VERSION}",
        f"version={source_version}",
        "fragment=" + "\n".join(_meaningful_lines(fragment)),
        "targets=" + " ".join(targets),
        f"compiler={compiler.strip()}",
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", source_version).strip("_") or "unknown"
    return f"linux-{slug}-{digest.hexdigest()[:12]}"


def _meaningful_lines(fragment: str) -> list[str]:
    """Config lines that matter: assignments and "is not set" markers."""
    out = []
    for raw in fragment.splitlines():
        line = raw.strip()
        if line.startswith("CONFIG_") or re.fullmatch(r"# CONFIG_\w+ is not set", line):
            out.append(line)
    return out


def write_stamp(path: Path, data: Mapping[str, Any]) -> None:
    """Write a stamp atomically (temp file + rename), so it is whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(dict(data), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_stamp(path: Path) -> dict[str, Any] | None:
    """Return a stamp's data, or None if it is absent or unreadable.

    An unreadable stamp counts as absent: the step it vouches for is redone.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_tree(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def locked(key_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on one cache entry for the duration.

    ``flock`` is released by the kernel when the process dies, so a killed
    build never leaves a stale lock behind.
    """
    try:
        key_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise LabError(f"cannot use lab cache {key_dir}: {err.strerror}") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
