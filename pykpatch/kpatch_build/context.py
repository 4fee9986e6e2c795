"""What every kpatch-build stage is handed: the options, the per-tree workspace, the log, progress.

``BuildOptions`` are the command line; ``BuildContext`` adds what the run
derives before its first stage (the workspace in the cache, the tree's make
runner) and ``Stages``, which times and announces each stage and writes a
heading for it into the build log.
"""

from __future__ import annotations

import gzip
import lzma
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pykpatch.errors import TreeError
from pykpatch.kbuild.tree import KernelTree
from pykpatch.kpatch_build.workspace import TreeWorkspace
from pykpatch.symtab import KernelSymbolTable

Progress = Callable[[str], None]


def default_jobs() -> int:
    """One job per CPU this process may use (read when asked, not at import)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class SigningOptions:
    """How the module is signed: explicit key + certificate, the defaults found, or not at all."""

    key: Path | None = None
    cert: Path | None = None
    disabled: bool = False


@dataclass
class BuildOptions:
    patches: list[Path]
    srcdir: Path | None          # None: the distribution's sources for ``kernel`` (route.py)
    cachedir: Path
    kernel: str | None = None    # the release to patch (default: the running one) when srcdir is None
    distro_cache: Path = Path()  # where the distribution's packages are fetched (default: CACHEDIR/distro)
    modules_dir: Path | None = None  # the running kernel's modules (kernel/**.ko) for a tree never built
    full_build: bool = False
    config: Path | None = None
    vmlinux: Path | None = None
    jobs: int = field(default_factory=default_jobs)
    targets: list[str] = field(default_factory=list)
    name: str | None = None
    outdir: Path = Path(".")
    replace: bool = True
    allow_empty_replace: bool = False
    debug: bool = False
    skip_cleanup: bool = False
    skip_compiler_check: bool = False
    signing: SigningOptions = field(default_factory=SigningOptions)
    arch: str | None = None      # build for this architecture's kernel (--arch; None: the host's)
    distcc: bool = False         # compile through distcc (behind ccache when installed): kbuild/wrappers.py


@dataclass
class BuildResult:
    module: Path
    changed_objects: list[str]
    changed_functions: list[str]
    new_functions: list[str]
    timings: dict[str, float]
    signed_with: Path | None = None
    kbuild_seconds: float = 0.0  # of which in kbuild in the kernel tree (configure, prepare, compiles)


class Stages:
    """Times and announces each stage."""

    def __init__(self, progress: Progress, log: Path) -> None:
        self.progress = progress
        self.log = log
        self.timings: dict[str, float] = {}
        self._current: str | None = None
        self._started = 0.0

    def start(self, name: str, message: str) -> None:
        self.finish()
        self._current = name
        self._started = time.monotonic()
        self.progress(message)
        with open(self.log, "a") as fh:
            fh.write(f"\n=== {message}\n")

    def finish(self) -> None:
        if self._current is not None:
            self.timings[self._current] = round(time.monotonic() - self._started, 2)
            self._current = None

    def summary(self) -> str:
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.timings.items())


@dataclass
class BuildContext:
    opts: BuildOptions
    srcdir: Path
    workspace: TreeWorkspace
    stages: Stages
    tree: KernelTree
    scratch: Path
    tables: dict[Path, KernelSymbolTable] = field(default_factory=dict)
    # The tree was built whole with kpatch's flags (a cached --full-build): compiles keep KCFLAGS so
    # their commands match; elsewhere the flags go per object (kbuild.tree.KernelTree.make).
    kcflags_tree: bool = False

    @property
    def log(self) -> Path:
        return self.workspace.log

    def symtab(self, path: Path) -> KernelSymbolTable:
        """A parent's symbol table, read once per run (a compressed .ko is unpacked into scratch first)."""
        table = self.tables.get(path)
        if table is None:
            table = self.tables[path] = KernelSymbolTable.load(decompressed(path, self.scratch / "parents"))
        return table

    def progress(self, message: str) -> None:
        self.stages.progress(message)


def decompressed(path: Path, scratch: Path) -> Path:
    """``path`` itself, or its content unpacked into ``scratch`` when it is a .xz/.gz/.zst module."""
    if path.suffix not in (".xz", ".gz", ".zst"):
        return path
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / f"{abs(hash(str(path))):x}-{path.stem}"
    if path.suffix == ".xz":
        out.write_bytes(lzma.decompress(path.read_bytes()))
    elif path.suffix == ".gz":
        out.write_bytes(gzip.decompress(path.read_bytes()))
    else:
        proc = subprocess.run(["zstd", "-q", "-d", "-f", "-o", str(out), str(path)], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise TreeError(f"cannot unpack {path}: {proc.stderr.strip() or 'zstd failed'}",
                            hint="install zstd (apt-get install zstd)")
    return out
