// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * kotel.bpf.c - the one BPF object kotel loads. The probes share maps
 * (ring buffer, histograms, per-thread state), so they build as a single
 * compilation unit: each probe keeps its own file, included here.
 */
#include "common.bpf.h"

#include "writev.bpf.c"
#include "tcp_send.bpf.c"
#include "raw_syscalls.bpf.c"
#include "sched.bpf.c"
#include "lifecycle.bpf.c"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
