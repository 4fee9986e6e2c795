"""The kpatch-build recipe, by hand, for the lab kernel's acceptance tests.

A ``Scenario`` names a source file of the lab tree, the edits that make it
compile as a scratch object (applied to both copies), and the patch
(applied to the patched copy only).  ``Builder.compile_pair`` builds both
copies with ``-ffunction-sections -fdata-sections`` in scratch directories
(``make -C TREE M=DIR file.o``), ``Builder.diff`` runs the diff against the
parent (vmlinux or a module's name), and ``Builder.livepatch`` turns one or
more diffs into a ``livepatch-*.ko`` with ``pykpatch.kpatch_build.kmod.build_module``.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pykpatch.diff import run_diff
from pykpatch.diff.engine import DiffResult
from pykpatch.kpatch_build.kmod import ModuleResult, build_module, sanitize_name
from pykpatch.lab import KernelBuild
from pykpatch.symtab import KernelSymbolTable, ModuleSymvers

# x86-64 6.1 lab kernel, measured with a probe module compiled in the lab
# tree (sizeof of each struct); CONFIG_PRINTK_INDEX is off, so no
# .printk_index entries exist and its size is never used.
STRUCT_SIZES = {
    "BUG_STRUCT_SIZE": 12,          # struct bug_entry (relative pointers, BUGVERBOSE)
    "EX_STRUCT_SIZE": 12,           # struct exception_table_entry
    "JUMP_STRUCT_SIZE": 16,         # struct jump_entry (relative)
    "ALT_STRUCT_SIZE": 12,          # struct alt_instr
    "PARA_STRUCT_SIZE": 16,         # struct paravirt_patch_site
    "ORC_STRUCT_SIZE": 6,           # struct orc_entry
    "STATIC_CALL_STRUCT_SIZE": 8,   # struct static_call_site
    "PRINTK_INDEX_STRUCT_SIZE": 32,  # struct pi_entry (unused: CONFIG_PRINTK_INDEX=n)
}

KCFLAGS = "-ffunction-sections -fdata-sections"
DATA_DIR = Path(str(resources.files("pykpatch").joinpath("data")))


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` by ``new`` exactly ``count`` times (the count is checked)."""

    old: str
    new: str
    count: int = 1

    def apply(self, text: str, where: str) -> str:
        found = text.count(self.old)
        if found != self.count:
            raise AssertionError(f"{where}: {self.old!r} occurs {found} times, expected {self.count}")
        return text.replace(self.old, self.new)


def edits(*pairs: tuple) -> tuple[Edit, ...]:
    return tuple(Edit(*p) for p in pairs)


@dataclass(frozen=True)
class Scenario:
    """One source file of the tree, made buildable, and a change to it."""

    source: str                              # path in the tree, e.g. fs/proc/cmdline.c
    prepare: tuple[Edit, ...] = ()           # applied to both copies
    patch: tuple[Edit, ...] = ()             # applied to the patched copy only
    ccflags: str = ""                        # extra ccflags-y in the scratch Kbuild
    # Compile as built-in code (obj-y: no -DMODULE), as the kernel build did.
    # A built-in file compiled as a module object can get its function-local
    # statics numbered differently (consoles.c: con_flags.0 becomes
    # con_flags.2), and then its locals no longer match vmlinux's.
    builtin: bool = False

    @property
    def stem(self) -> str:
        return Path(self.source).stem


@dataclass
class Pair:
    orig: Path
    patched: Path


def as_module_object(first_include: str, initcall: str) -> tuple[Edit, ...]:
    """Edits that let a built-in file with an initcall compile as a module object."""
    return edits((first_include, "#include <linux/module.h>\n" + first_include),
                 (f"fs_initcall({initcall});", f"module_init({initcall});"))


class Builder:
    """Compiles, diffs and links livepatch modules against one lab kernel.

    Identical compiles (same text, same flags) are done once: the original
    of a file shared by several patches is built a single time.
    """

    def __init__(self, kernel: KernelBuild, workdir: Path) -> None:
        self.kernel = kernel
        self.workdir = workdir
        self._objects: dict[str, Path] = {}

    def compile(self, scenario: Scenario, text: str) -> Path:
        name = Path(scenario.source).name
        kbuild = f"obj-{'y' if scenario.builtin else 'm'} := {scenario.stem}.o\n"
        if scenario.ccflags:
            kbuild += f"ccflags-y += {scenario.ccflags}\n"
        files = {name: text, "Kbuild": kbuild}
        key = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:16]
        if key in self._objects:
            return self._objects[key]
        directory = self.workdir / "objects" / f"{scenario.stem}-{key}"
        directory.mkdir(parents=True, exist_ok=True)
        for fname, content in files.items():
            (directory / fname).write_text(content)
        obj = f"{scenario.stem}.o"
        proc = subprocess.run(["make", "-C", str(self.kernel.tree), f"M={directory}", f"KCFLAGS={KCFLAGS}", obj],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError(f"compiling {directory / name} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        self._objects[key] = directory / obj
        return directory / obj

    def compile_pair(self, scenario: Scenario) -> Pair:
        """Compile the prepared original and the patched copy in scratch dirs."""
        text = (self.kernel.tree / scenario.source).read_text()
        for e in scenario.prepare:
            text = e.apply(text, f"{scenario.source} (prepare)")
        patched = text
        for e in scenario.patch:
            patched = e.apply(patched, f"{scenario.source} (patch)")
        return Pair(self.compile(scenario, text), self.compile(scenario, patched))

    def diff(self, pair: Pair, out: Path, parent: str = "vmlinux") -> DiffResult:
        """Diff against vmlinux or a module of the lab build (``parent`` = module name)."""
        kernel = self.kernel
        table_path = kernel.vmlinux if parent == "vmlinux" else kernel.module(parent)
        return run_diff(str(pair.orig), str(pair.patched), parent, KernelSymbolTable.load(table_path),
                        ModuleSymvers.load(kernel.module_symvers), dict(STRUCT_SIZES), str(out))

    def livepatch(self, name: str, *parts: Scenario | tuple[Scenario, str], replace: bool = True) -> Livepatch:
        """Compile, diff (each part against its parent, vmlinux by default) and link one module."""
        workdir = self.workdir / name
        outputs, reports = [], []
        for i, part in enumerate(parts):
            scenario, parent = part if isinstance(part, tuple) else (part, "vmlinux")
            out = workdir / f"{i}-{scenario.stem}.o"
            out.parent.mkdir(parents=True, exist_ok=True)
            reports.append(self.diff(self.compile_pair(scenario), out, parent))
            outputs.append(out)
        result = build_module(outputs, self.kernel.tree, sanitize_name(name), workdir / f"livepatch-{name}.ko",
                              replace=replace,
                              keep=workdir / "kbuild")
        return Livepatch(result.path, result.name.replace("-", "_"), reports, result)


@dataclass
class Livepatch:
    ko: Path
    modname: str           # as lsmod and sysfs spell it (underscores)
    reports: list[DiffResult]
    result: ModuleResult

    @property
    def sysfs(self) -> str:
        return f"/sys/kernel/livepatch/{self.modname}"

    @property
    def klp_symbols(self) -> list[dict]:
        return [k for r in self.reports for k in r.klp_symbols]

    @property
    def funcs(self) -> list[dict]:
        return [f for r in self.reports for f in r.funcs]


def console_lines(console: str, marker: str) -> list[str]:
    """Kernel log lines containing ``marker``, without their timestamps."""
    out = []
    for line in console.splitlines():
        if marker in line:
            out.append(line.split("] ", 1)[-1].strip() if line.startswith("[") else line.strip())
    return out
