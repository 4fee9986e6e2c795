"""kpatch-build on a tree that is already built plainly: no full rebuild, tree left as found.

A distribution maintainer's tree is usually built already, without
``-ffunction-sections``.  kpatch-build then compiles only the objects the
patch reaches with kpatch's flags (before and after patching) and puts the
tree's own objects and the prepare stage's products back.  This test makes
one object of the lab tree "plain" again, runs kpatch-build with an empty
cache directory, checks the module in QEMU and the tree byte for byte.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

from pykpatch.kbuild.tree import KPATCH_CFLAGS, build_state_files
from pykpatch.kpatch_build.workspace import tree_directory_lock as tree_lock
from pykpatch.lab import insmod, read, rmmod, wait_for, wait_until_gone, write

PATCH = Path(__file__).resolve().parents[1] / "integration" / "patches" / "01-cmdline-string.patch"
OBJECT = "fs/proc/cmdline.o"


def fingerprint(tree: Path, files: list[str]) -> dict[str, tuple[str, int]]:
    out = {}
    for rel in files:
        p = tree / rel
        out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def make(tree: Path, kcflags: str, *targets: str) -> None:
    subprocess.run(["make", "-C", str(tree), "-j2", f"KCFLAGS={kcflags}", *targets],
                   check=True, capture_output=True)


def test_first_run_on_a_plainly_built_tree(lab_kernel, lab_boot, tmp_path):
    tree = lab_kernel.tree
    with tree_lock(tree, lambda _m: None):
        make(tree, "", OBJECT)  # the object (and prepare products) as a plain build leaves them
        watched = [OBJECT, "fs/proc/.cmdline.o.cmd", *build_state_files(tree)]
        before = fingerprint(tree, watched)
    assert len(watched) > 10 and "arch/x86/kernel/asm-offsets.s" in watched
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pykpatch.cli", "build", "-s", str(tree), "-v", str(lab_kernel.vmlinux),
             "-n", "livepatch-ondemand", "-o", str(tmp_path), str(PATCH)],
            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                                                 "CACHEDIR": str(tmp_path / "cache")},
        )
        seconds = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "compiled on demand" in proc.stderr
        assert "original build: building the tree" not in proc.stderr
        print(f"\non-demand first run: {seconds:.1f} s")
        with tree_lock(tree, lambda _m: None):
            assert fingerprint(tree, watched) == before, "the tree's build products were not put back"
    finally:
        with tree_lock(tree, lambda _m: None):
            make(tree, KPATCH_CFLAGS, OBJECT)  # as the cached kpatch build of the other tests expects

    ko = tmp_path / "livepatch-ondemand.ko"
    lp = "/sys/kernel/livepatch/livepatch_ondemand"
    result = lab_boot([read("/proc/cmdline"), insmod(ko.name), wait_for(f"{lp}/transition", "0"),
                       read("/proc/cmdline"), write(f"{lp}/enabled", "0"), wait_until_gone(lp),
                       rmmod("livepatch_ondemand"), read("/proc/cmdline")], modules=[ko])
    assert result.ok, result.failures()
    old, new, again = result.steps[0].output, result.steps[3].output, result.steps[7].output
    assert new != old and again == old
