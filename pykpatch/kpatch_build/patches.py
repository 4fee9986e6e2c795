"""Patch files: what they name, whether that is safe, and their exact result.

A patch comes from outside (a mailing list, a CVE advisory) and kpatch-build
often runs as root, so a patch is treated as hostile until checked:

1. ``parse_patch`` reads every file name a patch carries (``---``/``+++``
   lines, ``diff --git``, ``Index:``, git's rename/copy lines) the way GNU
   ``patch -p1`` will strip them, and refuses, before anything is copied or
   run, names that are absolute, climb out with ``..``, are not ``a/``-``b/``
   style, or name something that cannot be live patched (build files,
   assembly, the vDSO, ``.config``...).  ``check_in_tree`` refuses a name
   whose path in the tree goes through a symbolic link (GNU patch refuses
   those half way through a patch set; a copy would follow them).
2. ``dry_run`` copies the named files (regular files only, checked with
   ``lstat``) into a scratch directory and applies the patches there, in
   order, with GNU patch: that *is* the application, so the dry run cannot
   disagree with it.  Its result is the content of every file afterwards.
3. ``apply_result`` writes that result into the tree, after the tree
   journal (``journal.py``) has saved every file it changes.  Nothing runs
   ``patch`` on the user's tree, and nothing reverts with ``patch -R``: the
   journal puts the saved contents back.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pykpatch.errors import PatchError
from pykpatch.kpatch_build.journal import TreeJournal
from pykpatch.safeio import atomic_write, refuse_symlinked_path

DEV_NULL = "/dev/null"


@dataclass(frozen=True)
class PatchFile:
    """One patch file and the tree paths (after ``-p1``) it names, in order of appearance."""

    path: Path
    names: tuple[str, ...]


# -- reading names -----------------------------------------------------------------------

_HEADER = re.compile(r"^(?:(---|\+\+\+) |Index: |diff --git |(rename|copy) (from|to) )(.*)$")
_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"')
_GIT_PAIR = re.compile(r'^(?P<a>"(?:[^"\\]|\\.)*"|\S+) (?P<b>"(?:[^"\\]|\\.)*"|\S+)$')
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "r": "\r", "v": "\v"}


def _unquote(text: str) -> str:
    """A file name as git or GNU diff writes it: plain, or C-quoted with octal escapes."""
    m = _QUOTED.match(text)
    if not m:
        return text.split("\t", 1)[0].rstrip()
    body, out, i = m.group(1), bytearray(), 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "01234567":
                digits = re.match(r"[0-7]{1,3}", body[i + 1:])
                assert digits is not None
                out.append(int(digits.group(0), 8) & 0xFF)
                i += 1 + len(digits.group(0))
                continue
            out += _ESCAPES.get(nxt, nxt).encode()
            i += 2
            continue
        out += c.encode("utf-8", "surrogateescape")
        i += 1
    return out.decode("utf-8", "surrogateescape")


def _raw_names(line: str) -> list[tuple[str, bool]]:
    """(name, stripped-with-p1) pairs named by one header line ([] if it is not a header)."""
    m = _HEADER.match(line)
    if not m:
        return []
    rest = m.group(4)
    if line.startswith("diff --git "):
        pair = _GIT_PAIR.match(rest)
        if not pair:
            return [(_unquote(rest), True)]
        return [(_unquote(pair.group("a")), True), (_unquote(pair.group("b")), True)]
    if line.startswith(("rename ", "copy ")):
        return [(_unquote(rest), False)]  # git writes these without the a/ b/ prefix
    if line.startswith("Index: "):
        return [(_unquote(rest), False)]
    return [(_unquote(rest), True)]


def _strip_p1(name: str) -> str | None:
    """What GNU ``patch -p1`` makes of a name: everything after the first ``/`` (None if there is none)."""
    head, sep, tail = name.partition("/")
    return tail if sep else None


def _name_problem(name: str) -> str | None:
    """Why a (stripped) name may not be patched by kpatch-build, or None."""
    if not name or "\0" in name:
        return "an empty file name"
    if name.startswith("/"):
        return "an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "a path that climbs out of the tree with '..'"
    if any(p in ("", ".") for p in parts):
        return "a path with empty or '.' components"
    return None


# Paths whose code is not live patchable, with the reason shown to the user.
# Each exists for a real case: a patch to the file either cannot change the
# running kernel, or would change how the tree itself is built.
UNSUPPORTED: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\.S$"), "assembly (.S) cannot be live patched: it has no ftrace hooks and no function sections"),
    (re.compile(r"\.lds(\.S)?$"), "a linker script is part of how the kernel is built"),
    (re.compile(r"(^|/)vdso[^/]*/|/vdso/"), "the vDSO runs in user space, outside the kernel's reach"),
    (re.compile(r"^arch/[^/]+/boot/"), "boot code ran before the kernel started"),
    (re.compile(r"^(scripts|tools|Documentation|usr)/"), "not kernel code: nothing to live patch"),
    (re.compile(r"^arch/x86/purgatory/"), "purgatory is a separate image for kexec"),
    (re.compile(r"^arch/x86/realmode/"), "real-mode code is a separate image"),
    (re.compile(r"^include/(config|generated)/|^arch/[^/]+/include/generated/"),
     "generated by kbuild from the configuration: changing it changes the build, not the code"),
    (re.compile(r"(^|/)\.config(\.old)?$|(^|/)\.kernelvariables$"),
     "the kernel configuration cannot be live patched (and kbuild would rewrite it)"),
    (re.compile(r"(^|/)Kconfig[^/]*$|(^|/)Makefile[^/]*$|(^|/)Kbuild[^/]*$"),
     "build configuration changes cannot be live patched"),
)


def unsupported_reason(name: str) -> str | None:
    for pattern, why in UNSUPPORTED:
        if pattern.search(name):
            return why
    return None


def parse_patch(path: Path) -> PatchFile:
    """Every tree path a patch names, checked (see the module docstring); raises ``PatchError``."""
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as err:
        raise PatchError(f"{path}: cannot read the patch: {err.strerror or err}") from None
    names: list[str] = []
    problems: list[str] = []
    saw_hunk_header = False
    for line in text.splitlines():
        if line.startswith("GIT binary patch"):
            problems.append("a binary patch")
            continue
        if line.startswith(("new file mode 120", "new mode 120", "old mode 120")):
            problems.append("a symbolic link")
            continue
        for raw, p1 in _raw_names(line):
            if line.startswith(("---", "+++")):
                saw_hunk_header = True
            if raw == DEV_NULL:
                continue
            name = _strip_p1(raw) if p1 else raw
            if name is None:
                problems.append(f"{raw!r}: no a/ or b/ prefix to strip (make the patch with diff -u a/... b/... "
                                "or git diff, applied with -p1)")
                continue
            why = _name_problem(name) or _name_problem(raw)
            if why is not None and raw.startswith("/"):
                why = "an absolute path"
            if why is not None:
                problems.append(f"{raw!r} is {why}")
                continue
            if line.startswith(("rename ", "copy ")):
                problems.append(f"{name}: renaming or copying files cannot be live patched")
                continue
            reason = unsupported_reason(name)
            if reason is not None:
                problems.append(f"{name}: {reason}")
                continue
            if name not in names:
                names.append(name)
    if problems:
        raise PatchError(f"{path.name}: " + "; ".join(dict.fromkeys(problems)),
                         hint="nothing was copied or changed; fix or split the patch")
    if not saw_hunk_header or not names:
        raise PatchError(f"{path}: not a unified diff (no '--- a/FILE' / '+++ b/FILE' headers)")
    return PatchFile(path, tuple(names))


def touched_files(patch: Path) -> list[str]:
    """Paths (relative to the tree, -p1) that a unified diff names."""
    return list(parse_patch(patch).names)


def parse_patches(patches: Iterable[Path]) -> list[PatchFile]:
    return [parse_patch(p) for p in patches]


def all_names(parsed: Iterable[PatchFile]) -> list[str]:
    return list(dict.fromkeys(n for p in parsed for n in p.names))


def check_in_tree(tree: Path, names: Iterable[str]) -> None:
    """Refuse names whose path in the tree goes through a symlink or is not a regular file."""
    problems = []
    for name in names:
        try:
            refuse_symlinked_path(tree, name, PatchError)
        except PatchError as err:
            problems.append(f"{name}: {err.message} (patch would refuse it half way through)")
            continue
        path = tree / name
        if path.exists() and not path.is_file():
            problems.append(f"{name}: not a regular file in {tree}")
    if problems:
        raise PatchError("; ".join(problems), hint="nothing was copied or changed")


# -- applying in a scratch copy ---------------------------------------------------------------

def _run_patch(directory: Path, patch: Path) -> subprocess.CompletedProcess[str]:
    """GNU patch, -p1, no backups or reject files, no questions (stdin closed)."""
    if shutil.which("patch") is None:
        raise PatchError("the 'patch' program is needed", hint="apt-get install patch")
    return subprocess.run(
        ["patch", "-p1", "--forward", "--batch", "--no-backup-if-mismatch", "-r", "-", "-s",
         "-d", str(directory), "-i", str(patch.resolve())],
        capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
    )


def dry_run(tree: Path, parsed: list[PatchFile], scratch: Path) -> dict[str, bytes | None]:
    """Apply the patches, in order, to copies of the named files; return what changes (None: deleted)."""
    names = all_names(parsed)
    check_in_tree(tree, names)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True, mode=0o700)
    before: dict[str, bytes | None] = {}
    for name in names:
        src = tree / name
        if src.is_file():
            data = src.read_bytes()
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            (scratch / name).write_bytes(data)
            before[name] = data
        else:
            before[name] = None
    for patch in parsed:
        proc = _run_patch(scratch, patch.path)
        if proc.returncode != 0:
            detail = [ln for ln in (proc.stdout + proc.stderr).strip().splitlines() if ln.strip()]
            raise PatchError(
                f"{patch.path.name} does not apply to {tree}: {detail[-1] if detail else 'patch failed'}",
                hint="is it made against this kernel version (patch -p1 from the top of the tree)? "
                     "Nothing was changed",
            )
    after: dict[str, bytes | None] = {}
    for name in names:
        result = scratch / name
        after[name] = result.read_bytes() if result.is_file() else None
    return {n: after[n] for n in names if after[n] != before[n]}


def apply_result(tree: Path, result: dict[str, bytes | None], journal: TreeJournal) -> None:
    """Write the dry run's result into the tree (the journal saves each file first)."""
    journal.protect(result)
    now = time.time_ns()
    for name, data in result.items():
        path = tree / name
        if data is None:
            path.unlink(missing_ok=True)
            continue
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode=mode)
        os.chmod(path, mode)
        os.utime(path, ns=(now, now))
