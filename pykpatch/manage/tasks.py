"""Which tasks hold a patch transition, and where they are.

During a transition every task has a ``patch_state`` (``/proc/PID/task/
TID/patch_state``): 0 unpatched, 1 patched (-1 outside transitions).  The
target is 1 while a patch is being enabled and 0 while it is being
disabled; a task whose state differs has not switched yet.  The kernel
switches a sleeping task only when none of the patched functions is on its
stack, so the stack (``/proc/PID/task/TID/stack``, root only) usually
shows why: the task sleeps inside one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pykpatch.manage.system import System, read_value

# How many stalled tasks a report names before it says "and N more".
REPORT_LIMIT = 10


@dataclass(frozen=True)
class StalledTask:
    pid: int        # the thread group (process) id
    tid: int        # the thread id (== pid for a single-threaded task or a kthread)
    comm: str
    frames: tuple[str, ...]  # stack lines that are patched functions, e.g. "klp_helper_nap+0x2a/0x60 [klp_helper]"

    def describe(self) -> str:
        who = f"PID {self.pid}" + (f" (thread {self.tid})" if self.tid != self.pid else "") + f" ({self.comm})"
        if self.frames:
            return f"{who} in {', '.join(self.frames)}"
        return f"{who}, no patched function on its stack (running, or its stack is unreadable)"


def _numeric_dirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.name.isdigit()]
    except OSError:
        return []


def stack_function(line: str) -> tuple[str, str]:
    """``[<0>] klp_helper_nap+0x2a/0x60 [klp_helper]`` -> (function name, frame text)."""
    text = line.split("] ", 1)[1] if line.startswith("[<") and "] " in line else line.strip()
    return text.split("+", 1)[0].strip(), text.strip()


def patched_frames(stack: str, functions: frozenset[str]) -> tuple[str, ...]:
    """The frames of a /proc stack that belong to one of the patched functions."""
    frames = []
    for line in stack.splitlines():
        name, frame = stack_function(line)
        if name in functions:
            frames.append(frame)
    return tuple(frames)


def stalled_tasks(system: System, target: int, functions: frozenset[str]) -> list[StalledTask]:
    """Every task not yet in ``target`` state, with the patched functions on its stack.

    Tasks holding a patched function come first: they are the reason the
    transition waits; the others are usually just running and will switch
    at their next return to user space.
    """
    found = []
    wanted = str(target)
    for proc in _numeric_dirs(system.proc):
        for task in _numeric_dirs(proc / "task"):
            state = read_value(task / "patch_state")
            if state in ("", "-1", wanted):
                continue
            frames = patched_frames(read_value(task / "stack"), functions)
            found.append(StalledTask(int(proc.name), int(task.name), read_value(task / "comm"), frames))
    return sorted(found, key=lambda t: (not t.frames, t.pid, t.tid))


def describe_tasks(tasks: list[StalledTask], limit: int = REPORT_LIMIT) -> list[str]:
    lines = [t.describe() for t in tasks[:limit]]
    if len(tasks) > limit:
        lines.append(f"and {len(tasks) - limit} more")
    return lines
