"""Which C files a header reaches, in a tree that was never built (so has no dependency files).

A built tree answers from kbuild's .cmd dependency lists (``objects.py``).
A prepared-only tree (a distribution's sources, targeted build) has none,
so the ``#include`` lines of the tree's .c and .h files are read and
resolved the way kbuild's include path does (``-I arch/ARCH/include
-I arch/ARCH/include/generated -I include`` and their uapi twins; quoted
includes first beside the including file).  Conditional compilation is not
evaluated: the answer is a superset (an object that does not really include
the header compiles to the same code and drops out of the diff), never a
subset.  Every file is forced to include ``linux/kconfig.h`` and
``linux/compiler_types.h`` (kbuild's ``-include``), so those reach
everything.

The graph is read once per tree (about 60,000 files) and cached as JSON,
keyed by the tree's source identity.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from pykpatch.safeio import atomic_write_text

_INCLUDE = re.compile(rb'^[ \t]*#[ \t]*include[ \t]*([<"])([^>"]+)[>"]', re.MULTILINE)
SKIPPED_DIRS = frozenset({".git", "Documentation", "tools", "scripts", "samples", "usr", "LICENSES", "debian"})
FORCED_INCLUDES = ("include/linux/compiler-version.h", "include/linux/kconfig.h", "include/linux/compiler_types.h")
FORMAT = 1


def include_dirs(srcarch: str) -> list[str]:
    return [f"arch/{srcarch}/include", f"arch/{srcarch}/include/generated", "include",
            f"arch/{srcarch}/include/uapi", f"arch/{srcarch}/include/generated/uapi", "include/uapi",
            "include/generated/uapi"]


class IncludeGraph:
    """file -> files that include it directly (tree-relative paths)."""

    def __init__(self, included_by: dict[str, list[str]]) -> None:
        self.included_by = included_by

    @classmethod
    def scan(cls, tree: Path, srcarch: str) -> IncludeGraph:
        dirs = include_dirs(srcarch)
        existing = _all_sources(tree)
        present = set(existing) | _generated(tree, dirs)
        included_by: dict[str, list[str]] = {}
        for rel in existing:
            try:
                data = (tree / rel).read_bytes()
            except OSError:
                continue
            here = os.path.dirname(rel)
            for kind, name in _INCLUDE.findall(data):
                target = _resolve(name.decode("latin-1"), kind == b'"', here, dirs, present)
                if target is not None:
                    included_by.setdefault(target, []).append(rel)
        return cls(included_by)

    @classmethod
    def cached(cls, tree: Path, srcarch: str, cache: Path, key: str) -> IncludeGraph:
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key and data.get("format") == FORMAT:
                return cls({k: list(v) for k, v in data["included_by"].items()})
        except (OSError, ValueError, KeyError, AttributeError):
            pass
        graph = cls.scan(tree, srcarch)
        atomic_write_text(cache, json.dumps({"format": FORMAT, "key": key, "included_by": graph.included_by}),
                          mode=0o600)
        return graph

    def c_files_reaching(self, files: Iterable[str]) -> set[str]:
        """The .c files that include any of ``files``, directly or through other headers (or are one)."""
        seen: set[str] = set()
        queue = deque(os.path.normpath(f) for f in files)
        forced = any(f in FORCED_INCLUDES for f in queue)
        while queue:
            current = queue.popleft()
            if current in seen:
                continue
            seen.add(current)
            queue.extend(self.included_by.get(current, ()))
        reached = {f for f in seen if f.endswith(".c")}
        if forced:
            reached |= {f for users in self.included_by.values() for f in users if f.endswith(".c")}
        return reached


def _all_sources(tree: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(tree):
        rel_dir = os.path.relpath(dirpath, tree)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.endswith((".c", ".h")):
                out.append(os.path.normpath(os.path.join(rel_dir, name)))
    return out


def _generated(tree: Path, dirs: list[str]) -> set[str]:
    """Headers made by the prepare stage (asm wrappers, autoconf.h): includable, not scanned above."""
    found = set()
    for d in dirs:
        if "generated" not in d:
            continue
        for dirpath, _dirnames, filenames in os.walk(tree / d):
            for name in filenames:
                found.add(os.path.relpath(os.path.join(dirpath, name), tree))
    return found


def _resolve(name: str, quoted: bool, here: str, dirs: list[str], present: set[str]) -> str | None:
    if quoted:
        candidate = os.path.normpath(os.path.join(here, name))
        if candidate in present:
            return candidate
    for d in dirs:
        candidate = os.path.normpath(os.path.join(d, name))
        if candidate in present:
            return candidate
    return None
