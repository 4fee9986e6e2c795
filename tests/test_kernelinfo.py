"""Facts about the target kernel (pykpatch.kbuild, kpatch_build.struct_sizes), without a real kernel.

vmlinux files are synthetic ELF files made with the pykpatch.elf model and
writer; compilers are shell scripts that print a --version line; kernel
trees are a directory with a Makefile that mimics the bit of kbuild used.
The same functions run against the real lab kernel in
tests/lab/test_kernelinfo_lab.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
from pathlib import Path

import pytest

from pykpatch.elf import ElfObject, Section, StringTableSection, write_elf
from pykpatch.elf.constants import EM, ET, SHF, SHT, ElfClass, ElfData
from pykpatch.errors import (
    EXIT_ERROR,
    ElfFormatError,
    KernelInfoError,
    KernelMismatchError,
    PykpatchError,
)
from pykpatch.kbuild.compiler import (
    check_compiler,
    compiler_from_comment,
    compiler_from_version_line,
    compiler_of,
    compiler_of_vmlinux,
)
from pykpatch.kbuild.config import config_value, read_config
from pykpatch.kbuild.release import kernel_release_from_tree, kernel_release_from_vmlinux, release_from_banner
from pykpatch.kpatch_build import struct_sizes as kernelinfo
from pykpatch.kpatch_build.struct_sizes import STRUCT_SIZE_KEYS, probe_struct_sizes

DEBIAN_GCC = "GCC: (Debian 12.2.0-14+deb12u1) 12.2.0"
BANNER = (b"Linux version 6.1.192 (root@vm) (gcc (Debian 12.2.0-14+deb12u1) 12.2.0, "
          b"GNU ld (GNU Binutils for Debian) 2.40) #1 SMP Thu Nov 26 06:03:00 UTC 2026\n\0")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is required by these tests (apt-get install {tool})", pytrace=False)
    return path


# -- synthetic vmlinux ------------------------------------------------------------------

def fake_vmlinux(path: Path, sections: dict[str, bytes], *, elf_class: int = ElfClass.ELFCLASS64,
                 data: int = ElfData.ELFDATA2LSB, machine: int = EM.X86_64) -> Path:
    """An ET_EXEC file with the given PROGBITS sections (.text is executable, .comment not allocated)."""
    obj = ElfObject(elf_class, data, machine, ET.EXEC)
    for name, contents in sections.items():
        if name == ".comment":
            sec = Section(name, SHT.PROGBITS, SHF.MERGE | SHF.STRINGS, contents, entsize=1)
        elif name == ".text":
            sec = Section(name, SHT.PROGBITS, SHF.ALLOC | SHF.EXECINSTR, contents, align=16)
        else:
            sec = Section(name, SHT.PROGBITS, SHF.ALLOC | SHF.WRITE, contents, align=8)
        obj.add_section(sec)
    obj.shstrtab = obj.add_section(StringTableSection(".shstrtab", type=SHT.STRTAB))
    write_elf(obj, path)
    return path


@pytest.mark.parametrize(("elf_class", "data", "machine"), [
    (ElfClass.ELFCLASS64, ElfData.ELFDATA2LSB, EM.X86_64),
    (ElfClass.ELFCLASS64, ElfData.ELFDATA2MSB, EM.S390),
    (ElfClass.ELFCLASS32, ElfData.ELFDATA2MSB, EM.PPC),
], ids=["elf64le", "elf64be", "elf32be"])
def test_release_and_compiler_from_synthetic_vmlinux(tmp_path, elf_class, data, machine):
    rodata = b"\0" * 4000 + b"%s version %s (%s@%s) (%s) %s\n\0" + BANNER + b"\0" * 100
    path = fake_vmlinux(tmp_path / "vmlinux", {
        ".text": b"\x90" * 64,
        ".rodata": rodata,
        ".data": b"\0" * 32,
        ".comment": DEBIAN_GCC.encode() + b"\0",
    }, elf_class=elf_class, data=data, machine=machine)
    assert kernel_release_from_vmlinux(path) == "6.1.192"
    assert compiler_of_vmlinux(path) == DEBIAN_GCC


def test_banner_in_text_is_not_taken_and_data_is_searched_after_rodata(tmp_path):
    path = fake_vmlinux(tmp_path / "vmlinux", {
        ".text": b"Linux version 9.9.9 (not data)",
        ".rodata": b"no banner here\0",
        ".init.rodata": b"Linux version 5.10.0-rc1+ (u@h) (gcc) #2\n\0",
    })
    assert kernel_release_from_vmlinux(path) == "5.10.0-rc1+"


def test_no_banner_is_a_clear_error(tmp_path):
    path = fake_vmlinux(tmp_path / "vmlinux", {".rodata": b"%s version %s (%s@%s)\0", ".text": b"\xc3"})
    with pytest.raises(KernelInfoError) as info:
        kernel_release_from_vmlinux(path)
    assert str(path) in str(info.value) and "'Linux version' banner" in str(info.value)
    assert info.value.hint and "vmlinux" in info.value.hint


def test_not_an_elf_and_missing_file(tmp_path):
    junk = tmp_path / "bzImage"
    junk.write_bytes(b"MZ" + b"\0" * 100)
    with pytest.raises(ElfFormatError, match="bad magic"):
        kernel_release_from_vmlinux(junk)
    with pytest.raises(KernelInfoError, match="cannot read"):
        compiler_of_vmlinux(tmp_path / "absent")


def test_corrupt_headers_are_format_errors(tmp_path):
    path = fake_vmlinux(tmp_path / "vmlinux", {".rodata": BANNER})
    blob = path.read_bytes()
    short = tmp_path / "short"
    short.write_bytes(blob[:40])
    with pytest.raises(ElfFormatError, match="ELF header"):
        kernel_release_from_vmlinux(short)
    moved = bytearray(blob)
    struct.pack_into("<Q", moved, 0x28, len(blob) + 4096)  # e_shoff past the end
    bad = tmp_path / "bad"
    bad.write_bytes(moved)
    with pytest.raises(ElfFormatError, match="section header table"):
        kernel_release_from_vmlinux(bad)


@pytest.mark.parametrize(("data", "release"), [
    (BANNER, "6.1.192"),
    (b"xxLinux version 6.8.0-31-generic (buildd@lcy02) (x86_64-linux-gnu-gcc-13 ...", "6.8.0-31-generic"),
    (b"Linux version 4.18.0-553.el8_10.x86_64 (mockbuild@x) (gcc version 8.5.0)", "4.18.0-553.el8_10.x86_64"),
    (b"Linux version %s (%s@%s)\0Linux version 6.1.0 (a@b)", "6.1.0"),
    (b"Linux version 6.1.0\0", None),
    (b"", None),
])
def test_release_from_banner(data, release):
    assert release_from_banner(data) == release


# -- compilers --------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "expected"), [
    (b"GCC: (Debian 12.2.0-14+deb12u1) 12.2.0\0", DEBIAN_GCC),
    (b"\0GCC: (GCC) 13.2.1 20231011 (Red Hat 13.2.1-4)\0GCC: (GCC) 11.0\0", "GCC: (GCC) 13.2.1 20231011 (Red Hat 13.2.1-4)"),
    (b"Linker: LLD 14.0.6\0Debian clang version 14.0.6\0", "Debian clang version 14.0.6"),
    (b"Linker: LLD 14.0.6\0", None),
    (b"", None),
])
def test_compiler_from_comment(data, expected):
    assert compiler_from_comment(data) == expected


@pytest.mark.parametrize(("line", "expected"), [
    ("gcc (Debian 12.2.0-14+deb12u1) 12.2.0", DEBIAN_GCC),
    ("x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0", DEBIAN_GCC),
    ("cc (Ubuntu 13.2.0-23ubuntu4) 13.2.0\n", "GCC: (Ubuntu 13.2.0-23ubuntu4) 13.2.0"),
    ("gcc (GCC) 13.2.1 20231011 (Red Hat 13.2.1-4)", "GCC: (GCC) 13.2.1 20231011 (Red Hat 13.2.1-4)"),
    ("Debian clang version 14.0.6", "Debian clang version 14.0.6"),
    ("clang version 17.0.6 (Fedora 17.0.6-1.fc39)", "clang version 17.0.6 (Fedora 17.0.6-1.fc39)"),
])
def test_compiler_from_version_line(line, expected):
    assert compiler_from_version_line(line) == expected


def test_compiler_from_version_line_rejects_what_it_cannot_read():
    with pytest.raises(KernelInfoError, match="cannot tell the compiler's version"):
        compiler_from_version_line("12.2.0")


def fake_compiler(directory: Path, version_line: str, name: str = "gcc") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / name
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then\n'
        f"  echo '{version_line}'\n"
        "  echo 'Copyright (C) 2022 Free Software Foundation, Inc.'\n"
        "  exit 0\n"
        "fi\n"
        "echo \"$0: unexpected arguments $*\" >&2; exit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_compiler_of_a_local_compiler(tmp_path):
    cc = fake_compiler(tmp_path / "bin", "x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0")
    assert compiler_of(str(cc)) == DEBIAN_GCC
    # A wrapper command ("ccache gcc") is split like a shell word list.
    assert compiler_of(f"{need('env')} {cc}") == DEBIAN_GCC


def test_compiler_of_real_gcc_has_comment_format():
    need("gcc")
    assert compiler_of("gcc").startswith("GCC: (")


def test_compiler_of_errors(tmp_path):
    with pytest.raises(KernelInfoError, match="not found"):
        compiler_of(str(tmp_path / "no-such-gcc"))
    with pytest.raises(KernelInfoError, match="empty"):
        compiler_of("  ")
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'cc1: error: no' >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(KernelInfoError, match="cc1: error: no"):
        compiler_of(str(broken))


def test_check_compiler_mismatch_message_and_hint(tmp_path, monkeypatch):
    vmlinux = fake_vmlinux(tmp_path / "vmlinux", {".rodata": BANNER, ".comment": DEBIAN_GCC.encode() + b"\0"})
    fake_compiler(tmp_path / "bin", "gcc (Debian 12.2.0-14) 12.2.0")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.raises(KernelMismatchError) as info:
        check_compiler(vmlinux)
    err = info.value
    assert str(err) == ("vmlinux was built with gcc (Debian 12.2.0-14+deb12u1) 12.2.0 "
                        "but gcc here is gcc (Debian 12.2.0-14) 12.2.0")
    assert err.hint is not None and "--skip-compiler-check" in err.hint
    assert isinstance(err, PykpatchError) and err.exit_code == EXIT_ERROR == 1
    assert (err.kernel, err.local) == (DEBIAN_GCC, "GCC: (Debian 12.2.0-14) 12.2.0")


def test_check_compiler_clang_kernel_gcc_here(tmp_path):
    vmlinux = fake_vmlinux(tmp_path / "vmlinux", {".comment": b"Debian clang version 14.0.6\0Linker: LLD 14.0.6\0"})
    cc = fake_compiler(tmp_path / "bin", "gcc (Debian 12.2.0-14+deb12u1) 12.2.0")
    with pytest.raises(KernelMismatchError, match=r"built with Debian clang version 14\.0\.6 but .*gcc here is gcc \(Debian"):
        check_compiler(vmlinux, str(cc))


def test_check_compiler_match(tmp_path):
    vmlinux = fake_vmlinux(tmp_path / "vmlinux", {".comment": DEBIAN_GCC.encode() + b"\0"})
    cc = fake_compiler(tmp_path / "bin", "gcc (Debian 12.2.0-14+deb12u1)  12.2.0")  # spacing does not matter
    assert check_compiler(vmlinux, str(cc)) is None


def test_vmlinux_without_comment(tmp_path):
    vmlinux = fake_vmlinux(tmp_path / "vmlinux", {".rodata": BANNER})
    with pytest.raises(KernelInfoError, match="no .comment section") as info:
        compiler_of_vmlinux(vmlinux)
    assert "--skip-compiler-check" in (info.value.hint or "")
    vmlinux = fake_vmlinux(tmp_path / "vmlinux2", {".comment": b"Linker: LLD 14.0.6\0"})
    with pytest.raises(KernelInfoError, match="no compiler string"):
        compiler_of_vmlinux(vmlinux)


# -- .config ----------------------------------------------------------------------------

CONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.1.192 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14+deb12u1) 12.2.0"
CONFIG_LOCALVERSION=""
CONFIG_DEFAULT_HOSTNAME="(none)"
CONFIG_CMDLINE="console=ttyS0 quote=\\"x\\" back=\\\\"
CONFIG_BUG=y
CONFIG_E1000=m
# CONFIG_PRINTK_INDEX is not set
CONFIG_LOG_BUF_SHIFT=17
CONFIG_PHYSICAL_START=0x1000000
CONFIG_NEGATIVE=-1
# CONFIG_X86_X32 is set to something unusual: a comment, ignored
"""


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / ".config"
    path.write_text(CONFIG)
    return path


@pytest.mark.parametrize(("name", "value"), [
    ("CONFIG_BUG", "y"),
    ("BUG", "y"),
    ("E1000", "m"),
    ("PRINTK_INDEX", None),
    ("CONFIG_NOT_IN_FILE", None),
    ("LOCALVERSION", ""),
    ("CC_VERSION_TEXT", "gcc (Debian 12.2.0-14+deb12u1) 12.2.0"),
    ("DEFAULT_HOSTNAME", "(none)"),
    ("CMDLINE", 'console=ttyS0 quote="x" back=\\'),
    ("LOG_BUF_SHIFT", "17"),
    ("PHYSICAL_START", "0x1000000"),
    ("NEGATIVE", "-1"),
])
def test_config_value(config, name, value):
    assert config_value(config, name) == value


def test_read_config_distinguishes_not_set_from_absent(config):
    options = read_config(config)
    assert options["CONFIG_PRINTK_INDEX"] is None
    assert "CONFIG_NOT_IN_FILE" not in options
    assert "CONFIG_X86_X32" not in options
    assert len(options) == 10


def test_config_missing_file(tmp_path):
    with pytest.raises(KernelInfoError, match=r"\.config: cannot read the kernel configuration"):
        config_value(tmp_path / ".config", "BUG")


# -- kernel trees (a Makefile that plays kbuild) ----------------------------------------

def fake_tree(root: Path, makefile: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Makefile").write_text(makefile)
    return root


def test_release_from_tree_file_then_make(tmp_path):
    need("make")
    tree = fake_tree(tmp_path / "tree", "kernelrelease:\n\t@echo 6.1.192-from-make\n")
    assert kernel_release_from_tree(tree) == "6.1.192-from-make"
    (tree / "include" / "config").mkdir(parents=True)
    (tree / "include" / "config" / "kernel.release").write_text("6.1.192-from-file\n")
    assert kernel_release_from_tree(tree) == "6.1.192-from-file"
    assert kernel_release_from_tree(tree, run_make=True) == "6.1.192-from-make"


def test_release_from_tree_errors(tmp_path, monkeypatch):
    need("make")
    with pytest.raises(KernelInfoError, match="not a kernel tree"):
        kernel_release_from_tree(tmp_path)
    tree = fake_tree(tmp_path / "tree", "kernelrelease:\n\t@echo '*** Configuration file \".config\" not found!' >&2; false\n")
    with pytest.raises(KernelInfoError, match=r"'make kernelrelease' failed: \*\*\* Configuration file"):
        kernel_release_from_tree(tree)
    # An O= exported by the caller's shell must not redirect kbuild.
    tree2 = fake_tree(tmp_path / "tree2", "kernelrelease:\n\t@echo 'O=$(O)'\n")
    monkeypatch.setenv("O", "/elsewhere")
    assert kernel_release_from_tree(tree2) == "O="


# A kbuild stand-in: "make -C TREE M=DIR probe.o" compiles DIR/probe.c with the
# tree's include directories and the configuration given as -D flags.
PROBE_MAKEFILE = """\
CONFIG_FLAGS := {flags}
probe.o:
\t@echo '  CC [M]  $(M)/probe.o'
\t@gcc -c -w $(CONFIG_FLAGS) -I$(CURDIR)/arch/x86/include -I$(CURDIR)/include -o $(M)/probe.o $(M)/probe.c
"""

FAKE_HEADERS = {
    "include/linux/module.h": "",
    "include/linux/uaccess.h": "struct exception_table_entry {\n\tint insn, fixup, data;\n};\n",
    "include/linux/bug.h": "#include <asm-generic/bug.h>\n",
    "include/asm-generic/bug.h": "#ifdef CONFIG_GENERIC_BUG\nstruct bug_entry {\n\tint a, b;\n\tshort c, d;\n};\n#endif\n",
    "include/linux/jump_label.h": "#ifdef CONFIG_JUMP_LABEL\nstruct jump_entry {\n\tint code, target;\n\tlong key;\n};\n#endif\n",
    "include/linux/printk.h": "#ifdef CONFIG_PRINTK_INDEX\nstruct pi_entry {\n\tconst char *fmt, *func, *file;\n\tunsigned int line;\n\tconst char *level, *subsys_fmt_prefix;\n};\n#endif\n",
    "include/linux/static_call_types.h": "struct static_call_site {\n\tint addr, key;\n};\n",
    "arch/x86/include/asm/alternative.h": "struct alt_instr {\n\tint a, b;\n\tshort c;\n\tchar d, e;\n} __attribute__((packed));\n",
    # 6.8-like: the header exists but no longer defines struct paravirt_patch_site.
    "arch/x86/include/asm/paravirt.h": "#include <asm/paravirt_types.h>\n",
    "arch/x86/include/asm/paravirt_types.h": "struct paravirt_patch_template { int x; };\n",
    "arch/x86/include/asm/orc_types.h": "struct orc_entry {\n\tshort sp_offset, bp_offset;\n\tshort flags;\n} __attribute__((packed));\n",
}


def probe_tree(root: Path, flags: str) -> Path:
    tree = fake_tree(root, PROBE_MAKEFILE.format(flags=flags))
    for rel, text in FAKE_HEADERS.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    return tree


def test_probe_struct_sizes_follows_config_and_headers(tmp_path):
    need("make"), need("gcc")
    tree = probe_tree(tmp_path / "tree", "-DCONFIG_X86 -DCONFIG_BUG -DCONFIG_GENERIC_BUG -DCONFIG_PARAVIRT "
                                         "-DCONFIG_UNWINDER_ORC -DCONFIG_HAVE_STATIC_CALL_INLINE -DCONFIG_PRINTK_INDEX")
    sizes = probe_struct_sizes(tree, tmp_path / "work")
    assert sizes == {
        "BUG_STRUCT_SIZE": 12,
        "EX_STRUCT_SIZE": 12,
        "ALT_STRUCT_SIZE": 12,
        "ORC_STRUCT_SIZE": 6,
        "STATIC_CALL_STRUCT_SIZE": 8,
        "PRINTK_INDEX_STRUCT_SIZE": 48,
    }  # no JUMP (CONFIG_JUMP_LABEL unset), no PARA (the header has no such struct)
    assert set(sizes) <= set(STRUCT_SIZE_KEYS)
    source = (tmp_path / "work" / "probe.c").read_text()
    assert "char pykpatch_size_BUG[sizeof(struct bug_entry)];" in source
    assert "/* PARA_STRUCT_SIZE: no struct paravirt_patch_site in arch/x86/include/asm/paravirt_types.h */" in source
    assert (tmp_path / "work" / "Kbuild").read_text() == "obj-m := probe.o\n"
    assert "CC [M]" in (tmp_path / "work" / "probe.log").read_text()


def test_probe_minimal_config_and_shared_log(tmp_path):
    need("make"), need("gcc")
    tree = probe_tree(tmp_path / "tree", "-DCONFIG_JUMP_LABEL")
    log = tmp_path / "build.log"
    log.write_text("earlier stage\n")
    assert probe_struct_sizes(tree, tmp_path / "work", log=log) == {"EX_STRUCT_SIZE": 12, "JUMP_STRUCT_SIZE": 16}
    text = log.read_text()
    assert text.startswith("earlier stage\n") and "struct size probe: make -C" in text
    assert not (tmp_path / "work" / "probe.log").exists()


def test_probe_compile_failure_names_the_log(tmp_path):
    need("make"), need("gcc")
    tree = probe_tree(tmp_path / "tree", "-DCONFIG_X86")
    (tree / "arch/x86/include/asm/alternative.h").write_text("struct alt_instr {\n\tint a;\n};\nstruct alt_instr {\n\tint b;\n};\n")  # redefinition
    work = tmp_path / "work"
    work.mkdir()
    (work / "probe.o").write_text("stale")  # must not be taken for a result
    with pytest.raises(KernelInfoError) as info:
        probe_struct_sizes(tree, work)
    message = str(info.value)
    assert "struct size probe failed to compile" in message
    assert str(work / "probe.log") in message
    assert "error:" in message  # the compiler's first error line, to say what went wrong
    assert "error" in (work / "probe.log").read_text()


def test_probe_needs_a_tree_and_a_plain_workdir(tmp_path):
    with pytest.raises(KernelInfoError, match="not a kernel tree"):
        probe_struct_sizes(tmp_path, tmp_path / "work")
    tree = fake_tree(tmp_path / "tree", "")
    with pytest.raises(KernelInfoError, match="spaces"):
        probe_struct_sizes(tree, tmp_path / "my work")


def test_probe_without_exception_table_is_an_error(tmp_path, monkeypatch):
    need("make"), need("gcc")
    tree = probe_tree(tmp_path / "tree", "")
    probes = kernelinfo._probes_for(tree)
    monkeypatch.setattr(kernelinfo, "_probes_for", lambda _tree: tuple(p for p in probes if p.key != "EX_STRUCT_SIZE"))
    with pytest.raises(KernelInfoError, match="found no EX_STRUCT_SIZE"):
        probe_struct_sizes(tree, tmp_path / "work")
