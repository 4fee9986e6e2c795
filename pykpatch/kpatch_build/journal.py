"""The tree journal: everything a run may change in the user's tree, saved before it changes.

kpatch-build patches the user's sources and rebuilds objects in the tree
itself (never ``O=``), so a run must be able to put every file back, whatever
stops it: success, failure, Ctrl-C, SIGTERM, or SIGKILL (then the next run
does it).  Reverting patches with ``patch -R`` cannot promise that (a patch
that applied half way, a file changed by hand, a killed ``patch``); so the
journal does not undo operations, it restores *contents*:

1. ``protect(files)`` copies each file (or notes its absence) into the
   journal directory, fsyncs the copy, then records it in ``journal.json``
   (written atomically).  Only then may the caller change the file.
2. ``watch(dirs)`` records which files exist in directories make writes
   into, so files created there (``.x.o.d``, ``.tmp_*``) can be removed.
3. ``running(pgid)`` records make's process group while it runs: a run
   killed with SIGKILL leaves make orphaned, and the next run stops it
   (and waits for it) before restoring.
4. ``restore()`` puts every protected file back (content, mode, owner,
   times), removes what did not exist and what make created in watched
   directories, then verifies each file's hash.  It goes on past a file it
   cannot restore and reports all of them at the end; the journal stays
   until a restore has verified, so the next run tries again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pykpatch.errors import TreeError
from pykpatch.safeio import atomic_write, atomic_write_text, fsync_dir

JOURNAL_FILE = "journal.json"
SAVED_DIR = "saved"
FORMAT = 1

# Files kbuild creates as it builds objects: a new one of these in a watched
# directory was made by our make and goes; anything else is left alone.
_BUILD_PRODUCT = re.compile(
    r"^(\..*\.(cmd|d|tmp)|\.tmp_.*|.*\.(o|s|i|a|ko|mod|mod\.c|symtypes|lst|ver|dwo|tmp))$"
)


@dataclass
class Entry:
    """One protected file as it was before the run."""

    existed: bool
    saved: str = ""          # pack file under SAVED_DIR holding the content...
    offset: int = 0          # ... at this offset
    sha256: str = ""
    mode: int = 0
    uid: int = -1
    gid: int = -1
    atime_ns: int = 0
    mtime_ns: int = 0
    new_dirs: list[str] = field(default_factory=list)  # parents that did not exist (absent files only)
    size: int = 0


@dataclass
class RestoreReport:
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    stopped_make: int | None = None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TreeJournal:
    """See the module docstring.  ``directory`` is private to the user (the per-tree cache)."""

    def __init__(self, tree: Path, directory: Path) -> None:
        self.tree = tree
        self.directory = directory
        self.entries: dict[str, Entry] = {}
        self.watched: dict[str, list[str]] = {}
        self.make: MakeProcess | None = None
        self.stage = "started"

    # -- persistence -------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.directory / JOURNAL_FILE

    def _save(self) -> None:
        data = {"format": FORMAT, "tree": str(self.tree), "stage": self.stage,
                "make": asdict(self.make) if self.make else None,
                "entries": {k: asdict(v) for k, v in self.entries.items()}, "watched": self.watched}
        atomic_write_text(self.path, json.dumps(data, indent=1), mode=0o600)

    @classmethod
    def begin(cls, tree: Path, directory: Path) -> TreeJournal:
        """A new, empty journal (the caller has restored any earlier one)."""
        if (directory / JOURNAL_FILE).exists():
            raise TreeError(f"a journal of an unfinished run is still in {directory}",
                            hint="it is restored at the start of the next run")
        shutil.rmtree(directory / SAVED_DIR, ignore_errors=True)
        (directory / SAVED_DIR).mkdir(parents=True, mode=0o700)
        journal = cls(tree, directory)
        journal._save()
        return journal

    @classmethod
    def load(cls, directory: Path) -> TreeJournal | None:
        """The journal an earlier run left, or None."""
        try:
            data = json.loads((directory / JOURNAL_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise TreeError(f"{directory / JOURNAL_FILE}: the journal of an earlier run is unreadable ({err})",
                            hint="check the tree by hand (the saved files are in "
                                 f"{directory / SAVED_DIR}), then remove the journal") from None
        journal = cls(Path(data["tree"]), directory)
        journal.entries = {k: Entry(**v) for k, v in data.get("entries", {}).items()}
        journal.watched = {k: list(v) for k, v in data.get("watched", {}).items()}
        journal.make = MakeProcess(**data["make"]) if data.get("make") else None
        journal.stage = data.get("stage", "?")
        return journal

    # -- before the tree changes ---------------------------------------------------
    def protect(self, rels: Iterable[str]) -> None:
        """Save each file (or its absence) before anyone changes it; idempotent per file.

        The contents of one call go into one pack file (hundreds of small
        files, one write and one fsync), which is durable before the journal
        names it.
        """
        pack_name = f"pack-{len({e.saved for e in self.entries.values() if e.saved}):04d}"
        pack = bytearray()
        added: dict[str, Entry] = {}
        for rel in rels:
            rel = os.path.normpath(rel)
            if rel in self.entries or rel in added:
                continue
            added[rel] = self._snapshot(rel, pack, pack_name)
        if not added:
            return
        if pack:
            fd = os.open(self.directory / SAVED_DIR / pack_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pack)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(self.directory / SAVED_DIR)
        self.entries.update(added)
        self._save()

    def _snapshot(self, rel: str, pack: bytearray, pack_name: str) -> Entry:
        path = self.tree / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return Entry(existed=False, new_dirs=self._missing_parents(rel))
        if not stat.S_ISREG(st.st_mode):
            raise TreeError(f"{path} is not a regular file (a symlink or a directory): kpatch-build will not touch it")
        data = path.read_bytes()
        offset = len(pack)
        pack += data
        return Entry(True, pack_name, offset, hashlib.sha256(data).hexdigest(), stat.S_IMODE(st.st_mode), st.st_uid,
                     st.st_gid, st.st_atime_ns, st.st_mtime_ns, size=len(data))

    def _missing_parents(self, rel: str) -> list[str]:
        missing = []
        parent = Path(rel).parent
        while str(parent) not in ("", ".") and not (self.tree / parent).exists():
            missing.append(str(parent))
            parent = parent.parent
        return missing

    def watch(self, dirs: Iterable[str]) -> None:
        """Record the files in directories make will write into."""
        added = False
        for d in dirs:
            d = os.path.normpath(d)
            if d in self.watched:
                continue
            try:
                self.watched[d] = sorted(e.name for e in os.scandir(self.tree / d) if e.is_file(follow_symlinks=False))
            except FileNotFoundError:
                self.watched[d] = []
            added = True
        if added:
            self._save()

    def running(self, pgid: int | None, stage: str | None = None) -> None:
        """Record the process group of the make that now runs (None: it has exited)."""
        self.make = MakeProcess.of(pgid) if pgid else None
        if stage is not None:
            self.stage = stage
        self._save()

    # -- putting things back ---------------------------------------------------------
    def restore(self) -> RestoreReport:
        """Put the tree back (see the module docstring); raise ``TreeError`` listing what could not be."""
        report = RestoreReport()
        report.stopped_make = self._stop_orphaned_make()
        problems: list[str] = []
        packs: dict[str, bytes] = {}
        for rel, entry in self.entries.items():
            try:
                if self._restore_entry(rel, entry, packs):
                    report.restored.append(rel)
            except OSError as err:
                problems.append(f"{rel}: {err.strerror or err}")
        for d, names in self.watched.items():
            problems += self._remove_new_products(d, set(names), report)
        problems += self._verify(report.restored)
        if problems:
            raise TreeError(
                f"could not put {len(problems)} file(s) of {self.tree} back: " + "; ".join(problems[:5]),
                hint=f"the saved files stay in {self.directory / SAVED_DIR}; the next kpatch-build run tries again",
            )
        self.discard()
        return report

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.directory / SAVED_DIR, ignore_errors=True)
        fsync_dir(self.directory)

    def _saved_content(self, entry: Entry, packs: dict[str, bytes]) -> bytes:
        pack = packs.get(entry.saved)
        if pack is None:
            pack = packs[entry.saved] = (self.directory / SAVED_DIR / entry.saved).read_bytes()
        data = pack[entry.offset:entry.offset + entry.size]
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise OSError(f"the saved copy in {self.directory / SAVED_DIR / entry.saved} is damaged")
        return data

    def _restore_entry(self, rel: str, entry: Entry, packs: dict[str, bytes]) -> bool:
        path = self.tree / rel
        if not entry.existed:
            changed = False
            if os.path.lexists(path):
                os.unlink(path)
                changed = True
            for d in entry.new_dirs:  # deepest first
                try:
                    os.rmdir(self.tree / d)
                except OSError:
                    pass
            return changed
        if self._is_intact(path, entry):
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self._saved_content(entry, packs)
        atomic_write(path, data, mode=entry.mode)
        os.chmod(path, entry.mode)
        if os.geteuid() == 0 and entry.uid >= 0:
            os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
        os.utime(path, ns=(entry.atime_ns, entry.mtime_ns), follow_symlinks=False)
        return True

    @staticmethod
    def _is_intact(path: Path, entry: Entry) -> bool:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_mtime_ns != entry.mtime_ns or stat.S_IMODE(st.st_mode) != entry.mode:
            return False
        return sha256_of(path) == entry.sha256

    def _remove_new_products(self, d: str, before: set[str], report: RestoreReport) -> list[str]:
        problems = []
        try:
            now = [e.name for e in os.scandir(self.tree / d) if e.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        for name in now:
            rel = os.path.normpath(os.path.join(d, name))
            if name in before or rel in self.entries or not _BUILD_PRODUCT.match(name):
                continue
            try:
                os.unlink(self.tree / rel)
                report.removed.append(rel)
            except OSError as err:
                problems.append(f"{rel}: {err.strerror or err}")
        return problems

    def _verify(self, restored: list[str]) -> list[str]:
        """Check what was written back (files found intact were hashed a moment ago) and what must be gone."""
        problems = []
        for rel in restored:
            entry = self.entries[rel]
            path = self.tree / rel
            if not entry.existed:
                if os.path.lexists(path):
                    problems.append(f"{rel}: still present")
            elif not self._is_intact(path, entry):
                problems.append(f"{rel}: content or times differ after restoring")
        return problems

    def _stop_orphaned_make(self) -> int | None:
        """A make left running by a killed run: stop what is left of its process group, wait until gone."""
        if self.make is None:
            return None
        members = self.make.live_members()
        if not members:
            return None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in members:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.make.live_members():
                time.sleep(0.05)
            members = self.make.live_members()
            if not members:
                return self.make.pgid
        raise TreeError(f"the make (process group {self.make.pgid}) of an interrupted run does not stop",
                        hint=f"kill -9 -{self.make.pgid}, then run kpatch-build again")


@dataclass
class MakeProcess:
    """make's process group, identified well enough to never signal an unrelated process.

    A pid is only meaningful within one boot and while its process lives: the
    boot id and the leader's start time tell a reused pid from ours.  While
    any member of a process group lives, Linux does not reuse its id, so
    members of the group are ours as long as the leader is ours or gone.
    """

    pgid: int
    starttime: int
    boot_id: str

    @classmethod
    def of(cls, pgid: int) -> MakeProcess:
        return cls(pgid, _starttime(pgid) or 0, _boot_id())

    def live_members(self) -> list[int]:
        if self.boot_id != _boot_id():
            return []
        leader = _starttime(self.pgid)
        if leader is not None and leader != self.starttime:
            return []  # the id now names another process
        members = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            fields = _stat_fields(int(entry.name))
            # fields after the command: state ppid pgrp ...
            if fields and int(fields[2]) == self.pgid and fields[0] != "Z":
                members.append(int(entry.name))
        return members


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _starttime(pid: int) -> int | None:
    fields = _stat_fields(pid)
    # field 22 of /proc/PID/stat; index 19 after the command
    return int(fields[19]) if fields and len(fields) > 19 else None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
