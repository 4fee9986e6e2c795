"""``kpatch load`` and ``kpatch unload``: the module's life on the running kernel.

Loading is "check, insmod, wait for the transition"; unloading is
"disable, wait for the reverse transition, wait until the kernel freed the
patch, rmmod".  Whatever fails after insmod, the module inserted is
removed again when the kernel allows it (everything but a transition that
could neither finish nor be reversed).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pykpatch.errors import ManageError, PykpatchError, TransitionReversed
from pykpatch.manage.checks import check_loadable, refuse_non_root, tool
from pykpatch.manage.modfile import module_info, module_name
from pykpatch.manage.sysfs import is_livepatch_module, is_module_loaded, read_patch
from pykpatch.manage.system import System
from pykpatch.manage.transition import PATCHED, UNPATCHED, finish_transition, write_attr

# After a patch is disabled the kernel frees it asynchronously and drops its
# module reference last; rmmod before that fails with EBUSY, so it is retried.
RMMOD_RETRY = 0.2


@dataclass(frozen=True)
class Done:
    """What load/unload did: the module's kernel name, how long the transition took."""

    name: str
    seconds: float = 0.0
    forced: bool = False
    removed: bool = True   # unload: False when a forced transition keeps the module loaded


def _run(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool(command), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return (proc.stderr or proc.stdout).strip().replace("\n", "; ")


def rmmod(system: System, name: str, timeout: float) -> None:
    """Remove a module, retrying while the kernel still holds its last reference."""
    deadline = system.clock() + timeout
    while True:
        proc = _run(system.rmmod, name)
        if proc.returncode == 0 or not is_module_loaded(system, name):
            return
        if system.clock() >= deadline:
            raise ManageError(f"rmmod {name} failed: {_output(proc)}")
        system.sleep(RMMOD_RETRY)


def wait_patch_freed(system: System, name: str, timeout: float) -> None:
    deadline = system.clock() + timeout
    while (system.sysfs / name).is_dir():
        if system.clock() >= deadline:
            raise ManageError(f"{name}: the kernel did not free the disabled patch in {timeout:.0f} s")
        system.sleep(0.1)


def _remove_inserted(system: System, name: str, timeout: float) -> None:
    """Take out a module kpatch inserted, saying so if even that fails."""
    try:
        wait_patch_freed(system, name, timeout)
        rmmod(system, name, timeout)
        system.say(f"{name}: removed the module again")
    except PykpatchError as err:
        system.say(f"{name}: could not remove the module again: {err.message}")


def load(system: System, ko: Path, timeout: float = 60.0, force: bool = False) -> Done:
    """Insert a live patch module and see its transition through."""
    if not ko.is_file():
        raise ManageError(f"{ko}: no such module file")
    info = module_info(ko)
    check_loadable(system, info)
    name = info.kernel_name
    if (system.sysfs / name).is_dir():
        raise ManageError(f"{name} is already loaded", hint=f"kpatch unload {name} first to load it again")
    if is_module_loaded(system, name):
        raise ManageError(f"module {name} is loaded but its patch is not active (replaced or disabled)",
                          hint=f"kpatch unload {name} removes it")
    proc = _run(system.insmod, str(ko))
    if proc.returncode != 0:
        raise ManageError(f"insmod {ko.name} failed: {_output(proc)}",
                          hint="the kernel log (dmesg) has its reason: unknown symbol, a refused "
                               "pre-patch callback, a patch already in transition...")
    if not (system.sysfs / name).is_dir():
        _remove_inserted(system, name, timeout)
        raise ManageError(f"insmod {ko.name} succeeded but no {system.sysfs / name} appeared: "
                          "it did not enable a live patch; the module was removed again")
    try:
        waited = finish_transition(system, name, PATCHED, timeout, force)
    except TransitionReversed:
        _remove_inserted(system, name, timeout)
        raise
    return Done(name, waited.seconds, waited.forced)


def kernel_name_of(name_or_ko: str) -> str:
    """``livepatch-fix``, ``livepatch_fix`` or a path to its .ko file -> the kernel's name."""
    path = Path(name_or_ko)
    if name_or_ko.endswith(".ko") and path.is_file():
        return module_info(path).kernel_name
    return module_name(name_or_ko)


def unload(system: System, name_or_ko: str, timeout: float = 60.0, force: bool = False) -> Done:
    """Disable a patch, see the reverse transition through, remove its module."""
    name = kernel_name_of(name_or_ko)
    patch = read_patch(system, name)
    if patch is None:
        if is_module_loaded(system, name) and is_livepatch_module(system, name):
            refuse_non_root(system, "unload")
            rmmod(system, name, timeout)   # its patch was replaced or disabled already
            return Done(name)
        raise ManageError(f"{name} is not a loaded live patch")
    refuse_non_root(system, "unload")
    tool(system.rmmod)
    if patch.enabled:
        write_attr(system, name, "enabled", "0")
    waited = finish_transition(system, name, UNPATCHED, timeout, force)
    if waited.forced:
        system.say(f"{name}: after a forced transition the kernel keeps the module loaded for good")
        return Done(name, waited.seconds, forced=True, removed=False)
    wait_patch_freed(system, name, timeout)
    rmmod(system, name, timeout)
    return Done(name, waited.seconds)


@dataclass(frozen=True)
class Failed:
    """One installed patch ``kpatch load --all`` could not load."""

    path: Path
    reason: str


def load_installed(system: System, timeout: float = 60.0, force: bool = False) -> tuple[list[Done], list[Failed]]:
    """Load every patch installed for the running kernel, in install order.

    What the boot-time loader does, from Python: a patch already loaded is
    skipped, one that fails is reported and the others are still loaded.
    """
    from pykpatch.manage.install import installed_pairs

    done: list[Done] = []
    failed: list[Failed] = []
    for ko, name in installed_pairs(system, system.release):
        if (system.sysfs / name).is_dir() or is_module_loaded(system, name):
            system.say(f"{name}: already loaded")
            continue
        try:
            done.append(load(system, ko, timeout, force))
        except PykpatchError as err:
            system.say(f"{name}: {err.message}")
            failed.append(Failed(ko, err.message))
    return done, failed
