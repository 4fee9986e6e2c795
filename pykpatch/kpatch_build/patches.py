"""Patch files: what they touch, whether they apply, applying and reverting them.

The user's tree must never be left patched: ``PatchSession`` applies a
list of patches in order, records what it did in the cache directory
*before* touching the tree (so a run killed with SIGKILL can be undone by
the next one), and reverts on every exit path.  Reverting also restores
each touched file's modification time, so the cached original build does
not see the round trip as a change (kpatch's ``patch -R`` gives files a
new mtime and forces recompiles, and leaves ``.orig`` backups behind).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pykpatch.errors import PykpatchError

STATE_FILE = "applied-patches.json"


class PatchError(PykpatchError):
    """A patch does not apply, touches something unsupported, or cannot be reverted."""


_DIFF_GIT = re.compile(r"^diff --git a/(\S+) b/(\S+)")
_PLUS = re.compile(r"^\+\+\+ (?:b/)?([^\t\n]+)")
_MINUS = re.compile(r"^--- (?:a/)?([^\t\n]+)")


def touched_files(patch: Path) -> list[str]:
    """Paths (relative to the tree, -p1) that a unified diff modifies, creates or deletes."""
    try:
        text = patch.read_text(errors="replace")
    except OSError as err:
        raise PatchError(f"{patch}: cannot read: {err.strerror}") from None
    files: list[str] = []
    minus = None
    for line in text.splitlines():
        m = _MINUS.match(line)
        if m:
            minus = m.group(1).strip()
            continue
        m = _PLUS.match(line)
        if m and minus is not None:
            name = m.group(1).strip()
            if name == "/dev/null":
                name = minus  # deletion
            if name not in files:
                files.append(name)
            minus = None
    if not files:
        raise PatchError(f"{patch}: not a unified diff (no '--- a/FILE' / '+++ b/FILE' headers)")
    return files


# Paths whose code is not live patchable, with the reason shown to the user.
UNSUPPORTED = (
    (re.compile(r"\.S$"), "assembly (.S) cannot be live patched: it has no ftrace hooks and no function sections"),
    (re.compile(r"(^|/)vdso[^/]*/|/vdso/"), "the vDSO runs in user space, outside the kernel's reach"),
    (re.compile(r"^arch/[^/]+/boot/"), "boot code ran before the kernel started"),
    (re.compile(r"^(scripts|tools|Documentation)/"), "not kernel code: nothing to live patch"),
    (re.compile(r"^arch/x86/purgatory/"), "purgatory is a separate image for kexec"),
    (re.compile(r"^arch/x86/realmode/"), "real-mode code is a separate image"),
    (re.compile(r"(^|/)Kconfig[^/]*$|(^|/)Makefile$|(^|/)Kbuild$"), "build configuration changes cannot be live patched"),
)


def check_supported(patch: Path, files: list[str]) -> None:
    reasons = []
    for name in files:
        for pattern, why in UNSUPPORTED:
            if pattern.search(name):
                reasons.append(f"{patch.name}: {name}: {why}")
                break
    if reasons:
        raise PatchError("; ".join(reasons))


def _run_patch(tree: Path, patch: Path, *extra: str) -> subprocess.CompletedProcess:
    """GNU patch, -p1, never leaving .orig/.rej files in the user's tree."""
    if shutil.which("patch") is None:
        raise PatchError("the 'patch' program is needed", hint="apt-get install patch")
    forward = [] if "-R" in extra else ["--forward"]
    # -d changes patch's directory: a relative patch path must be made absolute first.
    return subprocess.run(
        ["patch", "-p1", *forward, "--no-backup-if-mismatch", "-r", "-", "-s", "-d", str(tree),
         "-i", str(Path(patch).resolve()), *extra],
        capture_output=True, text=True,
    )


@dataclass
class AppliedState:
    """What has been done to the tree (persisted before doing it)."""

    tree: str
    patches: list[str] = field(default_factory=list)
    mtimes: dict[str, list[int]] = field(default_factory=dict)  # file -> [atime_ns, mtime_ns] or [] if new

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> AppliedState | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cls(**data)


class PatchSession:
    """Apply patches to a tree and guarantee they are reverted."""

    def __init__(self, tree: Path, patches: list[Path], state_dir: Path) -> None:
        self.tree = tree
        self.patches = patches
        self.state_path = state_dir / STATE_FILE
        self.state = AppliedState(str(tree))

    def check(self) -> list[str]:
        """Dry-run every patch in order (on a scratch copy of the files they touch); return touched files."""
        all_files: list[str] = []
        for patch in self.patches:
            files = touched_files(patch)
            check_supported(patch, files)
            for f in files:
                if f not in all_files:
                    all_files.append(f)
        scratch = self.state_path.parent / "dry-run"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            for name in all_files:
                src = self.tree / name
                if src.exists():
                    (scratch / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, scratch / name)
            for patch in self.patches:
                proc = _run_patch(scratch, patch)
                if proc.returncode != 0:
                    detail = (proc.stdout + proc.stderr).strip().splitlines()
                    raise PatchError(
                        f"{patch.name} does not apply to {self.tree}: {detail[-1] if detail else 'patch failed'}",
                        hint="is it made against this kernel version (patch -p1 from the top of the tree)?",
                    )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return all_files

    def apply(self) -> None:
        for patch in self.patches:
            files = touched_files(patch)
            for name in files:
                if name in self.state.mtimes:
                    continue
                path = self.tree / name
                if path.exists():
                    st = path.stat()
                    self.state.mtimes[name] = [st.st_atime_ns, st.st_mtime_ns]
                else:
                    self.state.mtimes[name] = []
            self.state.patches.append(str(patch.resolve()))
            self.state.save(self.state_path)  # recorded before the tree changes
            proc = _run_patch(self.tree, patch)
            if proc.returncode != 0:
                raise PatchError(f"{patch.name} failed to apply: {(proc.stdout + proc.stderr).strip()}")

    def revert(self) -> None:
        revert_state(self.state, self.state_path)


def revert_state(state: AppliedState, state_path: Path, restore_times: bool = True) -> None:
    """Undo recorded patches (last first) and restore file times; then forget the state.

    ``restore_times=False`` (recovery after a killed run) leaves the reverted
    files newer than any object built from them, so make rebuilds those
    objects: the killed run may have left patched objects in the tree.
    """
    tree = Path(state.tree)
    errors = []
    for patch in reversed(state.patches):
        if _run_patch(tree, Path(patch), "-R", "--dry-run").returncode == 0:
            proc = _run_patch(tree, Path(patch), "-R")
            if proc.returncode != 0:
                errors.append(f"{Path(patch).name}: {(proc.stdout + proc.stderr).strip()[:200]}")
        elif _run_patch(tree, Path(patch), "--dry-run").returncode != 0:
            # Neither applied nor cleanly unapplied (killed half-way through patch itself).
            errors.append(f"{Path(patch).name}: the tree is neither patched nor unpatched")
        # else: recorded but never applied (killed before patch ran): nothing to undo
    for name, times in state.mtimes.items():
        path = tree / name
        if not restore_times:
            if path.exists():
                path.touch()
            continue
        if times and path.exists():
            os.utime(path, ns=(times[0], times[1]))
        elif not times and path.exists() and path.stat().st_size == 0:
            path.unlink()
    if errors:
        raise PatchError(f"could not revert all patches in {tree}: " + "; ".join(errors),
                         hint=f"check the tree by hand; the record is in {state_path}")
    try:
        state_path.unlink()
    except FileNotFoundError:
        pass


def recover_leftover(state_dir: Path) -> str | None:
    """Revert patches a previous run left applied (it was killed); return a note if it did."""
    path = state_dir / STATE_FILE
    state = AppliedState.load(path)
    if state is None:
        return None
    revert_state(state, path, restore_times=False)
    return f"reverted {len(state.patches)} patch(es) left applied in {state.tree} by an interrupted run"
