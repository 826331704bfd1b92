/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * writev.bpf.c - times writev(2) from its own syscall tracepoints,
 * syscalls:sys_enter_writev to sys_exit_writev. Only writev runs these
 * programs; but any syscall tracepoint puts every task on the kernel's
 * syscall slow path, which every other system call then pays too (measured
 * in docs/performance.md), so the probe is off unless asked for.
 * Compat (32-bit) syscalls never reach these tracepoints.
 */

SEC("tracepoint/syscalls/sys_enter_writev")
int writev_enter(struct syscall_trace_enter *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();

	if (!current_allowed(task->tgid))
		return 0;

	struct task_state *s = state_of(task, true);

	if (!s)
		return 0;
	s->wv_fd = (__s32)ctx->args[0];
	s->wv_iovcnt = (__u32)ctx->args[2];
	s->wv_start_ns = bpf_ktime_get_ns();
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_writev")
int writev_exit(struct syscall_trace_exit *ctx)
{
	struct task_state *s = state_of(bpf_get_current_task_btf(), false);

	if (!s || !s->wv_start_ns)
		return 0;

	__u64 now = bpf_ktime_get_ns();
	struct kotel_event *e = call_event(ctx, s, KOTEL_KIND_WRITEV, s->wv_start_ns, now, ctx->ret,
					   s->wv_fd, s->wv_iovcnt);

	if (e)
		event_submit(e);
	s->wv_start_ns = 0;
	return 0;
}
