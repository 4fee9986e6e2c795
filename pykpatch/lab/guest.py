"""A lab guest with a real userspace: Debian with systemd, kmod and Python on a virtio disk.

The busybox initramfs (``initramfs``) proves a module loads; an operator's
tool needs more: systemd starting units at boot, a root file system that
survives a reboot, Python for ``kpatch``.  This module makes that guest:

* ``ensure_rootfs`` runs ``debootstrap`` once (Debian's packages, from the
  configured mirror) and turns the tree into an ext4 image, cached under
  ``~/.cache/pykpatch/guest/<key>/`` (the key covers the suite, packages and
  everything written into the tree here);
* ``new_machine`` gives a test its own disk, a qcow2 overlay on that image:
  boots of one machine keep their changes (a reboot is a new QEMU run of
  the same disk), other machines and the cache are untouched;
* ``boot_guest`` boots a kernel on it with a second, read-only disk (the
  *payload*: the steps and the caller's files).  A unit baked into the
  image, ``pykpatch-lab.service``, runs once the system is up (after
  ``multi-user.target``): it mounts the payload on ``/mnt/lab``, runs the
  steps with the initramfs's protocol (results on ttyS1, see
  ``initramfs.render_step_protocol``) and reboots, which ends QEMU
  (``-no-reboot``).

The lab kernel mounts the disk itself (virtio-blk and ext4 built in);
Debian's kernel has them as modules, so ``disk_initramfs`` builds a small
busybox initramfs that loads them and switches to the disk's root.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import py_compile
import shlex
import shutil
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pykpatch.errors import LabError
from pykpatch.lab.cache import cache_root, locked, read_stamp, remove_tree, write_stamp
from pykpatch.lab.initramfs import CpioEntry, new_nonce, render_step, render_step_protocol, write_cpio
from pykpatch.lab.logrun import run_logged
from pykpatch.lab.prereqs import BUSYBOX, QEMU
from pykpatch.lab.qemu import BootResult, Drive, qemu_command, resolve_accel, run_qemu
from pykpatch.lab.steps import Step, as_step

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# systemd as init, kmod for insmod/rmmod, python3 for kpatch.
PACKAGES = ("systemd", "systemd-sysv", "kmod", "python3")
IMAGE_SIZE = "1G"
ROOTFS_STAMP = "rootfs.json"
IMAGE_NAME = "rootfs.ext4"
PAYLOAD_MOUNT = "/mnt/lab"
DEFAULT_MEMORY = "512M"
DEFAULT_TIMEOUT = 240.0
# Bump when what is written into the tree below changes in a way the texts do not show.
LAYOUT_VERSION = 1

RUNNER = f"""#!/bin/sh
# pykpatch lab guest: run the steps of the payload disk (/dev/vdb), then reboot (ends QEMU).
mkdir -p {PAYLOAD_MOUNT}
if mount -o ro /dev/vdb {PAYLOAD_MOUNT}; then
    /bin/sh {PAYLOAD_MOUNT}/run
else
    echo "pykpatch-lab: no payload disk on /dev/vdb" > /dev/console
fi
sync
systemctl reboot --force
"""

RUNNER_UNIT = """[Unit]
Description=pykpatch lab: run the steps from the payload disk
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/pykpatch-lab-run
TimeoutStartSec=infinity
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""

# Units that only cost boot time in a guest without a login or a network.
MASKED_UNITS = (
    "serial-getty@ttyS0.service", "getty@tty1.service", "getty-static.service", "apt-daily.timer",
    "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "dpkg-db-backup.timer",
    "systemd-timesyncd.service",
)

FILES: Mapping[str, str] = {
    "etc/hostname": "pykpatch-guest\n",
    "etc/fstab": "# the kernel mounts the root (root=/dev/vda rw); the payload is mounted by pykpatch-lab-run\n",
    "usr/local/sbin/pykpatch-lab-run": RUNNER,
    "etc/systemd/system/pykpatch-lab.service": RUNNER_UNIT,
}


def guest_cache_root() -> Path:
    return cache_root().parent / "guest"


def rootfs_key(suite: str, packages: Sequence[str], mirror: str) -> str:
    """Name the cached image: what debootstrap installs and what is written into it.  Pure."""
    digest = hashlib.sha256()
    parts = [f"layout={LAYOUT_VERSION}", f"suite={suite}", f"mirror={mirror}", "packages=" + ",".join(packages),
             "masked=" + ",".join(MASKED_UNITS), f"size={IMAGE_SIZE}"]
    parts += [f"{path}={text}" for path, text in sorted(FILES.items())]
    for part in parts:
        digest.update(part.encode() + b"\0")
    return f"debian-{suite}-{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class GuestRootfs:
    key: str
    directory: Path
    seconds: float
    reused: bool

    @property
    def image(self) -> Path:
        return self.directory / IMAGE_NAME


Progress = Callable[[str], None]


def _require(tools: Sequence[tuple[str, str]], purpose: str) -> None:
    missing = [(t, p) for t, p in tools if shutil.which(t) is None]
    if missing:
        raise LabError(f"cannot {purpose}: missing {', '.join(t for t, _ in missing)}",
                       hint="apt-get install -y " + " ".join(sorted({p for _, p in missing})))


def ensure_rootfs(*, root: Path | None = None, suite: str = SUITE, mirror: str = MIRROR,
                  packages: Sequence[str] = PACKAGES, progress: Progress | None = None) -> GuestRootfs:
    """The cached Debian root image, made first if needed (a few minutes once)."""
    say = progress or (lambda _m: None)
    key = rootfs_key(suite, packages, mirror)
    directory = (root or guest_cache_root()) / key
    found = _load(directory)
    if found is not None:
        return found
    _require([("debootstrap", "debootstrap"), ("mke2fs", "e2fsprogs"), ("qemu-img", "qemu-utils")],
             "make the lab's Debian guest")
    if os.geteuid() != 0:
        raise LabError("making the lab's Debian guest needs root (debootstrap creates device nodes and chroots)",
                       hint="run the kernel tests as root, as CI does")
    with locked(directory):
        found = _load(directory)
        if found is not None:
            return found
        return _make_rootfs(directory, key, suite, mirror, packages, say)


def _load(directory: Path) -> GuestRootfs | None:
    data = read_stamp(directory / ROOTFS_STAMP)
    if data is None or not (directory / IMAGE_NAME).is_file():
        return None
    return GuestRootfs(directory.name, directory, float(data.get("seconds", 0.0)), reused=True)


def _make_rootfs(directory: Path, key: str, suite: str, mirror: str, packages: Sequence[str],
                 say: Progress) -> GuestRootfs:
    started = time.monotonic()
    log = directory / "rootfs.log"
    tree = directory / "tree"
    debs = directory.parent / "debs"      # debootstrap's package cache, shared by every key
    debs.mkdir(parents=True, exist_ok=True)
    remove_tree(tree)
    say(f"debootstrap {suite} ({', '.join(packages)}) into {tree} (log: {log})")
    run_logged(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", f"--cache-dir={debs}",
                suite, str(tree), mirror], directory, log, what="debootstrap")
    customise(tree)
    image = directory / IMAGE_NAME
    say(f"mke2fs: {tree} -> {image}")
    image.unlink(missing_ok=True)
    run_logged(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "pykpatch-root", "-d", str(tree), str(image), IMAGE_SIZE],
               directory, log, what="mke2fs")
    remove_tree(tree)
    seconds = round(time.monotonic() - started, 1)
    write_stamp(directory / ROOTFS_STAMP, {"key": key, "suite": suite, "mirror": mirror,
                                           "packages": list(packages), "seconds": seconds})
    return GuestRootfs(key, directory, seconds, reused=False)


def customise(tree: Path) -> None:
    """What the guest needs beyond debootstrap: the runner unit, fewer units, a name."""
    for rel, text in FILES.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tree / "usr/local/sbin/pykpatch-lab-run").chmod(0o755)
    _link(tree / "etc/systemd/system/multi-user.target.wants/pykpatch-lab.service", "../pykpatch-lab.service")
    for unit in MASKED_UNITS:
        _link(tree / "etc/systemd/system" / unit, "/dev/null")
    (tree / PAYLOAD_MOUNT.strip("/")).mkdir(parents=True, exist_ok=True)


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


@dataclass
class GuestMachine:
    """One guest's own disk; every ``boot_guest`` of it sees what the previous boots wrote."""

    disk: Path
    workdir: Path
    boots: int = 0


def new_machine(rootfs: GuestRootfs, workdir: Path) -> GuestMachine:
    """A fresh disk for one test: a qcow2 overlay on the cached image (instant, small)."""
    _require([("qemu-img", "qemu-utils")], "make a guest disk")
    workdir.mkdir(parents=True, exist_ok=True)
    disk = workdir / "disk.qcow2"
    disk.unlink(missing_ok=True)
    run_logged(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(rootfs.image), "-F", "raw", str(disk)],
               workdir, workdir / "machine.log", what="qemu-img create")
    return GuestMachine(disk, workdir)


def render_run(steps: Sequence[Step], nonce: str, keep_going: bool = True) -> str:
    """The payload's ``run`` script: the steps with the lab's protocol, from ``/mnt/lab``.  Pure."""
    lines = [
        "#!/bin/sh",
        "# Generated by pykpatch.lab.guest: runs the steps, reports on ttyS1.",
        f"export PATH={PAYLOAD_MOUNT}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root",
        # The results port is a tty: keep systemctl/journalctl from colouring what the host parses.
        "export SYSTEMD_COLORS=0 SYSTEMD_PAGER=",
        f"cd {PAYLOAD_MOUNT}",
    ]
    lines += render_step_protocol(steps, nonce, keep_going=keep_going, step_dir=f"{PAYLOAD_MOUNT}/steps",
                                  on_abort="exit 1")
    lines.append('echo "pykpatch-lab: all steps done" > /dev/console')
    return "\n".join(lines) + "\n"


def _copy_into(dest: Path, files: Mapping[str, Path]) -> None:
    for rel, src in files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
        else:
            shutil.copy2(src, target)


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build_payload(workdir: Path, steps: Sequence[Step], nonce: str, files: Mapping[str, Path],
                  keep_going: bool = True) -> Path:
    """The read-only second disk of one boot: ``run``, ``steps/N.sh`` and the caller's files."""
    tree = workdir / "payload"
    remove_tree(tree)
    (tree / "steps").mkdir(parents=True)
    _copy_into(tree, files)
    # The payload is read-only and Python compiling pykpatch on every call under TCG costs
    # seconds: byte-compile the copy here (hash-based .pyc, valid whatever the file dates;
    # unchecked, which is safe in a copy that lives for one boot).
    compileall.compile_dir(str(tree), quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    (tree / "run").write_text(render_run(steps, nonce, keep_going))
    for i, step in enumerate(steps):
        (tree / "steps" / f"{i}.sh").write_text(render_step(step))
    image = workdir / "payload.ext4"
    image.unlink(missing_ok=True)
    size_mb = 16 + 2 * _tree_size(tree) // (1 << 20)
    run_logged(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "pykpatch-lab", "-d", str(tree), str(image), f"{size_mb}M"],
               workdir, workdir / "payload.log", what="mke2fs (payload)")
    return image


def boot_guest(
    kernel: Path,
    machine: GuestMachine,
    steps: Sequence[Step | str],
    *,
    files: Mapping[str, Path] | None = None,
    initrd: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    memory: str = DEFAULT_MEMORY,
    append: str = "",
    accel: str = "tcg",
    keep_going: bool = True,
    on_console: Callable[[str], None] | None = None,
) -> BootResult:
    """Boot ``kernel`` on the machine's disk and run ``steps`` once systemd is up.

    ``files`` (payload path -> host file or directory) are on ``/mnt/lab``
    in the guest, read-only; ``/mnt/lab/bin`` is first on the steps' PATH.
    """
    if not Path(kernel).is_file():
        raise LabError(f"kernel image not found: {kernel}")
    _require([(QEMU, "qemu-system-x86"), ("mke2fs", "e2fsprogs")], "boot the lab's Debian guest")
    parsed = [as_step(s) for s in steps]
    machine.boots += 1
    workdir = machine.workdir / f"boot{machine.boots}"
    workdir.mkdir(parents=True, exist_ok=True)
    nonce = new_nonce()
    payload = build_payload(workdir, parsed, nonce, files or {}, keep_going)
    cmd = qemu_command(Path(kernel), initrd, workdir / "results.log", memory=memory,
                       append=f"root=/dev/vda rw {append}".strip(), accel=resolve_accel(accel),
                       drives=[Drive(machine.disk, "qcow2"), Drive(payload, "raw", readonly=True)])
    return run_qemu(cmd, parsed, nonce, workdir, timeout, on_console)


def pykpatch_files() -> dict[str, Path]:
    """The payload files that give the guest a ``kpatch`` command: this very pykpatch."""
    return {"pykpatch": Path(__file__).resolve().parents[1]}


KPATCH_WRAPPER = f"""#!/bin/sh
PYTHONPATH={PAYLOAD_MOUNT} exec python3 -m pykpatch.commands.kpatch_cmd "$@"
"""


def write_kpatch_wrapper(directory: Path) -> Path:
    """``bin/kpatch`` for the payload (runs the payload's pykpatch with the guest's python3)."""
    path = directory / "kpatch"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(KPATCH_WRAPPER)
    path.chmod(0o755)
    return path


def render_disk_init(modules: Sequence[str]) -> str:
    """/init of ``disk_initramfs``: load the disk's drivers, mount it, hand over to its init.  Pure."""
    loads = "\n".join(f"insmod /modules/{shlex.quote(m)} || echo \"pykpatch-lab: insmod {m} failed\"" for m in modules)
    return f"""#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{loads}
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "pykpatch-lab: cannot mount /dev/vda" > /dev/console
    reboot -f
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"""


def disk_initramfs(out: Path, modules: Sequence[Path], busybox: Path = BUSYBOX) -> Path:
    """A busybox initramfs that loads ``modules`` (in order) and boots the disk's systemd."""
    try:
        bb = busybox.read_bytes()
        mods = [(m.name, m.read_bytes()) for m in modules]
    except OSError as err:
        raise LabError(f"cannot read {err.filename}: {err.strerror}") from err
    dirs = ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "newroot", "modules")
    entries = [CpioEntry(d, stat.S_IFDIR | 0o755) for d in dirs]
    entries += [
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        CpioEntry("bin/busybox", stat.S_IFREG | 0o755, bb),
        CpioEntry("init", stat.S_IFREG | 0o755, render_disk_init([n for n, _ in mods]).encode()),
    ]
    entries += [CpioEntry(f"modules/{name}", stat.S_IFREG | 0o644, data) for name, data in mods]
    out.write_bytes(write_cpio(entries))
    return out

