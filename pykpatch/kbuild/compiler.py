"""Which compiler built a kernel, and whether the local one is the same.

Objects of the original and patched builds come from the local compiler; if
it is not the kernel's, the "original" objects are not the kernel's code and
a live patch built from them can be wrong in ways no later stage detects.
The kernel's compiler is read from vmlinux's ``.comment`` (exactly as gcc
writes it there) and the local one converted to that format.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from pykpatch.errors import KernelInfoError, KernelMismatchError
from pykpatch.kbuild.make import first_error
from pykpatch.kbuild.release import open_elf_headers

# The kpatch-build option that turns the compiler check off (named in hints).
SKIP_COMPILER_CHECK_OPTION = "--skip-compiler-check"

def compiler_from_comment(data: bytes) -> str | None:
    """The compiler string of a ``.comment`` section, or None.

    ``.comment`` holds NUL-separated strings, one per distinct producer
    ("GCC: (Debian 12.2.0-14+deb12u1) 12.2.0", "Debian clang version 14.0.6",
    "Linker: LLD 14.0.6").  gcc's wins when present, as in kpatch-build.
    """
    entries = [e.decode("utf-8", "replace").strip() for e in data.split(b"\0")]
    entries = [e for e in entries if e]
    for entry in entries:
        if entry.startswith("GCC:"):
            return entry
    for entry in entries:
        if "clang version" in entry:
            return entry
    return None


# "gcc (Debian 12.2.0-14+deb12u1) 12.2.0", "x86_64-linux-gnu-gcc-12 (...) 12.2.0",
# "gcc (GCC) 13.2.1 20231011 (Red Hat 13.2.1-4)": program name, then exactly
# what gcc puts after "GCC: " in .comment (both are "(PKGVERSION) VERSION").
_GCC_VERSION_LINE = re.compile(r"^(\S+) (\(.*)$")


def compiler_from_version_line(line: str) -> str:
    """Convert a compiler's ``--version`` first line to its ``.comment`` string.

    gcc prints "PROG (PKGVERSION) VERSION" and writes "GCC: (PKGVERSION)
    VERSION" into objects; clang prints and writes the same string.  The
    package version is kept on purpose (``-dumpfullversion`` would drop it):
    12.2.0-14 and 12.2.0-14+deb12u1 are different builds, and kpatch-build
    requires the very compiler that built the kernel.
    """
    text = " ".join(line.split())
    if "clang version" in text:
        return text
    match = _GCC_VERSION_LINE.match(text)
    if match:
        return "GCC: " + match.group(2)
    raise KernelInfoError(f"cannot tell the compiler's version from its --version line {line!r}")


def compiler_of_vmlinux(vmlinux: Path) -> str:
    """The compiler that built ``vmlinux``, as recorded in its ``.comment``."""
    with open_elf_headers(vmlinux) as elf:
        comment = elf.named(".comment")
        found = compiler_from_comment(elf.data(comment)) if comment else None
    if found is None:
        what = "has no .comment section" if comment is None else "has no compiler string in .comment"
        raise KernelInfoError(f"{vmlinux} {what}: cannot tell which compiler built it",
                              hint=f"use an unstripped vmlinux, or pass {SKIP_COMPILER_CHECK_OPTION}")
    return found


def compiler_of(cc: str = "gcc") -> str:
    """The local compiler ``cc`` in ``.comment`` format (see compiler_from_version_line).

    ``cc`` may carry a wrapper (``"ccache gcc"``): it is split like a shell
    word list.
    """
    argv = shlex.split(cc)
    if not argv:
        raise KernelInfoError("no compiler given (empty compiler command)")
    try:
        proc = subprocess.run([*argv, "--version"], capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL, timeout=60, check=False)
    except FileNotFoundError:
        raise KernelInfoError(f"compiler {argv[0]!r} not found",
                              hint="install the compiler that built the kernel") from None
    except (OSError, subprocess.TimeoutExpired) as err:
        raise KernelInfoError(f"cannot run {cc} --version: {err}") from None
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or not lines:
        problem = first_error(proc.stderr.splitlines()) or f"exit {proc.returncode}"
        raise KernelInfoError(f"{cc} --version failed: {problem}")
    return compiler_from_version_line(lines[0])


def _for_people(comment: str) -> str:
    """'GCC: (Debian 12.2.0-14) 12.2.0' -> 'gcc (Debian 12.2.0-14) 12.2.0' (as gcc --version says it)."""
    return "gcc " + comment[len("GCC: "):] if comment.startswith("GCC: ") else comment


def check_compiler(vmlinux: Path, cc: str = "gcc") -> None:
    """Refuse to go on if ``cc`` is not the compiler that built ``vmlinux``.

    Objects of the original and patched builds come from ``cc``; if it is
    not the kernel's compiler the original objects are not the kernel's
    code, and a livepatch built from them can be wrong in ways no later
    stage detects.  Raises ``KernelMismatchError`` (exit code 1) whose hint
    names the override option.
    """
    kernel = compiler_of_vmlinux(vmlinux)
    local = compiler_of(cc)
    if " ".join(kernel.split()) != " ".join(local.split()):
        raise KernelMismatchError(
            f"vmlinux was built with {_for_people(kernel)} but {cc} here is {_for_people(local)}",
            kernel=kernel,
            local=local,
            hint=(f"install the compiler that built the kernel, or pass {SKIP_COMPILER_CHECK_OPTION} "
                  "(not recommended: the patch may not match the kernel's code)"),
        )
