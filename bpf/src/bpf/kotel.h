/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * kotel.h - the one ABI between kotel's BPF programs and its Rust userspace.
 *
 * Every struct here crosses the kernel/user boundary. Rust reads them
 * through the skeleton's generated types, and layout tests in
 * bpf/src/abi.rs pin every size and offset, so change both together.
 * No implicit padding: every hole is an explicit reserved field.
 */
#ifndef __KOTEL_H
#define __KOTEL_H

/* What an event or a histogram measures. */
enum kotel_kind {
	KOTEL_KIND_WRITEV = 0,   /* one writev(2) call, enter to exit */
	KOTEL_KIND_TCP_SEND = 1, /* one send syscall that reached tcp_sendmsg */
	KOTEL_KIND_RUNQUEUE = 2, /* runnable (woken or preempted) until on a CPU */
	KOTEL_KIND_OFFCPU = 3,   /* switched out blocked until switched back in; as a
				  * histogram, the uninterruptible waits only */
	KOTEL_KIND_COUNT = 4,    /* kinds of events (and of ring-buffer drop slots) */
	/* A histogram series, never an event kind: the interruptible off-CPU
	 * waits (their events are KOTEL_KIND_OFFCPU with offcpu_state saying so). */
	KOTEL_KIND_OFFCPU_SLEEP = 4,
	KOTEL_HIST_KINDS = 5, /* histogram series per process */
	/* Process lifecycle records (no duration), for userspace caches. */
	KOTEL_KIND_EXEC = 16, /* the process called execve: its metadata changed */
	KOTEL_KIND_EXIT = 17, /* the whole thread group exited */
};

/* How a thread was blocked when it went off-CPU (struct kotel_event's
 * offcpu_state), from the task state at the switch-out:
 *  - uninterruptible: TASK_UNINTERRUPTIBLE without TASK_NOLOAD (disk I/O,
 *    kernel locks, page faults, vfork's wait for the child; TASK_KILLABLE
 *    too), and TASK_RTLOCK_WAIT (a sleeping spinlock on PREEMPT_RT);
 *  - interruptible: everything else, that is TASK_INTERRUPTIBLE (poll, epoll,
 *    futex and condition waits, nanosleep, pipe and socket reads), TASK_IDLE
 *    (uninterruptible but counted as idle, as the load average does: kernel
 *    threads waiting for work), stopped and traced tasks (waiting for a
 *    signal or a debugger), parked kernel threads and frozen tasks. */
enum kotel_offcpu_state {
	KOTEL_OFFCPU_NONE = 0,            /* not an off-CPU event */
	KOTEL_OFFCPU_INTERRUPTIBLE = 1,   /* an idle wait: sleeping until something happens */
	KOTEL_OFFCPU_UNINTERRUPTIBLE = 2, /* blocked on a resource */
};

/* How a stack id is made: the bucket in its generation's stack map below
 * KOTEL_STACK_EPOCH_SHIFT (stack maps hold at most 1 << 16 entries), the
 * generation's low bits above it; always positive. */
enum kotel_stack_id {
	KOTEL_STACK_EPOCH_SHIFT = 16,
	KOTEL_STACK_EPOCH_MASK = 0x3fff,
};

/* Indexes of the per-CPU `drops` counters. The first KOTEL_KIND_COUNT are
 * ring-buffer reservation failures, one per kind. */
enum kotel_drop {
	/* No free histogram slot: event counted in the kind's overflow histogram instead. */
	KOTEL_DROP_HIST_FULL = 4,
	/* Task storage unavailable: event missed. */
	KOTEL_DROP_TASK_STORAGE = 5,
	/* Ring buffer full: an exec/exit record lost. */
	KOTEL_DROP_LIFECYCLE = 6,
	/* Stack map full or collided: stack id missing. */
	KOTEL_DROP_STACK = 7,
	/* Event of a thread still running after its process's exit retired its
	 * histograms: counted in the kind's overflow histogram instead. */
	KOTEL_DROP_HIST_EXITED = 8,
	/* A switch-in the sched_switch tracepoint never delivered, closed at
	 * sched_exit_tp instead: nothing lost (a counter, not a loss). */
	KOTEL_DROP_SWITCH_LATE = 9,
	/* A switch-in never delivered and nothing to close it (no sched_exit_tp):
	 * its off-CPU interval lost. */
	KOTEL_DROP_SWITCH_UNSEEN = 10,
	/* A run-queue wait lost: the wakeup that began it or the switch-in that
	 * ended it never reached kotel. */
	KOTEL_DROP_WAIT_UNSEEN = 11,
	KOTEL_DROP_COUNT = 12,
};

/* Histogram bucket table capacity. Userspace fills `bucket_bounds` for the
 * configured scale; scale 4 over 1 ns .. 2^40 ns needs 641 buckets. */
#define KOTEL_MAX_BUCKETS 648
/* Largest value the bucket table maps exactly, in nanoseconds (about 18
 * minutes). Larger values are clamped into the last bucket and counted in
 * `hist_val.clamped`. */
#define KOTEL_MAX_VALUE_NS (1ULL << 40)
/* Bounded binary search: ceil(log2(KOTEL_MAX_BUCKETS)) steps. */
#define KOTEL_SEARCH_STEPS 10
/* Most pids that the in-kernel pid filter holds. */
#define KOTEL_MAX_FILTER_PIDS 1024

/* One latency event, sent through the ring buffer when its duration is at
 * or above the threshold (an interruptible off-CPU one: the sleep
 * threshold), or when its process is a link target. 112 bytes. */
struct kotel_event {
	__u64 start_ns;    /* CLOCK_MONOTONIC when the interval began */
	__u64 duration_ns; /* length of the interval */
	__s64 bytes;       /* syscall return value for writev/tcp_send, else -1 */
	__u32 pid;         /* thread group id (the process) */
	__u32 tid;         /* thread id */
	__u32 cpu;         /* CPU where the interval ended */
	__s32 fd;          /* file descriptor for writev/tcp_send, else -1 */
	__u32 iovcnt;      /* iovec count for writev, else 0 */
	__s32 kstack_id;   /* kernel stack id (off-CPU, slow calls), else -1 */
	__s32 ustack_id;   /* user stack id (off-CPU, slow calls), else -1 */
	__u16 family;      /* AF_INET or AF_INET6 for tcp_send, else 0 */
	__u16 lport;       /* local port, host byte order */
	__u16 dport;       /* peer port, host byte order */
	__u8 kind;         /* enum kotel_kind */
	__u8 offcpu_state; /* enum kotel_offcpu_state, for off-CPU events */
	__u8 laddr[16];    /* local address: 4 bytes for IPv4, 16 for IPv6 */
	__u8 daddr[16];    /* peer address, same encoding */
	char comm[16];     /* thread name */
	__u32 reserved1;
};

/* Key of the histogram slot map: one histogram per (process, series), the
 * series being a kind below KOTEL_HIST_KINDS. */
struct kotel_hist_key {
	__u32 pid;
	__u32 kind;
};

/* An OTLP base-2 exponential histogram of durations in seconds, at the
 * scale userspace chose. bucket i counts values whose OTLP index is
 * `offset + i` (offset and scale live in userspace). The event count is
 * zero_count plus the bucket counts; it is not kept twice.
 *
 * Slots are recycled: when the owning process exits the kernel retires the
 * slot (bumps `gen`, which invalidates every thread's cached slot); userspace
 * reads the final counts, zeroes the counters (keeping `gen`) and returns
 * the slot to the free list. */
struct kotel_hist {
	__u64 sum_ns;     /* sum of all durations */
	__u64 zero_count; /* events of exactly 0 ns */
	__u64 bytes;      /* sum of positive byte counts (writev, tcp_send) */
	__u64 clamped;    /* values above KOTEL_MAX_VALUE_NS, put in the last bucket */
	__u64 max_ns;     /* largest duration seen */
	__u32 pid;        /* owner process, set when the slot is taken */
	__u32 kind;       /* owner series (enum kotel_kind, below KOTEL_HIST_KINDS) */
	__u32 gen;        /* bumped by the kernel each time the slot is retired */
	__u32 reserved;
	__u64 buckets[KOTEL_MAX_BUCKETS];
};

#endif /* __KOTEL_H */
