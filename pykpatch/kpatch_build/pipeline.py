"""kpatch-build, stage by stage.

    check   tree, config, vmlinux release, compiler; revert leftovers of a killed run
    patches dry-run every patch in order; refuse what cannot be live patched
    orig    a tree already built (by the distribution or the user): nothing to do,
            originals are compiled on demand; otherwise the full original
            build (in-tree, kpatch flags), cached per source + config + compiler
    patched apply, rebuild only the objects the patches reach, keep both
            versions, revert (always), put the original objects back
    diff    every changed object against its parent (vmlinux or its module)
    module  kbuild the livepatch module, convert it to the klp format

Every stage reports progress; everything the tools print goes to
``CACHEDIR/build.log``, which error messages name.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pykpatch.kpatch_build import kernelinfo
from pykpatch.kpatch_build.patches import PatchError, PatchSession, recover_leftover
from pykpatch.kpatch_build.tree import (
    KernelTree,
    ObjectIndex,
    OriginalBuild,
    TreeError,
    build_key,
    module_file,
    module_of_objects,
)
from pykpatch.diff import run_diff
from pykpatch.errors import NoChangeError, PykpatchError, UnsupportedChangeError
from pykpatch.module import build_module, sanitize_name
from pykpatch.symtab import KernelSymbolTable, ModuleSymvers

Progress = Callable[[str], None]


@dataclass
class BuildOptions:
    patches: list[Path]
    srcdir: Path
    config: Path | None = None
    vmlinux: Path | None = None
    jobs: int = os.cpu_count() or 1
    targets: list[str] = field(default_factory=list)
    name: str | None = None
    outdir: Path = Path(".")
    replace: bool = True
    debug: bool = False
    skip_cleanup: bool = False
    skip_compiler_check: bool = False
    cachedir: Path = Path(os.environ.get("CACHEDIR", str(Path.home() / ".kpatch")))


@dataclass
class BuildResult:
    module: Path
    changed_objects: list[str]
    changed_functions: list[str]
    new_functions: list[str]
    timings: dict[str, float]


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


def _default_name(patches: list[Path]) -> str:
    return sanitize_name(patches[0].stem)


def _sync_config(tree: Path, config: Path | None) -> str:
    """The tree's .config becomes the requested one (as kpatch-build does); return its text."""
    target = tree / ".config"
    if config is None:
        if not target.exists():
            raise TreeError(f"{tree} has no .config", hint="give the kernel's config with -c CONFIG")
        return target.read_text()
    text = config.read_text()
    if not target.exists() or target.read_text() != text:
        shutil.copyfile(config, target)
    return text


def check_inputs(opts: BuildOptions, tree: KernelTree, stages: Stages) -> tuple[Path, str]:
    stages.start("check", "checking the kernel tree, config, vmlinux and compiler")
    if not (opts.srcdir / "Makefile").exists() or not (opts.srcdir / "kernel").is_dir():
        raise TreeError(f"{opts.srcdir} is not a kernel source tree", hint="give it with -s SRCDIR")
    note = recover_leftover(opts.cachedir)
    if note:
        stages.progress(note)
        # Objects of the killed run may still be the patched ones: let make redo them.
        (opts.cachedir / "original-build.json").unlink(missing_ok=True)
    config_text = _sync_config(opts.srcdir, opts.config)
    vmlinux = opts.vmlinux or (opts.srcdir / "vmlinux")
    if not vmlinux.exists():
        raise TreeError(f"{vmlinux} does not exist", hint="give the running kernel's vmlinux with -v VMLINUX")
    release = kernelinfo.kernel_release_from_vmlinux(vmlinux)
    compiler = kernelinfo.compiler_of("gcc")
    if not opts.skip_compiler_check:
        kernelinfo.check_compiler(vmlinux, "gcc")
    for p in opts.patches:
        if not p.is_file():
            raise PatchError(f"{p}: no such patch file")
    stages.progress(f"kernel {release}, {compiler}")
    return vmlinux, config_text


def _check_release(tree: KernelTree, vmlinux: Path) -> None:
    want = kernelinfo.kernel_release_from_vmlinux(vmlinux)
    have = tree.kernelrelease()
    if have and want != have:
        raise TreeError(
            f"the source tree builds kernel {have}, but {vmlinux} is {want}",
            hint="use the source and config of the running kernel (set LOCALVERSION / KERNELRELEASE to match)",
        )


def struct_sizes(opts: BuildOptions, key: str, tree: KernelTree) -> dict[str, int]:
    """Special-section struct sizes of this kernel, probed once per original build."""
    cache = opts.cachedir / "struct-sizes.json"
    try:
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            return {k: int(v) for k, v in data["sizes"].items()}
    except (OSError, ValueError, KeyError):
        pass
    work = Path(tempfile.mkdtemp(prefix="pykpatch-probe-"))
    try:
        sizes = kernelinfo.probe_struct_sizes(opts.srcdir, work, tree.log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cache.write_text(json.dumps({"key": key, "sizes": sizes}))
    return sizes


@dataclass
class ChangedObject:
    path: str
    orig: Path
    patched: Path


def _object_files(obj: str) -> tuple[str, str]:
    """An object and its kbuild command file (which records the flags it was built with)."""
    return obj, str(Path(obj).parent / f".{Path(obj).name}.cmd")


# What kbuild regenerates before any object when the C flags change: the
# prepare stage compiles asm-offsets/bounds/devicetable-offsets with the
# kernel's CFLAGS (KCFLAGS included) and relinks modpost.
PREPARE_PRODUCTS = (
    "arch/*/kernel/asm-offsets.s", "arch/*/kernel/.asm-offsets.s.cmd", "kernel/bounds.s", "kernel/.bounds.s.cmd",
    ".missing-syscalls.d", "scripts/mod/*", "scripts/mod/.*.cmd", "include/generated/*.h",
    "arch/*/include/generated/asm/*.h",
)


def _prepare_products(root: Path) -> list[str]:
    found: list[str] = []
    for pattern in PREPARE_PRODUCTS:
        found += [str(p.relative_to(root)) for p in root.glob(pattern) if p.is_file()]
    return sorted(set(found))


def _copy_objects(root: Path, objects: list[str], dest: Path, with_cmd: bool = True) -> None:
    for obj in objects:
        for rel in (_object_files(obj) if with_cmd else (obj,)):
            src = root / rel
            if src.exists():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)


# Objects linked into images other than vmlinux and modules: the boot
# decompressor, kexec's purgatory, real-mode trampolines, the vDSO.  A file
# they share with the kernel (lib/string.c, lib/decompress_*.c...) is live
# patched in the kernel only; those images cannot be patched at all.
OTHER_IMAGES = re.compile(r"^(arch/[^/]+/boot/|arch/x86/purgatory/|arch/x86/realmode/|arch/[^/]+/entry/vdso/"
                          r"|arch/[^/]+/kernel/vdso|scripts/|tools/|usr/)")


def split_other_images(objects: list[str]) -> tuple[list[str], list[str]]:
    kernel = [o for o in objects if not OTHER_IMAGES.match(o)]
    return kernel, [o for o in objects if OTHER_IMAGES.match(o)]


def patched_build(opts: BuildOptions, tree: KernelTree, files: list[str], scratch: Path,
                  stages: Stages, compile_originals: bool = False) -> list[ChangedObject]:
    """Rebuild only what the patches reach, before and after patching; always revert and restore.

    ``compile_originals``: the original objects are (re)compiled with kpatch's
    flags first -- needed when the tree was built plainly (on-demand mode),
    and a cheap safeguard otherwise (make does nothing for objects already
    built with these flags; an object someone rebuilt since is caught).  The
    tree's own objects, their .cmd files and the prepare stage's products are
    put back at the end, so the tree is left as it was found.
    """
    stages.start("patched", "patched build: applying the patches and rebuilding what they touch")
    index = ObjectIndex(opts.srcdir)
    per_file = index.objects_for(files)
    not_built = [f for f, objs in per_file.items() if not objs]
    if not_built and len(not_built) == len(per_file):
        raise PatchError(
            "none of the patched files is compiled in this configuration: " + ", ".join(not_built),
            hint="check the config (-c) or the patch",
        )
    objects, elsewhere = split_other_images(sorted({o for objs in per_file.values() for o in objs}))
    if elsewhere:
        stages.progress(f"patched build: not live patchable, left alone: {', '.join(elsewhere)} "
                        "(built into an image other than the kernel and its modules)")
    if not objects:
        raise PatchError("the patch only changes code of images that cannot be live patched: " + ", ".join(elsewhere))
    stages.progress(f"patched build: {len(objects)} object(s) to rebuild "
                    f"({', '.join(objects[:5])}{'...' if len(objects) > 5 else ''})")
    before, saved = scratch / "before", scratch / "saved"
    _copy_objects(opts.srcdir, objects, before)
    prepare = _prepare_products(opts.srcdir) if compile_originals else []
    _copy_objects(opts.srcdir, prepare, before, with_cmd=False)
    session = PatchSession(opts.srcdir, opts.patches, opts.cachedir)
    changed: list[ChangedObject] = []
    try:
        if compile_originals:
            tree.make(*objects, progress=stages.progress, what="original objects")
        _copy_objects(opts.srcdir, objects, saved, with_cmd=False)
        session.apply()
        tree.make(*objects, progress=stages.progress, what="patched build")
        for obj in objects:
            orig = saved / obj
            patched = scratch / "patched" / obj
            patched.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(opts.srcdir / obj, patched)
            if orig.exists() and orig.read_bytes() == patched.read_bytes():
                continue
            if not orig.exists():
                raise TreeError(f"{obj} was not built by the original build", hint=f"see {tree.log}")
            changed.append(ChangedObject(obj, orig, patched))
    finally:
        session.revert()
        # The tree's objects, their .cmd files and what the prepare stage
        # regenerated go back to what they were.
        for rel in [r for obj in objects for r in _object_files(obj)] + prepare:
            if (before / rel).exists():
                shutil.copy2(before / rel, opts.srcdir / rel)
    return changed


def diff_objects(opts: BuildOptions, vmlinux: Path, changed: list[ChangedObject], sizes: dict[str, int],
                 scratch: Path, stages: Stages) -> tuple[list[Path], list[str], list[str]]:
    stages.start("diff", f"diff: {len(changed)} changed object(s)")
    modules = module_of_objects(opts.srcdir)
    symvers_path = opts.srcdir / "Module.symvers"
    symvers = ModuleSymvers.load(symvers_path) if symvers_path.exists() else None
    tables: dict[Path, KernelSymbolTable] = {}
    outputs: list[Path] = []
    funcs_changed: list[str] = []
    funcs_new: list[str] = []
    reasons: list[str] = []
    for i, obj in enumerate(changed, 1):
        module = modules.get(obj.path)
        if module is None:
            parent, table_path = "vmlinux", vmlinux
        else:
            parent = module
            ko = module_file(opts.srcdir, obj.path, module)
            if ko is None:
                raise TreeError(f"{obj.path} belongs to module {module}, whose .ko was not built")
            table_path = ko
        table = tables.get(table_path) or tables.setdefault(table_path, KernelSymbolTable.load(table_path))
        out = scratch / "diff" / f"{i:03d}-{Path(obj.path).stem}.o"
        out.parent.mkdir(parents=True, exist_ok=True)
        stages.progress(f"diff [{i}/{len(changed)}] {obj.path} (parent {parent})")
        try:
            result = run_diff(str(obj.orig), str(obj.patched), parent, table, symvers, sizes, str(out))
        except NoChangeError:
            continue
        except UnsupportedChangeError as err:
            reasons += [f"{obj.path}: {r}" for r in err.reasons]
            continue
        funcs_changed += [f"{obj.path}: {n}" for n in result.changed]
        funcs_new += [f"{obj.path}: {n}" for n in result.new]
        for line in result.changed:
            stages.progress(f"  changed function: {line}")
        for line in result.new:
            stages.progress(f"  new function: {line}")
        outputs.append(out)
    if reasons:
        # The command prints only the message: the reasons go to stderr here, one per line.
        for reason in reasons:
            stages.progress(f"  unsupported: {reason}")
        raise UnsupportedChangeError(reasons, f"the patch cannot be live patched: {len(reasons)} problem(s)")
    if not outputs:
        raise NoChangeError("no changed functions were found: the patch changes nothing that can be live patched")
    return outputs, funcs_changed, funcs_new


@contextlib.contextmanager
def tree_lock(tree: Path, progress: Progress):
    """One kpatch-build per tree at a time: two would patch and build the same files."""
    digest = hashlib.sha256(str(tree.resolve()).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"pykpatch-tree-{digest}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another kpatch-build using {tree} to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def kpatch_build(opts: BuildOptions, progress: Progress) -> BuildResult:
    with tree_lock(opts.srcdir, progress):
        return _kpatch_build_locked(opts, progress)


def _kpatch_build_locked(opts: BuildOptions, progress: Progress) -> BuildResult:
    opts.cachedir.mkdir(parents=True, exist_ok=True)
    log = opts.cachedir / "build.log"
    log.write_text(f"pykpatch kpatch-build {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    stages = Stages(progress, log)
    tree = KernelTree(opts.srcdir, log, opts.jobs)
    scratch = Path(tempfile.mkdtemp(prefix="pykpatch-build-", dir=opts.cachedir))
    keep = opts.debug or opts.skip_cleanup
    try:
        vmlinux, config_text = check_inputs(opts, tree, stages)
        stages.start("patches", f"checking {len(opts.patches)} patch(es)")
        files = PatchSession(opts.srcdir, opts.patches, opts.cachedir).check()
        key = build_key(tree, config_text, kernelinfo.compiler_of("gcc"))
        stages.start("orig", "original build")
        OriginalBuild(tree, opts.cachedir, key).ensure(opts.targets or ["vmlinux", "modules"], stages.progress)
        _check_release(tree, vmlinux)
        sizes = struct_sizes(opts, key, tree)
        changed = patched_build(opts, tree, files, scratch, stages, compile_originals=True)
        if not changed:
            raise NoChangeError("the patched build produced no changed objects")
        outputs, funcs_changed, funcs_new = diff_objects(opts, vmlinux, changed, sizes, scratch, stages)
        name = sanitize_name(opts.name or _default_name(opts.patches))
        stages.start("module", f"building {name}.ko")
        opts.outdir.mkdir(parents=True, exist_ok=True)
        target = opts.outdir / f"{name}.ko"
        build_module(outputs, opts.srcdir, name, target, replace=opts.replace, jobs=opts.jobs, log=log,
                     keep=scratch / "module" if keep else None)
        stages.finish()
        progress(f"done: {target}")
        return BuildResult(target, [c.path for c in changed], funcs_changed, funcs_new, stages.timings)
    except PykpatchError as err:
        if err.hint is None and "build.log" not in err.message:
            err.hint = f"the full log is {log}"
        raise
    finally:
        if keep:
            progress(f"scratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
