"""Issue 6 acceptance: ``kpatch-build`` from a patch file to a live patch, in the lab kernel.

Each scenario is a real unified diff under ``tests/integration/patches/``
(``-p1`` from the top of the lab's 6.1 tree).  ``kpatch-build`` runs as a
subprocess on the lab tree against the lab snapshot's vmlinux; a module it
builds is then loaded into the snapshot kernel under QEMU (one boot per
scenario): insmod, transition done, new behaviour seen, disable, gone,
rmmod, old behaviour back, and no oops/WARN on the console.  Refused
scenarios must fail at build time with their reason and leave the tree
exactly as it was.

The original build is cached in ``CACHEDIR`` (``~/.cache/pykpatch/kpatch-lab``
unless ``PYKPATCH_KPATCH_CACHEDIR`` says otherwise): the first run on a
machine builds the tree with kpatch's flags (minutes), later runs reuse it.
The whole tree is inventoried before the first scenario and compared after
the last one (``test_tree_is_unchanged_after_the_suite``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pykpatch.kpatch_build.workspace import TreeWorkspace, tree_directory_lock
from pykpatch.lab import Step, insmod, read, rmmod, shell, wait_for, wait_until_gone, write
from pykpatch.lab.cache import UNPACK_STAMP

from .conftest import booter

PATCHES = Path(__file__).resolve().parents[1] / "integration" / "patches"
CACHE_ROOT = Path(os.environ.get("PYKPATCH_KPATCH_CACHEDIR", str(Path.home() / ".cache/pykpatch/kpatch-lab")))
# The lab kernels the whole suite runs on: Debian 12's 6.1, and 6.12 with IBT, call padding and
# call depth tracking (Debian 13's, Debian 12's backports).
SERIES = ("6.1", "6.12")


def patch_file(series: str, name: str) -> Path:
    """A scenario's patch for that kernel: patches/SERIES/NAME where the sources moved, else patches/NAME."""
    own = PATCHES / series / name
    return own if own.is_file() else PATCHES / name
BUILD_TIMEOUT = 3600  # a cold original build of the lab tree takes ~10 min on 2 loaded cores
BOOT_TIMEOUT = 120.0


# -- running kpatch-build ---------------------------------------------------------------

@dataclass
class Built:
    rc: int
    stdout: str
    stderr: str
    ko: Path | None
    seconds: float

    def _functions(self, kind: str) -> list[str]:
        """'obj: function' for each '<kind> function:' line, obj from the 'diff [i/n] obj' line above it."""
        found, obj = [], "?"
        for line in self.stderr.splitlines():
            m = re.match(r"^\[\s*[\d.]+s\]\s+diff \[\d+/\d+\] (\S+) \(parent", line)
            if m:
                obj = m.group(1)
            m = re.match(rf"^\[\s*[\d.]+s\]\s+{kind} function: (.+)$", line)
            if m:
                found.append(f"{obj}: {m.group(1).strip()}")
        return found

    @property
    def changed(self) -> list[str]:
        """'obj: function' of every changed function kpatch-build reported."""
        return self._functions("changed")

    @property
    def new(self) -> list[str]:
        return self._functions("new")

    @property
    def diffed(self) -> list[str]:
        """Objects that differed after the patched build (and were handed to the diff)."""
        return re.findall(r"^\[\s*[\d.]+s\]\s+diff \[\d+/\d+\] (\S+) \(parent", self.stderr, re.M)


def touched_by(patch: Path) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^\+\+\+ b/(\S+)", patch.read_text(), re.M)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


@dataclass
class TreeManifest:
    """What the suite must leave as it found it.

    ``names``: every file under the tree, build products included (a cached
    kpatch-build run must not create or delete any); ``sources``: size and
    mtime of every file the source tarball delivered (recognized by an mtime
    older than the lab's unpack stamp), so a source touched and not put back,
    even with identical content, shows; ``touched``: sha256 of each file a
    suite patch touches.
    """

    names: set[str]
    sources: dict[str, tuple[int, int]]
    touched: dict[str, str]

    @classmethod
    def take(cls, tree: Path, unpacked_at: float, touched: list[str]) -> TreeManifest:
        names: set[str] = set()
        sources: dict[str, tuple[int, int]] = {}
        for dirpath, _dirnames, filenames in os.walk(tree):
            for f in filenames:
                p = os.path.join(dirpath, f)
                rel = os.path.relpath(p, tree)
                names.add(rel)
                st = os.lstat(p)
                if st.st_mtime < unpacked_at:
                    sources[rel] = (st.st_size, st.st_mtime_ns)
        return cls(names, sources, {t: digest(tree / t) for t in touched})

    def differences(self, other: TreeManifest) -> list[str]:
        out = [f"new file: {n}" for n in sorted(other.names - self.names)]
        out += [f"file gone: {n}" for n in sorted(self.names - other.names)]
        out += [f"source changed (size, mtime): {n}" for n in sorted(self.sources)
                if other.sources.get(n) != self.sources[n]]
        out += [f"content changed: {n}" for n in sorted(self.touched) if other.touched.get(n) != self.touched[n]]
        return out


class KpatchBuild:
    """Runs kpatch-build on the lab tree, one scenario at a time."""

    def __init__(self, kernel, outdir: Path, series: str) -> None:
        self.kernel = kernel
        self.series = series
        self.cachedir = CACHE_ROOT / series
        self.tree: Path = kernel.tree
        self.outdir = outdir
        self.jobs = max(1, len(os.sched_getaffinity(0)))
        all_touched = sorted({f for p in PATCHES.glob("*.patch") for f in touched_by(p)})
        self.all_touched = all_touched
        self.unpacked_at = (kernel.cache_dir / UNPACK_STAMP).stat().st_mtime

    def manifest(self) -> TreeManifest:
        return TreeManifest.take(self.tree, self.unpacked_at, self.all_touched)

    def touched_state(self, files: list[str]) -> dict[str, tuple[str, int]]:
        return {f: (digest(self.tree / f), (self.tree / f).stat().st_mtime_ns if (self.tree / f).exists() else 0)
                for f in files}

    def run(self, name: str, *patches: str, debug: bool = False, extra: tuple[str, ...] = ()) -> Built:
        paths = [patch_file(self.series, p) for p in patches]
        files = sorted({f for p in paths for f in touched_by(p)})
        before = self.touched_state(files)
        cmd = [sys.executable, "-m", "pykpatch.cli", "build", "-s", str(self.tree), "-v", str(self.kernel.vmlinux),
               "-j", str(self.jobs), "-n", f"livepatch-{name}", "-o", str(self.outdir), *(["-d"] if debug else []), *extra, *map(str, paths)]
        env = {**os.environ, "CACHEDIR": str(self.cachedir)}
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT)
        seconds = time.monotonic() - started
        sys.stderr.write(f"\n[kpatch-build {name}: rc {proc.returncode} in {seconds:.0f} s]\n{proc.stderr}")
        # Success or failure, the patched files are back, content and mtime.
        assert self.touched_state(files) == before, f"kpatch-build {name} left {files} changed"
        journal = TreeWorkspace(self.cachedir, self.tree).journal_dir / "journal.json"
        assert not journal.exists(), "kpatch-build left its tree journal behind (the tree was not put back)"
        ko = self.outdir / f"livepatch-{name}.ko"
        return Built(proc.returncode, proc.stdout, proc.stderr, ko if ko.exists() else None, seconds)


def warm_original_build(kernel, cachedir: Path, progress: Callable[[str], None], arch: str | None = None) -> None:
    """Do (or reuse) the cached original build kpatch-build would do, before the inventory.

    kpatch-build's own stages before patching (check, which also puts back
    what a killed run left, then orig).  A first run on a fresh machine
    builds here (minutes), so the manifest is taken of the tree as every
    scenario will find it.
    """
    from pykpatch.kpatch_build.context import BuildOptions
    from pykpatch.kpatch_build.pipeline import prepare_tree

    prepare_tree(BuildOptions(patches=[], srcdir=kernel.tree, vmlinux=kernel.vmlinux, cachedir=cachedir, arch=arch),
                 progress)


@dataclass
class Suite:
    kb: KpatchBuild
    before: TreeManifest
    started: float
    progress: Callable[[str], None]
    results: dict[str, Built] = field(default_factory=dict)

    def manifest(self) -> TreeManifest:
        """The inventory, taken under kpatch-build's tree lock (no run has its patches applied)."""
        with tree_directory_lock(self.kb.tree, self.progress):
            return self.kb.manifest()


@pytest.fixture(scope="module", params=SERIES)
def suite(request, tmp_path_factory, pytestconfig) -> Suite:
    series = request.param
    kernel = request.getfixturevalue("lab_kernel" if series == "6.1" else "lab_kernel_612")

    def progress(msg: str) -> None:
        capman = pytestconfig.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            print(f"\n[kpatch-build suite {series}] {msg}", file=sys.stderr, end="", flush=True)

    kb = KpatchBuild(kernel, tmp_path_factory.mktemp(f"kpatch-build-{series}"), series)
    kb.cachedir.mkdir(parents=True, mode=0o700, exist_ok=True)
    warm_original_build(kernel, kb.cachedir, progress)
    with tree_directory_lock(kernel.tree, progress):
        before = kb.manifest()
    return Suite(kb, before, time.monotonic(), progress)


@pytest.fixture
def suite_boot(suite: Suite, tmp_path: Path):
    """Boot the suite's kernel (6.1 or 6.12) with steps."""
    return booter(suite.kb.kernel, tmp_path)


# -- the guest side ---------------------------------------------------------------------

def sysfs(name: str) -> str:
    return f"/sys/kernel/livepatch/livepatch_{name.replace('-', '_')}"


@dataclass
class Phases:
    """Outputs of the probe steps, by phase."""

    setup: list[str]
    before: list[str]
    during: list[str]
    disabled: list[str]
    after: list[str]
    console: str


@dataclass(frozen=True)
class Scenario:
    id: str
    patches: tuple[str, ...]
    before: tuple[Step, ...]                       # run before insmod, and again after rmmod
    during: tuple[Step, ...] | None = None         # while patched (default: same as before)
    check: Callable[[Phases], None] = lambda ph: None
    setup: tuple[Step, ...] = ()                   # first of all
    disabled: tuple[Step, ...] = ()                # after the patch is gone, before rmmod
    teardown: tuple[Step, ...] = ()
    modules: tuple[str, ...] = ()                  # lab modules copied into the guest
    changed: tuple[str, ...] | None = None         # exactly these 'obj: function' changed
    new: tuple[str, ...] = ()                      # at least these new functions
    diffed: tuple[str, ...] = ()                   # these objects differed (the scenario's premise)
    min_diffed: int = 0                            # at least that many objects differed
    same: Callable[[str], object] = lambda out: out  # what must be equal before and after


def lines(text: str, needle: str) -> list[str]:
    """Console/dmesg lines containing needle, without timestamps."""
    return [re.sub(r"^\[\s*[\d.]+\]\s*", "", ln).strip() for ln in text.splitlines() if needle in ln]


def index_of(text: str, needle: str) -> int:
    for i, ln in enumerate(text.splitlines()):
        if needle in ln:
            return i
    raise AssertionError(f"{needle!r} not on the console")


# Each check gets the probe outputs; "before == after" (old behaviour back) is
# asserted for every scenario unless its before probe is not repeatable.

def check_cmdline(suffix: str):
    def check(ph: Phases) -> None:
        assert ph.during[0] == ph.before[0].rstrip("\n") + f" {suffix}\n"
    return check


def check_meminfo(ph: Phases) -> None:
    assert re.search(r"^Pykpatch:\s+168 kB$", ph.during[0], re.M), ph.during[0]
    assert "Pykpatch" not in ph.before[0]
    assert ph.before[0].splitlines()[0].startswith("MemTotal:")


def check_new_function(ph: Phases) -> None:
    assert ph.during[0] == ph.before[0] + "pykpatch: new static function\n"


def check_new_global(ph: Phases) -> None:
    first = int(re.search(r"read (\d+) times", ph.during[0]).group(1))
    second = int(re.search(r"read (\d+) times", ph.during[4]).group(1))
    assert second - first == 3, (first, second)
    assert ph.during[1].endswith(ph.before[1])  # cmdline itself unchanged
    assert "pykpatch" not in ph.after[0]


def check_static_data(ph: Phases) -> None:
    words = [ln.split(": ")[1] for out in ph.during for ln in out.splitlines() if ln.startswith("pykpatch:")]
    assert words == ["beta", "gamma", "alpha", "beta"], words  # pykpatch_next starts at 1, initialized data
    assert all("pykpatch" not in out for out in ph.before + ph.after)
    assert all(re.fullmatch(r"\d+\.\d\d \d+\.\d\d\n", out) for out in ph.before + ph.after)


PCSPKR_DRIVER = "/sys/bus/platform/drivers/pcspkr"
INPUT_NAMES = "grep '^N: Name=' /proc/bus/input/devices"
REBIND = f"echo pcspkr > {PCSPKR_DRIVER}/unbind && echo pcspkr > {PCSPKR_DRIVER}/bind"


def speaker_lines(out: str) -> list[str]:
    """The PC speaker's input device (the PS/2 mouse may or may not have probed yet under TCG)."""
    return [ln for ln in out.splitlines() if "Speaker" in ln]


def check_pcspkr(ph: Phases) -> None:
    assert 'N: Name="PC Speaker"' in ph.before[1]
    assert 'N: Name="PC Speaker (pykpatch)"' in ph.during[1]
    assert "pykpatch" not in ph.disabled[0] + ph.after[1]


def check_shadow(ph: Phases) -> None:
    seqs = [int(re.search(r"pykpatch_fork_seq:\s+(\d+)", out).group(1)) for out in ph.during[:2]]
    assert 0 < seqs[0] < seqs[1], seqs
    assert ph.during[2] == "none\n"              # init was forked before the patch: no shadow
    assert ph.before[0] == ph.after[0] == "none\n"
    freed = lines(ph.console, "pykpatch-shadow: freed")
    assert len(freed) == 1 and int(re.search(r"freed (\d+)", freed[0]).group(1)) >= 2, freed


def check_callbacks_factory(name: str):
    modname = f"livepatch_{name.replace('-', '_')}"

    def check(ph: Phases) -> None:
        assert ph.during[0] == ph.before[0].rstrip("\n") + " pykpatch=callbacks\n"
        markers = [ln.split("pykpatch-cb: ")[1] for ln in lines(ph.console, "pykpatch-cb: ")]
        assert markers == ["pre_patch vmlinux", "post_patch vmlinux", "pre_unpatch vmlinux", "post_unpatch vmlinux"]
        c = ph.console
        assert (index_of(c, "pykpatch-cb: pre_patch") < index_of(c, f"'{modname}': starting patching transition")
                < index_of(c, "pykpatch-cb: post_patch") < index_of(c, f"'{modname}': patching complete")
                < index_of(c, "pykpatch-cb: pre_unpatch")
                < index_of(c, f"'{modname}': starting unpatching transition")
                < index_of(c, "pykpatch-cb: post_unpatch") < index_of(c, f"'{modname}': unpatching complete"))
    return check


def check_uname(ph: Phases) -> None:
    assert ph.before[0].startswith("Linux ")
    assert ph.during[0] == "Linux-pykpatch" + ph.before[0][len("Linux"):]


def check_static_local(ph: Phases) -> None:
    # setup wrote 4 unpatched: the kernel's message, and its static 'stfu' became 4
    assert len(lines(ph.console, "drop_caches: 4")) == 1
    # patched: a new static local counter, and the kernel's own 'stfu', not a fresh copy
    assert lines(ph.console, "pykpatch: drop_caches") == ["pykpatch: drop_caches call 1, stfu=4",
                                                          "pykpatch: drop_caches call 2, stfu=4"]


def check_header(ph: Phases) -> None:
    assert "PykpatchHugetlb:       none\n" in ph.during[0]
    assert "PykpatchHugetlb:\tnone\n" in ph.during[1]
    assert "Pykpatch" not in ph.before[0] + ph.before[1]


def check_two_patches(ph: Phases) -> None:
    assert ph.during[0] == ph.before[0].rstrip("\n") + " pykpatch=A pykpatch=B\n"
    assert ph.during[1] == ph.before[1] + "pykpatch: B\n"


MEMINFO = "cat /proc/meminfo"
STATUS = "cat /proc/self/status"


def field_names(out: str) -> list[str]:
    """/proc/meminfo, /proc/PID/status: the fields, not their (changing) values."""
    return [ln.split(":")[0] for ln in out.splitlines()]

SCENARIOS = [
    Scenario("01-cmdline-string", ("01-cmdline-string.patch",), (read("/proc/cmdline"),),
             check=check_cmdline("pykpatch=cmdline"), changed=("fs/proc/cmdline.o: cmdline_proc_show",)),
    Scenario("02-meminfo", ("02-meminfo.patch",), (shell(MEMINFO),), check=check_meminfo, same=field_names,
             changed=("fs/proc/meminfo.o: meminfo_proc_show",)),
    Scenario("03-new-static-function", ("03-new-static-function.patch",), (read("/proc/version"),),
             check=check_new_function, changed=("fs/proc/version.o: version_proc_show",),
             new=("fs/proc/version.o: version_pykpatch_note",)),
    Scenario("04-new-global", ("04-new-global-two-objects.patch",),
             (read("/proc/version"), read("/proc/cmdline")),
             during=(read("/proc/version"), read("/proc/cmdline"), read("/proc/cmdline"), read("/proc/cmdline"),
                     read("/proc/version")),
             check=check_new_global),
    Scenario("05-new-static-data", ("05-new-static-data.patch",), (read("/proc/uptime"),),
             during=(read("/proc/uptime"),) * 4, check=check_static_data),
    Scenario("06-module-pcspkr", ("06-module-pcspkr.patch",), (shell(REBIND), shell(INPUT_NAMES)),
             check=check_pcspkr, setup=(insmod("pcspkr"),), same=speaker_lines,
             # the device's name is a string of the livepatch module: rebind before it goes
             disabled=(shell(f"{REBIND} && {INPUT_NAMES}"),), teardown=(rmmod("pcspkr"),), modules=("pcspkr",),
             changed=("drivers/input/misc/pcspkr.o: pcspkr_probe",)),
    Scenario("07-shadow-fork", ("07-shadow-fork.patch",),
             (shell("grep pykpatch_fork_seq /proc/self/status || echo none"),),
             during=(shell("grep pykpatch_fork_seq /proc/self/status"),
                     shell("grep pykpatch_fork_seq /proc/self/status"),
                     shell("grep pykpatch_fork_seq /proc/1/status || echo none")),
             check=check_shadow),
    Scenario("08-callbacks", ("08-callbacks.patch",), (read("/proc/cmdline"),),
             check=check_callbacks_factory("08-callbacks"),
             changed=("fs/proc/cmdline.o: cmdline_proc_show",)),
    Scenario("09-syscall-uname", ("09-syscall-uname.patch",), (shell("uname -a"),), check=check_uname,
             changed=("kernel/sys.o: __x64_sys_newuname",)),
    Scenario("10-static-local", ("10-static-local.patch",), (),
             during=(write("/proc/sys/vm/drop_caches", "4"), write("/proc/sys/vm/drop_caches", "4")),
             setup=(write("/proc/sys/vm/drop_caches", "4"),), disabled=(write("/proc/sys/vm/drop_caches", "4"),),
             check=check_static_local, changed=("fs/drop_caches.o: drop_caches_sysctl_handler",)),
    # Lines added in hugetlb.h move the line numbers of BUG() sites of its
    # inlines in many objects: those differ, yet only the two users change.
    Scenario("11-header-inline", ("11-header-inline.patch",), (shell(MEMINFO), shell(STATUS)),
             check=check_header, same=field_names, min_diffed=10,
             changed=("fs/proc/meminfo.o: meminfo_proc_show", "fs/proc/task_mmu.o: task_mem")),
    Scenario("12-two-patches", ("12a-first-of-two.patch", "12b-second-of-two.patch"),
             (read("/proc/cmdline"), read("/proc/version")), check=check_two_patches,
             changed=("fs/proc/cmdline.o: cmdline_proc_show", "fs/proc/version.o: version_proc_show")),
    Scenario("16b-warn-lines-and-change", ("16b-warn-lines-and-real-change.patch",), (read("/proc/cmdline"),),
             check=check_cmdline("pykpatch=warnlines"), changed=("fs/proc/cmdline.o: cmdline_proc_show",),
             diffed=("fs/proc/generic.o",)),
]


def run_scenario(sc: Scenario, built: Built, lab_boot) -> Phases:
    name = sc.id
    sys_dir = sysfs(name)
    during = sc.during if sc.during is not None else sc.before
    plan: list[tuple[str, Step]] = []
    plan += [("setup", s) for s in sc.setup]
    plan += [("before", s) for s in sc.before]
    plan += [("load", insmod(built.ko)), ("transition", wait_for(f"{sys_dir}/transition", "0")),
             ("enabled", read(f"{sys_dir}/enabled"))]
    plan += [("during", s) for s in during]
    plan += [("disable", write(f"{sys_dir}/enabled", "0")), ("gone", wait_until_gone(sys_dir))]
    plan += [("disabled", s) for s in sc.disabled]
    plan += [("rmmod", rmmod(f"livepatch-{name}")), ("lsmod", shell("lsmod"))]
    plan += [("after", s) for s in sc.before]
    plan += [("teardown", s) for s in sc.teardown]
    result = lab_boot([s for _, s in plan], modules=[built.ko, *sc.modules], timeout=BOOT_TIMEOUT)
    assert result.ok, result.failures()
    assert not (result.panicked or result.oopsed or result.warned or result.call_trace), result.trouble.lines
    out: dict[str, list[str]] = {}
    for (phase, _), step in zip(plan, result.steps, strict=True):
        out.setdefault(phase, []).append(step.output)
    modname = f"livepatch_{name.replace('-', '_')}"
    assert out["transition"] == ["0\n"] and out["enabled"] == ["1\n"]
    assert modname not in out["lsmod"][0]
    assert f"livepatch: '{modname}': patching complete" in result.console
    assert f"livepatch: '{modname}': unpatching complete" in result.console
    return Phases(out.get("setup", []), out.get("before", []), out.get("during", []), out.get("disabled", []),
                  out.get("after", []), result.console)


def build_scenario(sc: Scenario, suite: Suite) -> Built:
    """kpatch-build of a scenario's patches: it succeeds, prints the module, changes what the scenario says."""
    built = suite.kb.run(sc.id, *sc.patches)
    suite.results[sc.id] = built
    assert built.rc == 0, built.stderr[-3000:]
    assert built.ko is not None and built.stdout.strip() == str(built.ko)
    if sc.changed is not None:
        assert sorted(built.changed) == sorted(sc.changed), built.changed
    for fn in sc.new:
        assert fn in built.new, built.new
    return built


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_patch_builds_loads_and_unloads(sc: Scenario, suite: Suite, suite_boot):
    built = build_scenario(sc, suite)
    assert set(sc.diffed) <= set(built.diffed) and len(built.diffed) >= sc.min_diffed, built.diffed
    ph = run_scenario(sc, built, suite_boot)
    if sc.id != "05-new-static-data":
        assert [sc.same(o) for o in ph.after] == [sc.same(o) for o in ph.before], "old behaviour not back"
    sc.check(ph)


# -- what kpatch-build refuses ------------------------------------------------------------

@dataclass(frozen=True)
class Refusal:
    id: str
    patch: str
    rc: int
    reasons: tuple[str, ...]       # regexes, each must match stderr
    debug: bool = False            # keep kpatch-build's scratch directory (the objects) for the test


REFUSALS = [
    Refusal("13-init-code", "13-refused-init.patch", 2, (r"fs/proc/cmdline\.o: .*(__init|\.init\.text)",)),
    Refusal("14-global-initializer", "14-refused-global-initializer.patch", 2, (r"kernel/sys\.o: .*overflowuid",)),
    Refusal("15-does-not-apply", "15-refused-does-not-apply.patch", 1,
            (r"15-refused-does-not-apply\.patch does not apply",)),
    Refusal("16-warn-lines-only", "16-refused-warn-lines-only.patch", 3, (r"no change",), debug=True),
    # issue 9, defect 10: a real change beside a header that changes get_device's genksyms CRC
    Refusal("17-export-crc", "17-refused-export-crc.patch", 2,
            (r"drivers/base/core\.o: the patch changes the version CRC of exported symbol get_device "
             r"\(0x[0-9a-f]{8} -> 0x[0-9a-f]{8}\)", r"version CRC of \d+ exported symbol\(s\): .*get_device")),
    # issue 9, defect 12: a failed compile; the suite's final inventory checks no .cmdline.o.d is left
    Refusal("18-compile-error", "18-refused-compile-error.patch", 1, (r"patched build failed \(make exit 2\)",)),
    # issue 9, defect 11: nothing but a callback, in replace mode
    Refusal("19-callback-only", "19-refused-callback-only.patch", 2,
            (r"patches no function", r"--non-replace")),
]


@pytest.mark.parametrize("ref", REFUSALS, ids=[r.id for r in REFUSALS])
def test_refused_at_build_time(ref: Refusal, suite: Suite):
    built = suite.kb.run(ref.id, ref.patch, debug=ref.debug)
    suite.results[ref.id] = built
    kept = re.search(r"scratch directory kept: (\S+)", built.stderr)
    scratch = Path(kept.group(1)) if kept else None
    try:
        _check_refusal(ref, built, scratch)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _check_refusal(ref: Refusal, built: Built, scratch: Path | None) -> None:
    assert built.rc == ref.rc, built.stderr[-3000:]
    assert built.ko is None
    for pattern in ref.reasons:
        assert re.search(pattern, built.stderr, re.I), (pattern, built.stderr[-3000:])
    assert "Traceback" not in built.stderr
    if ref.id == "16-warn-lines-only":
        # the premise: the blank lines did change the object (WARN line numbers), and the diff saw it
        assert built.diffed == ["fs/proc/generic.o"], built.stderr
        assert built.changed == [] and built.new == []
        from pykpatch.elf.reader import read_elf

        assert scratch is not None, built.stderr
        orig, patched = ({s.name: s.data for s in read_elf(scratch / kind / "fs/proc/generic.o").sections}
                         for kind in ("orig", "patched"))
        assert orig["__bug_table"] != patched["__bug_table"]          # the WARN sites' line numbers moved
        text = sorted(n for n in orig if n.startswith(".text"))
        assert text and text == sorted(n for n in patched if n.startswith(".text"))
        assert all(orig[n] == patched[n] for n in text)               # and not one instruction changed


def test_callback_only_patch_builds_with_non_replace(suite: Suite, suite_boot):
    """The refusal of 19-callback-only has its way out: stacked (-R), it loads, runs its callback, unloads."""
    name = "19-callback-only-stacked"
    built = suite.kb.run(name, "19-refused-callback-only.patch", extra=("--non-replace",))
    suite.results[name] = built
    assert built.rc == 0 and built.ko is not None, built.stderr[-3000:]
    sys_dir = sysfs(name)
    result = suite_boot([insmod(built.ko), wait_for(f"{sys_dir}/transition", "0"), write(f"{sys_dir}/enabled", "0"),
                       wait_until_gone(sys_dir), rmmod(f"livepatch-{name}")], modules=[built.ko], timeout=BOOT_TIMEOUT)
    assert result.ok, result.failures()
    assert len(lines(result.console, "pykpatch-cb: callback only")) == 1


def check_tree_unchanged(suite: Suite, label: str) -> None:
    """No .orig/.rej left and the tree as it was before the suite; then report the suite's times."""
    after = suite.manifest()
    assert not [n for n in after.names if n.endswith((".orig", ".rej"))]
    assert suite.before.differences(after) == []
    sys.stderr.write(f"\n[{label}: {time.monotonic() - suite.started:.0f} s, "
                     + ", ".join(f"{k} {v.seconds:.0f}s" for k, v in suite.results.items()) + "]\n")


def test_tree_is_unchanged_after_the_suite(suite: Suite):
    check_tree_unchanged(suite, "kpatch-build suite")


# -- the include path of kpatch-macros.h ---------------------------------------------------

def test_kpatch_macros_reach_compiles_without_changing_kcflags(tmp_path):
    """kpatch-macros.h is found through CPATH (even with -nostdinc); KCFLAGS, part of the cache key, is untouched."""
    from pykpatch.kbuild.tree import KPATCH_CFLAGS, data_dir, patch_author_env

    assert KPATCH_CFLAGS == "-ffunction-sections -fdata-sections"
    src = tmp_path / "t.c"
    src.write_text('#include "kpatch-macros.h"\n')
    proc = subprocess.run(["gcc", "-nostdinc", "-M", "-MG", str(src)], env={**os.environ, **patch_author_env()},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert str(data_dir() / "kpatch-macros.h") in proc.stdout.replace("\\\n", " ")


def test_relative_patch_paths_apply(tmp_path, monkeypatch):
    """kpatch-build fix.patch: patch runs with -d SCRATCH, so a relative path must not be read from there."""
    from pykpatch.kpatch_build.patches import dry_run, parse_patch

    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d/f.c").write_text("a\nb\n")
    (tmp_path / "fix.patch").write_text("--- a/d/f.c\n+++ b/d/f.c\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n")
    monkeypatch.chdir(tmp_path)
    assert dry_run(tree, [parse_patch(Path("fix.patch"))], tmp_path / "scratch") == {"d/f.c": b"a\nc\n"}
