"""Read what a guest printed: step results and signs of kernel trouble.

Both functions are pure (text in, data out) so they are unit tested without
QEMU.  Kernel trouble is looked for on the console log, where the kernel
prints it; step results on the results port (see ``initramfs``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pykpatch.lab.initramfs import marker


@dataclass(frozen=True)
class StepResult:
    """What one step did.  ``rc`` is None when the step never finished
    (the kernel died or the host timeout struck while it ran) and
    ``started`` is False when it never began."""

    index: int
    command: str
    output: str
    rc: int | None
    started: bool
    check: bool = True

    @property
    def ok(self) -> bool:
        return self.rc == 0 or (not self.check and self.rc is not None)


@dataclass(frozen=True)
class RunReport:
    """Step results parsed from the results port."""

    steps: tuple[StepResult, ...]
    started: bool  # /init got as far as reporting
    done: bool  # /init reached the end of its steps
    aborted_at: int | None  # index of the failed step that stopped the run


def parse_results(
    text: str, nonce: str, commands: list[str], checks: list[bool] | None = None
) -> RunReport:
    """Parse the results port's text into one ``StepResult`` per command.

    Tolerates ``\\r\\n`` line ends (a port not in raw mode) and a truncated
    tail (the VM died mid-step): a step with BEGIN but no END has rc None and
    whatever output arrived.
    """
    text = text.replace("\r\n", "\n")
    m = re.escape(marker(nonce))
    checks = checks if checks is not None else [True] * len(commands)
    begin = {int(x.group(1)): x for x in re.finditer(rf"^{m} STEP (\d+) BEGIN\n", text, re.M)}
    results = []
    for i, command in enumerate(commands):
        b = begin.get(i)
        if b is None:
            results.append(StepResult(i, command, "", None, False, checks[i]))
            continue
        # The END marker follows a newline of our own, so that output not
        # ending in one still leaves the marker on a line of its own.
        end = re.compile(rf"\n{m} STEP {i} END rc=(-?\d+)$", re.M).search(text, b.end())
        if end is None:
            nxt = re.compile(rf"^{m} ", re.M).search(text, b.end())
            output = text[b.end() : nxt.start() if nxt else len(text)]
            results.append(StepResult(i, command, output, None, True, checks[i]))
        else:
            output = text[b.end() : end.start()]
            results.append(StepResult(i, command, output, int(end.group(1)), True, checks[i]))
    started = re.search(rf"^{m} START \d+$", text, re.M) is not None
    done = re.search(rf"^{m} DONE$", text, re.M) is not None
    abort = re.search(rf"^{m} ABORT (\d+)$", text, re.M)
    return RunReport(tuple(results), started, done, int(abort.group(1)) if abort else None)


# Kernel messages that mean trouble, by the flag they set.  Matched anywhere in
# a line because user output can share a console line with a kernel message.
_PANIC = re.compile(r"Kernel panic - not syncing")
_OOPS = re.compile(
    r"\bOops: |\bBUG: |kernel BUG at |general protection fault|Unable to handle kernel|"
    r"unable to handle page fault|stack-protector: |\bKASAN: |UBSAN: "
)
_WARN = re.compile(r"\bWARNING: (?:CPU: \d+ PID: \d+|at |possible|suspicious)")
_CALL_TRACE = re.compile(r"\bCall Trace:")


@dataclass(frozen=True)
class KernelTrouble:
    """Signs of kernel trouble found in a console log.

    ``lines`` holds each matching line once, in order, so a failure message
    can quote the first one.
    """

    panicked: bool = False
    oopsed: bool = False
    warned: bool = False
    call_trace: bool = False
    lines: tuple[str, ...] = field(default=())

    @property
    def any(self) -> bool:
        return self.panicked or self.oopsed or self.warned or self.call_trace


def scan_console(text: str) -> KernelTrouble:
    """Find panics, oopses, BUGs, WARNs and call traces in a console log."""
    flags = {"panicked": False, "oopsed": False, "warned": False, "call_trace": False}
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        hit = False
        for flag, pattern in (("panicked", _PANIC), ("oopsed", _OOPS), ("warned", _WARN), ("call_trace", _CALL_TRACE)):
            if pattern.search(line):
                flags[flag] = True
                hit = True
        if hit:
            lines.append(line.strip())
    return KernelTrouble(lines=tuple(lines), **flags)
