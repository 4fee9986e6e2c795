"""Unit tests of the userspace guest and the Debian package helper (no QEMU, no network)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pykpatch.elf import ElfObject, Section, write_elf
from pykpatch.elf.constants import SHF, SHT
from pykpatch.errors import LabError
from pykpatch.lab import debian, guest, qemu
from pykpatch.lab.steps import Step

NONCE = "0badcafe"

METAPACKAGE = """\
Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+3)
Version: 6.1.192-3
Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)
Description: Linux for 64-bit PCs (meta-package)
 This package depends on the latest Linux kernel
 and modules for use on PCs.

Package: linux-image-amd64
Version: 6.1.190-1
Depends: linux-image-6.1.0-56-amd64 (= 6.1.190-1)
"""


def test_parse_stanzas_keeps_continuation_lines():
    stanzas = debian.parse_stanzas(METAPACKAGE)
    assert [s["Version"] for s in stanzas] == ["6.1.192-3", "6.1.190-1"]
    assert stanzas[0]["Description"].endswith("and modules for use on PCs.")


def test_the_image_is_the_one_built_from_the_source_version():
    stanzas = debian.parse_stanzas(METAPACKAGE)
    assert debian.image_for_version("6.1.190-1", stanzas) == debian.Package("linux-image-6.1.0-56-amd64",
                                                                            "6.1.190-1")
    image = debian.image_for_version("6.1.192-3", stanzas)
    assert [p.spec for p in debian.kernel_packages(image)] == [
        "linux-image-6.1.0-57-amd64=6.1.192-3", "linux-headers-6.1.0-57-amd64=6.1.192-3",
        "linux-headers-6.1.0-57-common=6.1.192-3", "linux-kbuild-6.1=6.1.192-3"]
    with pytest.raises(LabError, match=r"no linux-image-amd64 6\.1\.999-1 .*6\.1\.192-3, 6\.1\.190-1"):
        debian.image_for_version("6.1.999-1", stanzas)


def test_headers_makefile_is_pointed_at_the_unpacked_copy(tmp_path):
    kernel = debian.DebianKernel("6.1.0-57-amd64", "6.1.192-3", tmp_path)
    kernel.headers.mkdir(parents=True)
    (kernel.headers / "Makefile").write_text("include /usr/src/linux-headers-6.1.0-57-common/Makefile\n")
    debian.relocate_headers(kernel)
    debian.relocate_headers(kernel)   # idempotent
    assert (kernel.headers / "Makefile").read_text() == \
        f"include {tmp_path}/usr/src/linux-headers-6.1.0-57-common/Makefile\n"


def test_rootfs_key_covers_what_goes_into_the_image(monkeypatch):
    key = guest.rootfs_key("bookworm", guest.PACKAGES, guest.MIRROR)
    assert key == guest.rootfs_key("bookworm", guest.PACKAGES, guest.MIRROR) and key.startswith("debian-bookworm-")
    assert key != guest.rootfs_key("trixie", guest.PACKAGES, guest.MIRROR)
    assert key != guest.rootfs_key("bookworm", (*guest.PACKAGES, "vim"), guest.MIRROR)
    monkeypatch.setitem(guest.FILES, "etc/hostname", "other\n")   # type: ignore[index]
    assert key != guest.rootfs_key("bookworm", guest.PACKAGES, guest.MIRROR)


def test_customise_adds_the_runner_and_masks_units(tmp_path):
    guest.customise(tmp_path)
    runner = tmp_path / "usr/local/sbin/pykpatch-lab-run"
    assert runner.stat().st_mode & 0o111 and "systemctl reboot --force" in runner.read_text()
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants/pykpatch-lab.service"
    assert wants.resolve() == (tmp_path / "etc/systemd/system/pykpatch-lab.service").resolve()
    assert all((tmp_path / "etc/systemd/system" / u).readlink() == Path("/dev/null") for u in guest.MASKED_UNITS)
    guest.customise(tmp_path)    # running it again on the same tree is fine


def test_render_run_reports_steps_from_the_payload():
    text = guest.render_run([Step("cat /proc/cmdline"), Step("false", check=True)], NONCE, keep_going=False)
    assert text.startswith("#!/bin/sh\n") and "cd /mnt/lab\n" in text
    assert "/bin/sh /mnt/lab/steps/0.sh </dev/null >&3 2>&3" in text
    assert f"'@@PYKLAB-{NONCE} ABORT 1' >&3; exec 3>&-; exit 1; fi" in text
    assert "export PATH=/mnt/lab/bin:" in text and "reboot" not in text   # the image's runner reboots


def test_payload_disk_holds_run_steps_and_files(tmp_path):
    src = tmp_path / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / "pkg" / "m.py").write_text("x = 1\n")
    (src / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"junk")
    image = guest.build_payload(tmp_path / "w", [Step("echo hi")], NONCE, {"lib/pkg": src / "pkg"})
    def ls(path: str) -> str:
        return subprocess.run(["debugfs", "-R", f"ls -p {path}", str(image)], capture_output=True, text=True).stdout

    assert "/m.py/" in ls("/lib/pkg")
    cached = ls("/lib/pkg/__pycache__")     # compiled afresh; the host's stale m.pyc is not copied
    assert "/m.cpython-" in cached and "/m.pyc/" not in cached
    tree = tmp_path / "w" / "payload"
    assert (tree / "steps" / "0.sh").read_text() == "#!/bin/sh\necho hi\n" and (tree / "run").is_file()


def test_qemu_command_with_disks_and_no_initrd():
    cmd = qemu.qemu_command(Path("/k"), None, Path("/r"), append="root=/dev/vda rw",
                            drives=[qemu.Drive(Path("/d.qcow2"), "qcow2"), qemu.Drive(Path("/p"), readonly=True)])
    line = " ".join(cmd)
    assert "-initrd" not in cmd and "console=ttyS0 panic=-1 root=/dev/vda rw" in line
    assert "-drive file=/d.qcow2,if=virtio,format=qcow2 -drive file=/p,if=virtio,format=raw,readonly=on" in line


def test_disk_initramfs_loads_the_modules_in_order_and_switches_root(tmp_path):
    bb = tmp_path / "busybox"
    bb.write_bytes(b"\x7fELF")
    mods = []
    for name in ("virtio.ko", "ext4.ko"):
        (tmp_path / name).write_bytes(name.encode())
        mods.append(tmp_path / name)
    out = guest.disk_initramfs(tmp_path / "i.cpio", mods, busybox=bb)
    data = out.read_bytes()
    assert data.startswith(b"070701") and b"modules/virtio.ko" in data and b"dev/console" in data
    init = guest.render_disk_init(["virtio.ko", "ext4.ko"])
    assert init.index("insmod /modules/virtio.ko") < init.index("insmod /modules/ext4.ko")
    assert init.rstrip().endswith("exec switch_root /newroot /sbin/init")


def _module(path: Path, depends: str) -> None:
    obj = ElfObject()
    obj.add_section(Section(".modinfo", SHT.PROGBITS, SHF.ALLOC, f"depends={depends}\0".encode(), align=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_elf(obj, path)


def test_module_dependencies_come_first(tmp_path):
    kernel = debian.DebianKernel("6.1.0-57-amd64", "6.1.192-3", tmp_path)
    k = kernel.modules_dir / "kernel"
    _module(k / "fs/ext4/ext4.ko", "jbd2,mbcache")
    _module(k / "fs/jbd2/jbd2.ko", "")
    _module(k / "fs/mbcache.ko", "")
    _module(k / "drivers/block/virtio_blk.ko", "virtio,virtio_ring")
    _module(k / "drivers/virtio/virtio.ko", "virtio_ring")
    _module(k / "drivers/virtio/virtio_ring.ko", "")
    got = [p.name for p in debian.modules_with_dependencies(kernel, ["virtio_blk", "ext4"])]
    assert got == ["virtio_ring.ko", "virtio.ko", "virtio_blk.ko", "jbd2.ko", "mbcache.ko", "ext4.ko"]
    with pytest.raises(LabError, match="module crc32c_generic not found"):
        debian.modules_with_dependencies(kernel, ["crc32c-generic"])
