"""Helpers of the kpatch guest tests: the test modules, the guest's kpatch, step output parsing."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pykpatch.lab import BootResult, Step
from pykpatch.lab.guest import pykpatch_files, write_kpatch_wrapper

SOURCES = Path(__file__).parent / "guest_modules"
MODULES = ("klp-helper", "livepatch-cmdline-a", "livepatch-cmdline-b", "livepatch-helper-fix", "livepatch-bogus")
LP = "/sys/kernel/livepatch"

# Prints the livepatch sysfs tree as "PATCH enabled transition OBJECT:patched:FUNCTION,POS ..." lines.
SYSFS_DUMP = (
    f'for d in {LP}/*/; do [ -d "$d" ] || continue; n=$(basename "$d"); '
    'line="$n $(cat "$d/enabled") $(cat "$d/transition")"; '
    'for o in "$d"*/; do [ -d "$o" ] || continue; '
    'for f in "$o"*/; do [ -d "$f" ] || continue; '
    'line="$line $(basename "$o"):$(cat "$o/patched"):$(basename "$f")"; done; done; echo "$line"; done'
)


def build_guest_modules(kbuild_tree: Path, out: Path) -> dict[str, Path]:
    """Build the test modules with ``make -C kbuild_tree M=out`` (lab tree or Debian headers)."""
    shutil.copytree(SOURCES, out, dirs_exist_ok=True)
    proc = subprocess.run(["make", "-C", str(kbuild_tree), f"M={out}", "modules"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"building the guest modules failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return {name: out / f"{name}.ko" for name in MODULES}


def guest_files(modules: dict[str, Path], workdir: Path) -> dict[str, Path]:
    """The payload: this pykpatch with a ``kpatch`` command, and the modules under ``ko/``."""
    ko = workdir / "ko"
    ko.mkdir(parents=True, exist_ok=True)
    for path in modules.values():
        shutil.copy2(path, ko / path.name)
    return {**pykpatch_files(), "bin": write_kpatch_wrapper(workdir / "bin").parent, "ko": ko}


def status(command: str) -> Step:
    """A step whose exit status is expected to be non-zero sometimes: it prints ``rc=N`` last."""
    return Step(f"{command}; echo rc=$?", check=False)


@dataclass
class Run:
    """One guest run's step outputs, by the names the test gave its steps."""

    result: BootResult
    names: list[str]

    def out(self, name: str) -> str:
        return self.result.steps[self.names.index(name)].output

    def json(self, name: str) -> Any:
        return json.loads(self.out(name))

    def rc(self, name: str) -> int:
        """The ``rc=N`` a ``status`` step printed."""
        last = self.out(name).strip().splitlines()[-1]
        assert last.startswith("rc="), f"step {name} printed no rc line: {self.out(name)!r}"
        return int(last[3:])

    def sysfs(self, name: str) -> dict[str, tuple[str, ...]]:
        """A SYSFS_DUMP step as {patch: (enabled, transition, object:patched:function, ...)}."""
        out = {}
        for line in self.out(name).splitlines():
            words = line.split()
            if words:
                out[words[0]] = tuple(words[1:])
        return out


def named_steps(*pairs: tuple[str, Step | str]) -> tuple[list[str], list[Step | str]]:
    names = [n for n, _ in pairs]
    assert len(set(names)) == len(names), "step names must be unique"
    return names, [s for _, s in pairs]
