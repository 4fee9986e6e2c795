"""Typed exceptions raised by library code.

Library code never calls ``sys.exit``: it raises one of these, and only
``pykpatch.cli`` turns them into a message on stderr and an exit code.
Every exception carries a one-line message meant for a person; ``hint``
(optional) says what to do about it.

Exit codes (documented in README.md):

====  =======================================================
0     success
1     error: bad input, I/O, a tool failed (``PykpatchError``)
2     unsupported change: the patch cannot be live patched
3     no change found between original and patched objects
4     ``kpatch``: a patch transition did not finish in time and was reversed
5     ``kpatch``: a patch transition did not finish, nor did its reversal
6     ``kpatch-build --kernels``: some kernels were built, others not (see its report)
130   interrupted (Ctrl-C)
====  =======================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNSUPPORTED = 2
EXIT_NO_CHANGE = 3
EXIT_TRANSITION_REVERSED = 4
EXIT_TRANSITION_STUCK = 5
EXIT_SOME_BUILT = 6
EXIT_INTERRUPTED = 130


class PykpatchError(Exception):
    """Base of every error pykpatch reports to a person."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ElfFormatError(PykpatchError):
    """A file is not a well-formed ELF object (truncated, corrupt, wrong kind)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class SymtabError(PykpatchError):
    """A kernel symbol table or Module.symvers file cannot be read."""


class UsageError(PykpatchError):
    """The command line or a job description is inconsistent."""


class UnsupportedChangeError(PykpatchError):
    """The patch changes something that cannot be live patched.

    ``reasons`` holds one line per problem, each naming the section or
    function concerned.
    """

    exit_code = EXIT_UNSUPPORTED

    def __init__(self, reasons: list[str], message: str | None = None, hint: str | None = None) -> None:
        super().__init__(message or f"{len(reasons)} unsupported change(s)", hint=hint)
        self.reasons = list(reasons)


class NoChangeError(PykpatchError):
    """Original and patched objects are equivalent: there is nothing to patch."""

    exit_code = EXIT_NO_CHANGE


class ElfWriteError(PykpatchError):
    """The in-memory model is inconsistent and cannot be written (a bug upstream of the writer)."""


class LabError(PykpatchError):
    """The kernel lab could not build, prepare or boot a test kernel.

    Raised for missing prerequisites, a failed unpack/configure/build (the
    message names the log file), an unusable cache, or QEMU failing to start.
    A guest that boots and then misbehaves is *not* an error: that is a
    result (``pykpatch.lab.BootResult``) the caller judges.
    """


class LabConfigError(LabError):
    """The configured kernel lacks options the lab's config fragment requires.

    ``mismatches`` holds one ``(option, wanted, got)`` triple per option that
    did not survive ``make olddefconfig`` (usually an unmet dependency).
    """

    def __init__(self, mismatches: list[tuple[str, str, str]], config_path: str) -> None:
        shown = ", ".join(f"{o}={g} (wanted {w})" for o, w, g in mismatches[:6])
        more = f" and {len(mismatches) - 6} more" if len(mismatches) > 6 else ""
        super().__init__(
            f"{config_path}: {len(mismatches)} required option(s) did not survive olddefconfig: {shown}{more}",
            hint="an option's dependencies are missing from the fragment; add them",
        )
        self.mismatches = list(mismatches)
        self.config_path = config_path


class BootFailed(LabError):
    """A guest booted but the run failed (panic, oops, WARN, failed step).

    Only raised when the caller asks for it (``BootResult.raise_for_failure``):
    ``pykpatch.lab.boot`` itself reports such outcomes in its result, because a
    test that provokes a panic wants to inspect it, not catch it.
    """


class BootTimeout(BootFailed):
    """QEMU did not finish within the hard timeout and was killed."""


class KernelInfoError(PykpatchError):
    """A fact about the target kernel cannot be read.

    Raised when vmlinux has no version banner or ``.comment``, a ``.config``
    or kernel tree is missing, a compiler cannot be run, or the kbuild probe
    of special-section struct sizes fails (the message names its log file).
    """


class KernelMismatchError(PykpatchError):
    """The target kernel and the local toolchain (or tree) disagree.

    A livepatch module built with a different compiler than the kernel's can
    differ in inlining, section layout and calling details, so kpatch-build
    refuses by default; the ``hint`` names the option that overrides it.
    ``kernel`` and ``local`` hold the two values that differ.
    """

    def __init__(self, message: str, kernel: str, local: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kernel = kernel
        self.local = local


class KbuildError(PykpatchError):
    """A make run in a kernel tree failed, hung, or could not be started (the message names the log)."""


class TreeError(PykpatchError):
    """The kernel tree cannot be built, does not match the target kernel, or cannot be put back."""


class PatchError(PykpatchError):
    """A patch file is unreadable, touches something it must not, or does not apply."""


class CacheError(PykpatchError):
    """pykpatch's cache directory cannot be used safely (another owner, wrong permissions, unwritable)."""


class ModuleBuildError(PykpatchError):
    """The livepatch module could not be built, converted or signed (kbuild failed, a key is unusable)."""


class DistroError(PykpatchError):
    """A distribution's package for the target kernel is missing, of another version, or cannot be fetched."""


class GuardError(PykpatchError):
    """An original object compiled here is not the running kernel's code (other source, config or compiler)."""


class ConfigError(PykpatchError):
    """The kernel configuration does not fit the source tree, or would need answers nobody can give."""


class DiffOutputError(PykpatchError):
    """The diff built an output that fails its own validation: an internal error, never a written file.

    Raised just before writing when the output object would have a
    relocation outside its section, a wrong ``sh_link``/``sh_info``, or a
    livepatch relocation or patched function that does not resolve in the
    parent's symbol table with its recorded ``sympos``.  Input the diff
    should refuse is refused earlier with its own error; reaching this one
    means a bug in pykpatch.  ``problems`` holds one line per defect found.
    """

    def __init__(self, name: str, problems: list[str]) -> None:
        shown = "; ".join(problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        super().__init__(
            f"{name}: internal error: the diff output failed validation, nothing was written: {shown}{more}",
            hint="this is a pykpatch bug: please report it with the two objects",
        )
        self.name = name
        self.problems = list(problems)


class ManageError(PykpatchError):
    """A live patch could not be loaded, unloaded or installed on this system."""


class ModuleRefused(ManageError):
    """``kpatch`` refuses a module before calling the kernel.

    The module is built for another kernel release (vermagic), is not a
    live patch module, or the caller cannot load modules (not root, no
    livepatch in this kernel).  ``found`` and ``expected`` hold the two
    values the one-line message compares.
    """

    def __init__(self, message: str, found: str, expected: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.found = found
        self.expected = expected


class TransitionReversed(ManageError):
    """A patch transition did not finish in time and was reversed.

    The system is back where it was before the command: a patch being
    loaded is not applied (and its module was removed), a patch being
    unloaded is still applied.  ``tasks`` names the tasks that held it.
    """

    exit_code = EXIT_TRANSITION_REVERSED

    def __init__(self, message: str, tasks: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.tasks = list(tasks)


class TransitionStuck(ManageError):
    """A patch transition did not finish and neither did its reversal.

    The patch is left in transition; the message says which tasks hold
    it, the hint what can still be done (wait, or force it).
    """

    exit_code = EXIT_TRANSITION_STUCK

    def __init__(self, message: str, tasks: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.tasks = list(tasks)


class KlpConversionError(PykpatchError):
    """A linked livepatch module's description (``.pykpatch.relocs``) is inconsistent."""


class DiffInputError(PykpatchError):
    """An input object of the diff is not what it expects (not built with -ffunction-sections...)."""


class SymbolLookupError(PykpatchError):
    """A symbol of the patched object cannot be matched to the parent kernel or module."""


class X86DecodeError(PykpatchError):
    """Bytes that are not a valid (or not a complete) x86-64 instruction."""

    def __init__(self, offset: int, problem: str, code: bytes = b"") -> None:
        shown = f" [{bytes(code).hex(' ')}]" if code else ""
        super().__init__(f"x86 decode at offset {offset:#x}: {problem}{shown}")
        self.offset = offset
        self.problem = problem
