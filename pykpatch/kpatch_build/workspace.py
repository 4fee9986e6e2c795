"""Where kpatch-build keeps what belongs to one kernel tree: CACHEDIR/trees/ID/.

Everything a run needs to undo or reuse lives here, one directory per tree
(``ID`` is derived from the tree's real path), so two builds of different
trees never see each other's journal, lock or log, even with one shared
``CACHEDIR`` (default ``~/.kpatch``, as kpatch-build)::

    CACHEDIR/                     0700, must be the user's own
      trees/ID/                   0700
        tree                      the tree's path (for people)
        lock                      flock: one run per tree per cache
        build.log                 the last run's log (error messages name it)
        journal/                  the tree journal of the running (or killed) run
        scratch-XXXX/             objects, diff outputs, module of a run
        original-build.json       the cached original build's stamp
        struct-sizes.json         probed special-section struct sizes

Two runs on the same tree with different caches are kept apart by a
``flock`` on the tree directory itself (nothing is created in the tree).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pykpatch.errors import CacheError, TreeError
from pykpatch.safeio import atomic_write_text, ensure_private_dir, exclusive_lock, lock_holder


def default_cachedir(environ: dict[str, str] | None = None) -> Path:
    """``$CACHEDIR`` (kpatch-build's variable), else ``~/.kpatch``; read when a run starts, not at import."""
    env = os.environ if environ is None else environ
    value = env.get("CACHEDIR")
    return Path(value) if value else Path.home() / ".kpatch"


def tree_id(tree: Path) -> str:
    return hashlib.sha256(str(tree.resolve()).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TreeWorkspace:
    """The per-tree directory of the cache (see the module docstring)."""

    cachedir: Path
    tree: Path

    @property
    def root(self) -> Path:
        return self.cachedir / "trees" / tree_id(self.tree)

    @property
    def log(self) -> Path:
        return self.root / "build.log"

    @property
    def journal_dir(self) -> Path:
        return self.root / "journal"

    @property
    def stamp(self) -> Path:
        return self.root / "original-build.json"

    @property
    def struct_sizes(self) -> Path:
        return self.root / "struct-sizes.json"

    def create(self) -> TreeWorkspace:
        """Create (or check) the private directories; raises ``CacheError``."""
        ensure_private_dir(self.cachedir, "cache directory")
        ensure_private_dir(self.cachedir / "trees", "cache directory")
        ensure_private_dir(self.root, "cache directory")
        ensure_private_dir(self.journal_dir, "journal directory")
        try:
            atomic_write_text(self.root / "tree", f"{self.tree.resolve()}\n", mode=0o600)
        except OSError as err:
            raise CacheError(f"{self.root}: cannot write: {err.strerror or err}") from None
        return self

    def new_scratch(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="scratch-", dir=self.root))

    @contextlib.contextmanager
    def locked(self, on_wait: Callable[[str], None]) -> Iterator[None]:
        """One run per tree: the cache's lock, then a flock on the tree directory itself."""
        with exclusive_lock(self.root / "lock", on_wait, f"{self.tree} (cache {self.cachedir})"), \
                tree_directory_lock(self.tree, on_wait):
            yield


@contextlib.contextmanager
def tree_directory_lock(tree: Path, on_wait: Callable[[str], None]) -> Iterator[None]:
    """flock the tree directory: runs with different caches must not build one tree at once."""
    try:
        fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise TreeError(f"{tree}: cannot open the kernel tree: {err.strerror or err}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(fd) or "another process"
            on_wait(f"waiting for {holder}, which is building in {tree}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
