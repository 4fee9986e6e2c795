"""The machines the lab builds and boots a kernel for: x86_64 natively, ppc64le and s390x cross.

Everything that differs between the lab's architectures is here, one
``LabMachine`` each, so the build, the initramfs and QEMU read it rather than
asking "which arch?" themselves: the kbuild image and its make target, the
config fragment, the QEMU binary and board, the console the kernel writes
to, the guest device of the *results port* (QEMU's second ``-serial``) and
where a static busybox of that architecture comes from.

Why ppc64le and s390x and not aarch64/loongarch64: Linux 6.1 (the lab's
source) has livepatch on x86, powerpc and s390 only (``HAVE_LIVEPATCH``);
arm64 has none in the 6.12 sources either, and loongarch's (6.12) needs a
loongarch64 cross compiler, which Debian 12 does not have.

The results port, per board: QEMU's pc gives the second ``-serial`` as the
second 16550 (``ttyS1``); pseries as a second spapr VIO terminal (``hvc1``,
major 229); s390-ccw-virtio as the SCLP *line-mode* console (the first is
the VT220 one, ``ttysclp0``), which Linux's ``sclp_tty`` names
``sclp_line0`` (4, 64).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pykpatch.errors import LabError


@dataclass(frozen=True)
class LabMachine:
    """One architecture's lab kernel and the QEMU board it boots on."""

    arch: str                          # pykpatch.arch name (and --arch)
    fragment: str                      # livepatch fragment in pykpatch/lab/data, applied on tinyconfig
    image: str                         # the boot image, a path in the built tree
    targets: tuple[str, ...]           # what make builds
    qemu: str
    qemu_package: str                  # the Debian package that has ``qemu``
    board: tuple[str, ...]             # QEMU's machine and CPU options
    console: str                       # console= for the kernel: the first -serial
    console_option: str                # the CONFIG_ option that gives that console
    results_tty: str                   # the guest's device of the second -serial
    results_rdev: tuple[int, int]
    busybox_arch: str | None           # Debian architecture of busybox-static to fetch; None: the host's
    memory: str = "256M"
    # Seconds /init waits after closing the results port, before reboot -f: for ports whose
    # driver neither drains on close nor flushes on reboot.
    results_settle: int = 0

    @property
    def image_name(self) -> str:
        """The boot image's name in the lab snapshot."""
        return "vmlinux" if self.image == "vmlinux" else "bzImage"

    @property
    def native(self) -> bool:
        return self.busybox_arch is None


X86_64 = LabMachine(
    arch="x86_64", fragment="livepatch-tiny.config", image="arch/x86/boot/bzImage",
    targets=("vmlinux", "bzImage", "modules"),
    qemu="qemu-system-x86_64", qemu_package="qemu-system-x86", board=(),
    console="ttyS0", console_option="CONFIG_SERIAL_8250_CONSOLE",
    results_tty="/dev/ttyS1", results_rdev=(4, 65), busybox_arch=None)

# SLOF loads vmlinux itself (prom_init); power9 is what Debian's ppc64el userspace is built for
# and what QEMU's TCG emulates fully (power10 prefixed instructions are not needed).
PPC64LE = LabMachine(
    arch="ppc64le", fragment="livepatch-tiny-ppc64le.config", image="vmlinux",
    targets=("vmlinux", "modules"),
    qemu="qemu-system-ppc64", qemu_package="qemu-system-ppc", board=("-M", "pseries", "-cpu", "power9"),
    console="hvc0", console_option="CONFIG_HVC_CONSOLE",
    results_tty="/dev/hvc1", results_rdev=(229, 1), busybox_arch="ppc64el", memory="512M")

S390X = LabMachine(
    arch="s390x", fragment="livepatch-tiny-s390x.config", image="arch/s390/boot/bzImage",
    targets=("vmlinux", "bzImage", "modules"),
    qemu="qemu-system-s390x", qemu_package="qemu-system-misc", board=("-M", "s390-ccw-virtio", "-cpu", "max"),
    console="ttysclp0", console_option="CONFIG_SCLP_VT220_CONSOLE",
    results_tty="/dev/sclp_line0", results_rdev=(4, 64), busybox_arch="s390x", memory="512M",
    # drivers/s390/char/sclp_tty.c sends its buffered pages from a timer and SCLP
    # requests; closing the tty does not wait and no reboot notifier flushes it
    # (the VT220 console's does): measured, reboot -f cut the last three steps.
    results_settle=3)

MACHINES: Mapping[str, LabMachine] = MappingProxyType({m.arch: m for m in (X86_64, PPC64LE, S390X)})


def lab_machine(arch: str) -> LabMachine:
    """The lab machine of ``arch`` (a pykpatch arch name); others are refused with the list."""
    try:
        return MACHINES[arch]
    except KeyError:
        raise LabError(f"the lab has no {arch} kernel: Linux 6.1 has livepatch on "
                       f"{', '.join(MACHINES)} only", hint="choose --arch " + "|".join(MACHINES)) from None
