//! OTLP/HTTP exporter: HTTP/1.1 POSTs of protobuf bodies to `<endpoint>/v1/{traces,metrics,logs}`
//! and `<endpoint>/v1development/profiles` (plaintext or TLS through rustls), gzip by default, one bounded attempt per call, partial
//! success read from the response.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT,
};
use hyper::{Method, Request, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use super::retry::rpc_status_message;
use super::{
    classify_http, outcome, parse_endpoint, tls, Compression, EncodedBatch, ExportBuildError,
    ExportError, ExportFuture, ExportOutcome, Exporter, Protocol, Security, Signal,
};

/// Largest response body read; OTLP responses are tiny, anything bigger is cut off.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const PROTOBUF: &str = "application/x-protobuf";

/// Sends batches to an OTLP/HTTP receiver (e.g. an OpenTelemetry Collector on port 4318).
///
/// Connections are pooled and re-made after failures. An `https://` endpoint is only ever
/// reached over TLS: a failed handshake is a retryable error that names its cause.
#[derive(Debug)]
pub struct OtlpHttpExporter {
    client: HttpClient,
    /// Per [`Signal::index`].
    urls: [Uri; Signal::ALL.len()],
    headers: HeaderMap,
    timeout: Duration,
    compression: Compression,
    /// Header values, scrubbed from what the receiver says.
    secrets: super::Secrets,
}

impl OtlpHttpExporter {
    /// An exporter posting to `endpoint` + `path()` (`/v1/traces`, …,
    /// `/v1development/profiles`), as `OTEL_EXPORTER_OTLP_ENDPOINT` is interpreted for
    /// OTLP/HTTP. `tls` (from
    /// [`tls::client_config`], without ALPN) is required for an `https://` endpoint and unused
    /// for an `http://` one. Each attempt, connecting and reading the response included, is
    /// bounded by `timeout`.
    pub fn new(
        endpoint: &str,
        headers: &[(String, String)],
        timeout: Duration,
        compression: Compression,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<OtlpHttpExporter, ExportBuildError> {
        let (base, security) = parse_endpoint(endpoint, Protocol::HttpProtobuf, false)?;
        if base.query().is_some() {
            return Err(ExportBuildError::InvalidEndpoint {
                endpoint: super::redact_endpoint(endpoint),
                reason: "it must not have a query string".into(),
            });
        }
        let base = base.to_string();
        let base = base.trim_end_matches('/');
        let url =
            |signal: Signal| -> Result<Uri, ExportBuildError> {
                format!("{base}{}", path(signal)).parse().map_err(
                    |e: hyper::http::uri::InvalidUri| ExportBuildError::InvalidEndpoint {
                        endpoint: super::redact_endpoint(endpoint),
                        reason: e.to_string(),
                    },
                )
            };
        let urls = [
            url(Signal::Traces)?,
            url(Signal::Metrics)?,
            url(Signal::Logs)?,
            url(Signal::Profiles)?,
        ];

        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let invalid = |reason| ExportBuildError::InvalidHeader {
                name: name.clone(),
                reason,
            };
            let key = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid("not a valid HTTP header name"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| invalid("the value must be visible ASCII"))?;
            value.set_sensitive(true);
            map.append(key, value);
        }

        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(30));
        let client = match (security, tls) {
            (Security::Plain, _) => HttpClient::Plain(builder.build(connector)),
            (Security::Tls, Some(config)) => {
                connector.enforce_http(false);
                let https = HttpsConnectorBuilder::new()
                    .with_tls_config(Arc::unwrap_or_clone(config))
                    .https_only()
                    .enable_http1()
                    .wrap_connector(connector);
                HttpClient::Tls(builder.build(https))
            }
            (Security::Tls, None) => {
                return Err(ExportBuildError::InvalidEndpoint {
                    endpoint: super::redact_endpoint(endpoint),
                    reason: "it uses TLS, but no TLS configuration was given".into(),
                })
            }
        };
        Ok(OtlpHttpExporter {
            client,
            urls,
            headers: map,
            timeout,
            compression,
            secrets: super::secret_values(headers),
        })
    }

    async fn post(&self, batch: &EncodedBatch) -> Result<ExportOutcome, ExportError> {
        let signal = batch.signal();
        let url = &self.urls[signal.index()];
        // The queued bytes, shared rather than copied (unless gzip makes a new body).
        let body = batch.bytes().clone();
        let mut request = Request::builder().method(Method::POST).uri(url.clone());
        if let Some(headers) = request.headers_mut() {
            headers.clone_from(&self.headers);
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
            headers.insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("kotel/", env!("CARGO_PKG_VERSION"))),
            );
        }
        let body = match self.compression {
            Compression::None => body,
            Compression::Gzip => {
                request = request.header(CONTENT_ENCODING, "gzip");
                Bytes::from(gzip(&body).map_err(|e| ExportError::permanent(format!("gzip: {e}")))?)
            }
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| ExportError::permanent(format!("building the request: {e}")))?;

        let response =
            self.client
                .request(request)
                .await
                .map_err(|e| match tls::describe_failure(&e) {
                    Some(why) => ExportError::retryable(format!("OTLP/HTTP POST {url}: {why}")),
                    None => ExportError::retryable(format!(
                        "OTLP/HTTP POST {url} failed: {}",
                        chain(&e)
                    )),
                })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let gzipped = response
            .headers()
            .get(CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|c| c.to_bytes());
        let body = match (body, gzipped) {
            (Ok(b), false) => Some(b),
            (Ok(b), true) => gunzip(&b).map(Bytes::from),
            (Err(e), _) => {
                if status.is_success() {
                    tracing::debug!(url = %url, error = %e, "kotel.export.response_unread");
                }
                None
            }
        };

        if status.is_success() {
            return Ok(match body {
                Some(b) => decode_response(signal, &b).unwrap_or_else(|| {
                    tracing::debug!(url = %url, status = %status, "kotel.export.response_undecodable");
                    ExportOutcome::default()
                }),
                None => ExportOutcome::default(),
            });
        }
        let detail = body
            .as_deref()
            .map(|b| rpc_status_message(b).unwrap_or_else(|| String::from_utf8_lossy(b).into()))
            .unwrap_or_default();
        let missing = matches!(status.as_u16(), 404 | 405);
        let error = classify_http(status, retry_after.as_deref(), detail.trim());
        Err(for_signal(
            super::unsupported(error, signal, missing),
            signal,
        ))
    }
}

/// The pooled HTTP client: plaintext, or TLS-only (an `https://` endpoint never falls back).
#[derive(Debug)]
enum HttpClient {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl HttpClient {
    fn request(&self, request: Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            HttpClient::Plain(c) => c.request(request),
            HttpClient::Tls(c) => c.request(request),
        }
    }
}

/// The path each signal is posted to under the endpoint. Profiles are still a development
/// signal upstream, and their path says so.
pub fn path(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "/v1/traces",
        Signal::Metrics => "/v1/metrics",
        Signal::Logs => "/v1/logs",
        Signal::Profiles => "/v1development/profiles",
    }
}

/// Prefixes the error reason with the signal, keeping the classification.
fn for_signal(error: ExportError, signal: Signal) -> ExportError {
    match error {
        ExportError::Retryable {
            reason,
            retry_after,
        } => ExportError::Retryable {
            reason: format!("OTLP/HTTP {signal}: {reason}"),
            retry_after,
        },
        ExportError::Permanent { reason } => ExportError::Permanent {
            reason: format!("OTLP/HTTP {signal}: {reason}"),
        },
        ExportError::Unsupported { reason } => ExportError::Unsupported {
            reason: format!("OTLP/HTTP {signal}: {reason}"),
        },
    }
}

/// The partial success in a 2xx response body; an empty body is a full success.
fn decode_response(signal: Signal, body: &[u8]) -> Option<ExportOutcome> {
    let partial = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()?
            .partial_success
            .map(|p| (p.rejected_spans, p.error_message)),
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()?
            .partial_success
            .map(|p| (p.rejected_data_points, p.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()?
            .partial_success
            .map(|p| (p.rejected_log_records, p.error_message)),
        Signal::Profiles => ExportProfilesServiceResponse::decode(body)
            .ok()?
            .partial_success
            .map(|p| (p.rejected_profiles, p.error_message)),
    };
    Some(partial.map_or_else(ExportOutcome::default, |(r, m)| outcome(r, m)))
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

/// Decompresses a gzip response body, at most [`MAX_RESPONSE_BYTES`] of it.
fn gunzip(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(MAX_RESPONSE_BYTES as u64)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// An error and its sources, `: `-joined (hyper's top-level messages alone say little).
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

impl Exporter for OtlpHttpExporter {
    fn export<'a>(&'a mut self, batch: &'a EncodedBatch) -> ExportFuture<'a> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.post(batch)).await {
                Ok(result) => super::scrub(result, &self.secrets),
                Err(_) => Err(ExportError::retryable(format!(
                    "OTLP/HTTP {} export got no answer within {:?}",
                    batch.signal(),
                    self.timeout
                ))),
            }
        })
    }

    fn name(&self) -> &'static str {
        "otlp_http"
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::runtime::Handle;

    use super::super::fake::{
        assert_balanced, free_port, queue_past_refused_profiles, wait_until, HttpCollector, Reply,
    };
    use super::super::testdata::{logs, metrics, profiles, traces};
    use super::super::{ExportQueue, RetryConfig};
    use super::*;

    fn exporter(addr: SocketAddr, compression: Compression) -> OtlpHttpExporter {
        OtlpHttpExporter::new(
            &format!("http://{addr}/"),
            &[("X-Api-Key".into(), "s3cret".into())],
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

    fn queue(addr: SocketAddr, max_bytes: usize) -> ExportQueue {
        ExportQueue::spawn(
            exporter(addr, Compression::Gzip),
            max_bytes,
            fast_retry(),
            &Handle::current(),
        )
    }

    #[test]
    fn header_values_never_show_in_debug_output() {
        let e = OtlpHttpExporter::new(
            "http://127.0.0.1:4318",
            &[("X-Api-Key".into(), "s3cret".into())],
            Duration::from_secs(1),
            Compression::None,
            None,
        )
        .unwrap();
        let shown = format!("{e:?}");
        assert!(
            shown.contains("x-api-key") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn signal_urls_are_appended_to_the_endpoint() {
        let e = OtlpHttpExporter::new(
            "http://collector:4318/otlp/",
            &[],
            Duration::from_secs(1),
            Compression::None,
            None,
        )
        .unwrap();
        let urls: Vec<String> = e.urls.iter().map(|u| u.to_string()).collect();
        assert_eq!(
            urls,
            [
                "http://collector:4318/otlp/v1/traces",
                "http://collector:4318/otlp/v1/metrics",
                "http://collector:4318/otlp/v1/logs",
                "http://collector:4318/otlp/v1development/profiles",
            ]
        );
        assert!(matches!(
            OtlpHttpExporter::new(
                "http://c:4318/?a=b",
                &[],
                Duration::from_secs(1),
                Compression::None,
                None,
            ),
            Err(ExportBuildError::InvalidEndpoint { .. })
        ));
    }

    #[test]
    fn header_values_stay_out_of_debug_output() {
        let e = exporter("127.0.0.1:4318".parse().unwrap(), Compression::Gzip);
        assert!(!format!("{e:?}").contains("s3cret"));
        let err = OtlpHttpExporter::new(
            "http://c:4318",
            &[("k".into(), "s3cret\r\n".into())],
            Duration::from_secs(1),
            Compression::None,
            None,
        )
        .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cret"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_signal_arrives_with_headers_gzip_and_partial_success() {
        for compression in [Compression::Gzip, Compression::None] {
            let collector = HttpCollector::start(None).await;
            let mut e = exporter(collector.addr(), compression);
            for batch in [traces(1, 3), metrics(1, 2), logs(1, 4), profiles(1, 2)] {
                assert_eq!(
                    e.export(&batch.encode()).await,
                    Ok(ExportOutcome::default())
                );
            }
            collector.script([Reply::Partial {
                rejected: 1,
                message: "1 record too large".into(),
            }]);
            assert_eq!(
                e.export(&logs(2, 3).encode()).await,
                Ok(ExportOutcome {
                    rejected_items: 1,
                    message: Some("1 record too large".into()),
                })
            );
            assert_eq!(
                collector.received(),
                vec![
                    traces(1, 3),
                    metrics(1, 2),
                    logs(1, 4),
                    profiles(1, 2),
                    logs(2, 3)
                ]
            );
            let calls = collector.calls();
            let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
            assert_eq!(
                paths,
                [
                    "/v1/traces",
                    "/v1/metrics",
                    "/v1/logs",
                    "/v1development/profiles",
                    "/v1/logs"
                ]
            );
            for c in &calls {
                assert_eq!(c.header("content-type"), Some(PROTOBUF));
                assert_eq!(c.header("x-api-key"), Some("s3cret"));
                let gzip = compression == Compression::Gzip;
                assert_eq!(c.header("content-encoding") == Some("gzip"), gzip);
            }
            collector.stop().await;
        }
    }

    /// A receiver without the profiles path (404): the first profiles batch is sent once and
    /// dropped as unsupported, later ones are dropped without being sent, nothing is retried,
    /// and traces keep flowing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_without_profiles_gets_them_once_then_never_again() {
        let collector = HttpCollector::start_without_profiles(None).await;
        let mut e = exporter(collector.addr(), Compression::Gzip);
        let err = e.export(&profiles(1, 1).encode()).await.unwrap_err();
        assert!(
            matches!(&err, ExportError::Unsupported { reason } if reason.contains("404")),
            "{err}"
        );
        // The same answer for another signal stays a permanent error.
        collector.script([Reply::Http(404, None)]);
        let err = e.export(&traces(1, 1).encode()).await.unwrap_err();
        assert!(matches!(err, ExportError::Permanent { .. }), "{err}");

        let stats =
            queue_past_refused_profiles(queue(collector.addr(), 1 << 20), traces(3, 1)).await;

        let profile_calls = collector
            .calls()
            .iter()
            .filter(|c| c.path == "/v1development/profiles")
            .count();
        assert_eq!(
            profile_calls, 2,
            "one from the bare exporter, one from the queue"
        );
        assert_eq!(collector.received(), vec![traces(2, 3), traces(3, 1)]);
        assert_eq!(stats.signal(Signal::Traces).exported_items, 4);
        assert_balanced(&stats);
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_405_on_the_profiles_path_is_unsupported_too() {
        let collector = HttpCollector::start(None).await;
        let mut e = exporter(collector.addr(), Compression::None);
        collector.script([Reply::Http(405, None)]);
        let err = e.export(&profiles(1, 1).encode()).await.unwrap_err();
        assert!(matches!(err, ExportError::Unsupported { .. }), "{err}");
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_are_classified() {
        let collector = HttpCollector::start(None).await;
        let mut e = exporter(collector.addr(), Compression::Gzip);
        collector.script([
            Reply::Http(503, None),
            Reply::Http(429, Some("2")),
            Reply::Http(400, None),
            Reply::Http(500, None),
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
            Err(ExportError::Retryable { retry_after: Some(d), .. }) if d == Duration::from_secs(2)
        ));
        let err = e.export(&batch.encode()).await.unwrap_err();
        assert!(!err.is_retryable());
        assert!(
            err.to_string().contains("fake collector says 400"),
            "the receiver's google.rpc.Status message is shown: {err}"
        );
        assert!(!e.export(&batch.encode()).await.unwrap_err().is_retryable());
        collector.stop().await;

        // Nobody listening: retryable.
        let mut e = exporter(free_port(), Compression::Gzip);
        assert!(e.export(&batch.encode()).await.unwrap_err().is_retryable());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_receiver_times_out_as_retryable() {
        let collector = HttpCollector::start(None).await;
        collector.script([Reply::Hang]);
        let mut e = OtlpHttpExporter::new(
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
    async fn data_arrives_exactly_once_after_k_failures() {
        let collector = HttpCollector::start(None).await;
        let k = 3;
        collector.script((0..k).map(|_| Reply::Http(503, None)));
        let q = queue(collector.addr(), 1 << 20);
        q.submit(metrics(3, 4)).unwrap();
        q.submit(traces(3, 1)).unwrap();
        q.shutdown(Duration::from_secs(8)).await;
        assert_eq!(collector.calls().len(), k + 2);
        assert_eq!(collector.received(), vec![metrics(3, 4), traces(3, 1)]);
        assert_eq!(q.stats().signal(Signal::Metrics).exported_items, 5);
        assert_balanced(&q.stats());
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_retry_on_permanent_errors_or_partial_success() {
        let collector = HttpCollector::start(None).await;
        collector.script([
            Reply::Http(400, None),
            Reply::Http(401, Some("1")),
            Reply::Partial {
                rejected: 2,
                message: String::new(),
            },
        ]);
        let q = queue(collector.addr(), 1 << 20);
        q.submit(logs(1, 1)).unwrap();
        q.submit(logs(2, 2)).unwrap();
        q.submit(logs(3, 3)).unwrap();
        q.shutdown(Duration::from_secs(8)).await;
        assert_eq!(collector.calls().len(), 3, "one call per batch");
        let s = q.stats().signal(Signal::Logs);
        assert_eq!(s.dropped_permanent, 3);
        assert_eq!((s.exported_items, s.rejected_items), (1, 2));
        assert_balanced(&q.stats());
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retry_after_is_honoured() {
        let collector = HttpCollector::start(None).await;
        collector.script([Reply::Http(429, Some("1"))]);
        let q = queue(collector.addr(), 1 << 20);
        q.submit(traces(1, 2)).unwrap();
        q.shutdown(Duration::from_secs(8)).await;
        let calls = collector.calls();
        assert_eq!(calls.len(), 2);
        // The backoff alone would wait at most 20 ms; the receiver asked for 1 s.
        assert!(calls[1].at - calls[0].at >= Duration::from_secs(1));
        assert_eq!(collector.received(), vec![traces(1, 2)]);
        assert_balanced(&q.stats());
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receiver_down_then_back_gets_everything_once() {
        let collector = HttpCollector::start(None).await;
        let addr = collector.addr();
        let q = queue(addr, 1 << 20);
        let stats = q.stats();
        q.submit(traces(1, 2)).unwrap();
        wait_until(|| stats.signal(Signal::Traces).exported_items == 2).await;
        collector.stop().await;

        q.submit(traces(2, 3)).unwrap();
        q.submit(logs(2, 1)).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(stats.signal(Signal::Traces).exported_items, 2);
        let collector = HttpCollector::start(Some(addr)).await;
        q.shutdown(Duration::from_secs(8)).await;
        assert_eq!(collector.received(), vec![traces(2, 3), logs(2, 1)]);
        assert_balanced(&stats);
        collector.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_drops_exactly_what_is_missing() {
        let addr = free_port();
        let batch_len = logs(0, 10).encode().queued_size();
        let q = queue(addr, 4 * batch_len);
        let accepted = (0..9).filter(|i| q.submit(logs(*i, 10)).is_ok()).count();
        assert_eq!(accepted, 4);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let collector = HttpCollector::start(Some(addr)).await;
        q.shutdown(Duration::from_secs(8)).await;
        let received: u64 = collector
            .received()
            .iter()
            .map(super::super::Batch::items)
            .sum();
        let s = q.stats().signal(Signal::Logs);
        assert_eq!(received, 40);
        assert_eq!(s.exported_items, received);
        assert_eq!(s.dropped_items, s.offered_items - received);
        assert_eq!(s.dropped_queue_full, 50);
        assert_balanced(&q.stats());
        collector.stop().await;
    }
}
