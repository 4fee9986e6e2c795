"""What kbuild would compile in some directories, and for which module, without compiling (``make -n``).

In a tree that was never built there are no .cmd or .mod files to ask; but
``make -n DIR/`` prints every command kbuild would run for the objects the
configuration selects in DIR (and below), writing nothing: each compile line
carries ``-c -o OBJ SRC`` and either ``-DMODULE`` (part of a module) or
``-DKBUILD_MODFILE`` (built in), and each module's ``.mod`` line lists its
objects.  That is kbuild's own reading of the Makefiles and the config, so
nothing here re-implements ``obj-$(CONFIG_FOO)`` rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pykpatch.errors import KbuildError
from pykpatch.kbuild.make import run_make

_COMPILE = re.compile(r"\s-c -o (\S+\.o) (\S+\.c)(?=\s|;|$)")
_MODFILE = re.compile(r"-DKBUILD_MODFILE='\"([^\"]+)\"'")
_MODULE_FLAG = re.compile(r"(?:^|\s)-DMODULE(?=\s)")
_MOD_LIST = re.compile(r"printf '%s\\n'\s+([^|']*?)\s*\| "
                       r"awk '!x\[\$0\]\+\+ \{ print\(\"([^\"]*)\"\$0\) \}' > (\S+)\.mod")
DRY_RUN_TIMEOUT = 1800.0


@dataclass(frozen=True)
class CompileUnit:
    """One object kbuild builds: from which source, into vmlinux or into which module (kbuild path)."""

    obj: str
    source: str
    module: str | None  # "drivers/input/misc/pcspkr" (the .ko's path without .ko), None: built in

    @property
    def module_name(self) -> str | None:
        """The module's name as the kernel spells it (``-`` becomes ``_``)."""
        return self.module.rsplit("/", 1)[-1].replace("-", "_") if self.module else None


def parse_dry_run(output: str) -> dict[str, CompileUnit]:
    """The compile units of a ``make -n`` listing (see the module docstring)."""
    members: dict[str, str] = {}
    for m in _MOD_LIST.finditer(output):
        objs, prefix, module = m.group(1).split(), m.group(2), m.group(3)
        for obj in objs:
            members[f"{prefix}{obj}"] = module
    units: dict[str, CompileUnit] = {}
    for line in output.splitlines():
        compile_line = _COMPILE.search(line)
        if compile_line is None or line.lstrip().startswith("printf"):
            continue
        obj, source = compile_line.group(1), compile_line.group(2)
        if obj in units:
            continue
        if _MODULE_FLAG.search(line):
            units[obj] = CompileUnit(obj, source, members.get(obj, obj.removesuffix(".o")))
        elif _MODFILE.search(line):
            units[obj] = CompileUnit(obj, source, None)
    return units


def configured_units(tree: Path, dirs: Iterable[str], log: Path, variables: dict[str, str] | None = None
                     ) -> dict[str, CompileUnit]:
    """``make -n DIR/ ...`` in ``tree``: the objects the configuration builds in those directories."""
    targets = sorted({d.rstrip("/") + "/" for d in dirs})
    if not targets:
        return {}
    run = run_make(tree, ["-n", *targets], log=log, what="asking kbuild what it would compile (make -n)",
                   variables=variables, capture=True, check=False, timeout=DRY_RUN_TIMEOUT)
    if run.returncode != 0:
        raise KbuildError(f"make -n {' '.join(targets[:3])}... failed (exit {run.returncode}); see {log}")
    return parse_dry_run(run.output)
