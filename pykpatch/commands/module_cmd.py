"""``pykpatch module``: link diff outputs into a loadable livepatch module."""

from __future__ import annotations

import argparse

from pykpatch.kpatch_build.kmod import build_module

HELP = "build livepatch-NAME.ko from diff outputs with the kernel tree's kbuild"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outputs", nargs="+", metavar="DIFF_OUTPUT.o", help="objects written by 'pykpatch diff'")
    parser.add_argument("--name", required=True, help="patch name (module becomes livepatch-NAME)")
    parser.add_argument("--tree", required=True, help="the target kernel's prepared source tree")
    parser.add_argument("-o", "--output", help="output .ko (default: ./livepatch-NAME.ko)")
    parser.add_argument("-R", "--non-replace", action="store_true",
                        help="stack on loaded patches instead of replacing them (atomic replace is the default)")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="parallel make jobs (default: one per CPU)")
    parser.add_argument("--keep", metavar="DIR", help="build in DIR and keep it (for debugging)")
    parser.add_argument("--arch", metavar="ARCH",
                        help="the tree is another architecture's: make gets ARCH= and Debian's CROSS_COMPILE=")


def run(args: argparse.Namespace) -> int:
    import platform

    from pykpatch.arch import cross_make_variables, require_arch
    from pykpatch.kpatch_build.context import default_jobs
    from pykpatch.kpatch_build.kmod import sanitize_name

    name = sanitize_name(args.name)
    output = args.output or f"{name}.ko"
    variables = cross_make_variables(require_arch(args.arch), platform.machine()) if args.arch else None
    result = build_module(args.outputs, args.tree, name, output, replace=not args.non_replace,
                          jobs=args.jobs or default_jobs(), keep=args.keep, variables=variables)
    print(f"{result.path}: module {result.name}, {result.klp_relocations} livepatch relocation(s)")
    return 0
