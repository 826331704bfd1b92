//! OTLP/gRPC exporter: the trace, metrics, logs and profiles services over one tonic channel (plaintext
//! or TLS through rustls), gzip by default, configured headers sent as gRPC metadata, one
//! bounded attempt per call.

use std::sync::Arc;
use std::time::Duration;

use hyper::Uri;

use bytes::Bytes;
use hyper::http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::client::Grpc;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::GrpcMethod;

use super::grpc_codec::PreEncoded;
use super::{
    classify_grpc, outcome, parse_endpoint, tls, Compression, EncodedBatch, ExportBuildError,
    ExportError, ExportFuture, ExportOutcome, Exporter, Protocol, Security, Signal,
};

/// The OTLP service each signal is exported to, as the official protos name it.
fn service(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "opentelemetry.proto.collector.trace.v1.TraceService",
        Signal::Metrics => "opentelemetry.proto.collector.metrics.v1.MetricsService",
        Signal::Logs => "opentelemetry.proto.collector.logs.v1.LogsService",
        Signal::Profiles => "opentelemetry.proto.collector.profiles.v1development.ProfilesService",
    }
}

/// The gRPC method path of each signal's `Export` call.
fn path(signal: Signal) -> PathAndQuery {
    PathAndQuery::from_static(match signal {
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        Signal::Profiles => {
            "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export"
        }
    })
}

/// Sends batches to an OTLP/gRPC receiver (e.g. an OpenTelemetry Collector on port 4317).
///
/// The connection is made lazily on the first export and re-made after failures; an
/// unreachable receiver shows up as a retryable `UNAVAILABLE`. With TLS every connection is
/// TLS: a failed handshake is a retryable error that names its cause, never a reason to try
/// plaintext.
#[derive(Debug)]
pub struct OtlpGrpcExporter {
    /// One client for the four services, sending pre-encoded requests
    /// ([`PreEncoded`]); compression is set on it.
    grpc: Grpc<Channel>,
    metadata: MetadataMap,
    timeout: Duration,
    /// The endpoint, for messages.
    endpoint: String,
    /// Whether kotel presents a client certificate (mTLS).
    client_auth: bool,
    /// Plaintext or TLS.
    security: Security,
    /// Header values, scrubbed from what the receiver says.
    secrets: super::Secrets,
}

impl OtlpGrpcExporter {
    /// An exporter for `endpoint` (`http://host:port`, `https://host:port`, or `host:port`,
    /// which is TLS when `tls` is given; any path is ignored, as gRPC routes by service name).
    /// `tls` is the client configuration (ALPN `h2`) from [`tls::client_config`]; it is
    /// required for a TLS endpoint and unused for an `http://` one. Each export attempt,
    /// connecting included, is bounded by `timeout`, which is also sent to the receiver as
    /// `grpc-timeout`. Must be called inside a tokio runtime.
    pub fn new(
        endpoint: &str,
        headers: &[(String, String)],
        timeout: Duration,
        compression: Compression,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<OtlpGrpcExporter, ExportBuildError> {
        let (uri, security) = parse_endpoint(endpoint, Protocol::Grpc, tls.is_none())?;
        let metadata = metadata(headers)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ExportBuildError::NoRuntime);
        }
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let invalid = |reason: String| ExportBuildError::InvalidEndpoint {
            endpoint: super::redact_endpoint(endpoint),
            reason,
        };
        // tonic is always given an http:// URI, so that its own TLS layer stays out of the way;
        // with TLS, the connector below does the handshake and the origin says https.
        let target = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| invalid(e.to_string()))?
            .user_agent(concat!("kotel/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let client_auth = tls
            .as_ref()
            .is_some_and(|c| c.client_auth_cert_resolver.has_certs());
        let channel = match (security, tls) {
            (Security::Plain, _) => target.connect_lazy(),
            (Security::Tls, Some(config)) => {
                let origin: Uri = format!("https://{authority}")
                    .parse()
                    .map_err(|e: hyper::http::uri::InvalidUri| invalid(e.to_string()))?;
                target.origin(origin).connect_with_connector_lazy(
                    super::grpc_tls::TlsConnector::new(config, timeout),
                )
            }
            (Security::Tls, None) => {
                return Err(invalid(
                    "it uses TLS, but no TLS configuration was given".into(),
                ))
            }
        };
        let mut grpc = Grpc::new(channel);
        if compression == Compression::Gzip {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        Ok(OtlpGrpcExporter {
            grpc,
            metadata,
            timeout,
            endpoint: super::redact_endpoint(endpoint),
            client_auth,
            security,
            secrets: super::secret_values(headers),
        })
    }

    /// A connection that failed without a gRPC status from the receiver: retryable. Over TLS,
    /// a connection closed right after the handshake is how a TLS 1.3 receiver refuses a
    /// client certificate, or the lack of one (its alert often arrives after kotel's first
    /// write has already failed), so the message says what to check.
    fn transport_failure(&self, batch: &EncodedBatch, status: &tonic::Status) -> ExportError {
        let cause = error_chain(status.message(), std::error::Error::source(status));
        let signal = batch.signal();
        let endpoint = &self.endpoint;
        let closed = closed_by_peer(status);
        let what = match (self.security, closed) {
            (Security::Tls, true) => "the receiver closed the TLS connection",
            _ => "the connection failed",
        };
        let hint = match (self.security, self.client_auth, closed) {
            (Security::Tls, true, true) => {
                "; the receiver may have refused kotel's client certificate: check \
                 export.tls.cert_file / OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and the \
                 receiver's client CA"
            }
            (Security::Tls, false, true) => {
                "; the receiver may require a client certificate (mTLS), which kotel does not \
                 present: set export.tls.cert_file and key_file (or \
                 OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and _CLIENT_KEY)"
            }
            _ => "",
        };
        if !hint.is_empty() {
            tls::count_failure();
        }
        ExportError::retryable(format!(
            "OTLP/gRPC {signal} export to {endpoint}: {what}: {cause}{hint}"
        ))
    }
}

/// Whether the connection was closed or reset by the peer after it was made (not refused).
fn closed_by_peer(status: &tonic::Status) -> bool {
    use std::io::ErrorKind;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(status);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::BrokenPipe
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
            ) {
                return true;
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_canceled() || h.is_closed() || h.is_incomplete_message() {
                return true;
            }
        }
        current = e.source();
    }
    false
}

/// Whether the status was made by tonic from a failed connection (no receiver answered it).
fn is_transport_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status)
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
}

/// `first`, then the messages of `error` and its sources, `: `-joined, skipping any message
/// already said.
fn error_chain(first: &str, error: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut parts: Vec<String> = vec![first.to_string()];
    let mut current = error;
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// The configured headers as gRPC metadata. Errors name the header, never its value.
fn metadata(headers: &[(String, String)]) -> Result<MetadataMap, ExportBuildError> {
    let mut map = MetadataMap::new();
    for (name, value) in headers {
        let invalid = |reason| ExportBuildError::InvalidHeader {
            name: name.clone(),
            reason,
        };
        let key =
            AsciiMetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                invalid("not a valid gRPC metadata name (binary \"-bin\" names are not supported)")
            })?;
        let mut value = AsciiMetadataValue::try_from(value.as_str())
            .map_err(|_| invalid("the value must be visible ASCII"))?;
        // Hidden from Debug output, and never indexed by HPACK.
        value.set_sensitive(true);
        map.append(key, value);
    }
    Ok(map)
}

/// A request carrying the configured metadata and the deadline.
fn request<T>(message: T, metadata: &MetadataMap, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = metadata.clone();
    request.set_timeout(timeout);
    request
}

impl OtlpGrpcExporter {
    /// One unary `Export` call of `signal`'s service with the pre-encoded `body`, as the
    /// generated clients make it (same path, method extension and readiness check).
    async fn call<R: Message + Default + Send + 'static>(
        &mut self,
        signal: Signal,
        body: Bytes,
    ) -> Result<R, tonic::Status> {
        self.grpc.ready().await.map_err(|e| {
            tonic::Status::unknown(format!(
                "Service was not ready: {}",
                Into::<Box<dyn std::error::Error + Send + Sync>>::into(e)
            ))
        })?;
        let mut req = request(body, &self.metadata, self.timeout);
        req.extensions_mut()
            .insert(GrpcMethod::new(service(signal), "Export"));
        self.grpc
            .unary(req, path(signal), PreEncoded::<R>::default())
            .await
            .map(tonic::Response::into_inner)
    }

    /// Sends `batch` once and reads the partial success from the typed response.
    async fn send(&mut self, batch: &EncodedBatch) -> Result<ExportOutcome, tonic::Status> {
        // A clone of `Bytes` shares the buffer: retries send the queued bytes again.
        let body = batch.bytes().clone();
        Ok(match batch.signal() {
            Signal::Traces => {
                let r: ExportTraceServiceResponse = self.call(Signal::Traces, body).await?;
                let p = r.partial_success.unwrap_or_default();
                outcome(p.rejected_spans, p.error_message)
            }
            Signal::Metrics => {
                let r: ExportMetricsServiceResponse = self.call(Signal::Metrics, body).await?;
                let p = r.partial_success.unwrap_or_default();
                outcome(p.rejected_data_points, p.error_message)
            }
            Signal::Logs => {
                let r: ExportLogsServiceResponse = self.call(Signal::Logs, body).await?;
                let p = r.partial_success.unwrap_or_default();
                outcome(p.rejected_log_records, p.error_message)
            }
            Signal::Profiles => {
                let r: ExportProfilesServiceResponse = self.call(Signal::Profiles, body).await?;
                let p = r.partial_success.unwrap_or_default();
                outcome(p.rejected_profiles, p.error_message)
            }
        })
    }
}

impl Exporter for OtlpGrpcExporter {
    fn export<'a>(&'a mut self, batch: &'a EncodedBatch) -> ExportFuture<'a> {
        Box::pin(async move {
            let timeout = self.timeout;
            let call = self.send(batch);
            match tokio::time::timeout(timeout, call).await {
                Err(_) => Err(ExportError::retryable(format!(
                    "OTLP/gRPC {} export got no answer within {timeout:?}",
                    batch.signal()
                ))),
                Ok(Err(status)) => match tls::describe_failure(&status) {
                    Some(why) => Err(ExportError::retryable(format!(
                        "OTLP/gRPC {} export to {}: {why}",
                        batch.signal(),
                        self.endpoint
                    ))),
                    None if is_transport_failure(&status) => {
                        Err(self.transport_failure(batch, &status))
                    }
                    None => {
                        let missing = status.code() == tonic::Code::Unimplemented;
                        let error =
                            super::unsupported(classify_grpc(&status), batch.signal(), missing);
                        super::scrub(Err(error), &self.secrets)
                    }
                },
                Ok(Ok(outcome)) => super::scrub(Ok(outcome), &self.secrets),
            }
        })
    }

    fn name(&self) -> &'static str {
        "otlp_grpc"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::runtime::Handle;
    use tonic::Code;

    use super::super::fake::{
        assert_balanced, free_port, queue_past_refused_profiles, wait_until, GrpcCollector, Reply,
    };
    use super::super::testdata::{logs, metrics, profiles, traces};
    use super::super::{ExportOutcome, ExportQueue, RetryConfig, Signal};
    use super::*;

    fn exporter(addr: std::net::SocketAddr, compression: Compression) -> OtlpGrpcExporter {
        OtlpGrpcExporter::new(
            &format!("http://{addr}"),
            &[("x-api-key".into(), "s3cret".into())],
            Duration::from_secs(3),
            compression,
            None,
        )
        .unwrap()
    }

    fn fast_retry() -> RetryConfig {
        RetryConfig {
            initial_interval: Duration::from_millis(5),
            multiplier: 2,
            max_interval: Duration::from_millis(20),
            max_elapsed_time: Duration::from_secs(8),
        }
    }

    fn queue(addr: std::net::SocketAddr, max_bytes: usize) -> ExportQueue {
        ExportQueue::spawn(
            exporter(addr, Compression::Gzip),
            max_bytes,
            fast_retry(),
            &Handle::current(),
        )
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let err = OtlpGrpcExporter::new(
            "http://127.0.0.1:4317",
            &[],
            Duration::from_secs(1),
            Compression::Gzip,
            None,
        )
        .unwrap_err();
        assert_eq!(err, ExportBuildError::NoRuntime);
    }

    #[tokio::test]
    async fn bad_headers_are_refused_without_showing_the_value() {
        for (name, value) in [("bad key", "v"), ("x-bin", "v"), ("k", "s3cret\n")] {
            let err = OtlpGrpcExporter::new(
                "http://127.0.0.1:4317",
                &[(name.into(), value.into())],
                Duration::from_secs(1),
                Compression::Gzip,
                None,
            )
            .unwrap_err();
            assert!(
                matches!(err, ExportBuildError::InvalidHeader { .. }),
                "{err}"
            );
            assert!(!format!("{err} {err:?}").contains("s3cret"));
        }
    }

    #[tokio::test]
    async fn header_values_never_show_in_debug_output() {
        let e = exporter("127.0.0.1:4317".parse().unwrap(), Compression::Gzip);
        let shown = format!("{e:?}");
        assert!(
            shown.contains("x-api-key") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_signal_arrives_with_metadata_gzip_and_partial_success() {
        for compression in [Compression::Gzip, Compression::None] {
            let collector = GrpcCollector::start(None).await;
            let mut e = exporter(collector.addr(), compression);
            for batch in [traces(1, 3), metrics(1, 2), logs(1, 4), profiles(1, 2)] {
                assert_eq!(
                    e.export(&batch.encode()).await,
                    Ok(ExportOutcome::default())
                );
            }
            collector.script([Reply::Partial {
                rejected: 2,
                message: "too old".into(),
            }]);
            assert_eq!(
                e.export(&traces(2, 3).encode()).await,
                Ok(ExportOutcome {
                    rejected_items: 2,
                    message: Some("too old".into()),
                })
            );
            collector.script([Reply::Partial {
                rejected: 1,
                message: "one profile too old".into(),
            }]);
            assert_eq!(
                e.export(&profiles(2, 3).encode()).await,
                Ok(ExportOutcome {
                    rejected_items: 1,
                    message: Some("one profile too old".into()),
                })
            );
            let received = collector.received();
            assert_eq!(received.len(), 6);
            assert_eq!(received[0], traces(1, 3));
            assert_eq!(received[1], metrics(1, 2));
            assert_eq!(received[2], logs(1, 4));
            assert_eq!(received[3], profiles(1, 2));
            assert_eq!(received[5], profiles(2, 3));
            assert_eq!(
                collector.calls()[3].path,
                "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export"
            );
            let calls = collector.calls();
            assert!(calls
                .iter()
                .all(|c| c.header("x-api-key") == Some("s3cret")));
            assert!(calls.iter().all(|c| c.header("grpc-timeout").is_some()));
            let gzip = compression == Compression::Gzip;
            assert!(
                calls
                    .iter()
                    .all(|c| (c.header("grpc-encoding") == Some("gzip")) == gzip),
                "{compression:?}"
            );
            collector.stop().await;
        }
    }

    /// A receiver without the profiles service (tonic answers UNIMPLEMENTED): the first
    /// profiles batch is sent once and dropped as unsupported, the ones queued behind it and
    /// submitted after it are dropped without being sent, nothing is retried, and traces and
    /// logs keep flowing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_without_profiles_gets_them_once_then_never_again() {
        let collector = GrpcCollector::start_without_profiles(None).await;
        let mut e = exporter(collector.addr(), Compression::Gzip);
        let err = e.export(&profiles(1, 1).encode()).await.unwrap_err();
        assert!(
            matches!(&err, ExportError::Unsupported { reason } if reason.contains("Unimplemented")),
            "{err}"
        );
        // UNIMPLEMENTED for another signal stays a permanent error.
        collector.script([Reply::Status(Code::Unimplemented, None)]);
        let err = e.export(&traces(1, 1).encode()).await.unwrap_err();
        assert!(matches!(err, ExportError::Permanent { .. }), "{err}");

        let stats = queue_past_refused_profiles(queue(collector.addr(), 1 << 20), logs(3, 2)).await;

        let profile_calls = collector
            .calls()
            .iter()
            .filter(|c| c.path.contains("ProfilesService"))
            .count();
        assert_eq!(
            profile_calls, 2,
            "one from the bare exporter, one from the queue"
        );
        assert_eq!(collector.received(), vec![traces(2, 3), logs(3, 2)]);
        assert_eq!(stats.signal(Signal::Traces).exported_items, 3);
        assert_eq!(stats.signal(Signal::Logs).exported_items, 2);
        assert_balanced(&stats);
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_are_classified() {
        let collector = GrpcCollector::start(None).await;
        let mut e = exporter(collector.addr(), Compression::Gzip);
        collector.script([
            Reply::Status(Code::Unavailable, None),
            Reply::Status(Code::InvalidArgument, None),
            Reply::Status(Code::ResourceExhausted, None),
            Reply::Status(Code::ResourceExhausted, Some(Duration::from_millis(1234))),
        ]);
        let batch = traces(1, 1);
        assert!(matches!(
            e.export(&batch.encode()).await,
            Err(ExportError::Retryable {
                retry_after: None,
                ..
            })
        ));
        assert!(matches!(
            e.export(&batch.encode()).await,
            Err(ExportError::Permanent { .. })
        ));
        assert!(matches!(
            e.export(&batch.encode()).await,
            Err(ExportError::Permanent { .. })
        ));
        assert_eq!(
            e.export(&batch.encode()).await.unwrap_err(),
            ExportError::Retryable {
                reason: "gRPC status ResourceExhausted: fake collector says ResourceExhausted"
                    .into(),
                retry_after: Some(Duration::from_millis(1234)),
            }
        );
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_receiver_times_out_as_retryable() {
        let collector = GrpcCollector::start(None).await;
        collector.script([Reply::Hang]);
        let mut e = OtlpGrpcExporter::new(
            &format!("http://{}", collector.addr()),
            &[],
            Duration::from_millis(200),
            Compression::Gzip,
            None,
        )
        .unwrap();
        let err = e.export(&traces(1, 1).encode()).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_arrives_exactly_once_after_k_unavailable() {
        let collector = GrpcCollector::start(None).await;
        let k = 3;
        collector.script((0..k).map(|_| Reply::Status(Code::Unavailable, None)));
        let q = queue(collector.addr(), 1 << 20);
        q.submit(traces(7, 5)).unwrap();
        q.submit(logs(7, 2)).unwrap();
        q.shutdown(Duration::from_secs(8)).await;
        assert_eq!(collector.calls().len(), k + 2);
        assert_eq!(collector.received(), vec![traces(7, 5), logs(7, 2)]);
        let stats = q.stats();
        assert_eq!(stats.signal(Signal::Traces).exported_items, 5);
        assert_eq!(stats.signal(Signal::Logs).exported_items, 2);
        assert_balanced(&stats);
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_retry_on_permanent_errors_or_partial_success() {
        let collector = GrpcCollector::start(None).await;
        collector.script([
            Reply::Status(Code::InvalidArgument, None),
            Reply::Status(Code::ResourceExhausted, None),
            Reply::Partial {
                rejected: 1,
                message: String::new(),
            },
        ]);
        let q = queue(collector.addr(), 1 << 20);
        q.submit(traces(1, 2)).unwrap();
        q.submit(traces(2, 3)).unwrap();
        q.submit(traces(3, 4)).unwrap();
        q.shutdown(Duration::from_secs(8)).await;
        assert_eq!(collector.calls().len(), 3, "one call per batch");
        let s = q.stats().signal(Signal::Traces);
        assert_eq!(s.dropped_permanent, 5);
        assert_eq!((s.exported_items, s.rejected_items), (3, 1));
        assert_balanced(&q.stats());
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retry_info_delay_is_honoured() {
        let collector = GrpcCollector::start(None).await;
        let delay = Duration::from_millis(300);
        collector.script([Reply::Status(Code::ResourceExhausted, Some(delay))]);
        let q = queue(collector.addr(), 1 << 20);
        q.submit(metrics(1, 2)).unwrap();
        q.shutdown(Duration::from_secs(8)).await;
        let calls = collector.calls();
        assert_eq!(calls.len(), 2, "one throttled call, one retry");
        // The backoff alone would wait at most 20 ms; the receiver asked for 300 ms.
        assert!(calls[1].at - calls[0].at >= delay, "retried too early");
        assert_eq!(collector.received(), vec![metrics(1, 2)]);
        assert_balanced(&q.stats());
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receiver_down_then_back_gets_everything_once() {
        let collector = GrpcCollector::start(None).await;
        let addr = collector.addr();
        let q = queue(addr, 1 << 20);
        q.submit(traces(1, 2)).unwrap();
        let stats = q.stats();
        wait_until(|| stats.signal(Signal::Traces).exported_items == 2).await;
        collector.stop().await;

        q.submit(traces(2, 3)).unwrap();
        q.submit(metrics(2, 1)).unwrap();
        // Let a few attempts fail against the closed port, then come back on it.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(stats.signal(Signal::Traces).exported_items, 2);
        let collector = GrpcCollector::start(Some(addr)).await;
        q.shutdown(Duration::from_secs(8)).await;
        assert_eq!(collector.received(), vec![traces(2, 3), metrics(2, 1)]);
        assert_eq!(stats.signal(Signal::Traces).exported_items, 5);
        assert_balanced(&stats);
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_drops_exactly_what_is_missing() {
        let addr = free_port();
        let batch_len = traces(0, 10).encode().queued_size();
        let q = queue(addr, 3 * batch_len);
        // Nobody listens yet: the first batch stays in flight, so only three fit.
        let accepted: Vec<bool> = (0..8).map(|i| q.submit(traces(i, 10)).is_ok()).collect();
        assert_eq!(accepted.iter().filter(|a| **a).count(), 3);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let collector = GrpcCollector::start(Some(addr)).await;
        q.shutdown(Duration::from_secs(8)).await;

        let received: u64 = collector.received().iter().map(|b| b.items()).sum();
        let s = q.stats().signal(Signal::Traces);
        assert_eq!(received, 30);
        assert_eq!(s.exported_items, received);
        assert_eq!(s.dropped_items, s.offered_items - received);
        assert_eq!(s.dropped_queue_full, 50);
        assert_balanced(&q.stats());
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_with_the_receiver_down_drops_and_counts_everything() {
        let addr = free_port();
        let q = queue(addr, 1 << 20);
        for i in 0..4 {
            q.submit(traces(i, 2)).unwrap();
        }
        q.submit(logs(1, 3)).unwrap();
        let started = std::time::Instant::now();
        q.shutdown(Duration::from_millis(200)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        let stats = q.stats();
        assert_eq!(stats.signal(Signal::Traces).dropped_shutdown, 8);
        assert_eq!(stats.signal(Signal::Logs).dropped_shutdown, 3);
        assert_balanced(&stats);
    }
}
