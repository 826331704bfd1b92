/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * lifecycle.bpf.c - exec and exit of traced processes, sent through the
 * ring buffer so userspace drops its cached process metadata (executable,
 * command line, container) exactly when it goes stale. Not histogrammed.
 * At every process exit the process's histogram slots are retired, so
 * userspace can read their final counts and recycle them.
 */

/* Moves every histogram slot of process `pid` to the retired list: the hash
 * entry goes first (no new lookup finds it), then the slot's gen moves (no
 * cached copy stays valid). Returns the number of slots retired. */
static __always_inline __u32 hist_retire(__u32 pid)
{
	__u32 retired = 0;

#pragma unroll
	for (__u32 kind = 0; kind < KOTEL_HIST_KINDS; kind++) {
		struct kotel_hist_key key = { .pid = pid, .kind = kind };
		__u32 *found = bpf_map_lookup_elem(&hist_slots, &key);
		struct kotel_hist *h;
		__u32 slot;

		if (!found)
			continue;
		slot = *found;
		/* Only the CPU whose delete succeeds retires the slot. */
		if (bpf_map_delete_elem(&hist_slots, &key))
			continue;
		h = bpf_map_lookup_elem(&hists, &slot);
		if (h)
			__sync_fetch_and_add(&h->gen, 1);
		/* Cannot fail: the queue holds every slot. */
		bpf_map_push_elem(&retired_slots, &slot, 0);
		__sync_fetch_and_add(&hist_retired, 1);
		retired++;
	}
	return retired;
}

static __always_inline void emit_lifecycle(struct task_struct *p, __u32 kind, bool wake)
{
	struct kotel_event *e = event_reserve(kind);

	if (!e)
		return;
	e->start_ns = bpf_ktime_get_ns();
	e->duration_ns = 0;
	e->pid = p->tgid;
	e->tid = p->pid;
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), p->comm);
	if (wake)
		bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	else
		event_submit(e);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (enable_lifecycle && task_allowed(p))
		emit_lifecycle(p, KOTEL_KIND_EXEC, false);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_process_exit, struct task_struct *p, bool group_dead)
{
	__u32 retired;

	if (!group_dead)
		return 0;
	retired = hist_retire(p->tgid);
	/* Once a quarter of the array has been used, new processes will soon
	 * live on recycled slots: wake the reader so retired slots come back
	 * while plenty are left. */
	if (enable_lifecycle && task_allowed(p))
		emit_lifecycle(p, KOTEL_KIND_EXIT, retired && hist_next_slot >= hist_capacity / 4);
	return 0;
}
