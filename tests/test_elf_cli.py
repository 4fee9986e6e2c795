"""``pykpatch elf FILE``: listing of a good object, one clean error line for a bad one."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pykpatch.cli import main
from pykpatch.elf import parse_elf

OBJECT = "cmdline-ubsan.ORIG.o"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pykpatch.cli", *args], capture_output=True, text=True, timeout=120)


def test_lists_sections_symbols_relocations(corpus_dir):
    path = corpus_dir / OBJECT
    proc = run_cli("elf", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    assert out.splitlines()[0] == f"{path}: ELF64 LSB REL machine=X86_64 sections=34 symbols=20"
    for title in ("[sections]", "[symbols]", "[relocations]"):
        assert title in out
    assert " .text.cmdline_proc_show " in out and " RELA " in out
    assert out.count("\n") > 34 + 20
    assert "FUNC     LOCAL   DEFAULT   .text.cmdline_proc_show          cmdline_proc_show" in out
    assert ".rela.init.text -> .init.text: 8 relocation(s)" in out
    assert "R_X86_64_PLT32           proc_create_single_data-0x4" in out


@pytest.mark.parametrize("flag, present, absent", [
    ("--sections", "[sections]", ("[symbols]", "[relocations]")),
    ("--symbols", "[symbols]", ("[sections]", "[relocations]")),
    ("--relocs", "[relocations]", ("[sections]", "[symbols]")),
])
def test_section_flags(corpus_dir, capsys, flag, present, absent):
    assert main(["elf", flag, str(corpus_dir / OBJECT)]) == 0
    out = capsys.readouterr().out
    assert present in out and not any(a in out for a in absent)


def test_largest_corpus_object(corpus_dir, capsys):
    assert main(["elf", "--symbols", str(corpus_dir / "unique-id-pr-1314.ORIG.o")]) == 0
    assert len(capsys.readouterr().out.splitlines()) > 4600


# -- bad input ------------------------------------------------------------------------

def _corrupt(src: bytes, kind: str) -> bytes:
    """One kind of damage to a good ELF64 LSB object."""
    obj = parse_elf(src)
    b = bytearray(src)
    shoff = struct.unpack_from("<Q", src, 0x28)[0]

    def header(index: int, field_offset: int) -> int:  # file offset of a section header field
        return shoff + 64 * index + field_offset

    symoff = struct.unpack_from("<Q", src, header(obj.symtab.index, 24))[0]
    if kind == "truncated-header":
        return src[:40]
    if kind == "truncated":
        return src[: len(src) // 2]
    if kind == "bad-class":
        b[4] = 7
    elif kind == "bad-byte-order":
        b[5] = 0
    elif kind == "shoff-past-end":
        struct.pack_into("<Q", b, 0x28, len(src) + 100)
    elif kind == "bad-shentsize":
        struct.pack_into("<H", b, 0x3A, 12)
    elif kind == "shstrndx-out-of-range":
        struct.pack_into("<H", b, 0x3E, 0xFEFF)
    elif kind == "section-data-past-end":
        struct.pack_into("<Q", b, header(7, 24), len(src) * 4)
    elif kind == "section-name-offset":
        struct.pack_into("<I", b, header(7, 0), 0xFFFF)
    elif kind == "section-link-out-of-range":
        struct.pack_into("<I", b, header(obj.symtab.index, 40), 999)
    elif kind == "symbol-name-offset":
        struct.pack_into("<I", b, symoff + 24 * 3, 0xFFFFF)
    elif kind == "symbol-section-index":
        struct.pack_into("<H", b, symoff + 24 * 3 + 6, 0x7000)
    elif kind == "symtab-entsize":
        struct.pack_into("<Q", b, header(obj.symtab.index, 56), 16)
    elif kind == "reloc-symbol-index":
        rela = struct.unpack_from("<Q", src, header(next(obj.relocation_sections()).index, 24))[0]
        struct.pack_into("<Q", b, rela + 8, (5000 << 32) | 2)
    else:
        raise AssertionError(kind)
    return bytes(b)


DAMAGE = [
    ("truncated-header", "truncated ELF header"),
    ("truncated", "past the end of the file"),
    ("bad-class", "unknown ELF class 7"),
    ("bad-byte-order", "unknown ELF byte order 0"),
    ("shoff-past-end", "section header table at"),
    ("bad-shentsize", "section header size 12"),
    ("shstrndx-out-of-range", "section name table index"),
    ("section-data-past-end", "section [7] data"),
    ("section-name-offset", "section [7] name: string offset 0xffff outside"),
    ("section-link-out-of-range", "sh_link: section index 999 out of range"),
    ("symbol-name-offset", "symbol [3] name: string offset 0xfffff outside"),
    ("symbol-section-index", "section index 28672 out of range"),
    ("symtab-entsize", "symbol table entry size 16"),
    ("reloc-symbol-index", "symbol index 5000 out of range"),
]


def bad_files(tmp_path: Path, corpus_dir: Path):
    src = (corpus_dir / OBJECT).read_bytes()
    cases = {
        "missing": (tmp_path / "does-not-exist.o", "cannot read: No such file or directory"),
        "directory": (tmp_path, "cannot read: Is a directory"),
        "text": (tmp_path / "notes.txt", "not an ELF file (bad magic)"),
        "empty": (tmp_path / "empty.o", "not an ELF file"),
    }
    cases["text"][0].write_text("this is not an object\n")
    cases["empty"][0].write_bytes(b"")
    for kind, message in DAMAGE:
        path = tmp_path / f"{kind}.o"
        path.write_bytes(_corrupt(src, kind))
        cases[kind] = (path, message)
    return cases


CASE_IDS = ["missing", "directory", "text", "empty"] + [k for k, _ in DAMAGE]


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_file_in_process(case, tmp_path, corpus_dir, capsys):
    path, message = bad_files(tmp_path, corpus_dir)[case]
    assert main(["elf", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"pykpatch: error: {path}: ")
    assert message in lines[0]


def test_bad_files_by_subprocess(tmp_path, corpus_dir):
    """The installed entry point: exit 1, one line on stderr, never a traceback."""
    for case, (path, message) in bad_files(tmp_path, corpus_dir).items():
        proc = run_cli("elf", str(path))
        assert proc.returncode == 1, (case, proc.stderr)
        assert proc.stdout == "", case
        assert "Traceback" not in proc.stderr, (case, proc.stderr)
        assert proc.stderr.count("\n") == 1 and str(path) in proc.stderr and message in proc.stderr, (case, proc.stderr)
