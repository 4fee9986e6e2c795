"""Build the lab kernel once, cache it, and keep a bootable snapshot.

The tree is built in place (never with ``O=``) because later stages of
pykpatch rebuild that same tree with ``-ffunction-sections
-fdata-sections``, and build livepatch modules against it with
``make -C TREE M=DIR``.  A kernel built with those flags does not boot on
6.1/x86 (the per-function sections become orphans the linker script never
places), so the artifacts of the *plain* build are copied into a snapshot
directory right after it finishes: the snapshot is what boots, whatever
happens to the tree afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from pykpatch.arch import arch_named, cross_make_variables
from pykpatch.errors import LabError
from pykpatch.lab import cache as cache_mod
from pykpatch.lab.cache import (
    BUILD_LOG,
    BUILD_STAMP,
    SNAPSHOT_DIR,
    TREE_DIR,
    cache_key,
    cache_root,
    read_stamp,
    remove_tree,
    write_stamp,
)
from pykpatch.lab.config import DEFAULT_SERIES, configure, default_fragment
from pykpatch.lab.logrun import lab_make
from pykpatch.lab.machines import X86_64, LabMachine, lab_machine
from pykpatch.lab.prereqs import missing_for_build, require
from pykpatch.lab.source import KernelSource, find_source, unpack

Progress = Callable[[str], None]

TARGETS: tuple[str, ...] = X86_64.targets

# Files of the plain build that a boot or a later module build needs, by
# their path in the tree -> name in the snapshot (x86_64's; see snapshot_files).
SNAPSHOT_FILES: Mapping[str, str] = MappingProxyType({
    "arch/x86/boot/bzImage": "bzImage",
    "vmlinux": "vmlinux",
    "System.map": "System.map",
    "Module.symvers": "Module.symvers",
    ".config": "config",
    "modules.order": "modules.order",
})


def snapshot_files(machine: LabMachine) -> dict[str, str]:
    """The snapshot of ``machine``'s build: SNAPSHOT_FILES with its own boot image (ppc64le boots vmlinux)."""
    files = {rel: name for rel, name in SNAPSHOT_FILES.items() if name != "bzImage"}
    if machine.image != "vmlinux":
        files[machine.image] = machine.image_name
    return files




@dataclass(frozen=True)
class KernelBuild:
    """A built lab kernel: where its tree, snapshot and log are.

    Boot from ``bzimage`` (in the snapshot).  Build modules against ``tree``
    (``make -C tree M=DIR``).  ``modules`` lists the snapshot's copies of the
    ``.ko`` files the plain build produced, including
    ``samples/livepatch/*.ko``.
    """

    key: str
    cache_dir: Path
    tree: Path
    snapshot: Path
    build_log: Path
    source_version: str
    kernelrelease: str
    build_seconds: float
    reused: bool
    modules: tuple[Path, ...] = field(default=())
    arch: str = X86_64.arch

    @property
    def machine(self) -> LabMachine:
        return lab_machine(self.arch)

    @property
    def boot_image(self) -> Path:
        """What QEMU boots: bzImage on x86_64 and s390x, vmlinux itself on ppc64le (SLOF loads ELF)."""
        return self.snapshot / self.machine.image_name

    @property
    def bzimage(self) -> Path:
        """The x86 name of ``boot_image``, kept for the callers that boot the x86 lab kernels."""
        return self.boot_image

    @property
    def vmlinux(self) -> Path:
        return self.snapshot / "vmlinux"

    @property
    def system_map(self) -> Path:
        return self.snapshot / "System.map"

    @property
    def module_symvers(self) -> Path:
        return self.snapshot / "Module.symvers"

    @property
    def config(self) -> Path:
        return self.snapshot / "config"

    def module(self, name: str) -> Path:
        """Find a built module by file name, with or without ``.ko``.

        ``-`` and ``_`` are interchangeable, as they are for the kernel.
        """
        want = _norm_module(name)
        for path in self.modules:
            if _norm_module(path.name) == want:
                return path
        known = ", ".join(sorted(p.name for p in self.modules)) or "none"
        raise LabError(f"no module {name!r} in {self.snapshot}/modules (built: {known})")


def _norm_module(name: str) -> str:
    return name.removesuffix(".ko").replace("-", "_")


def default_jobs() -> int:
    """One job per usable CPU: the build is CPU bound and the lab is alone."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def compiler_id(prefix: str = "") -> str:
    """The compiler's version line: a new gcc means a new cache entry (``prefix``: a cross compiler's)."""
    try:
        proc = subprocess.run([f"{prefix}gcc", "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return "gcc-missing"
    return proc.stdout.splitlines()[0] if proc.stdout else "gcc-unknown"


def make_variables(machine: LabMachine) -> dict[str, str]:
    """``ARCH``/``CROSS_COMPILE`` for a cross machine's kernel (none for this host's own)."""
    arch = arch_named(machine.arch)
    if arch is None:  # pragma: no cover - every lab machine has an arch module
        raise LabError(f"no arch module for the lab's {machine.arch}")
    return cross_make_variables(arch, os.uname().machine)


def lab_key(source: KernelSource, fragment: str, machine: LabMachine = X86_64) -> str:
    """The cache key for building ``source`` with ``fragment`` for ``machine`` here.

    x86_64's inputs are those of the first lab (no arch in them), so its cached kernels stay valid;
    a cross kernel differs by fragment, targets and compiler.
    """
    prefix = make_variables(machine).get("CROSS_COMPILE", "")
    return cache_key(source.version, fragment, machine.targets, compiler_id(prefix))


def ensure_kernel(
    *,
    jobs: int | None = None,
    root: Path | None = None,
    source: KernelSource | None = None,
    fragment: str | None = None,
    progress: Progress | None = None,
    rebuild: bool = False,
    series: str = DEFAULT_SERIES,
    arch: str = X86_64.arch,
) -> KernelBuild:
    """Return the cached lab kernel of ``series`` (6.1 or 6.12) for ``arch``, building it first if needed.

    ``arch`` other than x86_64 (ppc64le, s390x: 6.1 only) is built with Debian's cross compiler.

    A cold build takes minutes (unpack ~10 s, configure ~5 s, make ~6 min on
    two cores); a cached one returns in milliseconds.  ``rebuild`` forces
    ``make`` and a new snapshot (incremental: kbuild redoes only what changed).
    """
    say = progress or (lambda _msg: None)
    machine = lab_machine(arch)
    fragment = default_fragment(series, machine.arch) if fragment is None else fragment
    source = source or find_source(series=series)
    variables = make_variables(machine)
    require(missing_for_build(source.tarball, variables.get("CROSS_COMPILE", "")),
            f"build the lab's {machine.arch} kernel")
    key = lab_key(source, fragment, machine)
    key_dir = (root or cache_root()) / key

    if not rebuild:
        found = load_build(key_dir)
        if found is not None:
            return found
    with _lock_with_notice(key_dir, say):
        if not rebuild:
            # Another process may have finished the build while we waited.
            found = load_build(key_dir)
            if found is not None:
                return found
        return _build_locked(source, fragment, key, key_dir, jobs or default_jobs(), say, machine)


@contextlib.contextmanager
def _lock_with_notice(key_dir: Path, say: Progress) -> Iterator[None]:
    """Take the cache lock, saying so if another process holds it."""
    key_dir.mkdir(parents=True, exist_ok=True)
    probe = os.open(key_dir / cache_mod.LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(probe, fcntl.LOCK_UN)
    except BlockingIOError:
        say(f"waiting for another process building {key_dir}")
    finally:
        os.close(probe)
    with cache_mod.locked(key_dir):
        yield


def load_build(key_dir: Path) -> KernelBuild | None:
    """Return the finished build in ``key_dir``, or None if there is none.

    Trusts only a stamp whose snapshot files all exist, so a snapshot that
    someone partly deleted is rebuilt rather than booted.
    """
    data = read_stamp(key_dir / BUILD_STAMP)
    if data is None:
        return None
    snapshot = key_dir / SNAPSHOT_DIR
    modules = tuple(snapshot / rel for rel in data.get("modules", []))
    arch = str(data.get("arch", X86_64.arch))
    if not all((snapshot / name).is_file() for name in snapshot_files(lab_machine(arch)).values()):
        return None
    if not all(m.is_file() for m in modules):
        return None
    return KernelBuild(
        key=key_dir.name,
        cache_dir=key_dir,
        tree=key_dir / TREE_DIR,
        snapshot=snapshot,
        build_log=key_dir / BUILD_LOG,
        source_version=str(data.get("source_version", "")),
        kernelrelease=str(data.get("kernelrelease", "")),
        build_seconds=float(data.get("build_seconds", 0.0)),
        reused=True,
        modules=modules,
        arch=arch,
    )


def _build_locked(
    source: KernelSource, fragment: str, key: str, key_dir: Path, jobs: int, say: Progress, machine: LabMachine
) -> KernelBuild:
    started = time.monotonic()
    (key_dir / BUILD_STAMP).unlink(missing_ok=True)
    log = key_dir / BUILD_LOG
    variables = make_variables(machine)
    log.write_text(f"pykpatch lab build {key}: {source.tarball} ({source.version}), {machine.arch}, -j{jobs}\n")

    say(f"unpack: {source.tarball} -> {key_dir / TREE_DIR}")
    tree = unpack(source, key_dir)
    say(f"configure: tinyconfig + {machine.arch} livepatch fragment")
    configure(tree, key_dir, fragment, log, jobs, variables=variables,
              essential={machine.console_option: "y"})

    cross = " ".join(f"{k}={v}" for k, v in variables.items())
    say(f"build: make -j{jobs} {cross + ' ' if cross else ''}{' '.join(machine.targets)} (log: {log})")
    lab_make(tree, machine.targets, log, "kernel build", jobs, say, variables=variables)

    say("snapshot: copying bootable artifacts")
    modules = _snapshot(tree, key_dir, snapshot_files(machine))
    release_file = tree / "include" / "config" / "kernel.release"
    kernelrelease = release_file.read_text().strip() if release_file.is_file() else ""
    seconds = round(time.monotonic() - started, 1)
    write_stamp(
        key_dir / BUILD_STAMP,
        {
            "key": key,
            "source_version": source.version,
            "tarball": str(source.tarball),
            "kernelrelease": kernelrelease,
            "jobs": jobs,
            "build_seconds": seconds,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "modules": [str(m) for m in modules],
            "arch": machine.arch,
        },
    )
    built = load_build(key_dir)
    if built is None:  # pragma: no cover - we just wrote it
        raise LabError(f"lab build in {key_dir} finished but its snapshot is incomplete")
    return dataclasses.replace(built, reused=False)


def _snapshot(tree: Path, key_dir: Path, files: Mapping[str, str]) -> list[Path]:
    """Copy the plain build's artifacts to ``key_dir/snapshot`` atomically.

    Copies (not hard links): a later in-place rebuild may rewrite the tree's
    files rather than replace them.  Returns module paths relative to the
    snapshot.
    """
    target = key_dir / SNAPSHOT_DIR
    for leftover in key_dir.glob(".snapshot-*"):
        remove_tree(leftover)
    tmp = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=key_dir))
    try:
        for rel, name in files.items():
            src = tree / rel
            if not src.is_file():
                raise LabError(f"kernel build finished without {src}")
            shutil.copy2(src, tmp / name)
        modules: list[Path] = []
        for ko in sorted(_find_modules(tree)):
            in_snapshot = Path("modules") / ko.relative_to(tree)
            (tmp / in_snapshot).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ko, tmp / in_snapshot)
            modules.append(in_snapshot)
        remove_tree(target)
        os.replace(tmp, target)
    except BaseException:
        remove_tree(tmp)
        raise
    return modules


def _find_modules(tree: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.endswith(".ko"):
                yield Path(dirpath) / name
