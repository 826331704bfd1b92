//! The slowest span of each series (process × probe), held back until its interval's picture
//! is drawn, so that it carries the same artifact link as its exemplar. Every other span goes
//! on at once.

use std::collections::HashMap;

use kotel_bpf::Probe;
use opentelemetry_proto::tonic::trace::v1::Span;

/// Spans held back, one per series.
#[derive(Debug, Default)]
pub struct HeldSpans {
    slowest: HashMap<(u32, Probe), (u64, Span)>,
}

impl HeldSpans {
    /// Offers a span of `duration_ns`: held when it is the slowest of its series so far.
    /// Returns the span that goes on now: the one offered, or the one it displaced.
    pub fn offer(&mut self, pid: u32, kind: Probe, duration_ns: u64, span: Span) -> Option<Span> {
        let key = (pid, kind);
        match self.slowest.get(&key) {
            Some((held, _)) if *held >= duration_ns => Some(span),
            _ => self
                .slowest
                .insert(key, (duration_ns, span))
                .map(|(_, previous)| previous),
        }
    }

    /// Every held span with its series, emptying the hold.
    pub fn drain(&mut self) -> impl Iterator<Item = ((u32, Probe), Span)> + '_ {
        self.slowest.drain().map(|(key, (_, span))| (key, span))
    }

    /// Whether nothing is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.slowest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: u8) -> Span {
        Span {
            span_id: vec![id],
            ..Span::default()
        }
    }

    #[test]
    fn only_the_slowest_of_each_series_is_held() {
        let mut h = HeldSpans::default();
        assert_eq!(h.offer(1, Probe::Writev, 10, span(1)), None);
        assert_eq!(h.offer(1, Probe::Writev, 5, span(2)), Some(span(2)));
        assert_eq!(
            h.offer(1, Probe::Writev, 10, span(3)),
            Some(span(3)),
            "ties keep the first"
        );
        assert_eq!(h.offer(1, Probe::Writev, 20, span(4)), Some(span(1)));
        assert_eq!(
            h.offer(2, Probe::Writev, 1, span(5)),
            None,
            "another process"
        );
        assert_eq!(h.offer(1, Probe::Offcpu, 1, span(6)), None, "another probe");
        let mut held: Vec<_> = h.drain().map(|(k, s)| (k, s.span_id[0])).collect();
        held.sort_by_key(|(_, id)| *id);
        assert_eq!(
            held,
            vec![
                ((1, Probe::Writev), 4),
                ((2, Probe::Writev), 5),
                ((1, Probe::Offcpu), 6)
            ]
        );
        assert!(h.is_empty());
    }
}
