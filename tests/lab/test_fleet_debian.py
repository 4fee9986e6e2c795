"""Issue 15: one patch, every flavour of both Debian series, one command -- and the same over distcc.

``kpatch-build --kernels`` for ``6.1.0-N-{amd64,cloud-amd64,rt-amd64}`` and
``6.12.N+deb12-{amd64,cloud-amd64,rt-amd64}`` from never-built trees (a
fresh CACHEDIR): Debian's packages are fetched once into the distribution
cache outside the repository; each source version is unpacked once and
hard-linked per flavour; each flavour's tree is prepared for its own
config.  Each module is then loaded into its own kernel under QEMU: the
patched behaviour seen, the transition complete, the old behaviour back
after unloading.

The rt flavours are refused up front, before their packages are fetched:
Debian builds them from linux-source-X.Y *plus* its PREEMPT_RT patch
series, which that package does not ship (measured: the 6.1 rt config then
asks for 7 options the plain sources lack, the 6.12 one for 2, although
PREEMPT_RT itself is upstream in 6.12).  The refusals must not stop the
others.

Then the same command with ``--distcc`` and two ``distccd`` on loopback
standing in for two machines (and ccache in front, as on a machine that has
it): every compile leaves "this machine", and the modules are the local
run's -- the same functions with the same code bytes and relocations, every
section outside the DWARF identical (the DWARF records each run's tree path,
and distcc preprocesses here, so a macro expanding to another length shifts
the columns in its line table).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from distcc_util import daemons, hosts_spec, world_readable_dir

from pykpatch.distro.debian import DebianProvider, release_built_from
from pykpatch.elf.reader import read_elf
from pykpatch.errors import EXIT_SOME_BUILT
from pykpatch.lab import boot, insmod, read, rmmod, shell, wait_for, wait_until_gone, write
from pykpatch.lab.debian import debian_cache_root

pytestmark = pytest.mark.kernel

PATCHES = Path(__file__).resolve().parents[1] / "integration" / "patches"
DISTRO_CACHE = Path(os.environ.get("PYKPATCH_DISTRO_CACHE") or debian_cache_root())
KERNELS = (("6.1", "amd64"), ("6.1", "cloud-amd64"), ("6.1", "rt-amd64"),
           ("6.12", "amd64"), ("6.12", "cloud-amd64"), ("6.12", "rt-amd64"))
REFUSED = (("6.1", "rt-amd64"), ("6.12", "rt-amd64"))
NAME = "livepatch-fleet-cmdline"
BUILD_TIMEOUT = 3600


def say(message: str) -> None:
    print(f"\n[fleet] {message}", file=sys.stderr)


@dataclass
class FleetRun:
    returncode: int
    stderr: str
    stdout: str
    report: dict
    out: Path
    seconds: float


def run_fleet(releases: list[str], workdir: Path, extra: list[str], env_extra: dict[str, str]) -> FleetRun:
    out, report = workdir / "out", workdir / "report.json"
    env = {**os.environ, "CACHEDIR": str(workdir / "cache"), "PYKPATCH_DISTRO_CACHE": str(DISTRO_CACHE),
           **env_extra}
    cmd = [sys.executable, "-m", "pykpatch.cli", "build", "--kernels", ",".join(releases), "--report", str(report),
           "-o", str(out), "-n", NAME, *extra, str(PATCHES / "01-cmdline-string.patch")]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT,
                          stdin=subprocess.DEVNULL, check=False)
    seconds = time.monotonic() - started
    sys.stderr.write(f"\n[kpatch-build --kernels {' '.join(extra)}: rc {proc.returncode}, {seconds:.0f} s]\n"
                     f"{proc.stderr[-8000:]}")
    data = json.loads(report.read_text()) if report.is_file() else {}
    return FleetRun(proc.returncode, proc.stderr, proc.stdout, data, out, seconds)


@pytest.fixture(scope="module")
def releases() -> list[str]:
    return [release_built_from(f"linux-source-{series}", flavour) for series, flavour in KERNELS]


@pytest.fixture(scope="module")
def built(releases: list[str]) -> list[str]:
    return [r for r, k in zip(releases, KERNELS, strict=True) if k not in REFUSED]


@pytest.fixture(scope="module")
def local_run(releases: list[str], tmp_path_factory: pytest.TempPathFactory) -> FleetRun:
    return run_fleet(releases, tmp_path_factory.mktemp("fleet-local"), [], {})


def test_one_patch_for_six_kernels_in_one_command(local_run: FleetRun, releases: list[str], built: list[str],
                                                  tmp_path: Path) -> None:
    assert local_run.returncode == EXIT_SOME_BUILT, local_run.stderr[-4000:]
    data = local_run.report
    refused = [releases[KERNELS.index(k)] for k in REFUSED]
    assert [k["release"] for k in data["kernels"]] == releases
    assert [k["status"] for k in data["kernels"]] == ["failed" if r in refused else "built" for r in releases]
    kernels = {k["release"]: k for k in data["kernels"]}
    assert all(kernels[r]["changed_functions"] == ["fs/proc/cmdline.o: cmdline_proc_show"] for r in built)
    assert all("PREEMPT_RT patches" in kernels[r]["error"] and kernels[r]["seconds"] < 30 for r in refused)
    assert data["exit_code"] == EXIT_SOME_BUILT and "4 of 6 kernels built" in local_run.stderr
    # Each source version unpacked once; every flavour linked to it and prepared for its own config.
    lines = local_run.stderr.splitlines()
    assert sum("unpacking /" in line and "linux-source" in line for line in lines) == 2
    assert sum("(hard links, once)" in line for line in lines) == len(built)
    assert sum(f"{r}: " in line and "preparing the tree" in line for line in lines for r in built) == len(built)
    assert not any(f"{r}: " in line and "fetching" in line for line in lines for r in refused)
    assert local_run.stdout.split() == [str(local_run.out / r / f"{NAME}.ko") for r in built]

    for release in built:
        artifacts = DebianProvider(DISTRO_CACHE).artifacts(release, say, vmlinux=False)
        assert artifacts.vmlinuz is not None
        ko = local_run.out / release / f"{NAME}.ko"
        lp = "/sys/kernel/livepatch/livepatch_fleet_cmdline"
        result = boot(artifacts.vmlinuz, [
            read("/proc/cmdline"), shell("uname -r"), insmod(ko), wait_for(f"{lp}/transition", "0"),
            read("/proc/cmdline"), write(f"{lp}/enabled", "0"), wait_until_gone(lp),
            rmmod("livepatch_fleet_cmdline"), read("/proc/cmdline"),
        ], modules=[ko], memory="512M", timeout=240, workdir=tmp_path / f"boot-{release}")
        assert result.ok, (release, result.failures())
        outputs = [s.output for s in result.steps]
        assert outputs[1].strip() == release
        assert outputs[4] == outputs[0].rstrip("\n") + " pykpatch=cmdline\n" and outputs[8] == outputs[0]
        assert "livepatch: 'livepatch_fleet_cmdline': patching complete" in result.console


def functions_of(ko: Path) -> dict[str, tuple[bytes, list[tuple[int, int, str, int]]]]:
    """Every function of a module: its code bytes and its relocations (offset, type, symbol, addend)."""
    obj = read_elf(ko)
    result = {}
    for sym in obj.symbols:
        if sym.type != 2 or sym.section is None or not sym.size:  # STT_FUNC, defined here
            continue
        sec = sym.section
        code = sec.data[sym.value:sym.value + sym.size]
        relocs = []
        if sec.rela is not None and sec.rela.relocations is not None:
            relocs = sorted((r.offset, r.type, r.symbol.name if r.symbol else "", r.addend)
                            for r in sec.rela.relocations if sym.value <= r.offset < sym.value + sym.size)
        result[f"{sec.name}:{sym.name}"] = (code, relocs)
    return result


def sections_of(ko: Path) -> dict[str, bytes]:
    return {sec.name: sec.data for sec in read_elf(ko).sections if sec.name}


def test_the_same_run_over_two_distccd_gives_identical_modules(local_run: FleetRun, releases: list[str],
                                                               built: list[str],
                                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    assert local_run.returncode == EXIT_SOME_BUILT, "the local run failed: see the test above"
    assert shutil.which("ccache"), ".ci/run installs ccache: --distcc then goes behind it"
    daemon_dir = world_readable_dir("pykpatch-fleet-distccd-")
    workdir = tmp_path_factory.mktemp("fleet-distcc")
    try:
        with daemons(2, daemon_dir) as started:
            run = run_fleet(releases, workdir, ["--distcc"],
                            {"DISTCC_HOSTS": hosts_spec(started), "CCACHE_DIR": str(workdir / "ccache")})
            remote = [d.compiles() for d in started]
    finally:
        shutil.rmtree(daemon_dir, ignore_errors=True)
    assert run.returncode == EXIT_SOME_BUILT, run.stderr[-4000:]
    say(f"distcc run: {run.seconds:.0f} s against {local_run.seconds:.0f} s locally; compiles per daemon {remote}")
    # Every kernel checked both hosts' compilers first, and both daemons compiled for real.
    assert sum("byte for byte the local one" in line for line in run.stderr.splitlines()) == 2 * len(built)
    # 6.1's compiler is gcc-12, 6.12's x86_64-linux-gnu-gcc-12 (its .kernelvariables set CROSS_COMPILE).
    assert sum("compiles go through ccache -> distcc -> " in line for line in run.stderr.splitlines()) == len(built)
    assert min(remote) > 0 and sum(remote) >= 2 * len(built) + 2 * len(built), remote  # probes + orig + patched
    assert [k["status"] for k in run.report["kernels"]] == [k["status"] for k in local_run.report["kernels"]]
    for release in built:
        local_ko, distcc_ko = local_run.out / release / f"{NAME}.ko", run.out / release / f"{NAME}.ko"
        assert functions_of(distcc_ko) == functions_of(local_ko), release
        local_sections, distcc_sections = sections_of(local_ko), sections_of(distcc_ko)
        assert distcc_sections.keys() == local_sections.keys()
        # Outside the DWARF (which records each run's own tree path -- two cache directories here --
        # and distcc's shifted columns) and the build id that hashes it, every section is the same:
        # code, relocations, klp sections, strings (__FILE__ included), .modinfo.
        differing = {name for name in local_sections if local_sections[name] != distcc_sections[name]}
        assert all(is_debug_or_build_id(name) for name in differing), (release, differing)
        assert any(not is_debug_or_build_id(name) for name in local_sections)


def is_debug_or_build_id(name: str) -> bool:
    return name.startswith((".debug_", ".rela.debug_")) or name == ".note.gnu.build-id"
