"""Stage "patched": compile what the patches reach, before and after patching; put the tree back.

For each object a patched file ends up in (kbuild's .cmd dependency lists
say which), the original is compiled with kpatch's flags, kept, the patch
result is written into the tree, the object is compiled again and kept, and
the tree is restored from the journal (``journal.py``) -- on success, on
failure, on Ctrl-C or SIGTERM; after SIGKILL the next run does it.  The
journal saves, before make runs, the objects and their .cmd/.d files and
everything make may rewrite besides (``kbuild.tree.build_state_files``),
and records make's process group while it runs.  Restoring happens with
SIGINT/SIGTERM/SIGHUP blocked, so a second Ctrl-C cannot cut it short; the
signal is delivered once the tree is whole again.

Exported symbols whose version CRC the patch changes are refused here: a
module built against the tree keeps the old CRC in ``__versions``, so a
real change to an exported function's types would go through silently.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pykpatch.elf.constants import SHN
from pykpatch.elf.reader import read_elf
from pykpatch.errors import ElfFormatError, TreeError, UnsupportedChangeError
from pykpatch.kbuild.objects import object_files
from pykpatch.kbuild.tree import KPATCH_CFLAGS, build_state_dirs, build_state_files
from pykpatch.kpatch_build.check import PatchPlan
from pykpatch.kpatch_build.context import BuildContext
from pykpatch.kpatch_build.journal import TreeJournal
from pykpatch.kpatch_build.patches import apply_result

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class ChangedObject:
    path: str
    orig: Path
    patched: Path


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Delay SIGINT/SIGTERM/SIGHUP until the block ends (they are delivered then, not lost)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def restore_tree(ctx: BuildContext, journal: TreeJournal) -> None:
    with signals_held():
        report = journal.restore()
    ctx.progress(f"patched build: tree put back ({len(report.restored)} file(s) restored, "
                 f"{len(report.removed)} removed)")


def patched_build(ctx: BuildContext, plan: PatchPlan, objects: list[str]) -> list[ChangedObject]:
    """See the module docstring; returns the objects whose code differs."""
    ctx.stages.start("patched", "patched build: applying the patches and rebuilding what they touch")
    tree = ctx.srcdir
    ctx.progress(f"patched build: {len(objects)} object(s) to rebuild "
                 f"({', '.join(objects[:5])}{'...' if len(objects) > 5 else ''})")
    orig_dir, patched_dir = ctx.scratch / "orig", ctx.scratch / "patched"
    with signals_held():
        journal = TreeJournal.begin(tree, ctx.workspace.journal_dir)
    try:
        with signals_held():
            journal.protect(build_state_files(tree))
            journal.protect(f for obj in objects for f in object_files(obj))
            journal.watch([*build_state_dirs(tree), *sorted({str(Path(o).parent) for o in objects})])
        _make(ctx, journal, objects, "original objects")
        _keep(tree, objects, orig_dir)
        with signals_held():
            apply_result(tree, plan.result, journal)
        _make(ctx, journal, objects, "patched build")
        _keep(tree, objects, patched_dir)
    finally:
        restore_tree(ctx, journal)
    refuse_changed_crcs(objects, orig_dir, patched_dir)
    return _changed(objects, orig_dir, patched_dir)


def _make(ctx: BuildContext, journal: TreeJournal, objects: list[str], what: str) -> None:
    """Compile the objects with kpatch's flags: KCFLAGS in a tree built with them, per object elsewhere."""
    flags = {"kcflags": KPATCH_CFLAGS} if ctx.kcflags_tree else {"kcflags": None, "object_flags": KPATCH_CFLAGS}
    try:
        ctx.tree.make(*objects, progress=ctx.progress, what=what, expected=len(objects),
                      on_start=lambda pgid: journal.running(pgid, what), **flags)
    finally:
        journal.running(None)


def _keep(tree: Path, objects: list[str], dest: Path) -> None:
    """Copy each object and its .cmd file (which holds the CRCs on 6.x) out of the tree."""
    for obj in objects:
        for rel in object_files(obj)[:2]:
            src = tree / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)


def _changed(objects: list[str], orig_dir: Path, patched_dir: Path) -> list[ChangedObject]:
    changed = []
    for obj in objects:
        orig, patched = orig_dir / obj, patched_dir / obj
        if not orig.exists():
            raise TreeError(f"{obj} was not built by the original build")
        if not patched.exists():
            raise TreeError(f"{obj} was not built by the patched build")
        if orig.read_bytes() != patched.read_bytes():
            changed.append(ChangedObject(obj, orig, patched))
    return changed


# -- version CRCs of exported symbols ------------------------------------------------------------

# Linux >= 5.19 records genksyms' CRCs in the object's .cmd file ("#SYMVER name 0xcrc");
# older kernels define them as absolute __crc_NAME symbols in the object.
_SYMVER_LINE = re.compile(r"^#SYMVER (\S+) (0x[0-9a-fA-F]+)$", re.MULTILINE)


def exported_crcs(obj: Path, cmd: Path) -> dict[str, int]:
    """name -> version CRC of every symbol the object exports (empty without CONFIG_MODVERSIONS)."""
    crcs: dict[str, int] = {}
    try:
        crcs.update((m.group(1), int(m.group(2), 16)) for m in _SYMVER_LINE.finditer(cmd.read_text(errors="replace")))
    except FileNotFoundError:
        pass
    if crcs:
        return crcs
    try:
        elf = read_elf(obj, relocations=False)
    except ElfFormatError:
        return crcs
    for sym in elf.symbols:
        if sym.name.startswith("__crc_") and sym.shndx == SHN.ABS:
            crcs[sym.name[len("__crc_"):]] = sym.value & 0xFFFFFFFF
    return crcs


def refuse_changed_crcs(objects: list[str], orig_dir: Path, patched_dir: Path) -> None:
    """Refuse a patch that changes the version CRC of a symbol an object exports (see module docstring)."""
    reasons, names = [], []
    for obj in objects:
        cmd = object_files(obj)[1]
        before = exported_crcs(orig_dir / obj, orig_dir / cmd)
        after = exported_crcs(patched_dir / obj, patched_dir / cmd)
        for name in sorted(before):
            if name in after and after[name] != before[name]:
                reasons.append(f"{obj}: the patch changes the version CRC of exported symbol {name} "
                               f"({before[name]:#010x} -> {after[name]:#010x}): its types or those it "
                               "depends on changed, which a live patch cannot do to the running kernel")
                names.append(name)
    if reasons:
        raise UnsupportedChangeError(reasons, f"the patch changes the version CRC of {len(names)} exported "
                                              f"symbol(s): {', '.join(names)}")

