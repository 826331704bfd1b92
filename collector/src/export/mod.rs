//! Export: sends OTLP batches to a collector over gRPC or HTTP/protobuf, or writes them as OTLP
//! JSON lines, behind a byte-bounded queue with retries and exact drop accounting.
//!
//! The pieces, by role:
//!
//! - [`Batch`]: one OTLP export request (traces, metrics, logs or profiles), the unit everything
//!   counts in.
//! - [`EncodedBatch`]: the same request encoded as protobuf once, at submit; the queue holds
//!   these, so its byte bound is a bound on its memory, and retries resend the same bytes.
//! - [`Exporter`]: sends one encoded batch once. [`OtlpGrpcExporter`], [`OtlpHttpExporter`] and
//!   [`OtlpFileExporter`] implement it; [`build_exporter`] picks one from an [`ExportConfig`].
//!   The file exporter rotates its files by size ([`Rotation`], counted in [`FileStats`]).
//! - [`ExportQueue`]: takes batches from the pipeline without blocking, and a worker task exports
//!   them in order with backoff ([`RetryConfig`]), counting every item in [`ExportStats`].
//! - [`ExportConfig`]: endpoint, protocol, headers, timeout, compression, queue size, retries,
//!   with [`ExportConfig::apply_env`] for the standard `OTEL_EXPORTER_OTLP_*` variables.
//!
//! The agent wires them up as:
//!
//! ```no_run
//! # async fn run(req: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use kotel_collector::export::{Batch, ExportConfig, ExportQueue, Signal};
//!
//! let mut config = ExportConfig::default();
//! config.apply_env(|name| std::env::var(name).ok())?;
//! let queue = ExportQueue::from_config(&config, &tokio::runtime::Handle::current())?;
//! let stats = queue.stats();
//! let _ = queue.submit(Batch::Traces(req)); // a refusal is already counted as dropped
//! let _exported = stats.signal(Signal::Traces).exported_items;
//! queue.shutdown(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

mod cert_validity;
mod encoded;
mod env;
mod grpc_codec;
mod grpc_tls;
mod otlp_file;
mod otlp_grpc;
mod otlp_http;
pub mod profiles_json;
mod queue;
pub(crate) mod retry;
mod rotate;
pub mod tls;

#[cfg(test)]
mod fake;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;

pub use encoded::{EncodedBatch, ENTRY_OVERHEAD};
pub use env::{Compression, ExportConfig, ExportConfigError, Protocol};
pub use otlp_file::OtlpFileExporter;
pub use otlp_grpc::OtlpGrpcExporter;
pub use otlp_http::OtlpHttpExporter;
pub use queue::{DropReason, ExportQueue, ExportStats, SignalStats, SubmitError};
pub use retry::{classify_grpc, classify_http, Backoff, RetryConfig};
pub use rotate::{FileError, FileStats, RotatingFile, Rotation};
pub use tls::{Security, TlsFile, TlsSettings};

/// The release of the OTLP protobuf definitions kotel speaks (those `opentelemetry-proto` 0.33
/// is generated from). `kotel --version` names it.
pub const OTLP_PROTO_VERSION: &str = "1.10.0";

/// The package of the profiles signal in that release: still `v1development`, so its layout
/// may change in the next one (it did between crate versions 0.31 and 0.33).
pub const OTLP_PROFILES_PACKAGE: &str = "opentelemetry.proto.profiles.v1development";

/// The four OTLP signals kotel exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Metric data points.
    Metrics,
    /// Log records.
    Logs,
    /// Profiles (OTLP profiles `v1development`, still changing upstream).
    Profiles,
}

impl Signal {
    /// Every signal, in a fixed order (the order of [`Signal::index`]).
    pub const ALL: [Signal; 4] = [
        Signal::Traces,
        Signal::Metrics,
        Signal::Logs,
        Signal::Profiles,
    ];

    /// The lowercase name used in file names, URL paths and log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Profiles => "profiles",
        }
    }

    /// Position in [`Signal::ALL`], for per-signal arrays.
    pub fn index(self) -> usize {
        match self {
            Signal::Traces => 0,
            Signal::Metrics => 1,
            Signal::Logs => 2,
            Signal::Profiles => 3,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One OTLP export request: the unit that is queued, exported, retried and counted.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// Spans.
    Traces(ExportTraceServiceRequest),
    /// Metrics.
    Metrics(ExportMetricsServiceRequest),
    /// Log records.
    Logs(ExportLogsServiceRequest),
    /// Profiles, with the dictionary their samples index into.
    Profiles(ExportProfilesServiceRequest),
}

impl Batch {
    /// Which signal this batch carries.
    pub fn signal(&self) -> Signal {
        match self {
            Batch::Traces(_) => Signal::Traces,
            Batch::Metrics(_) => Signal::Metrics,
            Batch::Logs(_) => Signal::Logs,
            Batch::Profiles(_) => Signal::Profiles,
        }
    }

    /// How many items the batch holds, in the unit OTLP partial success counts: spans, metric
    /// data points (a metric without data counts 0), log records or profiles (the unit of
    /// `ExportProfilesPartialSuccess.rejected_profiles`).
    pub fn items(&self) -> u64 {
        let n: usize = match self {
            Batch::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum(),
            Batch::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .map(|m| match &m.data {
                    None => 0,
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                })
                .sum(),
            Batch::Logs(r) => r
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .map(|sl| sl.log_records.len())
                .sum(),
            Batch::Profiles(r) => r
                .resource_profiles
                .iter()
                .flat_map(|rp| &rp.scope_profiles)
                .map(|sp| sp.profiles.len())
                .sum(),
        };
        n as u64
    }

    /// Size of the request encoded as protobuf, before compression (what [`Batch::encode`]
    /// makes; the queue bounds memory by the sum of these plus [`ENTRY_OVERHEAD`] each).
    pub fn encoded_len(&self) -> usize {
        match self {
            Batch::Traces(r) => r.encoded_len(),
            Batch::Metrics(r) => r.encoded_len(),
            Batch::Logs(r) => r.encoded_len(),
            Batch::Profiles(r) => r.encoded_len(),
        }
    }
}

/// What a successful export reports back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    /// Items the receiver accepted the request for but rejected (OTLP `partial_success`
    /// `rejected_spans` / `rejected_data_points` / `rejected_log_records` /
    /// `rejected_profiles`). They are not retried.
    pub rejected_items: u64,
    /// The receiver's `partial_success.error_message`, when it sent one.
    pub message: Option<String>,
}

/// Why one export attempt failed, classified as the OTLP specification says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Sending again later may succeed (the receiver was unreachable, overloaded or timed out).
    #[error("{reason} (retryable)")]
    Retryable {
        /// What went wrong.
        reason: String,
        /// How long the receiver asked us to wait (gRPC `RetryInfo`, HTTP `Retry-After`);
        /// when present it takes precedence over the backoff.
        retry_after: Option<Duration>,
    },
    /// Sending the same data again would fail the same way; the batch is dropped.
    #[error("{reason} (permanent, not retried)")]
    Permanent {
        /// What went wrong.
        reason: String,
    },
    /// The receiver has no service for the batch's signal at all (gRPC `UNIMPLEMENTED`, HTTP
    /// 404 or 405 on the signal's path): this batch and every later one of the signal would
    /// fail the same way. Only profiles are classified so (`unsupported`), since a receiver
    /// may well run without the profiles service; for the other signals those answers stay
    /// [`ExportError::Permanent`].
    #[error("{reason} (the receiver does not take this signal)")]
    Unsupported {
        /// What the receiver said.
        reason: String,
    },
}

impl ExportError {
    /// Whether the caller may send the batch again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ExportError::Retryable { .. })
    }

    pub(crate) fn retryable(reason: impl Into<String>) -> ExportError {
        ExportError::Retryable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub(crate) fn permanent(reason: impl Into<String>) -> ExportError {
        ExportError::Permanent {
            reason: reason.into(),
        }
    }
}

/// Turns a permanent failure of a profiles export into [`ExportError::Unsupported`] when the
/// receiver said it has no such service: gRPC `UNIMPLEMENTED`, or HTTP 404 / 405 (what a
/// receiver without the profiles path answers). `missing` says whether it said so. Other
/// signals and other failures are returned as they are.
pub(crate) fn unsupported(error: ExportError, signal: Signal, missing: bool) -> ExportError {
    match error {
        ExportError::Permanent { reason } if missing && signal == Signal::Profiles => {
            ExportError::Unsupported { reason }
        }
        other => other,
    }
}

/// The future one [`Exporter::export`] call returns. Boxed so that `Box<dyn Exporter>` works.
pub type ExportFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ExportOutcome, ExportError>> + Send + 'a>>;

/// Sends one batch to one destination.
///
/// Contract:
///
/// - **Concurrency.** Never called concurrently: `export` takes `&mut self` and the
///   [`ExportQueue`] worker awaits each call before making the next. Calls for one signal arrive
///   in the order the batches were submitted.
/// - **Timeouts.** Each call is bounded by the exporter's own configured timeout; running out of
///   time is reported as [`ExportError::Retryable`]. The returned future may also be dropped at
///   any await point (shutdown deadline); the exporter must stay usable afterwards.
/// - **Retries.** An exporter makes exactly one attempt per call and classifies the failure as
///   retryable (with the receiver's requested delay, if any) or permanent. The caller — the
///   [`ExportQueue`] worker — owns retries, backoff and drop accounting. A partial success is a
///   success: the rejected items are reported in [`ExportOutcome`] and never retried. A
///   receiver without the signal's service is reported as [`ExportError::Unsupported`]; the
///   worker then stops sending that signal.
/// - **Failures.** No panics; every failure is an [`ExportError`].
pub trait Exporter: Send + 'static {
    /// Exports `batch` once. The bytes are sent as they are (compressed on the wire when so
    /// configured), never re-encoded.
    fn export<'a>(&'a mut self, batch: &'a EncodedBatch) -> ExportFuture<'a>;

    /// A short stable name for logs, after the sink (`otlp_grpc`, `otlp_http`, `otlp_file`).
    fn name(&self) -> &'static str;
}

impl<E: Exporter + ?Sized> Exporter for Box<E> {
    fn export<'a>(&'a mut self, batch: &'a EncodedBatch) -> ExportFuture<'a> {
        (**self).export(batch)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }
}

/// Why an exporter could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportBuildError {
    /// A TLS file or setting is unusable. Names the setting and the file; never shows a key.
    #[error("{setting}: {path}{sep}{problem}", sep = if path.is_empty() { "" } else { ": " })]
    Tls {
        /// The config field or environment variable, e.g. `export.tls.ca_file`.
        setting: &'static str,
        /// The file, when one is involved.
        path: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The endpoint is not a usable URL.
    #[error("invalid OTLP endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configured header cannot be sent. The value is a secret and is never shown.
    #[error("invalid export header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The gRPC exporter was built outside a tokio runtime.
    #[error("the OTLP/gRPC exporter must be built inside a tokio runtime")]
    NoRuntime,
}

/// Builds the exporter the configuration asks for: OTLP JSON files in `out_dir` when no endpoint
/// is set (rotated as `config.rotation` says, counted in `files`), else OTLP/gRPC or OTLP/HTTP
/// to the endpoint, over TLS when the endpoint asks for it ([`parse_endpoint`]). A gRPC
/// exporter must be built inside a tokio runtime (see [`ExportQueue::from_config`], which takes
/// care of that).
pub fn build_exporter(
    config: &ExportConfig,
    files: &FileStats,
) -> Result<Box<dyn Exporter>, ExportBuildError> {
    let Some(endpoint) = config.endpoint.as_deref() else {
        return Ok(Box::new(OtlpFileExporter::new(
            config.out_dir.clone(),
            config.rotation,
            files.clone(),
        )));
    };
    let (_, security) = parse_endpoint(endpoint, config.protocol, config.tls.insecure)?;
    let alpn: &[&[u8]] = match config.protocol {
        Protocol::Grpc => &[b"h2"],
        // The HTTP connector sets http/1.1 itself.
        Protocol::HttpProtobuf => &[],
    };
    let tls = match security {
        Security::Tls => Some(tls::client_config(&config.tls, alpn)?),
        Security::Plain => {
            if config.tls.has_files() {
                tracing::warn!(
                    endpoint = %redact_endpoint(endpoint),
                    "kotel.export.tls_unused: TLS files are configured but the endpoint is \
                     plaintext (http://); sending without TLS, as the endpoint says"
                );
            }
            None
        }
    };
    if security == Security::Tls && config.tls.insecure && endpoint.contains("://") {
        tracing::warn!(
            endpoint = %redact_endpoint(endpoint),
            "kotel.export.insecure_ignored: insecure is set but the endpoint says https://; \
             using TLS, as the OTLP specification says the scheme decides"
        );
    }
    Ok(match config.protocol {
        Protocol::Grpc => Box::new(OtlpGrpcExporter::new(
            endpoint,
            &config.headers,
            config.timeout,
            config.compression,
            tls,
        )?),
        Protocol::HttpProtobuf => Box::new(OtlpHttpExporter::new(
            endpoint,
            &config.headers,
            config.timeout,
            config.compression,
            tls,
        )?),
    })
}

/// Checks what [`build_exporter`] would check, TLS files included, without building anything
/// that needs a runtime: the agent calls it before loading any BPF program, so a bad endpoint
/// or an unreadable certificate stops it at once.
pub fn check_config(config: &ExportConfig) -> Result<(), ExportBuildError> {
    let Some(endpoint) = config.endpoint.as_deref() else {
        return Ok(());
    };
    let (_, security) = parse_endpoint(endpoint, config.protocol, config.tls.insecure)?;
    if security == Security::Tls {
        tls::client_config(&config.tls, &[])?;
    }
    Ok(())
}

/// Parses an endpoint and decides whether it uses TLS, as the OTLP exporter specification
/// says: `https://` is TLS and `http://` plaintext, whatever `insecure` says; an OTLP/gRPC
/// endpoint may also be a bare `host:port`, which is TLS unless `insecure`. OTLP/HTTP needs a
/// scheme. The returned URI always has a scheme (`https` for TLS). Shared by both exporters.
pub fn parse_endpoint(
    endpoint: &str,
    protocol: Protocol,
    insecure: bool,
) -> Result<(hyper::Uri, Security), ExportBuildError> {
    let invalid = |reason: &str| ExportBuildError::InvalidEndpoint {
        endpoint: redact_endpoint(endpoint),
        reason: reason.to_string(),
    };
    let trimmed = endpoint.trim();
    let (with_scheme, security) = match trimmed.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => {
            (trimmed.to_string(), Security::Plain)
        }
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => {
            (format!("https://{rest}"), Security::Tls)
        }
        Some(_) => return Err(invalid("the scheme must be http:// or https://")),
        None if protocol == Protocol::Grpc && !trimmed.is_empty() => {
            if insecure {
                (format!("http://{trimmed}"), Security::Plain)
            } else {
                (format!("https://{trimmed}"), Security::Tls)
            }
        }
        None => {
            return Err(invalid(
                "it needs a scheme, e.g. http://localhost:4318 or https://collector:4318",
            ))
        }
    };
    let uri: hyper::Uri = with_scheme
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(invalid("it has no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid(
            "credentials in the URL are not supported (they would end up in logs); send them \
             as a header (export.headers or OTEL_EXPORTER_OTLP_HEADERS)",
        ));
    }
    Ok((uri, security))
}

/// An endpoint as it may be shown in logs, errors and `kotel config` output: user
/// information (`user:password@`) and the query string are replaced by `<redacted>`, since
/// either may carry credentials.
pub fn redact_endpoint(endpoint: &str) -> String {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), endpoint),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("<redacted>@{host}"),
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, _)) => format!("{path}?<redacted>"),
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

/// Header values that must never be shown, for [`scrub`]. Values shorter than 4 bytes are left
/// out: they would match ordinary text and hide nothing worth hiding.
fn secret_values(headers: &[(String, String)]) -> Secrets {
    Secrets(
        headers
            .iter()
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| v.len() >= 4)
            .collect(),
    )
}

/// Header values kept for [`scrub`]; their `Debug` output says only how many there are.
#[derive(Clone, Default, PartialEq, Eq)]
struct Secrets(Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

/// Replaces any configured header value in what the receiver (or a proxy in between) said
/// with `<redacted>`: a receiver that echoes request headers into its errors must not make
/// kotel log them. Applied to error reasons and partial-success messages.
fn scrub(
    result: Result<ExportOutcome, ExportError>,
    secrets: &Secrets,
) -> Result<ExportOutcome, ExportError> {
    let clean = |text: &mut String| {
        for secret in &secrets.0 {
            if text.contains(secret.as_str()) {
                *text = text.replace(secret.as_str(), "<redacted>");
            }
        }
    };
    match result {
        Ok(mut outcome) => {
            if let Some(m) = outcome.message.as_mut() {
                clean(m);
            }
            Ok(outcome)
        }
        Err(ExportError::Retryable {
            mut reason,
            retry_after,
        }) => {
            clean(&mut reason);
            Err(ExportError::Retryable {
                reason,
                retry_after,
            })
        }
        Err(ExportError::Permanent { mut reason }) => {
            clean(&mut reason);
            Err(ExportError::Permanent { reason })
        }
        Err(ExportError::Unsupported { mut reason }) => {
            clean(&mut reason);
            Err(ExportError::Unsupported { reason })
        }
    }
}

/// Clamps an OTLP `rejected_*` count (an int64 on the wire) to what a batch can hold.
fn rejected_count(rejected: i64) -> u64 {
    u64::try_from(rejected).unwrap_or(0)
}

/// The `partial_success` of a response, as an [`ExportOutcome`].
fn outcome(rejected: i64, message: String) -> ExportOutcome {
    ExportOutcome {
        rejected_items: rejected_count(rejected),
        message: (!message.is_empty()).then_some(message),
    }
}

#[cfg(test)]
pub(crate) mod testdata {
    //! The testkit's tagged OTLP requests (`kotel_testkit::otlp::tagged`) as export batches.

    use kotel_testkit::otlp::tagged;

    use super::Batch;

    /// A trace batch of `n` spans, told apart by `tag`.
    pub fn traces(tag: u64, n: usize) -> Batch {
        Batch::Traces(tagged::traces(tag, n))
    }

    /// A metrics batch of `n + 1` points (a gauge of `n`, a histogram of one).
    pub fn metrics(tag: u64, n: usize) -> Batch {
        Batch::Metrics(tagged::metrics(tag, n))
    }

    /// A logs batch of `n` records.
    pub fn logs(tag: u64, n: usize) -> Batch {
        Batch::Logs(tagged::logs(tag, n))
    }

    /// A profiles batch of `n` profiles linked to the spans of [`traces`]`(tag, n)`.
    pub fn profiles(tag: u64, n: usize) -> Batch {
        Batch::Profiles(tagged::profiles(tag, n))
    }
}

#[cfg(test)]
mod tests {
    use super::testdata::{logs, metrics, profiles, traces};
    use super::*;

    #[test]
    fn items_count_spans_points_records_and_profiles() {
        assert_eq!(traces(1, 7).items(), 7);
        assert_eq!(
            metrics(1, 4).items(),
            5,
            "4 gauge points + 1 histogram point"
        );
        assert_eq!(logs(1, 3).items(), 3);
        assert_eq!(profiles(1, 2).items(), 2);
        assert_eq!(
            Batch::Traces(ExportTraceServiceRequest::default()).items(),
            0
        );
    }

    #[test]
    fn encoded_len_is_the_protobuf_size() {
        let b = traces(1, 3);
        let Batch::Traces(r) = &b else { unreachable!() };
        assert_eq!(b.encoded_len(), r.encode_to_vec().len());
        assert!(b.encoded_len() > 0);
    }

    #[test]
    fn the_scheme_decides_tls_and_insecure_only_matters_without_one() {
        let security = |endpoint: &str, protocol, insecure| {
            parse_endpoint(endpoint, protocol, insecure).map(|(u, s)| (u.to_string(), s))
        };
        let grpc = Protocol::Grpc;
        let http = Protocol::HttpProtobuf;
        for insecure in [false, true] {
            assert_eq!(
                security("http://127.0.0.1:4317", grpc, insecure).unwrap().1,
                Security::Plain
            );
            assert_eq!(
                security("https://collector:4317", grpc, insecure)
                    .unwrap()
                    .1,
                Security::Tls,
                "https:// is TLS even with insecure"
            );
            assert_eq!(
                security("HTTPS://collector:4318/base", http, insecure).unwrap(),
                ("https://collector:4318/base".to_string(), Security::Tls)
            );
        }
        assert_eq!(
            security("collector:4317", grpc, false).unwrap(),
            ("https://collector:4317/".to_string(), Security::Tls)
        );
        assert_eq!(
            security("collector:4317", grpc, true).unwrap().1,
            Security::Plain
        );
        for (endpoint, protocol) in [
            ("collector:4318", http),
            ("ftp://x", grpc),
            ("http://", grpc),
            ("", grpc),
        ] {
            assert!(
                matches!(
                    parse_endpoint(endpoint, protocol, false),
                    Err(ExportBuildError::InvalidEndpoint { .. })
                ),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn echoed_header_values_are_scrubbed_from_what_the_receiver_says() {
        let secrets = secret_values(&[
            ("authorization".into(), "Bearer s3cret-tok".into()),
            ("x".into(), "ab".into()),
        ]);
        assert_eq!(secrets.0, vec!["Bearer s3cret-tok".to_string()]);
        assert!(!format!("{secrets:?}").contains("s3cret"));
        let err = scrub(
            Err(ExportError::permanent(
                "HTTP status 400: bad header authorization: Bearer s3cret-tok",
            )),
            &secrets,
        )
        .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let ok = scrub(
            Ok(ExportOutcome {
                rejected_items: 1,
                message: Some("echo Bearer s3cret-tok".into()),
            }),
            &secrets,
        )
        .unwrap();
        assert_eq!(ok.message.as_deref(), Some("echo <redacted>"));
    }

    #[test]
    fn credentials_in_endpoints_are_refused_and_never_shown() {
        let secret = "pa55w0rd-x";
        for endpoint in [
            format!("https://kotel:{secret}@collector:4317"),
            format!("http://collector:4318/v1?api_key={secret}"),
        ] {
            for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
                let config = ExportConfig {
                    endpoint: Some(endpoint.clone()),
                    protocol,
                    ..ExportConfig::default()
                };
                if let Err(e) = build_exporter(&config, &FileStats::default()) {
                    let shown = format!("{e} {e:?}");
                    assert!(!shown.contains(secret), "{shown}");
                }
            }
        }
        assert_eq!(
            redact_endpoint(&format!("https://u:{secret}@c:4317/p?k={secret}")),
            "https://<redacted>@c:4317/p?<redacted>"
        );
        assert_eq!(redact_endpoint("c:4317"), "c:4317");
    }

    #[test]
    fn no_endpoint_means_files() {
        let config = ExportConfig::default();
        let e = build_exporter(&config, &FileStats::default()).unwrap();
        assert_eq!(e.name(), "otlp_file");
    }

    #[test]
    fn https_without_a_usable_ca_fails_closed_at_build_time() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let config = ExportConfig {
                endpoint: Some("https://collector.example:4317".into()),
                protocol,
                tls: TlsSettings {
                    ca_file: Some(TlsFile::new("/nonexistent/ca.pem", "export.tls.ca_file")),
                    ..TlsSettings::default()
                },
                ..ExportConfig::default()
            };
            let err = build_exporter(&config, &FileStats::default())
                .err()
                .expect("a missing CA must fail");
            assert!(
                matches!(err, ExportBuildError::Tls { .. }),
                "{protocol:?}: {err}"
            );
            assert!(err.to_string().contains("export.tls.ca_file"), "{err}");
        }
    }
}
