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

	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	s->family = family;
	s->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	s->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__builtin_memset(s->laddr, 0, sizeof(s->laddr));
	__builtin_memset(s->daddr, 0, sizeof(s->daddr));
	if (family == KOTEL_AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)s->laddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)s->daddr, sk, __sk_common.skc_daddr);
	} else if (family == KOTEL_AF_INET6) {
		BPF_CORE_READ_INTO((struct in6_addr *)s->laddr, sk,
				   __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)s->daddr, sk, __sk_common.skc_v6_daddr);
	}
	s->sys_is_tcp = 1;
	return 0;
}
