// SPDX-License-Identifier: GPL-2.0
/* Patch B: replaces every loaded patch (atomic replace), as a cumulative patch would. */
#define PATCH_TEXT "pykpatch guest: patch B"
#define PATCH_REPLACE true
#include "cmdline-patch.h"
MODULE_DESCRIPTION("pykpatch guest test: /proc/cmdline reads 'patch B', replacing patch A");
