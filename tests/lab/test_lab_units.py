"""Unit tests of the lab's pure parts: no kernel build, no QEMU."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pykpatch import cli
from pykpatch.errors import BootFailed, BootTimeout, LabConfigError, LabError
from pykpatch.lab import build as build_mod
from pykpatch.lab import cache, config, console, initramfs, prereqs, qemu, source, steps
from pykpatch.lab.console import KernelTrouble, StepResult

NONCE = "0badcafe"
M = f"@@PYKLAB-{NONCE}"


# ---------------------------------------------------------------- init script

def test_render_init_runs_each_step_file_and_reports_with_nonce():
    text = initramfs.render_init(["cat /proc/cmdline", steps.Step("sleep 9", timeout=2.4)], NONCE)
    assert text.startswith("#!/bin/busybox sh\n")
    assert "/bin/sh /lab/steps/0.sh </dev/null >&3 2>&3" in text
    assert "timeout -s KILL 2 /bin/sh /lab/steps/1.sh" in text
    assert f"'{M} START 2'" in text
    assert f"'{M} STEP 1 BEGIN'" in text and f"'{M} STEP 1 END rc=' \"$rc\"" in text
    assert text.index(f"{M} DONE") < text.index("reboot -f")
    assert "ABORT" not in text
    # Mounts come before any step; the results port falls back to the console.
    assert text.index("mount -t proc") < text.index("/lab/steps/0.sh")
    assert "R=/dev/console" in text


def test_render_init_stop_on_failure_only_for_checked_steps():
    text = initramfs.render_init(["false", steps.Step("true", check=False)], NONCE, keep_going=False)
    assert f"'{M} ABORT 0'" in text
    assert f"'{M} ABORT 1'" not in text


def test_render_init_is_deterministic_and_commands_stay_out_of_it():
    cmd = "echo 'quoted \"stuff\"' $HOME `x`"
    a = initramfs.render_init([cmd], NONCE)
    assert a == initramfs.render_init([cmd], NONCE)
    assert cmd not in a  # commands live in their own files, so no quoting bugs
    assert initramfs.render_step(cmd) == f"#!/bin/sh\n{cmd}\n"


def test_generated_init_protocol_round_trips_through_the_parser(tmp_path):
    """Run the step section of a real /init with the host's sh, then parse it."""
    if shutil.which("sh") is None:
        pytest.skip("no sh")  # pragma: no cover
    cmds = ["printf 'x'", "echo err >&2; exit 3", "true", "printf 'a\\n\\n'"]
    script = initramfs.render_init(cmds, NONCE)
    body = script[script.index("printf '%s\\n' '" + M + " START"):script.index("exec 3>&-")]
    body = body.replace("/lab/steps", str(tmp_path)).replace("> /dev/console", "> /dev/null")
    for i, c in enumerate(cmds):
        (tmp_path / f"{i}.sh").write_text(initramfs.render_step(c))
    out = tmp_path / "results"
    subprocess.run(["sh", "-c", f"exec 3>{out}\n{body}"], check=True)
    report = console.parse_results(out.read_text(), NONCE, cmds)
    assert report.started and report.done
    assert [(s.output, s.rc) for s in report.steps] == [("x", 0), ("err\n", 3), ("", 0), ("a\n\n", 0)]


# ---------------------------------------------------------------- cpio

def _read_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    entries, off = {}, 0
    while True:
        assert data[off:off + 6] == b"070701", off
        fields = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = data[off + 110: off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        body = data[off: off + filesize]
        off += filesize
        off += -off % 4
        if name == "TRAILER!!!":
            assert len(data) % 512 == 0
            return entries
        entries[name] = (fields[1], body, (fields[9], fields[10]))


def test_write_cpio_newc_layout():
    data = initramfs.write_cpio([
        initramfs.CpioEntry("bin", stat.S_IFDIR | 0o755),
        initramfs.CpioEntry("bin/x", stat.S_IFREG | 0o755, b"abcde"),
        initramfs.CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        initramfs.CpioEntry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
    ])
    got = _read_newc(data)
    assert got["bin/x"] == (stat.S_IFREG | 0o755, b"abcde", (0, 0))
    assert got["dev/console"][2] == (5, 1) and stat.S_ISCHR(got["dev/console"][0])
    assert got["bin/sh"][1] == b"busybox"


def test_build_initramfs_holds_busybox_init_steps_and_modules(tmp_path):
    bb = tmp_path / "busybox"
    bb.write_bytes(b"\x7fELF fake busybox")
    ko = tmp_path / "livepatch-sample.ko"
    ko.write_bytes(b"module bytes")
    out = initramfs.build_initramfs(tmp_path / "i.cpio", ["echo hi"], NONCE, modules=[ko], busybox=bb)
    got = _read_newc(out.read_bytes())
    assert got["bin/busybox"][1] == bb.read_bytes()
    assert got["modules/livepatch-sample.ko"][1] == b"module bytes"
    assert got["lab/steps/0.sh"][1] == b"#!/bin/sh\necho hi\n"
    assert got["init"][0] == stat.S_IFREG | 0o755
    if shutil.which("cpio"):
        listing = subprocess.run(["cpio", "-it", "--quiet"], input=out.read_bytes(), capture_output=True,
                                 check=True).stdout.decode().split()
        assert {"init", "bin/busybox", "dev/console", "modules/livepatch-sample.ko"} <= set(listing)


def test_build_initramfs_rejects_duplicate_and_non_ko_modules(tmp_path):
    bb = tmp_path / "busybox"
    bb.write_bytes(b"x")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.ko").write_bytes(b"1")
    (tmp_path / "m.ko").write_bytes(b"2")
    (tmp_path / "m.o").write_bytes(b"3")
    with pytest.raises(LabError, match="two modules named m.ko"):
        initramfs.build_initramfs(tmp_path / "i", [], NONCE, modules=[tmp_path / "m.ko", tmp_path / "a/m.ko"],
                                  busybox=bb)
    with pytest.raises(LabError, match="must end in .ko"):
        initramfs.build_initramfs(tmp_path / "i", [], NONCE, modules=[tmp_path / "m.o"], busybox=bb)


# ---------------------------------------------------------------- step results

def _stream(*parts: tuple[int, str, int | None]) -> str:
    text = f"{M} START {len(parts)}\n"
    for i, out, rc in parts:
        text += f"{M} STEP {i} BEGIN\n{out}"
        if rc is not None:
            text += f"\n{M} STEP {i} END rc={rc}\n"
    return text


def test_parse_results_exact_outputs():
    text = _stream((0, "hello\n", 0), (1, "no newline", 2), (2, "", 0)) + f"{M} DONE\n"
    report = console.parse_results(text, NONCE, ["a", "b", "c"])
    assert report.started and report.done and report.aborted_at is None
    assert [(s.command, s.output, s.rc) for s in report.steps] == [
        ("a", "hello\n", 0), ("b", "no newline", 2), ("c", "", 0)]
    assert [s.ok for s in report.steps] == [True, False, True]


def test_parse_results_truncated_run_and_unstarted_steps():
    text = _stream((0, "ok\n", 0), (1, "partial out", None))
    report = console.parse_results(text, NONCE, ["a", "b", "c"])
    assert not report.done
    assert report.steps[1] == StepResult(1, "b", "partial out", None, True)
    assert report.steps[2].started is False and report.steps[2].rc is None


def test_parse_results_crlf_foreign_markers_and_abort():
    other = "@@PYKLAB-ffffffff STEP 0 END rc=9"
    text = _stream((0, f"{other}\nline\n", 1)).replace("\n", "\r\n") + f"{M} ABORT 0\r\n"
    report = console.parse_results(text, NONCE, ["a"], [True])
    assert report.steps[0].output == f"{other}\nline\n"
    assert report.steps[0].rc == 1
    assert report.aborted_at == 0 and not report.done


def test_parse_results_unchecked_failure_is_ok():
    text = _stream((0, "", 1))
    assert console.parse_results(text, NONCE, ["false"], [False]).steps[0].ok


def test_parse_results_nothing_at_all():
    report = console.parse_results("random console noise\n", NONCE, ["a"])
    assert not report.started and not report.steps[0].started


# ---------------------------------------------------------------- kernel trouble

OOPS_LOG = """\
[    3.100000] BUG: kernel NULL pointer dereference, address: 0000000000000000
[    3.100100] #PF: supervisor write access in kernel mode
[    3.100200] Oops: 0002 [#1] SMP PTI
[    3.100300] CPU: 0 PID: 45 Comm: sh Not tainted 6.1.192 #1
[    3.100400] RIP: 0010:sysrq_handle_crash+0x16/0x20
[    3.100500] Call Trace:
[    3.100600]  <TASK>
[    3.100900] Kernel panic - not syncing: Fatal exception
"""

WARN_LOG = """\
------------[ cut here ]------------
WARNING: CPU: 0 PID: 1 at kernel/livepatch/core.c:123 klp_enable_patch+0x10/0x20
Modules linked in: livepatch_sample(K)
Call Trace:
 <TASK>
---[ end trace 0000000000000000 ]---
"""

CLEAN_LOG = """\
Linux version 6.1.192 (root@host) (gcc (Debian 12.2.0-14) 12.2.0) #1 SMP
livepatch_sample: tainting kernel with TAINT_LIVEPATCH
livepatch: enabling patch 'livepatch_sample'
livepatch: 'livepatch_sample': starting patching transition
livepatch: 'livepatch_sample': patching complete
DEBUG: user output mentioning Oops without colon, and warnings: none
reboot: Restarting system
"""


def test_scan_console_oops_and_panic():
    t = console.scan_console(OOPS_LOG)
    assert t.panicked and t.oopsed and t.call_trace and not t.warned
    assert t.lines[0].endswith("BUG: kernel NULL pointer dereference, address: 0000000000000000")
    assert any("Kernel panic - not syncing: Fatal exception" in line for line in t.lines)


def test_scan_console_warn():
    t = console.scan_console(WARN_LOG)
    assert t.warned and t.call_trace and not t.oopsed and not t.panicked


def test_scan_console_clean_log():
    t = console.scan_console(CLEAN_LOG)
    assert not t.any and t.lines == ()


@pytest.mark.parametrize("line, flag", [
    ("kernel BUG at mm/slub.c:100!", "oopsed"),
    ("general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP", "oopsed"),
    ("BUG: sleeping function called from invalid context at kernel/sched/core.c:1", "oopsed"),
    ("[   1.0] WARNING: at kernel/foo.c:1 bar+0x1/0x2", "warned"),
    ("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)", "panicked"),
])
def test_scan_console_variants(line, flag):
    assert getattr(console.scan_console(f"ok\n{line}\n"), flag)


# ---------------------------------------------------------------- BootResult verdicts

def _result(**kw) -> qemu.BootResult:
    base = dict(steps=(StepResult(0, "echo", "x\n", 0, True),), console="", results="", trouble=KernelTrouble(),
                timed_out=False, completed=True, init_started=True, aborted_at=None, qemu_rc=0, seconds=3.0)
    base.update(kw)
    return qemu.BootResult(**base)


def test_boot_result_ok_and_failures():
    assert _result().ok and _result().failures() == []
    assert _result().raise_for_failure().ok
    warned = _result(trouble=console.scan_console(WARN_LOG))
    assert not warned.ok and warned.warned
    assert warned.failures()[0].startswith("kernel WARNING: WARNING: CPU: 0")
    with pytest.raises(BootFailed):
        warned.raise_for_failure()
    timed = _result(timed_out=True, completed=False, seconds=15.2,
                    steps=(StepResult(0, "sleep 600", "", None, True),))
    assert timed.failures() == ["timed out after 15 s; QEMU was killed", "step 0 (sleep 600) never finished"]
    with pytest.raises(BootTimeout):
        timed.raise_for_failure()
    never = _result(completed=False, init_started=False, steps=(StepResult(0, "a", "", None, False),))
    assert never.failures() == ["the guest never reached the lab's /init"]


# ---------------------------------------------------------------- steps

def test_step_helpers_quote_and_place_modules():
    assert steps.insmod("livepatch-sample").command == "insmod /modules/livepatch-sample.ko"
    assert steps.insmod(Path("/x/y/m.ko"), "a=1").command == "insmod /modules/m.ko a=1"
    assert steps.rmmod("livepatch-sample.ko").command == "rmmod livepatch-sample"
    assert steps.write("/sys/a b", "0").command == "echo 0 > '/sys/a b'"
    assert steps.read("/proc/cmdline").command == "cat /proc/cmdline"
    w = steps.wait_for("/sys/t", "0", timeout=5)
    assert "[ \"$cur\" = 0 ]" in w.command and w.timeout == 15
    with pytest.raises(ValueError):
        steps.Step("  ")
    with pytest.raises(ValueError):
        steps.Step("true", timeout=0)


def test_wait_helpers_work_in_a_real_shell(tmp_path):
    f = tmp_path / "v"
    f.write_text("1\n")
    slow = steps.wait_for(str(f), "0", timeout=0.3, interval=0.1).command
    proc = subprocess.run(["sh", "-c", slow], capture_output=True, text=True)
    assert proc.returncode == 1 and "last: 1" in proc.stdout
    f.write_text("0\n")
    proc = subprocess.run(["sh", "-c", slow], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, "0\n")
    gone = steps.wait_until_gone(str(tmp_path / "absent"), timeout=0.3).command
    assert subprocess.run(["sh", "-c", gone]).returncode == 0


# ---------------------------------------------------------------- cache keys and layout

def test_cache_key_is_stable_and_sensitive():
    frag = "CONFIG_LIVEPATCH=y\n# CONFIG_X is not set\n"
    key = cache.cache_key("6.1.192-2", frag, ("vmlinux",), "gcc 12")
    assert key == cache.cache_key("6.1.192-2", frag, ("vmlinux",), "gcc 12")
    assert key.startswith("linux-6.1.192-2-") and len(key.rsplit("-", 1)[1]) == 12
    assert key == cache.cache_key("6.1.192-2", "# a comment\n" + frag + "\n", ("vmlinux",), "gcc 12")
    assert key != cache.cache_key("6.1.192-3", frag, ("vmlinux",), "gcc 12")
    assert key != cache.cache_key("6.1.192-2", frag + "CONFIG_Y=y\n", ("vmlinux",), "gcc 12")
    assert key != cache.cache_key("6.1.192-2", frag, ("vmlinux", "modules"), "gcc 12")
    assert key != cache.cache_key("6.1.192-2", frag, ("vmlinux",), "gcc 13")
    assert cache.cache_key("we/ird ver", frag, (), "").startswith("linux-we_ird_ver-")


def test_cache_root_follows_environment():
    assert cache.cache_root({"HOME": "/h"}) == Path("/h/.cache/pykpatch/lab")
    assert cache.cache_root({"HOME": "/h", "XDG_CACHE_HOME": "/x"}) == Path("/x/pykpatch/lab")
    assert cache.cache_root({"XDG_CACHE_HOME": "/x", "PYKPATCH_LAB_CACHE": "/c"}) == Path("/c")


def _fake_tarball(tmp_path: Path) -> Path:
    top = tmp_path / "src" / "linux-source-9.9"
    top.mkdir(parents=True)
    (top / "Makefile").write_text("all:\n")
    tarball = tmp_path / "linux-source-9.9.tar.xz"
    with tarfile.open(tarball, "w:xz") as tf:
        tf.add(top, arcname="linux-source-9.9")
    return tarball


def test_unpack_is_atomic_and_reused(tmp_path):
    src = source.find_source(_fake_tarball(tmp_path))
    assert src.version.startswith("linux-source-9.9-")
    key_dir = tmp_path / "cache" / "k"
    key_dir.mkdir(parents=True)
    tree = source.unpack(src, key_dir)
    assert (tree / "Makefile").is_file() and (key_dir / cache.UNPACK_STAMP).is_file()
    assert not list(key_dir.glob(".unpack-*"))
    (tree / "marker").write_text("kept")
    assert (source.unpack(src, key_dir) / "marker").is_file()  # reused


def test_unpack_redoes_an_unstamped_tree(tmp_path):
    src = source.find_source(_fake_tarball(tmp_path))
    key_dir = tmp_path / "k"
    (key_dir / "tree").mkdir(parents=True)
    (key_dir / "tree" / "half").write_text("interrupted")
    (key_dir / ".unpack-old").mkdir()
    tree = source.unpack(src, key_dir)
    assert not (tree / "half").exists() and (tree / "Makefile").is_file()
    assert not (key_dir / ".unpack-old").exists()


def test_find_source_missing_tarball_names_package(tmp_path):
    with pytest.raises(LabError) as err:
        source.find_source(tmp_path / "nope.tar.xz")
    assert "linux-source-6.1" in (err.value.hint or "")


def _fake_build(key_dir: Path, modules: list[str]) -> None:
    snap = key_dir / cache.SNAPSHOT_DIR
    for name in build_mod.SNAPSHOT_FILES.values():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_text(name)
    for m in modules:
        (snap / m).parent.mkdir(parents=True, exist_ok=True)
        (snap / m).write_text("ko")


def test_load_build_trusts_only_a_stamp_with_its_files(tmp_path):
    key_dir = tmp_path / "linux-x-abc"
    mods = ["modules/samples/livepatch/livepatch-sample.ko"]
    _fake_build(key_dir, mods)
    assert build_mod.load_build(key_dir) is None  # no stamp yet: unfinished
    cache.write_stamp(key_dir / cache.BUILD_STAMP, {"modules": mods, "kernelrelease": "9.9", "build_seconds": 1})
    kb = build_mod.load_build(key_dir)
    assert kb is not None and kb.reused and kb.kernelrelease == "9.9"
    assert kb.module("livepatch_sample") == key_dir / "snapshot" / mods[0]
    assert kb.module("livepatch-sample.ko") == kb.module("livepatch-sample")
    with pytest.raises(LabError, match="no module 'nope'"):
        kb.module("nope")
    (key_dir / "snapshot" / "bzImage").unlink()
    assert build_mod.load_build(key_dir) is None  # damaged snapshot: rebuild
    (key_dir / cache.BUILD_STAMP).write_text("{not json")
    assert build_mod.load_build(key_dir) is None


def test_write_stamp_is_atomic(tmp_path):
    cache.write_stamp(tmp_path / "s.json", {"a": 1})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


# ---------------------------------------------------------------- config

def test_shipped_fragment_asks_for_livepatch_essentials():
    frag = config.parse_config(config.default_fragment())
    for option in ("CONFIG_LIVEPATCH", "CONFIG_DYNAMIC_FTRACE_WITH_REGS", "CONFIG_MODULES", "CONFIG_SAMPLE_LIVEPATCH"):
        assert frag[option] in ("y", "m"), option
    assert frag["CONFIG_MODVERSIONS"] == "y"  # last value wins, as in merge_config.sh


def test_parse_config_last_wins_and_not_set():
    text = "# CONFIG_A is not set\nCONFIG_A=y\nCONFIG_B=\"str\"\n# CONFIG_C is not set\n# comment\n"
    assert config.parse_config(text) == {"CONFIG_A": "y", "CONFIG_B": '"str"', "CONFIG_C": "n"}


def test_verify_config_reports_dropped_options():
    frag = "CONFIG_LIVEPATCH=y\nCONFIG_TMPFS=y\n# CONFIG_X is not set\nCONFIG_S=m\n"
    essential = {**config.ESSENTIAL, "CONFIG_SERIAL_8250_CONSOLE": "y"}  # x86_64's console by default
    good = "\n".join(f"{k}={v}" for k, v in essential.items()) + "\nCONFIG_TMPFS=y\nCONFIG_S=m\n"
    assert config.verify_config(frag, good) == []
    bad = good.replace("CONFIG_TMPFS=y\n", "# CONFIG_TMPFS is not set\n").replace("CONFIG_S=m", "CONFIG_S=y")
    bad = bad.replace("CONFIG_LIVEPATCH=y\n", "") + "CONFIG_X=y\n"
    assert config.verify_config(frag, bad) == [
        ("CONFIG_LIVEPATCH", "y", "n"), ("CONFIG_TMPFS", "y", "n"), ("CONFIG_X", "n", "y"), ("CONFIG_S", "m", "y")]
    err = LabConfigError(config.verify_config(frag, bad), "/t/.config")
    assert "CONFIG_LIVEPATCH=n (wanted y)" in err.message and "/t/.config" in err.message


def test_essential_options_checked_even_if_fragment_forgets_them():
    missing = config.verify_config("", "CONFIG_MODULES=y\n")
    assert ("CONFIG_LIVEPATCH", "y", "n") in missing


# ---------------------------------------------------------------- qemu and prerequisites

def test_qemu_command_line():
    cmd = qemu.qemu_command(Path("/k"), Path("/i"), Path("/r"), memory="128M", append="quiet")
    joined = " ".join(cmd)
    for part in ("-nographic", "-no-reboot", "-m 128M", "-kernel /k", "-initrd /i", "-serial stdio",
                 "-serial file:/r", "-accel tcg"):
        assert part in joined
    assert cmd[cmd.index("-append") + 1] == "console=ttyS0 panic=-1 quiet"
    assert "kvm" not in joined
    assert "-accel kvm" in " ".join(qemu.qemu_command(Path("/k"), Path("/i"), Path("/r"), accel="kvm"))


def test_resolve_accel():
    assert qemu.resolve_accel("tcg") == "tcg"
    assert qemu.resolve_accel("auto") in ("tcg", "kvm")
    with pytest.raises(LabError):
        qemu.resolve_accel("hvf")


def test_kvm_probe_is_false_without_device(tmp_path):
    assert qemu.kvm_usable(str(tmp_path / "kvm")) is False


def _elf64(tmp_path: Path, p_types: list[int]) -> Path:
    import struct
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 32, 64)  # e_phoff
    struct.pack_into("<HH", header, 54, 56, len(p_types))  # e_phentsize, e_phnum
    body = b"".join(struct.pack("<I", t) + bytes(52) for t in p_types)
    path = tmp_path / f"elf{len(p_types)}"
    path.write_bytes(bytes(header) + body)
    return path


def test_is_static_elf(tmp_path):
    assert prereqs.is_static_elf(_elf64(tmp_path, [1, 1]))          # PT_LOADs only
    assert not prereqs.is_static_elf(_elf64(tmp_path, [6, 3, 1]))   # has PT_INTERP
    assert not prereqs.is_static_elf(Path(os.path.realpath(sys.executable)))
    (tmp_path / "txt").write_text("not elf")
    assert not prereqs.is_static_elf(tmp_path / "txt")


def test_require_lists_everything_with_packages():
    with pytest.raises(LabError) as err:
        prereqs.require([prereqs.Missing("command `bc`", "bc"), prereqs.Missing("/x", "busybox-static")], "build")
    assert err.value.message == "cannot build: missing command `bc`; /x"
    assert err.value.hint == "apt-get install -y bc busybox-static"


def test_boot_rejects_missing_kernel(tmp_path):
    with pytest.raises(LabError, match="kernel image not found"):
        qemu.boot(tmp_path / "bzImage", ["true"])


def test_cli_parses_lab_commands():
    parser = cli.build_parser()
    args = parser.parse_args(["lab", "boot", "--kernel", "/k", "--module", "a.ko", "--module", "b.ko",
                              "--step", "echo 1", "--step", "echo 2", "--timeout", "9", "--memory", "128M"])
    assert (args.module, args.step, args.timeout, args.memory) == (["a.ko", "b.ko"], ["echo 1", "echo 2"], 9.0, "128M")
    assert parser.parse_args(["lab", "build", "-j", "3"]).jobs == 3
    assert cli.main(["lab", "build", "--jobs", "0"]) == 1


def test_cli_boot_missing_kernel_is_an_error(tmp_path, capsys):
    assert cli.main(["lab", "boot", "--kernel", str(tmp_path / "none"), "--step", "true"]) == 1
    assert "kernel image not found" in capsys.readouterr().err


# ---------------------------------------------------------------- build logging and progress

def test_run_logged_failure_names_log_and_error_line(tmp_path):
    from pykpatch.lab.logrun import run_logged
    log = tmp_path / "build.log"
    seen: list[str] = []
    with pytest.raises(LabError) as err:
        run_logged(["sh", "-c", "echo '  CC kernel/a.o'; echo 'kernel/a.c:1:2: error: oops' >&2; exit 2"],
                   tmp_path, log, on_line=seen.append, what="kernel build")
    assert err.value.message == f"kernel build failed (exit 2); full log: {log}"
    assert err.value.hint == "kernel/a.c:1:2: error: oops"
    assert seen == ["  CC kernel/a.o", "kernel/a.c:1:2: error: oops"]
    assert "kernel/a.c:1:2: error: oops" in log.read_text()


def test_lab_progress_is_throttled(monkeypatch):
    from pykpatch.lab import logrun

    said: list[str] = []
    clock = iter([20.0, 21.0, 40.0, 41.0])
    monkeypatch.setattr(logrun.time, "monotonic", lambda: next(clock))
    say = logrun._every(10.0, said.append)
    for msg in ("kernel build: 1 files compiled", "kernel build: 2 files compiled",
                "kernel build: 3 files compiled", "kernel build: done, 4 files compiled in 3.0 s"):
        say(msg)
    assert said == ["kernel build: 1 files compiled", "kernel build: 3 files compiled",
                    "kernel build: done, 4 files compiled in 3.0 s"]
