// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * floor.bpf.c - empty programs on the hooks kotel could use for writev, for benchmarks only:
 * what the tracepoint mechanism itself costs per call, before kotel does any work.
 *  - raw: tp_btf on raw_syscalls sys_enter/sys_exit (what kotel uses);
 *  - syscalls: the per-syscall syscalls:sys_enter_writev/sys_exit_writev pair.
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

char LICENSE[] SEC("license") = "Dual BSD/GPL";
