"""Issue 9, defect 1: Ctrl-C, SIGTERM or SIGKILL while make runs never leaves the patch in the tree.

kpatch-build runs on the lab tree and is interrupted right after make has
written the *patched* object (the moment that used to leave the patched
object in the tree looking up to date): with SIGINT or SIGTERM it must put
the tree back before it exits; after SIGKILL of its whole process group
(make, in its own session, runs on), the next run must stop that make and
put the tree back first.  Either way the tree is then identical to before
(every file's size and mtime, the hash of every file kpatch-build touches)
and the next run builds the same module, byte for byte.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pykpatch.kpatch_build.workspace import tree_directory_lock

from .tree_state import differences, tree_state

PATCH = Path(__file__).resolve().parents[1] / "integration" / "patches" / "01-cmdline-string.patch"
OBJECT, SOURCE = "fs/proc/cmdline.o", "fs/proc/cmdline.c"
RUN_TIMEOUT = 600
PATCHED_MARK = b"%s pykpatch=cmdline"  # the patch's format string, in the patched object only


def start(kernel, cache: Path, out: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "pykpatch.cli", "build", "-s", str(kernel.tree), "-v", str(kernel.vmlinux),
           "-n", "livepatch-interrupted", "-o", str(out), str(PATCH)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CACHEDIR": str(cache)}, start_new_session=True)


def wait_for_patched_object(kernel, proc: subprocess.Popen[str]) -> None:
    """Until make of the patched build has written the patched object (it holds the patch's string)."""
    obj = kernel.tree / OBJECT
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if PATCHED_MARK in obj.read_bytes():
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise AssertionError(f"kpatch-build never wrote the patched object (rc {proc.poll()})")


@pytest.fixture(scope="module")
def reference(lab_kernel, tmp_path_factory):
    """The tree before, and the module a normal run builds."""
    cache = tmp_path_factory.mktemp("interrupt-cache")
    out = tmp_path_factory.mktemp("reference")
    with tree_directory_lock(lab_kernel.tree, lambda _m: None):
        before = tree_state(lab_kernel.tree, [OBJECT], [SOURCE])
    proc = start(lab_kernel, cache, out)
    _, err = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, err[-3000:]
    return before, (out / "livepatch-interrupted.ko").read_bytes(), cache


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupted_right_after_the_patched_object(sig, lab_kernel, reference, tmp_path):
    before, module, cache = reference
    proc = start(lab_kernel, cache, tmp_path)
    wait_for_patched_object(lab_kernel, proc)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=RUN_TIMEOUT)
    if sig != signal.SIGKILL:
        assert proc.returncode == 130, err[-3000:]
        assert "Traceback" not in err
        with tree_directory_lock(lab_kernel.tree, lambda _m: None):
            assert differences(before, tree_state(lab_kernel.tree, [OBJECT], [SOURCE])) == []
    # the next run (after SIGKILL: the one that repairs the tree first) works and builds the same module
    again = start(lab_kernel, cache, tmp_path / "again")
    _, err = again.communicate(timeout=RUN_TIMEOUT)
    assert again.returncode == 0, err[-3000:]
    if sig == signal.SIGKILL:
        assert "an interrupted run had left" in err
    with tree_directory_lock(lab_kernel.tree, lambda _m: None):
        assert differences(before, tree_state(lab_kernel.tree, [OBJECT], [SOURCE])) == []
    assert (tmp_path / "again" / "livepatch-interrupted.ko").read_bytes() == module
