"""Run a build command with its full output appended to a log file.

Kernel builds print tens of thousands of lines: a person wants a short
progress line and, when something breaks, the path of the full log and the
lines that explain the failure.  This module gives both.
"""

from __future__ import annotations

import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pykpatch.errors import KbuildError, LabError
from pykpatch.kbuild.make import run_make

# Lines kept from the end of a failing command for the error message.
TAIL_LINES = 25
PROGRESS_INTERVAL = 10.0

# Beyond what the kbuild runner always removes (O, KBUILD_OUTPUT, KCFLAGS...):
# the lab builds its own x86_64 kernel with the host compiler, whatever the
# caller's shell exports.
LAB_ENV_DROP = ("ARCH", "CROSS_COMPILE", "CC", "LLVM")

Progress = Callable[[str], None]


def run_logged(
    cmd: Sequence[str],
    cwd: Path,
    log: Path,
    on_line: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
) -> None:
    """Run ``cmd`` in ``cwd``, appending stdout+stderr to ``log``.

    Each output line is passed to ``on_line`` (for progress).  On failure
    raises ``LabError`` naming the command, its exit code and the log, with
    the most telling line (the first "error"/"Error" line of the tail) as
    the hint, so a person knows where to look without opening the log.
    """
    label = what or " ".join(cmd)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with log.open("a", encoding="utf-8", errors="replace") as out:
        out.write(f"\n===== {label} (in {cwd}) =====\n")
        out.flush()
        try:
            proc = subprocess.Popen(
                list(cmd),
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                text=True,
                errors="replace",
                bufsize=1,
            )
        except OSError as err:
            raise LabError(f"cannot run {cmd[0]}: {err.strerror}") from err
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                tail.append(line.rstrip("\n"))
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            rc = proc.wait()
        except BaseException:
            # Ctrl-C or a failing callback: never leave make running behind us.
            proc.kill()
            proc.wait()
            raise
        out.write(f"===== exit {rc} =====\n")
    if rc != 0:
        raise LabError(
            f"{label} failed (exit {rc}); full log: {log}",
            hint=_explain(list(tail)),
        )


def _explain(tail: list[str]) -> str:
    """Pick the line of a failed build's tail that best says what went wrong."""
    for line in tail:
        if "error" in line.lower() and not line.startswith("make"):
            return line.strip()
    for line in tail:
        if line.strip():
            return line.strip()
    return "the command printed nothing"


def lab_make(tree: Path, targets: tuple[str, ...] | list[str], log: Path, what: str, jobs: int,
             say: Progress | None = None, *, variables: Mapping[str, str] | None = None) -> None:
    """make in the lab tree through the one kbuild runner; the lab's kernel ignores the user's ARCH/CC.

    ``variables``: the lab's own ``ARCH``/``CROSS_COMPILE`` for a cross machine, on make's command line.
    """
    try:
        run_make(tree, list(targets), log=log, what=what, jobs=jobs, also_drop=LAB_ENV_DROP, variables=variables,
                 progress=_every(PROGRESS_INTERVAL, say) if say else None)
    except KbuildError as err:
        raise LabError(err.message, hint=err.hint) from None


def _every(seconds: float, say: Progress) -> Progress:
    """A progress callback that passes on at most one message per ``seconds`` (a kernel build is long)."""
    last = [0.0]

    def throttled(message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= seconds or "done" in message:
            last[0] = now
            say(message)
    return throttled
