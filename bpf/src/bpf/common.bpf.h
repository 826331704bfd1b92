/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * common.bpf.h - what every kotel probe shares: options set before load,
 * maps, the process filter, per-thread state, the histogram update and
 * the ring-buffer submit.
 */
#ifndef __KOTEL_COMMON_BPF_H
#define __KOTEL_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "kotel.h"

/* ---- Options, written by userspace into .rodata before load. ---- */

const volatile bool enable_writev = false;
const volatile bool enable_tcp_send = false;
/* Which hooks a syscall probe got: false for its own hooks (writev's syscall
 * tracepoints, TCP's socket tracepoints), true for the raw_syscalls fallback. */
const volatile bool writev_on_raw = false;
const volatile bool tcp_send_on_raw = false;
const volatile bool enable_runqueue = false;
const volatile bool enable_offcpu = false;
const volatile bool capture_stacks = true;
/* Kernel threads (PF_KTHREAD) still count in the histograms but send no
 * event to userspace unless this is set. */
const volatile bool send_kernel_threads = false;
/* Take off-CPU stacks in the switched-in task at sched_exit_tp, only for the
 * intervals that go to userspace, instead of at every blocked switch-out. */
const volatile bool stacks_at_switch_in = false;
/* Send exec/exit records so userspace can refresh its process metadata. */
const volatile bool enable_lifecycle = false;
/* Events at or above this many nanoseconds go to the ring buffer. */
const volatile __u64 min_latency_ns = 1000000;
/* Interruptible off-CPU intervals (idle waits) go to the ring buffer only at
 * or above this many nanoseconds (userspace sets it no lower than
 * min_latency_ns; the maximum: never). Link targets send every interval. */
const volatile __u64 min_sleep_latency_ns = ~0ULL;
/* Off-CPU stacks taken at the switch-out (without sched_exit_tp) are as old
 * as the wait. Past this many nanoseconds their generation's number may have
 * come round again (userspace sets it to half the wrap), so they are not sent. */
const volatile __u64 max_stack_hold_ns = ~0ULL;
/* kotel's own process: never traced, so its output does not feed back. */
const volatile __u32 self_pid = 0;
/* When set, only pids present in `pid_filter` are traced. */
const volatile bool filter_pids = false;
/* When non-zero, only tasks in this cgroup v2 (its id) or below it are
 * traced; filter_cgroup_level is its depth below the root. */
const volatile __u64 filter_cgroup_id = 0;
const volatile __u32 filter_cgroup_level = 0;
/* Syscall numbers of this architecture, from userspace's libc. */
const volatile __s64 nr_write = -1;
const volatile __s64 nr_writev = -1;
const volatile __s64 nr_sendto = -1;
const volatile __s64 nr_sendmsg = -1;
/* Histogram bucket table: bucket_bounds[i] is the smallest duration in ns
 * that falls in bucket i; n_buckets entries are used. */
const volatile __u32 n_buckets = 1;
const volatile __u64 bucket_bounds[KOTEL_MAX_BUCKETS] = {};
/* Number of slots in `hists`. */
const volatile __u32 hist_capacity = 1024;
/* Wake the reader only once this many bytes wait in the ring buffer;
 * below that the reader drains on its own timer. */
const volatile __u64 wakeup_bytes = 1 << 20;

/* ---- Maps. ---- */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by userspace before load */
} events SEC(".maps");

/* Kernel and user stacks of the events that go to userspace with them: slow
 * calls (at their exit, in the caller) and off-CPU intervals.
 *
 * A stack map never forgets: a bucket stays taken until it is deleted, and a
 * different stack that hashes to a taken bucket is refused. So stacks go by
 * generation (`stack_epoch`) into one of two maps, even epochs into
 * `stacks_even`, odd ones into `stacks_odd`; a stack id carries its epoch
 * above KOTEL_STACK_EPOCH_SHIFT. Userspace starts a new epoch at every drain
 * (every 10 s where off-CPU stacks are taken at the switch-out and held across
 * the wait): it empties the map of the epoch before last, moves `stack_epoch` on,
 * and reads a stack only while its epoch is the current or the last one, so
 * an id never names another stack. Each map is sized by userspace before load
 * (`stack_storage_size`), or shrunk to one entry when no probe takes stacks. */
#define KOTEL_STACK_DEPTH 127
#define KOTEL_EEXIST 17
#define KOTEL_ENOMEM 12

struct stack_map {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, KOTEL_STACK_DEPTH * sizeof(__u64));
	__uint(max_entries, 4096);
};

struct stack_map stacks_even SEC(".maps");
struct stack_map stacks_odd SEC(".maps");

/* The stack generation, moved on by userspace (through the mmapped .bss). */
__u32 stack_epoch = 0;

/* Histograms live in an array (an inlined lookup, readable through mmap);
 * `hist_slots` says which (pid, kind) owns which slot. Both are sized by
 * userspace to `hist_capacity` before load; the array has KOTEL_HIST_KINDS
 * more entries: `hists[hist_capacity + kind]` is the series' overflow
 * histogram, which counts the events of processes that found no free slot
 * (and of threads still running after their process's exit), so that every
 * event is counted somewhere. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct kotel_hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct kotel_hist_key);
	__type(value, __u32);
} hist_slots SEC(".maps");

/* Next never-used slot in `hists`: slots are bump-allocated until the
 * array has been used once, then taken from `free_slots`. */
__u32 hist_next_slot = 0;

/* Slot recycling. At a process's exit the kernel moves its slots from
 * `hist_slots` to `retired_slots`; userspace reads each retired slot's final
 * counts, zeroes it and pushes it onto `free_slots`, which the kernel
 * allocates from. Every slot is in exactly one place (bump range, in use,
 * retired, being finalized, free), so neither queue can overflow. Both are
 * sized to `hist_capacity` by userspace before load. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 1024);
	__type(value, __u32);
} free_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 1024);
	__type(value, __u32);
} retired_slots SEC(".maps");

/* Slots retired so far. */
__u64 hist_retired = 0;

/* Processes whose traces kotel links kernel events into: every event of
 * theirs goes to userspace, whatever its length, so linked sums are
 * complete. Userspace bumps link_gen after changing link_pids; threads
 * re-check their cached answer when it moves. 0: no link targets. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} link_pids SEC(".maps");

__u32 link_gen = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KOTEL_DROP_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KOTEL_MAX_FILTER_PIDS);
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

/* Per-thread state, in task-local storage. */
struct task_state {
	/* writev on its own syscall tracepoints (writev.bpf.c). */
	__u64 wv_start_ns; /* enter of a writev, 0 when none */
	__s32 wv_fd;
	__u32 wv_iovcnt;
	/* A TCP send on the socket tracepoints (tcp_send.bpf.c): the socket and when
	 * tcp_sendmsg_locked first ran for it in the current send. */
	__u64 tcp_sk;
	__u64 tcp_start_ns; /* 0 when no send is open */
	/* The raw_syscalls fallback (raw_syscalls.bpf.c), for kernels without the
	 * hooks above. */
	__u64 sys_start_ns; /* enter of a tracked syscall, 0 when none */
	__s64 sys_nr;       /* which syscall */
	__s32 sys_fd;
	__u32 sys_iovcnt;
	__u8 sys_is_tcp; /* tcp_sendmsg ran inside this syscall */
	__u8 reserved[1];
	__u16 family;
	__u16 lport;
	__u16 dport;
	__u8 laddr[16];
	__u8 daddr[16];
	__u64 runnable_ns; /* became runnable, 0 when not waiting for a CPU */
	__u64 offcpu_ns;   /* switched out blocked, 0 when not blocked */
	/* An off-CPU interval waiting for its stacks at sched_exit_tp. */
	__u64 offcpu_start_ns;
	__u64 offcpu_end_ns; /* 0 when none waits */
	__s32 kstack_id;
	__s32 ustack_id;
	/* This thread's histogram slot per series, plus one; 0 until looked up.
	 * Valid only while the slot's `gen` equals hist_gen: retiring a slot
	 * bumps its gen, so no thread keeps writing into a recycled slot. */
	__u32 hist_slot[KOTEL_HIST_KINDS];
	__u32 hist_gen[KOTEL_HIST_KINDS];
	__u32 pid;           /* thread group id, set with the state */
	__u32 link_gen_seen; /* link_gen when `linked` was decided */
	__u8 linked;         /* the process is a link target */
	__u8 offcpu_state;   /* enum kotel_offcpu_state of the open off-CPU interval */
	__u8 reserved2[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_state);
} task_states SEC(".maps");

/* Never used by the programs: they make the skeleton export these ABI
 * types to Rust, where layout tests pin them. */
struct kotel_event abi_event = {};
struct kotel_hist abi_hist = {};
enum kotel_kind abi_kind = KOTEL_KIND_WRITEV;
enum kotel_drop abi_drop = KOTEL_DROP_HIST_FULL;
enum kotel_offcpu_state abi_offcpu_state = KOTEL_OFFCPU_NONE;
enum kotel_stack_id abi_stack_id = KOTEL_STACK_EPOCH_SHIFT;

/* ---- Helpers. ---- */

#ifndef READ_ONCE
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#endif
#ifndef barrier
#define barrier() asm volatile("" ::: "memory")
#endif

static __always_inline void count_drop(__u32 idx)
{
	__u64 *n = bpf_map_lookup_elem(&drops, &idx);

	if (n)
		*n += 1; /* per-CPU slot: no atomic needed */
}

/* Is this process one we trace? Cheap checks first. */
static __always_inline bool pid_allowed(__u32 pid)
{
	if (pid == 0 || pid == self_pid)
		return false;
	if (filter_pids && !bpf_map_lookup_elem(&pid_filter, &pid))
		return false;
	return true;
}

static __always_inline bool current_allowed(__u32 pid)
{
	if (!pid_allowed(pid))
		return false;
	if (filter_cgroup_id &&
	    bpf_get_current_ancestor_cgroup_id(filter_cgroup_level) != filter_cgroup_id)
		return false;
	return true;
}

/* Is task t in the filter cgroup or below it? Its ancestor at the filter's
 * level must be the filter cgroup. */
static __always_inline bool task_in_filter_cgroup(struct task_struct *t)
{
	struct cgroup *cg = BPF_CORE_READ(t, cgroups, dfl_cgrp);
	struct cgroup *anc = NULL;

	if (!cg || BPF_CORE_READ(cg, level) < (int)filter_cgroup_level)
		return false;
	bpf_probe_read_kernel(&anc, sizeof(anc), &cg->ancestors[filter_cgroup_level]);
	return anc && BPF_CORE_READ(anc, kn, id) == filter_cgroup_id;
}

static __always_inline bool task_allowed(struct task_struct *t)
{
	if (!pid_allowed(t->tgid))
		return false;
	if (filter_cgroup_id && !task_in_filter_cgroup(t))
		return false;
	return true;
}

static __always_inline struct task_state *state_of(struct task_struct *t, bool create)
{
	struct task_state *s;

	s = bpf_task_storage_get(&task_states, t, 0, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (!s) {
		if (create)
			count_drop(KOTEL_DROP_TASK_STORAGE);
		return NULL;
	}
	if (create && !s->pid)
		s->pid = t->tgid;
	return s;
}

/* Index of the bucket for `ns`: the last i with bucket_bounds[i] <= ns.
 * Bounded binary search over the table userspace computed. */
static __always_inline __u32 bucket_of(__u64 ns)
{
	__u32 lo = 0, hi = n_buckets; /* answer in [lo, hi) */

#pragma unroll
	for (int step = 0; step < KOTEL_SEARCH_STEPS; step++) {
		__u32 mid = (lo + hi) / 2;

		if (hi - lo <= 1)
			break;
		if (mid >= KOTEL_MAX_BUCKETS)
			break;
		if (bucket_bounds[mid] <= ns)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

#define KOTEL_NO_SLOT 0xffffffffu
#define KOTEL_SLOT_EXITED 0xfffffffeu

/* Has the whole thread group of `t` passed do_exit's "live" countdown? Its
 * slots are then retired (or about to be): nothing new may be allocated. */
static __always_inline bool group_exited(struct task_struct *t)
{
	return BPF_CORE_READ(t, signal, live.counter) == 0;
}

/* A slot nobody owns: a never-used one while the array lasts, then a
 * recycled one from the free list. */
static __always_inline __u32 hist_slot_alloc(void)
{
	__u32 slot;

	if (hist_next_slot < hist_capacity) {
		slot = __sync_fetch_and_add(&hist_next_slot, 1);
		if (slot < hist_capacity)
			return slot;
	}
	if (bpf_map_pop_elem(&free_slots, &slot))
		return KOTEL_NO_SLOT;
	return slot;
}

/* The histogram slot of (pid, kind) for thread `t`: found, or allocated.
 * `*gen` is the slot's generation, read before `t`'s group was checked to
 * be alive: a retire (which follows the group's death) bumps it later, so
 * a cached (slot, gen) can never outlive the slot's owner. Cold path. */
static __always_inline __u32 hist_slot_of(struct task_struct *t, __u32 pid, __u32 kind, __u32 *gen)
{
	struct kotel_hist_key key = { .pid = pid, .kind = kind };
	__u32 *found = bpf_map_lookup_elem(&hist_slots, &key);
	struct kotel_hist *h;
	__u32 slot;

	if (found) {
		slot = *found;
		h = bpf_map_lookup_elem(&hists, &slot);
		if (!h)
			return KOTEL_NO_SLOT;
		*gen = READ_ONCE(h->gen);
		barrier();
		return group_exited(t) ? KOTEL_SLOT_EXITED : slot;
	}
	if (group_exited(t))
		return KOTEL_SLOT_EXITED;
	slot = hist_slot_alloc();
	if (slot == KOTEL_NO_SLOT)
		return KOTEL_NO_SLOT;
	h = bpf_map_lookup_elem(&hists, &slot);
	if (!h)
		return KOTEL_NO_SLOT;
	h->pid = pid;
	h->kind = kind;
	*gen = READ_ONCE(h->gen);
	if (bpf_map_update_elem(&hist_slots, &key, &slot, BPF_NOEXIST)) {
		/* Another CPU won the race for this key: give the slot back and
		 * use the winner's. */
		bpf_map_push_elem(&free_slots, &slot, 0);
		found = bpf_map_lookup_elem(&hist_slots, &key);
		if (!found)
			return KOTEL_NO_SLOT;
		slot = *found;
		h = bpf_map_lookup_elem(&hists, &slot);
		if (!h)
			return KOTEL_NO_SLOT;
		*gen = READ_ONCE(h->gen);
	}
	return slot;
}

/* Count one event into its (pid, series) histogram; `kind` is the series, a
 * constant below KOTEL_HIST_KINDS at every call. `s` is the state of the
 * thread the event belongs to and caches the slot; the pid is `s->pid`. `t`
 * is that thread, or NULL for the current one (only read on the cold path).
 * Histograms are shared across CPUs, so every counter is updated
 * atomically. */
static __always_inline void hist_record(struct task_state *s, struct task_struct *t, __u32 kind,
					__u64 ns, __s64 bytes)
{
	if (kind >= KOTEL_HIST_KINDS)
		return; /* never: a bound for the verifier */

	__u32 k = kind;
	__u32 slot = s->hist_slot[k];
	struct kotel_hist *h = NULL;

	if (slot) {
		__u32 cached = slot - 1;

		h = bpf_map_lookup_elem(&hists, &cached);
		if (h && h->gen != s->hist_gen[k])
			h = NULL; /* retired since: look it up again */
	}
	if (!h) {
		__u32 gen = 0;
		__u32 found;

		if (!t)
			t = bpf_get_current_task_btf();
		found = hist_slot_of(t, s->pid, kind, &gen);
		if (found == KOTEL_NO_SLOT || found == KOTEL_SLOT_EXITED) {
			/* Not the process's own histogram, but still counted: in
			 * the series' overflow slot (not cached: the next event
			 * tries for a slot again). */
			s->hist_slot[k] = 0;
			count_drop(found == KOTEL_NO_SLOT ? KOTEL_DROP_HIST_FULL
							  : KOTEL_DROP_HIST_EXITED);
			found = hist_capacity + k;
		} else {
			s->hist_slot[k] = found + 1;
			s->hist_gen[k] = gen;
		}
		h = bpf_map_lookup_elem(&hists, &found);
		if (!h)
			return;
	}

	__sync_fetch_and_add(&h->sum_ns, ns);
	if (bytes > 0)
		__sync_fetch_and_add(&h->bytes, bytes);
	/* Raise the maximum; a few compare-and-swap tries settle any race. */
	__u64 cur = h->max_ns;

	for (int i = 0; i < 4 && ns > cur; i++) {
		__u64 seen = __sync_val_compare_and_swap(&h->max_ns, cur, ns);

		if (seen == cur)
			break;
		cur = seen;
	}
	if (ns == 0) {
		__sync_fetch_and_add(&h->zero_count, 1);
		return;
	}
	if (ns >= KOTEL_MAX_VALUE_NS)
		__sync_fetch_and_add(&h->clamped, 1);

	__u32 b = bucket_of(ns);

	if (b < KOTEL_MAX_BUCKETS)
		__sync_fetch_and_add(&h->buckets[b], 1);
}

/* Should an event below the threshold still go to userspace? Only for
 * link targets; one load when there are none. */
static __always_inline bool link_target(struct task_state *s)
{
	__u32 gen = link_gen;

	if (!gen)
		return false;
	if (s->link_gen_seen != gen) {
		s->link_gen_seen = gen;
		s->linked = bpf_map_lookup_elem(&link_pids, &s->pid) != NULL;
	}
	return s->linked;
}

/* One stack of the current task into the map of `epoch`, its id tagged with
 * the epoch; a negative errno as bpf_get_stackid gives it otherwise. */
static __always_inline __s32 stack_id_in(void *ctx, __u32 epoch, __u64 flags)
{
	long id = (epoch & 1) ? bpf_get_stackid(ctx, &stacks_odd, flags)
			      : bpf_get_stackid(ctx, &stacks_even, flags);

	if (id < 0)
		return id;
	return id | ((epoch & KOTEL_STACK_EPOCH_MASK) << KOTEL_STACK_EPOCH_SHIFT);
}

/* The kernel and user stacks of the current task, both in the same epoch.
 * Kernel threads have no user stack; anything else is a full or collided
 * map, counted. */
static __always_inline void stacks_of_current(void *ctx, __s32 *kstack, __s32 *ustack)
{
	__u32 epoch = READ_ONCE(stack_epoch);

	*kstack = stack_id_in(ctx, epoch, 0);
	*ustack = stack_id_in(ctx, epoch, BPF_F_USER_STACK);
	if (*kstack < 0 || *ustack == -KOTEL_EEXIST || *ustack == -KOTEL_ENOMEM)
		count_drop(KOTEL_DROP_STACK);
}

/* Reserve a ring-buffer record for a slow event; counts the failure. */
static __always_inline struct kotel_event *event_reserve(__u32 kind)
{
	struct kotel_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count_drop(kind < KOTEL_KIND_COUNT ? kind : KOTEL_DROP_LIFECYCLE);
		return NULL;
	}
	e->bytes = -1;
	e->fd = -1;
	e->iovcnt = 0;
	e->kstack_id = -1;
	e->ustack_id = -1;
	e->family = 0;
	e->lport = 0;
	e->dport = 0;
	e->kind = kind;
	e->offcpu_state = KOTEL_OFFCPU_NONE;
	e->reserved1 = 0;
	__builtin_memset(e->laddr, 0, sizeof(e->laddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	e->cpu = bpf_get_smp_processor_id();
	return e;
}

/* Submit without a wakeup unless enough has piled up: one wakeup per
 * event costs several times a traced syscall. */
static __always_inline void event_submit(struct kotel_event *e)
{
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

/* Counts one call (writev, TCP send) in its histogram and, when it is slow
 * enough or its process is a link target, reserves its ring-buffer record
 * with what every call event carries: a slow one (at or above the threshold)
 * also carries the caller's kernel and user stacks, taken here at the call's
 * end, in the caller (a link target's faster calls go without). The caller
 * adds the rest and submits it with event_submit. NULL when nothing goes to
 * userspace. */
static __always_inline struct kotel_event *call_event(void *ctx, struct task_state *s, __u32 kind,
						      __u64 start, __u64 now, __s64 ret, __s32 fd,
						      __u32 iovcnt)
{
	__u64 ns = now - start;

	hist_record(s, NULL, kind, ns, ret);
	if (ns < min_latency_ns && !link_target(s))
		return NULL;

	struct kotel_event *e = event_reserve(kind);

	if (!e)
		return NULL;

	__u64 pid_tgid = bpf_get_current_pid_tgid();

	e->start_ns = start;
	e->duration_ns = ns;
	e->bytes = ret;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->fd = fd;
	e->iovcnt = iovcnt;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (capture_stacks && ns >= min_latency_ns)
		stacks_of_current(ctx, &e->kstack_id, &e->ustack_id);
	return e;
}

#define KOTEL_AF_INET 2
#define KOTEL_AF_INET6 10
#define KOTEL_PF_KTHREAD 0x00200000

/* The local and peer addresses of a socket: 4 bytes for IPv4, 16 for IPv6. */
static __always_inline void tuple_copy(const struct sock_common *c, __u8 *laddr, __u8 *daddr)
{
	__builtin_memset(laddr, 0, 16);
	__builtin_memset(daddr, 0, 16);
	if (c->skc_family == KOTEL_AF_INET) {
		*(__u32 *)laddr = c->skc_rcv_saddr;
		*(__u32 *)daddr = c->skc_daddr;
	} else if (c->skc_family == KOTEL_AF_INET6) {
#pragma unroll
		for (int i = 0; i < 4; i++) {
			((__u32 *)laddr)[i] = c->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			((__u32 *)daddr)[i] = c->skc_v6_daddr.in6_u.u6_addr32[i];
		}
	}
}

#endif /* __KOTEL_COMMON_BPF_H */
