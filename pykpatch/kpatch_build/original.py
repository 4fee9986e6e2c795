"""Stage "orig": the tree's original (unpatched) objects, built with kpatch's flags or on demand.

Three cases, told apart before any compile:

- "cached": this exact full build with kpatch's flags was done before (the
  stamp is keyed by everything that changes its output: tree, config,
  compiler, flags, source version);
- "on-demand": the tree is already built (plainly, as a distribution or the
  user built it): only the objects a patch reaches get compiled with
  kpatch's flags, in the patched stage, and are put back afterwards;
- "built": a tree never built for this config gets one full in-place build.

The stamp is written last and removed before any rebuild, so a half-finished
build is never taken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pykpatch.errors import TreeError
from pykpatch.kbuild.tree import KPATCH_CFLAGS, KernelTree
from pykpatch.safeio import atomic_write_text

STAMP_FORMAT = 2  # bump when what the stamp promises changes
# Only a build of these counts as complete: a partial ``-t OBJ`` build is recorded but never "cached".
FULL_TARGETS = ["vmlinux", "modules"]


def build_key(tree: KernelTree, config_text: str, compiler: str) -> str:
    h = hashlib.sha256()
    for part in (str(STAMP_FORMAT), str(tree.path.resolve()), config_text, compiler, KPATCH_CFLAGS,
                 tree.source_version()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


class OriginalBuild:
    """The cached original (unpatched) build of the tree with kpatch's flags."""

    def __init__(self, tree: KernelTree, stamp: Path, key: str) -> None:
        self.tree = tree
        self.stamp = stamp
        self.key = key

    def is_current(self) -> bool:
        try:
            data = json.loads(self.stamp.read_text())
        except (OSError, ValueError):
            return False
        if data.get("key") != self.key or not (self.tree.path / "Module.symvers").exists():
            return False
        if sorted(data.get("targets", [])) != sorted(FULL_TARGETS):
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

    def ensure(self, targets: list[str], progress: Callable[[str], None], full: bool) -> str:
        """Make the tree ready; return the mode: "cached", "on-demand" or "built".

        - "cached": this exact full build with kpatch's flags was done before.
        - "on-demand": the tree is already built (plainly, as a distribution or
          the user built it); only the objects a patch reaches get compiled
          with kpatch's flags, before and after patching, and the tree's own
          objects are put back afterwards.  No full rebuild: this is what makes
          a first run take seconds instead of a kernel build.
        - "built" (only when ``full``): the whole tree is built once.
        """
        if self.is_current():
            progress("original build: cached")
            return "cached"
        if self.tree_is_built() and not full:
            progress("original build: the tree is already built; originals are compiled on demand")
            return "on-demand"
        if not full:
            raise TreeError(f"{self.tree.path} is not built", hint="kpatch-build prepares it instead (targeted)")
        self.stamp.unlink(missing_ok=True)
        progress("original build: building the tree with kpatch's flags (make rebuilds only what is out of date)")
        started = time.monotonic()
        self.tree.make(*targets, progress=progress, what="original build")
        atomic_write_text(self.stamp, json.dumps({"key": self.key, "targets": targets,
                                                  "seconds": round(time.monotonic() - started, 1),
                                                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}), mode=0o600)
        return "built"


@dataclass(frozen=True)
class FullBuildEstimate:
    units: int
    seconds: float
    bytes: int


# Measured: the lab's tiny 6.1 build, 2.1 GB for ~1000 units with debug info (0.7 MB a unit); Debian's
# 6.1 (17,600 units) 15-20 GB.  A unit compiles in 1-3 s on one core of this kind of machine.
BYTES_PER_UNIT = 700_000
SECONDS_PER_UNIT = 2.0


def estimate_full_build(tree: KernelTree, progress: Callable[[str], None]) -> FullBuildEstimate:
    """Count what ``make vmlinux modules`` would compile (``make -n``), and say what it will cost, up front."""
    run = tree.make("-n", *FULL_TARGETS, what="counting a full build's compile units (make -n)", capture=True)
    units = sum(1 for line in run.output.splitlines() if " -c -o " in line and ".o " in line
                and not line.lstrip().startswith("printf"))
    seconds = units * SECONDS_PER_UNIT / max(1, tree.jobs)
    estimate = FullBuildEstimate(units, seconds, units * BYTES_PER_UNIT)
    progress(f"full build: {units} compile units, about {seconds / 3600:.1f} h on {tree.jobs} job(s) "
             f"({SECONDS_PER_UNIT:.0f} s a unit per core) and {estimate.bytes / 1e9:.0f} GB")
    return estimate
