"""The one make runner (pykpatch.kbuild.make), with real make on small Makefiles."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pykpatch.errors import KbuildError
from pykpatch.kbuild.make import run_make


def makefile(tmp_path: Path, body: str) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    (tree / "Makefile").write_text(body)
    return tree


def test_compiles_are_counted_and_logged(tmp_path):
    tree = makefile(tmp_path, "all:\n\t@echo '  CC      kernel/fork.o'\n\t@echo '  CC [M]  drivers/x.o'\n"
                              "\t@echo '  LD      vmlinux'\n")
    log = tmp_path / "build.log"
    said: list[str] = []
    run = run_make(tree, ["all"], log=log, what="test build", progress=said.append)
    assert run.returncode == 0 and run.compiled == 2
    assert said[-1].startswith("test build: done, 2 files compiled")
    assert "===== test build: make -C" in log.read_text() and "CC [M]  drivers/x.o" in log.read_text()


def test_user_variables_that_redirect_kbuild_are_removed_and_logged(tmp_path, monkeypatch):
    for name, value in (("O", "/elsewhere"), ("KBUILD_OUTPUT", "/elsewhere"), ("M", "/ext"),
                        ("MAKEFLAGS", "-k"), ("KCFLAGS", "-O0")):
        monkeypatch.setenv(name, value)
    tree = makefile(tmp_path, "all:\n\t@echo \"O=[$$O] KBO=[$$KBUILD_OUTPUT] M=[$$M] KC=[$$KCFLAGS] LC=[$$LC_ALL]\"\n")
    log = tmp_path / "build.log"
    run = run_make(tree, ["all"], log=log, what="t", capture=True)
    assert "O=[] KBO=[] M=[] KC=[] LC=[C]" in run.output
    assert "removed from the environment for kbuild: KBUILD_OUTPUT, KCFLAGS, M, MAKEFLAGS, O" in log.read_text()


def test_make_never_waits_on_a_terminal(tmp_path):
    tree = makefile(tmp_path, "all:\n\t@read answer; echo \"got [$$answer]\"\n")
    run = run_make(tree, ["all"], log=tmp_path / "log", what="t", capture=True, timeout=30)
    assert "got []" in run.output


def test_failure_names_the_log_and_the_first_error(tmp_path):
    tree = makefile(tmp_path, "all:\n\t@echo 'kernel/a.c:1:2: error: oops'; exit 2\n")
    log = tmp_path / "build.log"
    with pytest.raises(KbuildError) as err:
        run_make(tree, ["all"], log=log, what="patched build")
    assert str(log) in err.value.message and "patched build failed" in err.value.message
    assert err.value.hint == "kernel/a.c:1:2: error: oops"


def test_a_silent_hang_is_stopped_by_the_timeout(tmp_path):
    tree = makefile(tmp_path, "all:\n\t@sleep 60\n")
    started = time.monotonic()
    with pytest.raises(KbuildError, match="did not finish in 1 s"):
        run_make(tree, ["all"], log=tmp_path / "log", what="t", timeout=1)
    assert time.monotonic() - started < 30


def test_interrupt_waits_for_make_to_finish_its_cleanup(tmp_path):
    """Issue 9, defect 1: pykpatch restored the tree while make was still exiting (and deleting its target).

    This make traps SIGTERM and takes a second to clean up, as make does when
    it deletes a half-written target.  run_make must return only after that.
    """
    marker = tmp_path / "cleaned-up"
    tree = makefile(tmp_path, f"all:\n\t@trap 'sleep 1; touch {marker}; exit 1' TERM; echo '  CC      x.o'; "
                              "while :; do sleep 0.05; done\n")
    pgids: list[int] = []

    def interrupt(message: str) -> None:
        if "1 files compiled" in message:  # the recipe runs (and has set its trap): Ctrl-C now
            raise KeyboardInterrupt

    import pykpatch.kbuild.make as make_mod

    with pytest.raises(KeyboardInterrupt):
        original = make_mod.PROGRESS_INTERVAL
        make_mod.PROGRESS_INTERVAL = 0.0
        try:
            run_make(tree, ["all"], log=tmp_path / "log", what="t", progress=interrupt, on_start=pgids.append)
        finally:
            make_mod.PROGRESS_INTERVAL = original
    assert marker.exists(), "run_make returned before make had finished cleaning up"
    with pytest.raises(ProcessLookupError):
        os.killpg(pgids[0], 0)
