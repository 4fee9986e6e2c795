"""The lab's machines (x86_64, ppc64le, s390x): what each build, boot and initramfs gets.  No kernel needed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pykpatch.errors import LabError
from pykpatch.lab import build as build_mod
from pykpatch.lab import cache, config, foreign, initramfs, prereqs, qemu
from pykpatch.lab.machines import MACHINES, PPC64LE, S390X, X86_64, lab_machine


def test_machines_are_the_livepatch_arches_of_6_1():
    assert sorted(MACHINES) == ["ppc64le", "s390x", "x86_64"]
    with pytest.raises(LabError, match=r"no aarch64 kernel.*x86_64, ppc64le, s390x") as err:
        lab_machine("aarch64")
    assert err.value.hint == "choose --arch x86_64|ppc64le|s390x"


def test_x86_snapshot_and_key_inputs_are_the_first_labs():
    """x86_64's cached kernels stay valid: same snapshot files, same key inputs as before the machines."""
    assert build_mod.snapshot_files(X86_64) == dict(build_mod.SNAPSHOT_FILES)
    assert X86_64.targets == ("vmlinux", "bzImage", "modules")
    source = build_mod.KernelSource(Path("/x.tar.xz"), "6.1.192-3")
    fragment = config.default_fragment()
    assert build_mod.lab_key(source, fragment) == cache.cache_key("6.1.192-3", fragment, X86_64.targets,
                                                                   build_mod.compiler_id())


def test_cross_snapshots_keep_their_boot_image():
    ppc = build_mod.snapshot_files(PPC64LE)
    assert "bzImage" not in ppc.values() and ppc["vmlinux"] == "vmlinux" and PPC64LE.image_name == "vmlinux"
    assert build_mod.snapshot_files(S390X)["arch/s390/boot/bzImage"] == "bzImage"


def test_cross_builds_get_arch_and_the_debian_cross_compiler():
    assert build_mod.make_variables(X86_64) == {}
    assert build_mod.make_variables(PPC64LE) == {"ARCH": "powerpc", "CROSS_COMPILE": "powerpc64le-linux-gnu-"}
    assert build_mod.make_variables(S390X) == {"ARCH": "s390", "CROSS_COMPILE": "s390x-linux-gnu-"}


def test_cross_key_differs_from_x86_and_names_no_host_compiler(monkeypatch):
    seen = []
    monkeypatch.setattr(build_mod, "compiler_id", lambda prefix="": seen.append(prefix) or f"{prefix}gcc 12")
    source = build_mod.KernelSource(Path("/x.tar.xz"), "6.1.192-3")
    keys = {m.arch: build_mod.lab_key(source, config.default_fragment("6.1", m.arch), m) for m in MACHINES.values()}
    assert len(set(keys.values())) == 3
    assert seen == ["", "powerpc64le-linux-gnu-", "s390x-linux-gnu-"]


def test_cross_fragments_exist_for_6_1_only():
    for machine in (PPC64LE, S390X):
        text = config.default_fragment("6.1", machine.arch)
        assert "CONFIG_LIVEPATCH=y" in text and f"{machine.console_option}=y" in text
        assert "CONFIG_BINFMT_MISC=m" in text   # the module the cross scenarios patch
        with pytest.raises(LabError, match=f"{machine.arch} kernel is of series 6.1 only"):
            config.default_fragment("6.12", machine.arch)


def test_essential_console_is_the_machines():
    frag = config.default_fragment("6.1", "s390x")
    conf = frag + "\n# CONFIG_SCLP_VT220_CONSOLE is not set\n"
    assert ("CONFIG_SCLP_VT220_CONSOLE", "y", "n") in config.verify_config(frag, conf, {"CONFIG_SCLP_VT220_CONSOLE": "y"})
    # and the x86 console is not asked of s390x
    assert not [m for m in config.verify_config(frag, frag, {"CONFIG_SCLP_VT220_CONSOLE": "y"})
                if m[0] == "CONFIG_SERIAL_8250_CONSOLE"]


def test_qemu_command_per_machine(tmp_path):
    ppc = qemu.qemu_command(tmp_path / "vmlinux", tmp_path / "i.cpio", tmp_path / "r.log", machine=PPC64LE)
    assert ppc[:5] == ["qemu-system-ppc64", "-M", "pseries", "-cpu", "power9"]
    assert ppc[ppc.index("-append") + 1] == "console=hvc0 panic=-1"
    assert ppc.count("-serial") == 2 and f"file:{tmp_path / 'r.log'}" in ppc
    s390 = qemu.qemu_command(tmp_path / "bzImage", None, tmp_path / "r.log", machine=S390X, append="quiet")
    assert s390[:5] == ["qemu-system-s390x", "-M", "s390-ccw-virtio", "-cpu", "max"]
    assert s390[s390.index("-append") + 1] == "console=ttysclp0 panic=-1 quiet"
    x86 = qemu.qemu_command(tmp_path / "bzImage", None, tmp_path / "r.log")
    assert x86[0] == "qemu-system-x86_64" and x86[x86.index("-append") + 1] == qemu.BASE_CMDLINE
    with pytest.raises(LabError, match="KVM cannot run the lab's ppc64le guest"):
        qemu.qemu_command(tmp_path / "vmlinux", None, tmp_path / "r.log", machine=PPC64LE, accel="kvm")


@pytest.mark.parametrize("machine", [X86_64, PPC64LE, S390X], ids=lambda m: m.arch)
def test_initramfs_reports_on_the_machines_results_port(machine):
    entries = {e.name: e for e in initramfs.initramfs_entries(["true"], "n0nce", busybox=b"bb", machine=machine)}
    node = entries[machine.results_tty.lstrip("/")]
    assert stat.S_ISCHR(node.mode) and node.rdev == machine.results_rdev
    init = entries["init"].data.decode()
    assert f"R={machine.results_tty}\n" in init
    others = {m.results_tty for m in MACHINES.values()} - {machine.results_tty}
    assert not [t for t in others if t in init]
    # s390x's SCLP line-mode tty is sent from a timer: /init waits for it before every reboot
    settle = f"sleep {machine.results_settle}; reboot -f"
    assert (settle in init) == (machine.arch == "s390x")
    strict = initramfs.render_init(["true"], "n0nce", keep_going=False, results_settle=machine.results_settle)
    assert strict.count("reboot -f") == 2 and (strict.count(settle) == 2) == (machine.arch == "s390x")


def test_missing_cross_compiler_names_its_package(tmp_path):
    tarball = tmp_path / "linux.tar.xz"
    tarball.write_bytes(b"")
    missing = prereqs.missing_for_build(tarball, "nosuch-linux-gnu-")
    assert prereqs.Missing("command `nosuch-linux-gnu-gcc`", "gcc-nosuch-linux-gnu") in missing


def test_cross_boot_needs_its_qemu(monkeypatch, tmp_path):
    image = tmp_path / "vmlinux"
    image.write_bytes(b"\x7fELF")
    monkeypatch.setattr(prereqs.shutil, "which", lambda name: None if name == "qemu-system-ppc64" else "/bin/x")
    with pytest.raises(LabError, match="qemu-system-ppc64") as err:
        qemu.boot(image, ["true"], machine=PPC64LE, busybox=prereqs.BUSYBOX)
    assert "qemu-system-ppc" in (err.value.hint or "")


def test_private_apt_state_leaves_the_hosts_alone(tmp_path):
    opts = foreign.apt_options(tmp_path, "ppc64el")
    pairs = dict(o.split("=", 1) for o in opts if "=" in o)
    assert pairs["APT::Architecture"] == pairs["APT::Architectures"] == "ppc64el"
    for key in ("Dir::State", "Dir::State::status", "Dir::Cache"):
        assert pairs[key].startswith(str(tmp_path)), key
    assert not any(o.startswith("Dir::Etc") for o in pairs)   # the machine's sources and keys


def test_fetched_busybox_must_be_the_machines(tmp_path):
    """The host's (x86_64) static busybox is refused as a ppc64le guest's userspace."""
    fake = tmp_path / "busybox"
    elf = bytearray(64)
    elf[:6] = b"\x7fELF\x02\x01"
    elf[18:20] = (62).to_bytes(2, "little")  # EM_X86_64
    fake.write_bytes(bytes(elf))
    with pytest.raises(LabError, match="not a ppc64le executable"):
        foreign._require_machine(fake, PPC64LE)
    with pytest.raises(LabError, match="uses the host's busybox"):
        foreign.foreign_busybox(X86_64, root=tmp_path)


def test_ci_installs_every_machines_qemu_and_cross_compiler():
    """CI boots every lab machine: .ci/run must install each one's QEMU and Debian cross compiler."""
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    packages = set(ci.split("APT_PACKAGES=(", 1)[1].split(")", 1)[0].split())
    for machine in MACHINES.values():
        assert machine.qemu_package in packages, machine.arch
    assert {"gcc-powerpc64le-linux-gnu", "gcc-s390x-linux-gnu"} <= packages
