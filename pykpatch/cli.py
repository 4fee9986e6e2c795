"""The ``pykpatch`` command: an umbrella over subcommands.

Each subcommand lives in its own module exposing::

    HELP: str                                   # one line for --help
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    # returns an exit code

and is listed in ``SUBCOMMANDS``.  Library code raises ``PykpatchError``;
this module is the only place that turns exceptions into messages and exit
codes (see ``pykpatch.errors``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pykpatch import __version__
from pykpatch.errors import EXIT_ERROR, EXIT_INTERRUPTED, PykpatchError

# (subcommand name, module implementing it)
SUBCOMMANDS: tuple[tuple[str, str], ...] = (
    ("elf", "pykpatch.commands.elf_cmd"),
    ("diff", "pykpatch.commands.diff_cmd"),
    ("module", "pykpatch.commands.module_cmd"),
    ("build", "pykpatch.commands.kpatch_build_cmd"),
    ("manage", "pykpatch.commands.kpatch_cmd"),
    ("lab", "pykpatch.commands.lab_cmd"),
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or of ``only`` (when the command line names it, the
    other subcommands' modules are not imported: a diff batch does not pay for the lab's)."""
    parser = argparse.ArgumentParser(
        prog="pykpatch",
        description="Build and inspect Linux livepatch modules.",
    )
    parser.add_argument("--version", action="version", version=f"pykpatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in SUBCOMMANDS:
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def report_error(err: PykpatchError, prog: str = "pykpatch") -> None:
    """Print one clear line (plus an optional hint) for a person."""
    print(f"{prog}: error: {err.message}", file=sys.stderr)
    if err.hint:
        print(f"{prog}: hint: {err.hint}", file=sys.stderr)


def run_guarded(func, args, prog: str = "pykpatch") -> int:
    """Run a subcommand, mapping typed errors to exit codes."""
    try:
        return int(func(args))
    except PykpatchError as err:
        report_error(err, prog)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR


def standalone_main(prog: str, module, argv: Sequence[str] | None = None) -> int:
    """Run one subcommand module as its own command (``kpatch-build``, ``kpatch``)."""
    parser = argparse.ArgumentParser(prog=prog, description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    return run_guarded(module.run, args, prog=prog)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    named = words[0] if words and words[0] in dict(SUBCOMMANDS) else None
    parser = build_parser(named)
    args = parser.parse_args(argv)
    return run_guarded(args._run, args)


if __name__ == "__main__":  # pragma: no cover - python -m pykpatch.cli
    sys.exit(main())
