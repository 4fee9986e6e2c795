"""Issue 13 acceptance: kpatch-build's scenarios in a ppc64le and an s390x guest.

The lab cross-builds a tiny 6.1 kernel for each (Debian's cross compilers,
``pykpatch/lab/data/livepatch-tiny-{ppc64le,s390x}.config``, cached like the
x86_64 ones), ``kpatch-build --arch ARCH`` builds each scenario's module on
that tree, and the module is loaded into that kernel under QEMU's TCG
(pseries with SLOF; s390-ccw-virtio), with a busybox of the guest's
architecture: insmod, transition done, new behaviour seen, disable, gone,
rmmod, old behaviour back, no oops/WARN.  The scenarios are those the issue
names: a vmlinux function, a module's function, a new function, a shadow
variable, callbacks, and the refusal of a data change.

Two scenarios differ from the x86_64 suite, for reasons of the machines:
the module is ``binfmt_misc`` (the PC speaker is x86's), and the shadow
variable hangs off ``/proc/cmdline`` rather than ``kernel_clone``: on
ppc64le the fork patch is refused, because ``kernel_clone`` calls the file's
static ``copy_process`` with a bare ``bl`` (no TOC-restoring ``nop`` the
module loader's stub needs) -- ``test_fork_shadow_patch_is_refused_on_ppc64le_only``
checks that refusal.
"""

from __future__ import annotations

import contextlib
import re
import struct
import sys
import time

import pytest

from pykpatch.kpatch_build.workspace import tree_directory_lock
from pykpatch.lab import KernelBuild, ensure_kernel, insmod, read, rmmod, shell

from .conftest import _or_fail, booter
from .test_kpatch_build_suite import (
    CACHE_ROOT,
    KpatchBuild,
    Phases,
    Scenario,
    Suite,
    build_scenario,
    check_callbacks_factory,
    check_cmdline,
    check_new_function,
    check_tree_unchanged,
    lines,
    run_scenario,
    warm_original_build,
)

CROSS = ("ppc64le", "s390x")
BM = "/tmp/binfmt_misc"


def e_machine(path) -> int:
    """An ELF file's e_machine, in its own byte order."""
    with path.open("rb") as f:
        head = f.read(20)
    return struct.unpack_from(">H" if head[5] == 2 else "<H", head, 18)[0]


class CrossBuild(KpatchBuild):
    """kpatch-build --arch ARCH on the lab's cross tree, with its own cache directory."""

    def __init__(self, kernel: KernelBuild, outdir, arch: str) -> None:
        super().__init__(kernel, outdir, "6.1")
        self.arch = arch
        self.cachedir = CACHE_ROOT / f"6.1-{arch}"

    def run(self, name: str, *patches: str, debug: bool = False, extra: tuple[str, ...] = ()):
        return super().run(name, *patches, debug=debug, extra=("--arch", self.arch, *extra))


def check_binfmt(ph: Phases) -> None:
    assert ph.before == ["enabled\n"] and ph.after == ["enabled\n"], (ph.before, ph.after)
    assert ph.during == ["enabled pykpatch\n"], ph.during


def check_shadow_reads(ph: Phases) -> None:
    reads = [int(re.search(r" pykpatch_reads=(\d+)$", out.rstrip("\n")).group(1)) for out in ph.during]
    assert reads == [1, 2, 3], reads                # one shadow counter, found again on each read
    assert all("pykpatch" not in out for out in ph.before + ph.after)
    freed = lines(ph.console, "pykpatch-shadow: freed")
    assert freed == ["pykpatch-shadow: freed 1 read counter(s)"], freed


CROSS_SCENARIOS = [
    Scenario("01-cmdline-string", ("01-cmdline-string.patch",), (read("/proc/cmdline"),),
             check=check_cmdline("pykpatch=cmdline"), changed=("fs/proc/cmdline.o: cmdline_proc_show",)),
    Scenario("03-new-static-function", ("03-new-static-function.patch",), (read("/proc/version"),),
             check=check_new_function, changed=("fs/proc/version.o: version_proc_show",),
             new=("fs/proc/version.o: version_pykpatch_note",)),
    Scenario("06c-module-binfmt-misc", ("06c-module-binfmt-misc.patch",), (read(f"{BM}/status"),),
             check=check_binfmt, modules=("binfmt_misc",),
             setup=(insmod("binfmt_misc"), shell(f"mkdir -p {BM} && mount -t binfmt_misc binfmt_misc {BM}")),
             teardown=(shell(f"umount {BM}"), rmmod("binfmt_misc")),
             changed=("fs/binfmt_misc.o: bm_status_read",)),
    Scenario("07c-shadow-cmdline", ("07c-shadow-cmdline.patch",), (read("/proc/cmdline"),),
             during=(read("/proc/cmdline"),) * 3, check=check_shadow_reads,
             changed=("fs/proc/cmdline.o: cmdline_proc_show",)),
    Scenario("08-callbacks", ("08-callbacks.patch",), (read("/proc/cmdline"),),
             check=check_callbacks_factory("08-callbacks"), changed=("fs/proc/cmdline.o: cmdline_proc_show",)),
]


@pytest.fixture(scope="module", params=CROSS)
def cross_suite(request, tmp_path_factory, pytestconfig) -> Suite:
    arch = request.param

    def progress(msg: str) -> None:
        capman = pytestconfig.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            print(f"\n[cross suite {arch}] {msg}", file=sys.stderr, end="", flush=True)

    kernel = _or_fail(f"build the lab's {arch} kernel", lambda: ensure_kernel(arch=arch, progress=progress))
    assert kernel.arch == arch
    kb = CrossBuild(kernel, tmp_path_factory.mktemp(f"kpatch-build-{arch}"), arch)
    kb.cachedir.mkdir(parents=True, mode=0o700, exist_ok=True)
    warm_original_build(kernel, kb.cachedir, progress, arch=arch)
    with tree_directory_lock(kernel.tree, progress):
        before = kb.manifest()
    return Suite(kb, before, time.monotonic(), progress)


@pytest.fixture
def cross_boot(cross_suite: Suite, tmp_path):
    return booter(cross_suite.kb.kernel, tmp_path)


def test_cross_kernel_is_of_its_architecture(cross_suite: Suite):
    """The premise: the lab's kernel and its modules are the guest's architecture, not the host's."""
    from pykpatch.arch import arch_named

    kernel = cross_suite.kb.kernel
    arch = arch_named(kernel.arch)
    assert arch is not None
    for path in (kernel.vmlinux, kernel.module("binfmt_misc")):
        assert e_machine(path) == arch.machine, path
    config = kernel.config.read_text()
    assert "CONFIG_LIVEPATCH=y" in config and f"CONFIG_{kernel.machine.console_option[7:]}=y" in config


@pytest.mark.parametrize("sc", CROSS_SCENARIOS, ids=[s.id for s in CROSS_SCENARIOS])
def test_cross_patch_builds_loads_and_unloads(sc: Scenario, cross_suite: Suite, cross_boot):
    built = build_scenario(sc, cross_suite)
    from pykpatch.arch import arch_named

    arch = arch_named(cross_suite.kb.arch)
    assert arch is not None and built.ko is not None and e_machine(built.ko) == arch.machine
    ph = run_scenario(sc, built, cross_boot)
    assert [sc.same(o) for o in ph.after] == [sc.same(o) for o in ph.before], "old behaviour not back"
    sc.check(ph)


def test_cross_refuses_a_data_change(cross_suite: Suite):
    """A changed initializer of a global (kernel/sys.c's overflowuid) is refused, named, on either arch."""
    built = cross_suite.kb.run("14-global-initializer", "14-refused-global-initializer.patch")
    cross_suite.results["14-global-initializer"] = built
    assert built.rc == 2 and built.ko is None, built.stderr[-3000:]
    assert re.search(r"kernel/sys\.o: .*overflowuid", built.stderr), built.stderr[-3000:]
    assert "Traceback" not in built.stderr


def test_fork_shadow_patch_is_refused_on_ppc64le_only(cross_suite: Suite):
    """x86's fork shadow patch: on ppc64le kernel_clone's bare ``bl copy_process`` cannot leave the module;
    s390x's loader gives every call that leaves a module a PLT stub, so there it builds."""
    if cross_suite.kb.arch != "ppc64le":
        built = cross_suite.kb.run("07-shadow-fork", "07-shadow-fork.patch")
        cross_suite.results["07-shadow-fork"] = built
        assert built.rc == 0 and built.ko is not None, built.stderr[-3000:]   # s390x: calls go through PLT stubs
        return
    built = cross_suite.kb.run("07-shadow-fork", "07-shadow-fork.patch")
    cross_suite.results["07-shadow-fork"] = built
    assert built.rc == 2 and built.ko is None, built.stderr[-3000:]
    assert re.search(r"kernel_clone\+0x[0-9a-f]+ to copy_process has no nop after it", built.stderr), \
        built.stderr[-3000:]
    assert "Traceback" not in built.stderr


def test_cross_tree_is_unchanged_after_the_suite(cross_suite: Suite):
    check_tree_unchanged(cross_suite, f"cross suite {cross_suite.kb.arch}")
