"""Wait for a patch transition, explain a stalled one, and end it within a bound.

Enabling or disabling a patch starts a transition that ends once every
task has switched; a task sleeping inside a patched function holds it
indefinitely.  ``finish_transition`` waits; after ``REPORT_AFTER`` seconds
it names the tasks that hold the transition (PID, command, the patched
function on their stack) and signals them the way the kernel offers:
writing ``/sys/kernel/livepatch/NAME/signal`` where that file exists;
kernels without it (6.1 among them) signal the remaining tasks themselves
every 15 seconds.  At the timeout the transition is reversed (the default:
the system goes back to where it was, safely) or, with ``force``, forced
(``/sys/kernel/livepatch/NAME/force``: the tasks are declared switched
although they may still run the other code, and the kernel never lets the
module go afterwards).
"""

from __future__ import annotations

from dataclasses import dataclass

from pykpatch.errors import ManageError, TransitionReversed, TransitionStuck
from pykpatch.manage.sysfs import read_patch
from pykpatch.manage.system import System, read_value
from pykpatch.manage.tasks import describe_tasks, stalled_tasks

# Seconds a transition may take before kpatch reports the tasks that hold it and signals them.
REPORT_AFTER = 5.0
POLL_INTERVAL = 0.1
# The period of the kernel's own signalling when it has no "signal" file (kernel/livepatch/transition.c).
KERNEL_SIGNAL_PERIOD = 15

PATCHED, UNPATCHED = 1, 0


@dataclass(frozen=True)
class Waited:
    """How a transition ended: ``forced`` when kpatch had to force it."""

    seconds: float
    forced: bool = False


def write_attr(system: System, name: str, attr: str, value: str) -> None:
    path = system.sysfs / name / attr
    try:
        path.write_text(value + "\n")
    except OSError as err:
        raise ManageError(f"cannot write {value} to {path}: {err.strerror}") from None


def transition_over(system: System, name: str, target: int) -> bool:
    """True once NAME reached ``target`` (unpatching also ends when the kernel frees the patch)."""
    d = system.sysfs / name
    if not d.is_dir():
        return target == UNPATCHED
    return read_value(d / "transition") == "0"


def _wait_until(system: System, name: str, target: int, deadline: float) -> bool:
    while not transition_over(system, name, target):
        if system.clock() >= deadline:
            return False
        system.sleep(POLL_INTERVAL)
    return True


def _direction(target: int) -> str:
    return "patched" if target == PATCHED else "unpatched"


def _holders(system: System, name: str, target: int) -> list[str]:
    patch = read_patch(system, name)
    functions = patch.function_names if patch else frozenset()
    return describe_tasks(stalled_tasks(system, target, functions))


def _report_and_signal(system: System, name: str, target: int, waited: float) -> None:
    holders = _holders(system, name, target)
    system.say(f"{name}: still in transition to {_direction(target)} after {waited:.0f} s; "
               f"{len(holders) or 'no'} task(s) not switched yet" + (":" if holders else ""))
    for line in holders:
        system.say(f"  {line}")
    if (system.sysfs / name / "signal").exists():
        write_attr(system, name, "signal", "1")
        system.say(f"{name}: signalled them ({system.sysfs / name / 'signal'})")
    else:
        system.say(f"{name}: this kernel signals the remaining tasks itself every {KERNEL_SIGNAL_PERIOD} s "
                   "(it has no livepatch 'signal' file); waiting")


def finish_transition(system: System, name: str, target: int, timeout: float, force: bool = False) -> Waited:
    """Wait until NAME reaches ``target``; reverse (or force) it after ``timeout`` seconds.

    Raises ``TransitionReversed`` when it was reversed (the patch is back in
    its previous state) and ``TransitionStuck`` when the reversal did not
    finish either within another ``timeout``.
    """
    started = system.clock()
    deadline = started + timeout
    if _wait_until(system, name, target, min(started + REPORT_AFTER, deadline)):
        return Waited(system.clock() - started)
    if started + REPORT_AFTER < deadline:
        _report_and_signal(system, name, target, system.clock() - started)
        if _wait_until(system, name, target, deadline):
            waited = system.clock() - started
            system.say(f"{name}: transition complete after {waited:.0f} s")
            return Waited(waited)
    holders = _holders(system, name, target)
    if force:
        return _force(system, name, target, timeout, holders, started)
    return _reverse(system, name, target, timeout, holders)


def _write_unless_over(system: System, name: str, attr: str, value: str, target: int) -> bool:
    """Write a transition knob; False when the write failed because the transition just finished.

    The kernel refuses ``force`` and ``enabled`` once the patch is no longer
    in transition, which can happen between the last poll and the write.
    """
    try:
        write_attr(system, name, attr, value)
    except ManageError:
        if transition_over(system, name, target):
            return False
        raise
    return True


def _force(system: System, name: str, target: int, timeout: float, holders: list[str], started: float) -> Waited:
    running = "old" if target == PATCHED else "patched"
    system.say(f"{name}: forcing the transition: {len(holders)} task(s) are declared {_direction(target)} "
               f"although they may still run the {running} code; the consistency model no longer holds "
               "for them, and the kernel will never let this patch module be removed")
    if not _write_unless_over(system, name, "force", "1", target):
        return Waited(system.clock() - started)
    if not _wait_until(system, name, target, system.clock() + timeout):
        raise TransitionStuck(f"{name}: the forced transition did not finish in {timeout:.0f} s", holders)
    return Waited(system.clock() - started, forced=True)


def _reverse(system: System, name: str, target: int, timeout: float, holders: list[str]) -> Waited:
    """Write the opposite value to ``enabled``: the kernel turns the transition around."""
    held_by = "; ".join(holders) if holders else "no task left unswitched"
    back = UNPATCHED if target == PATCHED else PATCHED
    system.say(f"{name}: the transition did not finish in {timeout:.0f} s ({held_by}); reversing it")
    if not _write_unless_over(system, name, "enabled", str(back), target):
        return Waited(timeout)
    if not _wait_until(system, name, back, system.clock() + timeout):
        raise TransitionStuck(
            f"{name}: the transition did not finish in {timeout:.0f} s and its reversal did not either "
            f"({'; '.join(_holders(system, name, back)) or 'no task named'})",
            holders,
            hint=f"the patch stays in transition; wait, or force it: echo 1 > {system.sysfs / name / 'force'} "
                 "(unsafe: the module can then never be removed)",
        )
    state = "not applied" if target == PATCHED else "still applied"
    raise TransitionReversed(
        f"{name}: the transition did not finish in {timeout:.0f} s ({held_by}); it was reversed, "
        f"the patch is {state}",
        holders,
        hint="let the tasks leave the patched functions (or stop them) and retry, with a longer --timeout, "
             "or use --force (unsafe)",
    )
