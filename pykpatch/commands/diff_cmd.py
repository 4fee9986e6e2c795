"""``pykpatch diff``: the live-patchable difference between two builds of an object.

Single pair::

    pykpatch diff ORIG.o PATCHED.o --parent vmlinux --symtab vmlinux --symvers Module.symvers -o OUT.o

Many pairs in one process (parent tables loaded once, pairs in parallel)::

    pykpatch diff --batch JOBS.json [--symtab FILE] [--symvers FILE] [--jobs N]

Exit codes: 0 patch produced, 3 no change, 2 unsupported change (reasons on
stderr, one per line), 1 error.  In batch mode, the most severe of all pairs
(1, then 2, then 3, then 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

from pykpatch.diff.engine import run_diff, struct_sizes_from_env
from pykpatch.errors import (
    EXIT_ERROR,
    EXIT_NO_CHANGE,
    EXIT_OK,
    EXIT_UNSUPPORTED,
    PykpatchError,
    UnsupportedChangeError,
    UsageError,
)
from pykpatch.symtab import KernelSymbolTable, ModuleSymvers

HELP = "diff an original and a patched object into a live-patch object (create-diff-object)"

SEVERITY = {EXIT_ERROR: 3, EXIT_UNSUPPORTED: 2, EXIT_NO_CHANGE: 1, EXIT_OK: 0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("orig", nargs="?", help="original object (.o)")
    parser.add_argument("patched", nargs="?", help="patched object (.o)")
    parser.add_argument("--parent", default="vmlinux", help="object being patched: vmlinux or a module name")
    parser.add_argument("--symtab", help="parent symbol table: vmlinux/.ko ELF file or 'readelf -s --wide' dump")
    parser.add_argument("--symvers", help="Module.symvers of the target kernel (may be empty)")
    parser.add_argument("-o", "--output", help="output object")
    parser.add_argument("--report", help="write a JSON report here")
    parser.add_argument("--batch", metavar="JOBS.json", help="run many pairs described in a JSON list")
    parser.add_argument("--jobs", type=int, default=0, help="parallel workers for --batch (default: CPUs)")
    parser.add_argument("--struct-size", action="append", default=[], metavar="VAR=N",
                        help="special-section struct size, e.g. BUG_STRUCT_SIZE=12 (overrides the environment)")
    parser.add_argument("-d", "--debug", action="store_true", help="print notes about each decision")


@dataclass
class Job:
    orig: str
    patched: str
    parent: str
    output: str | None
    report: str | None
    env: dict[str, str]
    symtab: str
    symvers: str | None


def _sizes(env: dict[str, str], overrides: list[str]) -> dict[str, int]:
    merged = dict(env)
    for item in overrides:
        var, _, value = item.partition("=")
        if not value:
            raise UsageError(f"--struct-size expects VAR=N, got {item!r}")
        merged[var] = value
    return struct_sizes_from_env(merged)


class _Tables:
    """Each distinct symbol table / symvers file is loaded once per process."""

    def __init__(self) -> None:
        self.symtabs: dict[str, KernelSymbolTable] = {}
        self.symvers: dict[str, ModuleSymvers] = {}

    def symtab(self, path: str) -> KernelSymbolTable:
        if path not in self.symtabs:
            self.symtabs[path] = KernelSymbolTable.load(path)
        return self.symtabs[path]

    def module_symvers(self, path: str | None) -> ModuleSymvers | None:
        if not path:
            return None
        if path not in self.symvers:
            self.symvers[path] = ModuleSymvers.load(path)
        return self.symvers[path]


_TABLES = None  # per worker process, set by _init_worker


def run_job(job: Job, tables: _Tables, struct_overrides: list[str], debug: bool = False) -> tuple[int, list[str]]:
    """Run one pair; return (exit code, stderr lines).  Writes output and report."""
    lines: list[str] = []
    report: dict = {"changed": [], "new": [], "funcs": [], "klp_symbols": [], "errors": []}
    try:
        sizes = _sizes(job.env, struct_overrides)
        result = run_diff(job.orig, job.patched, job.parent, tables.symtab(job.symtab),
                          tables.module_symvers(job.symvers), sizes, job.output)
        report = result.report()
        if debug:
            lines += [f"note: {n}" for n in result.notes]
        lines += [f"{os.path.basename(job.orig)}: changed function: {n}" for n in result.changed]
        lines += [f"{os.path.basename(job.orig)}: new function: {n}" for n in result.new]
        code = EXIT_OK
    except UnsupportedChangeError as err:
        lines += [f"error: {os.path.basename(job.orig)}: {r}" for r in err.reasons]
        lines.append(f"error: {err.message}")
        report["errors"] = err.reasons
        code = err.exit_code
    except PykpatchError as err:
        lines.append(f"error: {err.message}")
        if err.hint:
            lines.append(f"hint: {err.hint}")
        report["errors"] = [err.message]
        code = err.exit_code
    report["exit"] = code
    if job.report:
        with open(job.report, "w") as fh:
            json.dump(report, fh, indent=1, sort_keys=True)
    return code, lines


def _init_worker() -> None:
    global _TABLES
    _TABLES = _Tables()


def _worker(args: tuple[Job, list[str], bool]) -> tuple[int, list[str]]:
    job, overrides, debug = args
    assert _TABLES is not None
    return run_job(job, _TABLES, overrides, debug)


def _run_in_workers(jobs: list[Job], workers: int, struct_overrides: list[str],
                    debug: bool) -> list[tuple[int, list[str]]]:
    """The jobs spread over ``workers`` forked processes, results in job order.

    ``concurrent.futures.process`` (and with it ``multiprocessing``) is
    imported here, not with the module: a batch of one job, or a single pair,
    does not pay the ~12 ms of importing a pool it never starts.
    """
    from concurrent.futures import ProcessPoolExecutor

    payload = [(job, struct_overrides, debug) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
        return list(pool.map(_worker, payload, chunksize=max(1, len(jobs) // (workers * 4))))


def load_jobs(path: str, default_symtab: str | None, default_symvers: str | None) -> list[Job]:
    try:
        with open(path) as fh:
            raw = json.load(fh)
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(raw, list):
        raise UsageError(f"{path}: expected a JSON list of jobs")
    jobs = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "orig" not in item or "patched" not in item:
            raise UsageError(f"{path}: job {i} needs at least 'orig' and 'patched'")
        symtab = item.get("symtab") or default_symtab
        if not symtab:
            raise UsageError(f"{path}: job {i} has no symtab and --symtab was not given")
        env = {k: str(v) for k, v in (item.get("env") or {}).items()}
        merged_env = {**{k: v for k, v in os.environ.items() if k.endswith("_STRUCT_SIZE")}, **env}
        jobs.append(Job(item["orig"], item["patched"], item.get("parent", "vmlinux"), item.get("output"),
                        item.get("report"), merged_env, symtab, item.get("symvers") or default_symvers))
    return jobs


def most_severe(codes: list[int]) -> int:
    return max(codes, key=lambda c: SEVERITY.get(c, 3), default=EXIT_OK)


def run(args: argparse.Namespace) -> int:
    if args.batch:
        if args.orig or args.patched:
            raise UsageError("--batch takes no ORIG/PATCHED arguments")
        jobs = load_jobs(args.batch, args.symtab, args.symvers)
        workers = args.jobs or os.cpu_count() or 1
        workers = max(1, min(workers, len(jobs)))
        if workers == 1:
            tables = _Tables()
            results = [run_job(j, tables, args.struct_size, args.debug) for j in jobs]
        else:
            results = _run_in_workers(jobs, workers, args.struct_size, args.debug)
        for _code, lines in results:
            for line in lines:
                print(line, file=sys.stderr)
        return most_severe([code for code, _ in results])

    if not args.orig or not args.patched:
        raise UsageError("give ORIG.o and PATCHED.o (or --batch JOBS.json)")
    if not args.symtab:
        raise UsageError("--symtab is required (vmlinux, the module's .ko, or a readelf -s dump)")
    if not args.output:
        raise UsageError("-o OUT.o is required")
    job = Job(args.orig, args.patched, args.parent, args.output, args.report, dict(os.environ),
              args.symtab, args.symvers)
    code, lines = run_job(job, _Tables(), args.struct_size, args.debug)
    for line in lines:
        print(f"pykpatch: {line}", file=sys.stderr)
    return code
