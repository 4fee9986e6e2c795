"""A kernel tree's state, to prove kpatch-build left it exactly as it found it.

Every file's (size, mtime_ns) over the whole tree (a file written by make or
patch gets a new mtime even when its bytes end up the same), plus the sha256
of every file kpatch-build may rewrite and put back: the objects of the
patch and their .cmd/.d files, what make rewrites besides
(``build_state_files``) and the patched sources.  Used by the interrupt
tests and ``bench/interrupts.py``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pykpatch.kbuild.objects import object_files
from pykpatch.kbuild.tree import build_state_files


def tree_state(tree: Path, objects: list[str], sources: list[str]) -> dict[str, tuple[int, int, str]]:
    hashed = set(build_state_files(tree)) | set(sources)
    hashed |= {f for obj in objects for f in object_files(obj)}
    state: dict[str, tuple[int, int, str]] = {}
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, tree)
            st = os.lstat(full)
            digest = ""
            if rel in hashed:
                with open(full, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
            state[rel] = (st.st_size, st.st_mtime_ns, digest)
    return state


def differences(before: dict[str, tuple[int, int, str]], after: dict[str, tuple[int, int, str]]) -> list[str]:
    out = [f"new: {n}" for n in sorted(after.keys() - before.keys())]
    out += [f"gone: {n}" for n in sorted(before.keys() - after.keys())]
    out += [f"changed: {n}" for n in sorted(before.keys() & after.keys()) if before[n] != after[n]]
    return out
