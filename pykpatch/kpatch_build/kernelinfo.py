"""Facts about the target kernel, read from the kernel itself.

kpatch-build must know which kernel it patches (the release, to refuse a
tree that does not match the running vmlinux), which compiler built it (a
patch compiled by another gcc can inline and lay out code differently, so
the "changed functions" it finds are not the kernel's), how it is configured,
and the sizes of the structs that make up the kernel's special sections
(``__bug_table``, ``__ex_table``, ``.altinstructions``...), which
create-diff-object needs to split those sections into entries.

Everything here is read from the artifacts themselves rather than from
guesses about a distribution's layout:

- the release from the ``Linux version ...`` banner in vmlinux, or from the
  tree (``include/config/kernel.release`` / ``make kernelrelease``);
- the compiler from vmlinux's ``.comment``, in the exact format gcc writes
  there, and the local compiler converted to that same format;
- struct sizes by compiling a tiny probe against the tree with its own
  kbuild (about 1-2 s), instead of kpatch's scan of the whole DWARF dump of
  vmlinux (tens of seconds on a distribution kernel, and impossible when
  vmlinux has no debug info).

vmlinux may be ~600 MB (debug info included): only the ELF header, the
section headers and the few sections needed are read, never the whole file
and never the symbol table.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from pykpatch.elf import read_elf
from pykpatch.elf.constants import ELF_MAGIC, SHF, SHN, SHT, ElfClass, ElfData
from pykpatch.elf.structs import layout_for
from pykpatch.errors import ElfFormatError, KernelInfoError, KernelMismatchError

__all__ = [
    "SKIP_COMPILER_CHECK_OPTION", "STRUCT_SIZE_KEYS",
    "check_compiler", "compiler_from_comment", "compiler_from_version_line", "compiler_of",
    "compiler_of_vmlinux", "config_value", "kernel_release_from_tree", "kernel_release_from_vmlinux",
    "probe_struct_sizes", "read_config", "release_from_banner",
]

# The kpatch-build option that turns the compiler check off (named in hints).
SKIP_COMPILER_CHECK_OPTION = "--skip-compiler-check"

# A kernel build can take minutes when a tree is cold on a loaded machine;
# a probe or ``make kernelrelease`` that exceeds this is hung, not slow.
MAKE_TIMEOUT = 600.0

# Variables that would send a kbuild run elsewhere (O=, KBUILD_OUTPUT), make
# it build something else (M=, KBUILD_EXTMOD), tie it to a parent make's
# jobserver, or add flags: the probe must see the tree as it was built.
_KBUILD_ENV_DROP = (
    "KBUILD_OUTPUT", "O", "M", "KBUILD_EXTMOD", "MAKEFLAGS", "MFLAGS", "MAKELEVEL",
    "KCFLAGS", "KCPPFLAGS", "KAFLAGS",
)


# ---------------------------------------------------------------------------
# Reading a few sections of a (big) ELF file
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _SectionHeader:
    """The fields of a section header this module needs."""

    name: str
    type: int
    flags: int
    offset: int
    size: int


def _read_at(fh: BinaryIO, offset: int, size: int, path: str, what: str, file_size: int) -> bytes:
    if offset < 0 or size < 0 or offset > file_size or size > file_size - offset:
        raise ElfFormatError(path, f"{what} ({size:#x} bytes at {offset:#x}) is past the end of the file")
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise ElfFormatError(path, f"{what} is truncated")
    return data


def _section_headers(fh: BinaryIO, path: str) -> list[_SectionHeader]:
    """Parse the ELF header and section headers only.

    ``pykpatch.elf.read_elf`` would read the whole file and decode every
    symbol (~1.5 s and 600 MB of memory for a distribution vmlinux) to give
    us two small sections; this reads a few kilobytes.
    """
    file_size = os.fstat(fh.fileno()).st_size
    ident = _read_at(fh, 0, min(16, file_size), path, "ELF identification", file_size)
    if len(ident) < 16 or ident[:4] != ELF_MAGIC:
        raise ElfFormatError(path, "not an ELF file (bad magic)")
    if ident[4] not in (ElfClass.ELFCLASS32, ElfClass.ELFCLASS64):
        raise ElfFormatError(path, f"unknown ELF class {ident[4]}")
    if ident[5] not in (ElfData.ELFDATA2LSB, ElfData.ELFDATA2MSB):
        raise ElfFormatError(path, f"unknown ELF byte order {ident[5]}")
    layout = layout_for(ident[4], ident[5])
    ehdr = layout.ehdr.unpack(_read_at(fh, 0, layout.ehdr.size, path, "ELF header", file_size))
    shoff, shentsize, shnum, shstrndx = ehdr[6], ehdr[11], ehdr[12], ehdr[13]
    if shoff == 0:
        return []
    shdr = layout.shdr
    if shentsize != shdr.size:
        raise ElfFormatError(path, f"section header size {shentsize} (expected {shdr.size})")
    first = shdr.unpack(_read_at(fh, shoff, shdr.size, path, "section header table", file_size))
    count = shnum or first[5]  # extended numbering: the count is in sh_size of [0]
    if shstrndx == SHN.XINDEX:
        shstrndx = first[6]
    raw = _read_at(fh, shoff, count * shdr.size, path, f"section header table ({count} entries)", file_size)
    headers = list(shdr.iter_unpack(raw))
    names = b""
    if 0 < shstrndx < count:
        h = headers[shstrndx]
        names = _read_at(fh, h[4], h[5], path, "section name table", file_size)
    result = []
    for h in headers[1:]:
        end = names.find(b"\0", h[0]) if h[0] < len(names) else -1
        name = names[h[0]:end].decode("latin-1") if end >= 0 else ""
        result.append(_SectionHeader(name, h[1], h[2], h[4], h[5]))
    return result


def _section_data(fh: BinaryIO, path: str, header: _SectionHeader) -> bytes:
    if header.type == SHT.NOBITS:
        return b""
    return _read_at(fh, header.offset, header.size, path, f"section {header.name}", os.fstat(fh.fileno()).st_size)


def _open_elf(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as err:
        raise KernelInfoError(f"{path}: cannot read: {err.strerror or err}") from None


# ---------------------------------------------------------------------------
# Release
# ---------------------------------------------------------------------------

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
    path = str(vmlinux)
    with _open_elf(vmlinux) as fh:
        headers = _section_headers(fh, path)
        rodata = [h for h in headers if h.name == ".rodata"]
        others = [h for h in headers
                  if h.name != ".rodata" and h.type == SHT.PROGBITS and h.flags & SHF.ALLOC
                  and not h.flags & SHF.EXECINSTR]
        for header in rodata + others:
            release = release_from_banner(_section_data(fh, path, header))
            if release is not None:
                return release
    raise KernelInfoError(
        f"{vmlinux}: no 'Linux version' banner found in .rodata or any other data section",
        hint="pass the kernel's uncompressed vmlinux (with its sections), not a bzImage or a module",
    )


def kernel_release_from_tree(tree: Path, *, run_make: bool = False) -> str:
    """The release the kernel tree builds (``make -s kernelrelease``).

    ``include/config/kernel.release`` is what kbuild wrote at the last build,
    so it is read when present (no make run, ~0 ms); ``run_make`` asks
    kbuild anyway, for a tree whose LOCALVERSION may have changed since.
    """
    _require_tree(tree)
    if not run_make:
        try:
            text = (tree / "include" / "config" / "kernel.release").read_text(errors="replace").strip()
        except FileNotFoundError:
            text = ""
        except OSError as err:
            raise KernelInfoError(f"{tree}/include/config/kernel.release: cannot read: {err.strerror}") from None
        if text:
            return text
    proc = _run_make(tree, ["-s", "--no-print-directory", "kernelrelease"], capture=True)
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        problem = _first_error(proc.stderr.splitlines()) or f"exit {proc.returncode}, no output"
        raise KernelInfoError(f"{tree}: 'make kernelrelease' failed: {problem}",
                              hint="the tree must be configured (a .config, then make olddefconfig)")
    return lines[-1]


# ---------------------------------------------------------------------------
# Compiler
# ---------------------------------------------------------------------------

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
    path = str(vmlinux)
    with _open_elf(vmlinux) as fh:
        headers = _section_headers(fh, path)
        comment = next((h for h in headers if h.name == ".comment"), None)
        found = compiler_from_comment(_section_data(fh, path, comment)) if comment else None
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
        problem = _first_error(proc.stderr.splitlines()) or f"exit {proc.returncode}"
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


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

_CONFIG_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_CONFIG_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_CONFIG_ESCAPE = re.compile(r"\\(.)")


def read_config(config: Path) -> dict[str, str | None]:
    """All options of a kernel ``.config``: name -> value, None for "is not set".

    Values are as kconfig means them: ``"y"``, ``"m"``, the text of a
    number (``"0x1000"``, ``"-1"``), or a string without its quotes and
    escapes (``CONFIG_LOCALVERSION=""`` -> ``""``).  Options the file does
    not mention are absent.
    """
    try:
        text = config.read_text(errors="replace")
    except OSError as err:
        raise KernelInfoError(f"{config}: cannot read the kernel configuration: {err.strerror or err}",
                              hint="pass the kernel's .config (or /boot/config-RELEASE)") from None
    options: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.strip()
        match = _CONFIG_SET.match(line)
        if match:
            value = match.group(2)
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = _CONFIG_ESCAPE.sub(r"\1", value[1:-1])
            options[match.group(1)] = value
            continue
        match = _CONFIG_UNSET.match(line)
        if match:
            options[match.group(1)] = None
    return options


def config_value(config: Path, name: str) -> str | None:
    """One option's value in ``config`` (``name`` with or without ``CONFIG_``).

    None when the option is "not set" or absent: for kbuild both mean off.
    Reads the file on each call; use ``read_config`` for many look-ups.
    """
    key = name if name.startswith("CONFIG_") else f"CONFIG_{name}"
    return read_config(config).get(key)


# ---------------------------------------------------------------------------
# Special-section struct sizes
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _StructProbe:
    """One struct whose size create-diff-object needs, and when it exists.

    ``condition`` is a C preprocessor expression over the tree's CONFIG_
    macros: the probe asks the tree's own autoconf.h, which is what the
    kernel was built with.  ``defined_in`` is the header (relative to the
    tree) that defines the struct in the kernels we know; when the tree's
    copy has no ``struct NAME {`` the struct is left out, because that
    kernel version has no such section (e.g. paravirt_patch_site is gone
    from 6.8, static_call_site appeared in 5.10).
    """

    key: str
    struct: str
    condition: str
    includes: tuple[str, ...]
    defined_in: str | None

    @property
    def symbol(self) -> str:
        return "pykpatch_size_" + self.key.removesuffix("_STRUCT_SIZE")


# The keys of kpatch-build's find_special_section_data (x86_64); the conditions
# are where each struct (and so its section) exists in the kernel's headers.
_PROBES: tuple[_StructProbe, ...] = (
    _StructProbe("BUG_STRUCT_SIZE", "bug_entry", "defined(CONFIG_BUG) && defined(CONFIG_GENERIC_BUG)",
                 ("linux/bug.h",), "include/asm-generic/bug.h"),
    _StructProbe("EX_STRUCT_SIZE", "exception_table_entry", "1",
                 ("linux/uaccess.h",), None),
    _StructProbe("JUMP_STRUCT_SIZE", "jump_entry", "defined(CONFIG_JUMP_LABEL)",
                 ("linux/jump_label.h",), "include/linux/jump_label.h"),
    _StructProbe("ALT_STRUCT_SIZE", "alt_instr", "defined(CONFIG_X86)",
                 ("asm/alternative.h",), "arch/x86/include/asm/alternative.h"),
    _StructProbe("PARA_STRUCT_SIZE", "paravirt_patch_site", "defined(CONFIG_X86) && defined(CONFIG_PARAVIRT)",
                 ("asm/paravirt.h",), "arch/x86/include/asm/paravirt_types.h"),
    _StructProbe("ORC_STRUCT_SIZE", "orc_entry", "defined(CONFIG_X86) && defined(CONFIG_UNWINDER_ORC)",
                 ("asm/orc_types.h",), "arch/x86/include/asm/orc_types.h"),
    _StructProbe("STATIC_CALL_STRUCT_SIZE", "static_call_site", "defined(CONFIG_HAVE_STATIC_CALL_INLINE)",
                 ("linux/static_call_types.h",), "include/linux/static_call_types.h"),
    _StructProbe("PRINTK_INDEX_STRUCT_SIZE", "pi_entry", "defined(CONFIG_PRINTK_INDEX)",
                 ("linux/printk.h",), "include/linux/printk.h"),
)

STRUCT_SIZE_KEYS: tuple[str, ...] = tuple(p.key for p in _PROBES)

# Every kernel has an exception table; its absence means the probe is broken.
_ALWAYS = ("EX_STRUCT_SIZE",)

PROBE_NAME = "probe"


def _defines_struct(tree: Path, probe: _StructProbe) -> bool:
    if probe.defined_in is None:
        return True
    try:
        text = (tree / probe.defined_in).read_text(errors="replace")
    except FileNotFoundError:
        return False
    except OSError as err:
        raise KernelInfoError(f"{tree / probe.defined_in}: cannot read: {err.strerror}") from None
    return re.search(rf"^struct {re.escape(probe.struct)}\s*\{{", text, re.MULTILINE) is not None


def _probe_source(tree: Path) -> str:
    """The C file whose objects' sizes are the struct sizes, for this tree."""
    lines = [
        "/* Generated by pykpatch (kpatch_build.kernelinfo.probe_struct_sizes): each",
        " * pykpatch_size_X object is as big as one special-section struct. */",
        "#include <linux/module.h>",
    ]
    for probe in _PROBES:
        if not _defines_struct(tree, probe):
            lines.append(f"/* {probe.key}: no struct {probe.struct} in {probe.defined_in} */")
            continue
        lines.append(f"#if {probe.condition}")
        lines.extend(f"#include <{inc}>" for inc in probe.includes)
        lines.append(f"char {probe.symbol}[sizeof(struct {probe.struct})];")
        lines.append("#endif")
    return "\n".join(lines) + "\n"


def probe_struct_sizes(tree: Path, workdir: Path, log: Path | None = None) -> dict[str, int]:
    """kpatch's special-section struct sizes for the tree's configuration.

    Keys are those of kpatch-build's environment (``BUG_STRUCT_SIZE``,
    ``EX_STRUCT_SIZE``, ``JUMP_STRUCT_SIZE``, ``ALT_STRUCT_SIZE``,
    ``PARA_STRUCT_SIZE``, ``ORC_STRUCT_SIZE``, ``STATIC_CALL_STRUCT_SIZE``,
    ``PRINTK_INDEX_STRUCT_SIZE``); a key is present only when the tree's
    configuration has that section.

    A generated C file defining one object per struct (``char
    pykpatch_size_BUG[sizeof(struct bug_entry)];`` under the config
    condition) is compiled as an external-module object with the tree's own
    kbuild (``make -C TREE M=WORKDIR probe.o``), so the compiler, flags and
    configuration are exactly the kernel's; the sizes are the objects'
    symbol sizes.  Takes 1-2 s.  The tree is only read.

    ``workdir`` receives the probe files; make's output is appended to
    ``log`` (the pipeline's build log) or written to ``WORKDIR/probe.log``.
    A failed compile raises ``KernelInfoError`` naming that log.
    """
    _require_tree(tree)
    workdir = workdir.resolve()
    if any(c.isspace() for c in str(workdir)) or ":" in str(workdir):
        raise KernelInfoError(f"{workdir}: kbuild cannot build in a directory whose path has spaces or ':'",
                              hint="choose a work directory with a plain path")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "Kbuild").write_text(f"obj-m := {PROBE_NAME}.o\n")
        (workdir / f"{PROBE_NAME}.c").write_text(_probe_source(tree))
        # A stale object from another tree could look up to date to kbuild.
        (workdir / f"{PROBE_NAME}.o").unlink(missing_ok=True)
    except OSError as err:
        raise KernelInfoError(f"{workdir}: cannot write the struct size probe: {err.strerror or err}") from None

    log_path = log if log is not None else workdir / f"{PROBE_NAME}.log"
    args = [f"M={workdir}", f"{PROBE_NAME}.o"]
    try:
        with open(log_path, "a" if log is not None else "w", encoding="utf-8", errors="replace") as out:
            out.write(f"\n===== struct size probe: make -C {tree} {' '.join(args)} =====\n")
            out.flush()
            start = out.tell()
            proc = _run_make(tree, args, capture=False, output=out)
    except OSError as err:
        raise KernelInfoError(f"{log_path}: cannot write the probe log: {err.strerror or err}") from None
    obj_path = workdir / f"{PROBE_NAME}.o"
    if proc.returncode != 0 or not obj_path.is_file():
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            fh.seek(start)
            problem = _first_error(fh.read().splitlines()) or f"make exit {proc.returncode}"
        raise KernelInfoError(
            f"struct size probe failed to compile against {tree}: {problem} (full output in {log_path})",
            hint="the tree must be configured and built (make olddefconfig && make) with the compiler here",
        )
    try:
        obj = read_elf(obj_path, relocations=False)
    except ElfFormatError as err:
        raise KernelInfoError(f"struct size probe object is unreadable: {err} (an LTO build makes bitcode?)",
                              hint=f"see {log_path}") from None
    found = {sym.name: sym.size for sym in obj.symbols}
    sizes = {p.key: found[p.symbol] for p in _PROBES if p.symbol in found}
    missing = [key for key in _ALWAYS if key not in sizes]
    if missing:
        raise KernelInfoError(f"struct size probe of {tree} found no {', '.join(missing)} in {obj_path}",
                              hint=f"see {workdir / (PROBE_NAME + '.c')} and {log_path}")
    return sizes


# ---------------------------------------------------------------------------
# Running kbuild
# ---------------------------------------------------------------------------

def _require_tree(tree: Path) -> None:
    if not (tree / "Makefile").is_file():
        raise KernelInfoError(f"{tree}: not a kernel tree (no Makefile)")


def _kbuild_env() -> dict[str, str]:
    """The caller's environment without what would redirect kbuild; C messages."""
    env = {k: v for k, v in os.environ.items() if k not in _KBUILD_ENV_DROP}
    env["LC_ALL"] = "C"
    return env


def _run_make(tree: Path, args: list[str], *, capture: bool,
              output: IO[str] | None = None) -> subprocess.CompletedProcess[str]:
    """``make -C TREE ARGS`` in a clean kbuild environment; output captured or sent to ``output``."""
    cmd = ["make", "-C", str(tree), *args]
    try:
        return subprocess.run(
            cmd,
            stdout=subprocess.PIPE if capture else output,
            stderr=subprocess.PIPE if capture else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_kbuild_env(),
            text=True,
            errors="replace",
            timeout=MAKE_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise KernelInfoError("make not found", hint="install make (apt-get install make)") from None
    except subprocess.TimeoutExpired:
        raise KernelInfoError(f"{' '.join(cmd)} did not finish in {MAKE_TIMEOUT:.0f} s") from None
    except OSError as err:
        raise KernelInfoError(f"cannot run make: {err.strerror or err}") from None


_ERROR_LINE = re.compile(r"\berror\b|\*\*\*", re.IGNORECASE)


def _first_error(lines: list[str]) -> str | None:
    """The most telling line of a failed tool's output: its first error."""
    for line in lines:
        if _ERROR_LINE.search(line):
            return line.strip()
    return lines[-1].strip() if lines else None
