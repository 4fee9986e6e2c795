"""Diff behaviours the corpus does not cover, on small C files compiled at test time.

Each test compiles an original and a patched source the way kbuild compiles
kernel code for kpatch-build (``-ffunction-sections -fdata-sections``,
``-pg -mfentry`` for the ftrace hook, ``-mcmodel=kernel``) and diffs them
with the original object as the parent symbol table.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from pykpatch.diff import run_diff
from pykpatch.elf import read_elf
from pykpatch.errors import NoChangeError, UnsupportedChangeError
from pykpatch.symtab import KernelSymbolTable

CFLAGS = ["-O2", "-c", "-ffunction-sections", "-fdata-sections", "-pg", "-mfentry", "-fno-pic",
          "-mcmodel=kernel", "-fno-asynchronous-unwind-tables", "-fno-stack-protector"]


@pytest.fixture(scope="module")
def cc():
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to compile the diff test sources"
    return gcc


def compile_c(cc: str, tmp: Path, name: str, source: str, filename: str = "demo.c") -> Path:
    d = tmp / name
    d.mkdir(exist_ok=True)
    src = d / filename
    src.write_text(textwrap.dedent(source))
    out = d / (Path(filename).stem + ".o")
    subprocess.run([cc, *CFLAGS, filename, "-o", out.name], cwd=d, check=True)
    return out


def diff(cc, tmp, orig_src, patched_src, symtab: Path | None = None, filename: str = "demo.c"):
    orig = compile_c(cc, tmp, "orig", orig_src, filename)
    patched = compile_c(cc, tmp, "patched", patched_src, filename)
    table = KernelSymbolTable.load(symtab or orig)
    out = tmp / "out.o"
    result = run_diff(str(orig), str(patched), "vmlinux", table, None, {}, str(out))
    return result, out


BASE = """
    int shared_counter;
    static int __attribute__((noinline)) helper(int x) { return x * 3 + shared_counter; }
    int __attribute__((noinline)) api(int x) { return helper(x) + 1; }
"""


def test_changed_function_and_local_reference(cc, tmp_path):
    patched = BASE.replace("helper(x) + 1", "helper(x) + 2")
    result, out = diff(cc, tmp_path, BASE, patched)
    assert result.changed == ["api"]
    assert result.funcs == [{"name": "api", "objname": "vmlinux", "sympos": 0}]
    names = {s.name for s in read_elf(out).symbols}
    assert "api" in names


def test_new_static_function(cc, tmp_path):
    patched = BASE.replace(
        "int __attribute__((noinline)) api(int x) { return helper(x) + 1; }",
        "static int __attribute__((noinline)) twice(int x) { return 2 * x + shared_counter; }\n"
        "int __attribute__((noinline)) api(int x) { return twice(helper(x)) + 1; }",
    )
    result, _ = diff(cc, tmp_path, BASE, patched)
    assert "twice" in result.new
    assert "api" in result.changed


def test_static_local_correlated_by_use(cc, tmp_path):
    src = """
        int __attribute__((noinline)) tick(void) { static int counter; return ++counter; }
        int __attribute__((noinline)) other(void) { static int seen; return seen++; }
    """
    patched = src.replace("return ++counter;", "counter += 2; return counter;")
    result, _ = diff(cc, tmp_path, src, patched)
    assert result.changed == ["tick"]
    # the existing static is used in place, resolved through a livepatch relocation
    assert [k["name"].split(".")[0] for k in result.klp_symbols] == ["counter"]
    assert result.klp_symbols[0]["sympos"] == 1


def test_removed_static_local_reference_is_refused(cc, tmp_path):
    src = "int __attribute__((noinline)) tick(void) { static int counter; return ++counter; }\n"
    patched = "int __attribute__((noinline)) tick(void) { return 42; }\n"
    with pytest.raises(UnsupportedChangeError) as err:
        diff(cc, tmp_path, src, patched)
    assert any("static local variable counter" in r for r in err.value.reasons)


def test_changed_global_initializer_is_refused(cc, tmp_path):
    src = "int limit = 10;\nint __attribute__((noinline)) get(void) { return limit; }\n"
    patched = "int limit = 20;\nint __attribute__((noinline)) get(void) { return limit; }\n"
    with pytest.raises(UnsupportedChangeError) as err:
        diff(cc, tmp_path, src, patched)
    assert any(".data.limit" in r for r in err.value.reasons)


def test_changed_init_code_is_refused(cc, tmp_path):
    src = """
        int state;
        __attribute__((section(".init.text"), noinline)) int setup(void) { state = 1; return 0; }
        int __attribute__((noinline)) get(void) { return state; }
    """
    patched = src.replace("state = 1;", "state = 2;")
    with pytest.raises(UnsupportedChangeError) as err:
        diff(cc, tmp_path, src, patched)
    assert any(".init.text" in r and "boot" in r for r in err.value.reasons)


INIT_SRC = """
    int state, other, limit = 10;
    __attribute__((section(".init.text"), noinline)) int console_setup(char *s) { state = s[0]; return 1; }
    __attribute__((section(".init.text"), noinline)) int other_setup(char *s) { other = s[1]; return 1; }
    int __attribute__((noinline)) get(void) { return state + other + limit; }
"""


def test_changed_init_function_is_named_and_counted_once(cc, tmp_path):
    """One changed __init function is one problem, named by function, not .init.text + .rela.init.text."""
    patched = INIT_SRC.replace("state = s[0];", "state = s[0] * 3 + 1;")
    with pytest.raises(UnsupportedChangeError) as err:
        diff(cc, tmp_path, INIT_SRC, patched)
    assert len(err.value.reasons) == 1, err.value.reasons
    reason = err.value.reasons[0]
    assert "console_setup" in reason and ".init.text" in reason and "boot" in reason, reason
    assert "other_setup" not in reason
    assert "1 unsupported change(s)" in str(err.value)


def test_init_change_and_another_problem_are_two_problems(cc, tmp_path):
    """The issue's case: a changed __init function plus changed data were reported as 3 problems."""
    patched = INIT_SRC.replace("state = s[0];", "state = s[0] * 3 + 1;").replace("limit = 10", "limit = 20")
    with pytest.raises(UnsupportedChangeError) as err:
        diff(cc, tmp_path, INIT_SRC, patched)
    assert len(err.value.reasons) == 2, err.value.reasons
    assert any("console_setup" in r for r in err.value.reasons)
    assert any(".data.limit" in r for r in err.value.reasons)
    assert "2 unsupported change(s)" in str(err.value)


def test_no_change(cc, tmp_path):
    with pytest.raises(NoChangeError):
        diff(cc, tmp_path, BASE, BASE + "\n\n")


def test_function_without_ftrace_hook_is_refused(cc, tmp_path):
    src = "int __attribute__((noinline, no_instrument_function)) raw(int x) { return x + 1; }\n"
    patched = src.replace("x + 1", "x + 5")
    with pytest.raises(UnsupportedChangeError) as err:
        diff(cc, tmp_path, src, patched)
    assert any("raw" in r and "ftrace" in r for r in err.value.reasons)
    assert not any("KPATCH_SYSCALL_DEFINE" in r for r in err.value.reasons)


# SYSCALL_DEFINE1(demo, int, fd) as arch/x86/include/asm/syscall_wrapper.h expands it, with the inner
# function kept out of line: the kernel's 'inline' implies notrace, so __do_sys_demo has no hook.
SYSCALL_SRC = """
    struct pt_regs { long di; };
    static inline __attribute__((noinline, no_instrument_function)) long __do_sys_demo(int fd) { return fd + 1; }
    static long __attribute__((noinline)) __se_sys_demo(long fd) { return __do_sys_demo((int)fd); }
    long __x64_sys_demo(const struct pt_regs *regs) { return __se_sys_demo(regs->di); }
"""


def test_syscall_without_ftrace_hook_points_to_kpatch_syscall_define(cc, tmp_path):
    """README: patch a system call with KPATCH_SYSCALL_DEFINEn; the refusal must say so."""
    patched = SYSCALL_SRC.replace("return fd + 1;", "return fd * 3 + 1;")
    with pytest.raises(UnsupportedChangeError) as err:
        diff(cc, tmp_path, SYSCALL_SRC, patched)
    reason, = [r for r in err.value.reasons if "__do_sys_demo" in r]
    assert "ftrace" in reason and "KPATCH_SYSCALL_DEFINE" in reason and "kpatch-syscall.h" in reason, reason


def test_new_global_variable_is_included(cc, tmp_path):
    patched = BASE.replace("int shared_counter;", "int shared_counter;\nint brand_new = 5;").replace(
        "helper(x) + 1", "helper(x) + brand_new")
    result, out = diff(cc, tmp_path, BASE, patched)
    assert result.changed == ["api"]
    obj = read_elf(out)
    assert any(s.name == "brand_new" and s.section is not None for s in obj.symbols)


def test_line_number_only_change_is_no_change(cc, tmp_path):
    src = """
        extern void __might_sleep(const char *file, int line);
        int __attribute__((noinline)) slow(int x) { __might_sleep("demo.c", __LINE__); return x + 1; }
    """
    patched = "\n\n\n" + src
    with pytest.raises(NoChangeError):
        diff(cc, tmp_path, src, patched)


def test_ignored_function_marker(cc, tmp_path):
    src = """
        int __attribute__((noinline)) noisy(int x) { return x + 1; }
        static void *__kpatch_ignore_func_noisy __attribute__((used, section(".kpatch.ignore.functions"))) = noisy;
    """
    patched = src.replace("x + 1", "x + 7")
    with pytest.raises(NoChangeError):
        diff(cc, tmp_path, src, patched)


def test_sympos_of_a_static_with_a_twin_in_another_file(cc, tmp_path):
    """The parent holds two files with a static ``helper``: ours is the second."""
    first = compile_c(cc, tmp_path, "first", "static int __attribute__((noinline)) helper(int x) { return x - 1; }\n"
                      "int first_api(int x) { return helper(x); }\n", "first.c")
    src = BASE
    patched = BASE.replace("helper(x) + 1", "helper(x) + 2")
    ours = compile_c(cc, tmp_path, "orig", src)
    parent = tmp_path / "vmlinux.o"
    subprocess.run(["ld", "-r", "-o", str(parent), str(first), str(ours)], check=True)
    result, _ = diff(cc, tmp_path, src, patched, symtab=parent)
    assert {"name": "helper", "objname": "vmlinux", "sympos": 2} in result.klp_symbols


RUNTIME_CONST = """
    int __attribute__((noinline)) api(int x)
    {
        unsigned long v;
        asm("1: movabs $0x0123456789abcdef, %0\\n"
            ".pushsection runtime_ptr_demo_value,\\"a\\"\\n.long 1b - 8 - .\\n.popsection" : "=r"(v));
        return x + (int)v + OFFSET;
    }
"""


def test_function_with_a_runtime_constant_is_refused(cc, tmp_path):
    """6.12's runtime_const_ptr(): the kernel patches the placeholder into vmlinux's code at boot, never a module's."""
    with pytest.raises(UnsupportedChangeError) as err:
        diff(cc, tmp_path, RUNTIME_CONST.replace("OFFSET", "1"), RUNTIME_CONST.replace("OFFSET", "2"))
    assert any("function api uses the runtime constant runtime_ptr_demo_value" in r for r in err.value.reasons)
