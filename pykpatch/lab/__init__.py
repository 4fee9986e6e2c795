"""The kernel lab: build a tiny livepatch-capable kernel once, boot it in QEMU.

A live patch is only proven when a real kernel loads it, switches to it and
keeps running.  This package makes that one call::

    from pykpatch import lab

    kernel = lab.ensure_kernel()                 # minutes once, then cached
    result = lab.boot(kernel.bzimage,
                      [lab.insmod("livepatch-sample"),
                       lab.read("/proc/cmdline")],
                      modules=[kernel.module("livepatch-sample")])
    assert result.ok, result.failures()

Modules, by job: ``source`` (Debian's linux-source tarball), ``config``
(tinyconfig + fragment, verified), ``build`` (in-tree build, bootable
snapshot, cache), ``steps`` (what the guest runs), ``initramfs`` (busybox,
/init, cpio), ``qemu`` (boot with a hard timeout), ``console`` (parse the
results and kernel trouble), ``cache`` and ``info`` (where things are kept),
``guest`` (a Debian userspace with systemd on a virtio disk, for the
operator's side) and ``debian`` (Debian packages, Debian's own kernel,
fetched once into the cache).
Library code raises ``pykpatch.errors.LabError`` and its subclasses.
"""

from pykpatch.lab.build import KernelBuild, default_jobs, ensure_kernel, load_build
from pykpatch.lab.cache import cache_key, cache_root
from pykpatch.lab.config import default_fragment, parse_config, verify_config
from pykpatch.lab.console import KernelTrouble, StepResult, parse_results, scan_console
from pykpatch.lab.info import CacheEntry, list_cache
from pykpatch.lab.initramfs import build_initramfs, render_init, write_cpio
from pykpatch.lab.prereqs import APT_PACKAGES
from pykpatch.lab.qemu import BootResult, boot, kvm_usable
from pykpatch.lab.source import KernelSource, find_source
from pykpatch.lab.steps import (
    MODULE_DIR,
    Step,
    insmod,
    read,
    rmmod,
    shell,
    sleep,
    wait_for,
    wait_until_gone,
    write,
)

__all__ = [
    "APT_PACKAGES",
    "MODULE_DIR",
    "BootResult",
    "CacheEntry",
    "KernelBuild",
    "KernelSource",
    "KernelTrouble",
    "Step",
    "StepResult",
    "boot",
    "build_initramfs",
    "cache_key",
    "cache_root",
    "default_fragment",
    "default_jobs",
    "ensure_kernel",
    "find_source",
    "insmod",
    "kvm_usable",
    "list_cache",
    "load_build",
    "parse_config",
    "parse_results",
    "read",
    "render_init",
    "rmmod",
    "scan_console",
    "shell",
    "sleep",
    "verify_config",
    "wait_for",
    "wait_until_gone",
    "write",
    "write_cpio",
]
