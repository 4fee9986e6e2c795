/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A live patch of cmdline_proc_show() (fs/proc/cmdline.c): /proc/cmdline then reads PATCH_TEXT.
 * The including file defines PATCH_TEXT and PATCH_REPLACE.
 */
#include <linux/seq_file.h>

static int patched_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s\n", PATCH_TEXT);
	return 0;
}

#define PATCH_OBJECT NULL
#define PATCH_OLD_NAME "cmdline_proc_show"
#define PATCH_NEW_FUNC patched_cmdline_proc_show
#include "one-function-patch.h"
