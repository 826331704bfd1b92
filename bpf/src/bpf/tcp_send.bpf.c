/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * tcp_send.bpf.c - times TCP sends from the socket layer's own tracepoints,
 * whatever the system call: write, writev, send*, sendmmsg, sendfile,
 * splice and io_uring all reach sock_sendmsg, whose sock_send_length
 * tracepoint closes the send with its byte count (the kernel's return
 * value, what was queued to the peer). The send opens at the first
 * tcp_sendmsg_locked of that socket, with the socket lock held; the time
 * before it (syscall entry, fd lookup, waiting for the socket lock) is not
 * in the interval. A send that fails before queueing anything (EPIPE on a
 * shut-down socket, ENOTCONN) and a zero-length send never reach
 * tcp_sendmsg_locked: they have no interval and are not counted, as with
 * the fallback. No system call hook is involved.
 */

/* Only user sockets: kernel sockets (NFS, CIFS, ...) have no file, and
 * kernel threads send on behalf of nobody in particular. */
static __always_inline bool user_tcp_socket(struct task_struct *task, const struct sock *sk)
{
	if (sk->sk_protocol != IPPROTO_TCP || sk->sk_type != SOCK_STREAM)
		return false;
	if (task->flags & KOTEL_PF_KTHREAD)
		return false;

	/* Plain loads from the typed tracepoint argument (no helper calls). */
	struct socket *sock = sk->sk_socket;

	return sock && sock->file;
}

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(tcp_send_begin, const struct sock *sk, const struct msghdr *msg,
	     const struct sk_buff *skb, int size_goal)
{
	struct task_struct *task = bpf_get_current_task_btf();

	if (!current_allowed(task->tgid))
		return 0;

	struct task_state *s = state_of(task, true);

	/* Later rounds of the same send's copy loop keep the first start. */
	if (!s || (s->tcp_start_ns && s->tcp_sk == (__u64)sk))
		return 0;
	s->tcp_sk = (__u64)sk;
	s->tcp_start_ns = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(tcp_send_end, struct sock *sk, int ret, int flags)
{
	struct task_struct *task = bpf_get_current_task_btf();

	if (!current_allowed(task->tgid))
		return 0;

	struct task_state *s = state_of(task, false);

	if (!s || !s->tcp_start_ns)
		return 0;

	/* A start left by another socket's send (a kernel-internal sender)
	 * ends here too, so it never stretches a later send. */
	__u64 start = s->tcp_sk == (__u64)sk ? s->tcp_start_ns : 0;

	s->tcp_start_ns = 0;
	if (!start || !user_tcp_socket(task, sk))
		return 0;

	__u64 now = bpf_ktime_get_ns();
	struct kotel_event *e = call_event(ctx, s, KOTEL_KIND_TCP_SEND, start, now, ret, -1, 0);

	if (!e)
		return 0;

	const struct sock_common *c = &sk->__sk_common;

	e->family = c->skc_family;
	e->lport = c->skc_num;
	e->dport = bpf_ntohs(c->skc_dport);
	tuple_copy(c, e->laddr, e->daddr);
	event_submit(e);
	return 0;
}
