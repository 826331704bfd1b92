//! Kernel events waiting to be linked under application spans: per process, in arrival
//! (roughly end-time) order, for `window` and within a memory cap. Events above the span
//! threshold keep everything a child span needs; the rest keep a compact record so sums over
//! a span stay exact.

use std::collections::{HashMap, VecDeque};

use kotel_bpf::Probe;

use crate::model::KernelEvent;

/// How far out of end-time order events may arrive: one ring buffer is shared by all CPUs and
/// records are reserved when an event ends, so only the gap between reading the clock and
/// reserving separates them.
const SKEW_NS: u64 = 1_000_000;

/// One buffered kernel event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedEvent {
    /// Thread id (host namespace).
    pub tid: u32,
    /// What was measured.
    pub kind: Probe,
    /// Start, Unix ns.
    pub start: u64,
    /// End, Unix ns.
    pub end: u64,
    /// The whole event, kept only for events that become child spans.
    pub full: Option<Box<KernelEvent>>,
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
    capacity: usize,
    window_ns: u64,
    stats: BufferStats,
}

impl LinkBuffer {
    /// A buffer holding at most `capacity` events, each for at most `window_ns` after it ended.
    pub fn new(capacity: usize, window_ns: u64) -> Self {
        LinkBuffer {
            per_pid: HashMap::new(),
            longest: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            window_ns,
            stats: BufferStats::default(),
        }
    }

    /// Adds an event; `child` keeps the whole event for a child span.
    pub fn push(&mut self, ev: &KernelEvent, child: bool) {
        while self.stats.held >= self.capacity {
            self.evict_oldest();
        }
        let linked = LinkedEvent {
            tid: ev.tid,
            kind: ev.kind,
            start: ev.start_unix_nano,
            end: ev.start_unix_nano.saturating_add(ev.duration_ns),
            full: child.then(|| Box::new(ev.clone())),
        };
        let longest = self.longest.entry(ev.pid).or_default();
        *longest = (*longest).max(ev.duration_ns);
        self.per_pid.entry(ev.pid).or_default().push_back(linked);
        self.order.push_back(ev.pid);
        self.stats.held += 1;
    }

    fn evict_oldest(&mut self) {
        let Some(pid) = self.order.pop_front() else {
            return;
        };
        if let Some(q) = self.per_pid.get_mut(&pid) {
            if q.pop_front().is_some() {
                self.stats.held -= 1;
                self.stats.evicted_full += 1;
            }
            if q.is_empty() {
                self.per_pid.remove(&pid);
                self.longest.remove(&pid);
            }
        }
    }

    /// Drops events that ended more than the window before `now` (Unix ns).
    pub fn expire(&mut self, now: u64) {
        let horizon = now.saturating_sub(self.window_ns);
        let mut removed = 0;
        self.per_pid.retain(|_, q| {
            while q.front().is_some_and(|e| e.end < horizon) {
                q.pop_front();
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
    }

    /// Events of `pid` (only thread `tid` when given) that overlap `[start, end)`.
    pub fn overlapping(
        &self,
        pid: u32,
        tid: Option<u32>,
        start: u64,
        end: u64,
    ) -> Vec<&LinkedEvent> {
        let Some(q) = self.per_pid.get(&pid) else {
            return Vec::new();
        };
        let longest = self.longest.get(&pid).copied().unwrap_or(0);
        let from = q.partition_point(|e| e.end.saturating_add(SKEW_NS) < start);
        // Past this end time an event started after the span ended.
        let stop = end.saturating_add(longest).saturating_add(SKEW_NS);
        q.range(from..)
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
mod tests {
    use super::*;
    use crate::model::Comm;

    fn ev(pid: u32, tid: u32, start: u64, dur: u64) -> KernelEvent {
        KernelEvent {
            kind: Probe::Offcpu,
            pid,
            tid,
            comm: Comm::default(),
            cpu: 0,
            start_unix_nano: start,
            duration_ns: dur,
            bytes: None,
            errno: None,
            fd: None,
            iovcnt: None,
            local: None,
            peer: None,
            kernel_stack_id: None,
            user_stack_id: None,
            offcpu_state: None,
        }
    }

    #[test]
    fn overlap_respects_process_thread_and_window() {
        let mut b = LinkBuffer::new(100, 10_000_000_000);
        b.push(&ev(1, 10, 100, 50), true); // [100,150)
        b.push(&ev(1, 11, 200, 50), false); // [200,250)
        b.push(&ev(2, 20, 120, 10), true);
        b.push(&ev(1, 10, 400, 50), false); // [400,450)
        let got = |tid, s, e| {
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
        assert!(b.overlapping(1, None, 0, 1000)[0].full.is_some());
        assert!(b.overlapping(9, None, 0, 1000).is_empty());
    }

    #[test]
    fn a_long_event_ending_far_after_the_span_is_found() {
        let mut b = LinkBuffer::new(100, u64::MAX);
        for i in 0..50 {
            b.push(&ev(1, 1, 1_000_000_000 + i * 1_000_000, 1_000), false);
        }
        // Started inside [2.0 s, 2.1 s), blocked for 5 s.
        b.push(&ev(1, 1, 2_050_000_000, 5_000_000_000), true);
        let found = b.overlapping(1, None, 2_000_000_000, 2_100_000_000);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].end, 7_050_000_000);
    }

    #[test]
    fn the_cap_evicts_oldest_and_the_window_expires() {
        let mut b = LinkBuffer::new(3, 1_000);
        for i in 0..5 {
            b.push(&ev(1 + i % 2, 1, i as u64 * 100, 10), false);
        }
        let s = b.stats();
        assert_eq!((s.held, s.evicted_full), (3, 2));
        b.expire(1_300); // horizon 300: events ending before 300 go
        let s = b.stats();
        assert_eq!(s.held, 2);
        assert_eq!(s.expired, 1);
        b.push(&ev(3, 1, 500, 10), false);
        b.push(&ev(3, 1, 600, 10), false);
        assert_eq!(b.stats().held, 3, "cap still holds after expiry");
    }
}
