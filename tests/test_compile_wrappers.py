"""Compile wrappers (issue 15): distcc/icecc/ccache in front of the kernel's compiler, remote compilers checked.

The choice and the masquerade are tested with a stand-in ``which``; the
remote-compiler check with real ``distccd`` daemons on loopback, one of
them given a compiler that stamps another gcc build into ``.comment`` and
one that writes other code under the same name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from distcc_util import daemons, hosts_spec, world_readable_dir

from pykpatch.errors import KernelInfoError, KernelMismatchError, UsageError
from pykpatch.kbuild.wrappers import (
    CompileWrappers,
    check_remote_compilers,
    choose_wrappers,
    distcc_host_specs,
    masquerade_environment,
    remote_hosts,
    wrappers_from_cc,
)

INSTALLED = {"distcc": "/usr/bin/distcc", "ccache": "/usr/bin/ccache", "icecc": "/usr/bin/icecc"}


def which_of(*present: str):
    return lambda name: INSTALLED[name] if name in present else None


# --- what CC and --distcc ask for -------------------------------------------------------------

@pytest.mark.parametrize(("cc", "chain"), [
    (None, ()), ("", ()), ("gcc-12", ()), ("distcc gcc-12", ("distcc",)), ("distcc", ("distcc",)),
    ("ccache distcc gcc-12", ("ccache", "distcc")), ("/usr/bin/icecc gcc-12", ("icecc",)),
])
def test_cc_wrappers_are_the_words_before_the_compiler(cc: str | None, chain: tuple[str, ...]) -> None:
    assert wrappers_from_cc(cc, "gcc-12") == chain


def test_cc_naming_another_compiler_is_refused_with_both_names() -> None:
    with pytest.raises(KernelMismatchError, match="gcc-13.*built with gcc-12") as info:
        wrappers_from_cc("distcc gcc-13", "gcc-12")
    assert "distcc gcc-12" in (info.value.hint or "")


def test_cc_with_flags_is_refused() -> None:
    with pytest.raises(UsageError, match="not flags"):
        wrappers_from_cc("distcc gcc-12 -O0", "gcc-12")


def test_distcc_goes_behind_ccache_when_ccache_is_installed() -> None:
    assert choose_wrappers(True, None, "gcc-12", which_of("distcc", "ccache")).chain == ("ccache", "distcc")
    assert choose_wrappers(True, None, "gcc-12", which_of("distcc")).chain == ("distcc",)


def test_cc_is_taken_as_written() -> None:
    """CC='distcc gcc-12' means distcc alone, even with ccache installed; no wrapper at all without one."""
    assert choose_wrappers(False, "distcc gcc-12", "gcc-12", which_of("distcc", "ccache")).chain == ("distcc",)
    assert not choose_wrappers(False, "gcc-12", "gcc-12", which_of("distcc", "ccache"))
    assert choose_wrappers(True, "distcc gcc-12", "gcc-12", which_of("distcc", "ccache")).chain == ("distcc",)


@pytest.mark.parametrize(("distcc", "cc", "message"), [
    (True, "icecc gcc-12", "contradict"),
    (False, "distcc icecc gcc-12", "one of distcc/icecc"),
    (False, "distcc ccache gcc-12", "ccache must come first"),
    (False, "distcc distcc gcc-12", "at most once"),
])
def test_wrapper_chains_that_make_no_sense_are_refused(distcc: bool, cc: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        choose_wrappers(distcc, cc, "gcc-12", which_of("distcc", "ccache", "icecc"))


def test_a_wrapper_not_installed_is_named_with_its_package() -> None:
    with pytest.raises(KernelInfoError, match="distcc is asked for but not installed") as info:
        choose_wrappers(True, None, "gcc-12", which_of())
    assert info.value.hint == "apt-get install distcc"


def test_a_compiler_given_as_a_path_cannot_be_masqueraded() -> None:
    with pytest.raises(UsageError, match="found on PATH"):
        choose_wrappers(True, None, "/opt/gcc/bin/gcc", which_of("distcc"))


# --- masquerade --------------------------------------------------------------------------------

def test_masquerade_puts_the_first_wrapper_in_the_compilers_name_first_on_path(tmp_path: Path) -> None:
    wrappers = CompileWrappers(("ccache", "distcc"), "gcc-12", dict(INSTALLED))
    env = masquerade_environment(wrappers, tmp_path / "w", base={"PATH": "/usr/bin:/bin"})
    assert env["PATH"] == f"{tmp_path / 'w'}:/usr/bin:/bin"
    assert os.readlink(tmp_path / "w" / "gcc-12") == "/usr/bin/ccache"
    assert env["CCACHE_PREFIX"] == "/usr/bin/distcc"
    again = masquerade_environment(CompileWrappers(("distcc",), "gcc-12", dict(INSTALLED)), tmp_path / "w",
                                   base={"PATH": "/usr/bin"})
    assert os.readlink(tmp_path / "w" / "gcc-12") == "/usr/bin/distcc" and "CCACHE_PREFIX" not in again
    assert masquerade_environment(CompileWrappers(), tmp_path / "none") == {} and not (tmp_path / "none").exists()


def test_masqueraded_compiler_keeps_kbuilds_command_and_compiles(tmp_path: Path) -> None:
    """'gcc' on PATH is distcc, which finds the real gcc further down (here: compiles locally, no hosts)."""
    wrappers = choose_wrappers(True, None, "gcc", shutil.which)
    env = {**os.environ, "DISTCC_HOSTS": "localhost",
           **masquerade_environment(wrappers, tmp_path / "w", base=os.environ)}
    (tmp_path / "a.c").write_text("int a(int x) { return x + 1; }\n")
    subprocess.run(["gcc", "-O2", "-c", "a.c", "-o", "a.o"], cwd=tmp_path, env=env, check=True)
    plain = subprocess.run(["gcc", "-O2", "-c", "a.c", "-o", "b.o"], cwd=tmp_path, check=True)
    assert plain.returncode == 0 and (tmp_path / "a.o").read_bytes() == (tmp_path / "b.o").read_bytes()


# --- distcc's host list --------------------------------------------------------------------------

def test_hosts_come_from_distcc_hosts_then_the_hosts_files(tmp_path: Path) -> None:
    assert distcc_host_specs({"DISTCC_HOSTS": "a/4 b:3633/8,lzo"}) == ["a/4", "b:3633/8,lzo"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "hosts").write_text("# build farm\nbuild1/16  build2/16 # rack 2\n--randomize\n")
    assert distcc_host_specs({"DISTCC_DIR": str(tmp_path / "d")}) == ["build1/16", "build2/16", "--randomize"]
    (tmp_path / "home" / ".distcc").mkdir(parents=True)
    (tmp_path / "home" / ".distcc" / "hosts").write_text("h1\n")
    assert distcc_host_specs({}, home=tmp_path / "home") == ["h1"]


def test_remote_hosts_leave_out_localhost_and_options_and_refuse_zeroconf() -> None:
    assert remote_hosts(["localhost/2", "--randomize", "a/4", "@b/8", "localhost", "c:1,lzo"]) == \
        ["a/4", "@b/8", "c:1,lzo"]
    with pytest.raises(UsageError, match="zeroconf"):
        remote_hosts(["+zeroconf"])


# --- the remote compiler check, against real daemons -------------------------------------------

@pytest.fixture
def daemon_dir() -> Iterator[Path]:
    path = world_readable_dir("pykpatch-distccd-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def distcc_wrappers() -> CompileWrappers:
    return CompileWrappers(("distcc",), "gcc", {"distcc": shutil.which("distcc") or "distcc"})


def fake_compiler(directory: Path, body: str) -> str:
    """A PATH for a daemon whose ``gcc`` runs the real one and then ``body`` (with $out: the object).

    distcc's client asks for ``x86_64-linux-gnu-gcc`` when told ``gcc`` (it
    names the target, so that a host of another architecture cannot answer
    with its native compiler): the stand-in has both names.
    """
    directory.mkdir(mode=0o755)
    for name in ("gcc", "x86_64-linux-gnu-gcc"):
        script = directory / name
        script.write_text("#!/bin/sh\n/usr/bin/gcc \"$@\" || exit $?\nout=; prev=\n"
                          "for a in \"$@\"; do [ \"$prev\" = -o ] && out=$a; prev=$a; done\n" + body)
        script.chmod(0o755)
    return f"{directory}:/usr/bin:/bin"


def test_every_host_is_probed_alone_and_must_match_byte_for_byte(daemon_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    with daemons(2, daemon_dir) as started:
        result = check_remote_compilers(distcc_wrappers(), tmp_path / "probe",
                                        env={**os.environ, "DISTCC_HOSTS": f"localhost/2 {hosts_spec(started)}"},
                                        log=lines.append)
        counts = [d.compiles() for d in started]
    assert result is not None and result.compiler.startswith("GCC: (")
    assert result.hosts == tuple(f"distcc host {d.host}/2" for d in started)
    assert counts == [1, 1]                       # each daemon compiled its probe, nothing fell back to local
    assert len(lines) == 2 and all("byte for byte the local one" in line for line in lines)


def test_a_host_with_another_gcc_build_is_refused_by_name(daemon_dir: Path, tmp_path: Path) -> None:
    other = fake_compiler(daemon_dir / "other-gcc", "printf 'GCC: (Debian 12.2.0-13) 12.2.0\\0' > $out.c\n"
                          "objcopy --update-section .comment=$out.c $out\n")
    with daemons(2, daemon_dir, paths=[None, other]) as started, pytest.raises(KernelMismatchError) as info:
        check_remote_compilers(distcc_wrappers(), tmp_path / "probe",
                               env={**os.environ, "DISTCC_HOSTS": hosts_spec(started)})
    message = str(info.value)
    assert f"distcc host {started[1].host}/2 compiles with GCC: (Debian 12.2.0-13) 12.2.0" in message
    assert info.value.local == "GCC: (Debian 12.2.0-13) 12.2.0" and info.value.kernel.startswith("GCC: (")


def test_a_host_writing_other_code_under_the_same_name_is_refused(daemon_dir: Path, tmp_path: Path) -> None:
    other = fake_compiler(daemon_dir / "odd-gcc", "objcopy --remove-section .text.unlikely $out 2>/dev/null\n"
                          "printf '\\220' | dd of=$out bs=1 seek=64 conv=notrunc 2>/dev/null\n")
    with daemons(1, daemon_dir, paths=[other]) as started, pytest.raises(KernelMismatchError) as info:
        check_remote_compilers(distcc_wrappers(), tmp_path / "probe",
                               env={**os.environ, "DISTCC_HOSTS": hosts_spec(started)})
    assert "writes other code" in str(info.value) and started[0].host in str(info.value)


def test_an_unreachable_host_is_named_and_nothing_falls_back(tmp_path: Path) -> None:
    from distcc_util import free_port

    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(KernelInfoError, match=f"distcc host {host} cannot compile a probe") as info:
        check_remote_compilers(distcc_wrappers(), tmp_path / "probe", env={**os.environ, "DISTCC_HOSTS": host})
    assert "distccd" in (info.value.hint or "")


def test_no_remote_host_at_all_is_refused(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed")
    with pytest.raises(KernelInfoError, match="no remote host"):
        check_remote_compilers(distcc_wrappers(), tmp_path / "probe",
                               env={**os.environ, "DISTCC_HOSTS": "localhost/4"})


def test_no_distributor_means_no_check(tmp_path: Path) -> None:
    assert check_remote_compilers(CompileWrappers(("ccache",), "gcc", dict(INSTALLED)), tmp_path) is None
