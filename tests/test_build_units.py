"""kpatch-build pieces that need no kernel: patch files, crash recovery, kbuild .cmd parsing."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from pykpatch.kpatch_build.patches import (
    STATE_FILE,
    PatchError,
    PatchSession,
    check_supported,
    recover_leftover,
    touched_files,
)
from pykpatch.kpatch_build.tree import ObjectIndex, parse_cmd_file

ORIGINAL = "int f(void)\n{\n\treturn 1;\n}\n"
PATCHED = "int f(void)\n{\n\treturn 2;\n}\n"


def make_patch(tmp: Path, name: str, rel: str, before: str, after: str) -> Path:
    a, b = tmp / "mk" / "a" / rel, tmp / "mk" / "b" / rel
    a.parent.mkdir(parents=True, exist_ok=True)
    b.parent.mkdir(parents=True, exist_ok=True)
    a.write_text(before)
    b.write_text(after)
    proc = subprocess.run(["diff", "-u", f"a/{rel}", f"b/{rel}"], cwd=tmp / "mk", capture_output=True, text=True)
    patch = tmp / name
    patch.write_text(proc.stdout)
    return patch


@pytest.fixture
def tree(tmp_path):
    t = tmp_path / "tree"
    (t / "kernel").mkdir(parents=True)
    src = t / "kernel" / "f.c"
    src.write_text(ORIGINAL)
    os.utime(src, ns=(1_000_000_000, 1_000_000_000))
    return t


def test_touched_files_of_git_and_plain_diffs(tmp_path):
    p = tmp_path / "x.patch"
    p.write_text(textwrap.dedent("""\
        diff --git a/fs/proc/cmdline.c b/fs/proc/cmdline.c
        --- a/fs/proc/cmdline.c
        +++ b/fs/proc/cmdline.c
        @@ -1 +1 @@
        -a
        +b
        --- a/include/linux/x.h\t2024-01-01
        +++ b/include/linux/x.h\t2024-01-02
        @@ -1 +1 @@
        -a
        +b
        """))
    assert touched_files(p) == ["fs/proc/cmdline.c", "include/linux/x.h"]


def test_not_a_patch_is_refused(tmp_path):
    p = tmp_path / "x.patch"
    p.write_text("hello\n")
    with pytest.raises(PatchError, match="not a unified diff"):
        touched_files(p)


@pytest.mark.parametrize("path,word", [
    ("arch/x86/entry/entry_64.S", "assembly"),
    ("arch/x86/entry/vdso/vclock_gettime.c", "vDSO"),
    ("scripts/mod/modpost.c", "not kernel code"),
    ("kernel/Makefile", "build configuration"),
])
def test_unsupported_files_are_refused_with_a_reason(path, word):
    with pytest.raises(PatchError, match=word):
        check_supported(Path("fix.patch"), [path])


def test_apply_and_revert_restore_content_and_mtime(tree, tmp_path):
    patch = make_patch(tmp_path, "fix.patch", "kernel/f.c", ORIGINAL, PATCHED)
    state_dir = tmp_path / "cache"
    state_dir.mkdir()
    session = PatchSession(tree, [patch], state_dir)
    assert session.check() == ["kernel/f.c"]
    assert (tree / "kernel/f.c").read_text() == ORIGINAL  # the dry run does not touch the tree
    session.apply()
    assert (tree / "kernel/f.c").read_text() == PATCHED
    assert (state_dir / STATE_FILE).exists()
    session.revert()
    assert (tree / "kernel/f.c").read_text() == ORIGINAL
    assert (tree / "kernel/f.c").stat().st_mtime_ns == 1_000_000_000
    assert not (state_dir / STATE_FILE).exists()
    assert sorted(p.name for p in (tree / "kernel").iterdir()) == ["f.c"]  # no .orig / .rej left


def test_patch_that_does_not_apply_is_refused_before_touching_the_tree(tree, tmp_path):
    patch = make_patch(tmp_path, "bad.patch", "kernel/f.c", "int g(void);\n", "int h(void);\n")
    state_dir = tmp_path / "cache"
    state_dir.mkdir()
    with pytest.raises(PatchError, match="does not apply"):
        PatchSession(tree, [patch], state_dir).check()
    assert (tree / "kernel/f.c").read_text() == ORIGINAL
    assert (tree / "kernel/f.c").stat().st_mtime_ns == 1_000_000_000


def test_two_patches_apply_in_order(tree, tmp_path):
    third = "int f(void)\n{\n\treturn 3;\n}\n"
    p1 = make_patch(tmp_path, "1.patch", "kernel/f.c", ORIGINAL, PATCHED)
    p2 = make_patch(tmp_path, "2.patch", "kernel/f.c", PATCHED, third)
    state_dir = tmp_path / "cache"
    state_dir.mkdir()
    session = PatchSession(tree, [p1, p2], state_dir)
    session.check()
    session.apply()
    assert (tree / "kernel/f.c").read_text() == third
    session.revert()
    assert (tree / "kernel/f.c").read_text() == ORIGINAL


def test_leftover_of_a_killed_run_is_reverted(tree, tmp_path):
    patch = make_patch(tmp_path, "fix.patch", "kernel/f.c", ORIGINAL, PATCHED)
    state_dir = tmp_path / "cache"
    state_dir.mkdir()
    PatchSession(tree, [patch], state_dir).apply()  # ... and the process dies here (SIGKILL)
    note = recover_leftover(state_dir)
    assert note and "reverted 1 patch" in note
    assert (tree / "kernel/f.c").read_text() == ORIGINAL
    # the file is now newer than anything built from it: make will rebuild stale objects
    assert (tree / "kernel/f.c").stat().st_mtime_ns > 1_000_000_000
    assert recover_leftover(state_dir) is None


def test_recorded_but_never_applied_patch_is_fine(tree, tmp_path):
    patch = make_patch(tmp_path, "fix.patch", "kernel/f.c", ORIGINAL, PATCHED)
    state_dir = tmp_path / "cache"
    state_dir.mkdir()
    session = PatchSession(tree, [patch], state_dir)
    session.state.patches.append(str(patch))
    session.state.mtimes["kernel/f.c"] = [1_000_000_000, 1_000_000_000]
    session.state.save(state_dir / STATE_FILE)  # killed between recording and applying
    assert recover_leftover(state_dir)
    assert (tree / "kernel/f.c").read_text() == ORIGINAL


CMD = """\
cmd_fs/proc/cmdline.o := gcc -c -o fs/proc/cmdline.o fs/proc/cmdline.c

source_fs/proc/cmdline.o := fs/proc/cmdline.c

deps_fs/proc/cmdline.o := \\
  include/linux/compiler-version.h \\
    $(wildcard include/config/CC_VERSION_TEXT) \\
  include/linux/seq_file.h \\
  fs/proc/internal.h \\

fs/proc/cmdline.o: $(deps_fs/proc/cmdline.o)

$(deps_fs/proc/cmdline.o):
"""


def test_cmd_file_parsing():
    obj, source, deps = parse_cmd_file(CMD)
    assert (obj, source) == ("fs/proc/cmdline.o", "fs/proc/cmdline.c")
    assert deps == {"include/linux/compiler-version.h", "include/linux/seq_file.h", "fs/proc/internal.h"}


def test_objects_for_sources_and_headers(tmp_path):
    (tmp_path / "fs/proc").mkdir(parents=True)
    (tmp_path / "fs/proc/.cmdline.o.cmd").write_text(CMD)
    (tmp_path / "fs/proc/cmdline.c").write_text("")
    index = ObjectIndex(tmp_path)
    found = index.objects_for(["fs/proc/cmdline.c", "include/linux/seq_file.h", "include/linux/other.h"])
    assert found == {"fs/proc/cmdline.c": ["fs/proc/cmdline.o"], "include/linux/seq_file.h": ["fs/proc/cmdline.o"],
                     "include/linux/other.h": []}


def test_objects_of_other_images_are_left_alone():
    from pykpatch.kpatch_build.pipeline import split_other_images

    kernel, other = split_other_images(["lib/string.o", "arch/x86/boot/compressed/string.o",
                                        "arch/x86/purgatory/purgatory.o", "arch/x86/entry/vdso/vgetcpu.o",
                                        "drivers/input/joydev.o"])
    assert kernel == ["lib/string.o", "drivers/input/joydev.o"]
    assert other == ["arch/x86/boot/compressed/string.o", "arch/x86/purgatory/purgatory.o",
                     "arch/x86/entry/vdso/vgetcpu.o"]
