"""Stage "orig", targeted route: a tree that is configured and prepared, and nothing more.

A distribution kernel has some 17,600 compile units; a live patch needs a
handful.  So the tree is only configured and prepared once (``make
modules_prepare``: generated headers, kbuild's host tools, objtool), cached
by a stamp keyed by source, config and compiler; the patched stage then
compiles just the objects the patch reaches, in the tree, with the
distribution's own flags plus kpatch's.

Configuring never waits on a terminal.  ``make listnewconfig`` tells which
symbols the given config lacks (``/boot/config-*`` lacks four lines the
headers' ``.config`` has): they are taken from the reference config (the
headers package's) or refused by name.  After ``make olddefconfig`` every
option must keep the value it had: a change means a config of another
kernel (or another toolchain, whose version kconfig records), refused with
the options named.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pykpatch.errors import ConfigError
from pykpatch.kbuild.config import read_config
from pykpatch.kbuild.make import kbuild_environment
from pykpatch.kbuild.tree import KernelTree
from pykpatch.safeio import atomic_copy, atomic_write_text

Progress = Callable[[str], None]
PREPARE_TARGETS = ("modules_prepare",)
PREPARE_FORMAT = 2  # 2: prepared with plain flags (kpatch's go per object)
_NEW_SYMBOL = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=", re.MULTILINE)
SHOWN = 6


@dataclass(frozen=True)
class TreeInputs:
    """What goes into the tree before it is prepared (None: keep what the tree has)."""

    config: Path | None = None
    reference_config: Path | None = None   # completes a config that lacks symbols (the headers' .config)
    kernelvariables: Path | None = None    # Debian: CC, ARCH, KERNELRELEASE
    symvers: Path | None = None            # the kernel's Module.symvers


def _install(src: Path | None, dest: Path) -> None:
    if src is None:
        return
    if dest.is_file() and dest.read_bytes() == src.read_bytes():
        return
    atomic_copy(src, dest)


def missing_symbols(tree: KernelTree) -> list[str]:
    """Symbols kconfig would ask about for the tree's .config (``make listnewconfig``), asking nobody."""
    run = tree.make("-s", "listnewconfig", kcflags=None, what="make listnewconfig", capture=True)
    return _NEW_SYMBOL.findall(run.output)


def complete_config(tree: KernelTree, reference: Path | None) -> list[str]:
    """Add to .config what kconfig would prompt for, from ``reference``; return the names added."""
    missing = missing_symbols(tree)
    if not missing:
        return []
    lines = {}
    if reference is not None:
        for line in reference.read_text(errors="replace").splitlines():
            m = re.match(r"^(CONFIG_[A-Za-z0-9_]+)=|^# (CONFIG_[A-Za-z0-9_]+) is not set$", line)
            if m:
                lines[m.group(1) or m.group(2)] = line
    unknown = [s for s in missing if s not in lines]
    if unknown:
        raise ConfigError(
            f"the config lacks {len(unknown)} option(s) this source asks for: {', '.join(unknown[:SHOWN])}"
            + (f" and {len(unknown) - SHOWN} more" if len(unknown) > SHOWN else ""),
            hint="give the complete config the kernel was built with (a distribution's headers package has it)",
        )
    config = tree.path / ".config"
    with open(config, "a") as fh:
        fh.write("".join(f"{lines[s]}\n" for s in missing))
    return missing


def config_changes(before: dict[str, str | None], after: dict[str, str | None]) -> list[str]:
    """Options olddefconfig dropped or changed: the config is not this source's."""
    out = []
    for name, value in before.items():
        if name not in after:
            out.append(f"{name} (unknown to this source)")
        elif after[name] != value:
            out.append(f"{name}: {value!r} -> {after[name]!r}")
    return out


def differences_from_reference(given: Path, reference: Path) -> list[str]:
    """Where a given config disagrees with the kernel's own (options both set differently, or unknown to it).

    Options the given config lacks are not differences: ``/boot/config-*``
    lacks a few the headers' ``.config`` has, and they are completed from it.
    """
    mine, theirs = read_config(given), read_config(reference)
    out = []
    for name, value in mine.items():
        if name not in theirs:
            if value is not None:
                out.append(f"{name}={value} (the kernel's config does not have it)")
        elif theirs[name] != value:
            out.append(f"{name}: {value!r} here, {theirs[name]!r} in the kernel's")
    return out


def check_against_reference(inputs: TreeInputs) -> None:
    """A config given for a packaged kernel must be that kernel's (it may lack what /boot/config-* lacks)."""
    if inputs.config is None or inputs.reference_config is None or inputs.config == inputs.reference_config:
        return
    differ = differences_from_reference(inputs.config, inputs.reference_config)
    if differ:
        raise ConfigError(
            f"{inputs.config} is not the config of this kernel: {len(differ)} option(s) differ from "
            f"{inputs.reference_config}: " + "; ".join(differ[:SHOWN]),
            hint="give the kernel's own config (or none: the packages' is used)",
        )


def configure(tree: KernelTree, inputs: TreeInputs, progress: Progress) -> str:
    """Install config and variables, complete and check the config; return the final .config text."""
    check_against_reference(inputs)
    config = tree.path / ".config"
    _install(inputs.kernelvariables, tree.path / ".kernelvariables")
    _install(inputs.symvers, tree.path / "Module.symvers")
    if inputs.config is not None:
        _install(inputs.config, config)
    if not config.is_file():
        raise ConfigError(f"{tree.path} has no .config", hint="give the kernel's config with -c CONFIG")
    added = complete_config(tree, inputs.reference_config)
    if added:
        progress(f"config: completed {len(added)} option(s) from {inputs.reference_config}: {', '.join(added)}")
    before = read_config(config)
    tree.make("olddefconfig", kcflags=None, what="make olddefconfig")
    changed = config_changes(before, read_config(config))
    if changed:
        raise ConfigError(
            f"the config does not fit this source tree ({len(changed)} option(s) changed by kconfig): "
            + "; ".join(changed[:SHOWN]),
            hint="is it the config of another kernel version, or was the kernel built with another toolchain?",
        )
    return config.read_text()


def prepare(tree: KernelTree, stamp: Path, key: str, progress: Progress) -> str:
    """``make modules_prepare`` once per key; returns "prepared" or "prepared (cached)"."""
    try:
        data = json.loads(stamp.read_text())
        if (data.get("key") == key and data.get("format") == PREPARE_FORMAT
                and (tree.path / "scripts/mod/modpost").is_file()):
            progress("original build: the tree is prepared (cached); originals are compiled on demand")
            return "prepared (cached)"
    except (OSError, ValueError, AttributeError):
        pass
    stamp.unlink(missing_ok=True)
    started = time.monotonic()
    progress("original build: preparing the tree (make modules_prepare); originals are compiled on demand")
    # Plain, as the distribution built it: kpatch's flags go to the objects alone (per-object CFLAGS),
    # so asm-offsets & co. stay up to date between runs.
    tree.make(*PREPARE_TARGETS, kcflags=None, progress=progress, what="make modules_prepare")
    atomic_write_text(stamp, json.dumps({"key": key, "mode": "prepared", "format": PREPARE_FORMAT,
                                         "seconds": round(time.monotonic() - started, 1)}), mode=0o600)
    return "prepared"


def release_of_variables(variables: Path | None) -> str | None:
    """``override KERNELRELEASE = X`` of a Debian ``.kernelvariables`` (what utsrelease.h and vermagic get)."""
    if variables is None or not variables.is_file():
        return None
    m = re.search(r"^\s*(?:override\s+)?KERNELRELEASE\s*:?=\s*(\S+)", variables.read_text(), re.MULTILINE)
    return m.group(1) if m else None


def tree_release(tree: Path) -> str | None:
    """The release modules built in ``tree`` will carry, without building anything.

    A Debian tree's ``.kernelvariables`` overrides ``KERNELRELEASE``;
    otherwise a prepared tree's utsrelease.h says it.  None when neither
    exists yet.
    """
    found = release_of_variables(tree / ".kernelvariables")
    if found:
        return found
    uts = tree / "include/generated/utsrelease.h"
    if uts.is_file():
        m = re.search(r'#define UTS_RELEASE "([^"]*)"', uts.read_text())
        if m:
            return m.group(1)
    return None


def make_variable(makefile: Path, name: str) -> str:
    """What make itself makes of ``$(NAME)`` after reading ``makefile`` (conditionals, overrides and all).

    Debian's ``.kernelvariables`` sets ``CC = $(CROSS_COMPILE)gcc-12`` and, for
    6.12, ``override CROSS_COMPILE = x86_64-linux-gnu-`` (6.1 only inside a
    cross-build conditional): make evaluates that exactly as kbuild will.
    """
    probe = f"include {makefile}\n.PHONY: pykpatch-print\npykpatch-print:\n\t@echo '$({name})'\n"
    try:
        proc = subprocess.run(["make", "-s", "--no-print-directory", "-f", "-", "pykpatch-print"], input=probe,
                              capture_output=True, text=True, timeout=60, env=kbuild_environment()[0])
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def compiler_program(variables: Path | None, config: dict[str, str | None]) -> str | None:
    """The compiler kbuild will run: .kernelvariables' CC, else the config's CONFIG_CC_VERSION_TEXT program."""
    if variables is not None and variables.is_file():
        words = make_variable(variables, "CC").split()
        if words:
            return words[-1]  # after a ccache/distcc wrapper, if any
    text = config.get("CONFIG_CC_VERSION_TEXT")
    if text:
        program = text.split()[0]
        if shutil.which(program):
            return program
    return None
