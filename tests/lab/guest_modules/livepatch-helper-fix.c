// SPDX-License-Identifier: GPL-2.0
/*
 * Replaces klp_helper_nap() of the klp_helper module by a nap that does not
 * sleep inside (the kthread's own msleep between naps is enough), so that
 * unloading this patch never stalls.
 */
#include <linux/printk.h>

static void fixed_nap(void)
{
	pr_info_once("livepatch_helper_fix: klp_napper runs the fixed nap\n");
}

#define PATCH_OBJECT "klp_helper"
#define PATCH_OLD_NAME "klp_helper_nap"
#define PATCH_NEW_FUNC fixed_nap
#define PATCH_REPLACE false
#include "one-function-patch.h"
MODULE_DESCRIPTION("pykpatch guest test: replaces klp_helper_nap()");
