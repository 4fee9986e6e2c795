"""Read -> write round trip of every corpus object, checked by binutils.

The rewritten object must show the same sections, symbols and relocations to
``readelf -SsrW`` (file offsets and string-table sizes aside) and be accepted
by ``ld -r``.
"""

from __future__ import annotations

import difflib
import subprocess

from pykpatch.elf import parse_elf, read_elf, serialize, write_elf
from pykpatch.elf.model import RelocationSection


def test_roundtrip_matches_readelf_and_links(corpus_object, tmp_path, readelf_view):
    obj = read_elf(corpus_object)
    out = tmp_path / corpus_object.name
    write_elf(obj, out)

    before, after = readelf_view(corpus_object), readelf_view(out)
    if before != after:
        diff = "\n".join(list(difflib.unified_diff(before, after, "original", "rewritten", lineterm=""))[:40])
        raise AssertionError(f"readelf view of {corpus_object.name} changed:\n{diff}")

    proc = subprocess.run(["ld", "-r", "-o", str(tmp_path / "linked.o"), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, f"ld -r rejected the rewrite of {corpus_object.name}: {proc.stderr.strip()}"


def test_rewrite_is_a_fixed_point(corpus_object):
    """Writing what we wrote gives the same bytes: no drift across stages."""
    first = serialize(read_elf(corpus_object))
    assert serialize(parse_elf(first)) == first


def test_undecoded_relocations_keep_their_bytes(corpus_dir):
    """relocations=False (symbol-table-only users) writes relocation bytes untouched."""
    path = corpus_dir / "cmdline-ubsan.ORIG.o"
    obj = read_elf(path, relocations=False)
    relas = list(obj.relocation_sections())
    assert relas and all(sec.relocations is None for sec in relas)
    again = parse_elf(serialize(obj))
    original = {s.name: s.data for s in read_elf(path).sections if isinstance(s, RelocationSection)}
    assert {s.name: s.data for s in again.relocation_sections()} == original
