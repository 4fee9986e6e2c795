"""Issue 11 acceptance: live patch Debian's own kernel from its packages, without building the kernel.

``kpatch-build --kernel RELEASE fix.patch``, as a user types it on a Debian
machine: the packages of the Debian kernel built from the installed
``linux-source-6.1`` are fetched once into a cache outside the repository
(``PYKPATCH_DISTRO_CACHE``, default here ``~/.cache/pykpatch/distro/debian``:
about 1 GB, kept between runs), the sources are unpacked into a fresh
CACHEDIR (a never-built tree, every run), prepared, and only the objects the
patch reaches are compiled.  Each module is then loaded into Debian's own
``vmlinuz`` under QEMU (the lab's initramfs), with the patched behaviour
seen, the transition complete, and the old behaviour back after unloading.
The refusals at the end must name the mismatch and compile nothing.
"""

from __future__ import annotations

import lzma
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pykpatch.distro.base import KernelArtifacts, upstream_version
from pykpatch.distro.debian import DebianProvider, release_built_from
from pykpatch.lab import boot, insmod, read, rmmod, shell, wait_for, wait_until_gone, write
from pykpatch.lab.debian import debian_cache_root

pytestmark = pytest.mark.kernel

PATCHES = Path(__file__).resolve().parents[1] / "integration" / "patches"
DISTRO_CACHE = Path(os.environ.get("PYKPATCH_DISTRO_CACHE") or debian_cache_root())
BUILD_TIMEOUT = 1800
PCSPKR = "/sys/bus/platform/drivers/pcspkr"
REBIND = f"echo pcspkr > {PCSPKR}/unbind && echo pcspkr > {PCSPKR}/bind && grep '^N: Name=.*Speaker' /proc/bus/input/devices"


@dataclass
class Debian:
    series: str
    release: str
    artifacts: KernelArtifacts
    cachedir: Path


# Debian 12's kernel, and Debian 13's (Debian 12's backports): 6.12 with IBT, call padding and
# call depth tracking, built with x86_64-linux-gnu-gcc-12.
@pytest.fixture(scope="module", params=["6.1", "6.12"])
def debian(request, tmp_path_factory) -> Debian:
    series = request.param
    release = release_built_from(f"linux-source-{series}")
    artifacts = DebianProvider(DISTRO_CACHE).artifacts(release, lambda m: print(f"\n[debian] {m}", file=sys.stderr))
    return Debian(series, release, artifacts, tmp_path_factory.mktemp(f"never-built-cache-{series}"))


def kpatch_build(debian: Debian, out: Path, *args: str, cachedir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CACHEDIR": str(cachedir or debian.cachedir), "PYKPATCH_DISTRO_CACHE": str(DISTRO_CACHE)}
    cmd = [sys.executable, "-m", "pykpatch.cli", "build", "-o", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT)
    sys.stderr.write(f"\n[kpatch-build {' '.join(args)}: rc {proc.returncode}]\n{proc.stderr[-4000:]}")
    return proc


def compiled_objects(stderr: str) -> int:
    return sum(int(n) for n in re.findall(r"(?:original objects|patched build): done, (\d+) files compiled", stderr))


def test_vmlinux_function_in_debians_kernel(debian: Debian, tmp_path):
    proc = kpatch_build(debian, tmp_path, "--kernel", debian.release, "-n", "livepatch-deb-cmdline",
                        str(PATCHES / "01-cmdline-string.patch"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "preparing the tree" in proc.stderr and "guard: 1 original object(s) match" in proc.stderr
    ko = tmp_path / "livepatch-deb-cmdline.ko"
    lp = "/sys/kernel/livepatch/livepatch_deb_cmdline"
    result = boot(debian.artifacts.vmlinuz, [
        read("/proc/cmdline"), shell("uname -r"), insmod(ko), wait_for(f"{lp}/transition", "0"),
        read("/proc/cmdline"), write(f"{lp}/enabled", "0"), wait_until_gone(lp), rmmod("livepatch_deb_cmdline"),
        read("/proc/cmdline"),
    ], modules=[ko], memory="512M", timeout=180, workdir=tmp_path / "boot")
    assert result.ok, result.failures()
    out = [s.output for s in result.steps]
    assert out[1].strip() == debian.release
    assert out[4] == out[0].rstrip("\n") + " pykpatch=cmdline\n" and out[8] == out[0]
    assert "livepatch: 'livepatch_deb_cmdline': patching complete" in result.console
    assert "livepatch: 'livepatch_deb_cmdline': unpatching complete" in result.console


def test_function_of_a_module_debian_ships(debian: Debian, tmp_path):
    proc = kpatch_build(debian, tmp_path, "--kernel", debian.release, "-n", "livepatch-deb-pcspkr",
                        str(PATCHES / "06-module-pcspkr.patch"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "diff [1/1] drivers/input/misc/pcspkr.o (parent pcspkr)" in proc.stderr
    ko = tmp_path / "livepatch-deb-pcspkr.ko"
    pcspkr = shipped_module(debian, "drivers/input/misc/pcspkr", tmp_path)
    lp = "/sys/kernel/livepatch/livepatch_deb_pcspkr"
    result = boot(debian.artifacts.vmlinuz, [
        insmod(pcspkr), shell(REBIND), insmod(ko), wait_for(f"{lp}/transition", "0"), shell(REBIND),
        write(f"{lp}/enabled", "0"), wait_until_gone(lp), shell(REBIND), rmmod("livepatch_deb_pcspkr"),
        rmmod("pcspkr"),
    ], modules=[ko, pcspkr], memory="512M", timeout=180, workdir=tmp_path / "boot")
    assert result.ok, result.failures()
    out = [s.output for s in result.steps]
    assert out[1] == 'N: Name="PC Speaker"\n'
    assert out[4] == 'N: Name="PC Speaker (pykpatch)"\n'
    assert out[7] == 'N: Name="PC Speaker"\n'


def shipped_module(debian: Debian, path: str, tmp_path: Path) -> Path:
    """The image package's .ko, unpacked when it ships compressed (Debian 13: .ko.xz)."""
    plain = debian.artifacts.modules / "kernel" / f"{path}.ko"
    if plain.is_file():
        return plain
    packed = plain.with_name(plain.name + ".xz")
    out = tmp_path / plain.name
    out.write_bytes(lzma.decompress(packed.read_bytes()))
    return out


# -- refusals: each names the mismatch, and nothing is compiled ------------------------------------------------

def test_vmlinux_of_another_release_is_refused(debian: Debian, lab_kernel, tmp_path):
    proc = kpatch_build(debian, tmp_path, "--kernel", debian.release, "-v", str(lab_kernel.vmlinux),
                        str(PATCHES / "01-cmdline-string.patch"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"build release {debian.release}, but {lab_kernel.vmlinux} is 6.1.192" in proc.stderr
    assert compiled_objects(proc.stderr) == 0 and "modules_prepare" not in proc.stderr


def test_config_of_another_kernel_is_refused(debian: Debian, lab_kernel, tmp_path):
    proc = kpatch_build(debian, tmp_path, "--kernel", debian.release, "-c", str(lab_kernel.config),
                        str(PATCHES / "01-cmdline-string.patch"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert re.search(r"is not the config of this kernel: \d+ option\(s\) differ", proc.stderr)
    assert compiled_objects(proc.stderr) == 0 and "modules_prepare" not in proc.stderr


def test_source_tree_of_another_version_is_refused(debian: Debian, tmp_path):
    """-s with sources of an older sublevel against Debian's vmlinux of a kernel built from a newer one."""
    upstream = upstream_version(debian.artifacts.version)          # 6.1.192, 6.12.117
    major, minor, sublevel = upstream.split(".")
    older = f"{major}.{minor}.{int(sublevel) - 2}"
    tree = tmp_path / f"linux-{older}"
    (tree / "kernel").mkdir(parents=True)
    (tree / "Makefile").write_text(f"VERSION = {major}\nPATCHLEVEL = {minor}\nSUBLEVEL = {int(sublevel) - 2}\n"
                                   "EXTRAVERSION =\n")
    proc = kpatch_build(debian, tmp_path, "-s", str(tree), "-v", str(debian.artifacts.vmlinux),
                        str(PATCHES / "01-cmdline-string.patch"), cachedir=tmp_path / "cache")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (f"the source tree {tree} is Linux {older}, but {debian.release} is built from {upstream} "
            f"(debian {debian.artifacts.version})") in proc.stderr
    assert compiled_objects(proc.stderr) == 0 and sorted(p.name for p in tree.iterdir()) == ["Makefile", "kernel"]
