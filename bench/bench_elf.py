"""Benchmark: read + write of the largest corpus object through the ELF model.

    python3 bench/bench_elf.py [--runs N] [--profile] [OBJECT ...]

Default object: ``unique-id-pr-1314.ORIG.o`` of the corpus (1.2 MB, 3251
sections, ~16k relocations), found through $PYKPATCH_CORPUS or
../shared/corpus/x86_64 beside the repository.  Prints the best of N runs
for read_elf, serialize and the round trip; ``--profile`` adds a cProfile
of one read + write.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
from pathlib import Path

from pykpatch.elf import read_elf, serialize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import best_of

DEFAULT = "unique-id-pr-1314.ORIG.o"


def corpus_dir() -> Path:
    env = os.environ.get("PYKPATCH_CORPUS")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "x86_64"


def bench(path: Path, runs: int, profile: bool) -> None:
    read_s, obj = best_of(runs, lambda: read_elf(path))
    nrel = sum(len(s.relocations or ()) for s in obj.relocation_sections())
    write_s, blob = best_of(runs, lambda: serialize(obj))
    both_s, _ = best_of(runs, lambda: serialize(read_elf(path)))
    print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB, {len(obj.sections)} sections, "
          f"{len(obj.symbols)} symbols, {nrel} relocations")
    print(f"  read_elf   best of {runs}: {read_s * 1000:7.1f} ms")
    print(f"  serialize  best of {runs}: {write_s * 1000:7.1f} ms  ({len(blob) / 1e6:.2f} MB out)")
    print(f"  round trip best of {runs}: {both_s * 1000:7.1f} ms")
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        serialize(read_elf(path))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("objects", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    objects = args.objects or [corpus_dir() / DEFAULT]
    for path in objects:
        if not path.is_file():
            print(f"bench_elf: {path}: not found (set PYKPATCH_CORPUS?)", file=sys.stderr)
            return 1
        bench(path, args.runs, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
