//! Kernel events waiting to be linked under application spans: per process, in arrival
//! (roughly end-time) order, for `window` and within a memory cap. Events above the span
//! threshold carry their built span ([`PendingSpan`]), taken by the first application span
//! that claims it within `hold`; the rest keep a compact record so sums over a span stay
//! exact. What is unclaimed when its hold passes (or the cap evicts it, or the run ends) is
//! handed back, so that it goes out as a span of its own: nothing waits here to be lost. The
//! event itself stays for the sums until its window passes.

use std::collections::{HashMap, VecDeque};

use kotel_bpf::Probe;

use crate::model::KernelEvent;
use crate::otlp::pending::PendingSpan;

/// How far out of end-time order events may arrive: one ring buffer is shared by all CPUs and
/// records are reserved when an event ends, so only the gap between reading the clock and
/// reserving separates them.
const SKEW_NS: u64 = 1_000_000;

/// One buffered kernel event.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkedEvent {
    /// Thread id (host namespace).
    pub tid: u32,
    /// What was measured.
    pub kind: Probe,
    /// Start, Unix ns.
    pub start: u64,
    /// End, Unix ns.
    pub end: u64,
    /// Arrival number: increasing within each process's queue.
    pub seq: u64,
    /// Its built span, until an application span takes it (events too short for a span of
    /// their own have none).
    pub pending: Option<Box<PendingSpan>>,
}

/// Counters of the buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Events currently held.
    pub held: usize,
    /// Events evicted because they were older than the window.
    pub expired: u64,
    /// Events evicted because the buffer was full (oldest first).
    pub evicted_full: u64,
}

/// The per-process, time-indexed buffer. Single-threaded.
#[derive(Debug)]
pub struct LinkBuffer {
    per_pid: HashMap<u32, VecDeque<LinkedEvent>>,
    /// Longest event seen per process: bounds how far past a span's end an overlapping
    /// event can end, and so how far a search must look.
    longest: HashMap<u32, u64>,
    /// Arrival order across processes, for evicting the oldest when full.
    order: VecDeque<u32>,
    /// Events with a built span, in arrival order: (end, pid, seq), for releasing unclaimed
    /// spans when their hold passes.
    claimable: VecDeque<(u64, u32, u64)>,
    next_seq: u64,
    capacity: usize,
    window_ns: u64,
    hold_ns: u64,
    stats: BufferStats,
}

impl LinkBuffer {
    /// A buffer holding at most `capacity` events, each for at most `window_ns` after it ended.
    pub fn new(capacity: usize, window_ns: u64) -> Self {
        LinkBuffer {
            per_pid: HashMap::new(),
            longest: HashMap::new(),
            order: VecDeque::new(),
            claimable: VecDeque::new(),
            next_seq: 0,
            capacity: capacity.max(1),
            window_ns,
            hold_ns: window_ns,
            stats: BufferStats::default(),
        }
    }

    /// Built spans wait at most `hold_ns` after their event ended to be claimed (at most the
    /// window; the window by default).
    pub fn hold(mut self, hold_ns: u64) -> Self {
        self.hold_ns = hold_ns.min(self.window_ns);
        self
    }

    /// Adds an event with its built span, if it has one. Returns the unclaimed spans of the
    /// events the cap evicted to make room.
    pub fn push(&mut self, ev: &KernelEvent, pending: Option<PendingSpan>) -> Vec<PendingSpan> {
        let mut released = Vec::new();
        while self.stats.held >= self.capacity {
            released.extend(self.evict_oldest());
        }
        self.next_seq += 1;
        let linked = LinkedEvent {
            tid: ev.tid,
            kind: ev.kind,
            start: ev.start_unix_nano,
            end: ev.start_unix_nano.saturating_add(ev.duration_ns),
            seq: self.next_seq,
            pending: pending.map(Box::new),
        };
        if linked.pending.is_some() {
            self.claimable.push_back((linked.end, ev.pid, linked.seq));
        }
        let longest = self.longest.entry(ev.pid).or_default();
        *longest = (*longest).max(ev.duration_ns);
        self.per_pid.entry(ev.pid).or_default().push_back(linked);
        self.order.push_back(ev.pid);
        self.stats.held += 1;
        released
    }

    fn evict_oldest(&mut self) -> Option<PendingSpan> {
        let pid = self.order.pop_front()?;
        let q = self.per_pid.get_mut(&pid)?;
        let evicted = q.pop_front();
        if evicted.is_some() {
            self.stats.held -= 1;
            self.stats.evicted_full += 1;
        }
        if q.is_empty() {
            self.per_pid.remove(&pid);
            self.longest.remove(&pid);
        }
        evicted.and_then(|e| e.pending).map(|p| *p)
    }

    /// Takes the spans of events that ended more than the hold before `now` (Unix ns), and
    /// drops events that ended more than the window before it. Returns the unclaimed spans.
    pub fn expire(&mut self, now: u64) -> Vec<PendingSpan> {
        let mut released = Vec::new();
        let hold_horizon = now.saturating_sub(self.hold_ns);
        while let Some(&(end, pid, seq)) = self.claimable.front() {
            if end >= hold_horizon {
                break;
            }
            self.claimable.pop_front();
            // Gone already when the cap evicted it or the window passed.
            let Some(q) = self.per_pid.get_mut(&pid) else {
                continue;
            };
            if let Ok(i) = q.binary_search_by_key(&seq, |e| e.seq) {
                released.extend(q[i].pending.take().map(|p| *p));
            }
        }
        let horizon = now.saturating_sub(self.window_ns);
        released.extend(self.remove_older_than(horizon));
        released
    }

    /// Empties the buffer, at the end of a run. Returns the unclaimed spans, oldest first.
    pub fn release_all(&mut self) -> Vec<PendingSpan> {
        self.claimable.clear();
        let mut released = self.remove_older_than(u64::MAX);
        released.sort_by_key(PendingSpan::end);
        released
    }

    fn remove_older_than(&mut self, horizon: u64) -> Vec<PendingSpan> {
        let mut released = Vec::new();
        let mut removed = 0;
        self.per_pid.retain(|_, q| {
            while q.front().is_some_and(|e| e.end < horizon) {
                if let Some(p) = q.pop_front().and_then(|e| e.pending) {
                    released.push(*p);
                }
                removed += 1;
            }
            !q.is_empty()
        });
        let per_pid = &self.per_pid;
        self.longest.retain(|pid, _| per_pid.contains_key(pid));
        if removed > 0 {
            self.stats.held -= removed;
            self.stats.expired += removed as u64;
            // Rebuild the arrival order from what is left (amortised: only after expiry).
            let mut left: HashMap<u32, usize> =
                self.per_pid.iter().map(|(p, q)| (*p, q.len())).collect();
            let mut order: VecDeque<u32> = VecDeque::with_capacity(self.stats.held);
            for pid in self.order.iter().rev() {
                if let Some(n) = left.get_mut(pid) {
                    if *n > 0 {
                        *n -= 1;
                        order.push_front(*pid);
                    }
                }
            }
            self.order = order;
        }
        released
    }

    /// Events of `pid` (only thread `tid` when given) that overlap `[start, end)`, mutable so
    /// that a claimed span can be taken.
    pub fn overlapping(
        &mut self,
        pid: u32,
        tid: Option<u32>,
        start: u64,
        end: u64,
    ) -> Vec<&mut LinkedEvent> {
        let Some(q) = self.per_pid.get_mut(&pid) else {
            return Vec::new();
        };
        let longest = self.longest.get(&pid).copied().unwrap_or(0);
        let from = q.partition_point(|e| e.end.saturating_add(SKEW_NS) < start);
        // Past this end time an event started after the span ended.
        let stop = end.saturating_add(longest).saturating_add(SKEW_NS);
        q.range_mut(from..)
            .take_while(|e| e.end < stop)
            .filter(|e| e.start < end && e.end > start && tid.is_none_or(|t| t == e.tid))
            .collect()
    }

    /// Counters.
    pub fn stats(&self) -> BufferStats {
        self.stats
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn ev(pid: u32, tid: u32, start: u64, dur: u64) -> KernelEvent {
        KernelEvent::sample(Probe::Offcpu, pid, tid, start, dur)
    }

    /// A built span for `e`.
    pub(crate) fn pend(e: &KernelEvent) -> PendingSpan {
        PendingSpan {
            event: e.clone(),
            trace_id: [1; 16],
            span_id: e.start_unix_nano.to_be_bytes(),
            stacks: Default::default(),
            standalone: true,
            exemplar_offered: false,
        }
    }

    fn push(b: &mut LinkBuffer, e: KernelEvent, with_span: bool) -> Vec<PendingSpan> {
        b.push(&e, with_span.then(|| pend(&e)))
    }

    #[test]
    fn overlap_respects_process_thread_and_window() {
        let mut b = LinkBuffer::new(100, 10_000_000_000);
        push(&mut b, ev(1, 10, 100, 50), true); // [100,150)
        push(&mut b, ev(1, 11, 200, 50), false); // [200,250)
        push(&mut b, ev(2, 20, 120, 10), true);
        push(&mut b, ev(1, 10, 400, 50), false); // [400,450)
        let mut got = |tid, s, e| {
            b.overlapping(1, tid, s, e)
                .iter()
                .map(|x| x.start)
                .collect::<Vec<_>>()
        };
        assert_eq!(got(None, 140, 210), vec![100, 200]);
        assert_eq!(got(Some(10), 140, 210), vec![100]);
        assert_eq!(
            got(None, 150, 200),
            Vec::<u64>::new(),
            "touching is not overlapping"
        );
        assert!(b.overlapping(1, None, 0, 1000)[0].pending.is_some());
        assert!(b.overlapping(9, None, 0, 1000).is_empty());
    }

    #[test]
    fn a_long_event_ending_far_after_the_span_is_found() {
        let mut b = LinkBuffer::new(100, u64::MAX);
        for i in 0..50 {
            push(
                &mut b,
                ev(1, 1, 1_000_000_000 + i * 1_000_000, 1_000),
                false,
            );
        }
        // Started inside [2.0 s, 2.1 s), blocked for 5 s.
        push(&mut b, ev(1, 1, 2_050_000_000, 5_000_000_000), true);
        let found = b.overlapping(1, None, 2_000_000_000, 2_100_000_000);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].end, 7_050_000_000);
    }

    #[test]
    fn the_cap_evicts_oldest_and_the_window_expires() {
        let mut b = LinkBuffer::new(3, 1_000);
        for i in 0..5 {
            push(&mut b, ev(1 + i % 2, 1, i as u64 * 100, 10), false);
        }
        let s = b.stats();
        assert_eq!((s.held, s.evicted_full), (3, 2));
        b.expire(1_300); // horizon 300: events ending before 300 go
        let s = b.stats();
        assert_eq!(s.held, 2);
        assert_eq!(s.expired, 1);
        push(&mut b, ev(3, 1, 500, 10), false);
        push(&mut b, ev(3, 1, 600, 10), false);
        assert_eq!(b.stats().held, 3, "cap still holds after expiry");
    }

    #[test]
    fn unclaimed_spans_come_back_whichever_way_they_leave() {
        let mut b = LinkBuffer::new(3, 1_000);
        let ends = |v: Vec<PendingSpan>| v.iter().map(PendingSpan::end).collect::<Vec<_>>();
        assert!(push(&mut b, ev(1, 1, 0, 10), true).is_empty());
        assert!(push(&mut b, ev(1, 1, 100, 10), false).is_empty());
        assert!(push(&mut b, ev(1, 1, 200, 10), true).is_empty());
        // A claimed span is gone from the buffer; its event still counts for sums.
        let taken = b.overlapping(1, None, 195, 215)[0].pending.take();
        assert_eq!(taken.map(|p| p.end()), Some(210));
        assert_eq!(
            ends(push(&mut b, ev(1, 1, 300, 10), true)),
            vec![10],
            "evicted"
        );
        assert_eq!(
            ends(b.expire(1_250)),
            Vec::<u64>::new(),
            "neither expired one has a span left"
        );
        assert_eq!(b.stats().held, 1);
        assert_eq!(
            ends(b.release_all()),
            vec![310],
            "the claimed one is not released"
        );
        assert_eq!(b.stats().held, 0);
    }

    #[test]
    fn a_span_unclaimed_past_its_hold_goes_while_its_event_still_sums() {
        let mut b = LinkBuffer::new(100, 1_000).hold(300);
        push(&mut b, ev(1, 1, 0, 100), true); // ends at 100
        push(&mut b, ev(1, 1, 200, 100), true); // ends at 300
        assert!(b.expire(350).is_empty(), "within the hold");
        let released: Vec<u64> = b.expire(450).iter().map(PendingSpan::end).collect();
        assert_eq!(released, vec![100]);
        assert_eq!(b.stats().held, 2, "both events still count for sums");
        let found = b.overlapping(1, None, 0, 1_000);
        assert_eq!(found.len(), 2);
        assert!(found[0].pending.is_none() && found[1].pending.is_some());
        let released: Vec<u64> = b.expire(700).iter().map(PendingSpan::end).collect();
        assert_eq!(released, vec![300], "released once");
        assert!(
            b.expire(1_400).is_empty(),
            "the window drops the events, nothing twice"
        );
        assert_eq!(b.stats().held, 0);
    }
}
