// SPDX-License-Identifier: GPL-2.0
/*
 * A kthread ("klp_napper") that sleeps inside klp_helper_nap(), the function
 * livepatch-helper-fix replaces, so that the patch transition cannot finish
 * while it sleeps there.
 *
 * stubborn=1 (default): the nap ignores every wakeup (TASK_IDLE, short
 *   timeouts in a loop): the transition can never finish; kpatch must reverse
 *   or force it.
 * stubborn=0: the nap sleeps interruptibly until woken; the livepatch core's
 *   signal (a wakeup of the kthread) ends it, the kthread then sleeps outside
 *   the patched function, where the transition switches it.
 * Writable at run time: /sys/module/klp_helper/parameters/stubborn.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/sched.h>
#include <linux/delay.h>

static bool stubborn = true;
module_param(stubborn, bool, 0644);
MODULE_PARM_DESC(stubborn, "the nap ignores wakeups (default) instead of ending at the first one");

static struct task_struct *napper;

noinline void klp_helper_nap(void)
{
	while (READ_ONCE(stubborn) && !kthread_should_stop())
		schedule_timeout_idle(HZ / 10);
	set_current_state(TASK_INTERRUPTIBLE);
	if (!kthread_should_stop())
		schedule();
	__set_current_state(TASK_RUNNING);
}

static int klp_napper(void *data)
{
	while (!kthread_should_stop()) {
		klp_helper_nap();
		/* Outside the patched function: where a transition can switch this task. */
		msleep_interruptible(1000);
	}
	return 0;
}

static int __init klp_helper_init(void)
{
	napper = kthread_run(klp_napper, NULL, "klp_napper");
	return PTR_ERR_OR_ZERO(napper);
}

static void __exit klp_helper_exit(void)
{
	kthread_stop(napper);
}

module_init(klp_helper_init);
module_exit(klp_helper_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("pykpatch guest test: a kthread sleeping inside a function a live patch replaces");
