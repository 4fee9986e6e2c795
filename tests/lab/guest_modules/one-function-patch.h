/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The klp_patch of a live patch that replaces one function, with the kernel's livepatch API
 * (as samples/livepatch/livepatch-sample.c does).  The including file defines the new function
 * and PATCH_OBJECT (NULL: vmlinux, else a module name), PATCH_OLD_NAME, PATCH_NEW_FUNC and
 * PATCH_REPLACE (atomic replace of the patches loaded before).
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>

static struct klp_func funcs[] = {
	{ .old_name = PATCH_OLD_NAME, .new_func = PATCH_NEW_FUNC, },
	{ }
};

static struct klp_object objs[] = {
	{ .name = PATCH_OBJECT, .funcs = funcs, },
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
	.replace = PATCH_REPLACE,
};

static int patch_init(void)
{
	return klp_enable_patch(&patch);
}

static void patch_exit(void)
{
}

module_init(patch_init);
module_exit(patch_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
