"""distccd daemons on loopback for the tests: two of them stand in for two build machines.

Each daemon listens on 127.0.0.1 on a port of its own, logs to a file
(``--log-stderr`` into a file opened here, so that a daemon that dropped
root for ``nobody`` can still write it), and can be given a ``PATH`` of its
own (``DISTCCD_PATH``) -- how a test gives one "machine" another compiler.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Daemon:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def compiles(self) -> int:
        """How many compile jobs this daemon ran to a successful end (its log's job summaries)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return len(re.findall(r"\bCOMPILE_OK\b", text))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def world_readable_dir(prefix: str) -> Path:
    """A directory the daemons' ``nobody`` can enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def start_daemon(workdir: Path, path: str | None = None, jobs: int = 2) -> Daemon:
    port = free_port()
    log = workdir / f"distccd-{port}.log"
    cmd = ["distccd", "--daemon", "--no-detach", "--log-stderr", "--log-level", "info", "--allow", "127.0.0.1",
           "--listen", "127.0.0.1", "--port", str(port), "--jobs", str(jobs)]
    if os.geteuid() == 0:
        cmd += ["--user", "nobody"]
    env = {**os.environ, "DISTCCD_PATH": path or os.environ.get("PATH", "/usr/bin:/bin")}
    if path:
        env["PATH"] = path
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, env=env)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return Daemon(port, log, proc)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"distccd on port {port} did not start: {log.read_text(errors='replace')[-2000:]}")


@contextlib.contextmanager
def daemons(count: int, workdir: Path, paths: list[str | None] | None = None) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        for index in range(count):
            started.append(start_daemon(workdir, (paths or [None] * count)[index]))
        yield started
    finally:
        for daemon in started:
            daemon.proc.terminate()
        for daemon in started:
            try:
                daemon.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.proc.wait()


def hosts_spec(started: list[Daemon], slots: int = 2) -> str:
    """DISTCC_HOSTS for these daemons only (no localhost: every compile leaves "this machine")."""
    return " ".join(f"{d.host}/{slots}" for d in started)
