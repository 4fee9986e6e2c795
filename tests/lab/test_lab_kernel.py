"""Acceptance tests that boot the real lab kernel under QEMU.

One session-scoped build (cached across sessions) serves every test; each
boot takes a few seconds under TCG.
"""

from __future__ import annotations

import pytest

from pykpatch import cli
from pykpatch.errors import BootFailed, BootTimeout
from pykpatch.lab import Step, boot, insmod, read, rmmod, shell, wait_for, wait_until_gone, write

pytestmark = pytest.mark.kernel

SAMPLE = "livepatch-sample"
KLP = "/sys/kernel/livepatch/livepatch_sample"
PATCHED_TEXT = "this has been live patched"


def test_lab_kernel_snapshot_has_what_later_stages_need(lab_kernel):
    for path in (lab_kernel.bzimage, lab_kernel.vmlinux, lab_kernel.system_map,
                 lab_kernel.module_symvers, lab_kernel.config):
        assert path.is_file(), path
    assert lab_kernel.module(SAMPLE).name == "livepatch-sample.ko"
    assert (lab_kernel.tree / "Makefile").is_file()
    config = lab_kernel.config.read_text()
    assert "CONFIG_LIVEPATCH=y" in config
    assert "CONFIG_DYNAMIC_FTRACE_WITH_REGS=y" in config
    assert lab_kernel.kernelrelease.startswith("6.1.")


def test_sample_livepatch_applies_switches_and_reverts(lab_boot):
    result = lab_boot(
        [
            read("/proc/cmdline"),                       # 0 original
            insmod(SAMPLE),                              # 1
            wait_for(f"{KLP}/transition", "0"),          # 2 switched
            read("/proc/cmdline"),                       # 3 patched
            read(f"{KLP}/enabled"),                      # 4
            write(f"{KLP}/enabled", "0"),                # 5 disable
            wait_until_gone(KLP),                        # 6 patch freed
            rmmod(SAMPLE),                               # 7
            read("/proc/cmdline"),                       # 8 original again
            shell("lsmod"),                              # 9
        ],
        modules=[SAMPLE],
    )
    assert result.ok, result.failures()
    steps = result.steps
    assert "console=ttyS0" in steps[0].output
    assert PATCHED_TEXT not in steps[0].output
    assert steps[2].output.strip() == "0"
    assert steps[3].output == PATCHED_TEXT + "\n"
    assert steps[4].output.strip() == "1"
    assert steps[8].output == steps[0].output
    assert "livepatch_sample" not in steps[9].output
    assert not (result.panicked or result.oopsed or result.warned or result.call_trace)
    assert "livepatch: 'livepatch_sample': patching complete" in result.console


def test_step_protocol_end_to_end(lab_boot):
    """Outputs arrive byte-exact, rcs are right, in-guest timeouts end a step."""
    result = lab_boot(
        [
            shell("printf 'no newline'"),                         # 0
            shell("echo to-stderr >&2; exit 3", check=False),     # 1
            shell("true"),                                        # 2 empty output
            shell("seq 1 3000"),                                  # 3 longer output
            Step("sleep 600", timeout=2, check=False),            # 4 killed in guest
            shell("cat /init >/dev/null; grep -c STEP /init"),    # 5 markers in files are harmless
            shell("printf 'a\\n\\nb\\n\\n'"),                     # 6 trailing blank lines kept
        ],
    )
    assert result.ok, result.failures()
    s = result.steps
    assert (s[0].output, s[0].rc) == ("no newline", 0)
    assert (s[1].output, s[1].rc) == ("to-stderr\n", 3)
    assert (s[2].output, s[2].rc) == ("", 0)
    assert s[3].output == "".join(f"{i}\n" for i in range(1, 3001))
    assert s[4].rc == 137
    assert s[5].rc == 0
    assert s[6].output == "a\n\nb\n\n"


def test_failed_step_fails_the_run(lab_boot):
    result = lab_boot(["echo one", "exit 7", "echo three"])
    assert not result.ok
    assert result.completed
    assert [st.rc for st in result.steps] == [0, 7, 0]
    assert any("step 1 (exit 7) exited 7" in f for f in result.failures())
    with pytest.raises(BootFailed):
        result.raise_for_failure()


def test_stop_on_failure_skips_the_rest(lab_boot):
    result = lab_boot(["exit 5", "echo never"], keep_going=False)
    assert not result.ok
    assert result.aborted_at == 0
    assert result.steps[1].started is False


def test_kernel_panic_is_reported_not_hung(lab_boot):
    # Neither init exists: "Requested init /nonexistent failed" is a panic;
    # panic=-1 reboots at once and -no-reboot turns that into QEMU exiting.
    # (rdinit= alone would not do: the kernel falls back to /bin/sh.)
    result = lab_boot(["echo unreachable"], append="rdinit=/nonexistent init=/nonexistent", timeout=60)
    assert result.panicked
    assert not result.timed_out
    assert not result.init_started
    assert not result.ok
    assert any(f.startswith("kernel panic") for f in result.failures())


def test_crash_in_a_step_is_reported(lab_boot):
    result = lab_boot(["echo before", "echo c > /proc/sysrq-trigger", "echo after"], timeout=60)
    # 6.1's sysrq "c" panics directly (no oops first), with a call trace.
    assert result.panicked and result.call_trace
    assert "sysrq triggered crash" in result.failures()[0]
    assert not result.timed_out
    assert result.steps[0].rc == 0
    assert result.steps[1].started and result.steps[1].rc is None
    assert not result.steps[2].started
    assert not result.ok


def test_hang_hits_the_hard_timeout(lab_boot):
    result = lab_boot(["echo before", "sleep 600"], timeout=10)
    assert result.timed_out
    assert 10 <= result.seconds < 25
    assert result.steps[0].output == "before\n"
    assert result.steps[1].started and result.steps[1].rc is None
    assert any("timed out" in f for f in result.failures())
    with pytest.raises(BootTimeout):
        result.raise_for_failure()


def test_unbootable_image_is_reported(tmp_path):
    """QEMU refusing the image is a failed result naming QEMU's complaint."""
    bogus = tmp_path / "bzImage"
    bogus.write_bytes(b"this is not a kernel" * 100)
    result = boot(bogus, ["true"], timeout=30)
    assert not result.ok and not result.timed_out and result.qemu_rc
    assert result.failures()[0].startswith(f"QEMU exited {result.qemu_rc}: ")


def test_cli_boot_prints_steps_and_exit_code(lab_kernel, capsys):
    rc = cli.main(["lab", "boot", "--kernel", str(lab_kernel.bzimage), "--module", SAMPLE,
                   "--step", f"insmod /modules/{SAMPLE}.ko",
                   "--step", f"cat {KLP}/enabled"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"--- step 1: cat {KLP}/enabled\n1\n--- step 1: rc=0" in out
    assert "lab: ok" in out

    rc = cli.main(["lab", "boot", "--step", "echo fine", "--step", "exit 4"])  # default: the lab kernel
    captured = capsys.readouterr()
    assert rc == 1
    assert "--- step 1: rc=4" in captured.out
    assert "step 1 (exit 4) exited 4" in captured.err


def test_cli_build_reuses_and_info_lists(lab_kernel, capsys):
    assert cli.main(["lab", "build", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "reused from cache" in out
    assert str(lab_kernel.bzimage) in out
    assert cli.main(["lab", "info"]) == 0
    out = capsys.readouterr().out
    assert f"{lab_kernel.key}: built" in out
