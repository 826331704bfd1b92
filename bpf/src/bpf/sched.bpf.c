/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * sched.bpf.c - run-queue delay and off-CPU time from the scheduler's
 * tracepoints (tp_btf, so the task_struct arguments are typed):
 *  - runqueue: from becoming runnable (woken, new, or preempted while
 *    running) until switched in on a CPU;
 *  - offcpu: from switched out in a blocked state until switched back in.
 *    It includes the run-queue wait after the wakeup, as bcc's offcputime
 *    does.
 *
 * Stacks cost about half a microsecond each, so they are taken only for
 * off-CPU intervals that go to userspace (at or above the threshold, or of
 * a link target), and only once the interval is known: at sched_exit_tp,
 * which runs in the switched-in task itself at the end of __schedule(),
 * where both its kernel stack (still inside schedule()) and its user stack
 * (saved at kernel entry) are those it blocked with. On kernels without
 * sched_exit_tp (older kernels) the fallback takes both at every blocked
 * switch-out, as before.
 *
 * A switch-in that never reaches the sched_switch program is closed at
 * sched_exit_tp instead, where the switched-in thread runs anyway. Some
 * kernels leave the tracepoint out for particular tasks: on a sandbox kernel
 * seen in testing, no switch away from its hidden init's threads was ever
 * traced (not to BPF, not to ftrace), so a thread switched in after one of
 * them lost that off-CPU interval and its run-queue wait. sched_exit_tp fires
 * in the thread itself at the end of __schedule(), whichever task it
 * followed. Without sched_exit_tp such an interval is dropped, and counted,
 * when the thread next switches out. The same kernel runs no BPF program at
 * all while those threads are current, so a wakeup they make is not seen
 * either; the run-queue wait after it is lost, and counted, at the switch-in.
 *
 * An off-CPU interval carries how the thread blocked (enum
 * kotel_offcpu_state, classified from prev_state at the switch-out; kotel.h
 * says which task state goes where). Both are counted, in two histogram
 * series (KOTEL_KIND_OFFCPU for the uninterruptible waits,
 * KOTEL_KIND_OFFCPU_SLEEP for the interruptible ones); an interruptible one,
 * an idle wait, goes to userspace only from min_sleep_latency_ns on.
 */

#define KOTEL_TASK_RUNNING 0
#define KOTEL_TASK_UNINTERRUPTIBLE 0x0002
#define KOTEL_TASK_NOLOAD 0x0400
#define KOTEL_TASK_RTLOCK_WAIT 0x1000
#define KOTEL_PF_KTHREAD 0x00200000
#define KOTEL_TASK_DEAD 0x80

/* Per CPU, from the sched_switch program to sched_exit_tp in the switched-in
 * thread (nothing else can run __schedule() on this CPU in between). */
struct sched_cpu {
	/* The thread whose off-CPU event waits for its stacks, 0 when none. */
	__u32 pending;
	/* The last thread the sched_switch program saw switched in here: when
	 * sched_exit_tp runs in another, its switch-in was not delivered. */
	__u32 switched_in;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sched_cpu);
} sched_cpu SEC(".maps");

static __always_inline void mark_runnable(struct task_struct *p)
{
	if (!enable_runqueue || !task_allowed(p))
		return;

	struct task_state *s = state_of(p, true);

	if (s && !s->runnable_ns)
		s->runnable_ns = bpf_ktime_get_ns();
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(sched_wakeup, struct task_struct *p)
{
	mark_runnable(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(sched_wakeup_new, struct task_struct *p)
{
	mark_runnable(p);
	return 0;
}

/* How a task that switches out blocked with `prev_state` waits: blocked on a
 * resource (TASK_UNINTERRUPTIBLE, unless TASK_NOLOAD makes it TASK_IDLE; a
 * PREEMPT_RT sleeping spinlock), else idle (see enum kotel_offcpu_state). */
static __always_inline __u8 offcpu_state_of(unsigned int prev_state)
{
	if ((prev_state & KOTEL_TASK_UNINTERRUPTIBLE) && !(prev_state & KOTEL_TASK_NOLOAD))
		return KOTEL_OFFCPU_UNINTERRUPTIBLE;
	if (prev_state & KOTEL_TASK_RTLOCK_WAIT)
		return KOTEL_OFFCPU_UNINTERRUPTIBLE;
	return KOTEL_OFFCPU_INTERRUPTIBLE;
}

/* The histogram series of an interval of `kind` in `state`. */
static __always_inline __u32 hist_series(__u32 kind, __u8 state)
{
	return state == KOTEL_OFFCPU_INTERRUPTIBLE ? KOTEL_KIND_OFFCPU_SLEEP : kind;
}

/* Sends one scheduler interval of thread `t` to userspace. */
static __always_inline void send_sched(struct task_struct *t, struct task_state *s, __u32 kind,
				       __u8 state, __u64 start, __u64 now, __s32 kstack,
				       __s32 ustack)
{
	__u64 ns = now - start;
	struct kotel_event *e = event_reserve(kind);

	if (!e)
		return;
	if (!stacks_at_switch_in && ns >= max_stack_hold_ns && (kstack >= 0 || ustack >= 0)) {
		/* Held since the switch-out for longer than an id stays unique. */
		kstack = -1;
		ustack = -1;
		count_drop(KOTEL_DROP_STACK);
	}
	e->start_ns = start;
	e->duration_ns = ns;
	e->pid = s->pid;
	e->tid = t->pid;
	e->kstack_id = kstack;
	e->ustack_id = ustack;
	e->offcpu_state = state;
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), t->comm);
	event_submit(e);
}

/* Whether an interval of `t` in `state` that is counted also goes to
 * userspace: slow enough (an idle wait by the sleep threshold) or of a link
 * target, and not of a kernel thread (unless asked). */
static __always_inline bool worth_sending(struct task_struct *t, struct task_state *s, __u64 ns,
					  __u8 state)
{
	if (!send_kernel_threads && (t->flags & KOTEL_PF_KTHREAD))
		return false;

	__u64 min = state == KOTEL_OFFCPU_INTERRUPTIBLE ? min_sleep_latency_ns : min_latency_ns;

	return ns >= min || link_target(s);
}

/* Counts one scheduler interval and sends it when it is worth sending. */
static __always_inline void emit_sched(struct task_struct *t, struct task_state *s, __u32 kind,
				       __u8 state, __u64 start, __u64 now, __s32 kstack,
				       __s32 ustack)
{
	__u64 ns = now - start;

	hist_record(s, t, hist_series(kind, state), ns, -1);
	if (!worth_sending(t, s, ns, state))
		return;
	send_sched(t, s, kind, state, start, now, kstack, ustack);
}

/* Stacks of the current task, kept in its state until its interval is sent. */
static __always_inline void take_stacks(void *ctx, struct task_state *s)
{
	stacks_of_current(ctx, &s->kstack_id, &s->ustack_id);
}

/* prev is current: leaving the CPU, either still runnable or blocked. */
static __always_inline void switch_out(void *ctx, bool preempt, struct task_struct *prev,
				       unsigned int prev_state, __u64 now)
{
	/* A dying task's last switch: it never comes back. */
	if (prev_state & KOTEL_TASK_DEAD)
		return;
	if (!task_allowed(prev))
		return;

	bool runnable = preempt || prev_state == KOTEL_TASK_RUNNING;
	bool wanted = runnable ? enable_runqueue : enable_offcpu;
	struct task_state *s = state_of(prev, wanted);

	if (!s)
		return;
	if (s->offcpu_ns) {
		/* Running, so switched in, but that switch-in was never seen:
		 * without sched_exit_tp nothing closed the interval, nor the
		 * run-queue wait before it. */
		s->offcpu_ns = 0;
		count_drop(KOTEL_DROP_SWITCH_UNSEEN);
		if (enable_runqueue)
			count_drop(KOTEL_DROP_WAIT_UNSEEN);
	}
	if (!wanted) {
		/* Still clear a stale runnable mark from an earlier wakeup. */
		s->runnable_ns = 0;
		return;
	}
	if (runnable) {
		s->runnable_ns = now;
		return;
	}
	s->runnable_ns = 0;
	s->offcpu_ns = now;
	s->offcpu_state = offcpu_state_of(prev_state);
	s->kstack_id = -1;
	s->ustack_id = -1;
	if (capture_stacks && !stacks_at_switch_in)
		take_stacks(ctx, s);
}

/* next is about to run: close its run-queue wait and its off-CPU span. `c` is
 * this CPU's slot, for an interval that waits for its stacks. */
static __always_inline void switch_in(struct task_struct *next, __u64 now, struct sched_cpu *c)
{
	struct task_state *s = state_of(next, false);

	if (!s)
		return;
	if (s->runnable_ns) {
		__u64 start = s->runnable_ns;

		s->runnable_ns = 0;
		if (enable_runqueue && now >= start && task_allowed(next))
			emit_sched(next, s, KOTEL_KIND_RUNQUEUE, KOTEL_OFFCPU_NONE, start, now, -1,
				   -1);
	} else if (s->offcpu_ns && enable_runqueue && task_allowed(next)) {
		/* Blocked, now switched in, never marked runnable: its wakeup
		 * never reached sched_wakeup, so its run-queue wait is lost. */
		count_drop(KOTEL_DROP_WAIT_UNSEEN);
	}
	if (s->offcpu_ns) {
		__u64 start = s->offcpu_ns;
		__u8 state = s->offcpu_state;

		s->offcpu_ns = 0;
		if (!enable_offcpu || now < start || !task_allowed(next))
			return;
		if (!(capture_stacks && stacks_at_switch_in)) {
			emit_sched(next, s, KOTEL_KIND_OFFCPU, state, start, now, s->kstack_id,
				   s->ustack_id);
			return;
		}
		/* Counted now; sent from sched_exit_tp with the stacks, when
		 * it goes to userspace at all (s->offcpu_state stays until then:
		 * the thread cannot switch out again before). */
		hist_record(s, next, hist_series(KOTEL_KIND_OFFCPU, state), now - start, -1);
		if (!worth_sending(next, s, now - start, state))
			return;

		if (!c)
			return;
		/* Not expected either: the last one never reached sched_exit_tp. */
		if (c->pending)
			count_drop(KOTEL_KIND_OFFCPU);
		s->offcpu_start_ns = start;
		s->offcpu_end_ns = now;
		c->pending = next->pid;
	}
}

SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u64 now = bpf_ktime_get_ns();

	__u32 zero = 0;
	struct sched_cpu *c = bpf_map_lookup_elem(&sched_cpu, &zero);

	if (c)
		c->switched_in = next->pid;
	switch_out(ctx, preempt, prev, prev_state, now);
	switch_in(next, now, c);
	return 0;
}

/* Closes the intervals of `t`, just switched in, when its switch-in never
 * reached the sched_switch program (which clears both marks): see the top of
 * this file. Only after a switch: a thread that called schedule() and kept the
 * CPU may hold a stale runnable mark, which its next switch-out clears. */
static __always_inline void switch_in_late(struct task_struct *t, struct sched_cpu *c)
{
	struct task_state *s = state_of(t, false);

	if (!s || !(s->offcpu_ns || s->runnable_ns))
		return;
	count_drop(KOTEL_DROP_SWITCH_LATE);
	switch_in(t, bpf_ktime_get_ns(), c);
}

/* The end of __schedule(), in the task that was just switched in: closes its
 * intervals if the switch was not seen, then takes the stacks of its pending
 * off-CPU interval and sends it. */
SEC("tp_btf/sched_exit_tp")
int BPF_PROG(sched_exit, bool is_switch)
{
	struct task_struct *t = bpf_get_current_task_btf();
	__u32 zero = 0;
	struct sched_cpu *c = bpf_map_lookup_elem(&sched_cpu, &zero);

	if (!c)
		return 0;
	/* A switch the sched_switch program saw named this thread: nothing to
	 * close, and no task storage to look up. */
	if (is_switch && c->switched_in != t->pid) {
		c->switched_in = t->pid;
		switch_in_late(t, c);
	}
	if (!c->pending)
		return 0;

	__u32 tid = c->pending;

	c->pending = 0;
	if (tid != t->pid) {
		/* Not expected: nothing schedules in between. Counted as lost. */
		count_drop(KOTEL_KIND_OFFCPU);
		return 0;
	}

	struct task_state *s = state_of(t, false);

	if (!s || !s->offcpu_end_ns)
		return 0;
	take_stacks(ctx, s);
	send_sched(t, s, KOTEL_KIND_OFFCPU, s->offcpu_state, s->offcpu_start_ns, s->offcpu_end_ns,
		   s->kstack_id, s->ustack_id);
	s->offcpu_end_ns = 0;
	return 0;
}
