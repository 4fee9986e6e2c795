"""Stage "diff": every changed object against its parent's symbol table (vmlinux or its module).

Each object that differs after the patched build goes through the diff
engine (``pykpatch.diff``, kpatch's create-diff-object) with the symbol
table of the object it is linked into in the running kernel: vmlinux, or
the ``.ko`` of its module.  Unsupported changes of all objects are gathered
and reported together; objects whose differences are not live-patch
relevant (line numbers only) drop out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pykpatch.diff import run_diff
from pykpatch.errors import NoChangeError, UnsupportedChangeError
from pykpatch.kpatch_build.context import BuildContext
from pykpatch.kpatch_build.patched import ChangedObject
from pykpatch.kpatch_build.reach import Reached
from pykpatch.symtab import ModuleSymvers


@dataclass
class DiffOutputs:
    """What the module stage links: one diff output per object, and what they patch."""

    outputs: list[Path] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)   # "obj: function"
    new: list[str] = field(default_factory=list)
    patched_functions: int = 0                        # klp_func entries in all outputs


def diff_objects(ctx: BuildContext, reached: dict[str, Reached], changed: list[ChangedObject],
                 sizes: dict[str, int], symvers_path: Path) -> DiffOutputs:
    ctx.stages.start("diff", f"diff: {len(changed)} changed object(s)")
    symvers = ModuleSymvers.load(symvers_path) if symvers_path.exists() else None
    result = DiffOutputs()
    reasons: list[str] = []
    for i, obj in enumerate(changed, 1):
        parent = reached[obj.path].parent
        table = ctx.symtab(reached[obj.path].symtab)
        out = ctx.scratch / "diff" / f"{i:03d}-{Path(obj.path).stem}.o"
        out.parent.mkdir(parents=True, exist_ok=True)
        ctx.progress(f"diff [{i}/{len(changed)}] {obj.path} (parent {parent})")
        try:
            found = run_diff(str(obj.orig), str(obj.patched), parent, table, symvers, sizes, str(out))
        except NoChangeError:
            continue
        except UnsupportedChangeError as err:
            reasons += [f"{obj.path}: {r}" for r in err.reasons]
            continue
        result.changed += [f"{obj.path}: {n}" for n in found.changed]
        result.new += [f"{obj.path}: {n}" for n in found.new]
        result.patched_functions += len(found.funcs)
        for line in found.changed:
            ctx.progress(f"  changed function: {line}")
        for line in found.new:
            ctx.progress(f"  new function: {line}")
        result.outputs.append(out)
    if reasons:
        raise UnsupportedChangeError(reasons, f"the patch cannot be live patched: {len(reasons)} problem(s)")
    if not result.outputs:
        raise NoChangeError("no changed functions were found: the patch changes nothing that can be live patched")
    return result
