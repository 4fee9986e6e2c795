"""Fleet builds: one patch, many kernels, one command (``kpatch-build --kernels LIST``).

A security team patches every release and flavour its machines run.  Each
kernel is built by its own ``kpatch-build --kernel RELEASE`` process, so
each keeps everything a single build guarantees (its tree journaled and put
back, its own lock, its own signal handling and log); this module only
plans, runs and reports:

- **plan**: the kernels (a comma-separated list, a file with one per line,
  or ``installed``), each with ``OUTDIR/RELEASE/`` for its module and log;
  up to ``-j`` kernels at once, the ``-j`` jobs shared between them (a
  kernel spends much of its time fetching, unpacking and diffing, not
  compiling, so two kernels on two CPUs finish sooner than one after the
  other).
- **run**: every child's stderr goes to its log, each line also to the
  progress callback prefixed with the release; Ctrl-C/SIGTERM reaches every
  child (they restore their trees) and is waited for before it is raised.
- **report**: per kernel the module, changed and new functions, time, or
  the refusal with its message; one kernel's failure never stops the
  others; the exit code says whether all, some or none were built.

What the children share is shared through the caches they use: Debian's
packages are fetched once into the distribution cache, each source version
is unpacked once and hard-linked per release (``route.unpack_source``), and
each release's tree is prepared once for its config.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from pykpatch.errors import EXIT_ERROR, EXIT_NO_CHANGE, EXIT_OK, EXIT_SOME_BUILT, EXIT_UNSUPPORTED, UsageError
from pykpatch.safeio import atomic_write_text

Progress = Callable[[str], None]

# What uname -r can print for a distribution kernel (6.1.0-57-cloud-amd64, 6.12.117+deb12-rt-amd64); the
# release names a directory under OUTDIR and reaches the child's command line, so nothing else is allowed.
RELEASE_RE = re.compile(r"^[0-9][A-Za-z0-9._+~-]*$")

# How a child's last error line starts (pykpatch.cli.report_error).
ERROR_PREFIX = "kpatch-build: error: "
HINT_PREFIX = "kpatch-build: hint: "


@dataclass(frozen=True)
class KernelJob:
    """One kernel of the fleet: where its module, log and result go, and its share of the jobs."""

    release: str
    outdir: Path
    jobs: int

    @property
    def log(self) -> Path:
        return self.outdir / "kpatch-build.log"

    @property
    def result(self) -> Path:
        return self.outdir / "result.json"


@dataclass
class KernelOutcome:
    """What became of one kernel (one row of the report)."""

    release: str
    exit_code: int
    seconds: float
    log: str
    module: str | None = None
    changed_functions: list[str] = field(default_factory=list)
    new_functions: list[str] = field(default_factory=list)
    error: str | None = None
    hint: str | None = None
    kbuild_seconds: float | None = None  # of ``seconds``, in make in the kernel tree (configure, prepare, compiles)

    @property
    def status(self) -> str:
        if self.exit_code == EXIT_OK:
            return "built"
        if self.exit_code == EXIT_UNSUPPORTED:
            return "refused"
        if self.exit_code == EXIT_NO_CHANGE:
            return "no change"
        return "failed"


# -- the kernels -----------------------------------------------------------------

def parse_kernel_list(spec: str, installed: Callable[[], list[str]]) -> list[str]:
    """``--kernels`` as given: ``installed``, a file (one release a line, ``#`` comments), or ``A,B,C``."""
    if spec == "installed":
        releases = installed()
        if not releases:
            raise UsageError("--kernels installed: the package manager has no kernel image installed",
                             hint="name the releases: --kernels 6.1.0-57-amd64,6.1.0-57-cloud-amd64")
        source = "the installed kernels"
    elif os.sep in spec or Path(spec).is_file():
        try:
            text = Path(spec).read_text(errors="replace")
        except OSError as err:
            raise UsageError(f"--kernels {spec}: cannot read the file: {err.strerror or err}") from None
        releases = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        source = spec
    else:
        releases = [word.strip() for word in spec.split(",")]
        source = "--kernels"
    return _validated(releases, source)


def _validated(releases: Sequence[str], source: str) -> list[str]:
    unique: list[str] = []
    for release in releases:
        if not release:
            continue
        if not RELEASE_RE.match(release) or ".." in release:
            raise UsageError(f"{source}: {release!r} is not a kernel release (as uname -r prints it)")
        if release not in unique:
            unique.append(release)
    if not unique:
        raise UsageError(f"{source}: no kernel release given")
    return unique


def plan(releases: Sequence[str], outdir: Path, jobs: int) -> list[KernelJob]:
    """Each kernel's directory and share of ``jobs`` (at least one each)."""
    at_once = concurrency(len(releases), jobs)
    share = max(1, jobs // at_once)
    return [KernelJob(release, outdir / release, share) for release in releases]


def concurrency(kernels: int, jobs: int) -> int:
    """How many kernels are built at once: as many as there are jobs, never more than there are kernels."""
    return max(1, min(kernels, jobs))


# -- running ----------------------------------------------------------------------

ChildCommand = Callable[[KernelJob], list[str]]


@dataclass
class _Running:
    job: KernelJob
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float
    pending: bytes = b""
    last_error: str | None = None
    last_hint: str | None = None


def run_fleet(jobs: Sequence[KernelJob], command: ChildCommand, progress: Progress,
              at_once: int) -> list[KernelOutcome]:
    """Run every job's command, ``at_once`` at a time; outcomes in the order of ``jobs``."""
    waiting = list(jobs)
    running: dict[int, _Running] = {}
    done: dict[str, KernelOutcome] = {}
    selector = selectors.DefaultSelector()
    try:
        while waiting or running:
            while waiting and len(running) < at_once:
                child = _start(waiting.pop(0), command, progress)
                assert child.proc.stderr is not None
                running[child.proc.stderr.fileno()] = child
                selector.register(child.proc.stderr, selectors.EVENT_READ, child)
            for key, _events in selector.select(timeout=1.0):
                child = key.data
                assert child.proc.stderr is not None
                chunk = os.read(child.proc.stderr.fileno(), 65536)
                if chunk:
                    _consume(child, chunk, progress)
                    continue
                selector.unregister(child.proc.stderr)
                del running[child.proc.stderr.fileno()]
                done[child.job.release] = _finish(child, progress)
    except BaseException:
        _stop_all(list(running.values()))
        raise
    finally:
        selector.close()
    return [done[job.release] for job in jobs]


def _start(job: KernelJob, command: ChildCommand, progress: Progress) -> _Running:
    job.outdir.mkdir(parents=True, exist_ok=True)
    job.result.unlink(missing_ok=True)
    log = open(job.log, "wb")  # noqa: SIM115 - closed in _finish / _stop_all
    argv = command(job)
    log.write(("$ " + " ".join(argv) + "\n").encode())
    log.flush()
    progress(f"{job.release}: started (-j {job.jobs}, log {job.log})")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.PIPE)
    return _Running(job, proc, log, time.monotonic())


def _consume(child: _Running, chunk: bytes, progress: Progress) -> None:
    child.log.write(chunk)
    child.log.flush()
    lines = (child.pending + chunk).split(b"\n")
    child.pending = lines.pop()
    for raw in lines:
        _note_line(child, raw.decode(errors="replace").rstrip(), progress)


def _note_line(child: _Running, line: str, progress: Progress) -> None:
    if line.startswith(ERROR_PREFIX):
        child.last_error = line[len(ERROR_PREFIX):]
    elif line.startswith(HINT_PREFIX):
        child.last_hint = line[len(HINT_PREFIX):]
    if line:
        progress(f"{child.job.release}: {line}")


def _finish(child: _Running, progress: Progress) -> KernelOutcome:
    if child.pending:
        _note_line(child, child.pending.decode(errors="replace").rstrip(), progress)
    code = child.proc.wait()
    child.log.close()
    outcome = KernelOutcome(child.job.release, _exit_code(code), round(time.monotonic() - child.started, 1),
                            str(child.job.log), error=child.last_error, hint=child.last_hint)
    if outcome.exit_code == EXIT_OK:
        _read_result(child.job, outcome)
    elif outcome.error is None:
        outcome.error = f"kpatch-build exited with code {code}; see {child.job.log}"
    progress(f"{child.job.release}: {outcome.status} in {outcome.seconds:.0f} s")
    return outcome


def _exit_code(returncode: int) -> int:
    """A child killed by a signal counts as failed (a negative returncode is not an exit code)."""
    return returncode if returncode >= 0 else EXIT_ERROR


def _read_result(job: KernelJob, outcome: KernelOutcome) -> None:
    try:
        data = json.loads(job.result.read_text())
        outcome.module = str(data["module"])
        outcome.changed_functions = [str(f) for f in data.get("changed_functions", [])]
        outcome.new_functions = [str(f) for f in data.get("new_functions", [])]
        outcome.kbuild_seconds = float(data["kbuild_seconds"]) if "kbuild_seconds" in data else None
    except (OSError, ValueError, KeyError, TypeError) as err:
        outcome.exit_code = EXIT_ERROR
        outcome.error = f"the build ended but its result {job.result} cannot be read ({err})"


def _stop_all(children: list[_Running]) -> None:
    """Interrupted: every child restores its own tree on SIGTERM; wait for all of them before going on."""
    for child in children:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    for child in children:
        child.proc.wait()
        child.log.close()


# -- the report -------------------------------------------------------------------

def fleet_exit_code(outcomes: Sequence[KernelOutcome]) -> int:
    """0: every kernel built; EXIT_SOME_BUILT: some; none: their common exit code, else EXIT_ERROR."""
    built = sum(1 for o in outcomes if o.exit_code == EXIT_OK)
    if built == len(outcomes):
        return EXIT_OK
    if built:
        return EXIT_SOME_BUILT
    codes = {o.exit_code for o in outcomes}
    return codes.pop() if len(codes) == 1 else EXIT_ERROR


def report_json(patches: Sequence[Path], outcomes: Sequence[KernelOutcome], seconds: float) -> str:
    kernels = [dict(asdict(o), status=o.status) for o in outcomes]
    summary = {status: sum(1 for o in outcomes if o.status == status)
               for status in ("built", "refused", "no change", "failed")}
    return json.dumps({"patches": [str(p) for p in patches], "seconds": round(seconds, 1),
                       "exit_code": fleet_exit_code(outcomes), "summary": summary, "kernels": kernels}, indent=1)


def write_report(path: Path, text: str) -> None:
    atomic_write_text(path, text + "\n", mode=0o644)


def summary_table(outcomes: Sequence[KernelOutcome]) -> str:
    """The table printed at the end: one line a kernel, then the totals."""
    rows = [("kernel", "status", "time", "functions", "module or reason")]
    for o in outcomes:
        functions = f"{len(o.changed_functions)} changed, {len(o.new_functions)} new" if o.exit_code == EXIT_OK else ""
        rows.append((o.release, o.status, f"{o.seconds:.0f} s", functions, o.module or o.error or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4] for row in rows]
    built = sum(1 for o in outcomes if o.exit_code == EXIT_OK)
    lines.append(f"{built} of {len(outcomes)} kernels built")
    return "\n".join(line.rstrip() for line in lines)


def child_command(job: KernelJob, forwarded: Sequence[str], patches: Sequence[Path]) -> list[str]:
    """``kpatch-build --kernel RELEASE`` for one kernel, with the options every kernel shares."""
    return [sys.executable, "-m", "pykpatch.commands.kpatch_build_cmd", "--kernel", job.release,
            "-o", str(job.outdir), "-j", str(job.jobs), "--result-json", str(job.result),
            *forwarded, *[str(p) for p in patches]]
