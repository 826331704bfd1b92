//! The kernel ↔ userspace ABI: the skeleton's generated types for `kotel.h`, with tests that pin
//! every size and offset.

use crate::skel::types;

/// One ring-buffer record (`struct kotel_event`).
pub type RawEvent = types::kotel_event;
/// One in-kernel histogram (`struct kotel_hist`).
pub type RawHistogram = types::kotel_hist;
/// Key of the histogram map (`struct kotel_hist_key`).
pub type RawHistogramKey = types::kotel_hist_key;

/// `KOTEL_KIND_*` values, from the skeleton's `enum kotel_kind`.
pub mod kind {
    use crate::skel::types::kotel_kind;
    /// `writev(2)` enter to exit.
    pub const WRITEV: u8 = kotel_kind::KOTEL_KIND_WRITEV.0 as u8;
    /// A send syscall that reached `tcp_sendmsg`.
    pub const TCP_SEND: u8 = kotel_kind::KOTEL_KIND_TCP_SEND.0 as u8;
    /// Run-queue delay.
    pub const RUNQUEUE: u8 = kotel_kind::KOTEL_KIND_RUNQUEUE.0 as u8;
    /// Off-CPU (blocked) time; as a histogram series, the uninterruptible waits only.
    pub const OFFCPU: u8 = kotel_kind::KOTEL_KIND_OFFCPU.0 as u8;
    /// Number of event kinds (and of per-kind ring-buffer drop slots).
    pub const COUNT: usize = kotel_kind::KOTEL_KIND_COUNT.0 as usize;
    /// A histogram series, never an event kind: off-CPU time in interruptible waits.
    pub const OFFCPU_SLEEP: u8 = kotel_kind::KOTEL_KIND_OFFCPU_SLEEP.0 as u8;
    /// Number of histogram series per process (the event kinds, then [`OFFCPU_SLEEP`]): one
    /// overflow histogram each.
    pub const HIST_KINDS: usize = kotel_kind::KOTEL_HIST_KINDS.0 as usize;
    /// Lifecycle record: the process called execve.
    pub const EXEC: u8 = kotel_kind::KOTEL_KIND_EXEC.0 as u8;
    /// Lifecycle record: the whole process exited.
    pub const EXIT: u8 = kotel_kind::KOTEL_KIND_EXIT.0 as u8;
}

/// `KOTEL_OFFCPU_*` values of an event's `offcpu_state`, from the skeleton's
/// `enum kotel_offcpu_state`: how the thread was blocked (`kotel.h` says which task state goes
/// where).
pub mod offcpu_state {
    use crate::skel::types::kotel_offcpu_state;
    /// Not an off-CPU event.
    pub const NONE: u8 = kotel_offcpu_state::KOTEL_OFFCPU_NONE.0 as u8;
    /// An idle wait (interruptible sleep, `TASK_IDLE`, stopped, parked, frozen).
    pub const INTERRUPTIBLE: u8 = kotel_offcpu_state::KOTEL_OFFCPU_INTERRUPTIBLE.0 as u8;
    /// Blocked on a resource (uninterruptible sleep: disk I/O, kernel locks).
    pub const UNINTERRUPTIBLE: u8 = kotel_offcpu_state::KOTEL_OFFCPU_UNINTERRUPTIBLE.0 as u8;
}

/// How a stack id is made (`enum kotel_stack_id`): the bucket in its generation's stack map
/// in the bits below [`stack_id::EPOCH_SHIFT`], the generation's low bits above them.
pub mod stack_id {
    use crate::skel::types::kotel_stack_id;
    /// Where the generation starts in a stack id.
    pub const EPOCH_SHIFT: u32 = kotel_stack_id::KOTEL_STACK_EPOCH_SHIFT.0;
    /// The generation bits a stack id keeps.
    pub const EPOCH_MASK: u32 = kotel_stack_id::KOTEL_STACK_EPOCH_MASK.0;
    /// The most entries a stack map can have so that its buckets fit below the generation.
    pub const MAX_ENTRIES: u32 = 1 << EPOCH_SHIFT;
}

/// `KOTEL_DROP_*` indexes of the per-CPU `drops` map beyond the per-kind ring-buffer slots.
pub mod drop {
    use crate::skel::types::kotel_drop;
    /// No free histogram slot: the event was counted in its kind's overflow histogram.
    pub const HIST_FULL: u32 = kotel_drop::KOTEL_DROP_HIST_FULL.0;
    /// Task-local storage could not be allocated: the event was missed.
    pub const TASK_STORAGE: u32 = kotel_drop::KOTEL_DROP_TASK_STORAGE.0;
    /// An exec/exit record did not fit in the ring buffer.
    pub const LIFECYCLE: u32 = kotel_drop::KOTEL_DROP_LIFECYCLE.0;
    /// A stack could not be stored (map full or hash collision).
    pub const STACK: u32 = kotel_drop::KOTEL_DROP_STACK.0;
    /// An event of a thread still running after its process's exit retired its histograms.
    pub const HIST_EXITED: u32 = kotel_drop::KOTEL_DROP_HIST_EXITED.0;
    /// A switch-in the `sched_switch` tracepoint never delivered, closed at `sched_exit_tp`
    /// instead: a counter, nothing was lost.
    pub const SWITCH_LATE: u32 = kotel_drop::KOTEL_DROP_SWITCH_LATE.0;
    /// A switch-in never delivered with no `sched_exit_tp` to close it: an off-CPU interval lost.
    pub const SWITCH_UNSEEN: u32 = kotel_drop::KOTEL_DROP_SWITCH_UNSEEN.0;
    /// A run-queue wait lost: the wakeup that began it, or the switch-in that ended it, never
    /// reached kotel.
    pub const WAIT_UNSEEN: u32 = kotel_drop::KOTEL_DROP_WAIT_UNSEEN.0;
    /// Number of slots in the `drops` map: the per-kind ring-buffer slots `0..kind::COUNT`,
    /// then the ones above.
    pub const COUNT: u32 = kotel_drop::KOTEL_DROP_COUNT.0;
}

/// Bytes of `struct kotel_hist` before its buckets.
const HIST_HEADER: usize = std::mem::offset_of!(RawHistogram, buckets);

/// Size in bytes of one ring-buffer record.
pub const EVENT_SIZE: usize = std::mem::size_of::<RawEvent>();
/// Capacity of the kernel's bucket table (`KOTEL_MAX_BUCKETS`).
pub const MAX_BUCKETS: usize = {
    let h = std::mem::size_of::<RawHistogram>();
    (h - HIST_HEADER) / 8
};

/// Reads one event from ring-buffer bytes. `None` when `bytes` is not exactly one record.
pub fn event_from_bytes(bytes: &[u8]) -> Option<RawEvent> {
    if bytes.len() != EVENT_SIZE {
        return None;
    }
    // SAFETY: the length matches and RawEvent is plain old data (integers and byte arrays,
    // every bit pattern valid); read_unaligned copes with any alignment of `bytes`.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RawEvent>()) })
}

/// Reads one histogram from map-value bytes. `None` on a size mismatch.
pub fn histogram_from_bytes(bytes: &[u8]) -> Option<RawHistogram> {
    if bytes.len() != std::mem::size_of::<RawHistogram>() {
        return None;
    }
    // SAFETY: as for `event_from_bytes`: size checked, plain old data, unaligned read.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RawHistogram>()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn event_layout_is_pinned() {
        assert_eq!(size_of::<RawEvent>(), 112);
        assert_eq!(offset_of!(RawEvent, start_ns), 0);
        assert_eq!(offset_of!(RawEvent, duration_ns), 8);
        assert_eq!(offset_of!(RawEvent, bytes), 16);
        assert_eq!(offset_of!(RawEvent, pid), 24);
        assert_eq!(offset_of!(RawEvent, tid), 28);
        assert_eq!(offset_of!(RawEvent, cpu), 32);
        assert_eq!(offset_of!(RawEvent, fd), 36);
        assert_eq!(offset_of!(RawEvent, iovcnt), 40);
        assert_eq!(offset_of!(RawEvent, kstack_id), 44);
        assert_eq!(offset_of!(RawEvent, ustack_id), 48);
        assert_eq!(offset_of!(RawEvent, family), 52);
        assert_eq!(offset_of!(RawEvent, lport), 54);
        assert_eq!(offset_of!(RawEvent, dport), 56);
        assert_eq!(offset_of!(RawEvent, kind), 58);
        assert_eq!(offset_of!(RawEvent, offcpu_state), 59);
        assert_eq!(offset_of!(RawEvent, laddr), 60);
        assert_eq!(offset_of!(RawEvent, daddr), 76);
        assert_eq!(offset_of!(RawEvent, comm), 92);
        assert_eq!(offset_of!(RawEvent, reserved1), 108);
    }

    #[test]
    fn histogram_layout_is_pinned() {
        assert_eq!(size_of::<RawHistogramKey>(), 8);
        assert_eq!(offset_of!(RawHistogramKey, kind), 4);
        assert_eq!(offset_of!(RawHistogram, sum_ns), 0);
        assert_eq!(offset_of!(RawHistogram, zero_count), 8);
        assert_eq!(offset_of!(RawHistogram, bytes), 16);
        assert_eq!(offset_of!(RawHistogram, clamped), 24);
        assert_eq!(offset_of!(RawHistogram, max_ns), 32);
        assert_eq!(offset_of!(RawHistogram, pid), 40);
        assert_eq!(offset_of!(RawHistogram, kind), 44);
        assert_eq!(offset_of!(RawHistogram, gen), 48);
        assert_eq!(offset_of!(RawHistogram, reserved), 52);
        assert_eq!(offset_of!(RawHistogram, buckets), 56);
        assert_eq!(MAX_BUCKETS, 648);
        assert_eq!(size_of::<RawHistogram>(), 56 + 648 * 8);
    }

    #[test]
    fn kinds_and_drop_slots_are_pinned() {
        assert_eq!(
            [kind::WRITEV, kind::TCP_SEND, kind::RUNQUEUE, kind::OFFCPU],
            [0, 1, 2, 3]
        );
        assert_eq!(kind::COUNT, 4);
        assert_eq!((kind::OFFCPU_SLEEP, kind::HIST_KINDS), (4, 5));
        assert_eq!(
            (
                offcpu_state::NONE,
                offcpu_state::INTERRUPTIBLE,
                offcpu_state::UNINTERRUPTIBLE
            ),
            (0, 1, 2)
        );
        assert_eq!(
            (
                drop::HIST_FULL,
                drop::TASK_STORAGE,
                drop::LIFECYCLE,
                drop::STACK,
                drop::HIST_EXITED,
                drop::SWITCH_LATE,
                drop::SWITCH_UNSEEN,
                drop::WAIT_UNSEEN,
                drop::COUNT
            ),
            (4, 5, 6, 7, 8, 9, 10, 11, 12)
        );
        assert_eq!((kind::EXEC, kind::EXIT), (16, 17));
    }

    #[test]
    fn wrong_sized_records_are_refused() {
        assert!(event_from_bytes(&[0u8; EVENT_SIZE - 1]).is_none());
        assert!(event_from_bytes(&[0u8; EVENT_SIZE + 1]).is_none());
        let e = event_from_bytes(&[0u8; EVENT_SIZE]).expect("exact size decodes");
        assert_eq!(e.pid, 0);
    }
}
