"""The fuzz properties of the ELF reader/writer and of the diff, shared by the tests and ``bench/fuzz.py``.

``check_elf(blob)``: ``parse_elf`` either refuses the bytes with a precise
``ElfFormatError`` or returns a model that ``serialize`` writes (or refuses
with a typed error); what it writes reads back.

``check_diff(pair, orig, patched, workdir)``: ``run_diff`` on damaged
objects either refuses them with a typed error meant for a person, or
writes an output that ``output_problems`` - an oracle written apart from
the product, on raw ``struct`` records - finds nothing wrong with: every
relocation inside its section, every ``sh_link``/``sh_info`` of the right
kind, every livepatch relocation and patched function naming a symbol of
the parent with the recorded ``sympos``.

Each check returns a short outcome label (for the benchmark's counts) and
raises ``AssertionError`` for a bug: any other exception, a typed error
that admits a bug (``ElfWriteError``, ``DiffOutputError``, the reader's
last-resort ``malformed ELF (...)``), or an invalid output.
"""

from __future__ import annotations

import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import elf_mutations as mut

from pykpatch.diff import run_diff
from pykpatch.elf import parse_elf, serialize
from pykpatch.elf.constants import SHF, SHN, SHT, STB, STT
from pykpatch.errors import DiffOutputError, ElfFormatError, ElfWriteError, PykpatchError
from pykpatch.records import FUNC_RECORD, FUNCS_SECTION, RELOC_RECORD, RELOCS_SECTION, STRINGS_SECTION
from pykpatch.symtab import KernelSymbolTable

# Small, varied corpus objects: fast to parse, so many inputs fit in the time budget.
ELF_SEEDS = [
    "cmdline-ubsan.ORIG.o", "clang-unnamed.ORIG.o", "plt32-relocations-issue-975.PATCHED.o",
    "import-ns.PATCHED.o", "meminfo-string.ORIG.o", "oot-issue-928.NOSTRIP.ORIG.o", "this_ip.ORIG.o",
]

# Corpus cases whose diff takes a few milliseconds, covering changed and new functions, .cold
# children, static locals, special sections (__bug_table, .fixup/__ex_table, .smp_locks,
# .altinstructions, __mcount_loc), string literals, livepatch relocations and an __init refusal.
DIFF_PAIRS = [
    "cmdline-ubsan", "clang-unnamed", "plt32-relocations-issue-975", "import-ns", "this_ip", "mrecord-mcount",
    "cold-add2", "cold-change-sub", "cold-del-sub", "meminfo-string", "data-new", "function-ptr-new",
    "smp-locks-section", "bug-table-section", "fixup-section", "mcount_loc-issue-1102", "gcc-static-local-var-3",
    "clang-special-static", "altinstr_aux", "meminfo-init",
]

ELF_MUTATORS: tuple[mut.Mutator, ...] = (mut.flip_bytes, mut.truncate, mut.elf_header_field,
                                         mut.section_header_field, mut.table_field, mut.mixed_damage)
# Damage that keeps most of an object readable, so that the diff itself is reached.
DIFF_MUTATORS: tuple[mut.Mutator, ...] = (mut.section_header_field, mut.table_field, mut.section_bytes,
                                          mut.mixed_damage, mut.flip_bytes)


def damage(seed: bytes, d: mut.Draw, mutators: tuple[mut.Mutator, ...]) -> bytes:
    """``seed`` with one drawn kind of damage, applied one to three times."""
    return bytes(mut.mutated(seed, d, d.pick(mutators), repeat=(1, 3)))


# Errors that admit a bug rather than describe the input.
BUG_ERRORS = (ElfWriteError, DiffOutputError)
SAFETY_NET = "malformed ELF ("

# x86_64 relocation types the kernel's module loader applies (arch/x86/kernel/module.c) and the
# bytes each one patches; the oracle's own table, independent of pykpatch.arch.
LOADER_WIDTHS = {0: 0, 1: 8, 2: 4, 4: 4, 10: 4, 11: 4, 24: 8}
NO_BYTES = (SHT.NULL, SHT.NOBITS, SHT.REL, SHT.RELA, SHT.SYMTAB, SHT.STRTAB, SHT.GROUP, SHT.SYMTAB_SHNDX)


class CaseTimeout(BaseException):
    """A case ran past its time limit (a BaseException so that no ``except Exception`` swallows it)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``CaseTimeout`` in the running code after ``seconds`` (main thread, POSIX)."""
    def expire(_signum, _frame):
        raise CaseTimeout(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- the ELF property ---------------------------------------------------------------------------

def check_elf(blob: bytes) -> str:
    """Read, write, read again.  Returns "refused", "unwritable" or "round trip"."""
    try:
        obj = parse_elf(bytes(blob), "fuzz.o")
    except ElfFormatError as err:
        assert not err.problem.startswith(SAFETY_NET), f"reader safety net hit: {err}"
        return "refused"
    try:
        written = serialize(obj)
    except (ElfWriteError, ElfFormatError):
        return "unwritable"
    try:
        parse_elf(written, "rewritten.o")
    except ElfFormatError as err:
        raise AssertionError(f"the writer wrote what the reader refuses: {err}") from None
    return "round trip"


# -- the diff property ----------------------------------------------------------------------------

@dataclass
class DiffPair:
    """One corpus case, loaded once: its objects, the parent table (the ORIG object) and struct sizes."""

    name: str
    orig: bytes
    patched: bytes
    table: KernelSymbolTable
    sizes: dict[str, int] = field(default_factory=dict)


def load_diff_pairs(corpus: Path, cases: dict, names: list[str] = DIFF_PAIRS) -> list[DiffPair]:
    pairs = []
    for name in names:
        case = cases[name]
        orig = corpus / f"{name}.ORIG.o"
        patched = corpus / f"{name}.PATCHED.o"
        if not patched.exists():
            patched = corpus / f"{name}.PATCHED.FAIL.o"
        sizes = {k: int(v) for k, v in case["env"].items()}
        pairs.append(DiffPair(name, orig.read_bytes(), patched.read_bytes(), KernelSymbolTable.load(orig), sizes))
    return pairs


def check_diff(pair: DiffPair, orig: bytes, patched: bytes, workdir: Path) -> str:
    """Diff damaged objects.  Returns "output" or "refused: <error class>"; raises AssertionError on a bug."""
    orig_path, patched_path, out = workdir / "orig.o", workdir / "patched.o", workdir / "out.o"
    orig_path.write_bytes(orig)
    patched_path.write_bytes(patched)
    out.unlink(missing_ok=True)
    try:
        run_diff(str(orig_path), str(patched_path), "vmlinux", pair.table, None, pair.sizes, str(out))
    except BUG_ERRORS as err:
        raise AssertionError(f"{pair.name}: {type(err).__name__}: {err}") from None
    except PykpatchError as err:
        assert not str(err).count(SAFETY_NET), f"{pair.name}: reader safety net hit: {err}"
        assert not out.exists(), f"{pair.name}: an output was written although the diff failed"
        return f"refused: {type(err).__name__}"
    problems = output_problems(out.read_bytes(), pair.table)
    assert not problems, f"{pair.name}: invalid output: " + "; ".join(problems[:5])
    return "output"


# -- the oracle: an output checked on raw records ------------------------------------------------

class _Raw:
    """Section headers, symbols and relocations of an ELF64 little-endian file, unpacked with struct."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        shoff, shnum, shstrndx = struct.unpack_from("<Q", blob, 0x28)[0], *struct.unpack_from("<HH", blob, 0x3C)
        self.headers = [struct.unpack_from("<IIQQQQIIQQ", blob, shoff + 64 * i) for i in range(shnum)]
        names = self.data(shstrndx)
        self.names = [names[h[0]:names.index(b"\0", h[0])].decode("latin-1") for h in self.headers]
        self.symtab = next(i for i, h in enumerate(self.headers) if h[1] == SHT.SYMTAB)
        self.symbols = list(struct.iter_unpack("<IBBHQQ", self.data(self.symtab)))
        strtab = self.data(self.headers[self.symtab][6])
        self.symbol_names = [strtab[s[0]:strtab.index(b"\0", s[0])].decode("latin-1") for s in self.symbols]

    def data(self, index: int) -> bytes:
        h = self.headers[index]
        return b"" if h[1] == SHT.NOBITS else self.blob[h[4]:h[4] + h[5]]

    def relocations(self, index: int) -> list[tuple[int, int, int, int]]:
        """(offset, symbol index, type, addend) of a RELA section."""
        return [(o, i >> 32, i & 0xFFFFFFFF, a) for o, i, a in struct.iter_unpack("<QQq", self.data(index))]

    def index_of(self, name: str) -> int | None:
        return self.names.index(name) if name in self.names else None


def output_problems(blob: bytes, table: KernelSymbolTable) -> list[str]:
    """What is wrong with a diff output (x86_64), as the module loader and livepatch core would find it."""
    try:
        raw = _Raw(blob)
    except (struct.error, ValueError, IndexError, StopIteration, UnicodeDecodeError) as err:
        return [f"unreadable: {type(err).__name__}: {err}"]
    problems = list(_header_problems(raw)) + list(_symbol_problems(raw))
    if problems:
        return problems
    return list(_relocation_problems(raw)) + list(_livepatch_problems(raw, table))


def _header_problems(raw: _Raw) -> Iterator[str]:
    n = len(raw.headers)
    for i, (_, kind, flags, _, offset, size, link, info, _, _) in enumerate(raw.headers[1:], 1):
        name = raw.names[i]
        if kind != SHT.NOBITS and offset + size > len(raw.blob):
            yield f"{name}: contents past the end of the file"
        if kind in (SHT.RELA, SHT.REL):
            if link != raw.symtab:
                yield f"{name}: sh_link {link} is not the symbol table"
            if not 0 < info < n or raw.headers[info][1] in NO_BYTES:
                yield f"{name}: sh_info {info} is not a section with contents"
        elif kind == SHT.SYMTAB:
            if not 0 < link < n or raw.headers[link][1] != SHT.STRTAB:
                yield f"{name}: sh_link {link} is not a string table"
            locals_ = sum(1 for s in raw.symbols if s[1] >> 4 == STB.LOCAL)
            if info != locals_ or any(s[1] >> 4 == STB.LOCAL for s in raw.symbols[info:]):
                yield f"{name}: sh_info {info} is not the first non-local symbol"
        elif kind not in (SHT.GROUP, SHT.SYMTAB_SHNDX):
            if link and not (flags & SHF.LINK_ORDER and 0 < link < n):
                yield f"{name}: sh_link {link} without SHF_LINK_ORDER"
            if info and not (flags & SHF.INFO_LINK and 0 < info < n):
                yield f"{name}: sh_info {info} without SHF_INFO_LINK"


def _symbol_problems(raw: _Raw) -> Iterator[str]:
    n = len(raw.headers)
    for name, (_, info, _, shndx, value, size) in zip(raw.symbol_names[1:], raw.symbols[1:], strict=True):
        if shndx in (SHN.UNDEF, SHN.ABS, SHN.COMMON):
            continue
        if shndx >= n:
            yield f"symbol {name}: section index {shndx}"
        elif info & 0xF in (STT.FUNC, STT.OBJECT) and value + size > raw.headers[shndx][5]:
            yield f"symbol {name}: {value:#x}+{size:#x} outside {raw.names[shndx]}"


def _relocation_problems(raw: _Raw) -> Iterator[str]:
    for i, h in enumerate(raw.headers):
        if h[1] != SHT.RELA:
            continue
        target = raw.headers[h[7]]
        for offset, sym, rtype, _ in raw.relocations(i):
            width = LOADER_WIDTHS.get(rtype)
            if width is None:
                yield f"{raw.names[i]}: relocation type {rtype} at {offset:#x} is not one the module loader applies"
            elif offset + width > target[5] or (width == 0 and offset >= target[5]):
                yield f"{raw.names[i]}: relocation at {offset:#x} is outside {raw.names[h[7]]} ({target[5]:#x} bytes)"
            if sym >= len(raw.symbols):
                yield f"{raw.names[i]}: relocation at {offset:#x}: symbol index {sym}"


def _records(raw: _Raw, section: str, size: int) -> Iterator[tuple[int, bytes, dict[int, tuple]]]:
    """(offset, bytes, relocations by offset) of each record of a .pykpatch.* section."""
    index = raw.index_of(section)
    rela = raw.index_of(".rela" + section)
    if index is None:
        return
    relocs = {r[0]: r for r in raw.relocations(rela)} if rela is not None else {}
    data = raw.data(index)
    for base in range(0, len(data), size):
        yield base, data[base:base + size], relocs


def _string(raw: _Raw, reloc: tuple | None) -> str | None:
    strings = raw.index_of(STRINGS_SECTION)
    if reloc is None or strings is None or raw.symbols[reloc[1]][3] != strings:
        return None
    data = raw.data(strings)
    start = raw.symbols[reloc[1]][4] + reloc[3]
    end = data.find(b"\0", start)
    return data[start:end].decode("latin-1") if 0 <= start < len(data) and end >= 0 else None


def _resolves(table: KernelSymbolTable, name: str | None, sympos: int, want_func: bool = False) -> bool:
    """Is there a symbol ``name`` in the parent that the livepatch core finds with ``sympos``?"""
    for ksym in table.by_name(name or ""):
        if not ksym.defined or (want_func and not ksym.is_func):
            continue
        if sympos == 0 and ksym.is_global or ksym.is_local and table.sympos(ksym) == sympos:
            return True
    return False


def _livepatch_problems(raw: _Raw, table: KernelSymbolTable) -> Iterator[str]:
    for base, record, relocs in _records(raw, RELOCS_SECTION, RELOC_RECORD):
        sympos, _addend, rtype, _flags = struct.unpack_from("<QqII", record, 24)
        name, objname = _string(raw, relocs.get(base + 8)), _string(raw, relocs.get(base + 16))
        dest = relocs.get(base)
        if objname != "vmlinux" or not _resolves(table, name, sympos):
            yield f"livepatch relocation to {name},{sympos} in {objname}: no such symbol in the parent"
        if dest is None or rtype not in LOADER_WIDTHS:
            yield f"livepatch relocation {base // RELOC_RECORD}: no destination or type {rtype}"
            continue
        shndx, value = raw.symbols[dest[1]][3], raw.symbols[dest[1]][4]
        at = value + dest[3]
        if not 0 < shndx < len(raw.headers) or at + LOADER_WIDTHS[rtype] > raw.headers[shndx][5]:
            yield f"livepatch relocation to {name}: destination {at:#x} outside its section"
    for base, record, relocs in _records(raw, FUNCS_SECTION, FUNC_RECORD):
        sympos = struct.unpack_from("<Q", record, 24)[0]
        name = _string(raw, relocs.get(base + 8))
        if not _resolves(table, name, sympos, want_func=True):
            yield f"patched function {name},{sympos}: no such function in the parent"
