/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * syscalls.bpf.c - times writev(2) and the send syscalls (write, writev,
 * sendto, sendmsg) from raw sys_enter to sys_exit. One pair of raw
 * syscall tracepoints serves both the writev and the tcp_send probes and
 * measured cheaper than the per-syscall syscalls:sys_enter_writev pair.
 * tcp_send.bpf.c marks the syscalls that reached TCP.
 */

#define KOTEL_TS_COMPAT 0x0002

static __always_inline bool is_send_nr(__s64 nr)
{
	return nr == nr_write || nr == nr_writev || nr == nr_sendto || nr == nr_sendmsg;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id)
{
	bool want;

	if (enable_tcp_send)
		want = is_send_nr(id);
	else
		want = id == nr_writev;
	if (!want)
		return 0;

	struct task_struct *task = bpf_get_current_task_btf();

	if (!current_allowed(task->tgid))
		return 0;
#if defined(__TARGET_ARCH_x86)
	/* 32-bit tasks number their syscalls differently (20 is getpid). */
	if (task->thread_info.status & KOTEL_TS_COMPAT)
		return 0;
#endif

	struct task_state *s = state_of(task, true);

	if (!s)
		return 0;
	s->sys_nr = id;
	s->sys_fd = (__s32)PT_REGS_PARM1_SYSCALL(regs);
	s->sys_iovcnt = id == nr_writev ? (__u32)PT_REGS_PARM3_SYSCALL(regs) : 0;
	s->sys_is_tcp = 0;
	s->sys_start_ns = bpf_ktime_get_ns();
	return 0;
}

static __always_inline void emit_syscall(struct task_state *s, __u32 kind, __u64 now, __s64 ret)
{
	__u64 ns = now - s->sys_start_ns;

	hist_record(s, NULL, kind, ns, ret);
	if (ns < min_latency_ns && !link_target(s))
		return;

	__u64 pid_tgid = bpf_get_current_pid_tgid();

	struct kotel_event *e = event_reserve(kind);

	if (!e)
		return;
	e->start_ns = s->sys_start_ns;
	e->duration_ns = ns;
	e->bytes = ret;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->fd = s->sys_fd;
	e->iovcnt = s->sys_iovcnt;
	if (kind == KOTEL_KIND_TCP_SEND) {
		e->family = s->family;
		e->lport = s->lport;
		e->dport = s->dport;
		__builtin_memcpy(e->laddr, s->laddr, sizeof(e->laddr));
		__builtin_memcpy(e->daddr, s->daddr, sizeof(e->daddr));
	}
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	event_submit(e);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs *regs, long ret)
{
	struct task_state *s = state_of(bpf_get_current_task_btf(), false);

	if (!s || !s->sys_start_ns)
		return 0;
#if defined(__TARGET_ARCH_x86)
	/* Only the exit of the syscall whose enter was recorded closes it. */
	if ((__s64)regs->orig_ax != s->sys_nr) {
		s->sys_start_ns = 0;
		s->sys_is_tcp = 0;
		return 0;
	}
#endif

	__u64 now = bpf_ktime_get_ns();

	if (enable_writev && s->sys_nr == nr_writev)
		emit_syscall(s, KOTEL_KIND_WRITEV, now, ret);
	if (enable_tcp_send && s->sys_is_tcp)
		emit_syscall(s, KOTEL_KIND_TCP_SEND, now, ret);
	s->sys_start_ns = 0;
	s->sys_is_tcp = 0;
	return 0;
}
