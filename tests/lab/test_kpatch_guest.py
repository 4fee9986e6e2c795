"""``kpatch`` on a real system: a Debian guest with systemd, under the lab kernel and Debian's own.

The guest (``pykpatch.lab.guest``) is a debootstrap'ed Debian 12 on a virtio
disk, booted under QEMU; its ``kpatch`` is this checkout's, run by the
guest's Python.  The modules it loads are built here against the kernel's
tree (the lab tree, or Debian's headers): two patches of
``cmdline_proc_show`` (A stacks, B replaces), a helper module whose kthread
sleeps inside ``klp_helper_nap``, a patch of that function, and a patch of a
function that does not exist (tests/lab/guest_modules/).

One boot per kernel runs every step (``operator_run``); the tests below
each judge their part of it, against the sysfs state the guest printed.
A second machine is booted three times on the same disk for boot-time
loading (install, reboot, uninstall, reboot).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pykpatch.lab.debian import modules_with_dependencies
from pykpatch.lab.guest import boot_guest, disk_initramfs, new_machine

from .guest_util import SYSFS_DUMP, Run, build_guest_modules, guest_files, named_steps, status

pytestmark = pytest.mark.kernel

# A whole guest run: systemd boot under TCG (~20-30 s), then tens of kpatch calls and
# transitions that take up to ~20 s by design.
RUN_TIMEOUT = 600.0
PATCH_A = "pykpatch guest: patch A"
PATCH_B = "pykpatch guest: patch B"


@dataclass
class GuestKernel:
    name: str
    image: Path
    initrd: Path | None
    release: str
    files: dict[str, Path]
    memory: str


@pytest.fixture(scope="module", params=["lab", "debian"])
def guest_kernel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> GuestKernel:
    """The kernel a guest boots, with the test modules built against it."""
    work = tmp_path_factory.mktemp(f"guest-{request.param}")
    if request.param == "lab":
        lab = request.getfixturevalue("lab_kernel")
        modules = build_guest_modules(lab.tree, work / "modules")
        return GuestKernel("lab", lab.bzimage, None, lab.kernelrelease, guest_files(modules, work), "512M")
    deb = request.getfixturevalue("debian_kernel")
    modules = build_guest_modules(deb.headers, work / "modules")
    initrd = disk_initramfs(work / "initrd.cpio", modules_with_dependencies(deb))
    return GuestKernel("debian", deb.vmlinuz, initrd, deb.release, guest_files(modules, work), "768M")


def boot(kernel: GuestKernel, machine, names: list[str], steps: list) -> Run:
    result = boot_guest(kernel.image, machine, steps, files=kernel.files, initrd=kernel.initrd,
                        timeout=RUN_TIMEOUT, memory=kernel.memory)
    assert result.completed and not result.timed_out, "\n".join(result.failures()) + result.console[-4000:]
    return Run(result, names)


@pytest.fixture(scope="module")
def operator_run(guest_kernel: GuestKernel, guest_rootfs, tmp_path_factory) -> Run:
    names, steps = named_steps(
        ("cmdline0", "cat /proc/cmdline"),
        ("refuse-helper", status("kpatch load ko/klp-helper.ko")),
        ("load-a", "kpatch load ko/livepatch-cmdline-a.ko"),
        ("cmdline-a", "cat /proc/cmdline"),
        # klp_helper is not loaded yet: the patch waits for it (its object reads patched=0).
        ("load-fix", "kpatch load ko/livepatch-helper-fix.ko"),
        ("list-a", "kpatch list --json"),
        ("sysfs-a", SYSFS_DUMP),
        ("info-a", "kpatch info livepatch_cmdline_a --json"),
        ("info-file-a", "kpatch info ko/livepatch-cmdline-a.ko"),
        ("load-b", "kpatch load ko/livepatch-cmdline-b.ko"),
        ("cmdline-b", "cat /proc/cmdline"),
        ("list-b", "kpatch list --json"),
        ("sysfs-b", SYSFS_DUMP),
        ("unload-b", "kpatch unload livepatch_cmdline_b"),
        ("unload-a", "kpatch unload livepatch-cmdline-a"),
        ("unload-fix", "kpatch unload ko/livepatch-helper-fix.ko"),
        ("cmdline-none", "cat /proc/cmdline"),
        ("list-none", "kpatch list --json"),
        ("modules-none", "grep -c livepatch_ /proc/modules; true"),
        # Stalled transitions: the napper kthread sleeps inside klp_helper_nap, ignoring wakeups.
        ("helper", "insmod ko/klp-helper.ko && sleep 2 && cat /sys/module/klp_helper/parameters/stubborn"),
        ("napper", 'for p in /proc/[0-9]*; do [ "$(cat $p/comm)" = klp_napper ] && echo ${p#/proc/}; done; true'),
        ("stuck", status("kpatch load --timeout 8 ko/livepatch-helper-fix.ko")),
        ("after-stuck", SYSFS_DUMP + "; grep -c livepatch_helper_fix /proc/modules; true"),
        # Now the nap ends at the first wakeup: the kernel's signal (every 15 s) lets it finish.
        ("cooperative", "echo 0 > /sys/module/klp_helper/parameters/stubborn && sleep 2"),
        ("signalled", status("kpatch load --timeout 60 ko/livepatch-helper-fix.ko")),
        ("fixed", "sleep 2; dmesg | grep -E 'klp_napper runs the fixed nap|signaling remaining tasks'"),
        ("unload-fixed", "kpatch unload livepatch_helper_fix"),
        # The napper sleeps inside the original nap again; 6 s is less than the kernel's 15 s
        # signalling period, so only forcing ends this transition.
        ("forced", status("kpatch load --force --timeout 6 ko/livepatch-helper-fix.ko")),
        ("after-force", SYSFS_DUMP),
    )
    machine = new_machine(guest_rootfs, tmp_path_factory.mktemp(f"operator-{guest_kernel.name}"))
    return boot(guest_kernel, machine, names, steps)


def loaded(doc: dict) -> dict[str, dict]:
    return {p["name"]: p for p in doc["loaded"]}


def assert_matches_sysfs(doc: dict, sysfs: dict[str, tuple[str, ...]]) -> None:
    """kpatch's JSON says what the guest's sysfs said, patch by patch, function by function."""
    assert set(loaded(doc)) == set(sysfs)
    for name, patch in loaded(doc).items():
        enabled, transition, *funcs = sysfs[name]
        assert (patch["enabled"], patch["transition"]) == (enabled == "1", transition == "1")
        from_json = sorted(f"{o['name']}:{int(o['patched'])}:{f['name']},{f['sympos']}"
                           for o in patch["objects"] for f in o["functions"])
        assert from_json == sorted(funcs)


def test_a_module_that_is_not_a_live_patch_is_refused(operator_run):
    assert operator_run.rc("refuse-helper") == 1
    assert "kpatch: error: klp-helper.ko is not a live patch module" in operator_run.out("refuse-helper")
    assert "klp_helper" not in operator_run.sysfs("sysfs-a")


def test_load_list_info_unload(operator_run, guest_kernel):
    run = operator_run
    assert run.out("load-a").strip() == "loaded livepatch_cmdline_a"
    assert run.out("cmdline-a").strip() == PATCH_A
    doc = run.json("list-a")
    assert doc["kernel_release"] == guest_kernel.release
    assert_matches_sysfs(doc, run.sysfs("sysfs-a"))
    a, fix = loaded(doc)["livepatch_cmdline_a"], loaded(doc)["livepatch_helper_fix"]
    assert a["objects"] == [{"name": "vmlinux", "patched": True,
                             "functions": [{"name": "cmdline_proc_show", "sympos": 1}]}]
    assert fix["objects"] == [{"name": "klp_helper", "patched": False,
                               "functions": [{"name": "klp_helper_nap", "sympos": 1}]}]
    # 6.1 has no stack_order/replace files: the order is the modules' load order.
    assert [(p["name"], p["stack_order"], p["stack_order_source"], p["replace"]) for p in doc["loaded"]] == \
        [("livepatch_cmdline_a", 1, "proc_modules", None), ("livepatch_helper_fix", 2, "proc_modules", None)]
    info = run.json("info-a")
    assert info["loaded"] == a and info["module"] is None and info["installed"] == []
    text = run.out("info-file-a")
    assert f"vermagic: {guest_kernel.release} " in text and "livepatch: Y" in text
    assert "not built by pykpatch" in text     # a hand-written klp module has no .pykpatch.funcs
    assert run.out("unload-a").strip() == "unloaded livepatch_cmdline_a"
    assert run.out("cmdline-none") == run.out("cmdline0")
    none = run.json("list-none")
    assert none["loaded"] == [] and none["inactive_modules"] == []
    assert run.out("modules-none").strip() == "0"


def test_a_replace_patch_takes_over(operator_run):
    run = operator_run
    assert run.out("cmdline-b").strip() == PATCH_B
    doc = run.json("list-b")
    assert [p["name"] for p in doc["loaded"]] == ["livepatch_cmdline_b"]
    assert doc["inactive_modules"] == ["livepatch_cmdline_a", "livepatch_helper_fix"]
    assert_matches_sysfs(doc, run.sysfs("sysfs-b"))
    assert run.out("unload-b").strip() == "unloaded livepatch_cmdline_b"
    assert run.out("unload-fix").strip() == "unloaded livepatch_helper_fix"


def test_a_transition_that_cannot_finish_is_explained_and_reversed(operator_run):
    run = operator_run
    assert run.out("helper").strip() == "Y"
    pid = run.out("napper").strip()
    out = run.out("stuck")
    assert run.rc("stuck") == 4, out
    assert "livepatch_helper_fix: still in transition to patched after 5 s" in out
    assert f"PID {pid} (klp_napper) in klp_helper_nap+0x" in out and "[klp_helper]" in out
    assert "this kernel signals the remaining tasks itself every 15 s" in out
    assert "the transition did not finish in 8 s" in out and "removed the module again" in out
    assert "kpatch: error: livepatch_helper_fix: the transition did not finish in 8 s" in out
    assert run.out("after-stuck").strip() == "0"       # no sysfs entry, no module left


def test_the_kernels_signal_lets_a_waiting_transition_finish(operator_run):
    run = operator_run
    out = run.out("signalled")
    assert run.rc("signalled") == 0, out
    assert "still in transition to patched after 5 s" in out and "(klp_napper) in klp_helper_nap+0x" in out
    seconds = int(out.split("transition complete after ", 1)[1].split()[0])
    assert 15 <= seconds < 60     # the kernel signals after 15 s of trying
    assert "loaded livepatch_helper_fix" in out
    fixed = run.out("fixed")
    assert "livepatch: signaling remaining tasks" in fixed and "klp_napper runs the fixed nap" in fixed
    assert run.out("unload-fixed").strip() == "unloaded livepatch_helper_fix"


def test_force_finishes_it_and_says_what_that_means(operator_run):
    run = operator_run
    out = run.out("forced")
    assert run.rc("forced") == 0, out
    assert "forcing the transition: 1 task(s) are declared patched although they may still run the old code" in out
    assert "the kernel will never let this patch module be removed" in out
    assert "loaded livepatch_helper_fix (transition forced)" in out
    assert run.sysfs("after-force")["livepatch_helper_fix"][:2] == ("1", "0")


def test_the_kernel_stayed_healthy(operator_run):
    trouble = operator_run.result.trouble
    assert not (trouble.panicked or trouble.oopsed or trouble.warned or trouble.call_trace), trouble.lines


# -- boot-time loading --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reboot_runs(lab_kernel, guest_rootfs, tmp_path_factory) -> list[Run]:
    """Install three patches, reboot, check and uninstall them, reboot again: one disk, three boots."""
    work = tmp_path_factory.mktemp("reboot")
    kernel = GuestKernel("lab", lab_kernel.bzimage, None, lab_kernel.kernelrelease,
                         guest_files(build_guest_modules(lab_kernel.tree, work / "modules"), work), "512M")
    machine = new_machine(guest_rootfs, work / "machine")
    first = named_steps(
        # The bogus patch comes first in the load order: its failure must not stop the others.
        ("install", "kpatch install ko/livepatch-bogus.ko && kpatch install ko/livepatch-cmdline-a.ko && "
                    "kpatch install ko/livepatch-helper-fix.ko"),
        ("install-list", "kpatch install --list"),
        ("enabled", status("systemctl is-enabled kpatch.service")),
        ("list", "kpatch list --json"),
    )
    second = named_steps(
        ("cmdline", "cat /proc/cmdline"),
        ("list", "kpatch list --json"),
        ("journal", "journalctl -b -u kpatch.service -o cat --no-pager"),
        ("errors", "journalctl -b -u kpatch.service -p err -o cat --no-pager"),
        ("state", status("systemctl is-active kpatch.service")),
        ("uninstall", "kpatch uninstall livepatch_bogus && kpatch uninstall livepatch-cmdline-a.ko && "
                      "kpatch uninstall livepatch_helper_fix"),
        ("enabled", status("systemctl is-enabled kpatch.service")),
    )
    third = named_steps(
        ("cmdline", "cat /proc/cmdline"),
        ("list", "kpatch list --json"),
        ("sysfs", SYSFS_DUMP),
        ("unit", status("systemctl cat kpatch.service")),
    )
    return [boot(kernel, machine, *steps) for steps in (first, second, third)]


def test_install_enables_the_boot_service(reboot_runs, lab_kernel):
    run = reboot_runs[0]
    release = lab_kernel.kernelrelease
    assert run.out("install-list").splitlines() == [
        f"{release}:", "  1. livepatch-bogus.ko (livepatch_bogus)", "  2. livepatch-cmdline-a.ko (livepatch_cmdline_a)",
        "  3. livepatch-helper-fix.ko (livepatch_helper_fix)"]
    assert run.out("enabled").splitlines()[0] == "enabled" and run.rc("enabled") == 0
    doc = run.json("list")
    assert doc["boot_service_enabled"] is True and doc["loaded"] == []      # installed, not loaded
    assert [e["file"] for e in doc["installed"]] == ["livepatch-bogus.ko", "livepatch-cmdline-a.ko",
                                                     "livepatch-helper-fix.ko"]


def test_installed_patches_are_loaded_at_boot_in_install_order(reboot_runs):
    run = reboot_runs[1]
    assert run.out("cmdline").strip() == PATCH_A
    doc = run.json("list")
    assert [(p["name"], p["stack_order"]) for p in doc["loaded"]] == \
        [("livepatch_cmdline_a", 1), ("livepatch_helper_fix", 2)]
    journal = run.out("journal")
    assert "kpatch: livepatch_cmdline_a: loaded (/var/lib/kpatch/" in journal
    assert "kpatch: livepatch_helper_fix: loaded (/var/lib/kpatch/" in journal
    errors = run.out("errors").strip().splitlines()
    loader_errors = [line for line in errors if line.startswith("kpatch: ")]
    assert len(loader_errors) == 1, errors
    assert loader_errors[0].startswith("kpatch: livepatch_bogus: insmod /var/lib/kpatch/") and \
        "failed: insmod: ERROR: could not insert module" in loader_errors[0]
    assert any(line.startswith("Failed to start kpatch.service") for line in errors), errors
    assert run.out("state").splitlines()[0] == "failed"     # one patch failed: the unit says so
    assert run.rc("enabled") != 0                            # the last uninstall disabled the unit


def test_uninstalled_patches_are_gone_after_the_next_reboot(reboot_runs):
    run = reboot_runs[2]
    assert run.out("cmdline").strip() != PATCH_A
    doc = run.json("list")
    assert doc["loaded"] == [] and doc["installed"] == [] and doc["boot_service_enabled"] is False
    assert run.out("sysfs").strip() == ""
    assert run.rc("unit") != 0 and "No files found for kpatch.service" in run.out("unit")
