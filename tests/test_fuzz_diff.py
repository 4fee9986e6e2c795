"""Property: no damaged pair of objects makes the diff crash, hang or write an invalid output.

Corpus pairs (``fuzz_cases.DIFF_PAIRS``) with the patched object damaged,
or both objects, by the mutators of ``tests/elf_mutations.py``.  The diff
must refuse the input with a typed error meant for a person, or write an
output that the independent oracle (``fuzz_cases.output_problems``: raw
records, the module loader's relocation types, the parent's symbols and
sympos) finds valid.  A few hundred derandomized cases here; ``bench/fuzz.py``
runs ten thousand and more.
"""

from __future__ import annotations

import os
import struct

import elf_mutations as mut
import pytest
from fuzz_cases import DIFF_MUTATORS, check_diff, damage, load_diff_pairs, output_problems, time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pykpatch.diff import run_diff

EXAMPLES = int(os.environ.get("PYKPATCH_FUZZ_DIFF_EXAMPLES", "250"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not os.environ.get("PYKPATCH_FUZZ_RANDOM"),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TIME_LIMIT = 60.0  # seconds per case: far above the few milliseconds one takes; a hang fails the test

PAIRS: list = []  # loaded once per module; drawn by index so failures print short


@pytest.fixture(scope="module", autouse=True)
def _load_pairs(corpus_dir, corpus_cases):
    PAIRS[:] = load_diff_pairs(corpus_dir, corpus_cases)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-diff")


def test_undamaged_pairs_diff_as_the_corpus_says(workdir, corpus_cases):
    """The seeds themselves: every ``ok`` case gives an output the oracle accepts."""
    for pair in PAIRS:
        expected = "output" if corpus_cases[pair.name]["expect"] == "ok" else "refused: UnsupportedChangeError"
        assert check_diff(pair, pair.orig, pair.patched, workdir) == expected, pair.name


def test_the_oracle_sees_a_relocation_outside_its_section(workdir):
    """The oracle is not vacuous: a valid output with one r_offset moved past its section is flagged."""
    pair = next(p for p in PAIRS if p.name == "cmdline-ubsan")
    out = workdir / "oracle.o"
    (workdir / "o.o").write_bytes(pair.orig)
    (workdir / "p.o").write_bytes(pair.patched)
    run_diff(str(workdir / "o.o"), str(workdir / "p.o"), "vmlinux", pair.table, None, pair.sizes, str(out))
    editor = mut.FieldEditor(out.read_bytes())
    assert output_problems(bytes(editor.bytes), pair.table) == []
    size = editor.header(".text.cmdline_proc_show")[5]
    editor.set_relocation(0, "r_offset", size - 2, ".rela.text.cmdline_proc_show")
    assert any("outside .text.cmdline_proc_show" in p for p in output_problems(bytes(editor.bytes), pair.table))


def test_the_oracle_sees_a_wrong_sympos(workdir):
    pair = next(p for p in PAIRS if p.name == "gcc-static-local-var-3")
    out = workdir / "oracle.o"
    (workdir / "o.o").write_bytes(pair.orig)
    (workdir / "p.o").write_bytes(pair.patched)
    run_diff(str(workdir / "o.o"), str(workdir / "p.o"), "vmlinux", pair.table, None, pair.sizes, str(out))
    editor = mut.FieldEditor(out.read_bytes())
    record = editor.header(".pykpatch.relocs")[4]
    for base in range(record, record + editor.header(".pykpatch.relocs")[5], 48):
        struct.pack_into("<Q", editor.bytes, base + 24, 9)  # sympos of every record
    assert any("no such symbol" in p for p in output_problems(bytes(editor.bytes), pair.table))


def run_damaged(data, workdir, both: bool) -> None:
    d = mut.HypothesisDraw(data)
    pair = PAIRS[d.integer(0, len(PAIRS) - 1)]
    orig = damage(pair.orig, d, DIFF_MUTATORS) if both else pair.orig
    patched = damage(pair.patched, d, DIFF_MUTATORS)
    with time_limit(TIME_LIMIT):
        check_diff(pair, orig, patched, workdir)


@FUZZ
@given(data=st.data())
def test_damaged_patched_object(data, workdir):
    run_damaged(data, workdir, both=False)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 3))
@given(data=st.data())
def test_damaged_original_and_patched_objects(data, workdir):
    run_damaged(data, workdir, both=True)
