// SPDX-License-Identifier: GPL-2.0
/*
 * A live patch of a function this kernel does not have (as a patch built for
 * another kernel would be): klp_enable_patch() fails and so does insmod.  The
 * boot-time loader must report it and still load the other patches.
 */
static void bogus(void)
{
}

#define PATCH_OBJECT NULL
#define PATCH_OLD_NAME "pykpatch_no_such_function"
#define PATCH_NEW_FUNC bogus
#define PATCH_REPLACE false
#include "one-function-patch.h"
MODULE_DESCRIPTION("pykpatch guest test: patches a function that does not exist");
