// SPDX-License-Identifier: GPL-2.0
/*
 * bootfarm_trigger: a test-only module that provokes one real kernel failure at load time,
 * so bootfarm's console classifier can be tested against what a kernel really prints.
 * Usage: insmod bootfarm_trigger.ko mode=warn|bug|oops|softlockup|hungtask|panic
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/bug.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/preempt.h>
#include <linux/string.h>

static char *mode = "";
module_param(mode, charp, 0444);
MODULE_PARM_DESC(mode, "failure to trigger: warn, bug, oops, softlockup, hungtask, panic");

/* Long enough to outlast the soft lockup threshold (2 * watchdog_thresh, thresh=3 -> 6 s). */
static unsigned int spin_secs = 12;
module_param(spin_secs, uint, 0444);

/* Long enough to outlast two hung-task check periods (timeout lowered to 2-5 s by /init). */
static unsigned int block_secs = 15;
module_param(block_secs, uint, 0444);

static noinline void bootfarm_spin(void)
{
	unsigned long until = jiffies + spin_secs * HZ;

	/* Timer interrupts still advance jiffies, but the watchdog thread can never run here. */
	preempt_disable();
	while (time_before(jiffies, until))
		cpu_relax();
	preempt_enable();
}

static noinline void bootfarm_null_deref(void)
{
	int *volatile p = NULL;

	*p = 0xb007;
}

static int __init bootfarm_trigger_init(void)
{
	pr_info("bootfarm_trigger: mode=%s\n", mode);

	if (!strcmp(mode, "warn")) {
		WARN_ON(1);
	} else if (!strcmp(mode, "bug")) {
		BUG();
	} else if (!strcmp(mode, "oops")) {
		bootfarm_null_deref();
	} else if (!strcmp(mode, "softlockup")) {
		bootfarm_spin();
	} else if (!strcmp(mode, "hungtask")) {
		/* insmod sits in D state, which the hung task detector reports. */
		msleep(block_secs * 1000);
	} else if (!strcmp(mode, "panic")) {
		panic("bootfarm_trigger: panic requested");
	} else {
		pr_err("bootfarm_trigger: unknown mode '%s'\n", mode);
		return -EINVAL;
	}

	pr_info("bootfarm_trigger: mode=%s returned\n", mode);
	return 0;
}

static void __exit bootfarm_trigger_exit(void)
{
}

module_init(bootfarm_trigger_init);
module_exit(bootfarm_trigger_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("bootfarm test module: triggers real kernel failures on purpose");
