"""The kernel release (``uname -r``): of a vmlinux, from its banner; of a tree, as its modules will say it."""

from __future__ import annotations

import re
from pathlib import Path

from pykpatch.elf.constants import SHF, SHT
from pykpatch.elf.headers import ElfHeaders
from pykpatch.errors import ElfFormatError, KbuildError, KernelInfoError
from pykpatch.kbuild import make as kbuild_make
from pykpatch.kbuild.make import first_error

# A `make kernelrelease` that takes longer than this is hung, not slow.
MAKE_TIMEOUT = 600.0

def open_elf_headers(path: Path) -> ElfHeaders:
    """A kernel image's ELF headers (unreadable: ``KernelInfoError``; malformed: ``ElfFormatError``)."""
    try:
        return ElfHeaders(path)
    except ElfFormatError as err:
        if err.problem.startswith("cannot read"):
            raise KernelInfoError(f"{path}: {err.problem}") from None
        raise


_BANNER_START = b"Linux version "
# "Linux version 6.1.192 (user@host) (gcc ...) #1 SMP ...": the release is
# what ``uname -r`` prints.  Requiring a digit and " (" after it skips format
# strings such as linux_proc_banner ("%s version %s (%s@%s) ...").
_BANNER = re.compile(rb"Linux version ([0-9][0-9A-Za-z._+~-]*) \(")


def release_from_banner(data: bytes) -> str | None:
    """The release in the first ``Linux version X (`` banner of ``data``, or None.

    ``bytes.find`` (memchr speed) locates candidates; the regex only checks
    each one, so a 30 MB ``.rodata`` is searched in milliseconds.
    """
    pos = data.find(_BANNER_START)
    while pos >= 0:
        match = _BANNER.match(data, pos)
        if match:
            return match.group(1).decode("ascii")
        pos = data.find(_BANNER_START, pos + 1)
    return None


def kernel_release_from_vmlinux(vmlinux: Path) -> str:
    """The release (``uname -r``) of ``vmlinux``, from its version banner.

    The banner (``linux_banner``) lives in ``.rodata``; other allocated data
    sections are searched only if it is not there, so the common case reads
    one section of the file.  Raises ``KernelInfoError`` if there is none
    (not a vmlinux, or a vmlinux of an exotic architecture).
    """
    with open_elf_headers(vmlinux) as elf:
        rodata = [h for h in elf.sections if h.name == ".rodata"]
        others = [h for h in elf.sections
                  if h.name != ".rodata" and h.type == SHT.PROGBITS and h.flags & SHF.ALLOC
                  and not h.flags & SHF.EXECINSTR]
        for header in rodata + others:
            release = release_from_banner(elf.data(header))
            if release is not None:
                return release
    raise KernelInfoError(
        f"{vmlinux}: no 'Linux version' banner found in .rodata or any other data section",
        hint="pass the kernel's uncompressed vmlinux (with its sections), not a bzImage or a module",
    )


_UTS_RELEASE = re.compile(r'^#define UTS_RELEASE "([^"]*)"', re.MULTILINE)


def kernel_release_from_tree(tree: Path, *, run_make: bool = False) -> str:
    """The release the kernel tree builds: what ``vermagic`` and ``uname -r`` will say.

    ``include/generated/utsrelease.h`` is what modules are stamped with, so it
    wins (a Debian build leaves ``include/config/kernel.release`` at the
    upstream version, 6.1.192, while utsrelease.h says 6.1.0-57-amd64); then
    ``include/config/kernel.release``; ``run_make`` (or neither file) asks
    kbuild (``make -s kernelrelease``).
    """
    require_tree(tree)
    if not run_make:
        for rel, parse in (("include/generated/utsrelease.h", _uts_release),
                           ("include/config/kernel.release", str.strip)):
            try:
                text = (tree / rel).read_text(errors="replace")
            except FileNotFoundError:
                continue
            except OSError as err:
                raise KernelInfoError(f"{tree / rel}: cannot read: {err.strerror}") from None
            value = parse(text)
            if value:
                return value
    try:
        proc = kbuild_make.run_make(tree, ["-s", "--no-print-directory", "kernelrelease"], log=Path("/dev/null"),
                        what="make kernelrelease", capture=True, check=False, timeout=MAKE_TIMEOUT)
    except KbuildError as err:
        raise KernelInfoError(err.message, hint=err.hint) from None
    lines = [line.strip() for line in proc.output.splitlines() if line.strip() and not line.startswith("make")]
    if proc.returncode != 0 or not lines:
        problem = first_error(proc.output.splitlines()) or f"exit {proc.returncode}, no output"
        raise KernelInfoError(f"{tree}: 'make kernelrelease' failed: {problem}",
                              hint="the tree must be configured (a .config, then make olddefconfig)")
    return lines[-1]


def _uts_release(text: str) -> str:
    m = _UTS_RELEASE.search(text)
    return m.group(1) if m else ""


def require_tree(tree: Path) -> None:
    if not (tree / "Makefile").is_file():
        raise KernelInfoError(f"{tree}: not a kernel tree (no Makefile)")
