"""``kpatch`` (also ``pykpatch manage``): load, unload, list, info, install live patches.

    kpatch load MODULE.ko | --all     insmod and wait for the transition to finish
    kpatch unload NAME|MODULE.ko      disable, wait for the reverse transition, rmmod
    kpatch list                       loaded patches (sysfs) and installed modules
    kpatch info MODULE.ko             what a module patches (functions, livepatch symbols)
    kpatch install MODULE.ko [-k R]   copy to /var/lib/kpatch/R (default: running kernel)
    kpatch uninstall NAME [-k R]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "manage live patches on this system (kpatch load/unload/list/info/install)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("load", help="load a live patch module and wait for it to apply")
    p.add_argument("module", nargs="?")
    p.add_argument("--all", action="store_true", help="load every module installed for the running kernel")
    p.add_argument("--timeout", type=float, default=60.0)
    p = sub.add_parser("unload", help="disable and remove a live patch")
    p.add_argument("module")
    p.add_argument("--timeout", type=float, default=60.0)
    sub.add_parser("list", help="list loaded and installed live patches")
    p = sub.add_parser("info", help="show what a live patch module patches")
    p.add_argument("module")
    for action in ("install", "uninstall"):
        p = sub.add_parser(action, help=f"{action} a live patch module for a kernel release")
        p.add_argument("module")
        p.add_argument("-k", "--kernel-version", default=os.uname().release)


def run(args: argparse.Namespace) -> int:
    from pykpatch import manage
    from pykpatch.errors import UsageError

    system = manage.System(
        sysfs=Path(os.environ.get("PYKPATCH_SYSFS_LIVEPATCH", manage.SYSFS_LIVEPATCH)),
        install_root=Path(os.environ.get("PYKPATCH_INSTALL_ROOT", manage.INSTALL_ROOT)),
    )
    if args.action == "load":
        if args.all:
            for ko in manage.installed(system, os.uname().release):
                print(f"loaded {manage.load(system, ko, args.timeout)}")
            return 0
        if not args.module:
            raise UsageError("give MODULE.ko or --all")
        print(f"loaded {manage.load(system, Path(args.module), args.timeout)}")
    elif args.action == "unload":
        print(f"unloaded {manage.unload(system, args.module, args.timeout)}")
    elif args.action == "list":
        print("Loaded patch modules:")
        for p in manage.list_loaded(system):
            state = "enabled" if p.enabled else "disabled"
            print(f"  {p.name} [{state}{', in transition' if p.transition else ''}]")
        release = os.uname().release
        print(f"\nInstalled patch modules ({release}):")
        for ko in manage.installed(system, release):
            print(f"  {ko.name}")
    elif args.action == "info":
        info = manage.module_info(Path(args.module))
        print(f"name: {info.name}")
        for key in ("vermagic", "description", "livepatch"):
            if key in info.modinfo:
                print(f"{key}: {info.modinfo[key]}")
        print("patched functions:")
        for objname, name, sympos in info.functions:
            print(f"  {objname}: {name}" + (f" (sympos {sympos})" if sympos else ""))
        if info.klp_symbols:
            print("livepatch symbols:")
            for s in info.klp_symbols:
                print(f"  {s}")
    elif args.action == "install":
        print(f"installed {manage.install(system, Path(args.module), args.kernel_version)}")
    elif args.action == "uninstall":
        print(f"removed {manage.uninstall(system, args.module, args.kernel_version)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kpatch`` command."""
    from pykpatch.cli import standalone_main

    return standalone_main("kpatch", sys.modules[__name__], argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
