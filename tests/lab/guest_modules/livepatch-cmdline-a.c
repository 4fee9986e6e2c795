// SPDX-License-Identifier: GPL-2.0
/* Patch A: stacks on whatever is loaded (no atomic replace). */
#define PATCH_TEXT "pykpatch guest: patch A"
#define PATCH_REPLACE false
#include "cmdline-patch.h"
MODULE_DESCRIPTION("pykpatch guest test: /proc/cmdline reads 'patch A'");
