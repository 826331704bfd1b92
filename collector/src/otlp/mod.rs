//! Building OTLP messages from kotel's domain types with the official `opentelemetry-proto`
//! types: kernel spans, exponential-histogram metrics with exemplars, resources and ids. The
//! OpenTelemetry Rust SDK never fills exemplars, so kotel assembles the messages itself.

pub mod attrs;
pub mod expo;
pub mod ids;
pub mod metrics;
pub mod pending;
pub mod profiles;
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

/// Span name for a probe's events (from the probe table).
pub fn span_name(p: Probe) -> &'static str {
    p.spec().span_name
}

/// Name of the duration histogram of a probe (from the probe table).
pub fn duration_metric(p: Probe) -> &'static str {
    p.spec().duration_metric
}

/// Name of the byte counter of a probe, for those that move bytes (from the probe table).
pub fn bytes_metric(p: Probe) -> Option<&'static str> {
    p.spec().bytes_metric
}
