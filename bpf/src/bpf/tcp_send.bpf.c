/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * tcp_send.bpf.c - marks the current send syscall as TCP and records the
 * socket's 4-tuple (IPv4 or IPv6) through CO-RE. The byte count comes
 * from the syscall's return value at sys_exit, which is what was actually
 * sent; the tracepoint's skb length and size_goal over-count.
 */

#define KOTEL_AF_INET 2
#define KOTEL_AF_INET6 10

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(tcp_sendmsg_locked, const struct sock *sk, const struct msghdr *msg,
	     const struct sk_buff *skb, int size_goal)
{
	struct task_state *s = state_of(bpf_get_current_task_btf(), false);

	if (!s || !s->sys_start_ns || s->sys_is_tcp)
		return 0;

	/* Only the socket behind the syscall's own fd counts: kernel-internal
	 * TCP senders (CIFS, NBD) also run in the caller's context. */
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;

	if (s->sys_fd < 0 || (__u32)s->sys_fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[s->sys_fd]);
	if (!f || f != BPF_CORE_READ(sk, sk_socket, file))
		return 0;

	/* tp_btf arguments are typed kernel pointers: plain loads, relocated by CO-RE. */
	const struct sock_common *c = &sk->__sk_common;
	__u16 family = c->skc_family;

	s->family = family;
	s->lport = c->skc_num;
	s->dport = bpf_ntohs(c->skc_dport);
	__builtin_memset(s->laddr, 0, sizeof(s->laddr));
	__builtin_memset(s->daddr, 0, sizeof(s->daddr));
	if (family == KOTEL_AF_INET) {
		*(__u32 *)s->laddr = c->skc_rcv_saddr;
		*(__u32 *)s->daddr = c->skc_daddr;
	} else if (family == KOTEL_AF_INET6) {
#pragma unroll
		for (int i = 0; i < 4; i++) {
			((__u32 *)s->laddr)[i] = c->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			((__u32 *)s->daddr)[i] = c->skc_v6_daddr.in6_u.u6_addr32[i];
		}
	}
	s->sys_is_tcp = 1;
	return 0;
}
