/* A miniature of fs/proc/cmdline.c, compiled like kernel code (see scripts/demo.sh). */
struct seq_file;
extern int seq_puts(struct seq_file *m, const char *s);
extern void seq_putc(struct seq_file *m, char c);
extern char *saved_command_line;

static int __attribute__((noinline)) cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, saved_command_line);
	seq_putc(m, '\n');
	return 0;
}

int (*cmdline_show_hook)(struct seq_file *, void *) = cmdline_proc_show;
