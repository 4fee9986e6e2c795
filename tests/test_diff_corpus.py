"""Acceptance: every case of the kernel object corpus, as the corpus README describes.

Parent symbol table = the ORIG object, parent ``vmlinux``, empty
Module.symvers, the case's struct sizes.  ``ok`` cases must reproduce the
reference tool's changed/new/funcs/klp_symbols and function count; ``fail``
cases must be refused with the reference's exit code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import corpus_path, load_cases

from pykpatch.elf import read_elf
from pykpatch.elf.constants import STT

CASES = load_cases(corpus_path()) if corpus_path().is_dir() else {"corpus-missing": None}


def patched_path(corpus: Path, name: str, case: dict) -> Path:
    if case["expect"] == "fail":
        fail = corpus / f"{name}.PATCHED.FAIL.o"
        if fail.exists():
            return fail
    return corpus / f"{name}.PATCHED.o"


def as_set(records) -> set[tuple]:
    return {(r["name"], r["objname"], r["sympos"]) if isinstance(r, dict) else tuple(r) for r in records}


def defined_functions(path: Path) -> int:
    obj = read_elf(path)
    return sum(1 for s in obj.symbols if s.type == STT.FUNC and s.section is not None)


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory, corpus_dir):
    """All cases in one ``pykpatch diff --batch`` process, as a build would run them."""
    work = tmp_path_factory.mktemp("corpus-batch")
    empty = work / "Module.symvers"
    empty.write_text("")
    jobs = []
    for name, case in load_cases(corpus_dir).items():
        orig = corpus_dir / f"{name}.ORIG.o"
        jobs.append({
            "orig": str(orig), "patched": str(patched_path(corpus_dir, name, case)), "parent": "vmlinux",
            "output": str(work / f"{name}.o"), "report": str(work / f"{name}.json"),
            "env": case["env"], "symtab": str(orig), "symvers": str(empty),
        })
    (work / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, "-m", "pykpatch.cli", "diff", "--batch", str(work / "jobs.json")],
                          capture_output=True, text=True)
    return work, proc


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_case(name, batch_run, corpus_cases):
    work, proc = batch_run
    case = corpus_cases[name]
    assert "Traceback" not in proc.stderr
    report = json.loads((work / f"{name}.json").read_text())
    if case["expect"] == "ok":
        assert report["exit"] == 0, report["errors"]
        assert set(report["changed"]) == set(case["changed"])
        assert set(report["new"]) == set(case["new"])
        assert as_set(report["funcs"]) == as_set(case["funcs"])
        assert as_set(report["klp_symbols"]) == as_set(case["klp_symbols"])
        out = work / f"{name}.o"
        assert defined_functions(out) == case["num_funcs"]
        link = subprocess.run(["ld", "-r", "-o", str(work / f"{name}.ld.o"), str(out)], capture_output=True, text=True)
        assert link.returncode == 0, link.stderr
    else:
        assert report["exit"] != 0
        if case.get("exit") in (2, 3):
            assert report["exit"] == case["exit"], report["errors"]


def test_batch_exit_code_is_most_severe(batch_run):
    _, proc = batch_run
    # The corpus holds ok (0), no-change (3) and unsupported (2) cases: 2 wins.
    assert proc.returncode == 2, proc.stderr[-2000:]


def test_single_pair_cli_reports_reasons(corpus_dir, tmp_path):
    """An unsupported change exits 2 and names the section on stderr, one reason per line."""
    orig = corpus_dir / "meminfo-init.ORIG.o"
    empty = tmp_path / "Module.symvers"
    empty.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "pykpatch.cli", "diff", str(orig), str(corpus_dir / "meminfo-init.PATCHED.FAIL.o"),
         "--symtab", str(orig), "--symvers", str(empty), "-o", str(tmp_path / "out.o"),
         "--report", str(tmp_path / "r.json")],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **load_cases(corpus_dir)["meminfo-init"]["env"]},
    )
    assert proc.returncode == 2
    assert ".init.text" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.o").exists()
    report = json.loads((tmp_path / "r.json").read_text())
    assert any(".init.text" in e for e in report["errors"])


def test_missing_struct_size_is_a_clear_error(corpus_dir, tmp_path):
    orig = corpus_dir / "bug-table-section.ORIG.o"
    proc = subprocess.run(
        [sys.executable, "-m", "pykpatch.cli", "diff", str(orig), str(corpus_dir / "bug-table-section.PATCHED.o"),
         "--symtab", str(orig), "-o", str(tmp_path / "out.o")],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    assert "BUG_STRUCT_SIZE" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_jump_label_keyed_in_a_module_is_refused(corpus_dir, tmp_path):
    """kpatch #946: a jump label whose static key lives in a module cannot be applied late."""
    case = load_cases(corpus_dir)["jump-label-issue-946"]
    orig = corpus_dir / "jump-label-issue-946.ORIG.o"
    symvers = tmp_path / "Module.symvers"
    lines = [f"0x00000000\t{name}\tdrivers/foo/foo\tEXPORT_SYMBOL_GPL\t"
             for name in ("memcg_kmem_enabled_key", "memory_cgrp_subsys_enabled_key")]
    symvers.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pykpatch.cli", "diff", str(orig), str(corpus_dir / "jump-label-issue-946.PATCHED.o"),
         "--symtab", str(orig), "--symvers", str(symvers), "-o", str(tmp_path / "out.o")],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **case["env"]},
    )
    assert proc.returncode == 2, proc.stderr
    assert "jump label" in proc.stderr and "defined in a module" in proc.stderr
