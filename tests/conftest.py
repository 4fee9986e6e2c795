"""Shared fixtures: the kernel object corpus (``../shared/corpus/x86_64``).

- ``corpus_dir``      the corpus directory; overridable with ``PYKPATCH_CORPUS``.
                      A test that needs it *fails* (never skips) when it is
                      absent: CI always has it, so a missing corpus is a setup bug.
- ``corpus_cases``    ``cases.json`` of the corpus, as a dict.
- ``corpus_object``   a test taking this argument runs once per ``*.o`` of the corpus.
- ``list_corpus_objects()`` / ``load_cases()``  the same as plain functions.
- ``readelf_view``    a function: ``readelf -SsrW`` of a file with what a
                      rewrite may legitimately change masked (file offsets,
                      string-table sizes), for comparing two objects.

Tests using the corpus are marked ``corpus`` automatically.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

CORPUS_ENV = "PYKPATCH_CORPUS"


def corpus_path() -> Path:
    """Where the corpus should be: $PYKPATCH_CORPUS, else ../shared/corpus/x86_64 beside the repo."""
    env = os.environ.get(CORPUS_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "x86_64"


def _require_corpus() -> Path:
    path = corpus_path()
    if not path.is_dir():
        pytest.fail(
            f"kernel object corpus not found at {path} "
            f"(expected ../shared/corpus/x86_64 beside the repository, or set {CORPUS_ENV})",
            pytrace=False,
        )
    return path


def list_corpus_objects(directory: Path | None = None, pattern: str = "*.o") -> list[Path]:
    """The corpus objects matching ``pattern``, sorted by name ([] if the corpus is absent)."""
    directory = directory or corpus_path()
    return sorted(directory.glob(pattern)) if directory.is_dir() else []


def load_cases(directory: Path | None = None) -> dict:
    """``cases.json`` of the corpus (see the corpus README for its fields)."""
    directory = directory or _require_corpus()
    with open(directory / "cases.json", encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    return _require_corpus()


@pytest.fixture(scope="session")
def corpus_cases(corpus_dir: Path) -> dict:
    return load_cases(corpus_dir)


@pytest.fixture
def corpus_object(request, corpus_dir: Path) -> Path:
    return request.param


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "corpus_object" in metafunc.fixturenames:
        objects = list_corpus_objects()
        if objects:
            metafunc.parametrize("corpus_object", objects, ids=[p.name for p in objects], indirect=True)
        else:  # one instance that fails through corpus_dir, rather than an empty (skipped) set
            metafunc.parametrize("corpus_object", [None], ids=["corpus-missing"], indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"corpus_dir", "corpus_object", "corpus_cases"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.corpus)


_SECTION_ROW = re.compile(r"(\s*\[\s*\d+\]\s+\S+\s+\S+\s+[0-9a-f]+\s+)[0-9a-f]+(\s.*)")


def readelf_normalized(path: str | os.PathLike) -> list[str]:
    """``readelf -SsrW`` lines, minus file offsets and STRTAB sizes (the writer
    lays sections out afresh and does not tail-merge strings)."""
    proc = subprocess.run(["readelf", "-SsrW", os.fspath(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr, f"readelf {path}: {proc.stderr.strip()}"
    lines = []
    for line in proc.stdout.splitlines():
        if "section headers, starting at offset" in line:
            continue
        line = re.sub(r"at offset 0x[0-9a-f]+", "", line)
        m = _SECTION_ROW.match(line)
        if m:
            line = m.group(1) + m.group(2)
        if " STRTAB " in line:
            line = re.sub(r"(STRTAB\s+[0-9a-f]+\s+)[0-9a-f]+", r"\1*", line)
        lines.append(line)
    return lines


@pytest.fixture(scope="session")
def readelf_view():
    return readelf_normalized
