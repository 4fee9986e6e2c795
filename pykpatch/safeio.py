"""Files written safely: outputs, caches, locks.

pykpatch often runs as root and writes into directories other users may
share (an output directory, a build cache).  Three rules follow:

- **Outputs are written whole or not at all**: into a temporary file created
  with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and an unpredictable name in the
  destination directory, flushed with ``fsync``, then renamed over the
  destination (and the directory fsynced).  A planted symlink at a
  predictable temporary name cannot make root write elsewhere, a crash
  never leaves half a module, and a reader never sees one.
- **Private directories are the user's own**: created ``0700``; an existing
  one that is a symlink, belongs to another user, or is writable by others
  is refused, because whoever controls it controls what pykpatch reads back
  (recorded patches, saved objects, locks).
- **Lock files live in private directories** and are opened with
  ``O_NOFOLLOW``: nobody else can plant them or hold them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from pykpatch.errors import CacheError, PykpatchError


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | bytearray | memoryview, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through an exclusive temporary file, fsync, rename (see module docstring).

    ``mode`` is applied as given (the umask of the caller is honoured by
    masking it in, as ``open`` would).  Raises ``OSError``; callers turn it
    into their typed error with the path.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def atomic_write_text(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    atomic_write(path, text.encode("utf-8"), mode)


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str], mode: int = 0o644) -> None:
    """Copy a file's bytes to ``dst`` atomically (see ``atomic_write``)."""
    with open(src, "rb") as fh:
        atomic_write(dst, fh.read(), mode)


def _umask() -> int:
    # os.umask has no read-only form; set and restore it at once.
    current = os.umask(0o022)
    os.umask(current)
    return current


def ensure_private_dir(path: Path, what: str) -> Path:
    """Create ``path`` (and parents) 0700, or check that the existing directory is safe to trust.

    Raises ``CacheError`` when it is a symlink, not a directory, owned by
    another user, or writable by group or others.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as err:
        raise CacheError(f"{what} {path}: cannot create it: {err.strerror or err}",
                         hint="choose another directory (CACHEDIR=...)") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"{what} {path} is not a directory of its own (a symlink or a file)",
                         hint="remove it, or choose another directory (CACHEDIR=...)")
    if st.st_uid != os.geteuid():
        raise CacheError(f"{what} {path} belongs to user id {st.st_uid}, not to you ({os.geteuid()})",
                         hint="whoever owns it controls what kpatch-build reads back: use a directory of your own")
    if st.st_mode & 0o022:
        raise CacheError(f"{what} {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})",
                         hint=f"chmod 700 {path}, or choose another directory")
    return path


def open_lock_file(path: Path) -> int:
    """Open (creating 0600) a lock file without following symlinks; return the descriptor."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise CacheError(f"lock file {path} is a symlink", hint="remove it; a lock file is never a link") from None
        raise CacheError(f"cannot open the lock file {path}: {err.strerror or err}") from None


@contextlib.contextmanager
def exclusive_lock(path: Path, on_wait: Callable[[str], None], who: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; tell ``on_wait`` (naming the holder) before blocking."""
    fd = open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(fd)
            on_wait(f"waiting for {holder or 'another process'} to finish with {who}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def lock_holder(fd: int) -> str | None:
    """'pid N (COMMAND)' of a process holding a flock on the file behind ``fd``, from /proc/locks."""
    st = os.fstat(fd)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 12345 08:01:1234 0 EOF"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == wanted and parts[4].isdigit():
            pid = int(parts[4])
            if pid == os.getpid():
                continue
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                comm = "?"
            return f"pid {pid} ({comm})"
    return None


def refuse_symlinked_path(root: Path, rel: str, error: Callable[[str], PykpatchError]) -> None:
    """Raise ``error(message)`` when any component of ``root/rel`` (below root) is a symlink."""
    current = root
    for part in Path(rel).parts:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise error(f"{current.relative_to(root)} is a symbolic link")
