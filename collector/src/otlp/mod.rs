//! Building OTLP messages from kotel's domain types with the official `opentelemetry-proto`
//! types: kernel spans, exponential-histogram metrics with exemplars, resources and ids. The
//! OpenTelemetry Rust SDK never fills exemplars, so kotel assembles the messages itself.

pub mod attrs;
pub mod expo;
pub mod ids;
pub mod metrics;
pub mod spans;
pub mod traces;

use kotel_bpf::Probe;

/// Instrumentation scope name on everything kotel produces.
pub const SCOPE_NAME: &str = "kotel";
/// Instrumentation scope version.
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The instrumentation scope kotel reports.
pub fn scope() -> opentelemetry_proto::tonic::common::v1::InstrumentationScope {
    opentelemetry_proto::tonic::common::v1::InstrumentationScope {
        name: SCOPE_NAME.into(),
        version: SCOPE_VERSION.into(),
        ..Default::default()
    }
}

/// Span name for a probe's events.
pub fn span_name(p: Probe) -> &'static str {
    match p {
        Probe::Writev => "writev",
        Probe::TcpSend => "tcp_sendmsg",
        Probe::Runqueue => "sched.runqueue",
        Probe::Offcpu => "sched.offcpu",
    }
}

/// Name of the duration histogram of a probe.
pub fn duration_metric(p: Probe) -> &'static str {
    match p {
        Probe::Writev => "kotel.writev.duration",
        Probe::TcpSend => "kotel.tcp.send.duration",
        Probe::Runqueue => "kotel.sched.runqueue.delay",
        Probe::Offcpu => "kotel.sched.offcpu.duration",
    }
}

/// Name of the byte counter of a probe, for those that move bytes.
pub fn bytes_metric(p: Probe) -> Option<&'static str> {
    match p {
        Probe::Writev => Some("kotel.writev.bytes"),
        Probe::TcpSend => Some("kotel.tcp.send.bytes"),
        Probe::Runqueue | Probe::Offcpu => None,
    }
}
