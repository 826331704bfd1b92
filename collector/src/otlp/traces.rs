//! Groups spans by process until they are due, then builds one `ExportTraceServiceRequest`
//! with one `ResourceSpans` per process.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::scope;

/// Spans waiting to be sent, by process. Single-threaded.
#[derive(Debug)]
pub struct SpanBatcher {
    pending: BTreeMap<u32, Vec<Span>>,
    len: usize,
    oldest: Option<Instant>,
    max_spans: usize,
    max_wait: Duration,
}

impl SpanBatcher {
    /// A batcher that is due once it holds `max_spans` or its oldest span waited `max_wait`.
    pub fn new(max_spans: usize, max_wait: Duration) -> Self {
        SpanBatcher {
            pending: BTreeMap::new(),
            len: 0,
            oldest: None,
            max_spans: max_spans.max(1),
            max_wait,
        }
    }

    /// Adds a span of process `pid`.
    pub fn push(&mut self, pid: u32, span: Span) {
        self.pending.entry(pid).or_default().push(span);
        self.len += 1;
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Spans waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the batch should be sent now.
    pub fn due(&self) -> bool {
        self.len >= self.max_spans || self.oldest.is_some_and(|t| t.elapsed() >= self.max_wait)
    }

    /// Time until the oldest span is due, if any waits.
    pub fn time_left(&self) -> Option<Duration> {
        self.oldest
            .map(|t| self.max_wait.saturating_sub(t.elapsed()))
    }

    /// Takes up to `max_spans` waiting spans as one request, lowest pids first;
    /// `resource_of` names each process. Call again while spans remain.
    pub fn take(
        &mut self,
        resource_of: &mut dyn FnMut(u32) -> Resource,
    ) -> Option<ExportTraceServiceRequest> {
        let mut budget = self.max_spans;
        let mut resource_spans = Vec::new();
        while budget > 0 {
            let Some(mut entry) = self.pending.first_entry() else {
                break;
            };
            let pid = *entry.key();
            let spans = if entry.get().len() <= budget {
                entry.remove()
            } else {
                let rest = entry.get_mut().split_off(budget);
                std::mem::replace(entry.get_mut(), rest)
            };
            budget -= spans.len();
            self.len -= spans.len();
            resource_spans.push(ResourceSpans {
                resource: Some(resource_of(pid)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        if self.len == 0 {
            self.oldest = None;
        }
        (!resource_spans.is_empty()).then_some(ExportTraceServiceRequest { resource_spans })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_grouped_per_process_and_taken_once() {
        let mut b = SpanBatcher::new(3, Duration::from_secs(60));
        let span = |n: &str| Span {
            name: n.into(),
            ..Default::default()
        };
        b.push(2, span("a"));
        b.push(1, span("b"));
        assert!(!b.due());
        b.push(2, span("c"));
        assert!(b.due(), "full");
        let req = b
            .take(&mut |pid| Resource {
                dropped_attributes_count: pid,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(req.resource_spans.len(), 2);
        let pid2 = req
            .resource_spans
            .iter()
            .find(|r| r.resource.as_ref().unwrap().dropped_attributes_count == 2)
            .unwrap();
        assert_eq!(pid2.scope_spans[0].spans.len(), 2);
        assert!(b.is_empty() && b.take(&mut |_| Resource::default()).is_none());
    }

    #[test]
    fn a_request_holds_at_most_max_spans() {
        let mut b = SpanBatcher::new(2, Duration::from_secs(60));
        for pid in [1, 1, 1, 2] {
            b.push(pid, Span::default());
        }
        let mut sizes = Vec::new();
        while let Some(req) = b.take(&mut |_| Resource::default()) {
            sizes.push(
                req.resource_spans
                    .iter()
                    .map(|r| r.scope_spans[0].spans.len())
                    .sum::<usize>(),
            );
        }
        assert_eq!(sizes, vec![2, 2]);
        assert!(b.is_empty());
    }

    #[test]
    fn a_lone_span_is_due_after_the_wait() {
        let mut b = SpanBatcher::new(100, Duration::ZERO);
        assert!(!b.due());
        b.push(1, Span::default());
        assert!(b.due());
    }
}
