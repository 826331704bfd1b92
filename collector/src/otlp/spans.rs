//! One INTERNAL span per kernel event at or above the span threshold.

use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};

use super::{attrs, span_name};
use crate::enrich::semconv::{
    KOTEL_BYTES, KOTEL_CPU, KOTEL_ERRNO, KOTEL_FD, KOTEL_IOVCNT, KOTEL_OFFCPU_STATE,
    KOTEL_STACK_KERNEL_ID, KOTEL_STACK_USER_ID, NETWORK_LOCAL_ADDRESS, NETWORK_LOCAL_PORT,
    NETWORK_PEER_ADDRESS, NETWORK_PEER_PORT, NETWORK_TRANSPORT, THREAD_ID, THREAD_NAME,
};
use crate::model::KernelEvent;
use kotel_bpf::Probe;

/// Ids of one span, and the parent it hangs under (none for a root span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    /// Trace the span belongs to.
    pub trace_id: [u8; 16],
    /// The span's own id.
    pub span_id: [u8; 8],
    /// Parent span id, when the span is a child of an application span.
    pub parent_span_id: Option<[u8; 8]>,
}

/// Builds the span for `ev` with the attributes DESIGN.md lists.
pub fn kernel_span(ev: &KernelEvent, ids: SpanIds) -> Span {
    let mut a = Vec::with_capacity(12);
    a.push(attrs::int(THREAD_ID, i64::from(ev.tid)));
    a.push(attrs::string(THREAD_NAME, ev.comm.to_string_lossy()));
    a.push(attrs::int(KOTEL_CPU, i64::from(ev.cpu)));
    if let Some(b) = ev.bytes {
        a.push(attrs::int(KOTEL_BYTES, b as i64));
    }
    if let Some(fd) = ev.fd {
        a.push(attrs::int(KOTEL_FD, i64::from(fd)));
    }
    if let Some(n) = ev.iovcnt {
        a.push(attrs::int(KOTEL_IOVCNT, i64::from(n)));
    }
    if ev.kind == Probe::TcpSend {
        a.push(attrs::string(NETWORK_TRANSPORT, "tcp"));
        if let Some(peer) = ev.peer {
            a.push(attrs::string(NETWORK_PEER_ADDRESS, peer.ip().to_string()));
            a.push(attrs::int(NETWORK_PEER_PORT, i64::from(peer.port())));
        }
        if let Some(local) = ev.local {
            a.push(attrs::string(NETWORK_LOCAL_ADDRESS, local.ip().to_string()));
            a.push(attrs::int(NETWORK_LOCAL_PORT, i64::from(local.port())));
        }
    }
    if let Some(state) = ev.offcpu_state {
        a.push(attrs::string(KOTEL_OFFCPU_STATE, state.name()));
    }
    if let Some(id) = ev.kernel_stack_id {
        a.push(attrs::int(KOTEL_STACK_KERNEL_ID, i64::from(id)));
    }
    if let Some(id) = ev.user_stack_id {
        a.push(attrs::int(KOTEL_STACK_USER_ID, i64::from(id)));
    }
    let status = ev.errno.map(|errno| {
        a.push(attrs::int(KOTEL_ERRNO, i64::from(errno)));
        Status {
            code: StatusCode::Error as i32,
            message: format!("errno {errno}"),
        }
    });
    Span {
        trace_id: ids.trace_id.to_vec(),
        span_id: ids.span_id.to_vec(),
        parent_span_id: ids.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: span_name(ev.kind).to_string(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: ev.start_unix_nano,
        end_time_unix_nano: ev.start_unix_nano.saturating_add(ev.duration_ns),
        attributes: a,
        status,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Comm, OffcpuState};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    fn event(kind: Probe) -> KernelEvent {
        KernelEvent {
            kind,
            pid: 10,
            tid: 11,
            comm: Comm::from_kernel(b"worker\0"),
            cpu: 1,
            start_unix_nano: 1_000,
            duration_ns: 500,
            bytes: Some(64),
            errno: None,
            fd: Some(4),
            iovcnt: None,
            local: Some("[::1]:5000".parse().unwrap()),
            peer: Some("[::1]:80".parse().unwrap()),
            kernel_stack_id: None,
            user_stack_id: None,
            offcpu_state: None,
        }
    }

    #[test]
    fn tcp_spans_carry_the_network_attributes() {
        let ids = SpanIds {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: Some([3; 8]),
        };
        let s = kernel_span(&event(Probe::TcpSend), ids);
        assert_eq!(s.name, "tcp_sendmsg");
        assert_eq!(s.kind, SpanKind::Internal as i32);
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (1_000, 1_500)
        );
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(
            attrs::find(&s.attributes, "network.peer.address"),
            Some(&Value::StringValue("::1".into()))
        );
        assert_eq!(
            attrs::find(&s.attributes, "network.local.port"),
            Some(&Value::IntValue(5000))
        );
        assert_eq!(
            attrs::find(&s.attributes, "kotel.bytes"),
            Some(&Value::IntValue(64))
        );
        assert_eq!(
            attrs::find(&s.attributes, "thread.name"),
            Some(&Value::StringValue("worker".into()))
        );
        assert!(s.status.is_none());
    }

    #[test]
    fn failed_calls_are_error_spans_and_sched_spans_have_no_network() {
        let mut ev = event(Probe::Writev);
        ev.bytes = None;
        ev.errno = Some(11);
        let s = kernel_span(
            &ev,
            SpanIds {
                trace_id: [1; 16],
                span_id: [2; 8],
                parent_span_id: None,
            },
        );
        assert_eq!(s.status.unwrap().code, StatusCode::Error as i32);
        assert!(s.parent_span_id.is_empty());
        let s = kernel_span(
            &event(Probe::Offcpu),
            SpanIds {
                trace_id: [1; 16],
                span_id: [2; 8],
                parent_span_id: None,
            },
        );
        assert!(attrs::find(&s.attributes, "network.transport").is_none());
        assert!(attrs::find(&s.attributes, "kotel.offcpu.state").is_none());
    }

    #[test]
    fn offcpu_spans_say_how_the_thread_waited() {
        let ids = SpanIds {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
        };
        for state in [OffcpuState::Interruptible, OffcpuState::Uninterruptible] {
            let mut ev = event(Probe::Offcpu);
            ev.offcpu_state = Some(state);
            let s = kernel_span(&ev, ids);
            assert_eq!(s.name, "sched.offcpu");
            assert_eq!(
                attrs::find(&s.attributes, "kotel.offcpu.state"),
                Some(&Value::StringValue(state.name().into()))
            );
        }
        assert_eq!(OffcpuState::Interruptible.name(), "interruptible");
        assert_eq!(OffcpuState::Uninterruptible.name(), "uninterruptible");
    }
}
