"""Compile wrappers: distcc, icecc and ccache in front of the kernel's compiler.

A fleet build compiles the same few files for many kernels; spreading
those compiles over machines is the job of an existing distributed
compiler, not ours.  Three rules keep the objects the distribution's own:

- **Masquerade, never a changed ``CC``.**  The wrapper goes in front of the
  compiler through a directory early on ``PATH`` whose ``gcc-12`` is a
  symlink to ``distcc`` (the way distcc, ccache and icecc document it,
  ``/usr/lib/distcc``).  ``CC=distcc gcc-12`` on make's command line would
  change every command kbuild records in its ``.cmd`` files and every value
  kconfig recorded (``include/config/auto.conf.cmd`` checks ``$(CC)``): the
  prepared tree and every cached original object would be rebuilt, and the
  config re-made.  Masqueraded, kbuild sees exactly the commands it saw.
- **In the tree, relative paths.**  distcc preprocesses here, in the tree,
  and sends the result: ``__FILE__``, DWARF names and ``DW_AT_comp_dir`` are
  the local ones (the remote compiles a ``.i`` whose line markers carry
  them).  What it cannot keep: column numbers in ``.debug_line`` after a
  macro expanded to a different length (measured: ``__FILE__`` in a
  ``printf``).  The code, its relocations and every string are identical.
- **The remote compiler is checked, host by host, before the build.**  A
  probe is compiled here and on every distcc host alone (no fallback to a
  local compile): the objects must be byte for byte the same, so a host
  with another gcc build (even 12.2.0-13 against 12.2.0-14) or another
  assembler is refused by name before anything compiles.  icecc ships this
  machine's compiler to its helpers (``icecc-create-env``); its probe is
  forced remote (``ICECC_TEST_REMOTEBUILD``) and compared the same way.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pykpatch.errors import KernelInfoError, KernelMismatchError, UsageError
from pykpatch.kbuild.compiler import compiler_from_comment
from pykpatch.kbuild.make import first_error

Which = Callable[[str], str | None]

CACHING = "ccache"
DISTRIBUTING = ("distcc", "icecc")
WRAPPERS = (CACHING, *DISTRIBUTING)

# A probe with branches, a loop, a table, a string and a call: enough code
# for two different compiler builds to differ, and no macro whose expansion
# would shift DWARF columns between a local and a distcc compile.
PROBE_SOURCE = """\
extern int pykpatch_probe_sink(const char *what, long value);
static const unsigned char pykpatch_probe_table[8] = { 3, 1, 4, 1, 5, 9, 2, 6 };
long pykpatch_probe(long n, const char *what)
{
\tlong sum = 0;
\tfor (long i = 0; i < n; i++) {
\t\tswitch (i & 7) {
\t\tcase 0: sum += pykpatch_probe_table[i & 7] * i; break;
\t\tcase 3: sum ^= i << 3; break;
\t\tdefault: sum -= pykpatch_probe_table[(i * 5) & 7];
\t\t}
\t}
\treturn pykpatch_probe_sink(what ? what : "pykpatch", sum);
}
"""
PROBE_FLAGS = ("-O2", "-g", "-c")
PROBE_TIMEOUT = 120


@dataclass(frozen=True)
class CompileWrappers:
    """The wrappers in front of the compiler, outermost first: ``("ccache", "distcc")``."""

    chain: tuple[str, ...] = ()
    compiler: str = "gcc"
    paths: dict[str, str] = field(default_factory=dict)  # program -> its absolute path

    def __bool__(self) -> bool:
        return bool(self.chain)

    @property
    def distributor(self) -> str | None:
        """distcc or icecc, if compiles leave this machine."""
        return next((w for w in self.chain if w in DISTRIBUTING), None)

    def describe(self) -> str:
        return " -> ".join((*self.chain, self.compiler))


def wrappers_from_cc(cc: str | None, kernel_compiler: str) -> tuple[str, ...]:
    """The wrappers a user's ``CC="distcc gcc-12"`` (or ``"ccache icecc gcc-12"``) asks for.

    kbuild never takes ``CC`` from the environment (the kernel's Makefile
    sets it), so a plain ``CC=gcc-12`` changes nothing and is ignored; the
    words before the compiler are the wrappers.  A compiler named there must
    be the kernel's own.
    """
    if not cc:
        return ()
    words = shlex.split(cc)
    wrappers = []
    for word in words:
        if os.path.basename(word) not in WRAPPERS:
            break
        wrappers.append(os.path.basename(word))
    if not wrappers:
        return ()
    rest = words[len(wrappers):]
    if len(rest) > 1:
        raise UsageError(f"CC={cc!r}: only wrappers and a compiler can be given there, not flags",
                         hint="the kernel's flags come from its config; keep CC to e.g. 'distcc gcc-12'")
    if rest and os.path.basename(rest[0]) != kernel_compiler:
        raise KernelMismatchError(f"CC={cc!r} names the compiler {rest[0]}, but this kernel is built with "
                                  f"{kernel_compiler}", kernel=kernel_compiler, local=rest[0],
                                  hint=f"set CC='{' '.join(wrappers)} {kernel_compiler}', or only the wrappers")
    return tuple(wrappers)


def choose_wrappers(distcc: bool, cc: str | None, compiler: str, which: Which = shutil.which) -> CompileWrappers:
    """The wrapper chain for this run: ``CC``'s as written, ``--distcc`` behind ccache when it is installed.

    ccache goes first (it hashes the preprocessed source here and hands a
    miss to the distributor through ``CCACHE_PREFIX``); two distributors or
    a ccache behind another wrapper make no sense and are refused.
    """
    chain = list(wrappers_from_cc(cc, compiler))
    if distcc and "distcc" not in chain:
        if "icecc" in chain:
            raise UsageError("--distcc and CC naming icecc contradict each other", hint="choose one of them")
        chain.append("distcc")
        if CACHING not in chain and which(CACHING):
            chain.insert(0, CACHING)
    if len(set(chain)) != len(chain) or sum(w in DISTRIBUTING for w in chain) > 1:
        raise UsageError(f"compile wrappers {' '.join(chain)}: each at most once, and one of distcc/icecc")
    if CACHING in chain and chain[0] != CACHING:
        raise UsageError(f"compile wrappers {' '.join(chain)}: ccache must come first",
                         hint=f"CC='ccache {' '.join(w for w in chain if w != CACHING)} {compiler}'")
    if "/" in compiler and chain:
        raise UsageError(f"the kernel's compiler is given as a path ({compiler}): a compile wrapper can only "
                         "stand in for a compiler found on PATH")
    paths = {}
    for program in chain:
        found = which(program)
        if found is None:
            raise KernelInfoError(f"{program} is asked for but not installed", hint=f"apt-get install {program}")
        paths[program] = found
    return CompileWrappers(tuple(chain), compiler, paths)


def masquerade_environment(wrappers: CompileWrappers, directory: Path,
                           base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Make ``compiler`` on PATH be the wrapper chain: the variables to give make's environment.

    ``directory`` gets one symlink, named like the compiler, to the first
    wrapper; each wrapper finds the real compiler by the same name further
    down PATH (skipping links to itself).  ccache hands its misses to the
    next wrapper through ``CCACHE_PREFIX``.
    """
    if not wrappers:
        return {}
    environ = os.environ if base is None else base
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / wrappers.compiler
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(wrappers.paths[wrappers.chain[0]])
    env = {"PATH": os.pathsep.join(p for p in (str(directory), environ.get("PATH", "")) if p)}
    if wrappers.chain[0] == CACHING and len(wrappers.chain) > 1:
        env["CCACHE_PREFIX"] = wrappers.paths[wrappers.chain[1]]
    return env


def distcc_host_specs(env: Mapping[str, str] | None = None, home: Path | None = None) -> list[str]:
    """distcc's host list as distcc itself finds it: ``DISTCC_HOSTS``, else the hosts files.

    Order as in distcc(1): ``$DISTCC_HOSTS``, ``$DISTCC_DIR/hosts`` (default
    ``~/.distcc/hosts``), then the system ``/etc/distcc/hosts``.
    """
    environ = os.environ if env is None else env
    text = environ.get("DISTCC_HOSTS")
    if text is None:
        distcc_dir = Path(environ["DISTCC_DIR"]) if environ.get("DISTCC_DIR") else (home or Path.home()) / ".distcc"
        for candidate in (distcc_dir / "hosts", Path("/etc/distcc/hosts")):
            if candidate.is_file():
                text = candidate.read_text(errors="replace")
                break
    words: list[str] = []
    for line in (text or "").splitlines():
        words += line.split("#", 1)[0].split()
    return words


def remote_hosts(specs: list[str]) -> list[str]:
    """The host specs of ``specs`` that compile elsewhere (``localhost`` and options excluded).

    ``+zeroconf`` finds hosts only at compile time: those cannot be checked
    before the build, so it is refused.
    """
    hosts = []
    for spec in specs:
        if spec.startswith("--"):
            continue
        if spec.startswith("+zeroconf"):
            raise UsageError("distcc's +zeroconf host discovery cannot be checked before the build",
                             hint="list the hosts in DISTCC_HOSTS so each one's compiler can be checked")
        if spec.split("/", 1)[0].split(",", 1)[0] == "localhost":
            continue
        hosts.append(spec)
    return hosts


def distcc_jobs(env: Mapping[str, str] | None = None) -> int | None:
    """The number of compiles the distcc hosts take at once (``distcc -j``), or None."""
    try:
        proc = subprocess.run(["distcc", "-j"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL, env=dict(os.environ if env is None else env))
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = proc.stdout.strip()
    return int(text) if proc.returncode == 0 and text.isdigit() and int(text) > 0 else None


@dataclass(frozen=True)
class RemoteCheck:
    """What the remote-compiler check compared: every host, and the compiler string they all wrote."""

    hosts: tuple[str, ...]
    compiler: str


def check_remote_compilers(wrappers: CompileWrappers, scratch: Path, env: Mapping[str, str] | None = None,
                           log: Callable[[str], None] | None = None) -> RemoteCheck | None:
    """Refuse, naming the host, when a remote compile is not byte for byte a local one (module docstring).

    Returns None when no compile leaves this machine.
    """
    distributor = wrappers.distributor
    if distributor is None:
        return None
    environ = dict(os.environ if env is None else env)
    scratch.mkdir(parents=True, exist_ok=True)
    source = scratch / "pykpatch-probe.c"
    source.write_text(PROBE_SOURCE)
    local = _compile_probe([wrappers.compiler], source, scratch / "local.o", environ, "this machine")
    expected = _comment_of(local)
    if distributor == "icecc":
        runs = [("icecc's helpers", {"ICECC_TEST_REMOTEBUILD": "1"})]
    else:
        hosts = remote_hosts(distcc_host_specs(environ))
        if not hosts:
            raise KernelInfoError("distcc has no remote host to send compiles to",
                                  hint="set DISTCC_HOSTS (e.g. 'build1/16 build2/16') or list hosts in "
                                       "~/.distcc/hosts")
        runs = [(f"distcc host {host}",
                 {"DISTCC_HOSTS": host, "DISTCC_FALLBACK": "0", "DISTCC_SKIP_LOCAL_RETRY": "1"})
                for host in hosts]
    for index, (where, extra) in enumerate(runs):
        obj = _compile_probe([wrappers.paths[distributor], wrappers.compiler], source, scratch / f"remote{index}.o",
                             {**environ, **extra}, where)
        if obj != local:
            remote = _comment_of(obj)
            if remote != expected:
                raise KernelMismatchError(
                    f"{where} compiles with {remote or 'an unknown compiler'}, but {wrappers.compiler} here "
                    f"(the kernel's) is {expected}", kernel=expected or "", local=remote or "",
                    hint="install the kernel's compiler there, or remove the host from DISTCC_HOSTS")
            raise KernelMismatchError(
                f"{where} writes other code than {wrappers.compiler} here for the same source, with the same "
                f"compiler string ({expected}): another assembler or a modified compiler",
                kernel=expected or "", local=expected or "",
                hint="use hosts with the same binutils and compiler packages, or remove the host")
        if log is not None:
            log(f"{where}: a probe compiled there is byte for byte the local one ({expected})")
    hosts_checked = tuple(where for where, _ in runs)
    return RemoteCheck(hosts_checked, expected or "")


def _compile_probe(argv: list[str], source: Path, out: Path, env: dict[str, str], where: str) -> bytes:
    cmd = [*argv, *PROBE_FLAGS, source.name, "-o", str(out)]
    try:
        proc = subprocess.run(cmd, cwd=source.parent, capture_output=True, text=True, errors="replace",
                              timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL, env=env)
    except FileNotFoundError:
        raise KernelInfoError(f"{argv[0]} not found", hint="install the kernel's compiler") from None
    except (OSError, subprocess.TimeoutExpired) as err:
        raise KernelInfoError(f"{where}: compiling a probe did not finish: {err}") from None
    if proc.returncode != 0 or not out.is_file():
        problem = first_error(proc.stderr.splitlines()) or f"exit {proc.returncode}"
        raise KernelInfoError(f"{where} cannot compile a probe with {argv[-1]}: {problem}",
                              hint="start the compile daemon there with the kernel's compiler on its PATH "
                                   "(distccd --allow ...), or remove the host")
    return out.read_bytes()


def _comment_of(obj: bytes) -> str | None:
    """The compiler string of an object's ``.comment`` (a bytes search: any ELF class or byte order)."""
    start = obj.find(b"GCC: (")
    if start < 0:
        start = obj.find(b"clang version")
    if start < 0:
        return None
    end = obj.find(b"\0", start)
    return compiler_from_comment(obj[start:end if end >= 0 else len(obj)])
