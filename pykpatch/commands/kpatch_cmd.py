"""``kpatch`` (also ``pykpatch manage``): load, unload, list, info, install live patches.

    kpatch load MODULE.ko | --all [--timeout S] [--force]
    kpatch unload NAME|MODULE.ko [--timeout S] [--force]
    kpatch list [--json]
    kpatch info MODULE.ko|NAME [--json]
    kpatch install MODULE.ko [-k RELEASE] | --list
    kpatch uninstall NAME [-k RELEASE]

Progress (a stalled transition, what was signalled, reversed or forced)
goes to stderr; results to stdout.  ``PYKPATCH_SYSROOT=DIR`` makes every
path relative to DIR instead of ``/`` (an image prepared offline, tests).
Exit codes: 0 done, 1 error or refusal, 4 transition reversed after the
timeout, 5 transition stuck (see README, "kpatch").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HELP = "manage live patches on this system (kpatch load/unload/list/info/install)"
DEFAULT_TIMEOUT = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    timeout_help = ("seconds to wait for the patch transition before reversing it "
                    f"(default {DEFAULT_TIMEOUT:.0f}; the tasks holding it are named and signalled after 5)")
    force_help = "force a transition that does not finish in time instead of reversing it (unsafe)"
    p = sub.add_parser("load", help="load a live patch module and wait for it to apply")
    p.add_argument("module", nargs="?")
    p.add_argument("--all", action="store_true", help="load every module installed for the running kernel")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help=timeout_help)
    p.add_argument("--force", action="store_true", help=force_help)
    p = sub.add_parser("unload", help="disable and remove a live patch")
    p.add_argument("module")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help=timeout_help)
    p.add_argument("--force", action="store_true", help=force_help)
    p = sub.add_parser("list", help="list loaded and installed live patches")
    p.add_argument("--json", action="store_true", help="machine-readable (fields in README)")
    p = sub.add_parser("info", help="show what a live patch module patches, and its state")
    p.add_argument("module", help="a .ko file, or the name of a loaded or installed patch")
    p.add_argument("--json", action="store_true", help="machine-readable (fields in README)")
    p = sub.add_parser("install", help="install a live patch module to be loaded at every boot")
    p.add_argument("module", nargs="?")
    p.add_argument("-k", "--kernel-version", help="kernel release to install for (default: the running one)")
    p.add_argument("--list", action="store_true", help="list the installed modules, in load order")
    p = sub.add_parser("uninstall", help="remove an installed live patch module")
    p.add_argument("module")
    p.add_argument("-k", "--kernel-version", help="kernel release (default: the running one)")


def _progress(message: str) -> None:
    print(f"kpatch: {message}", file=sys.stderr, flush=True)


def make_system() -> Any:
    from pykpatch import manage

    root = os.environ.get("PYKPATCH_SYSROOT")
    if root:
        return manage.System.under(Path(root), say=_progress)
    return manage.System(say=_progress)


def _positive(timeout: float) -> float:
    from pykpatch.errors import UsageError

    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    return timeout


def _loaded_line(done: Any) -> str:
    return f"loaded {done.name}" + (" (transition forced)" if done.forced else "")


def run(args: argparse.Namespace) -> int:
    from pykpatch import manage
    from pykpatch.errors import ManageError, UsageError

    system = make_system()
    if args.action == "load":
        timeout = _positive(args.timeout)
        if args.all:
            done, failed = manage.load_installed(system, timeout, args.force)
            for d in done:
                print(_loaded_line(d))
            if failed:
                raise ManageError(f"{len(failed)} installed patch(es) failed to load: "
                                  + "; ".join(f.path.name for f in failed))
            return 0
        if not args.module:
            raise UsageError("give MODULE.ko or --all")
        print(_loaded_line(manage.load(system, Path(args.module), timeout, args.force)))
    elif args.action == "unload":
        gone = manage.unload(system, args.module, _positive(args.timeout), args.force)
        print(f"unloaded {gone.name}" + ("" if gone.removed else " (disabled; the module stays loaded)"))
    elif args.action == "list":
        doc = manage.list_document(system)
        print(json.dumps(doc, indent=2) if args.json else "\n".join(list_lines(doc)))
    elif args.action == "info":
        doc = manage.info_document(system, args.module)
        print(json.dumps(doc, indent=2) if args.json else "\n".join(info_lines(doc)))
    elif args.action == "install":
        release = args.kernel_version or system.release
        if args.list:
            print("\n".join(install_list_lines(system, args.kernel_version)))
        elif not args.module:
            raise UsageError("give MODULE.ko or --list")
        else:
            print(f"installed {manage.install(system, Path(args.module), release)}")
    elif args.action == "uninstall":
        print(f"removed {manage.uninstall(system, args.module, args.kernel_version or system.release)}")
    return 0


def _patch_state(p: dict[str, Any]) -> str:
    state = "enabled" if p["enabled"] else "disabled"
    if p["transition"]:
        state += ", in transition"
    if p["replace"] is not None:
        state += ", replace" if p["replace"] else ", stacked"
    return state


def _function_lines(objects: list[dict[str, Any]], indent: str) -> list[str]:
    lines = []
    for o in objects:
        for f in o["functions"]:
            pos = f" (sympos {f['sympos']})" if f["sympos"] else ""
            lines.append(f"{indent}{o['name']}: {f['name']}{pos}")
    return lines


def list_lines(doc: dict[str, Any]) -> list[str]:
    lines = ["Loaded patch modules:"]
    for p in doc["loaded"]:
        order = f"{p['stack_order']}. " if p["stack_order"] is not None else ""
        lines.append(f"  {order}{p['name']} [{_patch_state(p)}]")
    for name in doc["inactive_modules"]:
        lines.append(f"  {name} [inactive: replaced or disabled, module still loaded]")
    lines += ["", f"Installed patch modules (running kernel {doc['kernel_release']}):"]
    for e in doc["installed"]:
        if e["kernel_release"] == doc["kernel_release"]:
            lines.append(f"  {e['order']}. {e['file']}")
    others = [e for e in doc["installed"] if e["kernel_release"] != doc["kernel_release"]]
    if others:
        lines += ["", "Installed for other kernels:"]
        lines += [f"  {e['kernel_release']}: {e['order']}. {e['file']}" for e in others]
    lines += ["", "Boot-time loading (kpatch.service): " + ("enabled" if doc["boot_service_enabled"] else "off")]
    return lines


def info_lines(doc: dict[str, Any]) -> list[str]:
    lines = [f"name: {doc['name']}"]
    module = doc["module"]
    if module:
        lines.append(f"file: {module['path']}")
        for key in ("vermagic", "description"):
            if module[key]:
                lines.append(f"{key}: {module[key]}")
        lines.append(f"livepatch: {'Y' if module['livepatch'] else 'no'}")
        lines.append("patched functions:")
        lines += _function_lines(module["objects"], "  ") or ["  (not recorded in this module: not built by pykpatch)"]
        if module["klp_symbols"]:
            lines.append("livepatch symbols:")
            lines += [f"  {s}" for s in module["klp_symbols"]]
    loaded = doc["loaded"]
    lines.append("loaded: " + (_patch_state(loaded) if loaded else "no"))
    if loaded:
        lines += _function_lines(loaded["objects"], "  ")
    for e in doc["installed"]:
        lines.append(f"installed: {e['path']} (kernel {e['kernel_release']}, load order {e['order']})")
    return lines


def install_list_lines(system: Any, release: str | None) -> list[str]:
    from pykpatch import manage

    releases = [release] if release else manage.installed_releases(system)
    lines = []
    for r in releases:
        pairs = manage.installed_pairs(system, r)
        lines.append(f"{r}:" + ("" if pairs else " (none)"))
        lines += [f"  {i}. {path.name} ({name})" for i, (path, name) in enumerate(pairs, start=1)]
    return lines or ["no live patches installed"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kpatch`` command."""
    from pykpatch.cli import standalone_main

    return standalone_main("kpatch", sys.modules[__name__], argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
