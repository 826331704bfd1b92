// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * floor.bpf.c - empty programs on the hooks kotel could use for writev, for benchmarks only:
 * what the tracepoint mechanism itself costs per call, before kotel does any work.
 *  - raw: tp_btf on raw_syscalls sys_enter/sys_exit (what kotel uses);
 *  - syscalls: the per-syscall syscalls:sys_enter_writev/sys_exit_writev pair;
 *  - timed: the least any per-thread syscall timer does on kotel's hooks: keep the
 *    enter time in task storage and subtract it at exit, nothing else;
 *  - tcp: tcp_send's socket tracepoints, tcp_sendmsg_locked and sock_send_length;
 *  - tcp_timed: the least a timer of TCP sends does on them: the start in task storage at
 *    the first, the difference at the second.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/sys_enter")
int BPF_PROG(floor_raw_enter, struct pt_regs *regs, long id)
{
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(floor_raw_exit, struct pt_regs *regs, long ret)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_writev")
int floor_syscalls_enter(void *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_writev")
int floor_syscalls_exit(void *ctx)
{
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} floor_start SEC(".maps");

__u64 floor_total_ns = 0;
__s64 floor_writev_nr = 20;

SEC("tp_btf/sys_enter")
int BPF_PROG(floor_timed_enter, struct pt_regs *regs, long id)
{
	if (id != floor_writev_nr)
		return 0;

	__u64 *start = bpf_task_storage_get(&floor_start, bpf_get_current_task_btf(), 0,
					    BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (start)
		*start = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(floor_timed_exit, struct pt_regs *regs, long ret)
{
	__u64 *start = bpf_task_storage_get(&floor_start, bpf_get_current_task_btf(), 0, 0);

	if (start && *start) {
		floor_total_ns += bpf_ktime_get_ns() - *start;
		*start = 0;
	}
	return 0;
}

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(floor_tcp_begin, const struct sock *sk)
{
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(floor_tcp_end, struct sock *sk, int ret)
{
	return 0;
}

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(floor_tcp_timed_begin, const struct sock *sk)
{
	__u64 *start = bpf_task_storage_get(&floor_start, bpf_get_current_task_btf(), 0,
					    BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (start && !*start)
		*start = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(floor_tcp_timed_end, struct sock *sk, int ret)
{
	__u64 *start = bpf_task_storage_get(&floor_start, bpf_get_current_task_btf(), 0, 0);

	if (start && *start) {
		floor_total_ns += bpf_ktime_get_ns() - *start;
		*start = 0;
	}
	return 0;
}

/* The same timer with its start in a per-CPU slot instead of task storage (correct only while
 * a send neither sleeps nor migrates: for measuring what task storage costs). */
struct floor_pcpu_start {
	__u64 sk;
	__u64 start;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct floor_pcpu_start);
} floor_pcpu SEC(".maps");

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(floor_tcp_pcpu_begin, const struct sock *sk)
{
	__u32 zero = 0;
	struct floor_pcpu_start *p = bpf_map_lookup_elem(&floor_pcpu, &zero);

	if (p && p->sk != (__u64)sk) {
		p->sk = (__u64)sk;
		p->start = bpf_ktime_get_ns();
	}
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(floor_tcp_pcpu_end, struct sock *sk, int ret)
{
	__u32 zero = 0;
	struct floor_pcpu_start *p = bpf_map_lookup_elem(&floor_pcpu, &zero);

	if (p && p->sk == (__u64)sk) {
		floor_total_ns += bpf_ktime_get_ns() - p->start;
		p->sk = 0;
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
