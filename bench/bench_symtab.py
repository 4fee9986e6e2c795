"""Benchmark: load a kernel symbol table (``pykpatch.symtab.KernelSymbolTable.load``).

    python3 bench/bench_symtab.py [--symbols N] [--runs R] [VMLINUX_OR_DUMP ...]

Without arguments it synthesizes a vmlinux-like ELF (ET_EXEC, ~150k symbols in
FILE blocks of locals followed by the globals, as ``ld`` lays them out),
written through the ``pykpatch.elf`` writer, and times loading it; it also
times the same table as a ``readelf -s --wide`` dump when readelf exists.
Paths given on the command line (a real vmlinux, a .ko, a dump) are timed too.
The budget for a ~150k-symbol vmlinux is 1 s (2-core machine).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from pykpatch.elf import ElfObject, Section, StringTableSection, Symbol, SymbolTableSection, write_elf
from pykpatch.elf.constants import ET, SHF, SHN, SHT, STB, STT
from pykpatch.symtab import KernelSymbolTable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import best_of

BUDGET_S = 1.0


def make_vmlinux_like(path: str, nsyms: int = 150_000, locals_per_file: int = 20) -> int:
    """Write a vmlinux-shaped ELF with about ``nsyms`` symbols; return the exact count.

    Two thirds are locals in FILE blocks (file names repeat, as ``core.c`` does
    in a real vmlinux; some static names repeat across files so that sympos
    > 1 occurs), one third globals after all locals.  Addresses grow in table
    order, like a linked kernel.
    """
    obj = ElfObject(e_type=ET.EXEC)
    text = obj.add_section(Section(".text", SHT.PROGBITS, SHF.ALLOC | SHF.EXECINSTR, b"\xcc" * 64, align=16,
                                   addr=0xFFFFFFFF81000000))
    data = obj.add_section(Section(".data", SHT.PROGBITS, SHF.ALLOC | SHF.WRITE, b"\0" * 64, align=64,
                                   addr=0xFFFFFFFF82000000))
    strtab = obj.add_section(StringTableSection(".strtab", type=SHT.STRTAB))
    obj.symtab = obj.add_section(SymbolTableSection(".symtab", type=SHT.SYMTAB, align=8, entsize=24, link=strtab))
    obj.shstrtab = obj.add_section(StringTableSection(".shstrtab", type=SHT.STRTAB))
    nglobal = nsyms // 3
    nfiles = max(1, (nsyms - nglobal) // (locals_per_file + 1))
    addr = 0xFFFFFFFF81000000
    add = obj.symbols.append
    for f in range(nfiles):
        add(Symbol(f"file{f % (nfiles // 2 or 1)}.c", STB.LOCAL, STT.FILE, shndx=SHN.ABS))
        for i in range(locals_per_file):
            func = i % 3 != 2
            name = f"helper_{i}" if i < 2 else f"static_{f}_{i}"  # helper_0/1 repeat in every file
            add(Symbol(name, STB.LOCAL, STT.FUNC if func else STT.OBJECT, text if func else data,
                       value=addr, size=0x40))
            addr += 0x40
    for g in range(nglobal):
        add(Symbol(f"global_function_{g}", STB.GLOBAL, STT.FUNC, text, value=addr, size=0x80))
        addr += 0x80
    write_elf(obj, path)
    return len(obj.symbols)


def report(label: str, path: str, runs: int) -> float:
    seconds, table = best_of(runs, lambda: KernelSymbolTable.load(path))
    size_mb = os.path.getsize(path) / 1e6
    verdict = "ok" if seconds < BUDGET_S or len(table.symbols) < 140_000 else "OVER BUDGET"
    print(f"{label:<28} {len(table.symbols):>8} symbols {len(table.file_blocks):>6} files "
          f"{size_mb:>8.1f} MB  best {seconds * 1000:7.1f} ms  ({verdict})")
    # the first queries build the name index: time them too
    seconds_idx, _ = best_of(1, lambda: table.by_name("global_function_1"))
    print(f"{'':<28} first by_name() (builds the index): {seconds_idx * 1000:.1f} ms")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="real vmlinux / .ko / readelf dumps to time as well")
    parser.add_argument("--symbols", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-symtab-") as tmp:
        path = os.path.join(tmp, "vmlinux-like")
        start = time.perf_counter()
        count = make_vmlinux_like(path, args.symbols)
        print(f"synthesized {count} symbols through pykpatch.elf in {time.perf_counter() - start:.2f} s")
        worst = report("synthetic ELF", path, args.runs)
        if shutil.which("readelf"):
            dump = os.path.join(tmp, "vmlinux-like.symtab.txt")
            with open(dump, "wb") as fh:
                subprocess.run(["readelf", "-s", "--wide", path], stdout=fh, check=True)
            report("synthetic readelf dump", dump, args.runs)
        for real in args.paths:
            report(os.path.basename(real), real, args.runs)
    return 0 if worst < BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
