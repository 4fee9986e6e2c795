"""The documents behind ``kpatch list --json`` and ``kpatch info --json``.

Field names are stable (README, "kpatch state as JSON"): a field is added,
never renamed; a value the running kernel does not expose is ``null``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pykpatch.errors import ManageError
from pykpatch.manage.install import boot_service_enabled, installed_pairs, installed_releases
from pykpatch.manage.modfile import ModuleInfo, module_info, module_name
from pykpatch.manage.sysfs import LoadedPatch, inactive_modules, list_loaded, read_patch
from pykpatch.manage.system import System

JSON_VERSION = 1


def patch_json(patch: LoadedPatch) -> dict[str, Any]:
    return {
        "name": patch.name,
        "enabled": patch.enabled,
        "transition": patch.transition,
        "replace": patch.replace,
        "stack_order": patch.stack_order,
        "stack_order_source": patch.stack_order_source,
        "objects": [
            {"name": o.name, "patched": o.patched,
             "functions": [{"name": f.name, "sympos": f.sympos} for f in o.functions]}
            for o in patch.objects
        ],
    }


def installed_json(system: System) -> list[dict[str, Any]]:
    out = []
    for release in installed_releases(system):
        for order, (path, name) in enumerate(installed_pairs(system, release), start=1):
            out.append({"kernel_release": release, "order": order, "file": path.name, "path": str(path),
                        "name": name})
    return out


def list_document(system: System) -> dict[str, Any]:
    return {
        "version": JSON_VERSION,
        "kernel_release": system.release,
        "loaded": [patch_json(p) for p in list_loaded(system)],
        "inactive_modules": inactive_modules(system),
        "installed": installed_json(system),
        "boot_service_enabled": boot_service_enabled(system),
    }


def module_json(info: ModuleInfo) -> dict[str, Any]:
    objects: dict[str, list[dict[str, Any]]] = {}
    for objname, name, sympos in info.functions:
        objects.setdefault(objname, []).append({"name": name, "sympos": sympos})
    return {
        "path": str(info.path),
        "name": info.kernel_name,
        "vermagic": info.modinfo.get("vermagic", "").strip() or None,
        "kernel_release": info.release or None,
        "livepatch": info.is_livepatch,
        "description": info.modinfo.get("description"),
        "objects": [{"name": o, "functions": fs} for o, fs in objects.items()],
        "klp_symbols": list(info.klp_symbols),
        "klp_sections": list(info.klp_sections),
    }


def _module_file(system: System, target: str) -> Path | None:
    """The .ko ``target`` names: a path, or the running release's installed copy of NAME."""
    path = Path(target)
    if path.is_file():
        return path
    want = module_name(target)
    for ko, name in installed_pairs(system, system.release):
        if want in (name, module_name(ko.name)):
            return ko
    return None


def info_document(system: System, target: str) -> dict[str, Any]:
    """What is known about one patch: its file, its sysfs state, its installed copies."""
    ko = _module_file(system, target)
    info = module_info(ko) if ko is not None else None
    name = info.kernel_name if info else module_name(target)
    patch = read_patch(system, name)
    installed = [e for e in installed_json(system) if e["name"] == name]
    if info is None and patch is None and not installed:
        raise ManageError(f"{target}: neither a module file nor a loaded or installed live patch",
                          hint="kpatch list shows the loaded and installed patches")
    return {
        "version": JSON_VERSION,
        "name": name,
        "module": module_json(info) if info else None,
        "loaded": patch_json(patch) if patch else None,
        "installed": installed,
    }
