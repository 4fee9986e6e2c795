"""Manage live patches on a running system: load, unload, list, info, install.

The livepatch core's state is in sysfs (Documentation/ABI/testing/
sysfs-kernel-livepatch): ``/sys/kernel/livepatch/NAME/{enabled,transition,
force}``.  Loading a patch module starts a transition that completes once
every task has left the patched functions; unloading is "disable, wait for
the reverse transition, then remove the module".  Every path is a field of
``System`` so that the logic runs against a scratch tree in the tests.

Modules, by job: ``system`` (paths, clock, caller), ``modfile`` (what a .ko
says), ``checks`` (refusals before calling the kernel), ``sysfs`` (the
kernel's patch state), ``tasks`` and ``transition`` (waiting, stalled
tasks, reverse or force), ``ops`` (load, unload), ``install`` (boot-time
loading), ``state`` (the JSON documents).
"""

from pykpatch.errors import ManageError, ModuleRefused, TransitionReversed, TransitionStuck
from pykpatch.manage.install import (
    boot_service_enabled,
    install,
    installed,
    installed_pairs,
    installed_releases,
    uninstall,
)
from pykpatch.manage.modfile import ModuleInfo, module_info, module_name
from pykpatch.manage.ops import Done, Failed, load, load_installed, unload
from pykpatch.manage.state import info_document, list_document
from pykpatch.manage.sysfs import LoadedPatch, PatchedFunction, PatchedObject, inactive_modules, list_loaded
from pykpatch.manage.system import INSTALL_ROOT, SYSFS_LIVEPATCH, System
from pykpatch.manage.tasks import StalledTask, stalled_tasks

__all__ = [
    "INSTALL_ROOT",
    "SYSFS_LIVEPATCH",
    "Done",
    "Failed",
    "LoadedPatch",
    "ManageError",
    "ModuleInfo",
    "ModuleRefused",
    "PatchedFunction",
    "PatchedObject",
    "StalledTask",
    "System",
    "TransitionReversed",
    "TransitionStuck",
    "boot_service_enabled",
    "inactive_modules",
    "info_document",
    "install",
    "installed",
    "installed_pairs",
    "installed_releases",
    "list_document",
    "list_loaded",
    "load",
    "load_installed",
    "module_info",
    "module_name",
    "stalled_tasks",
    "uninstall",
    "unload",
]
