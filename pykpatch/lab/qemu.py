"""Boot a kernel under QEMU with a lab initramfs and report what happened.

Every run ends one way or another within ``timeout`` seconds: the guest
reboots (QEMU has ``-no-reboot``, so that exits it), the kernel panics
(``panic=-1`` reboots at once, same effect), or the host kills QEMU.  The
outcome is a ``BootResult``, never an exception, because provoking a panic
or a hang is a legitimate test; ``LabError`` is kept for "could not even
start QEMU".

TCG is the default accelerator: on machines where ``/dev/kvm`` exists but
the CPU has no virtualisation extensions, ``-enable-kvm`` hangs instead of
failing, so KVM is used only when asked for (``accel="kvm"``) or when
``accel="auto"`` finds it genuinely usable.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pykpatch.errors import BootFailed, BootTimeout, LabError
from pykpatch.lab.console import KernelTrouble, StepResult, parse_results, scan_console
from pykpatch.lab.initramfs import build_initramfs, new_nonce
from pykpatch.lab.machines import X86_64, LabMachine
from pykpatch.lab.prereqs import BUSYBOX, missing_for_boot, require
from pykpatch.lab.steps import Step, as_step

DEFAULT_TIMEOUT = 120.0
DEFAULT_MEMORY = "256M"
BASE_CMDLINE = "console=ttyS0 panic=-1"  # x86_64's; base_cmdline(machine) in general


def base_cmdline(machine: LabMachine) -> str:
    """The kernel command line every lab boot starts with: the machine's console, reboot on panic."""
    return f"console={machine.console} panic=-1"
ACCELS = ("tcg", "kvm", "auto")

_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01
_KVM_API_VERSION = 12


@dataclass(frozen=True)
class BootResult:
    """Everything one boot produced.

    ``ok`` is the verdict a test usually wants: the guest ran every step to
    the end, every checked step returned 0, and the console shows no panic,
    oops, BUG, WARN or call trace.  ``failures()`` says why not.
    """

    steps: tuple[StepResult, ...]
    console: str
    results: str
    trouble: KernelTrouble
    timed_out: bool
    completed: bool
    init_started: bool
    aborted_at: int | None
    qemu_rc: int | None
    seconds: float
    command: tuple[str, ...] = field(default=())

    @property
    def panicked(self) -> bool:
        return self.trouble.panicked

    @property
    def oopsed(self) -> bool:
        return self.trouble.oopsed

    @property
    def warned(self) -> bool:
        return self.trouble.warned

    @property
    def call_trace(self) -> bool:
        return self.trouble.call_trace

    def failures(self) -> list[str]:
        """One line per reason this run is not a success (empty when ok)."""
        reasons = []
        if self.timed_out:
            reasons.append(f"timed out after {self.seconds:.0f} s; QEMU was killed")
        if self.panicked:
            reasons.append("kernel panic: " + _first(self.trouble.lines, "Kernel panic"))
        if self.oopsed:
            reasons.append("kernel oops/BUG: " + _first(self.trouble.lines, ""))
        if self.warned:
            reasons.append("kernel WARNING: " + _first(self.trouble.lines, "WARNING"))
        if self.call_trace and not (self.oopsed or self.warned or self.panicked):
            reasons.append("kernel printed a call trace")
        if not self.init_started and not self.timed_out and not self.panicked:
            if self.qemu_rc:
                last = self.console.rstrip().splitlines()[-1:] or ["no output"]
                reasons.append(f"QEMU exited {self.qemu_rc}: {last[0].strip()}")
            else:
                reasons.append("the guest never reached the lab's /init")
        for step in self.steps:
            if not step.started:
                continue
            if step.rc is None:
                reasons.append(f"step {step.index} ({step.command}) never finished")
            elif not step.ok:
                reasons.append(f"step {step.index} ({step.command}) exited {step.rc}")
        if self.init_started and not self.completed and self.aborted_at is None and not reasons:
            reasons.append("/init stopped before the end of its steps")
        return reasons

    @property
    def ok(self) -> bool:
        return self.completed and not self.failures()

    def step(self, index: int) -> StepResult:
        return self.steps[index]

    def raise_for_failure(self) -> BootResult:
        """Raise ``BootTimeout``/``BootFailed`` unless ok; return self if ok."""
        if self.ok:
            return self
        reasons = self.failures() or ["the run did not complete"]
        cls = BootTimeout if self.timed_out else BootFailed
        raise cls("boot failed: " + "; ".join(reasons))


def _first(lines: Sequence[str], containing: str) -> str:
    for line in lines:
        if containing in line:
            return line
    return lines[0] if lines else "(no message)"


def kvm_usable(dev: str = "/dev/kvm") -> bool:
    """True only if KVM can really create a VM here.

    Checks, cheapest first: the CPU advertises vmx/svm, the device opens
    read-write, speaks API version 12 and creates a VM.  A present but
    useless ``/dev/kvm`` (nested virtualisation off) fails one of these
    quickly instead of hanging QEMU.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = {w for line in f if line.startswith("flags") for w in line.split()}
    except OSError:
        return False
    if not flags & {"vmx", "svm"}:
        return False
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, _KVM_GET_API_VERSION, 0) != _KVM_API_VERSION:
            return False
        vm = fcntl.ioctl(fd, _KVM_CREATE_VM, 0)
        os.close(vm)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def resolve_accel(accel: str) -> str:
    """Turn "auto" into "kvm" or "tcg"; validate the others."""
    if accel not in ACCELS:
        raise LabError(f"unknown accelerator {accel!r} (choose from {', '.join(ACCELS)})")
    if accel == "auto":
        return "kvm" if kvm_usable() else "tcg"
    return accel


@dataclass(frozen=True)
class Drive:
    """A virtio disk of the guest (``/dev/vda``, ``/dev/vdb``... in the order given)."""

    path: Path
    format: str = "raw"        # or "qcow2"
    readonly: bool = False

    def option(self) -> str:
        return f"file={self.path},if=virtio,format={self.format}" + (",readonly=on" if self.readonly else "")


def qemu_command(
    kernel: Path,
    initrd: Path | None,
    results: Path,
    *,
    memory: str = DEFAULT_MEMORY,
    append: str = "",
    accel: str = "tcg",
    smp: int = 1,
    qemu: str | None = None,
    drives: Sequence[Drive] = (),
    machine: LabMachine = X86_64,
) -> list[str]:
    """The QEMU command line of one run.  Pure.

    ``-serial stdio`` is the console (x86's ttyS0, read live through a
    pipe); the second ``-serial`` is the results port (ttyS1, a file; the
    machine's ``results_tty``).  Without an initrd the kernel mounts its
    root itself (``root=`` in ``append``).  ``qemu`` overrides the
    machine's binary.
    """
    cmd = [
        qemu or machine.qemu,
        *machine.board,
        "-nographic",
        "-no-reboot",
        "-monitor", "none",
        "-m", memory,
        "-smp", str(smp),
        "-kernel", str(kernel),
        *(["-initrd", str(initrd)] if initrd is not None else []),
        "-append", f"{base_cmdline(machine)} {append}".strip(),
        "-serial", "stdio",
        "-serial", f"file:{results}",
        "-net", "none",
    ]
    for drive in drives:
        cmd += ["-drive", drive.option()]
    if accel == "kvm" and not machine.native:
        raise LabError(f"KVM cannot run the lab's {machine.arch} guest on this host: use TCG")
    if accel == "kvm":
        cmd += ["-accel", "kvm", "-cpu", "host"]
    else:
        cmd += ["-accel", "tcg"]
    return cmd


def boot(
    kernel: Path,
    steps: Sequence[Step | str] = (),
    *,
    modules: Sequence[Path] = (),
    timeout: float = DEFAULT_TIMEOUT,
    memory: str = DEFAULT_MEMORY,
    append: str = "",
    accel: str = "tcg",
    smp: int = 1,
    keep_going: bool = True,
    workdir: Path | None = None,
    on_console: Callable[[str], None] | None = None,
    busybox: Path | None = None,
    machine: LabMachine = X86_64,
) -> BootResult:
    """Boot ``kernel`` (a bzImage, the lab's or a distro's), run ``steps``, report.

    ``machine``: the lab machine the kernel is for (x86_64 by default; a
    cross one boots under TCG with a busybox of its architecture, fetched
    once, unless ``busybox`` names one).

    ``modules`` are copied into the guest's ``/modules``.  ``append`` adds to
    the kernel command line (after ``console=ttyS0 panic=-1``).  The run is
    killed after ``timeout`` seconds and reported with ``timed_out``.
    ``on_console`` receives console text as it arrives (for live display).
    Files of the run (initramfs, results port) go to ``workdir`` when given,
    else to a temporary directory removed afterwards.
    """
    kernel = Path(kernel)
    if not kernel.is_file():
        raise LabError(f"kernel image not found: {kernel}")
    missing = missing_for_boot(busybox or BUSYBOX, machine.qemu, machine.qemu_package)
    if busybox is None and not machine.native:
        missing = [m for m in missing if m.package != "busybox-static"]  # the guest's own is fetched
    require(missing, f"boot a lab {machine.arch} kernel")
    if busybox is None:
        busybox = BUSYBOX if machine.native else _foreign_busybox(machine)
    if timeout <= 0:
        raise LabError("boot timeout must be positive")
    parsed = [as_step(s) for s in steps]
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return _boot_in(kernel, parsed, modules, timeout, memory, append, accel, smp, keep_going, workdir,
                        on_console, busybox, machine)
    with tempfile.TemporaryDirectory(prefix="pykpatch-lab-") as tmp:
        return _boot_in(kernel, parsed, modules, timeout, memory, append, accel, smp, keep_going, Path(tmp),
                        on_console, busybox, machine)


def _foreign_busybox(machine: LabMachine) -> Path:
    from pykpatch.lab.foreign import foreign_busybox  # apt only when a cross guest boots

    return foreign_busybox(machine)


def _boot_in(
    kernel: Path,
    steps: list[Step],
    modules: Sequence[Path],
    timeout: float,
    memory: str,
    append: str,
    accel: str,
    smp: int,
    keep_going: bool,
    workdir: Path,
    on_console: Callable[[str], None] | None,
    busybox: Path,
    machine: LabMachine,
) -> BootResult:
    nonce = new_nonce()
    initrd = build_initramfs(workdir / "initramfs.cpio", steps, nonce, modules=[Path(m) for m in modules],
                             busybox=busybox, keep_going=keep_going, machine=machine)
    results_path = workdir / "results.log"
    if machine.native:
        accel = resolve_accel(accel)
    elif accel == "auto":
        accel = "tcg"
    cmd = qemu_command(kernel, initrd, results_path, memory=memory, append=append,
                       accel=accel, smp=smp, machine=machine)
    return run_qemu(cmd, steps, nonce, workdir, timeout, on_console)


def run_qemu(
    cmd: list[str],
    steps: Sequence[Step],
    nonce: str,
    workdir: Path,
    timeout: float,
    on_console: Callable[[str], None] | None,
) -> BootResult:
    """Run one QEMU command line to its end and judge it.

    ``cmd``'s results port is ``workdir/results.log``; the guest reports
    ``steps`` there with ``nonce`` (``initramfs.render_step_protocol``).
    """
    results_path = workdir / "results.log"
    results_path.write_bytes(b"")
    if shutil.which(cmd[0]) is None:
        raise LabError(f"{cmd[0]} not found", hint="apt-get install -y qemu-system-x86")

    started = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as err:
        raise LabError(f"cannot start {cmd[0]}: {err.strerror}") from err
    chunks: list[bytes] = []
    reader = threading.Thread(target=_pump, args=(proc, chunks, on_console), daemon=True)
    reader.start()
    timed_out = False
    try:
        rc: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc)
        rc = None
    except BaseException:
        _kill(proc)
        raise
    finally:
        reader.join(timeout=10)
    seconds = time.monotonic() - started

    console = b"".join(chunks).decode("utf-8", errors="replace").replace("\r\n", "\n")
    (workdir / "console.log").write_text(console)
    results = results_path.read_bytes().decode("utf-8", errors="replace")
    commands, checks = [s.command for s in steps], [s.check for s in steps]
    report = parse_results(results, nonce, commands, checks)
    if not report.started:
        # A kernel without a second UART: /init fell back to the console.
        fallback = parse_results(console, nonce, commands, checks)
        if fallback.started:
            report = fallback
    return BootResult(
        steps=report.steps,
        console=console,
        results=results,
        trouble=scan_console(console),
        timed_out=timed_out,
        completed=report.done,
        init_started=report.started,
        aborted_at=report.aborted_at,
        qemu_rc=rc,
        seconds=seconds,
        command=tuple(cmd),
    )


def _pump(proc: subprocess.Popen[bytes], chunks: list[bytes], on_console: Callable[[str], None] | None) -> None:
    """Collect QEMU's output (the guest console) as it arrives."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    # Incremental: a UTF-8 character split across two reads stays whole.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
        if on_console is not None:
            on_console(decoder.decode(data).replace("\r", ""))
    proc.stdout.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill QEMU (its whole session) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
        pass
