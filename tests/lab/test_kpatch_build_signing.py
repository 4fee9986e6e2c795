"""Issue 9, signing: a kernel that enforces module signatures loads the live patch only when it is signed.

The lab kernel is built with ``CONFIG_MODULE_SIG=y`` and kbuild's own key,
which kbuild generates during the lab build (``certs/signing_key.pem``,
made on this machine, trusted by that kernel alone).  The guest boots with
``module.sig_enforce=1``: the same switch ``CONFIG_MODULE_SIG_FORCE=y``
turns on at build time (kernel/module/signing.c: ``sig_enforce`` starts as
``IS_ENABLED(CONFIG_MODULE_SIG_FORCE)`` and the parameter sets it), so one
lab kernel serves both the tests that load unsigned modules and this one.

- kpatch-build signs by default with the tree's key: the module loads,
  patches, unloads;
- ``--no-sign``: the kernel refuses it;
- ``--sign-key`` with a key made now, which the kernel does not trust: the
  module is signed (its signature is there) and the kernel refuses it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pykpatch.kbuild.config import read_config
from pykpatch.kpatch_build.kmod import MODULE_SIGNATURE_MAGIC
from pykpatch.lab import insmod, read, rmmod, shell, wait_for, wait_until_gone, write

PATCH = Path(__file__).resolve().parents[1] / "integration" / "patches" / "01-cmdline-string.patch"


def build(kernel, cache: Path, out: Path, name: str, *extra: str) -> tuple[Path, str]:
    cmd = [sys.executable, "-m", "pykpatch.cli", "build", "-s", str(kernel.tree), "-v", str(kernel.vmlinux),
           "-n", name, "-o", str(out), *extra, str(PATCH)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CACHEDIR": str(cache)},
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / f"{name}.ko", proc.stderr


def test_signed_loads_unsigned_and_untrusted_are_refused(lab_kernel, lab_boot, tmp_path):
    assert read_config(lab_kernel.config).get("CONFIG_MODULE_SIG") == "y"
    cache = tmp_path / "cache"
    signed, log = build(lab_kernel, cache, tmp_path, "livepatch-signed")
    assert f"signed with {lab_kernel.tree / 'certs/signing_key.pem'}" in log
    unsigned, _ = build(lab_kernel, cache, tmp_path, "livepatch-unsigned", "--no-sign")
    key = tmp_path / "untrusted.pem"
    subprocess.run(["openssl", "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "2", "-batch", "-x509",
                    "-subj", "/CN=pykpatch test key made now/", "-newkey", "rsa:2048", "-keyout", str(key),
                    "-out", str(key)], check=True, capture_output=True)
    untrusted, _ = build(lab_kernel, cache, tmp_path, "livepatch-untrusted", "--sign-key", str(key))
    assert signed.read_bytes().endswith(MODULE_SIGNATURE_MAGIC)
    assert untrusted.read_bytes().endswith(MODULE_SIGNATURE_MAGIC)
    assert not unsigned.read_bytes().endswith(MODULE_SIGNATURE_MAGIC)

    lp = "/sys/kernel/livepatch/livepatch_signed"
    result = lab_boot([
        shell("insmod /modules/livepatch-unsigned.ko; echo rc=$?"),
        shell("insmod /modules/livepatch-untrusted.ko; echo rc=$?"),
        read("/proc/cmdline"),
        insmod(signed), wait_for(f"{lp}/transition", "0"), read("/proc/cmdline"),
        write(f"{lp}/enabled", "0"), wait_until_gone(lp), rmmod("livepatch_signed"), read("/proc/cmdline"),
    ], modules=[signed, unsigned, untrusted], append="module.sig_enforce=1")
    assert result.ok, result.failures()
    out = [s.output for s in result.steps]
    # EKEYREJECTED both times: no signature where one is required, and a signature by a key the kernel
    # does not trust (6.1 reports an unknown key the same way when signatures are enforced)
    for refused in out[:2]:
        assert "Key was rejected by service" in refused and "rc=0" not in refused, out[:2]
    assert "pykpatch=cmdline" in out[5] and out[9] == out[2] and "pykpatch" not in out[2]
