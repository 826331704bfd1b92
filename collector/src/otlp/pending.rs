//! A kernel span built once, when its event is drained (ids, attributes, stacks), whose place
//! is decided later: a child under the application span that covers it, or a span of its own
//! once nothing claimed it. Either way it is exported once, whole.

use kotel_bpf::Probe;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::model::OffcpuState;
use crate::otlp::metrics::ExemplarCandidate;

/// A built kernel span waiting for its place.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingSpan {
    /// The process.
    pub pid: u32,
    /// The probe.
    pub kind: Probe,
    /// The event's length.
    pub duration_ns: u64,
    /// How its thread waited, for an off-CPU event.
    pub offcpu_state: Option<OffcpuState>,
    /// When the event ended (Unix ns).
    pub end: u64,
    /// Whether it goes out as a span of its own when no application span claims it (the
    /// standalone rule); otherwise it only ever becomes a child.
    pub standalone: bool,
    /// The span, with its own trace id and span id and no parent.
    pub span: Span,
}

impl PendingSpan {
    /// The span id it was built with, which it keeps in either place.
    pub fn span_id(&self) -> [u8; 8] {
        self.span.span_id.as_slice().try_into().unwrap_or_default()
    }

    /// Its exemplar, pointing at the span as it is now.
    pub fn exemplar(&self) -> ExemplarCandidate {
        ExemplarCandidate {
            duration_ns: self.duration_ns,
            time_unix_nano: self.end,
            trace_id: self.span.trace_id.as_slice().try_into().unwrap_or_default(),
            span_id: self.span_id(),
            offcpu_state: self.offcpu_state,
        }
    }

    /// The span as a child of application span `parent` in trace `trace_id`: same span id,
    /// same attributes (stacks, network, errno), the application's trace.
    pub fn into_child(self, trace_id: [u8; 16], parent: [u8; 8]) -> Span {
        let mut span = self.span;
        span.trace_id = trace_id.to_vec();
        span.parent_span_id = parent.to_vec();
        span
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::attrs;

    #[test]
    fn a_child_keeps_its_id_and_every_attribute() {
        let p = PendingSpan {
            pid: 7,
            kind: Probe::Offcpu,
            duration_ns: 30,
            offcpu_state: Some(OffcpuState::Interruptible),
            end: 1_000,
            standalone: true,
            span: Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                attributes: vec![attrs::strings("kotel.stack.kernel", vec!["f".into()])],
                ..Span::default()
            },
        };
        let e = p.exemplar();
        assert_eq!(
            (e.trace_id, e.span_id, e.time_unix_nano),
            ([1; 16], [2; 8], 1_000)
        );
        let attributes = p.span.attributes.clone();
        let child = p.into_child([9; 16], [8; 8]);
        assert_eq!(child.trace_id, vec![9; 16]);
        assert_eq!(child.parent_span_id, vec![8; 8]);
        assert_eq!(child.span_id, vec![2; 8]);
        assert_eq!(child.attributes, attributes);
    }
}
