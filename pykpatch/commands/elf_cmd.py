"""``pykpatch elf FILE``: show an object the way pykpatch sees it."""

from __future__ import annotations

import argparse
import sys

from pykpatch.elf import describe
from pykpatch.elf.reader import read_elf

HELP = "dump an ELF object's sections, symbols and relocations through pykpatch's model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="ELF object (.o, .ko, vmlinux)")
    parser.add_argument("--sections", action="store_true", help="show sections")
    parser.add_argument("--symbols", action="store_true", help="show symbols")
    parser.add_argument("--relocs", action="store_true", help="show relocations")


def run(args: argparse.Namespace) -> int:
    show_all = not (args.sections or args.symbols or args.relocs)
    obj = read_elf(args.file, relocations=show_all or args.relocs)
    out = sys.stdout
    print(describe.describe_header(obj), file=out)
    parts = []
    if show_all or args.sections:
        parts.append(("sections", describe.section_lines(obj)))
    if show_all or args.symbols:
        parts.append(("symbols", describe.symbol_lines(obj)))
    if show_all or args.relocs:
        parts.append(("relocations", describe.relocation_lines(obj)))
    for title, lines in parts:
        print(f"\n[{title}]", file=out)
        for line in lines:
            print(line, file=out)
    return 0
