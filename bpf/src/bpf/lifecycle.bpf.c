/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * lifecycle.bpf.c - exec and exit of traced processes, sent through the
 * ring buffer so userspace drops its cached process metadata (executable,
 * command line, container) exactly when it goes stale. Not histogrammed.
 */

static __always_inline void emit_lifecycle(struct task_struct *p, __u32 kind)
{
	struct kotel_event *e = event_reserve(kind);

	if (!e)
		return;
	e->start_ns = bpf_ktime_get_ns();
	e->duration_ns = 0;
	e->pid = p->tgid;
	e->tid = p->pid;
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), p->comm);
	event_submit(e);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (enable_lifecycle && task_allowed(p))
		emit_lifecycle(p, KOTEL_KIND_EXEC);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_process_exit, struct task_struct *p, bool group_dead)
{
	if (enable_lifecycle && group_dead && task_allowed(p))
		emit_lifecycle(p, KOTEL_KIND_EXIT);
	return 0;
}
