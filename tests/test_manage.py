"""``kpatch`` load/unload/list/info/install against a scratch root that plays the livepatch core.

The kernel's side is ``fake_kernel.FakeKernel``: fake insmod/rmmod, sysfs
files, and simulated time in which transitions finish, stall, are
reversed, forced or signalled.  The real kernel is in tests/lab/
test_kpatch_guest.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_cases
from fake_kernel import RELEASE, FakeKernel, Task, make_ko

from pykpatch import manage
from pykpatch.commands import kpatch_cmd
from pykpatch.errors import (
    EXIT_TRANSITION_REVERSED,
    EXIT_TRANSITION_STUCK,
    ManageError,
    ModuleRefused,
    TransitionReversed,
    TransitionStuck,
)
from pykpatch.manage.tasks import describe_tasks, patched_frames
from pykpatch.manage.transition import REPORT_AFTER

REPO = Path(__file__).resolve().parents[1]
LOADER = REPO / "pykpatch/data/kpatch-load-installed"

NAP_STACK = ("[<0>] __schedule+0x2b5/0x6a0\n[<0>] schedule+0x5a/0xc0\n[<0>] schedule_timeout+0x7e/0x120\n"
             "[<0>] klp_helper_nap+0x2a/0x60 [klp_helper]\n[<0>] napper+0x1c/0x40 [klp_helper]\n"
             "[<0>] kthread+0xe0/0x110\n[<0>] ret_from_fork+0x1f/0x30\n")


@pytest.fixture
def kernel(tmp_path) -> FakeKernel:
    return FakeKernel(tmp_path)


@pytest.fixture
def system(kernel):
    return kernel.system()


# -- issue 9 item 9: each of these failed on the code before the fix ---------------------------------

def test_vermagic_is_checked_before_insmod(kernel, system, tmp_path):
    ko = make_ko(tmp_path / "livepatch-x.ko", "6.8.0 SMP mod_unload ")
    with pytest.raises(ModuleRefused, match=r"built for kernel 6\.8\.0, not 6\.1\.192") as err:
        manage.load(system, ko, timeout=1)
    assert (err.value.found, err.value.expected) == ("6.8.0", RELEASE)
    assert kernel.tool_calls() == []


def test_root_is_checked_before_insmod(kernel, tmp_path):
    system = kernel.system(euid=1000)
    with pytest.raises(ModuleRefused, match="needs root: running as uid 1000, needs uid 0"):
        manage.load(system, make_ko(tmp_path / "livepatch-x.ko"), timeout=1)
    assert kernel.tool_calls() == []


def test_livepatch_sysfs_is_checked_before_insmod(kernel, system, tmp_path):
    kernel.sysfs.rmdir()
    with pytest.raises(ModuleRefused, match="no live patching: .*/sys/kernel/livepatch does not exist"):
        manage.load(system, make_ko(tmp_path / "livepatch-x.ko"), timeout=1)
    assert kernel.tool_calls() == []


def test_missing_insmod_is_an_error_not_a_traceback(kernel, tmp_path):
    system = kernel.system(insmod=str(tmp_path / "no-such-insmod"))
    with pytest.raises(ManageError, match="no-such-insmod not found") as err:
        manage.load(system, make_ko(tmp_path / "livepatch-x.ko"), timeout=1)
    assert "kmod" in err.value.hint


def test_insmod_without_a_livepatch_entry_removes_the_module(kernel, system, tmp_path):
    kernel.no_sysfs_entry = True
    kernel.sync_ctl()
    with pytest.raises(ManageError, match="did not enable a live patch; the module was removed again"):
        manage.load(system, make_ko(tmp_path / "livepatch-x.ko"), timeout=1)
    assert kernel.tool_calls()[-1] == "rmmod livepatch_x"
    assert not (kernel.sys_module / "livepatch_x").exists()


def test_an_uncreatable_install_root_is_an_error_not_a_traceback(kernel, tmp_path):
    (tmp_path / "file").write_text("")
    system = kernel.system(install_root=tmp_path / "file" / "kpatch")
    with pytest.raises(ManageError, match="cannot install livepatch-x.ko into .*file/kpatch/6.1.192"):
        manage.install(system, make_ko(tmp_path / "livepatch-x.ko"), RELEASE)


# -- refusals before calling the kernel ----------------------------------------------------------------

def test_a_module_that_is_not_a_live_patch_is_refused(kernel, system, tmp_path):
    ko = make_ko(tmp_path / "helper.ko", livepatch=False)
    with pytest.raises(ModuleRefused, match=r"helper.ko is not a live patch module: .*livepatch=\(absent\), "
                                            r"a live patch has livepatch=Y"):
        manage.load(system, ko, timeout=1)
    with pytest.raises(ModuleRefused, match="not a live patch"):
        manage.install(system, ko, RELEASE)
    assert kernel.tool_calls() == []


def test_refusals_are_one_line_on_the_command_line(tmp_path):
    FakeKernel(tmp_path)
    ko = make_ko(tmp_path / "livepatch-x.ko", "6.8.0 SMP mod_unload ")
    proc = subprocess.run([sys.executable, "-m", "pykpatch.commands.kpatch_cmd", "load", str(ko)],
                          capture_output=True, text=True, env={**os.environ, "PYKPATCH_SYSROOT": str(tmp_path)},
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == [f"kpatch: error: livepatch-x.ko is built for kernel 6.8.0, not {os.uname().release} "
                      "(the running kernel)"]
    assert "Traceback" not in proc.stderr


def test_the_module_name_comes_from_modinfo(kernel, system, tmp_path):
    (kernel.ctl / "next-name").write_text("livepatch_real")
    done = manage.load(system, make_ko(tmp_path / "renamed.ko", name="livepatch_real"), timeout=1)
    assert done.name == "livepatch_real" and (kernel.sysfs / "livepatch_real").is_dir()


# -- load / unload -----------------------------------------------------------------------------------

def test_load_list_unload(kernel, system, tmp_path):
    ko = make_ko(tmp_path / "livepatch-fix.ko")
    assert manage.load(system, ko, timeout=1) == manage.Done("livepatch_fix", 0.0)
    assert manage.list_loaded(system) == [manage.LoadedPatch("livepatch_fix", True, False)]
    assert manage.unload(system, "livepatch-fix", timeout=1).name == "livepatch_fix"
    assert manage.list_loaded(system) == []
    assert kernel.tool_calls() == [f"insmod {ko}", "rmmod livepatch_fix"]


def test_loading_what_is_loaded_is_refused(kernel, system, tmp_path):
    kernel.load_patch("livepatch_fix")
    with pytest.raises(ManageError, match="livepatch_fix is already loaded"):
        manage.load(system, make_ko(tmp_path / "livepatch-fix.ko"), timeout=1)


def test_failed_insmod_is_a_clear_error(kernel, system, tmp_path):
    kernel.insmod_error = "insmod: ERROR: could not insert module: Unknown symbol in module"
    kernel.sync_ctl()
    with pytest.raises(ManageError, match="insmod livepatch-x.ko failed: .*Unknown symbol"):
        manage.load(system, make_ko(tmp_path / "livepatch-x.ko"), timeout=1)


def test_unloading_what_is_not_loaded(system):
    with pytest.raises(ManageError, match="livepatch_nothing is not a loaded live patch"):
        manage.unload(system, "livepatch_nothing", timeout=0.1)


def test_unload_of_a_replaced_patch_removes_its_module(kernel, system):
    (kernel.sys_module / "livepatch_old").mkdir()
    (kernel.sys_module / "livepatch_old" / "taint").write_text("OEK\n")
    assert manage.inactive_modules(system) == ["livepatch_old"]
    assert manage.unload(system, "livepatch_old", timeout=1).name == "livepatch_old"
    assert kernel.tool_calls() == ["rmmod livepatch_old"]


# -- stalled transitions -----------------------------------------------------------------------------

def stalled_kernel(kernel: FakeKernel) -> FakeKernel:
    kernel.patch_objects["livepatch_helper_fix"] = {"klp_helper": ["klp_helper_nap,1"]}
    kernel.add_task(Task(57, "klp_napper", NAP_STACK), "0")
    kernel.add_task(Task(1, "systemd", "[<0>] ep_poll+0x1/0x2\n"), "1")
    kernel.add_task(Task(300, "python3", "[<0>] do_select+0x1/0x2\n", tid=301), "0")
    return kernel


def test_a_stalled_load_names_the_task_and_is_reversed(kernel, system, tmp_path):
    kernel.load_delay = None
    stalled_kernel(kernel)
    with pytest.raises(TransitionReversed, match="did not finish in 8 s .*PID 57 .*klp_helper_nap.*reversed, "
                                                 "the patch is not applied") as err:
        manage.load(system, make_ko(tmp_path / "livepatch-helper-fix.ko"), timeout=8)
    assert err.value.exit_code == EXIT_TRANSITION_REVERSED == 4
    assert err.value.tasks[0] == "PID 57 (klp_napper) in klp_helper_nap+0x2a/0x60 [klp_helper]"
    assert err.value.tasks[1].startswith("PID 300 (thread 301) (python3), no patched function")
    early = [s for s in kernel.said if "still in transition" in s]
    assert early and early[0].startswith(f"livepatch_helper_fix: still in transition to patched after "
                                         f"{REPORT_AFTER:.0f} s; 2 task(s)")
    assert any("signals the remaining tasks itself every 15 s" in s for s in kernel.said)
    assert not (kernel.sysfs / "livepatch_helper_fix").exists()
    assert kernel.tool_calls()[-1] == "rmmod livepatch_helper_fix"
    assert not (kernel.sys_module / "livepatch_helper_fix").exists()


def test_signalling_lets_a_stalled_load_finish(kernel, system, tmp_path):
    kernel.load_delay = None
    kernel.has_signal_file = True
    kernel.signal_delay = 1.0
    stalled_kernel(kernel)
    done = manage.load(system, make_ko(tmp_path / "livepatch-helper-fix.ko"), timeout=30)
    assert kernel.signalled == {"livepatch_helper_fix"}
    assert not done.forced and REPORT_AFTER <= done.seconds < REPORT_AFTER + 2
    assert any(s.endswith("/livepatch_helper_fix/signal)") for s in kernel.said)
    assert (kernel.sysfs / "livepatch_helper_fix" / "transition").read_text() == "0\n"


def test_force_finishes_a_stalled_load_and_says_what_it_means(kernel, system, tmp_path):
    kernel.load_delay = None
    stalled_kernel(kernel)
    done = manage.load(system, make_ko(tmp_path / "livepatch-helper-fix.ko"), timeout=8, force=True)
    assert done.forced and kernel.forced == {"livepatch_helper_fix"}
    warning = next(s for s in kernel.said if "forcing" in s)
    assert "2 task(s) are declared patched although they may still run the old code" in warning
    assert "never let this patch module be removed" in warning


def test_a_reversal_that_stalls_too_leaves_the_patch_in_transition(kernel, system, tmp_path):
    kernel.load_delay = kernel.reverse_delay = None
    stalled_kernel(kernel)
    with pytest.raises(TransitionStuck, match="its reversal did not either") as err:
        manage.load(system, make_ko(tmp_path / "livepatch-helper-fix.ko"), timeout=3)
    assert err.value.exit_code == EXIT_TRANSITION_STUCK == 5 and "force" in err.value.hint
    assert (kernel.sys_module / "livepatch_helper_fix").is_dir()
    assert "rmmod livepatch_helper_fix" not in kernel.tool_calls()


def test_a_stalled_unload_is_reversed_and_the_patch_stays(kernel, system):
    kernel.load_patch("livepatch_helper_fix", {"klp_helper": ["klp_helper_nap,1"]})
    kernel.unload_delay = None
    kernel.add_task(Task(57, "klp_napper", NAP_STACK), "1")
    with pytest.raises(TransitionReversed, match=r"PID 57 \(klp_napper\) in klp_helper_nap.*the patch is still "
                                                 r"applied"):
        manage.unload(system, "livepatch_helper_fix", timeout=7)
    assert (kernel.sysfs / "livepatch_helper_fix" / "enabled").read_text().strip() == "1"
    assert (kernel.sysfs / "livepatch_helper_fix" / "transition").read_text().strip() == "0"
    assert kernel.tool_calls() == []


def test_a_forced_unload_keeps_the_module(kernel, system):
    kernel.load_patch("livepatch_helper_fix", {"klp_helper": ["klp_helper_nap,1"]})
    kernel.unload_delay = None
    done = manage.unload(system, "livepatch_helper_fix", timeout=2, force=True)
    assert done.forced and not done.removed
    assert not (kernel.sysfs / "livepatch_helper_fix").exists()
    assert (kernel.sys_module / "livepatch_helper_fix").is_dir() and kernel.tool_calls() == []


def test_a_timeout_shorter_than_the_report_delay_still_reports_the_tasks(kernel, system, tmp_path):
    kernel.load_delay = None
    stalled_kernel(kernel)
    with pytest.raises(TransitionReversed, match="PID 57"):
        manage.load(system, make_ko(tmp_path / "livepatch-helper-fix.ko"), timeout=1)
    assert not any("still in transition" in s for s in kernel.said)


def test_stack_frames_and_report_limit():
    assert patched_frames(NAP_STACK, frozenset({"klp_helper_nap", "nothing"})) == \
        ("klp_helper_nap+0x2a/0x60 [klp_helper]",)
    tasks = [manage.StalledTask(i, i, "t", ()) for i in range(1, 13)]
    lines = describe_tasks(tasks, limit=10)
    assert len(lines) == 11 and lines[-1] == "and 2 more"


# -- install, boot-time loading -------------------------------------------------------------------------

def test_install_enables_the_boot_service_and_the_last_uninstall_disables_it(kernel, system, tmp_path):
    ko = make_ko(tmp_path / "livepatch-fix.ko")
    dest = manage.install(system, ko, RELEASE)
    assert dest == system.install_root / RELEASE / "livepatch-fix.ko" and dest.exists()
    assert manage.installed(system, RELEASE) == [dest]
    unit = system.unit_dir / "kpatch.service"
    loader = system.libexec_dir / "kpatch-load-installed"
    link = system.unit_dir / "sysinit.target.wants" / "kpatch.service"
    assert os.readlink(link) == "../kpatch.service" and link.resolve() == unit.resolve()
    assert os.access(loader, os.X_OK) and loader.read_bytes() == LOADER.read_bytes()
    assert f"ExecStart={loader} {system.install_root}\n" in unit.read_text()
    assert f"RequiresMountsFor={system.install_root}\n" in unit.read_text()
    assert manage.boot_service_enabled(system)
    with pytest.raises(ModuleRefused, match="built for kernel 6.1.192, not 6.8.0 .the release to install for"):
        manage.install(system, ko, "6.8.0")
    assert manage.uninstall(system, "livepatch_fix", RELEASE) == dest
    assert not dest.exists() and not unit.exists() and not link.is_symlink() and not loader.exists()
    assert not manage.boot_service_enabled(system)


def test_install_order_is_kept_and_a_reinstall_goes_last(system, tmp_path):
    a, b = make_ko(tmp_path / "livepatch-a.ko"), make_ko(tmp_path / "livepatch-b.ko")
    for ko in (a, b, a):
        manage.install(system, ko, RELEASE)
    d = system.install_root / RELEASE
    assert (d / "load-order").read_text() == "livepatch-b.ko livepatch_b\nlivepatch-a.ko livepatch_a\n"
    make_ko(d / "livepatch-0-by-hand.ko")
    assert [p.name for p in manage.installed(system, RELEASE)] == \
        ["livepatch-b.ko", "livepatch-a.ko", "livepatch-0-by-hand.ko"]
    manage.uninstall(system, "livepatch-b.ko", RELEASE)
    assert (d / "load-order").read_text() == "livepatch-a.ko livepatch_a\n"
    assert manage.boot_service_enabled(system)


def test_load_all_keeps_going_past_a_failure(kernel, system, tmp_path):
    for n in ("a", "b", "c"):
        manage.install(system, make_ko(tmp_path / f"livepatch-{n}.ko"), RELEASE)
    (kernel.ctl / "fail-livepatch_b").write_text("")
    done, failed = manage.load_installed(system, timeout=1)
    assert [d.name for d in done] == ["livepatch_a", "livepatch_c"]
    assert [f.path.name for f in failed] == ["livepatch-b.ko"] and "Invalid parameters" in failed[0].reason
    assert [c.split()[1].rsplit("/", 1)[1] for c in kernel.tool_calls()] == \
        ["livepatch-a.ko", "livepatch-b.ko", "livepatch-c.ko"]


def run_loader(kernel: FakeKernel, system: manage.System, timeout: int = 1, journal: bool = False):
    env = {"PATH": f"{kernel.root}/bin:/usr/bin:/bin", "KPATCH_SYSFS": str(kernel.sysfs),
           "KPATCH_SYS_MODULE": str(kernel.sys_module), "KPATCH_PROC": str(kernel.proc),
           "KPATCH_RELEASE": RELEASE, "KPATCH_TIMEOUT": str(timeout)}
    if journal:
        env["JOURNAL_STREAM"] = "8:1234"
    bindir = kernel.root / "bin"
    bindir.mkdir(exist_ok=True)
    for tool in ("insmod", "rmmod"):
        if not (bindir / tool).exists():
            (bindir / tool).symlink_to(getattr(kernel, tool))
    return subprocess.run(["sh", str(system.libexec_dir / "kpatch-load-installed"), str(system.install_root)],
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60)


def test_boot_loader_loads_in_install_order_and_reports_failures(kernel, system, tmp_path):
    (kernel.ctl / "insmod-transition").write_text("0\n")
    for n in ("c", "a", "b"):
        manage.install(system, make_ko(tmp_path / f"livepatch-{n}.ko"), RELEASE)
    (kernel.ctl / "fail-livepatch_a").write_text("")
    proc = run_loader(kernel, system, journal=True)
    assert proc.returncode == 1
    assert [c.rsplit("/", 1)[1] for c in kernel.tool_calls()] == ["livepatch-c.ko", "livepatch-a.ko",
                                                                   "livepatch-b.ko"]
    assert proc.stdout.splitlines() == [
        f"kpatch: livepatch_c: loaded ({system.install_root}/{RELEASE}/livepatch-c.ko)",
        f"kpatch: livepatch_b: loaded ({system.install_root}/{RELEASE}/livepatch-b.ko)"]
    assert proc.stderr.startswith("<3>kpatch: livepatch_a: insmod ") and "Invalid parameters" in proc.stderr
    again = run_loader(kernel, system)
    assert "kpatch: livepatch_c: already loaded" in again.stdout
    assert again.stderr.startswith("kpatch: livepatch_a")   # no journal: no priority prefix


def test_boot_loader_reverses_a_stalled_transition_and_goes_on(kernel, system, tmp_path):
    for n in ("stuck", "fine"):
        manage.install(system, make_ko(tmp_path / f"livepatch-{n}.ko"), RELEASE)
    kernel.add_task(Task(57, "klp_napper", NAP_STACK), "0")
    proc_stuck = run_loader(kernel, system)   # every transition stalls: insmod leaves transition=1
    assert proc_stuck.returncode == 1
    assert "livepatch_stuck: the transition did not finish in 1 s; reversing it" in proc_stuck.stderr
    assert "still unpatched: PID 57 (klp_napper)" in proc_stuck.stderr
    assert (kernel.sysfs / "livepatch_stuck" / "enabled").read_text().strip() == "0"
    assert "livepatch_fine: the transition did not finish" in proc_stuck.stderr   # it was still tried


def test_boot_loader_without_livepatch_or_patches(kernel, system):
    manage.install(system, make_ko(kernel.root / "livepatch-a.ko"), RELEASE)
    empty = run_loader(kernel, kernel.system(install_root=kernel.root / "nothing-here"))
    assert empty.returncode == 0 and f"no live patches installed for {RELEASE}" in empty.stdout
    kernel.sysfs.rmdir()
    proc = run_loader(kernel, system)
    assert proc.returncode == 1 and "this kernel has no live patching" in proc.stderr


# -- state for machines ------------------------------------------------------------------------------

def test_list_document(kernel, system, tmp_path):
    kernel.load_patch("livepatch_b", {"vmlinux": ["cmdline_proc_show,1"], "klp_helper": ["klp_helper_nap,1"]})
    kernel.load_patch("livepatch_a", {"vmlinux": ["meminfo_proc_show,1"]})
    (kernel.sysfs / "livepatch_b" / "replace").write_text("0\n")
    (kernel.proc / "modules").write_text("livepatch_b 16384 1 - Live 0x0 (OEK)\nklp_helper 16384 0 - Live 0x0 (O)\n"
                                         "livepatch_a 16384 1 - Live 0x0 (OEK)\n")
    (kernel.sys_module / "livepatch_old").mkdir()
    (kernel.sys_module / "livepatch_old" / "taint").write_text("OEK\n")
    manage.install(system, make_ko(tmp_path / "livepatch-a.ko"), RELEASE)
    manage.install(system, make_ko(tmp_path / "livepatch-n.ko", "6.2.0 SMP"), "6.2.0")
    doc = manage.list_document(system)
    assert [p["name"] for p in doc["loaded"]] == ["livepatch_a", "livepatch_b"]   # load order: a below b
    b = doc["loaded"][1]
    assert b == {"name": "livepatch_b", "enabled": True, "transition": False, "replace": False,
                 "stack_order": 2, "stack_order_source": "proc_modules",
                 "objects": [{"name": "klp_helper", "patched": True,
                              "functions": [{"name": "klp_helper_nap", "sympos": 1}]},
                             {"name": "vmlinux", "patched": True,
                              "functions": [{"name": "cmdline_proc_show", "sympos": 1}]}]}
    assert doc["loaded"][0]["replace"] is None
    assert doc["inactive_modules"] == ["livepatch_old"]
    assert [(e["kernel_release"], e["order"], e["file"], e["name"]) for e in doc["installed"]] == \
        [("6.1.192", 1, "livepatch-a.ko", "livepatch_a"), ("6.2.0", 1, "livepatch-n.ko", "livepatch_n")]
    assert doc["kernel_release"] == RELEASE and doc["boot_service_enabled"] is True and doc["version"] == 1
    (kernel.sysfs / "livepatch_a" / "stack_order").write_text("7\n")
    a = manage.list_document(system)["loaded"][1]
    assert (a["name"], a["stack_order"], a["stack_order_source"]) == ("livepatch_a", 7, "sysfs")


def test_info_document_for_a_name(kernel, system, tmp_path):
    kernel.load_patch("livepatch_a", {"vmlinux": ["meminfo_proc_show,1"]})
    manage.install(system, make_ko(tmp_path / "livepatch-a.ko"), RELEASE)
    doc = manage.info_document(system, "livepatch-a")
    assert doc["name"] == "livepatch_a" and doc["module"]["kernel_release"] == RELEASE
    assert doc["module"]["path"] == str(system.install_root / RELEASE / "livepatch-a.ko")
    assert doc["loaded"]["objects"][0]["functions"] == [{"name": "meminfo_proc_show", "sympos": 1}]
    assert doc["installed"][0]["order"] == 1
    with pytest.raises(ManageError, match="neither a module file nor a loaded or installed live patch"):
        manage.info_document(system, "livepatch_nothing")


def documented_fields() -> set[str]:
    """``type.field`` names listed in README's "kpatch state as JSON" table."""
    text = (REPO / "README.md").read_text()
    section = text.split("### kpatch state as JSON", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)`", section, re.M))


def produced_fields(list_doc: dict, info_doc: dict) -> set[str]:
    """The same names, collected from real documents by object type."""
    out: set[str] = set()

    def add(kind: str, obj: dict) -> None:
        out.update(f"{kind}.{key}" for key in obj)

    def objects(objs: list) -> None:
        for o in objs:
            add("object", o)
            for f in o["functions"]:
                add("function", f)

    add("list", list_doc)
    add("info", info_doc)
    for patch in [*list_doc["loaded"], info_doc["loaded"]]:
        add("patch", patch)
        objects(patch["objects"])
    for entry in [*list_doc["installed"], *info_doc["installed"]]:
        add("installed", entry)
    add("module", info_doc["module"])
    objects(info_doc["module"]["objects"])
    return out


def test_json_fields_are_the_documented_ones(kernel, system, tmp_path):
    kernel.load_patch("livepatch_b", {"vmlinux": ["cmdline_proc_show,1"]})
    manage.install(system, make_ko(tmp_path / "livepatch-b.ko"), RELEASE)
    fields = produced_fields(manage.list_document(system), manage.info_document(system, "livepatch_b"))
    assert fields == documented_fields()


def test_cli_list_and_info_json(kernel, tmp_path):
    kernel.load_patch("livepatch_b", {"vmlinux": ["cmdline_proc_show,1"]})
    env = {**os.environ, "PYKPATCH_SYSROOT": str(tmp_path)}

    def kpatch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pykpatch.commands.kpatch_cmd", *args], capture_output=True,
                              text=True, env=env, stdin=subprocess.DEVNULL)

    listed = kpatch("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [p["name"] for p in json.loads(listed.stdout)["loaded"]] == ["livepatch_b"]
    info = kpatch("info", "livepatch_b", "--json")
    assert json.loads(info.stdout)["loaded"]["enabled"] is True
    text = kpatch("list")
    assert "  livepatch_b [enabled]" in text.stdout and "Boot-time loading (kpatch.service): off" in text.stdout
    assert kpatch("install", "--list").stdout.strip() == "no live patches installed"


def test_cli_exit_code_of_a_reversed_transition(kernel, tmp_path, monkeypatch, capsys):
    kernel.load_delay = None
    stalled_kernel(kernel)
    monkeypatch.setattr(kpatch_cmd, "make_system", lambda: kernel.system(say=kpatch_cmd._progress))
    ko = make_ko(tmp_path / "livepatch-helper-fix.ko")
    assert kpatch_cmd.main(["load", str(ko), "--timeout", "6"]) == 4
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("kpatch: error:")][0].startswith(
        "kpatch: error: livepatch_helper_fix: the transition did not finish in 6 s (PID 57 (klp_napper)")
    assert "kpatch:   PID 57 (klp_napper) in klp_helper_nap+0x2a/0x60 [klp_helper]" in err


# -- what a module file says -------------------------------------------------------------------------

def test_info_lists_patched_functions(corpus_dir, tmp_path):
    name = "bug-table-section"
    orig = corpus_dir / f"{name}.ORIG.o"
    out = tmp_path / "out.o"
    proc = subprocess.run(
        [sys.executable, "-m", "pykpatch.cli", "diff", str(orig), str(corpus_dir / f"{name}.PATCHED.o"),
         "--symtab", str(orig), "-o", str(out)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **load_cases(corpus_dir)[name]["env"]},
    )
    assert proc.returncode == 0, proc.stderr
    info = manage.module_info(out)
    assert info.functions == [("vmlinux", "sysctl_head_grab", 1)]
    cli = subprocess.run([sys.executable, "-m", "pykpatch.cli", "manage", "info", str(out)],
                         capture_output=True, text=True)
    assert cli.returncode == 0 and "vmlinux: sysctl_head_grab (sympos 1)" in cli.stdout


def test_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pykpatch.cli", "manage", "info", str(tmp_path / "nope.ko")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "nope.ko" in proc.stderr
