"""kpatch-build pieces that need no kernel: patch files, the tree journal, the cache, kbuild .cmd parsing.

Each test named for a defect of issue 9 fails on the code before the fix
(checked by running it against the old tree) and passes after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from pykpatch.errors import CacheError, PatchError, TreeError
from pykpatch.kbuild.objects import ObjectIndex, parse_cmd_file
from pykpatch.kpatch_build.journal import TreeJournal
from pykpatch.kpatch_build.kmod import default_module_name, module_name_string
from pykpatch.kpatch_build.patches import apply_result, check_in_tree, dry_run, parse_patch, touched_files
from pykpatch.kpatch_build.workspace import TreeWorkspace
from pykpatch.safeio import atomic_write, exclusive_lock

ORIGINAL = "int f(void)\n{\n\treturn 1;\n}\n"
PATCHED = "int f(void)\n{\n\treturn 2;\n}\n"
OLD_NS = 1_000_000_000


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


def raw_patch(tmp: Path, name: str, old: str, new: str, body: str = "@@ -1 +1 @@\n-a\n+b\n") -> Path:
    patch = tmp / name
    patch.write_text(f"--- {old}\n+++ {new}\n{body}")
    return patch


@pytest.fixture
def tree(tmp_path):
    """A minimal "kernel tree": enough for the checks that come before any compile."""
    t = tmp_path / "tree"
    (t / "kernel").mkdir(parents=True)
    (t / "Makefile").write_text("# not a real kernel\n")
    src = t / "kernel" / "f.c"
    src.write_text(ORIGINAL)
    os.utime(src, ns=(OLD_NS, OLD_NS))
    return t


def run_kpatch_build(tree: Path, cache: Path, *patches: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CACHEDIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "pykpatch.cli", "build", "-s", str(tree), *map(str, patches)],
                          capture_output=True, text=True, env=env, timeout=120)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = (p.read_bytes() if not p.is_symlink() else b"->", p.lstat().st_mtime_ns)
    return out


# -- reading patches --------------------------------------------------------------------------

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


def test_quoted_git_names_are_read_as_git_writes_them(tmp_path):
    p = raw_patch(tmp_path, "q.patch", '"a/fs/na\\303\\257ve.c"', '"b/fs/na\\303\\257ve.c"')
    assert touched_files(p) == ["fs/na\u00efve.c"]


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
    ("drivers/Kconfig", "build configuration"),
    ("arch/x86/kernel/vmlinux.lds.S", "assembly|linker script"),
    (".config", "configuration"),
    ("include/generated/autoconf.h", "generated"),
])
def test_unsupported_files_are_refused_with_a_reason(tmp_path, path, word):
    p = raw_patch(tmp_path, "fix.patch", f"a/{path}", f"b/{path}")
    with pytest.raises(PatchError, match=word):
        parse_patch(p)


def test_dot_dot_path_is_refused_before_anything_is_copied(tree, tmp_path):
    """Issue 9, defect 3: a ../ name made the dry run copy files outside its scratch directory."""
    outside = tmp_path / "outside.c"
    patch = tmp_path / "evil.patch"
    patch.write_text("--- a/kernel/f.c\n+++ b/kernel/f.c\n@@ -1 +1 @@\n-int f(void)\n+int g(void)\n"
                     "--- a/../outside.c\n+++ b/../outside.c\n@@ -0,0 +1 @@\n+pwned\n")
    cache = tmp_path / "cache"
    before = snapshot(tree)
    proc = run_kpatch_build(tree, cache, patch)
    assert proc.returncode == 1, proc.stderr
    assert "climbs out of the tree" in proc.stderr and "Traceback" not in proc.stderr
    assert not outside.exists() and not (tmp_path / "outside.c").exists()
    assert not cache.exists()          # refused before the cache is even created
    assert snapshot(tree) == before


def test_absolute_path_is_refused_cleanly(tree, tmp_path):
    """Issue 9, defect 4: an absolute name gave a traceback (shutil.SameFileError)."""
    victim = tmp_path / "victim.c"
    victim.write_text("a\n")
    patch = raw_patch(tmp_path, "abs.patch", str(victim), str(victim))
    proc = run_kpatch_build(tree, tmp_path / "cache", patch)
    assert proc.returncode == 1, proc.stderr
    assert "absolute path" in proc.stderr and "Traceback" not in proc.stderr
    assert victim.read_text() == "a\n"
    assert len(proc.stderr.strip().splitlines()) <= 2   # one line, plus a hint


def test_symlink_in_the_tree_is_refused_before_the_tree_is_touched(tree, tmp_path):
    """Issue 9, defect 2: a path through a planted symlink passed the dry run, then patch refused it half way."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "g.c").write_text("a\n")
    (tree / "drivers").symlink_to(elsewhere)
    patch = make_patch(tmp_path, "two.patch", "kernel/f.c", ORIGINAL, PATCHED)
    patch.write_text(patch.read_text() + "--- a/drivers/g.c\n+++ b/drivers/g.c\n@@ -1 +1 @@\n-a\n+b\n")
    before = snapshot(tree)
    proc = run_kpatch_build(tree, tmp_path / "cache", patch)
    assert proc.returncode == 1, proc.stderr
    assert "symbolic link" in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(tree) == before and (elsewhere / "g.c").read_text() == "a\n"
    with pytest.raises(PatchError, match="symbolic link"):
        check_in_tree(tree, ["kernel/f.c", "drivers/g.c"])


def test_config_hunk_is_refused(tree, tmp_path):
    """Issue 9, defect 2: a hunk for .config passed the supported-file check (syncconfig then rewrote it)."""
    (tree / ".config").write_text("CONFIG_A=y\n")
    patch = raw_patch(tmp_path, "cfg.patch", "a/.config", "b/.config", "@@ -1 +1 @@\n-CONFIG_A=y\n+CONFIG_A=n\n")
    proc = run_kpatch_build(tree, tmp_path / "cache", patch)
    assert proc.returncode == 1 and "configuration" in proc.stderr, proc.stderr
    assert (tree / ".config").read_text() == "CONFIG_A=y\n"


def test_binary_and_rename_patches_are_refused(tmp_path):
    p = tmp_path / "r.patch"
    p.write_text("diff --git a/kernel/f.c b/kernel/g.c\nsimilarity index 100%\nrename from kernel/f.c\n"
                 "rename to kernel/g.c\n--- a/kernel/f.c\n+++ b/kernel/g.c\n")
    with pytest.raises(PatchError, match="renaming"):
        parse_patch(p)


# -- the dry run is the application -----------------------------------------------------------------

def test_dry_run_leaves_the_tree_alone_and_its_result_is_applied(tree, tmp_path):
    patch = make_patch(tmp_path, "fix.patch", "kernel/f.c", ORIGINAL, PATCHED)
    result = dry_run(tree, [parse_patch(patch)], tmp_path / "scratch")
    assert result == {"kernel/f.c": PATCHED.encode()}
    assert (tree / "kernel/f.c").read_text() == ORIGINAL
    assert (tree / "kernel/f.c").stat().st_mtime_ns == OLD_NS
    journal = TreeJournal.begin(tree, tmp_path / "journal")
    apply_result(tree, result, journal)
    assert (tree / "kernel/f.c").read_text() == PATCHED
    assert (tree / "kernel/f.c").stat().st_mtime_ns > OLD_NS
    journal.restore()
    assert (tree / "kernel/f.c").read_text() == ORIGINAL
    assert (tree / "kernel/f.c").stat().st_mtime_ns == OLD_NS
    assert sorted(p.name for p in (tree / "kernel").iterdir()) == ["f.c"]  # no .orig / .rej left


def test_patch_that_does_not_apply_is_refused(tree, tmp_path):
    patch = make_patch(tmp_path, "bad.patch", "kernel/f.c", "int g(void);\n", "int h(void);\n")
    with pytest.raises(PatchError, match="does not apply"):
        dry_run(tree, [parse_patch(patch)], tmp_path / "scratch")
    assert (tree / "kernel/f.c").read_text() == ORIGINAL


def test_two_patches_apply_in_order(tree, tmp_path):
    third = "int f(void)\n{\n\treturn 3;\n}\n"
    p1 = make_patch(tmp_path, "1.patch", "kernel/f.c", ORIGINAL, PATCHED)
    p2 = make_patch(tmp_path, "2.patch", "kernel/f.c", PATCHED, third)
    assert dry_run(tree, [parse_patch(p1), parse_patch(p2)], tmp_path / "s") == {"kernel/f.c": third.encode()}


def test_new_file_in_new_directory_is_removed_with_its_directories(tree, tmp_path):
    patch = make_patch(tmp_path, "new.patch", "kernel/sub/dir/new.c", "", "int x;\n")
    patch.write_text(patch.read_text().replace("--- a/kernel/sub/dir/new.c", "--- /dev/null", 1))
    result = dry_run(tree, [parse_patch(patch)], tmp_path / "s")
    journal = TreeJournal.begin(tree, tmp_path / "journal")
    apply_result(tree, result, journal)
    assert (tree / "kernel/sub/dir/new.c").read_text() == "int x;\n"
    journal.restore()
    assert not (tree / "kernel/sub").exists()


# -- the journal -----------------------------------------------------------------------------------

def test_journal_restores_after_a_killed_run(tree, tmp_path):
    """A run killed with SIGKILL leaves its journal: a new process restores from it alone."""
    obj = tree / "kernel" / "f.o"
    obj.write_bytes(b"original object")
    os.utime(obj, ns=(OLD_NS, OLD_NS))
    os.chmod(obj, 0o640)
    journal = TreeJournal.begin(tree, tmp_path / "journal")
    journal.protect(["kernel/f.o", "kernel/.f.o.cmd"])
    journal.watch(["kernel"])
    obj.write_bytes(b"patched object")
    (tree / "kernel" / ".f.o.cmd").write_text("cmd")
    (tree / "kernel" / ".f.o.d").write_text("deps")           # a file make left behind
    (tree / "kernel" / "notes.txt").write_text("the user's")   # not a build product: left alone
    del journal                                                  # ... and the process dies
    again = TreeJournal.load(tmp_path / "journal")
    assert again is not None
    report = again.restore()
    assert obj.read_bytes() == b"original object" and obj.stat().st_mtime_ns == OLD_NS
    assert oct(obj.stat().st_mode & 0o777) == oct(0o640)
    assert not (tree / "kernel/.f.o.cmd").exists() and not (tree / "kernel/.f.o.d").exists()
    assert (tree / "kernel/notes.txt").exists()
    assert "kernel/.f.o.d" in report.removed
    assert TreeJournal.load(tmp_path / "journal") is None


def test_journal_goes_on_past_a_file_it_cannot_restore(tree, tmp_path):
    """Restoring is per file and never gives up half way: every other file is put back, the journal stays."""
    for name in ("a.o", "b.o"):
        (tree / "kernel" / name).write_bytes(b"orig " + name.encode())
    journal = TreeJournal.begin(tree, tmp_path / "journal")
    journal.protect(["kernel/a.o", "kernel/b.o"])
    (tree / "kernel/a.o").unlink()
    (tree / "kernel/a.o").mkdir()                      # cannot be replaced by a file
    (tree / "kernel/b.o").write_bytes(b"changed")
    with pytest.raises(TreeError, match="kernel/a.o"):
        journal.restore()
    assert (tree / "kernel/b.o").read_bytes() == b"orig b.o"
    (tree / "kernel/a.o").rmdir()
    TreeJournal.load(tmp_path / "journal").restore()   # the next run finishes the job
    assert (tree / "kernel/a.o").read_bytes() == b"orig a.o"


def test_journal_stops_an_orphaned_make_before_restoring(tree, tmp_path):
    """After SIGKILL of kpatch-build, its make (own session) runs on: the next run stops it first."""
    (tree / "kernel" / "f.o").write_bytes(b"orig")
    journal = TreeJournal.begin(tree, tmp_path / "journal")
    journal.protect(["kernel/f.o"])
    # a "make" that keeps writing the object until it is stopped
    orphan = subprocess.Popen(["sh", "-c", f"while :; do echo late > {tree}/kernel/f.o; sleep 0.05; done"],
                              start_new_session=True)
    journal.running(orphan.pid)
    time.sleep(0.2)
    report = TreeJournal.load(tmp_path / "journal").restore()
    assert report.stopped_make == orphan.pid
    assert orphan.wait(timeout=5) == -signal.SIGTERM
    time.sleep(0.2)
    assert (tree / "kernel/f.o").read_bytes() == b"orig"


def test_journal_never_signals_a_reused_process_id(tree, tmp_path):
    journal = TreeJournal.begin(tree, tmp_path / "journal")
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        journal.running(bystander.pid)
        assert journal.make is not None
        journal.make.starttime += 1              # as if the id now named another process
        journal._save()
        assert TreeJournal.load(tmp_path / "journal").restore().stopped_make is None
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# -- the cache: one directory per tree, private, locks inside it ----------------------------------------

def test_two_trees_sharing_a_cache_never_touch_each_other(tmp_path):
    """Issue 9, defect 5: one journal/lock per CACHEDIR let a run on tree B revert tree A's patch."""
    cache = tmp_path / "cache"
    trees = []
    for name in ("a", "b"):
        t = tmp_path / name
        (t / "kernel").mkdir(parents=True)
        (t / "kernel/f.c").write_text(ORIGINAL)
        trees.append(t)
    ws_a, ws_b = (TreeWorkspace(cache, t).create() for t in trees)
    assert ws_a.root != ws_b.root and ws_a.journal_dir != ws_b.journal_dir and ws_a.log != ws_b.log
    journal_a = TreeJournal.begin(trees[0], ws_a.journal_dir)     # run A is in its patched build...
    journal_a.protect(["kernel/f.c"])
    (trees[0] / "kernel/f.c").write_text(PATCHED)
    assert TreeJournal.load(ws_b.journal_dir) is None               # ... run B's recovery finds nothing of A's
    assert (trees[0] / "kernel/f.c").read_text() == PATCHED
    with ws_a.locked(lambda m: None), ws_b.locked(lambda m: None):  # and they do not wait for each other
        pass


def test_cache_is_private_and_refused_when_not(tmp_path):
    cache = tmp_path / "cache"
    TreeWorkspace(cache, tmp_path).create()
    assert oct(cache.stat().st_mode & 0o777) == oct(0o700)
    cache.chmod(0o777)
    with pytest.raises(CacheError, match="writable by other users"):
        TreeWorkspace(cache, tmp_path).create()
    cache.chmod(0o700)
    if os.geteuid() == 0:
        os.chown(cache, 65534, 65534)
        with pytest.raises(CacheError, match="belongs to user id 65534"):
            TreeWorkspace(cache, tmp_path).create()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere-dir")
    (tmp_path / "elsewhere-dir").mkdir()
    with pytest.raises(CacheError, match="symlink"):
        TreeWorkspace(link, tmp_path).create()


def test_lock_file_is_in_the_cache_and_never_follows_a_symlink(tmp_path, monkeypatch):
    """Issue 9, defect 7: /tmp/pykpatch-tree-HASH.lock followed planted symlinks and was never removed."""
    ws = TreeWorkspace(tmp_path / "cache", tmp_path).create()
    victim = tmp_path / "victim"
    (ws.root / "lock").symlink_to(victim)
    with pytest.raises(CacheError, match="symlink"), ws.locked(lambda m: None):
        pass
    assert not victim.exists()
    (ws.root / "lock").unlink()
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    with ws.locked(lambda m: None):
        assert oct((ws.root / "lock").stat().st_mode & 0o777) == oct(0o600)
    assert list(shared_tmp.iterdir()) == []   # nothing in the directory every user can write


def test_a_held_lock_is_reported_with_its_holder(tmp_path):
    """Issue 9, defect 7: a lock held by someone else blocked silently; now the wait names the holder."""
    lock = tmp_path / "lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import fcntl, os, time
        fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(1.5)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    said = []
    with exclusive_lock(lock, said.append, "the tree"):
        pass
    holder.wait()
    assert said and f"pid {holder.pid}" in said[0] and "the tree" in said[0]


# -- outputs -----------------------------------------------------------------------------------------

def test_output_never_follows_a_planted_temporary_symlink(tmp_path, monkeypatch):
    """Issue 9, defect 6: OUT.tmp<pid> was opened with plain 'wb' (a planted link made root write elsewhere)."""
    from pykpatch.elf import ElfObject, write_elf

    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "out.o"
    for guess in (f"{out}.tmp{os.getpid()}", f"{out}.tmp"):
        Path(guess).symlink_to(victim)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    write_elf(ElfObject(), out)
    assert victim.read_bytes() == b"precious"
    assert out.read_bytes()[:4] == b"\x7fELF" and synced
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.o.")]  # no temporary left


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(OSError):
        atomic_write(tmp_path / "no" / "such" / "dir" / "f", b"x")
    assert list(tmp_path.iterdir()) == []


# -- module names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("patches,expected", [
    (["fix.patch"], "livepatch-fix"),
    (["CVE-2024.1234 fix.diff"], "livepatch-CVE-2024-1234-fix"),
    (["a.patch", "b.patch"], "livepatch-patch"),
    (["x" * 100 + ".patch"], ("livepatch-" + "x" * 100)[:55]),
])
def test_default_module_name_is_kpatch_builds(patches, expected):
    assert default_module_name([Path(p) for p in patches]) == expected


def test_given_module_name_is_used_as_given():
    """Issue 9, defect 13: -n NAME gave livepatch-NAME; kpatch-build uses NAME as given."""
    assert module_name_string("cve_fix") == "cve_fix"
    assert module_name_string("kpatch-fix.1") == "kpatch-fix-1"


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
    from pykpatch.kbuild.objects import split_other_images

    kernel, other = split_other_images(["lib/string.o", "arch/x86/boot/compressed/string.o",
                                        "arch/x86/purgatory/purgatory.o", "arch/x86/entry/vdso/vgetcpu.o",
                                        "drivers/input/joydev.o"])
    assert kernel == ["lib/string.o", "drivers/input/joydev.o"]
    assert other == ["arch/x86/boot/compressed/string.o", "arch/x86/purgatory/purgatory.o",
                     "arch/x86/entry/vdso/vgetcpu.o"]


# -- extra C flags: KCFLAGS or per object (kbuild.tree.flag_variables) -------------------------------------

def test_flags_go_per_object_when_no_makefile_sets_them(tmp_path: Path) -> None:
    from pykpatch.kbuild.tree import flag_variables

    (tmp_path / "fs" / "proc").mkdir(parents=True)
    (tmp_path / "fs" / "proc" / "Makefile").write_text("obj-y += cmdline.o\n")
    assert flag_variables(tmp_path, ["fs/proc/cmdline.o"], None, "-ffunction-sections") == {
        "CFLAGS_cmdline.o": "-ffunction-sections"}


def test_an_objects_own_makefile_flags_are_never_overridden(tmp_path: Path) -> None:
    # arch/x86/mm/Makefile: CFLAGS_fault.o := -I $(src)/../include/asm/trace. A CFLAGS_fault.o on make's
    # command line would replace it and fault.c would not find its trace header (the header-inline case).
    from pykpatch.kbuild.tree import flag_variables

    (tmp_path / "arch" / "x86" / "mm").mkdir(parents=True)
    (tmp_path / "arch" / "x86" / "mm" / "Makefile").write_text(
        "CFLAGS_fault.o := -I $(src)/../include/asm/trace\nobj-y += fault.o pgtable.o\n")
    (tmp_path / "fs").mkdir()
    (tmp_path / "fs" / "Makefile").write_text("obj-y += aio.o\n")
    variables = flag_variables(tmp_path, ["fs/aio.o", "arch/x86/mm/fault.o"], None, "-ffunction-sections")
    assert variables == {"KCFLAGS": "-ffunction-sections"}
    assert flag_variables(tmp_path, ["arch/x86/mm/pgtable.o"], None, "-fdata-sections") == {
        "CFLAGS_pgtable.o": "-fdata-sections"}
