"""Where the kernel's pieces come from: the user's tree and files, or the distribution's packages.

- ``kpatch-build fix.patch`` (or ``--kernel RELEASE``, ``-r RELEASE``) on a
  Debian machine: everything comes from Debian's packages for that release
  (``pykpatch.distro``): the sources are unpacked once into the cache, the
  config, Module.symvers and ``.kernelvariables`` (CC, release) come from
  the headers package, vmlinux from the -dbg package, the modules' .ko from
  the image package.
- ``-s SRCDIR [-c CONFIG] [-v VMLINUX]``: the user's tree and files.  If the
  tree was never built and the vmlinux is a Debian kernel's, the release
  read from it finds the rest (headers, modules) the same way, so the
  targeted route works there too; ``-c /boot/config-R`` is completed from
  the headers' ``.config``.

The answer, a ``Route``, is plain data the stages read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pykpatch.distro.base import DistroProvider, KernelArtifacts, provider_for_host, upstream_version
from pykpatch.errors import DistroError, KernelInfoError, KernelMismatchError, TreeError, UsageError
from pykpatch.kbuild.release import kernel_release_from_vmlinux
from pykpatch.kpatch_build.context import BuildOptions
from pykpatch.kpatch_build.prepare import TreeInputs
from pykpatch.safeio import atomic_write_text, ensure_private_dir, exclusive_lock

Progress = Callable[[str], None]

SOURCE_STAMP = ".pykpatch-unpacked.json"


@dataclass(frozen=True)
class Route:
    srcdir: Path
    vmlinux: Path
    inputs: TreeInputs
    modules: Path | None        # directory with kernel/<path>.ko of the running kernel's modules
    artifacts: KernelArtifacts | None = None

    @property
    def distro(self) -> str | None:
        return self.artifacts.distro if self.artifacts else None


def resolve_route(opts: BuildOptions, progress: Progress,
                  provider: DistroProvider | None = None) -> Route:
    if opts.srcdir is None:
        return _distro_route(opts, progress, provider)
    vmlinux = opts.vmlinux or (opts.srcdir / "vmlinux")
    if not vmlinux.is_file():
        raise TreeError(f"{vmlinux} does not exist", hint="give the running kernel's vmlinux with -v VMLINUX")
    inputs = TreeInputs(config=opts.config)
    artifacts = None
    if not _tree_is_built(opts.srcdir):
        artifacts = _matching_distro_kernel(opts, vmlinux, progress, provider)
    if artifacts is None:
        return Route(opts.srcdir, vmlinux, inputs, opts.modules_dir)
    inputs = TreeInputs(config=opts.config or artifacts.config, reference_config=artifacts.config,
                        kernelvariables=artifacts.kernelvariables, symvers=artifacts.symvers)
    progress(f"{vmlinux} is Debian's {artifacts.release} ({artifacts.version}): config, Module.symvers and modules "
             "from its packages")
    return Route(opts.srcdir, vmlinux, inputs, opts.modules_dir or artifacts.modules, artifacts)


def _tree_is_built(tree: Path) -> bool:
    return (tree / "vmlinux.o").is_file() and (tree / "Module.symvers").is_file()


def _provider(opts: BuildOptions, provider: DistroProvider | None) -> DistroProvider | None:
    return provider or provider_for_host(opts.distro_cache)


def _matching_distro_kernel(opts: BuildOptions, vmlinux: Path, progress: Progress,
                            provider: DistroProvider | None) -> KernelArtifacts | None:
    found = _provider(opts, provider)
    if found is None:
        return None
    try:
        release = kernel_release_from_vmlinux(vmlinux)
    except KernelInfoError:
        return None
    try:
        artifacts = found.artifacts(release, progress, vmlinux=False)
    except DistroError as err:
        progress(f"not a {found.name} kernel with packages ({err.message}); using the tree and files given")
        return None
    if opts.srcdir is not None:
        check_source_version(opts.srcdir, artifacts)
    return artifacts


def tree_version(tree: Path) -> str | None:
    """VERSION.PATCHLEVEL.SUBLEVEL of a tree's top Makefile (what ``make kernelversion`` prints)."""
    try:
        head = (tree / "Makefile").read_text(errors="replace")[:4096]
    except OSError:
        return None
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\d*)\s*$", head, re.MULTILINE))
    if "VERSION" not in fields or "PATCHLEVEL" not in fields:
        return None
    return ".".join(v for v in (fields["VERSION"], fields["PATCHLEVEL"], fields.get("SUBLEVEL", "")) if v)


def check_source_version(tree: Path, artifacts: KernelArtifacts) -> None:
    """A given tree must be the sources the distribution built that kernel from."""
    have, want = tree_version(tree), upstream_version(artifacts.version)
    if have is not None and have != want:
        raise KernelMismatchError(
            f"the source tree {tree} is Linux {have}, but {artifacts.release} is built from {want} "
            f"({artifacts.distro} {artifacts.version})",
            kernel=want, local=have, hint="use the sources of that kernel (or none: kpatch-build --kernel "
                                          f"{artifacts.release} fetches them)")


def _distro_route(opts: BuildOptions, progress: Progress, provider: DistroProvider | None) -> Route:
    found = _provider(opts, provider)
    if found is None:
        raise UsageError("no kernel source tree given, and this is not a distribution pykpatch can fetch sources on",
                         hint="use -s SRCDIR -c CONFIG -v VMLINUX for this kernel")
    release = opts.kernel or os.uname().release
    ensure_private_dir(opts.cachedir, "cache directory")
    progress(f"kernel {release}: finding {found.name}'s packages")
    artifacts = found.artifacts(release, progress, vmlinux=opts.vmlinux is None)
    srcdir = unpack_source(artifacts, opts.cachedir / "sources", progress)
    inputs = TreeInputs(config=opts.config or artifacts.config, reference_config=artifacts.config,
                        kernelvariables=artifacts.kernelvariables, symvers=artifacts.symvers)
    vmlinux = opts.vmlinux or artifacts.vmlinux
    assert vmlinux is not None  # asked for above
    return Route(srcdir, vmlinux, inputs, opts.modules_dir or artifacts.modules, artifacts)


def unpack_source(artifacts: KernelArtifacts, root: Path, progress: Progress) -> Path:
    """The distribution's sources for one release: its own tree under ``root``, made once.

    The tarball of a source version is unpacked once (``root/DISTRO-VERSION``,
    never built in); each release built from it (Debian's amd64, cloud-amd64
    and rt-amd64 flavours share one) gets a hard-linked copy of it, built in
    place for its own config.  Hard links are safe here because nothing
    writes a source file in place: make and the compiler create new files,
    and kpatch-build writes (patch, restore) by rename.  Both steps happen in
    a temporary directory renamed into place with a stamp, so an interrupted
    one is never mistaken for a tree.
    """
    ensure_private_dir(root, "source cache")
    dest = root / f"{artifacts.distro}-{artifacts.version}-{artifacts.release}"
    stamp = dest / SOURCE_STAMP
    if stamp.is_file():
        return _single_tree(dest)
    pristine = _pristine_source(artifacts, root, progress)
    progress(f"linking {dest} to the {artifacts.version} sources (hard links, once)")
    _make_once(dest, lambda tmp: _run_tool(["cp", "-al", str(pristine), str(tmp)],
                                          f"cannot link {pristine} into {root}"))
    atomic_write_text(stamp, json.dumps({"sources": str(pristine), "version": artifacts.version}), mode=0o600)
    return _single_tree(dest)


def _pristine_source(artifacts: KernelArtifacts, root: Path, progress: Progress) -> Path:
    """The tarball unpacked once per source version (under a lock: kernels of a fleet ask at once)."""
    pristine = root / f"{artifacts.distro}-{artifacts.version}"
    with exclusive_lock(root / f".{pristine.name}.lock", progress, f"the {artifacts.version} sources"):
        if not (pristine / SOURCE_STAMP).is_file():
            progress(f"unpacking {artifacts.source_tarball} into {pristine} (once)")
            _make_once(pristine, lambda tmp: _run_tool(["tar", "-x", "-f", str(artifacts.source_tarball), "-C",
                                                        str(tmp)], f"cannot unpack {artifacts.source_tarball}"))
            atomic_write_text(pristine / SOURCE_STAMP, json.dumps({"tarball": str(artifacts.source_tarball),
                                                                   "version": artifacts.version}), mode=0o600)
    return _single_tree(pristine)


def _make_once(dest: Path, fill: Callable[[Path], None]) -> None:
    """``fill`` a temporary directory next to ``dest``, then rename it to ``dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        fill(tmp)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _run_tool(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DistroError(f"{what}: {proc.stderr.strip()[:200]}")


def _single_tree(dest: Path) -> Path:
    trees = [p for p in dest.iterdir() if p.is_dir() and (p / "Makefile").is_file()]
    if len(trees) != 1:
        raise DistroError(f"{dest} does not hold one kernel tree", hint=f"remove {dest}; it is unpacked again")
    return trees[0]
