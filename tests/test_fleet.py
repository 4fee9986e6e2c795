"""kpatch-build --kernels: the plan, the runner and the report (pykpatch.kpatch_build.fleet).

The children here are small Python scripts standing in for ``kpatch-build
--kernel R``: what is tested is what the fleet does with them (how many at
once, what reaches the log and the report, what an interrupt does), not the
build itself (tests/lab/test_fleet_debian.py builds real kernels).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pykpatch.errors import EXIT_ERROR, EXIT_OK, EXIT_SOME_BUILT, EXIT_UNSUPPORTED, UsageError
from pykpatch.kpatch_build import fleet
from pykpatch.kpatch_build.fleet import KernelJob, KernelOutcome

ROOT = Path(__file__).resolve().parents[1]


def no_installed() -> list[str]:
    return []


# -- the kernel list -------------------------------------------------------------------

def test_comma_separated_releases_keep_their_order_and_lose_duplicates() -> None:
    assert fleet.parse_kernel_list("6.1.0-57-amd64, 6.1.0-57-cloud-amd64,6.1.0-57-amd64", no_installed) == [
        "6.1.0-57-amd64", "6.1.0-57-cloud-amd64"]


def test_a_file_lists_one_release_a_line_with_comments(tmp_path: Path) -> None:
    listing = tmp_path / "fleet.txt"
    listing.write_text("# web tier\n6.1.0-57-amd64\n\n6.12.117+deb12-rt-amd64  # realtime boxes\n")
    assert fleet.parse_kernel_list(str(listing), no_installed) == ["6.1.0-57-amd64", "6.12.117+deb12-rt-amd64"]


def test_installed_asks_the_package_manager() -> None:
    assert fleet.parse_kernel_list("installed", lambda: ["6.1.0-57-amd64"]) == ["6.1.0-57-amd64"]
    with pytest.raises(UsageError, match="no kernel image installed"):
        fleet.parse_kernel_list("installed", no_installed)


@pytest.mark.parametrize("spec", ["../../etc", "6.1.0-57-amd64,foo bar", "6.1.0-57-amd64,-x", ",,", "6.1/../x"])
def test_what_is_not_a_release_is_refused(spec: str) -> None:
    # A release names a directory under OUTDIR and reaches a child's command line.
    with pytest.raises(UsageError):
        fleet.parse_kernel_list(spec, no_installed)


def test_an_unreadable_kernel_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        fleet.parse_kernel_list(str(tmp_path / "missing" / "list"), no_installed)


# -- the plan --------------------------------------------------------------------------

@pytest.mark.parametrize(("kernels", "jobs", "at_once", "each"), [(6, 2, 2, 1), (1, 4, 1, 4), (3, 8, 3, 2), (2, 1, 1, 1)])
def test_jobs_are_shared_between_the_kernels_built_at_once(kernels: int, jobs: int, at_once: int, each: int,
                                                           tmp_path: Path) -> None:
    releases = [f"6.1.0-{n}-amd64" for n in range(kernels)]
    planned = fleet.plan(releases, tmp_path, jobs)
    assert fleet.concurrency(kernels, jobs) == at_once
    assert {job.jobs for job in planned} == {each}
    assert [job.outdir for job in planned] == [tmp_path / r for r in releases]


# -- running ---------------------------------------------------------------------------

# A stand-in child: records when it ran, says something on stderr like kpatch-build, then ends as the release's
# name asks ("ok" writes a result, "refused" exits 2 with kpatch-build's error line, "slow" waits for SIGTERM).
CHILD = textwrap.dedent("""
    import json, os, signal, sys, time
    release, result, timeline = sys.argv[1:4]
    def stopped(signum, frame):
        with open(timeline, "a") as fh:
            fh.write(f"restored {release}\\n")
        sys.exit(130)
    signal.signal(signal.SIGTERM, stopped)
    with open(timeline, "a") as fh:
        fh.write(f"start {release} {time.monotonic()}\\n")
    print(f"[   0.1s] {release}: compiling 2 objects", file=sys.stderr, flush=True)
    if "slow" in release:
        time.sleep(60)
    time.sleep(0.3)
    with open(timeline, "a") as fh:
        fh.write(f"end {release} {time.monotonic()}\\n")
    if "refused" in release:
        print("kpatch-build: error: unsupported change: cmdline_proc_show: a static local changed",
              file=sys.stderr)
        print("kpatch-build: hint: see README", file=sys.stderr, end="")
        sys.exit(2)
    module = os.path.join(os.path.dirname(result), "livepatch-fix.ko")
    with open(result, "w") as fh:
        json.dump({"module": module, "changed_functions": ["cmdline_proc_show"], "new_functions": [],
                   "kbuild_seconds": 1.25}, fh)
""")


def stand_in(tmp_path: Path) -> fleet.ChildCommand:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    timeline = tmp_path / "timeline"

    def command(job: KernelJob) -> list[str]:
        return [sys.executable, str(script), job.release, str(job.result), str(timeline)]

    return command


def max_overlap(timeline: Path) -> int:
    events = []
    for line in timeline.read_text().splitlines():
        kind, _release, *stamp = line.split()
        if kind in ("start", "end"):
            events.append((float(stamp[0]), 1 if kind == "start" else -1))
    running = peak = 0
    for _when, delta in sorted(events):
        running += delta
        peak = max(peak, running)
    return peak


def test_every_kernel_gets_an_outcome_in_order_and_no_more_run_at_once_than_planned(tmp_path: Path) -> None:
    releases = ["6.1.0-1-ok", "6.1.0-2-refused", "6.1.0-3-ok", "6.1.0-4-ok"]
    lines: list[str] = []
    outcomes = fleet.run_fleet(fleet.plan(releases, tmp_path / "out", 2), stand_in(tmp_path), lines.append, 2)
    assert [o.release for o in outcomes] == releases
    assert [o.status for o in outcomes] == ["built", "refused", "built", "built"]
    assert max_overlap(tmp_path / "timeline") == 2
    built = outcomes[0]
    assert built.module == str(tmp_path / "out" / "6.1.0-1-ok" / "livepatch-fix.ko")
    assert built.changed_functions == ["cmdline_proc_show"] and built.kbuild_seconds == 1.25
    refused = outcomes[1]
    assert refused.exit_code == EXIT_UNSUPPORTED
    assert refused.error == "unsupported change: cmdline_proc_show: a static local changed"
    assert refused.hint == "see README"      # the last line had no newline: still read
    log = (tmp_path / "out" / "6.1.0-2-refused" / "kpatch-build.log").read_text()
    assert "compiling 2 objects" in log and "a static local changed" in log
    assert "6.1.0-3-ok: [   0.1s] 6.1.0-3-ok: compiling 2 objects" in lines


def test_a_child_that_ends_without_its_result_counts_as_failed(tmp_path: Path) -> None:
    def command(job: KernelJob) -> list[str]:
        return [sys.executable, "-c", "pass"]

    [outcome] = fleet.run_fleet(fleet.plan(["6.1.0-1-ok"], tmp_path, 1), command, lambda _m: None, 1)
    assert outcome.status == "failed"
    assert outcome.error is not None and "result" in outcome.error


def test_an_interrupt_reaches_every_child_and_is_waited_for(tmp_path: Path) -> None:
    releases = ["6.1.0-1-slow", "6.1.0-2-slow"]
    timeline = tmp_path / "timeline"
    started = threading.Event()

    def progress(message: str) -> None:
        if message.endswith("compiling 2 objects") and timeline.read_text().count("start") == 2:
            started.set()
            raise KeyboardInterrupt

    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        fleet.run_fleet(fleet.plan(releases, tmp_path / "out", 2), stand_in(tmp_path), progress, 2)
    assert started.is_set()
    assert time.monotonic() - began < 30      # SIGTERM ended them: nobody slept its 60 s
    restored = [line for line in timeline.read_text().splitlines() if line.startswith("restored")]
    assert sorted(restored) == [f"restored {r}" for r in releases]


# -- the report ------------------------------------------------------------------------

def outcome(release: str, code: int) -> KernelOutcome:
    return KernelOutcome(release, code, 1.0, f"/out/{release}/kpatch-build.log",
                         module=f"/out/{release}/livepatch-fix.ko" if code == EXIT_OK else None,
                         error=None if code == EXIT_OK else "unsupported change")


@pytest.mark.parametrize(("codes", "expected"), [
    ([0, 0], EXIT_OK), ([0, 2], EXIT_SOME_BUILT), ([2, 2], EXIT_UNSUPPORTED), ([2, 1], EXIT_ERROR)])
def test_the_exit_code_says_all_some_or_none(codes: list[int], expected: int) -> None:
    assert fleet.fleet_exit_code([outcome(f"6.1.0-{i}-amd64", c) for i, c in enumerate(codes)]) == expected


def test_the_report_lists_each_kernel_and_the_totals() -> None:
    report = json.loads(fleet.report_json([Path("/p/fix.patch")],
                                          [outcome("6.1.0-1-amd64", 0), outcome("6.1.0-1-rt-amd64", 2)], 12.34))
    assert report["exit_code"] == EXIT_SOME_BUILT
    assert report["summary"] == {"built": 1, "refused": 1, "no change": 0, "failed": 0}
    assert [(k["release"], k["status"], k["module"]) for k in report["kernels"]] == [
        ("6.1.0-1-amd64", "built", "/out/6.1.0-1-amd64/livepatch-fix.ko"), ("6.1.0-1-rt-amd64", "refused", None)]
    table = fleet.summary_table([outcome("6.1.0-1-amd64", 0), outcome("6.1.0-1-rt-amd64", 2)])
    assert "1 of 2 kernels built" in table and "unsupported change" in table


# -- the command line ------------------------------------------------------------------

def kpatch_build(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pykpatch.commands.kpatch_build_cmd", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("extra", [["-s", "/usr/src/linux"], ["--kernel", "6.1.0-57-amd64"], ["-v", "/vmlinux"]])
def test_kernels_refuses_the_options_of_one_kernel(extra: list[str], tmp_path: Path) -> None:
    patch = tmp_path / "fix.patch"
    patch.write_text("--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-a\n+b\n")
    proc = kpatch_build("--kernels", "6.1.0-57-amd64", *extra, str(patch), cwd=tmp_path)
    assert proc.returncode == 1
    assert "contradict" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_patch_is_refused_once_before_any_kernel_starts(tmp_path: Path) -> None:
    patch = tmp_path / "evil.patch"
    patch.write_text("--- a/../../etc/passwd\n+++ b/../../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n")
    proc = kpatch_build("--kernels", "6.1.0-57-amd64,6.1.0-57-cloud-amd64", "-o", str(tmp_path / "out"),
                        str(patch), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_report_needs_kernels(tmp_path: Path) -> None:
    proc = kpatch_build("--report", "r.json", "fix.patch", cwd=tmp_path)
    assert proc.returncode == 1 and "--kernels" in proc.stderr


# -- sources shared between the kernels of one source version -------------------------------------------

def test_each_source_version_is_unpacked_once_and_linked_per_release(tmp_path: Path) -> None:
    import tarfile

    from pykpatch.distro.base import KernelArtifacts
    from pykpatch.kpatch_build.route import unpack_source

    src = tmp_path / "linux-source-6.1"
    (src / "kernel").mkdir(parents=True)
    (src / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\n")
    tarball = tmp_path / "linux-source-6.1.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        tar.add(src, arcname="linux-source-6.1")

    def artifacts(release: str) -> KernelArtifacts:
        return KernelArtifacts("debian", release, "6.1.192-3", tarball, Path("/c"), Path("/s"), None, Path("/m"))

    said: list[str] = []
    root = tmp_path / "sources"
    trees = [unpack_source(artifacts(r), root, said.append) for r in ("6.1.0-57-amd64", "6.1.0-57-rt-amd64")]
    assert sum("unpacking" in line for line in said) == 1
    assert trees[0] != trees[1] and trees[0].name == trees[1].name == "linux-source-6.1"
    inodes = {(t / "Makefile").stat().st_ino for t in trees}
    assert len(inodes) == 1 and (trees[0] / "Makefile").stat().st_nlink == 3   # pristine + two releases
    # Asked again, each release's tree is reused as it is.
    said.clear()
    assert unpack_source(artifacts("6.1.0-57-amd64"), root, said.append) == trees[0]
    assert said == []


def test_an_rt_kernel_before_613_is_refused_before_any_download() -> None:
    # 6.1.0-57-rt-amd64 and 6.12.118+deb12-rt-amd64 need Debian's PREEMPT_RT patch series, which
    # linux-source-6.1/6.12 do not ship.
    from pykpatch.distro.debian import refuse_unshipped_featureset
    from pykpatch.errors import DistroError

    with pytest.raises(DistroError, match="PREEMPT_RT patches"):
        refuse_unshipped_featureset("6.1.0-57-rt-amd64", "6.1")
    refuse_unshipped_featureset("6.1.0-57-amd64", "6.1")              # the plain flavours pass
    with pytest.raises(DistroError, match="PREEMPT_RT patches"):
        refuse_unshipped_featureset("6.12.118+deb12-rt-amd64", "6.12")
    refuse_unshipped_featureset("6.13.1-rt-amd64", "6.13")            # left to the config check


def test_a_release_is_found_from_its_images_when_the_metapackage_lags(monkeypatch: pytest.MonkeyPatch) -> None:
    """bookworm-security, 2026-12-02: linux-source-6.12 and images at 6.12.118, metapackages at 6.12.117."""
    from pykpatch.distro import debian
    from pykpatch.errors import DistroError

    search = ("linux-image-6.12.117+deb12-cloud-amd64-unsigned - Linux 6.12 for x86-64 cloud\n"
              "linux-image-6.12.118+deb12-cloud-amd64-unsigned - Linux 6.12 for x86-64 cloud\n"
              "linux-image-6.12.118+deb12-cloud-amd64-dbg - Debug symbols\n"
              "linux-image-6.12-cloud-amd64 - Linux for x86-64 cloud (meta-package)\n")
    madison = ("linux-image-6.12.117+deb12-cloud-amd64-unsigned | 6.12.117-1~deb12u1 | http://deb.debian.org ...\n"
               "linux-image-6.12.118+deb12-cloud-amd64-unsigned | 6.12.118-1~deb12u1 | http://deb.debian.org ...\n")
    asked: list[list[str]] = []

    def fake_run(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
        asked.append(cmd)
        out = {"search": search, "madison": madison}.get(cmd[1], "")  # "show" of the metapackage: nothing
        return subprocess.CompletedProcess(cmd, 0 if out else 100, out, "")

    monkeypatch.setattr(debian, "_run", fake_run)
    monkeypatch.setattr(debian, "installed_version", lambda name: "6.12.118-1~deb12u1")
    assert debian.release_built_from("linux-source-6.12", "cloud-amd64") == "6.12.118+deb12-cloud-amd64"
    assert asked[-1][:2] == ["apt-cache", "madison"] and "linux-image-6.12-cloud-amd64" not in asked[-1]
    monkeypatch.setattr(debian, "installed_version", lambda name: "6.12.119-1~deb12u1")
    with pytest.raises(DistroError, match="no linux-image-\\*-cloud-amd64 6.12.119"):
        debian.release_built_from("linux-source-6.12", "cloud-amd64")
