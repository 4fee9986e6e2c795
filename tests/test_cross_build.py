"""Building for another architecture's kernel on this x86_64 host: ``--arch``, ARCH/CROSS_COMPILE.

A stand-in kbuild (a Makefile that compiles the probe with the cross
compiler make is given, and records the variables) shows what the struct
size probe and the module build hand to make; the probe's sources follow
the tree's configured architecture (ppc64's private ``struct fixup_entry``
copied from its C file).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pykpatch.arch import arch_named, cross_make_variables, require_arch
from pykpatch.errors import TreeError, UsageError
from pykpatch.kpatch_build.check import cross_variables
from pykpatch.kpatch_build.struct_sizes import probe_struct_sizes

# "make -C TREE M=DIR probe.o": compile with $(CROSS_COMPILE)gcc and note ARCH and CROSS_COMPILE.
PROBE_MAKEFILE = """\
probe.o:
\t@echo 'ARCH=$(ARCH) CROSS_COMPILE=$(CROSS_COMPILE)' > $(M)/make-variables
\t@$(CROSS_COMPILE)gcc -c -w -DCONFIG_BUG -DCONFIG_GENERIC_BUG -I$(CURDIR)/include -o $(M)/probe.o $(M)/probe.c
"""
PPC_HEADERS = {
    ".config": "CONFIG_PPC=y\nCONFIG_PPC64=y\n",
    "include/linux/module.h": "",
    "include/linux/uaccess.h": "struct exception_table_entry {\n\tint insn, fixup;\n};\n",
    "include/linux/bug.h": "#include <asm-generic/bug.h>\n",
    "include/asm-generic/bug.h": "struct bug_entry {\n\tint a, b;\n\tshort c, d;\n};\n",
    "include/linux/jump_label.h": "",
    "include/linux/printk.h": "",
    "arch/powerpc/lib/feature-fixups.c": ("#include <linux/kernel.h>\n\nstruct fixup_entry {\n\tunsigned long\tmask;\n"
                                          "\tunsigned long\tvalue;\n\tlong\t\tstart_off;\n\tlong\t\tend_off;\n"
                                          "\tlong\t\talt_start_off;\n\tlong\t\talt_end_off;\n};\n\nint x;\n"),
}


def ppc_tree(root: Path) -> Path:
    for rel, text in {"Makefile": PROBE_MAKEFILE, **PPC_HEADERS}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_probe_of_a_ppc64le_tree_uses_the_cross_compiler_and_its_structs(tmp_path):
    assert shutil.which("make") and shutil.which("powerpc64le-linux-gnu-gcc"), \
        "make and gcc-powerpc64le-linux-gnu are needed"
    tree = ppc_tree(tmp_path / "tree")
    variables = cross_make_variables(require_arch("ppc64le"), "x86_64")
    sizes = probe_struct_sizes(tree, tmp_path / "work", variables=variables)
    assert sizes == {"BUG_STRUCT_SIZE": 12, "EX_STRUCT_SIZE": 8, "FIXUP_STRUCT_SIZE": 48}
    assert (tmp_path / "work" / "make-variables").read_text().split() == [
        "ARCH=powerpc", "CROSS_COMPILE=powerpc64le-linux-gnu-"]
    source = (tmp_path / "work" / "probe.c").read_text()
    assert "struct fixup_entry {" in source and "ALT_STRUCT_SIZE" not in source  # ppc64 has no .altinstructions


def test_cross_variables_follow_the_configured_arch():
    assert cross_variables(None, {"CONFIG_PPC": "y"}) == {}
    s390 = cross_variables("s390x", {"CONFIG_S390": "y"})
    if s390:  # on an s390x host the build is native
        assert s390 == {"ARCH": "s390", "CROSS_COMPILE": "s390x-linux-gnu-"}
    assert cross_make_variables(require_arch("arm64"), "x86_64") == {"ARCH": "arm64", "CROSS_COMPILE": "aarch64-linux-gnu-"}
    assert cross_make_variables(require_arch("x86_64"), "x86_64") == {}
    with pytest.raises(TreeError, match="is for x86, not powerpc"):
        cross_variables("ppc64le", {"CONFIG_X86": "y"})
    with pytest.raises(UsageError, match="not supported"):
        require_arch("sparc64")


@pytest.mark.parametrize("name,arch", [("powerpc", "ppc64le"), ("s390", "s390x"), ("arm64", "aarch64"),
                                       ("loongarch", "loongarch64"), ("x86", "x86_64"), ("aarch64", "aarch64")])
def test_kbuild_and_uname_names_find_the_arch(name, arch):
    found = arch_named(name)
    assert found is not None and found.name == arch


def test_kpatch_build_refuses_an_unknown_arch_before_any_work(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pykpatch.cli", "build", "--arch", "mips", str(tmp_path / "x.patch")], check=False,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert "architecture 'mips' is not supported" in proc.stderr and "ppc64le" in proc.stderr
    assert "Traceback" not in proc.stderr
