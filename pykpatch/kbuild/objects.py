"""Which objects a source file ends up in, and which module each object belongs to.

kbuild records, for every object it built, the command and the dependency
list in ``DIR/.OBJ.cmd`` (scripts/basic/fixdep.c); ``*.mod`` files list the
objects of each module.  These are the tree's own answers to "what does a
patch to this file reach?" and "is this object in vmlinux or in a module?".
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_SOURCE = re.compile(r"^source_(\S+) := (\S+)")


def parse_cmd_file(text: str) -> tuple[str | None, str | None, set[str]]:
    """(object, source, dependency files) from a kbuild ``.X.o.cmd`` file.

    The format (scripts/basic/fixdep.c): ``source_OBJ := SRC``, then
    ``deps_OBJ := \\`` followed by one file per line ending in ``\\``
    (``$(wildcard include/config/...)`` lines are config options, not files).
    """
    obj = source = None
    deps: set[str] = set()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _SOURCE.match(line)
        if m:
            obj, source = m.group(1), m.group(2)
        elif line.startswith("deps_") and line.rstrip().endswith("\\"):
            i += 1
            while i < len(lines):
                entry = lines[i].strip()
                cont = entry.endswith("\\")
                entry = entry.rstrip("\\").strip()
                if entry and not entry.startswith("$(wildcard"):
                    deps.add(entry)
                if not cont:
                    break
                i += 1
        i += 1
    return obj, source, deps


class ObjectIndex:
    """Which compiled objects are built from, or include, given files (kbuild's .cmd files)."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self._cmd_files: list[str] | None = None

    def cmd_files(self) -> list[str]:
        if self._cmd_files is None:
            found: list[str] = []
            for dirpath, dirnames, filenames in os.walk(self.tree):
                dirnames[:] = [d for d in dirnames if d not in (".git", "Documentation", "scripts", "tools")]
                found.extend(os.path.join(dirpath, f) for f in filenames
                             if f.startswith(".") and f.endswith(".o.cmd"))
            self._cmd_files = found
        return self._cmd_files

    def object_of_source(self, source: str) -> str | None:
        """``dir/x.c`` -> ``dir/x.o`` when kbuild built it (its .cmd file exists)."""
        base = Path(source)
        cmd = self.tree / base.parent / f".{base.stem}.o.cmd"
        return str(base.with_suffix(".o")) if base.suffix == ".c" and cmd.exists() else None

    def objects_for(self, files: list[str]) -> dict[str, list[str]]:
        """file -> objects built from or including it.

        A ``.c`` file maps to its own object; any other file (a header, a
        ``.c`` included by another) to every object whose dependency list
        names it.  The substring test keeps the scan of thousands of .cmd
        files cheap; only candidates are parsed.
        """
        result: dict[str, set[str]] = {os.path.normpath(f): set() for f in files}
        scan = []
        for f in result:
            obj = self.object_of_source(f)
            if obj is not None:
                result[f].add(obj)
            scan.append(f)
        for cmd in self.cmd_files():
            try:
                with open(cmd, errors="replace") as fh:
                    text = fh.read()
            except OSError:
                continue
            hits = [f for f in scan if f in text]
            if not hits:
                continue
            obj, source, deps = parse_cmd_file(text)
            if obj is None or source is None or not source.endswith(".c"):
                continue
            for f in hits:
                if f in deps or f == source:
                    result[f].add(os.path.normpath(obj))
        return {f: sorted(objs) for f, objs in result.items()}


def module_of_objects(tree: Path) -> dict[str, str]:
    """object path -> module name, from kbuild's ``*.mod`` files (objects not listed are in vmlinux)."""
    result: dict[str, str] = {}
    for mod in tree.rglob("*.mod"):
        name = mod.stem.replace("-", "_")
        try:
            lines = mod.read_text().split()
        except OSError:
            continue
        for obj in lines:
            rel = os.path.relpath(obj, tree) if obj.startswith("/") else os.path.normpath(obj)
            result[rel] = name
    return result


def module_file(tree: Path, obj_rel: str, module: str) -> Path | None:
    """The built .ko of a module an object belongs to."""
    here = tree / Path(obj_rel).parent
    for cand in (here / f"{module}.ko", here / f"{module.replace('_', '-')}.ko"):
        if cand.exists():
            return cand
    for ko in tree.rglob("*.ko"):
        if ko.stem.replace("-", "_") == module:
            return ko
    return None


def object_files(obj: str) -> tuple[str, str, str]:
    """An object and what kbuild keeps beside it: its command file and the compiler's dependency file."""
    p = Path(obj)
    return obj, str(p.parent / f".{p.name}.cmd"), str(p.parent / f".{p.name}.d")


# Objects linked into images other than vmlinux and modules: the boot
# decompressor, kexec's purgatory, real-mode trampolines, the vDSO.  A file
# they share with the kernel (lib/string.c, lib/decompress_*.c...) is live
# patched in the kernel only; those images cannot be patched at all.
OTHER_IMAGES = re.compile(r"^(arch/[^/]+/boot/|arch/x86/purgatory/|arch/x86/realmode/|arch/[^/]+/entry/vdso/"
                          r"|arch/[^/]+/kernel/vdso|scripts/|tools/|usr/)")


def split_other_images(objects: list[str]) -> tuple[list[str], list[str]]:
    """(objects of the kernel and its modules, objects of other images)."""
    kernel = [o for o in objects if not OTHER_IMAGES.match(o)]
    return kernel, [o for o in objects if OTHER_IMAGES.match(o)]
