"""kpatch-build, stage by stage: the one public entry (``kpatch_build``), used by the command and the tests.

    route    where the pieces come from: -s/-c/-v, or the distribution's
             packages for --kernel RELEASE (fetched into the cache)  (route.py)
    check    patches parsed and checked (nothing touched yet); the per-tree
             cache and its lock; a killed run's leftovers put back; vmlinux,
             release, compiler, tools, disk, signing key          (check.py)
    patches  the dry run, which *is* the application, in a scratch copy
    orig     the original objects' ground:
               built     a tree built before (cached kpatch build, or by
                         anyone: originals are recompiled on demand) (original.py)
               targeted  a tree never built: configured and prepared once,
                         originals compiled on demand             (prepare.py)
               full      --full-build: the whole tree, once, cached (original.py)
    patched  the objects the patches reach (reach.py), compiled before and
             after patching, journaled; the tree put back; export CRCs
             compared                                             (patched.py)
    guard    the originals match the running kernel's binaries     (guard.py)
    diff     every changed object against its parent's symbols     (diff.py)
    module   kbuild the module, klp conversion, signing            (kmod.py)

Data handed on: ``Route`` (route -> all), ``PatchPlan`` (check -> patched),
``TargetKernel`` (check -> diff), ``Reached`` list (orig -> patched, guard,
diff), ``ChangedObject`` list (patched -> diff), ``DiffOutputs`` (diff ->
module).  Progress goes to ``progress``; everything the tools print goes to
the per-tree ``build.log``, which error messages name.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from pykpatch.distro.base import DistroProvider
from pykpatch.errors import KernelMismatchError, NoChangeError, PykpatchError, TreeError, UnsupportedChangeError
from pykpatch.kbuild.config import read_config, srcarch_of
from pykpatch.kbuild.includes import IncludeGraph
from pykpatch.kbuild.tree import KernelTree
from pykpatch.kpatch_build import check
from pykpatch.kpatch_build.context import BuildContext, BuildOptions, BuildResult, Progress, Stages
from pykpatch.kpatch_build.diff import DiffOutputs, diff_objects
from pykpatch.kpatch_build.guard import guard_originals
from pykpatch.kpatch_build.kmod import build_module, default_module_name, module_name_string
from pykpatch.kpatch_build.original import FULL_TARGETS, OriginalBuild, build_key, estimate_full_build
from pykpatch.kpatch_build.patched import patched_build
from pykpatch.kpatch_build.patches import PatchFile, all_names, check_in_tree
from pykpatch.kpatch_build.prepare import (
    check_against_reference,
    compiler_program,
    configure,
    prepare,
    release_of_variables,
)
from pykpatch.kpatch_build.reach import Parents, Reached, reached_in_built_tree, reached_in_prepared_tree
from pykpatch.kpatch_build.route import Route, resolve_route
from pykpatch.kpatch_build.signing import resolve_signing
from pykpatch.kpatch_build.struct_sizes import cached_struct_sizes
from pykpatch.kpatch_build.workspace import TreeWorkspace
from pykpatch.safeio import atomic_write_text

# What the targeted route writes besides the sources (prepared tree, a few objects, packages).
TARGETED_DISK = 3 * 10**9


@dataclass
class Ground:
    """What the orig stage leaves for the patched stage: how objects are found, the key, the mode."""

    mode: str          # "cached", "on-demand", "built", "prepared", "prepared (cached)"
    key: str
    built_tree: bool   # kbuild's .cmd/.mod records exist


def kpatch_build(opts: BuildOptions, progress: Progress, provider: DistroProvider | None = None) -> BuildResult:
    """From patch files to a livepatch module (see the module docstring)."""
    patches = check.read_patches(opts)           # hostile input is refused before anything is created
    if opts.srcdir is not None:
        check.require_kernel_tree(opts.srcdir)
        check_in_tree(opts.srcdir, all_names(patches))
    name = module_name_string(opts.name) if opts.name else default_module_name(opts.patches)
    route = resolve_route(opts, progress, provider)
    if opts.srcdir is None:
        check_in_tree(route.srcdir, all_names(patches))
    workspace = TreeWorkspace(opts.cachedir, route.srcdir).create()
    with workspace.locked(progress):
        return _run(opts, route, progress, workspace, patches, name)


def prepare_tree(opts: BuildOptions, progress: Progress, provider: DistroProvider | None = None) -> str:
    """kpatch-build's stages before any patch is applied (route, check, orig), alone; returns the orig mode.

    For a tree that will be patched many times (a test suite, a fleet of
    fixes): the full original build or the preparation is done here once.
    """
    route = resolve_route(opts, progress, provider)
    check.require_kernel_tree(route.srcdir)
    workspace = TreeWorkspace(opts.cachedir, route.srcdir).create()
    with workspace.locked(progress):
        ctx = _context(opts, route, progress, workspace)
        try:
            target, _config = _check(ctx, route)
            return _orig(ctx, route, target).mode
        finally:
            shutil.rmtree(ctx.scratch, ignore_errors=True)


def _context(opts: BuildOptions, route: Route, progress: Progress, workspace: TreeWorkspace) -> BuildContext:
    atomic_write_text(workspace.log, f"pykpatch kpatch-build of {route.srcdir}\n", mode=0o600)
    stages = Stages(progress, workspace.log)
    return BuildContext(opts, route.srcdir, workspace, stages, KernelTree(route.srcdir, workspace.log, opts.jobs),
                        workspace.new_scratch())


def _check(ctx: BuildContext, route: Route) -> tuple[check.TargetKernel, dict[str, str | None]]:
    opts = ctx.opts
    ctx.stages.start("check", "checking the kernel tree, config, vmlinux, compiler and tools")
    check.recover_interrupted_run(ctx)
    check_against_reference(route.inputs)
    config_path = route.inputs.config or (route.srcdir / ".config")
    if not config_path.is_file():
        raise TreeError(f"{route.srcdir} has no .config", hint="give the kernel's config with -c CONFIG")
    config = read_config(config_path)
    cross = check.cross_variables(opts.arch, config)
    ctx.tree.variables.update(cross)
    cc = compiler_program(route.inputs.kernelvariables or route.srcdir / ".kernelvariables", config) or \
        cross.get("CROSS_COMPILE", "") + "gcc"
    if cc != "gcc" and not (route.inputs.kernelvariables or (route.srcdir / ".kernelvariables").is_file()):
        ctx.tree.variables["CC"] = cc
    ctx.tree.variables.update(hidden_tools(config))
    target = check.check_target(ctx, route.vmlinux, cc)
    check.check_compile_wrappers(ctx, cc)
    check.check_config_compiler(cc, config, opts.skip_compiler_check)
    check.check_tools(config)
    release = release_of_variables(route.inputs.kernelvariables)
    if release is not None and release != target.release:
        raise KernelMismatchError(
            f"the kernel's packages build release {release}, but {target.vmlinux} is {target.release}",
            kernel=target.release, local=release, hint="give the vmlinux of that release, or its --kernel")
    if not route.inputs.kernelvariables:
        check.check_release(route.srcdir, target)
    return target, config


# Tools kconfig probes (their versions go into the config) that C code never uses: when the
# kernel was built where they were absent (version 0), they are hidden here too, or kconfig
# would record this machine's versions and the config would no longer be the kernel's.
# Seen: Debian's 6.12 config has CONFIG_RUSTC_VERSION=0; a machine with rustc gives 109500.
PROBED_TOOLS = (("CONFIG_RUSTC_VERSION", ("RUSTC", "HOSTRUSTC")), ("CONFIG_BINDGEN_VERSION", ("BINDGEN",)))


def hidden_tools(config: dict[str, str | None]) -> dict[str, str]:
    """make variables naming a missing program for each probed tool the kernel's build did not have."""
    hidden = {}
    for option, variables in PROBED_TOOLS:
        if config.get(option) == "0":
            hidden.update({v: "pykpatch-absent-when-the-kernel-was-built" for v in variables})
    return hidden


def _orig(ctx: BuildContext, route: Route, target: check.TargetKernel) -> Ground:
    opts, tree = ctx.opts, ctx.tree
    ctx.stages.start("orig", "original build")
    existing = OriginalBuild(tree, ctx.workspace.stamp, "")
    if existing.tree_is_built() and route.inputs.config is None:
        config_text = (route.srcdir / ".config").read_text()
        key = build_key(tree, config_text, target.compiler)
        mode = OriginalBuild(tree, ctx.workspace.stamp, key).ensure(opts.targets or FULL_TARGETS, ctx.progress,
                                                                    full=False)
        check.check_release(route.srcdir, target)
        return Ground(mode, key, built_tree=True)
    config_text = configure(tree, route.inputs, ctx.progress)
    key = build_key(tree, config_text, target.compiler)
    if opts.full_build:
        check.check_disk(route.srcdir, estimate_full_build(tree, ctx.progress).bytes, "a full build")
        mode = OriginalBuild(tree, ctx.workspace.stamp, key).ensure(opts.targets or FULL_TARGETS, ctx.progress,
                                                                    full=True)
        check.check_release(route.srcdir, target)
        return Ground(mode, key, built_tree=True)
    check.check_disk(ctx.workspace.root, TARGETED_DISK // 10, "preparing the tree")
    mode = prepare(tree, ctx.workspace.root / "prepared.json", key, ctx.progress)
    if not check.check_release(route.srcdir, target):
        raise TreeError(f"{route.srcdir}: the prepared tree does not say which release it builds")
    return Ground(mode, key, built_tree=False)


def _reach(ctx: BuildContext, route: Route, ground: Ground, files: list[str]) -> list[Reached]:
    parents = Parents(route.vmlinux, route.modules,
                      route.artifacts.module_symbols if route.artifacts is not None else None)
    if ground.built_tree:
        return reached_in_built_tree(route.srcdir, files, parents, ctx.progress)
    graph = IncludeGraph.cached(route.srcdir, srcarch_of(read_config(route.srcdir / ".config")),
                                ctx.workspace.root / "include-graph.json",
                                ctx.tree.source_version())
    return reached_in_prepared_tree(route.srcdir, files, parents, graph, ctx.log, ctx.progress)


def _run(opts: BuildOptions, route: Route, progress: Progress, workspace: TreeWorkspace, patches: list[PatchFile],
         name: str) -> BuildResult:
    ctx = _context(opts, route, progress, workspace)
    keep = opts.debug or opts.skip_cleanup
    try:
        target, config = _check(ctx, route)
        signing = resolve_signing(opts.signing, route.srcdir, config, workspace.root)
        plan = check.plan_patches(ctx, patches)
        ground = _orig(ctx, route, target)
        ctx.kcflags_tree = ground.mode in ("cached", "built")
        sizes = cached_struct_sizes(route.srcdir, workspace.struct_sizes, ground.key, ctx.scratch / "probe",
                                    workspace.log, ctx.tree.variables)
        reached = _reach(ctx, route, ground, plan.files)
        changed = patched_build(ctx, plan, [r.obj for r in reached])
        ctx.stages.start("guard", f"guard: {len(reached)} original object(s) against the kernel's binaries")
        guard_originals(reached, ctx.scratch / "orig", ctx.symtab, ctx.progress)
        if not changed:
            raise NoChangeError("the patched build produced no changed objects")
        diffs = diff_objects(ctx, {r.obj: r for r in reached}, changed, sizes,
                             route.inputs.symvers or route.srcdir / "Module.symvers")
        refuse_empty_replace(diffs, opts)

        ctx.stages.start("module", f"building {name}.ko")
        opts.outdir.mkdir(parents=True, exist_ok=True)
        target_ko = opts.outdir / f"{name}.ko"
        module = build_module(diffs.outputs, route.srcdir, name, target_ko, replace=opts.replace, jobs=opts.jobs,
                              log=workspace.log, keep=ctx.scratch / "module" if keep else None, signing=signing,
                              workdir=workspace.root / "module", variables=ctx.tree.variables)
        if module.signed_with:
            progress(f"signed with {module.signed_with}")
        ctx.stages.finish()
        progress(f"done: {target_ko} ({ctx.stages.summary()})")
        return BuildResult(target_ko, [c.path for c in changed], diffs.changed, diffs.new, ctx.stages.timings,
                           module.signed_with, kbuild_seconds=round(ctx.tree.make_seconds, 2))
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
