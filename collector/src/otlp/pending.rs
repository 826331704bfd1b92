//! A kernel event whose span is decided when it is drained (its ids, and its stacks, which
//! the kernel's stack map may not keep) and built once its place is known: a child under the
//! application span that covers it, or a span of its own once nothing claimed it. Either way
//! it is exported once, whole. Kept compact while it waits (the event, two ids and the
//! symbolized frames, about 200 bytes without stacks), not as a built span.

use kotel_bpf::Probe;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::enrich::semconv::{
    CODE_FILE_PATH, CODE_FUNCTION_NAME, CODE_LINE_NUMBER, KOTEL_STACK_KERNEL, KOTEL_STACK_USER,
};
use crate::kernel::frame::texts;
use crate::kernel::Stacks;
use crate::model::KernelEvent;
use crate::otlp::attrs;
use crate::otlp::metrics::ExemplarCandidate;
use crate::otlp::spans::{kernel_span, SpanIds};

/// A kernel span waiting for its place.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingSpan {
    /// The event.
    pub event: KernelEvent,
    /// The trace id it gets when it stands on its own.
    pub trace_id: [u8; 16],
    /// Its span id, in either place.
    pub span_id: [u8; 8],
    /// Its symbolized stacks.
    pub stacks: Stacks,
    /// Whether it goes out as a span of its own when no application span claims it (the
    /// span rule); otherwise it only ever becomes a child.
    pub standalone: bool,
    /// Whether it was offered as an exemplar when it was drained (then not again when it
    /// settles).
    pub exemplar_offered: bool,
}

impl PendingSpan {
    /// The process.
    pub fn pid(&self) -> u32 {
        self.event.pid
    }

    /// The probe.
    pub fn kind(&self) -> Probe {
        self.event.kind
    }

    /// The event's length.
    pub fn duration_ns(&self) -> u64 {
        self.event.duration_ns
    }

    /// When the event ended (Unix ns).
    pub fn end(&self) -> u64 {
        self.event
            .start_unix_nano
            .saturating_add(self.event.duration_ns)
    }

    /// Its exemplar as a span of its own.
    pub fn exemplar(&self) -> ExemplarCandidate {
        ExemplarCandidate {
            duration_ns: self.duration_ns(),
            time_unix_nano: self.end(),
            trace_id: self.trace_id,
            span_id: self.span_id,
            offcpu_state: self.event.offcpu_state,
        }
    }

    /// The span of its own: its trace, no parent.
    pub fn into_span(self) -> Span {
        let ids = SpanIds {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: None,
        };
        self.build(ids)
    }

    /// The span as a child of application span `parent` in trace `trace_id`: same span id,
    /// same attributes (stacks, network, errno), the application's trace.
    pub fn into_child(self, trace_id: [u8; 16], parent: [u8; 8]) -> Span {
        let ids = SpanIds {
            trace_id,
            span_id: self.span_id,
            parent_span_id: Some(parent),
        };
        self.build(ids)
    }

    fn build(self, ids: SpanIds) -> Span {
        let mut span = kernel_span(&self.event, ids);
        if let Some(frames) = self.stacks.kernel {
            span.attributes
                .push(attrs::strings(KOTEL_STACK_KERNEL, texts(&frames)));
        }
        if let Some(frames) = self.stacks.user {
            span.attributes
                .push(attrs::strings(KOTEL_STACK_USER, texts(&frames)));
        }
        if let Some(code) = self.stacks.user_code {
            span.attributes
                .push(attrs::string(CODE_FUNCTION_NAME, code.function));
            if let Some(file) = code.file {
                span.attributes.push(attrs::string(CODE_FILE_PATH, file));
            }
            if let Some(line) = code.line {
                span.attributes
                    .push(attrs::int(CODE_LINE_NUMBER, i64::from(line)));
            }
        }
        span
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::frame::Frame;
    use crate::kernel::ustack::CodeLocation;
    use crate::model::{Comm, OffcpuState};

    fn pending() -> PendingSpan {
        PendingSpan {
            event: KernelEvent {
                kind: Probe::Offcpu,
                pid: 7,
                tid: 8,
                comm: Comm::default(),
                cpu: 0,
                start_unix_nano: 970,
                duration_ns: 30,
                bytes: None,
                errno: None,
                fd: None,
                iovcnt: None,
                local: None,
                peer: None,
                kernel_stack_id: Some(1),
                user_stack_id: Some(2),
                offcpu_state: Some(OffcpuState::Interruptible),
            },
            trace_id: [1; 16],
            span_id: [2; 8],
            stacks: Stacks {
                kernel: Some(vec![Frame::kernel(0x10, Some(("schedule", 1)))].into()),
                user: Some(vec![user("block", 12), user("main", 30)].into()),
                user_code: Some(CodeLocation {
                    function: "block".into(),
                    file: Some("/src/a.c".into()),
                    line: Some(12),
                }),
            },
            standalone: true,
            exemplar_offered: false,
        }
    }

    fn user(name: &str, line: u32) -> Frame {
        Frame {
            function: Some(name.into()),
            file: Some("a.c".into()),
            line: Some(line),
            ..Frame::unnamed(None, 0)
        }
    }

    #[test]
    fn a_child_keeps_its_id_and_every_attribute() {
        let p = pending();
        let e = p.exemplar();
        assert_eq!(
            (e.trace_id, e.span_id, e.time_unix_nano),
            ([1; 16], [2; 8], 1_000)
        );
        assert_eq!(e.offcpu_state, Some(OffcpuState::Interruptible));
        let own = p.clone().into_span();
        assert_eq!(
            (own.trace_id.clone(), own.span_id.clone()),
            (vec![1; 16], vec![2; 8])
        );
        assert!(own.parent_span_id.is_empty());
        let child = p.into_child([9; 16], [8; 8]);
        assert_eq!(child.trace_id, vec![9; 16]);
        assert_eq!(child.parent_span_id, vec![8; 8]);
        assert_eq!(child.span_id, vec![2; 8]);
        assert_eq!(child.attributes, own.attributes, "stacks and all");
        for key in [KOTEL_STACK_KERNEL, KOTEL_STACK_USER] {
            assert!(attrs::find(&child.attributes, key).is_some(), "{key}");
        }
    }

    #[test]
    fn the_innermost_user_function_goes_into_code_attributes() {
        let span = pending().into_span();
        let get = |k| attrs::find(&span.attributes, k).cloned();
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        assert_eq!(
            get(CODE_FUNCTION_NAME),
            Some(Value::StringValue("block".into()))
        );
        assert_eq!(
            get(CODE_FILE_PATH),
            Some(Value::StringValue("/src/a.c".into()))
        );
        assert_eq!(get(CODE_LINE_NUMBER), Some(Value::IntValue(12)));
        let mut p = pending();
        p.stacks.user_code = None;
        let span = p.into_span();
        assert!(attrs::find(&span.attributes, CODE_FUNCTION_NAME).is_none());
    }
}
