//! The span budget: per process and metrics interval, the slowest `limit` standalone spans go
//! out and the rest are counted as skipped, so one noisy process cannot flood the backend.
//! The slowest span of each series (process × probe) is always kept: it is the series'
//! exemplar, and it carries the link to the interval's picture, so the budget holds every span
//! until the interval's pictures are drawn. Linked children never come here: they are never
//! skipped. Without a limit nothing is skipped and only the slowest of each series waits for
//! its picture; every other span goes on at once. A span an exported exemplar names is pinned
//! and never skipped either: with the link buffer's hold it may reach the budget an interval
//! or more after its exemplar went out.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use kotel_bpf::Probe;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::otlp::pending::PendingSpan;

/// One process's spans of the current interval.
#[derive(Debug, Default)]
struct Round {
    /// The slowest span of each probe: never skipped.
    slowest: HashMap<Probe, PendingSpan>,
    /// Spans an exported exemplar named: never skipped.
    pinned: Vec<PendingSpan>,
    /// The others, fastest on top, trimmed so that the round holds at most `limit` spans
    /// (more only when the process has more probes than that).
    rest: BinaryHeap<Reverse<Ranked>>,
}

/// A span ordered by duration, then by arrival (a later one of equal length ranks lower, so
/// ties keep the first).
#[derive(Debug)]
struct Ranked {
    duration_ns: u64,
    seq: Reverse<u64>,
    span: PendingSpan,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        (self.duration_ns, self.seq) == (other.duration_ns, other.seq)
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.duration_ns, self.seq).cmp(&(other.duration_ns, other.seq))
    }
}

/// What [`SpanBudget::offer`] did.
#[derive(Debug)]
#[must_use = "a span that goes on now must be sent"]
pub struct Offered {
    /// The span this offer skipped (the one offered, or a faster one it displaced), whose
    /// event still goes into its profile, without a span to link to.
    pub skipped: Option<PendingSpan>,
    /// The span that goes on now (only without a limit).
    pub now: Option<PendingSpan>,
}

/// The budget of the current interval. `limit == 0` keeps every span.
#[derive(Debug)]
pub struct SpanBudget {
    limit: usize,
    rounds: HashMap<u32, Round>,
    seq: u64,
    pinned: HashSet<[u8; 8]>,
}

/// Most pinned span ids remembered: far more than the exemplars of the spans the link buffer
/// can hold; past it the set starts over (a span then pinned too late could be skipped).
const MAX_PINNED: usize = 65_536;

impl SpanBudget {
    /// A budget of `limit` spans per process and interval (0: unlimited).
    pub fn new(limit: usize) -> Self {
        SpanBudget {
            limit,
            rounds: HashMap::new(),
            seq: 0,
            pinned: HashSet::new(),
        }
    }

    /// Forgets a pin: its span became a linked child, which the budget never sees.
    pub fn unpin(&mut self, id: &[u8; 8]) {
        self.pinned.remove(id);
    }

    /// Pins the spans of `ids` (those exported exemplars name) for when they are offered.
    pub fn pin(&mut self, ids: impl IntoIterator<Item = [u8; 8]>) {
        for id in ids {
            if self.pinned.len() >= MAX_PINNED {
                self.pinned.clear();
            }
            self.pinned.insert(id);
        }
    }

    /// Offers a standalone span for this interval. Returns the span skipped by it, if any
    /// (the offered one, or a faster one it displaced), and, without a limit, the span that
    /// goes on now (the one offered, or the slowest it displaced).
    pub fn offer(&mut self, p: PendingSpan) -> Offered {
        self.seq += 1;
        let seq = self.seq;
        let round = self.rounds.entry(p.pid()).or_default();
        if self.limit != 0 && self.pinned.remove(&p.span_id) {
            round.pinned.push(p);
            return Offered {
                skipped: None,
                now: None,
            };
        }
        let demoted = match round.slowest.get(&p.kind()) {
            // Ties keep the first, as the exemplar does.
            Some(best) if best.duration_ns() >= p.duration_ns() => Some(p),
            _ => round.slowest.insert(p.kind(), p),
        };
        if self.limit == 0 {
            return Offered {
                skipped: None,
                now: demoted,
            };
        }
        if let Some(span) = demoted {
            round.rest.push(Reverse(Ranked {
                duration_ns: span.duration_ns(),
                seq: Reverse(seq),
                span,
            }));
        }
        let room = self.limit.saturating_sub(round.slowest.len());
        // One offer adds at most one span to the round, so at most one goes.
        let skipped = (round.rest.len() > room)
            .then(|| round.rest.pop())
            .flatten()
            .map(|r| r.0.span);
        Offered { skipped, now: None }
    }

    /// Every span of the interval, emptying the budget: the slowest of each series with
    /// `extra(pid, probe)` added to its attributes (the picture's link), then the rest. Each
    /// is shown to `sent` before it becomes a span (its profile sample links to it).
    pub fn drain(
        &mut self,
        extra: &mut dyn FnMut(u32, Probe) -> Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
        sent: &mut dyn FnMut(&PendingSpan),
    ) -> Vec<(u32, Span)> {
        let mut out = Vec::new();
        let mut pids: Vec<u32> = self.rounds.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let Some(round) = self.rounds.remove(&pid) else {
                continue;
            };
            let mut slowest: Vec<_> = round.slowest.into_values().collect();
            slowest.sort_by_key(PendingSpan::end);
            for p in slowest {
                let picture = extra(pid, p.kind());
                sent(&p);
                let mut span = p.into_span();
                span.attributes.extend(picture);
                out.push((pid, span));
            }
            let mut rest: Vec<_> = round.rest.into_iter().map(|r| r.0.span).collect();
            rest.extend(round.pinned);
            rest.sort_by_key(PendingSpan::end);
            out.extend(rest.into_iter().map(|p| {
                sent(&p);
                (pid, p.into_span())
            }));
        }
        out
    }

    /// Whether nothing is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.rounds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Stacks;
    use crate::model::KernelEvent;
    use crate::otlp::attrs;

    fn span(pid: u32, kind: Probe, duration_ns: u64, id: u8) -> PendingSpan {
        PendingSpan {
            event: KernelEvent::sample(kind, pid, 1, u64::from(id), duration_ns),
            trace_id: [1; 16],
            span_id: [id; 8],
            stacks: Stacks::default(),
            standalone: true,
            exemplar_offered: false,
        }
    }

    fn ids(out: &[(u32, Span)]) -> Vec<u8> {
        let mut v: Vec<u8> = out.iter().map(|(_, s)| s.span_id[0]).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn a_span_an_exported_exemplar_named_is_never_skipped() {
        let mut b = SpanBudget::new(1);
        // The exemplar of an earlier interval named span 7 (a fast one), and span 8, which
        // became a linked child since.
        b.pin([[7; 8], [8; 8]]);
        b.unpin(&[8; 8]);
        let skipped: u64 = [(30, 1), (20, 2), (2, 7), (10, 3)]
            .iter()
            .map(|&(d, id)| b.offer(span(1, Probe::Offcpu, d, id)).skipped.is_some() as u64)
            .sum();
        assert_eq!(
            skipped, 2,
            "the budget of one keeps the slowest, and the pinned"
        );
        assert_eq!(ids(&b.drain(&mut |_, _| Vec::new(), &mut |_| {})), [1, 7]);
        // A pin holds once.
        assert_eq!(
            b.offer(span(1, Probe::Offcpu, 50, 9)).skipped.is_some() as u64,
            0
        );
        assert_eq!(
            b.offer(span(1, Probe::Offcpu, 2, 7)).skipped.is_some() as u64,
            1
        );
        assert_eq!(
            b.offer(span(1, Probe::Offcpu, 1, 8)).skipped.is_some() as u64,
            1
        );
    }

    #[test]
    fn the_slowest_n_of_a_process_are_kept_and_the_rest_counted() {
        let mut b = SpanBudget::new(3);
        let durations = [5, 9, 1, 7, 3, 8];
        let skipped: u64 = durations
            .iter()
            .enumerate()
            .map(|(i, d)| {
                b.offer(span(1, Probe::Writev, *d, i as u8))
                    .skipped
                    .is_some() as u64
            })
            .sum();
        assert_eq!(skipped, 3);
        // Another process has a budget of its own.
        assert_eq!(
            b.offer(span(2, Probe::Writev, 1, 50)).skipped.is_some() as u64,
            0
        );
        let out = b.drain(&mut |_, _| Vec::new(), &mut |_| {});
        assert_eq!(
            ids(&out),
            vec![1, 3, 5, 50],
            "durations 9, 7, 8 and the other process"
        );
        assert!(b.is_empty());
    }

    #[test]
    fn the_slowest_of_each_probe_is_never_skipped_and_carries_the_picture() {
        let mut b = SpanBudget::new(2);
        let skipped = b.offer(span(1, Probe::Offcpu, 100, 1)).skipped.is_some() as u64
            + b.offer(span(1, Probe::Offcpu, 90, 2)).skipped.is_some() as u64
            + b.offer(span(1, Probe::Offcpu, 80, 3)).skipped.is_some() as u64
            // Faster than every off-CPU span, but the slowest of its probe.
            + b.offer(span(1, Probe::Runqueue, 5, 4)).skipped.is_some() as u64
            + b.offer(span(1, Probe::Writev, 4, 5)).skipped.is_some() as u64;
        assert_eq!(
            skipped, 2,
            "80 went for the budget, 90 for the run-queue's slowest"
        );
        let out = b.drain(
            &mut |pid, kind| vec![attrs::string("picture", format!("{pid}-{}", kind.name()))],
            &mut |_| {},
        );
        assert_eq!(ids(&out), vec![1, 4, 5]);
        for (_, s) in &out {
            assert!(
                attrs::find(&s.attributes, "picture").is_some(),
                "each slowest-of-probe has its picture"
            );
        }
    }

    #[test]
    fn ties_keep_the_first_and_zero_means_unlimited() {
        let mut b = SpanBudget::new(1);
        assert_eq!(
            b.offer(span(1, Probe::Writev, 7, 1)).skipped.is_some() as u64,
            0
        );
        assert_eq!(
            b.offer(span(1, Probe::Writev, 7, 2)).skipped.is_some() as u64,
            1
        );
        assert_eq!(ids(&b.drain(&mut |_, _| Vec::new(), &mut |_| {})), vec![1]);
        let mut all = SpanBudget::new(0);
        // Without a limit every span but the slowest of its series goes on at once.
        let mut now = Vec::new();
        for (i, d) in [(0, 7), (1, 9), (2, 3), (3, 9)] {
            let o = all.offer(span(1, Probe::Writev, d, i));
            assert!(o.skipped.is_none());
            now.extend(o.now.map(|p| p.span_id[0]));
        }
        assert_eq!(now, vec![0, 2, 3], "the 9 ns one (the first of two) waits");
        assert_eq!(
            ids(&all.drain(&mut |_, _| Vec::new(), &mut |_| {})),
            vec![1]
        );
    }
}
