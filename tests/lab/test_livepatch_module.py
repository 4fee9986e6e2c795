"""Issue 5 acceptance: livepatch modules built by pykpatch, loaded by the real lab kernel.

Each test is a scenario: a source file of the lab tree, a patch to it, the
livepatch module pykpatch builds from the two compiled copies, and a boot
of the lab kernel (QEMU) that loads it and watches what changes.  Patches
are built once per module (fixtures below); a boot takes a few seconds.
"""

from __future__ import annotations

import re

import pytest

from pykpatch.elf.reader import read_elf
from pykpatch.kpatch_build.klp import klp_summary
from pykpatch.lab import insmod, read, rmmod, shell, wait_for, wait_until_gone, write
from pykpatch.symtab import KernelSymbolTable

from .livepatch_util import DATA_DIR, Builder, Livepatch, Scenario, as_module_object, console_lines, edits

pytestmark = pytest.mark.kernel

CMDLINE = "fs/proc/cmdline.c"
VERSION = "fs/proc/version.c"
CMDLINE_AS_MODULE = as_module_object("#include <linux/fs.h>", "proc_cmdline_init")
VERSION_AS_MODULE = as_module_object("#include <linux/fs.h>", "proc_version_init")
KPATCH_MACROS = f"-I{DATA_DIR}"
ORIG_CMDLINE = "console=ttyS0 panic=-1"


def cmdline_says(text: str) -> tuple:
    return edits(("seq_puts(m, saved_command_line);", f'seq_puts(m, "{text}");'))


def disable(lp: Livepatch) -> list:
    """Disable a livepatch, wait until the kernel has freed it, unload it."""
    return [write(f"{lp.sysfs}/enabled", "0"), wait_until_gone(lp.sysfs), rmmod(lp.modname)]


def load(lp: Livepatch) -> list:
    return [insmod(lp.ko), wait_for(f"{lp.sysfs}/transition", "0")]


def assert_clean(result) -> None:
    assert result.ok, result.failures()
    assert not (result.panicked or result.oopsed or result.warned or result.call_trace), result.trouble.lines


@pytest.fixture(scope="module")
def builder(lab_kernel, tmp_path_factory) -> Builder:
    return Builder(lab_kernel, tmp_path_factory.mktemp("livepatch"))


# -- 1. the manual end-to-end run, as a test ------------------------------------------

@pytest.fixture(scope="module")
def cmdline_patch(builder) -> Livepatch:
    return builder.livepatch("cmdline-fix", Scenario(CMDLINE, CMDLINE_AS_MODULE, cmdline_says("pykpatch was here")))


def test_cmdline_patch_applies_and_reverts(cmdline_patch, lab_boot):
    lp = cmdline_patch
    assert lp.funcs == [{"name": "cmdline_proc_show", "objname": "vmlinux", "sympos": 1}]
    result = lab_boot([
        read("/proc/cmdline"),                 # 0 original
        *load(lp),                             # 1, 2
        read("/proc/cmdline"),                 # 3 patched
        read(f"{lp.sysfs}/enabled"),           # 4
        *disable(lp),                          # 5, 6, 7
        read("/proc/cmdline"),                 # 8 original again
        shell("lsmod"),                        # 9
    ], modules=[lp.ko])
    assert_clean(result)
    s = result.steps
    assert s[0].output == ORIG_CMDLINE + "\n"
    assert s[2].output == "0\n"
    assert s[3].output == "pykpatch was here\n"
    assert s[4].output == "1\n"
    assert s[8].output == ORIG_CMDLINE + "\n"
    assert lp.modname not in s[9].output
    assert f"livepatch: '{lp.modname}': patching complete" in result.console
    assert f"livepatch: '{lp.modname}': unpatching complete" in result.console


# -- 2. static functions that have same-named twins in vmlinux ------------------------
#
# type_show() is a static function in eight vmlinux files (ksysfs.c, reboot.c,
# irqdesc.c, core.c, serial_core.c, cacheinfo.c, serio.c, net-sysfs.c);
# serial_core.c's is the 5th in kallsyms order.  The patched line_show() of a
# serial port calls it, through a livepatch relocation with that sympos: only
# the right twin prints the port's type number (reboot.c's would print
# "acpi"; others would misread `dev`).
#
# The patched function itself can have a twin too: c_start() is the
# iterator of /proc/cpuinfo (arch/x86/kernel/cpu/proc.c, 1st) and of
# /proc/consoles (fs/proc/consoles.c, 2nd); the patch replaces the 2nd only.

SERIAL_CORE = "drivers/tty/serial/serial_core.c"
CONSOLES = "fs/proc/consoles.c"
TTY = "/sys/class/tty/ttyS0"


@pytest.fixture(scope="module")
def sympos_patch(builder) -> Livepatch:
    calls_twin = Scenario(SERIAL_CORE, (), edits((
        '\tuart_get_info(port, &tmp);\n\treturn sprintf(buf, "%d\\n", tmp.line);',
        '\tint n;\n\n\tuart_get_info(port, &tmp);\n\tn = sprintf(buf, "%d type=", tmp.line);\n'
        '\treturn n + type_show(dev, attr, buf + n);')))
    is_twin = Scenario(CONSOLES, (), edits(
        ("\tconsole_lock();\n", '\tconsole_lock();\n\tpr_info("pykpatch: consoles c_start\\n");\n'),
    ), builtin=True)
    return builder.livepatch("sympos", calls_twin, is_twin)


def _local_func_sympos(table: KernelSymbolTable, name: str, file: str) -> int:
    twins = [s for s in table.by_name(name) if s.is_local and s.is_func]
    ours = [s for s in twins if s.file is not None and s.file.name == file]
    assert len(twins) >= 2 and len(ours) == 1, (twins, ours)
    return table.sympos(ours[0])


def test_static_twins_are_resolved_by_sympos(sympos_patch, lab_kernel, lab_boot):
    lp = sympos_patch
    table = KernelSymbolTable.load(lab_kernel.vmlinux)
    type_show = _local_func_sympos(table, "type_show", "serial_core.c")
    c_start = _local_func_sympos(table, "c_start", "consoles.c")
    assert type_show >= 2 and c_start >= 2
    assert {"name": "type_show", "objname": "vmlinux", "sympos": type_show} in lp.klp_symbols
    assert f".klp.sym.vmlinux.type_show,{type_show}" in klp_summary(read_elf(lp.ko))[1]
    assert {"name": "line_show", "objname": "vmlinux", "sympos": 1} in lp.funcs
    assert {"name": "c_start", "objname": "vmlinux", "sympos": c_start} in lp.funcs

    result = lab_boot([
        read(f"{TTY}/line"),                   # 0
        read(f"{TTY}/type"),                   # 1 what serial_core.c's type_show prints
        *load(lp),                             # 2, 3
        read(f"{TTY}/line"),                   # 4 patched: calls type_show
        shell("dmesg -c >/dev/null; cat /proc/cpuinfo >/dev/null; dmesg -c"),   # 5 other c_start
        shell("cat /proc/consoles; dmesg -c"),                                  # 6 patched c_start
        *disable(lp),                          # 7, 8, 9
        read(f"{TTY}/line"),                   # 10
        shell("cat /proc/consoles >/dev/null; dmesg -c"),                       # 11
    ], modules=[lp.ko])
    assert_clean(result)
    s = result.steps
    line, port_type = s[0].output.strip(), s[1].output.strip()
    assert line == "0" and port_type.isdigit() and port_type != "0"
    assert s[4].output == f"{line} type={port_type}\n"
    assert "pykpatch" not in s[5].output
    assert "ttyS0" in s[6].output and "pykpatch: consoles c_start" in s[6].output
    assert s[10].output == s[0].output
    assert "pykpatch" not in s[11].output


# -- 3. patch callbacks ----------------------------------------------------------------

CALLBACKS = r'''
static int pyk_pre_patch(patch_object *obj)
{
	pr_info("pykpatch-cb: pre_patch %s\n", obj->name ? obj->name : "vmlinux");
	return PRE_PATCH_RET;
}

static void pyk_post_patch(patch_object *obj)
{
	pr_info("pykpatch-cb: post_patch %s\n", obj->name ? obj->name : "vmlinux");
}

static void pyk_pre_unpatch(patch_object *obj)
{
	pr_info("pykpatch-cb: pre_unpatch %s\n", obj->name ? obj->name : "vmlinux");
}

static void pyk_post_unpatch(patch_object *obj)
{
	pr_info("pykpatch-cb: post_unpatch %s\n", obj->name ? obj->name : "vmlinux");
}
KPATCH_PRE_PATCH_CALLBACK(pyk_pre_patch);
KPATCH_POST_PATCH_CALLBACK(pyk_post_patch);
KPATCH_PRE_UNPATCH_CALLBACK(pyk_pre_unpatch);
KPATCH_POST_UNPATCH_CALLBACK(pyk_post_unpatch);

static int __init proc_cmdline_init(void)'''


def callbacks_scenario(pre_patch_ret: str) -> Scenario:
    return Scenario(CMDLINE, CMDLINE_AS_MODULE, edits(
        ("#include <linux/seq_file.h>", '#include <linux/seq_file.h>\n#include "kpatch-macros.h"'),
        ("seq_puts(m, saved_command_line);", 'seq_puts(m, "patched with callbacks");'),
        ("static int __init proc_cmdline_init(void)", CALLBACKS.replace("PRE_PATCH_RET", pre_patch_ret)),
    ), ccflags=KPATCH_MACROS)


@pytest.fixture(scope="module")
def callbacks_patch(builder) -> Livepatch:
    return builder.livepatch("callbacks", callbacks_scenario("0"))


@pytest.fixture(scope="module")
def refusing_patch(builder) -> Livepatch:
    return builder.livepatch("callbacks-refuse", callbacks_scenario("-EINVAL"))


def test_callbacks_run_in_order_around_load_and_disable(callbacks_patch, lab_boot):
    lp = callbacks_patch
    result = lab_boot([
        shell("dmesg -c >/dev/null"),          # 0
        *load(lp),                             # 1, 2
        read("/proc/cmdline"),                 # 3
        shell("dmesg -c"),                     # 4 patch-side messages
        *disable(lp),                          # 5, 6, 7
        shell("dmesg -c"),                     # 8 unpatch-side messages
        read("/proc/cmdline"),                 # 9
    ], modules=[lp.ko])
    assert_clean(result)
    s = result.steps
    assert s[3].output == "patched with callbacks\n"
    assert s[9].output == ORIG_CMDLINE + "\n"
    assert _markers(s[4].output) == ["pre_patch vmlinux", "post_patch vmlinux"]
    assert _markers(s[8].output) == ["pre_unpatch vmlinux", "post_unpatch vmlinux"]
    # pre_* before the transition starts; post_* once every task has switched,
    # just before the kernel reports the transition complete
    for out, what in ((s[4].output, "patch"), (s[8].output, "unpatch")):
        lines = out.splitlines()
        assert (_index(lines, f"pykpatch-cb: pre_{what}")
                < _index(lines, f"'{lp.modname}': starting {what}ing transition")
                < _index(lines, f"pykpatch-cb: post_{what}")
                < _index(lines, f"'{lp.modname}': {what}ing complete"))


def test_failing_pre_patch_callback_refuses_the_load(refusing_patch, lab_boot):
    lp = refusing_patch
    result = lab_boot([
        insmod(lp.ko, check=False),            # 0 fails
        shell(f"test -e {lp.sysfs} && echo present || echo absent"),  # 1
        shell("lsmod"),                        # 2
        read("/proc/cmdline"),                 # 3 untouched
        shell("ls /sys/kernel/livepatch | wc -l"),  # 4
    ], modules=[lp.ko])
    assert_clean(result)
    s = result.steps
    assert s[0].rc != 0
    assert "Invalid argument" in s[0].output or "invalid" in s[0].output.lower(), s[0].output
    assert s[1].output == "absent\n"
    assert lp.modname not in s[2].output
    assert s[3].output == ORIG_CMDLINE + "\n"
    assert s[4].output.strip() == "0"
    # busybox insmod retries with init_module() when finit_module() fails: one or two attempts
    assert set(console_lines(result.console, "pykpatch-cb:")) == {"pykpatch-cb: pre_patch vmlinux"}
    assert "pre-patch callback failed for object 'vmlinux'" in result.console


def _markers(dmesg: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"pykpatch-cb: (\w+ \S+)", dmesg)]


def _index(lines: list[str], needle: str) -> int:
    for i, line in enumerate(lines):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in:\n" + "\n".join(lines))


# -- 4. shadow variables ----------------------------------------------------------------
#
# /proc/cmdline's show attaches a shadow variable to the reading task
# (current) and counts its reads; /proc/version's show, another file and
# another diff output of the same module, reads that variable back.  A
# post-unpatch callback frees them all and reports what it freed.  A task
# whose task_struct reuses a dead one's address must not inherit its data,
# hence the start_time check.

SHADOW_DECL = r'''#include <linux/livepatch.h>
#include <linux/sched.h>
#include <linux/slab.h>

#define PYK_SHADOW_ID 0x70796b31UL

struct pyk_reads {
	u64 start_time;
	int reads;
};
'''

SHADOW_ATTACH = r'''
	struct pyk_reads *r = klp_shadow_get_or_alloc(current, PYK_SHADOW_ID, sizeof(*r),
						      GFP_KERNEL, NULL, NULL);

	if (r) {
		if (r->start_time != current->start_time) {
			r->start_time = current->start_time;
			r->reads = 0;
		}
		r->reads++;
	}
	seq_puts(m, saved_command_line);'''

SHADOW_READ = r'''
	struct pyk_reads *r = klp_shadow_get(current, PYK_SHADOW_ID);

	seq_printf(m, linux_proc_banner,
		utsname()->sysname,
		utsname()->release,
		utsname()->version);
	if (r && r->start_time == current->start_time)
		seq_printf(m, "pykpatch-shadow: %d cmdline reads by this task\n", r->reads);
	else
		seq_puts(m, "pykpatch-shadow: no cmdline reads by this task\n");
	return 0;
}

static int pyk_freed, pyk_freed_reads;

static void pyk_shadow_dtor(void *obj, void *shadow_data)
{
	struct pyk_reads *r = shadow_data;

	pyk_freed++;
	pyk_freed_reads += r->reads;
}

static void pyk_post_unpatch(patch_object *obj)
{
	klp_shadow_free_all(PYK_SHADOW_ID, pyk_shadow_dtor);
	pr_info("pykpatch-shadow: freed %d shadow variables holding %d reads\n", pyk_freed, pyk_freed_reads);
}
KPATCH_POST_UNPATCH_CALLBACK(pyk_post_unpatch);'''


@pytest.fixture(scope="module")
def shadow_patch(builder) -> Livepatch:
    attach = Scenario(CMDLINE, CMDLINE_AS_MODULE, edits(
        ("#include <linux/seq_file.h>", "#include <linux/seq_file.h>\n" + SHADOW_DECL),
        ("\n\tseq_puts(m, saved_command_line);", SHADOW_ATTACH),
    ))
    use = Scenario(VERSION, VERSION_AS_MODULE, edits(
        ('#include "internal.h"', '#include "internal.h"\n#include "kpatch-macros.h"\n' + SHADOW_DECL),
        ("\n\tseq_printf(m, linux_proc_banner,\n\t\tutsname()->sysname,\n\t\tutsname()->release,\n"
         "\t\tutsname()->version);\n\treturn 0;\n}", SHADOW_READ),
    ), ccflags=f"{KPATCH_MACROS} -I$(srctree)/fs/proc")
    return builder.livepatch("shadow", attach, use)


def test_shadow_variable_attached_in_one_path_read_in_another(shadow_patch, lab_boot):
    lp = shadow_patch
    assert sorted(f["name"] for f in lp.funcs) == ["cmdline_proc_show", "version_proc_show"]
    read_version = "while read -r l; do echo \"$l\"; done </proc/version"
    result = lab_boot([
        *load(lp),                                                            # 0, 1
        shell("for i in 1 2 3; do read -r x </proc/cmdline; done; " + read_version),  # 2 same task
        shell(read_version),                                                  # 3 another task
        shell("dmesg -c >/dev/null"),                                         # 4
        *disable(lp),                                                         # 5, 6, 7
        shell("dmesg -c"),                                                    # 8
        read("/proc/version"),                                                # 9
    ], modules=[lp.ko])
    assert_clean(result)
    s = result.steps
    assert s[2].output.splitlines()[-1] == "pykpatch-shadow: 3 cmdline reads by this task"
    assert s[3].output.splitlines()[-1] == "pykpatch-shadow: no cmdline reads by this task"
    assert "pykpatch-shadow: freed 1 shadow variables holding 3 reads" in s[8].output
    assert "pykpatch-shadow" not in s[9].output
    assert s[9].output.startswith("Linux version ")


# -- 5. a function of a loadable module, loaded before and after the patch -----------
#
# pcspkr.ko's probe names the input device it registers; the patched probe
# names it differently.  Probe runs at module load and on every driver
# bind, which /sys/bus/platform/drivers/pcspkr/{un,}bind triggers.

PCSPKR = "drivers/input/misc/pcspkr.c"
PCSPKR_DRIVER = "/sys/bus/platform/drivers/pcspkr"
INPUT_NAMES = "grep '^N: Name=' /proc/bus/input/devices"
REBIND = f"echo pcspkr > {PCSPKR_DRIVER}/unbind && echo pcspkr > {PCSPKR_DRIVER}/bind"


def speaker_lines(out: str) -> list[str]:
    """The PC speaker's input device lines (the PS/2 devices may or may not have probed yet under TCG)."""
    return [ln for ln in out.splitlines() if "Speaker" in ln]


# Callbacks of a module object run when that module is patched and unpatched.
PCSPKR_CALLBACKS = r'''static void pyk_post_patch(patch_object *obj)
{
	pr_info("pykpatch-cb: post_patch %s\n", obj->name);
}
KPATCH_POST_PATCH_CALLBACK(pyk_post_patch);

static void pyk_pre_unpatch(patch_object *obj)
{
	pr_info("pykpatch-cb: pre_unpatch %s\n", obj->name);
}
KPATCH_PRE_UNPATCH_CALLBACK(pyk_pre_unpatch);

'''


@pytest.fixture(scope="module")
def pcspkr_patch(builder) -> Livepatch:
    return builder.livepatch("pcspkr", (Scenario(PCSPKR, (), edits(
        ("#include <linux/module.h>", '#include <linux/module.h>\n#include "kpatch-macros.h"'),
        ('pcspkr_dev->name = "PC Speaker";',
         'pcspkr_dev->name = "PC Speaker (pykpatch)";\n\tpr_info("pykpatch: patched pcspkr_probe\\n");'),
        ("static int pcspkr_remove(", PCSPKR_CALLBACKS + "static int pcspkr_remove("),
    ), ccflags=KPATCH_MACROS), "pcspkr"))


def test_module_patch_loaded_after_the_module(pcspkr_patch, lab_boot, lab_kernel):
    lp = pcspkr_patch
    assert lp.funcs == [{"name": "pcspkr_probe", "objname": "pcspkr", "sympos": 1}]
    # the probe sets .event = pcspkr_event: a static of the module, reached through livepatch
    assert {"name": "pcspkr_event", "objname": "pcspkr", "sympos": 1} in lp.klp_symbols
    result = lab_boot([
        insmod("pcspkr"),                      # 0
        shell(INPUT_NAMES),                    # 1 original name
        *load(lp),                             # 2, 3
        shell(INPUT_NAMES),                    # 4 probe ran before the patch
        shell(REBIND),                         # 5 probe runs again, patched
        shell(INPUT_NAMES),                    # 6
        write(f"{lp.sysfs}/enabled", "0"),     # 7
        wait_until_gone(lp.sysfs),             # 8
        # The device's name is a string of the livepatch module: rebind
        # (original probe) before that module goes.
        shell(REBIND),                         # 9
        shell(INPUT_NAMES),                    # 10
        rmmod(lp.modname),                     # 11
        rmmod("pcspkr"),                       # 12
    ], modules=[lab_kernel.module("pcspkr"), lp.ko])
    assert_clean(result)
    s = result.steps
    assert 'N: Name="PC Speaker"' in s[1].output
    # Only the speaker's line is compared: under TCG the PS/2 devices may
    # still be probing when the first list is read.
    assert speaker_lines(s[4].output) == speaker_lines(s[1].output) == ['N: Name="PC Speaker"']
    assert 'N: Name="PC Speaker (pykpatch)"' in s[6].output
    assert speaker_lines(s[10].output) == speaker_lines(s[1].output)
    assert console_lines(result.console, "pykpatch: patched pcspkr_probe") == ["pykpatch: patched pcspkr_probe"]
    assert console_lines(result.console, "pykpatch-cb:") == ["pykpatch-cb: post_patch pcspkr",
                                                              "pykpatch-cb: pre_unpatch pcspkr"]


def test_module_patch_loaded_before_the_module(pcspkr_patch, lab_boot, lab_kernel):
    lp = pcspkr_patch
    result = lab_boot([
        *load(lp),                             # 0, 1 pcspkr not loaded yet
        insmod("pcspkr"),                      # 2 patched as it loads
        shell(INPUT_NAMES),                    # 3
        rmmod("pcspkr"),                       # 4 unpatched as it goes
        insmod("pcspkr", check=False),         # 5 refused by 6.1, see below
        *disable(lp),                          # 6, 7, 8
        insmod("pcspkr"),                      # 9 unpatched
        shell(INPUT_NAMES),                    # 10
        rmmod("pcspkr"),                       # 11
    ], modules=[lab_kernel.module("pcspkr"), lp.ko])
    assert_clean(result)
    s = result.steps
    assert 'N: Name="PC Speaker (pykpatch)"' in s[3].output
    assert console_lines(result.console, "pykpatch: patched pcspkr_probe") == ["pykpatch: patched pcspkr_probe"]
    assert f"livepatch: applying patch '{lp.modname}' to loading module 'pcspkr'" in result.console
    assert f"livepatch: reverting patch '{lp.modname}' on unloading module 'pcspkr'" in result.console
    # the module object's callbacks run as the module comes (before its init) and goes
    log = result.console.splitlines()
    assert (_index(log, "applying patch") < _index(log, "pykpatch-cb: post_patch pcspkr")
            < _index(log, "pykpatch: patched pcspkr_probe")
            < _index(log, "pykpatch-cb: pre_unpatch pcspkr") < _index(log, "reverting patch"))
    # Linux 6.1 leaves the livepatch relocations of an unloaded module applied
    # (cleared only since 6.3, "livepatch,x86: Clear relocation targets on a
    # module removal"), so reloading the module while the patch is loaded is
    # refused, cleanly, by the kernel's double-relocation check.
    assert s[5].rc != 0
    assert f"livepatch: patch '{lp.modname}' failed for module 'pcspkr', refusing to load module" in result.console
    assert 'N: Name="PC Speaker"' in s[10].output and "pykpatch" not in s[10].output


# -- 6. atomic replace vs stacking ---------------------------------------------------

@pytest.fixture(scope="module")
def patch_a(builder) -> Livepatch:
    return builder.livepatch("patch-a", Scenario(CMDLINE, CMDLINE_AS_MODULE, cmdline_says("patch A")))


@pytest.fixture(scope="module")
def patch_b_replace(builder) -> Livepatch:
    return builder.livepatch("patch-b", Scenario(CMDLINE, CMDLINE_AS_MODULE, cmdline_says("patch B")))


@pytest.fixture(scope="module")
def patch_b_stack(builder) -> Livepatch:
    return builder.livepatch("patch-b-stack", Scenario(CMDLINE, CMDLINE_AS_MODULE, cmdline_says("patch B")),
                             replace=False)


def test_replace_patch_replaces_the_previous_one(patch_a, patch_b_replace, lab_boot):
    a, b = patch_a, patch_b_replace
    result = lab_boot([
        *load(a),                              # 0, 1
        read("/proc/cmdline"),                 # 2
        *load(b),                              # 3, 4
        wait_until_gone(a.sysfs),              # 5 A freed once B's transition is done
        read("/proc/cmdline"),                 # 6
        shell("ls /sys/kernel/livepatch"),     # 7
        rmmod(a.modname),                      # 8 A is no longer in use
        *disable(b),                           # 9, 10, 11
        read("/proc/cmdline"),                 # 12 nothing left: the original
    ], modules=[a.ko, b.ko])
    assert_clean(result)
    s = result.steps
    assert s[2].output == "patch A\n"
    assert s[6].output == "patch B\n"
    assert s[7].output.split() == [b.modname]
    assert s[12].output == ORIG_CMDLINE + "\n"


def test_non_replace_patches_stack(patch_a, patch_b_stack, lab_boot):
    a, b = patch_a, patch_b_stack
    result = lab_boot([
        *load(a),                              # 0, 1
        *load(b),                              # 2, 3
        shell(f"cat {a.sysfs}/enabled {b.sysfs}/enabled"),  # 4 both enabled
        read("/proc/cmdline"),                 # 5 the top of the stack
        *disable(b),                           # 6, 7, 8
        read(f"{a.sysfs}/enabled"),            # 9
        read("/proc/cmdline"),                 # 10 A again
        *disable(a),                           # 11, 12, 13
        read("/proc/cmdline"),                 # 14
    ], modules=[a.ko, b.ko])
    assert_clean(result)
    s = result.steps
    assert s[4].output.split() == ["1", "1"]
    assert s[5].output == "patch B\n"
    assert s[9].output == "1\n"
    assert s[10].output == "patch A\n"
    assert s[14].output == ORIG_CMDLINE + "\n"


def test_glue_asserts_the_record_layout_of_records_py(lab_kernel, tmp_path, monkeypatch):
    """The C glue's struct pykpatch_func is checked against pykpatch/records.py at compile time."""
    from pykpatch import records
    from pykpatch.errors import ModuleBuildError
    from pykpatch.kpatch_build.kmod import build_module

    log = tmp_path / "ok.log"
    built = build_module([], lab_kernel.tree, "livepatch-layout", tmp_path / "ok.ko", log=log, workdir=tmp_path / "ok")
    assert built.path.is_file()
    monkeypatch.setattr(records, "FUNC_RECORD", records.FUNC_RECORD + 8)
    log = tmp_path / "bad.log"
    with pytest.raises(ModuleBuildError):
        build_module([], lab_kernel.tree, "livepatch-layout", tmp_path / "bad.ko", log=log, workdir=tmp_path / "bad")
    assert "pykpatch_func differs from records.py" in log.read_text()
