"""The kernel source tree: in-place builds, the cached original build, objects of a source file.

Both passes build *in the tree* with ``-ffunction-sections -fdata-sections``
(never ``O=``): in-tree, ``__FILE__`` is a relative path, so the objects
match the distribution's own build and their local symbols can be matched
to the running vmlinux.  The original build is done once and recorded in
a stamp keyed by everything that changes its output; the stamp is written
last and removed before any rebuild, so a half-finished build is never
taken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pykpatch.errors import PykpatchError

KPATCH_CFLAGS = "-ffunction-sections -fdata-sections"
STAMP_FORMAT = 1  # bump when what the stamp promises changes
STAMP_FILE = "original-build.json"
_CC_LINE = re.compile(r"^\s*(?:\[\s*\d+\]\s*)?(CC|LD|AR|GEN|HOSTCC|AS)\b")


class TreeError(PykpatchError):
    """The kernel tree cannot be built or does not match."""


def data_dir() -> Path:
    """pykpatch/data: kpatch-macros.h, the patch author's header."""
    return Path(str(resources.files("pykpatch").joinpath("data")))


def compile_env() -> dict[str, str]:
    """make's environment: pykpatch/data on gcc's include path through CPATH.

    Patches ``#include "kpatch-macros.h"``.  Not ``KCFLAGS=-I...``: kbuild
    records every object's command line in its .cmd file and rebuilds what
    was built with other flags, so an -I in the original build would change
    the cache key (a full rebuild for every existing cache), and one in the
    patched build only would make the prepare stage's objects (asm-offsets,
    bounds) out of date.  CPATH acts as a trailing ``-I`` (also with
    -nostdinc), is not part of any recorded command, and the tree's own
    headers keep precedence.
    """
    env = dict(os.environ)
    env["CPATH"] = os.pathsep.join(p for p in (str(data_dir()), env.get("CPATH", "")) if p)
    return env


@dataclass
class KernelTree:
    path: Path
    log: Path
    jobs: int = 1

    def make(self, *targets: str, kcflags: str = KPATCH_CFLAGS, progress: Callable[[str], None] | None = None,
             what: str = "build") -> None:
        """Run make in the tree (never O=); output to the log, progress counts compiled files."""
        cmd = ["make", "-C", str(self.path), f"-j{self.jobs}", f"KCFLAGS={kcflags}", *targets]
        done = 0
        last = 0.0
        with open(self.log, "a") as fh:
            fh.write(f"\n$ {' '.join(cmd)}\n")
            fh.flush()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                    env=compile_env())
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                if _CC_LINE.match(line):
                    done += 1
                    now = time.monotonic()
                    if progress and now - last > 2:
                        last = now
                        progress(f"{what}: {done} files compiled")
            rc = proc.wait()
        if rc != 0:
            raise TreeError(f"{what} failed (make exit {rc}); see {self.log}")
        if progress:
            progress(f"{what}: done, {done} files compiled")

    # -- what the tree is ------------------------------------------------------
    def kernelrelease(self) -> str:
        release = self.path / "include/config/kernel.release"
        if release.exists():
            return release.read_text().strip()
        proc = subprocess.run(["make", "-s", "-C", str(self.path), "kernelrelease"], capture_output=True, text=True)
        return proc.stdout.strip()

    def source_version(self) -> str:
        """What identifies the sources: the Makefile's version and, if present, the Debian version file."""
        parts = []
        for name in ("Makefile", "debian/changelog", ".scmversion", "localversion"):
            p = self.path / name
            if p.exists():
                parts.append(hashlib.sha256(p.read_bytes()[:65536]).hexdigest()[:16])
        return "-".join(parts)


def build_key(tree: KernelTree, config_text: str, compiler: str) -> str:
    h = hashlib.sha256()
    for part in (str(STAMP_FORMAT), str(tree.path.resolve()), config_text, compiler, KPATCH_CFLAGS,
                 tree.source_version()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


class OriginalBuild:
    """The cached original (unpatched) build of the tree with kpatch's flags."""

    def __init__(self, tree: KernelTree, cachedir: Path, key: str) -> None:
        self.tree = tree
        self.stamp = cachedir / STAMP_FILE
        self.key = key

    def is_current(self) -> bool:
        try:
            data = json.loads(self.stamp.read_text())
        except (OSError, ValueError):
            return False
        if data.get("key") != self.key or not (self.tree.path / "Module.symvers").exists():
            return False
        # Someone may have rebuilt the tree plainly since: kbuild records the flags.
        probe = self.tree.path / "init" / ".main.o.cmd"
        try:
            return "-ffunction-sections" in probe.read_text(errors="replace")
        except OSError:
            return False

    def tree_is_built(self) -> bool:
        """A tree already built for its current .config (by anyone, with any flags).

        kbuild's own record: ``include/config/auto.conf`` is regenerated from
        ``.config`` by every build, so it being newer means the build saw this
        configuration; ``Module.symvers`` and ``vmlinux.o`` exist only after a
        complete build.  The objects' ``.cmd`` files then tell which objects a
        patched file reaches.
        """
        root = self.tree.path
        auto, config = root / "include/config/auto.conf", root / ".config"
        needed = (auto, config, root / "Module.symvers", root / "vmlinux.o")
        if not all(p.exists() for p in needed):
            return False
        return auto.stat().st_mtime >= config.stat().st_mtime

    def ensure(self, targets: list[str], progress: Callable[[str], None]) -> str:
        """Make the tree ready; return the mode: "cached", "on-demand" or "built".

        - "cached": this exact full build with kpatch's flags was done before.
        - "on-demand": the tree is already built (plainly, as a distribution or
          the user built it); only the objects a patch reaches get compiled
          with kpatch's flags, before and after patching, and the tree's own
          objects are put back afterwards.  No full rebuild: this is what makes
          a first run take seconds instead of a kernel build.
        - "built": a tree never built for this config gets the full build.
        """
        if self.is_current():
            progress("original build: cached")
            return "cached"
        if self.tree_is_built():
            progress("original build: the tree is already built; originals are compiled on demand")
            return "on-demand"
        self.stamp.unlink(missing_ok=True)
        progress("original build: building the tree with kpatch's flags (make rebuilds only what is out of date)")
        started = time.monotonic()
        self.tree.make(*targets, progress=progress, what="original build")
        self.stamp.write_text(json.dumps({"key": self.key, "seconds": round(time.monotonic() - started, 1),
                                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        return "built"


# -- objects of source files ------------------------------------------------------

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
            found = []
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
