/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kpatch-syscall.h - patching a system call with pykpatch.
 *
 * A change in the body of SYSCALL_DEFINEn(name, ...) is a change in
 * __do_sys_name(), which the kernel declares 'static inline', hence
 * 'notrace': when gcc keeps it out of line it has no ftrace hook and the
 * diff refuses it ("has no ftrace hook").  Write the syscall with the
 * KPATCH_ prefixed macro instead:
 *
 *	#include "kpatch-syscall.h"
 *	KPATCH_SYSCALL_DEFINE1(newuname, struct new_utsname __user *, name)
 *	{ ...patched body... }
 *
 * It is the kernel's own definition (arch/x86/include/asm/syscall_wrapper.h,
 * Linux 5.7 and later) with the inner function renamed: the body becomes a
 * *new* function (new functions need no hook), and the changed function is
 * the __x64_sys_name() stub, which has one.  The names are kpatch's, so
 * patches written for kpatch build unchanged.
 */
#ifndef __KPATCH_SYSCALL_H_
#define __KPATCH_SYSCALL_H_

#include <linux/syscalls.h>
#include "kpatch-macros.h"

#if defined(CONFIG_X86_64) && defined(__X64_SYS_STUBx)

#define __KPATCH_SYSCALL_DEFINEx(x, name, ...)					\
	static long __se_sys##name(__MAP(x,__SC_LONG,__VA_ARGS__));		\
	static inline long __kpatch_do_sys##name(__MAP(x,__SC_DECL,__VA_ARGS__));\
	__X64_SYS_STUBx(x, name, __VA_ARGS__)					\
	__IA32_SYS_STUBx(x, name, __VA_ARGS__)					\
	static long __se_sys##name(__MAP(x,__SC_LONG,__VA_ARGS__))		\
	{									\
		long ret = __kpatch_do_sys##name(__MAP(x,__SC_CAST,__VA_ARGS__));\
		__MAP(x,__SC_TEST,__VA_ARGS__);					\
		__PROTECT(x, ret,__MAP(x,__SC_ARGS,__VA_ARGS__));		\
		return ret;							\
	}									\
	static inline long __kpatch_do_sys##name(__MAP(x,__SC_DECL,__VA_ARGS__))

#else
#error "kpatch-syscall.h: only x86_64 kernels with syscall wrappers (Linux 5.7+) are supported"
#endif

/* The syscall metadata (CONFIG_FTRACE_SYSCALLS) is the kernel's, unchanged. */
#define KPATCH_SYSCALL_DEFINEx(x, sname, ...)				\
	SYSCALL_METADATA(sname, x, __VA_ARGS__)				\
	__KPATCH_SYSCALL_DEFINEx(x, sname, __VA_ARGS__)

#define KPATCH_SYSCALL_DEFINE1(name, ...) KPATCH_SYSCALL_DEFINEx(1, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE2(name, ...) KPATCH_SYSCALL_DEFINEx(2, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE3(name, ...) KPATCH_SYSCALL_DEFINEx(3, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE4(name, ...) KPATCH_SYSCALL_DEFINEx(4, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE5(name, ...) KPATCH_SYSCALL_DEFINEx(5, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE6(name, ...) KPATCH_SYSCALL_DEFINEx(6, _##name, __VA_ARGS__)

#endif /* __KPATCH_SYSCALL_H_ */
