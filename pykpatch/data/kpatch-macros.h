/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kpatch-macros.h - the patch author's toolkit for pykpatch live patches.
 *
 * Include it from the patched source (it is on the include path of every
 * kpatch-build compile: #include "kpatch-macros.h").  The names are
 * kpatch's, so existing patches build unchanged.
 *
 *   KPATCH_IGNORE_FUNCTION(fn)   changes in fn are not patched
 *   KPATCH_IGNORE_SECTION(".sec") changes in that section are ignored
 *   KPATCH_FORCE_UNSAFE(fn)      patch fn although the diff would refuse it
 *                                (you have checked that it is safe)
 *   KPATCH_PRE_PATCH_CALLBACK(fn)    int fn(patch_object *obj): runs before
 *                                    the patch is applied; non-zero aborts the load
 *   KPATCH_POST_PATCH_CALLBACK(fn)   void fn(patch_object *obj)
 *   KPATCH_PRE_UNPATCH_CALLBACK(fn)  void fn(patch_object *obj)
 *   KPATCH_POST_UNPATCH_CALLBACK(fn) void fn(patch_object *obj)
 *   KPATCH_PRINTK(fmt, ...)      printk that is safe in patched code
 *
 * Shadow variables: use the kernel's klp_shadow_alloc / klp_shadow_get /
 * klp_shadow_get_or_alloc / klp_shadow_free / klp_shadow_free_all
 * (include/linux/livepatch.h) to attach new fields to existing objects.
 */
#ifndef __KPATCH_MACROS_H_
#define __KPATCH_MACROS_H_

#include <linux/compiler.h>
#include <linux/printk.h>
#include <linux/livepatch.h>

typedef struct klp_object patch_object;

/* Records read by the module's init code; objname is filled in by the diff. */
struct kpatch_pre_patch_callback {
	int (*callback)(patch_object *obj);
	char *objname;
};
struct kpatch_post_patch_callback {
	void (*callback)(patch_object *obj);
	char *objname;
};
struct kpatch_pre_unpatch_callback {
	void (*callback)(patch_object *obj);
	char *objname;
};
struct kpatch_post_unpatch_callback {
	void (*callback)(patch_object *obj);
	char *objname;
};

#define KPATCH_IGNORE_SECTION(_sec) \
	char *__UNIQUE_ID(kpatch_ignore_section_) __section(".kpatch.ignore.sections") = _sec;

#define KPATCH_IGNORE_FUNCTION(_fn) \
	void *__kpatch_ignore_func_##_fn __section(".kpatch.ignore.functions") = _fn;

#define KPATCH_FORCE_UNSAFE(_fn) \
	void *__kpatch_force_func_##_fn __section(".kpatch.force") = _fn;

#define KPATCH_PRE_PATCH_CALLBACK(_fn) \
	static inline int __used __kpatch_pre_patch_check_##_fn(patch_object *obj) { return _fn(obj); } \
	static struct kpatch_pre_patch_callback kpatch_pre_patch_data_##_fn __used \
	__section(".kpatch.callbacks.pre_patch") = { .callback = _fn, .objname = NULL };

#define KPATCH_POST_PATCH_CALLBACK(_fn) \
	static inline void __used __kpatch_post_patch_check_##_fn(patch_object *obj) { _fn(obj); } \
	static struct kpatch_post_patch_callback kpatch_post_patch_data_##_fn __used \
	__section(".kpatch.callbacks.post_patch") = { .callback = _fn, .objname = NULL };

#define KPATCH_PRE_UNPATCH_CALLBACK(_fn) \
	static inline void __used __kpatch_pre_unpatch_check_##_fn(patch_object *obj) { _fn(obj); } \
	static struct kpatch_pre_unpatch_callback kpatch_pre_unpatch_data_##_fn __used \
	__section(".kpatch.callbacks.pre_unpatch") = { .callback = _fn, .objname = NULL };

#define KPATCH_POST_UNPATCH_CALLBACK(_fn) \
	static inline void __used __kpatch_post_unpatch_check_##_fn(patch_object *obj) { _fn(obj); } \
	static struct kpatch_post_unpatch_callback kpatch_post_unpatch_data_##_fn __used \
	__section(".kpatch.callbacks.post_unpatch") = { .callback = _fn, .objname = NULL };

/*
 * printk() with a format string that lives in the patch module: a plain
 * printk in patched code works too, but its printk_index entry and the
 * string section would make unrelated functions look changed.
 */
#define KPATCH_PRINTK(_fmt, ...) \
({ \
	static const char __kpatch_fmt[] __section(".rodata.kpatch.printk") = _fmt; \
	printk(__kpatch_fmt, ##__VA_ARGS__); \
})

#endif /* __KPATCH_MACROS_H_ */
