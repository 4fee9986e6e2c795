"""Acceptance: every case of the ppc64le, s390x, aarch64 and loongarch64 corpora, as for x86_64.

The corpora sit beside the x86_64 one (``corpus_path().parent / ARCH``) with
the same layout and fields.  Each arch's cases run in one ``pykpatch diff
--batch`` process; ``ok`` cases must reproduce the reference's changed/new
functions, patched functions with sympos, livepatch symbols and function
count, and link with the arch's own ``ld -r`` (Debian's cross binutils;
Debian 12 has none for loongarch64, whose outputs are read back instead);
``fail`` cases must be refused with the reference's exit code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import corpus_path, load_cases

from pykpatch.arch import arch_named
from pykpatch.elf import read_elf
from pykpatch.elf.constants import STT

ARCHES = ("ppc64le", "s390x", "aarch64", "loongarch64")
# Inputs the shared corpus lacks: the case cannot run, and the own cross-compiled cases
# (tests/test_diff_cross.py) cover what it would (a changed __init function is refused).
MISSING_INPUTS = {("ppc64le", "meminfo-init"): "meminfo-init.PATCHED.FAIL.o"}
# Debian 12 ships cross binutils for these (binutils-ARCH-linux-gnu), not for loongarch64.
LINKERS = {"ppc64le": "powerpc64le-linux-gnu-ld", "s390x": "s390x-linux-gnu-ld", "aarch64": "aarch64-linux-gnu-ld"}


def arch_dir(arch: str) -> Path:
    return corpus_path().parent / arch


def _cases() -> list[tuple[str, str]]:
    found = []
    for arch in ARCHES:
        directory = arch_dir(arch)
        if not directory.is_dir():
            found.append((arch, "corpus-missing"))
            continue
        found += [(arch, name) for name in sorted(load_cases(directory)) if (arch, name) not in MISSING_INPUTS]
    return found


def patched_path(corpus: Path, name: str, case: dict) -> Path:
    fail = corpus / f"{name}.PATCHED.FAIL.o"
    return fail if case["expect"] == "fail" and fail.exists() else corpus / f"{name}.PATCHED.o"


def as_set(records) -> set[tuple]:
    return {(r["name"], r["objname"], r["sympos"]) if isinstance(r, dict) else tuple(r) for r in records}


@pytest.fixture(scope="module")
def batches(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """One batch process per arch, run once for the module."""
    runs = {}
    for arch in ARCHES:
        directory = arch_dir(arch)
        assert directory.is_dir(), f"{arch} corpus not found at {directory}"
        work = tmp_path_factory.mktemp(f"corpus-{arch}")
        empty = work / "Module.symvers"
        empty.write_text("")
        jobs = [{"orig": str(directory / f"{n}.ORIG.o"), "patched": str(patched_path(directory, n, c)),
                 "parent": "vmlinux", "output": str(work / f"{n}.o"), "report": str(work / f"{n}.json"),
                 "env": c["env"], "symtab": str(directory / f"{n}.ORIG.o"), "symvers": str(empty)}
                for n, c in load_cases(directory).items() if (arch, n) not in MISSING_INPUTS]
        (work / "jobs.json").write_text(json.dumps(jobs))
        proc = subprocess.run([sys.executable, "-m", "pykpatch.cli", "diff", "--batch", str(work / "jobs.json")],
                              check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        runs[arch] = (work, proc)
    return runs


@pytest.mark.parametrize("arch,name", _cases(), ids=[f"{a}/{n}" for a, n in _cases()])
def test_arch_corpus_case(arch, name, batches):
    assert name != "corpus-missing", f"{arch} corpus not found at {arch_dir(arch)}"
    work, proc = batches[arch]
    case = load_cases(arch_dir(arch))[name]
    assert "Traceback" not in proc.stderr
    report = json.loads((work / f"{name}.json").read_text())
    if case["expect"] != "ok":
        assert report["exit"] != 0
        if case.get("exit") in (2, 3):
            assert report["exit"] == case["exit"], report["errors"]
        return
    assert report["exit"] == 0, report["errors"]
    assert set(report["changed"]) == set(case["changed"])
    assert set(report["new"]) == set(case["new"])
    assert as_set(report["funcs"]) == as_set(case["funcs"])
    assert as_set(report["klp_symbols"]) == as_set(case["klp_symbols"])
    out = read_elf(work / f"{name}.o")
    assert sum(1 for s in out.symbols if s.type == STT.FUNC and s.section is not None) == case["num_funcs"]
    spec = arch_named(arch)
    assert spec is not None and out.machine == spec.machine
    assert out.layout.endian == ("big" if spec.big_endian else "little")  # s390x stays big endian
    linker = LINKERS.get(arch)
    if linker is not None:
        assert shutil.which(linker), f"{linker} is needed (apt-get install binutils-{linker.removesuffix('-ld')})"
        link = subprocess.run([linker, "-r", "-o", str(work / f"{name}.ld.o"), str(work / f"{name}.o")],
                              check=False, capture_output=True, text=True)
        assert link.returncode == 0, link.stderr


def test_corpus_gaps_are_the_known_ones():
    """The corpus inputs this suite cannot run are exactly those listed (a fixed corpus re-enables them)."""
    for (arch, name), missing in MISSING_INPUTS.items():
        assert name in load_cases(arch_dir(arch))
        assert not (arch_dir(arch) / missing).exists(), f"{arch}/{missing} is there now: remove it from MISSING_INPUTS"


def test_every_arch_batch_exit_code(batches):
    """Each batch exits with the most severe exit code of its pairs (1, then 2, then 3, then 0)."""
    for arch, (work, proc) in batches.items():
        exits = {json.loads(p.read_text())["exit"] for p in work.glob("*.json") if p.name != "jobs.json"}
        worst = next((code for code in (1, 2, 3) if code in exits), 0)
        assert proc.returncode == worst, (arch, proc.stderr[-2000:])
