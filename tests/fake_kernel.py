"""A scratch root that behaves like the livepatch core, for ``kpatch`` tests without a kernel.

``FakeKernel(tmp_path)`` lays out ``sys/kernel/livepatch``, ``sys/module``
and ``proc`` under a scratch root, with fake ``insmod``/``rmmod`` scripts
that create and remove a module's entries.  Time is simulated: the
``System`` it hands out sleeps by advancing ``now`` and letting the "kernel"
react to what was written to sysfs (disable, reverse, force, signal) and
finish transitions at the times a test scheduled.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from pykpatch import manage
from pykpatch.elf import ElfObject, Section, write_elf
from pykpatch.elf.constants import SHF, SHT

RELEASE = "6.1.192"
NEVER = None


def make_ko(path: Path, vermagic: str = f"{RELEASE} SMP mod_unload modversions ", livepatch: bool = True,
            name: str | None = None) -> Path:
    """A minimal .ko: just the .modinfo that kpatch reads."""
    obj = ElfObject()
    fields = [f"vermagic={vermagic}"] + (["livepatch=Y"] if livepatch else []) + ([f"name={name}"] if name else [])
    obj.add_section(Section(".modinfo", SHT.PROGBITS, SHF.ALLOC, ("\0".join(fields) + "\0").encode(), align=1))
    write_elf(obj, path)
    return path


def fake_tool(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


@dataclass
class Task:
    pid: int
    comm: str
    stack: str
    tid: int | None = None


class FakeKernel:
    """The livepatch core's sysfs/procfs, played by Python between the library's sleeps."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sysfs = root / "sys/kernel/livepatch"
        self.sys_module = root / "sys/module"
        self.proc = root / "proc"
        for d in (self.sysfs, self.sys_module, self.proc):
            d.mkdir(parents=True, exist_ok=True)
        self.calls = root / "calls.log"
        self.now = 0.0
        self.said: list[str] = []
        # Seconds a transition takes once started (None: never finishes on its own).
        self.load_delay: float | None = 0.0
        self.unload_delay: float | None = 0.0
        self.reverse_delay: float | None = 0.0
        self.signal_delay: float | None = None    # a signal lets the transition finish this much later
        self.patch_objects: dict[str, dict[str, list[str]]] = {}   # module -> object -> ["func,pos"]
        self.no_sysfs_entry = False                # insmod succeeds without enabling a patch
        self.has_signal_file = False               # kernels before 5.x had /sys/kernel/livepatch/NAME/signal
        self.insmod_error = ""                     # insmod fails with this message
        self._complete_at: dict[str, float | None] = {}
        self._target: dict[str, str] = {}
        self.forced: set[str] = set()
        self.signalled: set[str] = set()
        self._write_tools()

    # -- the fake tools --------------------------------------------------------
    def _write_tools(self) -> None:
        ctl = self.root / "ctl"
        ctl.mkdir(exist_ok=True)
        self.insmod = fake_tool(self.root / "insmod", f"""\
            echo "insmod $*" >> {self.calls}
            if [ -s {ctl}/insmod-error ]; then cat {ctl}/insmod-error >&2; exit 1; fi
            name=$(cat {ctl}/next-name 2>/dev/null)
            [ -n "$name" ] || name=$(basename "$1" .ko | tr - _)
            if [ -e {ctl}/fail-$name ]; then
                echo "insmod: ERROR: could not insert module $1: Invalid parameters" >&2; exit 1
            fi
            mkdir -p {self.sys_module}/$name && echo K > {self.sys_module}/$name/taint
            [ -e {ctl}/no-sysfs ] && exit 0
            mkdir -p {self.sysfs}/$name && echo 1 > {self.sysfs}/$name/enabled
            # transition=1 (the Python side finishes it) unless a test wants it over at once
            cat {ctl}/insmod-transition > {self.sysfs}/$name/transition 2>/dev/null
            [ -s {self.sysfs}/$name/transition ] || echo 1 > {self.sysfs}/$name/transition
            """)
        self.rmmod = fake_tool(self.root / "rmmod", f"""\
            echo "rmmod $*" >> {self.calls}
            if [ -d {self.sysfs}/"$1" ]; then echo "rmmod: ERROR: Module $1 is in use" >&2; exit 1; fi
            if [ -e {ctl}/forced-"$1" ]; then echo "rmmod: ERROR: Module $1 is in use" >&2; exit 1; fi
            [ -d {self.sys_module}/"$1" ] || {{ echo "rmmod: ERROR: Module $1 is not currently loaded" >&2; exit 1; }}
            rm -rf {self.sys_module}/"$1"
            """)
        self.ctl = ctl

    def system(self, **overrides: object) -> manage.System:
        fields: dict[str, object] = dict(insmod=self.insmod, rmmod=self.rmmod, release=RELEASE, euid=0,
                                         sleep=self.sleep, clock=self.clock, say=self.said.append)
        fields.update(overrides)
        return manage.System.under(self.root, **fields)

    def tool_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    # -- time ------------------------------------------------------------------
    def clock(self) -> float:
        # The real kernel reacts to a sysfs write at once (a disable starts its
        # transition before write() returns); reacting on every clock read comes closest.
        self.react()
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.react()

    # -- state set up by tests --------------------------------------------------
    def add_task(self, task: Task, state: str) -> None:
        tdir = self.proc / str(task.pid) / "task" / str(task.tid or task.pid)
        tdir.mkdir(parents=True, exist_ok=True)
        (tdir / "patch_state").write_text(state + "\n")
        (tdir / "comm").write_text(task.comm + "\n")
        (tdir / "stack").write_text(task.stack)

    def load_patch(self, name: str, objects: dict[str, list[str]] | None = None) -> None:
        """A patch loaded and settled (as if by an earlier kpatch load)."""
        (self.sys_module / name).mkdir(parents=True, exist_ok=True)
        (self.sys_module / name / "taint").write_text("K\n")
        d = self.sysfs / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "enabled").write_text("1\n")
        (d / "transition").write_text("0\n")
        self._populate(name, objects or self.patch_objects.get(name, {}))
        self._target[name] = "1"

    def _populate(self, name: str, objects: dict[str, list[str]]) -> None:
        if self.has_signal_file:
            (self.sysfs / name / "signal").write_text("0\n")
        for obj, funcs in objects.items():
            (self.sysfs / name / obj).mkdir(exist_ok=True)
            (self.sysfs / name / obj / "patched").write_text("1\n")
            for f in funcs:
                (self.sysfs / name / obj / f).mkdir(exist_ok=True)

    def sync_ctl(self) -> None:
        (self.ctl / "insmod-error").write_text(self.insmod_error)
        if self.no_sysfs_entry:
            (self.ctl / "no-sysfs").write_text("")

    # -- the "kernel" -------------------------------------------------------------
    def _attr(self, name: str, attr: str) -> str:
        try:
            return (self.sysfs / name / attr).read_text().strip()
        except OSError:
            return ""

    def _finish(self, name: str) -> None:
        (self.sysfs / name / "transition").write_text("0\n")
        self._complete_at.pop(name, None)
        if self._target[name] == "0":   # a disabled patch is freed
            for p in sorted((self.sysfs / name).rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            (self.sysfs / name).rmdir()
            del self._target[name]

    def react(self) -> None:
        for d in sorted(self.sysfs.iterdir()):
            name = d.name
            if name not in self._target:        # new: insmod just enabled it
                self._target[name] = "1"
                self._populate(name, self.patch_objects.get(name, {}))
                self._schedule(name, self.load_delay)
            enabled, transition = self._attr(name, "enabled"), self._attr(name, "transition")
            if transition == "0":
                if enabled == "0" and self._target[name] == "1":   # kpatch unload disabled it
                    self._target[name] = "0"
                    (d / "transition").write_text("1\n")
                    self._schedule(name, self.unload_delay)
                continue
            if self._attr(name, "force") == "1":
                (d / "force").unlink()
                self.forced.add(name)
                (self.ctl / f"forced-{name}").write_text("")
                self._finish(name)
                continue
            if self._attr(name, "signal") == "1":
                (d / "signal").write_text("0\n")
                self.signalled.add(name)
                if self.signal_delay is not None:
                    self._schedule(name, self.signal_delay)
            if enabled != self._target[name]:               # written against the transition: reverse
                self._target[name] = enabled
                self._schedule(name, self.reverse_delay)
            at = self._complete_at.get(name)
            if at is not None and self.now >= at:
                self._finish(name)

    def _schedule(self, name: str, delay: float | None) -> None:
        self._complete_at[name] = None if delay is None else self.now + delay
