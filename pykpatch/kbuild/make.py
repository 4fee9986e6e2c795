"""The one way pykpatch runs make in a kernel tree.

Every kbuild run (kpatch-build's compiles, the struct-size probe, the
livepatch module, the lab kernel) goes through ``run_make`` so that all of
them share one environment policy, one log format, one progress counter and
one way of stopping:

- **Environment.**  Variables that would send kbuild elsewhere (``O``,
  ``KBUILD_OUTPUT``), make it build something else (``M``,
  ``KBUILD_EXTMOD``), tie it to a parent make's jobserver (``MAKEFLAGS``,
  ``MFLAGS``, ``MAKELEVEL``) or add flags behind our back (``KCFLAGS``,
  ``KCPPFLAGS``, ``KAFLAGS``) are removed from the user's environment, and
  the log says which ones were; what pykpatch means is passed explicitly
  as make variables.  ``LC_ALL=C`` keeps tool messages parseable.
- **No terminal.**  stdin is ``/dev/null``: kconfig must never wait for an
  answer nobody sees (output goes to the log).
- **Own process group.**  make runs in a new session, so a Ctrl-C at the
  terminal reaches pykpatch only; pykpatch then stops make itself (SIGTERM,
  then SIGKILL) and *waits for it to exit* before anything restores the
  tree.  make deletes the target it was writing when it is interrupted: had
  pykpatch restored the tree first, that late deletion (or a late write)
  would change a file already put back.  ``on_start`` receives the process
  group id, which the tree journal records so that a run killed with
  SIGKILL can have its orphaned make stopped by the next run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pykpatch.errors import KbuildError

Progress = Callable[[str], None]

# See the module docstring for why each is removed.
DROPPED_VARIABLES: tuple[str, ...] = (
    "O", "KBUILD_OUTPUT", "M", "KBUILD_EXTMOD", "MAKEFLAGS", "MFLAGS", "MAKELEVEL",
    "KCFLAGS", "KCPPFLAGS", "KAFLAGS",
)

# A compile line of kbuild's short output: "  CC      kernel/fork.o",
# "  CC [M]  drivers/input/misc/pcspkr.o", "  AS      arch/x86/...".
_COMPILE_LINE = re.compile(r"^\s*(?:CC|AS|HOSTCC)(?: \[M\])?\s+\S")

# How long make gets to clean up after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 20.0
PROGRESS_INTERVAL = 2.0


@dataclass(frozen=True)
class MakeRun:
    """What one make run did."""

    returncode: int
    compiled: int
    seconds: float
    output: str  # captured output when asked for (``capture=True``), else ""


def kbuild_environment(base: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None,
                       also_drop: Sequence[str] = ()) -> tuple[dict[str, str], list[str]]:
    """The environment for make, and the names of the user's variables removed from it.

    ``also_drop``: more variables a caller must not inherit (the lab's own
    x86_64 kernel ignores a user's ``ARCH``/``CROSS_COMPILE``/``CC``, which
    kpatch-build honours for cross builds).
    """
    source = dict(os.environ if base is None else base)
    drop = {*DROPPED_VARIABLES, *also_drop}
    dropped = sorted(k for k in source if k in drop)
    env = {k: v for k, v in source.items() if k not in drop}
    env["LC_ALL"] = "C"
    env.update(extra or {})
    return env, dropped


def make_command(tree: Path, targets: Sequence[str], jobs: int | None = None,
                 variables: Mapping[str, str] | None = None) -> list[str]:
    cmd = ["make", "-C", str(tree)]
    if jobs:
        cmd.append(f"-j{jobs}")
    cmd += [f"{k}={v}" for k, v in (variables or {}).items()]
    cmd += list(targets)
    return cmd


def stop_process_group(proc: subprocess.Popen[str], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM make's whole process group, wait until every member is gone (``grace`` seconds), then SIGKILL.

    Waiting for make alone is not enough: the compiler or shell it started
    may still be cleaning up (make deletes its half-written target, a recipe
    shell runs its trap) after make itself has exited.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        if _wait_group_gone(proc, wait):
            break
    proc.wait()


def _wait_group_gone(proc: subprocess.Popen[str], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        proc.poll()  # reap make itself, or it stays a member (a zombie) of its group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def run_make(
    tree: Path,
    targets: Sequence[str],
    *,
    log: Path,
    what: str,
    jobs: int | None = None,
    variables: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    also_drop: Sequence[str] = (),
    progress: Progress | None = None,
    expected: int | None = None,
    on_start: Callable[[int], None] | None = None,
    timeout: float | None = None,
    capture: bool = False,
    check: bool = True,
) -> MakeRun:
    """Run ``make -C TREE [-jN] VAR=... TARGETS`` under the policy of the module docstring.

    Output is appended to ``log`` (and returned when ``capture``); ``progress``
    gets "WHAT: N files compiled" every few seconds.  Raises ``KbuildError``
    naming the log when make fails (``check``) or runs past ``timeout``;
    ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM turned into one by the CLI)
    stops make and waits for it before propagating.
    """
    cmd = make_command(tree, targets, jobs, variables)
    env, dropped = kbuild_environment(extra=extra_env, also_drop=also_drop)
    started = time.monotonic()
    output = _Output(capture, frozenset(targets) if expected else None)
    try:
        fh = open(log, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise KbuildError(f"{log}: cannot write the build log: {err.strerror or err}") from None
    with fh:
        fh.write(f"\n===== {what}: {' '.join(cmd)} =====\n")
        if dropped:
            fh.write(f"# removed from the environment for kbuild: {', '.join(dropped)}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace", env=env,
                                    start_new_session=True)
        except FileNotFoundError:
            raise KbuildError("make not found", hint="install make (apt-get install make)") from None
        except OSError as err:
            raise KbuildError(f"cannot run make: {err.strerror or err}") from None
        watchdog = _Watchdog(proc, timeout)
        try:
            if on_start is not None:
                on_start(proc.pid)
            _follow(proc, fh, output, what, progress, started, expected)
            rc = proc.wait()
        except BaseException:
            stop_process_group(proc)
            raise
        finally:
            watchdog.cancel()
    seconds = time.monotonic() - started
    if watchdog.fired:
        raise KbuildError(f"{what} did not finish in {timeout:.0f} s and was stopped; see {log}")
    if check and rc != 0:
        raise KbuildError(f"{what} failed (make exit {rc}); see {log}", hint=output.first_error())
    if progress:
        progress(f"{what}: done, {output.compiled} files compiled in {seconds:.1f} s")
    return MakeRun(rc, output.compiled, seconds, "".join(output.lines) if capture else "")


class _Output:
    """What is kept of make's output: a compile count, the tail (for errors), all of it if captured."""

    TAIL = 400

    def __init__(self, capture: bool, counted: frozenset[str] | None = None) -> None:
        self.compiled = 0
        self.counted = counted  # count only these targets (objects asked for), not prepare products
        self.lines: deque[str] | list[str] = [] if capture else deque(maxlen=self.TAIL)

    def add(self, line: str) -> None:
        self.lines.append(line)
        if _COMPILE_LINE.match(line) and (self.counted is None or line.split()[-1] in self.counted):
            self.compiled += 1

    def first_error(self) -> str | None:
        return first_error(list(self.lines))


class _Watchdog:
    """Stops make's process group when it runs past its time limit (even when it prints nothing)."""

    def __init__(self, proc: subprocess.Popen[str], timeout: float | None) -> None:
        self.fired = False
        self._timer: threading.Timer | None = None
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._fire, args=(proc,))
            self._timer.daemon = True
            self._timer.start()

    def _fire(self, proc: subprocess.Popen[str]) -> None:
        self.fired = True
        stop_process_group(proc)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _follow(proc: subprocess.Popen[str], fh, output: _Output, what: str, progress: Progress | None,
            started: float, expected: int | None = None) -> None:
    """Copy make's output to the log line by line, counting compiles for progress."""
    assert proc.stdout is not None
    last = started
    for line in proc.stdout:
        fh.write(line)
        output.add(line)
        now = time.monotonic()
        if progress and now - last >= PROGRESS_INTERVAL:
            last = now
            done = f"{output.compiled}/{expected}" if expected else str(output.compiled)
            progress(f"{what}: {done} files compiled")


_ERROR_LINE = re.compile(r"\berror\b|\*\*\*", re.IGNORECASE)


def first_error(lines: Sequence[str]) -> str | None:
    """The most telling line of a failed tool's output: its first error."""
    for line in lines:
        if _ERROR_LINE.search(line):
            return line.strip()
    return lines[-1].strip() if lines else None

