/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * raw_syscalls.bpf.c - the fallback hooks of the writev and tcp_send probes,
 * for kernels that lack their own (writev's syscall tracepoints, TCP's
 * sock_send_length): times writev and the send syscalls (write, writev,
 * sendto, sendmsg) from raw sys_enter to sys_exit, and tcp_sendmsg_mark
 * marks the syscalls that reached TCP. Every system call on the host runs
 * these two programs, which is why they are only the fallback.
 */

#define KOTEL_TS_COMPAT 0x0002

static __always_inline bool is_send_nr(__s64 nr)
{
	return nr == nr_write || nr == nr_writev || nr == nr_sendto || nr == nr_sendmsg;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(raw_sys_enter, struct pt_regs *regs, long id)
{
	bool want = (writev_on_raw && id == nr_writev) || (tcp_send_on_raw && is_send_nr(id));

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

SEC("tp_btf/sys_exit")
int BPF_PROG(raw_sys_exit, struct pt_regs *regs, long ret)
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
	struct kotel_event *e;

	if (writev_on_raw && s->sys_nr == nr_writev) {
		e = call_event(ctx, s, KOTEL_KIND_WRITEV, s->sys_start_ns, now, ret, s->sys_fd,
			       s->sys_iovcnt);
		if (e)
			event_submit(e);
	}
	if (tcp_send_on_raw && s->sys_is_tcp) {
		e = call_event(ctx, s, KOTEL_KIND_TCP_SEND, s->sys_start_ns, now, ret, s->sys_fd,
			       0);
		if (e) {
			e->family = s->family;
			e->lport = s->lport;
			e->dport = s->dport;
			__builtin_memcpy(e->laddr, s->laddr, sizeof(e->laddr));
			__builtin_memcpy(e->daddr, s->daddr, sizeof(e->daddr));
			event_submit(e);
		}
	}
	s->sys_start_ns = 0;
	s->sys_is_tcp = 0;
	return 0;
}

/* Inside a send syscall the raw hooks saw begin: mark it as TCP and keep the
 * socket's 4-tuple, when the socket is the one behind the syscall's own fd
 * (kernel-internal TCP senders such as CIFS or NBD also run in the caller's
 * context). */
SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(tcp_sendmsg_mark, const struct sock *sk, const struct msghdr *msg,
	     const struct sk_buff *skb, int size_goal)
{
	struct task_state *s = state_of(bpf_get_current_task_btf(), false);

	if (!s || !s->sys_start_ns || s->sys_is_tcp)
		return 0;

	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;

	if (s->sys_fd < 0 || (__u32)s->sys_fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[s->sys_fd]);
	if (!f || f != BPF_CORE_READ(sk, sk_socket, file))
		return 0;

	const struct sock_common *c = &sk->__sk_common;

	s->family = c->skc_family;
	s->lport = c->skc_num;
	s->dport = bpf_ntohs(c->skc_dport);
	tuple_copy(c, s->laddr, s->daddr);
	s->sys_is_tcp = 1;
	return 0;
}
