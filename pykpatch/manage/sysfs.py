"""The livepatch core's state, read from sysfs and procfs.

Layout (Documentation/ABI/testing/sysfs-kernel-livepatch)::

    /sys/kernel/livepatch/NAME/{enabled,transition,force}
    /sys/kernel/livepatch/NAME/{replace,stack_order}        newer kernels only
    /sys/kernel/livepatch/NAME/signal                       older kernels only
    /sys/kernel/livepatch/NAME/OBJECT/patched               6.1 and later
    /sys/kernel/livepatch/NAME/OBJECT/FUNCTION,SYMPOS/

A kernel without ``stack_order`` still stacks patches in the order their
modules were loaded (each module enables its patch from its init
function); ``/proc/modules`` lists modules newest first, so the order is
read from there instead, and ``stack_order_source`` says which was used.
A module whose patch was replaced (atomic replace) or disabled stays
loaded without a sysfs entry; it is recognised by the ``K`` (livepatch)
flag in ``/sys/module/NAME/taint``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pykpatch.manage.system import System, read_value

LIVEPATCH_TAINT = "K"


@dataclass(frozen=True)
class PatchedFunction:
    name: str
    sympos: int


@dataclass(frozen=True)
class PatchedObject:
    name: str                       # "vmlinux" or a module name
    patched: bool | None            # None: the kernel has no "patched" attribute (before 6.1)
    functions: tuple[PatchedFunction, ...] = ()


@dataclass(frozen=True)
class LoadedPatch:
    name: str
    enabled: bool
    transition: bool
    objects: tuple[PatchedObject, ...] = field(default=(), compare=False)
    replace: bool | None = field(default=None, compare=False)
    stack_order: int | None = field(default=None, compare=False)
    stack_order_source: str | None = field(default=None, compare=False)

    @property
    def function_names(self) -> frozenset[str]:
        return frozenset(f.name for o in self.objects for f in o.functions)


def _flag(path: Path) -> bool | None:
    """A 0/1 attribute, or None when this kernel does not have it."""
    value = read_value(path)
    return None if value == "" else value == "1"


def _int(path: Path) -> int | None:
    value = read_value(path)
    return int(value) if value.isdigit() else None


def _function(entry: Path) -> PatchedFunction:
    name, _, pos = entry.name.rpartition(",")
    if not name:
        return PatchedFunction(entry.name, 0)
    return PatchedFunction(name, int(pos) if pos.isdigit() else 0)


def read_objects(patch_dir: Path) -> tuple[PatchedObject, ...]:
    objects = []
    for obj in sorted(p for p in patch_dir.iterdir() if p.is_dir()):
        funcs = tuple(_function(f) for f in sorted(obj.iterdir()) if f.is_dir())
        objects.append(PatchedObject(obj.name, _flag(obj / "patched"), funcs))
    return tuple(objects)


def read_patch(system: System, name: str, load_order: dict[str, int] | None = None) -> LoadedPatch | None:
    """NAME's state, or None when it has no sysfs entry (not loaded, or already freed)."""
    d = system.sysfs / name
    try:
        objects = read_objects(d)
    except OSError:
        return None
    order, source = _int(d / "stack_order"), "sysfs"
    if order is None:
        order = (load_order if load_order is not None else patch_load_order(system)).get(name)
        source = "proc_modules" if order is not None else ""
    return LoadedPatch(name, read_value(d / "enabled") == "1", read_value(d / "transition") == "1", objects,
                       _flag(d / "replace"), order, source or None)


def patch_names(system: System) -> list[str]:
    if not system.sysfs.is_dir():
        return []
    return sorted(d.name for d in system.sysfs.iterdir() if d.is_dir())


def list_loaded(system: System) -> list[LoadedPatch]:
    """Every patch with a sysfs entry, in stacking order (bottom first) when known."""
    order = patch_load_order(system)
    patches = [p for p in (read_patch(system, n, order) for n in patch_names(system)) if p is not None]
    return sorted(patches, key=lambda p: (p.stack_order is None, p.stack_order or 0, p.name))


def loaded_modules_oldest_first(system: System) -> list[str]:
    """Module names from /proc/modules, which lists the newest module first."""
    text = read_value(system.proc / "modules")
    return [line.split()[0] for line in reversed(text.splitlines()) if line.strip()]


def patch_load_order(system: System) -> dict[str, int]:
    """Stacking position (1 = bottom) of each patch with a sysfs entry, by module load order."""
    names = set(patch_names(system))
    ordered = [m for m in loaded_modules_oldest_first(system) if m in names]
    return {name: i for i, name in enumerate(ordered, start=1)}


def is_module_loaded(system: System, name: str) -> bool:
    return (system.sys_module / name).is_dir()


def is_livepatch_module(system: System, name: str) -> bool:
    """A loaded module the kernel flags as a live patch (taint K)."""
    return LIVEPATCH_TAINT in read_value(system.sys_module / name / "taint")


def inactive_modules(system: System) -> list[str]:
    """Live patch modules still loaded whose patch is gone (replaced or disabled).

    ``kpatch unload`` removes them; only a module whose transition was
    forced stays for good (the kernel keeps its reference).
    """
    active = set(patch_names(system))
    if not system.sys_module.is_dir():
        return []
    return sorted(d.name for d in system.sys_module.iterdir()
                  if d.name not in active and is_livepatch_module(system, d.name))
