"""kpatch-build, stage by stage: the one public entry (``kpatch_build``), used by the command and the tests.

    check    patches parsed and checked (nothing touched yet); the per-tree
             cache and its lock; a killed run's leftovers put back; tree,
             vmlinux, release, compiler, signing key            (check.py)
    patches  the dry run, which *is* the application, in a scratch copy
    orig     the original objects: a cached full build, or compiled on
             demand in a tree that is already built               (original.py)
    patched  compile originals and patched objects, journaled; tree put
             back; version CRCs of exports compared               (patched.py)
    diff     every changed object against its parent's symbols     (diff.py)
    module   kbuild the module, klp conversion, signing            (kmod.py)

Data handed on: ``PatchPlan`` (check -> patched), ``TargetKernel`` (check ->
diff), ``ChangedObject`` list (patched -> diff), ``DiffOutputs`` (diff ->
module).  Progress goes to the caller's ``progress``; everything the tools
print goes to the per-tree ``build.log``, which error messages name.
"""

from __future__ import annotations

import shutil

from pykpatch.errors import NoChangeError, PykpatchError, UnsupportedChangeError
from pykpatch.kbuild.config import read_config
from pykpatch.kbuild.tree import KernelTree
from pykpatch.kpatch_build import check
from pykpatch.kpatch_build.context import BuildContext, BuildOptions, BuildResult, Progress, Stages
from pykpatch.kpatch_build.diff import DiffOutputs, diff_objects
from pykpatch.kpatch_build.kmod import build_module, default_module_name, module_name_string
from pykpatch.kpatch_build.original import OriginalBuild, build_key
from pykpatch.kpatch_build.patched import patched_build
from pykpatch.kpatch_build.patches import PatchFile, all_names, check_in_tree
from pykpatch.kpatch_build.signing import resolve_signing
from pykpatch.kpatch_build.struct_sizes import cached_struct_sizes
from pykpatch.kpatch_build.workspace import TreeWorkspace
from pykpatch.safeio import atomic_write_text


def kpatch_build(opts: BuildOptions, progress: Progress) -> BuildResult:
    """From patch files to a livepatch module (see the module docstring)."""
    patches = check.read_patches(opts)           # hostile input is refused before anything is created
    check.require_kernel_tree(opts.srcdir)
    check_in_tree(opts.srcdir, all_names(patches))
    name = module_name_string(opts.name) if opts.name else default_module_name(opts.patches)
    workspace = TreeWorkspace(opts.cachedir, opts.srcdir).create()
    with workspace.locked(progress):
        return _run(opts, progress, workspace, patches, name)


def prepare_tree(opts: BuildOptions, progress: Progress) -> str:
    """kpatch-build's stages before any patch is applied (check, orig), alone; returns the orig mode.

    For a tree that will be patched many times (a test suite, a fleet of
    fixes): the full original build, if one is needed, is done here once.
    """
    check.require_kernel_tree(opts.srcdir)
    workspace = TreeWorkspace(opts.cachedir, opts.srcdir).create()
    with workspace.locked(progress):
        atomic_write_text(workspace.log, f"pykpatch kpatch-build (prepare) of {opts.srcdir}\n", mode=0o600)
        stages = Stages(progress, workspace.log)
        ctx = BuildContext(opts, workspace, stages, KernelTree(opts.srcdir, workspace.log, opts.jobs),
                           workspace.new_scratch())
        try:
            stages.start("check", "checking the kernel tree, config, vmlinux and compiler")
            check.recover_interrupted_run(ctx)
            target = check.check_target(ctx)
            stages.start("orig", "original build")
            key = build_key(ctx.tree, target.config_text, target.compiler)
            return OriginalBuild(ctx.tree, workspace.stamp, key).ensure(opts.targets or ["vmlinux", "modules"],
                                                                        ctx.progress)
        finally:
            shutil.rmtree(ctx.scratch, ignore_errors=True)


def _run(opts: BuildOptions, progress: Progress, workspace: TreeWorkspace, patches: list[PatchFile],
         name: str) -> BuildResult:
    atomic_write_text(workspace.log, f"pykpatch kpatch-build of {opts.srcdir}\n", mode=0o600)
    stages = Stages(progress, workspace.log)
    ctx = BuildContext(opts, workspace, stages, KernelTree(opts.srcdir, workspace.log, opts.jobs),
                       workspace.new_scratch())
    keep = opts.debug or opts.skip_cleanup
    try:
        stages.start("check", "checking the kernel tree, config, vmlinux and compiler")
        check.recover_interrupted_run(ctx)
        target = check.check_target(ctx)
        config = read_config(opts.srcdir / ".config")
        signing = resolve_signing(opts.signing, opts.srcdir, config, workspace.root)
        if check.tree_knows_its_release(opts.srcdir):
            check.check_release(opts.srcdir, target)
        plan = check.plan_patches(ctx, patches)

        key = build_key(ctx.tree, target.config_text, target.compiler)
        stages.start("orig", "original build")
        OriginalBuild(ctx.tree, workspace.stamp, key).ensure(opts.targets or ["vmlinux", "modules"], ctx.progress)
        check.check_release(opts.srcdir, target)
        sizes = cached_struct_sizes(opts.srcdir, workspace.struct_sizes, key, ctx.scratch / "probe", workspace.log)

        changed = patched_build(ctx, plan)
        if not changed:
            raise NoChangeError("the patched build produced no changed objects")
        diffs = diff_objects(ctx, target.vmlinux, changed, sizes)
        refuse_empty_replace(diffs, opts)

        stages.start("module", f"building {name}.ko")
        opts.outdir.mkdir(parents=True, exist_ok=True)
        target_ko = opts.outdir / f"{name}.ko"
        module = build_module(diffs.outputs, opts.srcdir, name, target_ko, replace=opts.replace, jobs=opts.jobs,
                              log=workspace.log, keep=ctx.scratch / "module" if keep else None, signing=signing,
                              workdir=workspace.root / "module")
        if module.signed_with:
            progress(f"signed with {module.signed_with}")
        stages.finish()
        progress(f"done: {target_ko}")
        return BuildResult(target_ko, [c.path for c in changed], diffs.changed, diffs.new, stages.timings,
                           module.signed_with)
    except UnsupportedChangeError as err:
        # The command prints only the message: the reasons go to stderr here, one per line.
        for reason in err.reasons:
            progress(f"  unsupported: {reason}")
        _name_the_log(err, workspace)
        raise
    except PykpatchError as err:
        _name_the_log(err, workspace)
        raise
    finally:
        if keep:
            progress(f"scratch directory kept: {ctx.scratch}")
        else:
            shutil.rmtree(ctx.scratch, ignore_errors=True)


def _name_the_log(err: PykpatchError, workspace: TreeWorkspace) -> None:
    if err.hint is None and "build.log" not in err.message:
        err.hint = f"the full log is {workspace.log}"


def refuse_empty_replace(diffs: DiffOutputs, opts: BuildOptions) -> None:
    """A replace-mode module that patches no function would only unpatch everything loaded before it.

    Seen with kpatch's own "module" test patch on a kernel without that
    module: only a callback was left, and loading the result silently
    removed every live patch on the machine.
    """
    if diffs.patched_functions or not opts.replace or opts.allow_empty_replace:
        return
    raise UnsupportedChangeError(
        ["the module would patch no function: in replace mode (the default) loading it would remove every "
         "live patch loaded before it and patch nothing"],
        "the live patch patches no function",
        hint="build it with --non-replace to stack it on the loaded patches, or pass --allow-empty-replace "
             "if removing them is what you want",
    )
