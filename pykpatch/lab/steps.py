"""Steps a lab guest runs, one shell command each.

A step is a plain shell command (busybox ``sh``) so that anything a person
would type at a console can be a step; the helpers below only spell the
common livepatch chores (load a module, write a sysfs knob, wait for a value)
correctly once, with quoting done by ``shlex.quote``.

Modules handed to ``boot`` are copied into the guest's ``/modules``
directory; ``insmod("livepatch-sample")`` refers to
``/modules/livepatch-sample.ko``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePath

MODULE_DIR = "/modules"


@dataclass(frozen=True)
class Step:
    """One shell command to run in the guest.

    ``timeout`` (seconds) is enforced inside the guest with busybox
    ``timeout -s KILL``: the step then ends with rc 137 and the run goes on,
    which is kinder than the host-side timeout that kills the whole VM.
    ``check=False`` marks a step whose failure is expected (its rc is still
    reported but does not make the run fail).
    """

    command: str
    timeout: float | None = None
    check: bool = True

    def __post_init__(self) -> None:
        if not self.command.strip():
            raise ValueError("a step needs a command")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("a step timeout must be positive")


def as_step(step: Step | str) -> Step:
    """Accept plain strings wherever a step is expected."""
    return step if isinstance(step, Step) else Step(step)


def module_path(module: str | PurePath) -> str:
    """Guest path of a module given by name, file name or host path."""
    name = PurePath(module).name
    if not name.endswith(".ko"):
        name += ".ko"
    return f"{MODULE_DIR}/{name}"


def shell(command: str, *, timeout: float | None = None, check: bool = True) -> Step:
    """Any shell command."""
    return Step(command, timeout=timeout, check=check)


def insmod(module: str | PurePath, *params: str, check: bool = True) -> Step:
    """Load a module copied into the guest (see ``MODULE_DIR``)."""
    words = ["insmod", module_path(module), *params]
    return Step(" ".join(shlex.quote(w) for w in words), check=check)


def rmmod(name: str, *, check: bool = True) -> Step:
    """Unload a module by name (``-`` and ``_`` are equivalent to the kernel)."""
    return Step(f"rmmod {shlex.quote(PurePath(name).name.removesuffix('.ko'))}", check=check)


def write(path: str, value: str, *, check: bool = True) -> Step:
    """Write ``value`` (plus newline) to a file, typically a sysfs knob."""
    return Step(f"echo {shlex.quote(value)} > {shlex.quote(path)}", check=check)


def read(path: str, *, check: bool = True) -> Step:
    """Print a file, typically under /proc or /sys."""
    return Step(f"cat {shlex.quote(path)}", check=check)


def sleep(seconds: float) -> Step:
    """Pause the guest (busybox sleep takes fractions)."""
    return Step(f"sleep {seconds:g}")


def wait_for(path: str, value: str, *, timeout: float = 30.0, interval: float = 0.1) -> Step:
    """Poll a file until its content (stripped) equals ``value``.

    Prints the last value read; rc 0 when it matched, 1 on timeout.  A
    livepatch transition, for one, completes asynchronously: tests must wait
    for ``transition`` to read 0, not sleep and hope.
    """
    tries = max(1, int(timeout / interval))
    p, v = shlex.quote(path), shlex.quote(value)
    return Step(
        f"i=0; while [ $i -lt {tries} ]; do "
        f'cur=$(cat {p} 2>/dev/null); [ "$cur" = {v} ] && {{ echo "$cur"; exit 0; }}; '
        f"sleep {interval:g}; i=$((i+1)); done; "
        f'echo "timed out after {timeout:g}s waiting for {path} = {value}, last: $cur"; exit 1',
        timeout=timeout + 10,
    )


def wait_until_gone(path: str, *, timeout: float = 30.0, interval: float = 0.1) -> Step:
    """Poll until ``path`` no longer exists; rc 0 when gone, 1 on timeout.

    After ``echo 0 > .../enabled`` the kernel frees a livepatch
    asynchronously and only then drops its module reference: ``rmmod``
    before the sysfs directory is gone can fail with EBUSY.
    """
    tries = max(1, int(timeout / interval))
    p = shlex.quote(path)
    return Step(
        f"i=0; while [ $i -lt {tries} ]; do [ -e {p} ] || exit 0; sleep {interval:g}; i=$((i+1)); done; "
        f'echo "timed out after {timeout:g}s waiting for {path} to go away"; exit 1',
        timeout=timeout + 10,
    )
