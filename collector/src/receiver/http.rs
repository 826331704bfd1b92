//! OTLP/HTTP receiver: `POST /v1/traces|metrics|logs` in protobuf or OTLP/JSON, optionally
//! gzip-compressed, on hyper HTTP/1.1, with the body read under a hard size cap.
//!
//! Answers: 200 with the empty `Export*ServiceResponse` in the request's encoding; 400 for a
//! body that cannot be decoded; 404 wrong path; 405 wrong method; 413 over the size limit
//! (compressed or decompressed); 415 unsupported `Content-Type` or `Content-Encoding`; 429 with
//! `Retry-After` when the channel is full; 503 when the agent is stopping. Errors carry a
//! plain-text message. With a bearer token configured, a request without it (or with a wrong
//! one) gets 401 with `WWW-Authenticate: Bearer` before its body is read.
//!
//! With TLS, the accept loop takes connections whose handshake already finished from
//! `kotel_tls::spawn_handshakes` (off the loop, each within a deadline).

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::{Intake, ReceiverError, Reject, Transport, RETRY_AFTER};
use crate::export::{Batch, Signal};

/// Connections served at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
/// Longest a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send its request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running HTTP server.
#[derive(Debug)]
pub(super) struct HttpServer {
    pub(super) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Binds `addr` and serves until [`HttpServer::shutdown`].
    pub(super) async fn start(
        addr: SocketAddr,
        intake: Arc<Intake>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<HttpServer, ReceiverError> {
        let bind_err = |source| ReceiverError::Bind {
            protocol: "HTTP",
            addr,
            source,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = match tls {
            None => tokio::spawn(serve_plain(listener, intake, stopped)),
            Some(config) => {
                let failed = Arc::clone(&intake);
                let (conns, handshakes) = kotel_tls::spawn_handshakes(
                    listener,
                    config,
                    kotel_tls::HANDSHAKE_TIMEOUT,
                    move |peer, failure| failed.handshake_failed(Transport::Http, peer, &failure),
                );
                tokio::spawn(async move {
                    serve_tls(conns, intake, stopped).await;
                    handshakes.abort();
                })
            }
        };
        Ok(HttpServer {
            addr: local,
            stop,
            task,
        })
    }

    /// Stops accepting and closes every connection.
    pub(super) async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(1), &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
}

/// The accept loop over plain TCP: at most [`MAX_CONNECTIONS`] served at once.
async fn serve_plain(
    listener: tokio::net::TcpListener,
    intake: Arc<Intake>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = connections.join_next() => {}
            accepted = listener.accept(), if connections.len() < MAX_CONNECTIONS => {
                match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(stream, peer, Arc::clone(&intake)));
                    }
                    Err(e) => {
                        // Out of file descriptors, usually: back off instead of spinning.
                        tracing::warn!(error = %e, "kotel.receiver.accept_failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }
    // Down means down: close every connection, idle or not.
    connections.shutdown().await;
}

/// The same over connections whose TLS handshake finished; while [`MAX_CONNECTIONS`] are
/// served, no more are taken, which in turn stops the handshakes.
async fn serve_tls(
    mut conns: tokio::sync::mpsc::Receiver<kotel_tls::Accepted>,
    intake: Arc<Intake>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = connections.join_next() => {}
            accepted = conns.recv(), if connections.len() < MAX_CONNECTIONS => match accepted {
                Some((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, Arc::clone(&intake)));
                }
                None => break,
            },
        }
    }
    connections.shutdown().await;
}

async fn serve_connection<IO>(stream: IO, peer: SocketAddr, intake: Arc<Intake>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let intake = Arc::clone(&intake);
        async move { Ok::<_, Infallible>(handle(&intake, req, peer).await) }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service)
        .await;
}

/// How the request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

fn text(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(message + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The header's value when it is present and readable; `Err` when present but not text.
fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, ()> {
    headers
        .get(name)
        .map(|v| v.to_str().map(str::trim).map_err(|_| ()))
        .transpose()
}

/// Answers one OTLP/HTTP request: checks where it goes and how it is encoded, reads and
/// decodes its body within the limits, and offers it to the agent.
async fn handle(
    intake: &Intake,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let (signal, format, gzip) = match check_request(intake, &req, peer) {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal,
    };
    let reject = |reason: Reject, status: StatusCode, message: String| {
        intake.reject(reason, Transport::Http, Some(signal), Some(peer), &message);
        text(status, message)
    };
    let body = match read_body(intake, req, gzip).await {
        Ok(body) => body,
        Err((reason, status, message)) => return reject(reason, status, message),
    };
    let batch = match decode(signal, format, &body) {
        Ok(batch) => batch,
        Err(e) => {
            let kind = match format {
                Format::Protobuf => "OTLP/protobuf",
                Format::Json => "OTLP/JSON",
            };
            return reject(
                Reject::Malformed,
                StatusCode::BAD_REQUEST,
                format!("malformed {kind} {signal} request: {e}"),
            );
        }
    };

    answer(
        intake.offer(batch, Some(peer), Transport::Http),
        intake,
        signal,
        format,
    )
}

/// The signal, body format and whether it is gzipped, from the path and headers; or the
/// refusal to send (wrong path, no or wrong token, not POST, unsupported encoding).
#[allow(clippy::result_large_err)]
fn check_request(
    intake: &Intake,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<(Signal, Format, bool), Response<Full<Bytes>>> {
    let signal = match req.uri().path() {
        "/v1/traces" => Signal::Traces,
        "/v1/metrics" => Signal::Metrics,
        "/v1/logs" => Signal::Logs,
        other => {
            return Err(text(
                StatusCode::NOT_FOUND,
                format!("no OTLP endpoint at {other}: use /v1/traces, /v1/metrics or /v1/logs"),
            ))
        }
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if !intake.authorized(authorization, Transport::Http, Some(signal), Some(peer)) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            super::auth::UNAUTHENTICATED_MESSAGE.into(),
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(r);
    }
    if req.method() != Method::POST {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} is not allowed: OTLP/HTTP exports use POST",
                req.method()
            ),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Err(r);
    }
    let media_type = header_str(req.headers(), header::CONTENT_TYPE)
        .ok()
        .flatten()
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let format = match media_type.as_deref() {
        Some("application/x-protobuf") => Format::Protobuf,
        Some("application/json") => Format::Json,
        other => {
            return Err(text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Type {:?}: send application/x-protobuf or \
                     application/json",
                    other.unwrap_or("")
                ),
            ))
        }
    };
    let gzip = match header_str(req.headers(), header::CONTENT_ENCODING) {
        Ok(None) => false,
        Ok(Some(e)) if e.is_empty() || e.eq_ignore_ascii_case("identity") => false,
        Ok(Some(e)) if e.eq_ignore_ascii_case("gzip") => true,
        _ => {
            return Err(text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported Content-Encoding: send gzip or no encoding".into(),
            ))
        }
    };

    Ok((signal, format, gzip))
}

/// Reads the body within the receiver's limit (refusing a declared oversize body before
/// reading any of it) and within [`BODY_TIMEOUT`], then decompresses it within the limit.
async fn read_body(
    intake: &Intake,
    req: Request<Incoming>,
    gzip: bool,
) -> Result<Bytes, (Reject, StatusCode, String)> {
    let max = intake.max_request_bytes;
    let reject =
        |reason: Reject, status: StatusCode, message: String| Err((reason, status, message));
    let oversize = |detail: &str| {
        reject(
            Reject::Oversize,
            StatusCode::PAYLOAD_TOO_LARGE,
            intake.oversize_message(detail),
        )
    };

    // Refuse a declared oversize body before reading any of it.
    let declared = header_str(req.headers(), header::CONTENT_LENGTH)
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > max as u64) {
        return oversize(&format!("Content-Length is {len}"));
    }
    let body = match tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), max).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return oversize("the body is longer");
        }
        Ok(Err(e)) => {
            return reject(
                Reject::Malformed,
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            )
        }
        Err(_) => {
            return reject(
                Reject::Malformed,
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        }
    };
    if !gzip {
        return Ok(body);
    }
    match gunzip(&body, max) {
        Ok(plain) => Ok(Bytes::from(plain)),
        Err(Gunzip::TooLarge) => oversize("the body is longer once decompressed"),
        Err(Gunzip::Corrupt(e)) => reject(
            Reject::Malformed,
            StatusCode::BAD_REQUEST,
            format!("the body is not valid gzip: {e}"),
        ),
    }
}

/// The response to an offer: success in the request's format, busy with a retry delay, or
/// shutting down.
fn answer(
    offered: Result<(), Reject>,
    intake: &Intake,
    signal: Signal,
    format: Format,
) -> Response<Full<Bytes>> {
    match offered {
        Ok(()) => {
            let mut r = Response::new(Full::new(success_body(signal, format)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            r
        }
        Err(Reject::Busy) => {
            let mut r = text(StatusCode::TOO_MANY_REQUESTS, intake.busy_message());
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER.as_secs()),
            );
            r
        }
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "kotel is shutting down; retry later".into(),
        ),
    }
}

/// Why a gzip body could not be decompressed.
pub(crate) enum Gunzip {
    TooLarge,
    Corrupt(std::io::Error),
}

/// Decompresses `body`, reading at most one byte past `max` so a gzip bomb costs no more.
pub(crate) fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, Gunzip> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(Gunzip::Corrupt)?;
    if plain.len() > max {
        return Err(Gunzip::TooLarge);
    }
    Ok(plain)
}

/// Decodes a request body; the error is a message for the client.
pub(crate) fn decode(signal: Signal, format: Format, body: &[u8]) -> Result<Batch, String> {
    let proto = |e: prost::DecodeError| e.to_string();
    let json = |e: serde_json::Error| e.to_string();
    match (signal, format) {
        (Signal::Traces, Format::Protobuf) => ExportTraceServiceRequest::decode(body)
            .map(Batch::Traces)
            .map_err(proto),
        (Signal::Metrics, Format::Protobuf) => ExportMetricsServiceRequest::decode(body)
            .map(Batch::Metrics)
            .map_err(proto),
        (Signal::Logs, Format::Protobuf) => ExportLogsServiceRequest::decode(body)
            .map(Batch::Logs)
            .map_err(proto),
        (Signal::Traces, Format::Json) => serde_json::from_slice(body)
            .map(Batch::Traces)
            .map_err(json),
        (Signal::Metrics, Format::Json) => serde_json::from_slice(body)
            .map(Batch::Metrics)
            .map_err(json),
        (Signal::Logs, Format::Json) => serde_json::from_slice(body).map(Batch::Logs).map_err(json),
        (Signal::Profiles, Format::Protobuf) => ExportProfilesServiceRequest::decode(body)
            .map(Batch::Profiles)
            .map_err(proto),
        (Signal::Profiles, Format::Json) => std::str::from_utf8(body)
            .map_err(|e| e.to_string())
            .and_then(|text| crate::export::profiles_json::from_json(text).map_err(json))
            .map(Batch::Profiles),
    }
}

/// The empty `Export*ServiceResponse` (no `partial_success`) in `format`: no bytes in protobuf,
/// `{}` in OTLP/JSON (serde would write `{"partialSuccess":null}`).
fn success_body(signal: Signal, format: Format) -> Bytes {
    match (signal, format) {
        (_, Format::Json) => Bytes::from_static(b"{}"),
        (Signal::Traces, Format::Protobuf) => {
            ExportTraceServiceResponse::default().encode_to_vec().into()
        }
        (Signal::Metrics, Format::Protobuf) => ExportMetricsServiceResponse::default()
            .encode_to_vec()
            .into(),
        (Signal::Logs, Format::Protobuf) => {
            ExportLogsServiceResponse::default().encode_to_vec().into()
        }
        (Signal::Profiles, Format::Protobuf) => ExportProfilesServiceResponse::default()
            .encode_to_vec()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::Ordering;

    use opentelemetry_proto::tonic::common::v1::any_value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    use super::super::{start, Received, ReceiverConfig, ReceiverHandle};
    use super::*;
    use crate::export::{classify_http, ExportError};
    use kotel_testkit::otlp::tagged;

    async fn receiver(
        max_request_bytes: usize,
        queue: usize,
    ) -> (ReceiverHandle, mpsc::Receiver<Received>, SocketAddr) {
        let cfg = ReceiverConfig {
            grpc: None,
            http: Some("127.0.0.1:0".parse().unwrap()),
            max_request_bytes,
            queue,
            ..ReceiverConfig::default()
        };
        let (tx, rx) = cfg.channel();
        let handle = start(&cfg, tx).await.unwrap();
        let addr = handle.http_addr().unwrap();
        (handle, rx, addr)
    }

    /// What came back for one request.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        /// The client side of the connection: what the receiver should report as the peer.
        local: SocketAddr,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// One request over a fresh connection, written by hand so every header is ours.
    async fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let local = s.local_addr().unwrap();
        let mut raw = format!("{head}\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes();
        raw.extend_from_slice(body);
        // The server may answer (413) and close before reading everything we send.
        let _ = s.write_all(&raw).await;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&buf)));
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Reply {
            status,
            headers,
            body: buf[split + 4..].to_vec(),
            local,
        }
    }

    async fn post(addr: SocketAddr, path: &str, headers: &[&str], body: &[u8]) -> Reply {
        let mut head = format!("POST {path} HTTP/1.1\r\nContent-Length: {}", body.len());
        for h in headers {
            head.push_str("\r\n");
            head.push_str(h);
        }
        request(addr, &head, body).await
    }

    const PROTO: &str = "Content-Type: application/x-protobuf";
    const JSON: &str = "Content-Type: application/json";
    const GZIP: &str = "Content-Encoding: gzip";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[tokio::test]
    async fn protobuf_for_each_signal_arrives_with_the_peer() {
        let (handle, mut rx, addr) = receiver(1 << 20, 8).await;
        let cases = [
            ("/v1/traces", Batch::Traces(tagged::traces(3, 2))),
            ("/v1/metrics", Batch::Metrics(tagged::metrics(1, 3))),
            ("/v1/logs", Batch::Logs(tagged::logs(1, 4))),
        ];
        for (path, batch) in cases {
            let body = match &batch {
                Batch::Traces(r) => r.encode_to_vec(),
                Batch::Metrics(r) => r.encode_to_vec(),
                Batch::Logs(r) => r.encode_to_vec(),
                Batch::Profiles(r) => r.encode_to_vec(),
            };
            let reply = post(addr, path, &[PROTO], &body).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            assert_eq!(reply.header("content-type"), Some("application/x-protobuf"));
            assert!(reply.body.is_empty(), "empty response: no partial_success");
            let got = rx.recv().await.unwrap();
            assert_eq!(got.peer(), Some(reply.local), "{path}");
            assert_eq!(got.into_batch(), batch);
        }
        let stats = handle.stats();
        assert_eq!(stats.traces.accepted_items.load(Ordering::Relaxed), 2);
        assert_eq!(
            stats.metrics.accepted_items.load(Ordering::Relaxed),
            4,
            "3 gauge points + 1 histogram point"
        );
        assert_eq!(stats.logs.accepted_items.load(Ordering::Relaxed), 4);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn gzip_bodies_are_decompressed() {
        let (handle, mut rx, addr) = receiver(1 << 20, 8).await;
        let req = tagged::padded_traces(5, 3, 2000);
        let reply = post(
            addr,
            "/v1/traces",
            &[PROTO, GZIP],
            &gzip(&req.encode_to_vec()),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(rx.recv().await.unwrap().into_batch(), Batch::Traces(req));

        let reply = post(addr, "/v1/traces", &[PROTO, GZIP], b"not gzip at all").await;
        assert_eq!(reply.status, 400);
        assert!(reply.text().contains("gzip"), "{}", reply.text());
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn otlp_json_with_hex_ids_is_decoded() {
        let (handle, mut rx, addr) = receiver(1 << 20, 8).await;
        let body = r#"{"resourceSpans":[{
            "resource":{"attributes":[{"key":"process.pid","value":{"intValue":"4242"}}]},
            "scopeSpans":[{"scope":{"name":"app"},"spans":[{
                "traceId":"5b8efff798038103d269b633813fc60c",
                "spanId":"eee19b7ec3c1b174",
                "parentSpanId":"eee19b7ec3c1b173",
                "name":"handle_request","kind":2,
                "startTimeUnixNano":"1544712660000000000",
                "endTimeUnixNano":"1544712661000000000",
                "unknownFieldsAreIgnored":true,
                "attributes":[{"key":"thread.id","value":{"intValue":"77"}}]}]}]}]}"#;
        let reply = post(addr, "/v1/traces", &[JSON], body.as_bytes()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.body, b"{}");
        let decoded: ExportTraceServiceResponse = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(decoded, ExportTraceServiceResponse::default());
        let Some(Received::Traces { request, peer }) = rx.recv().await else {
            panic!("traces");
        };
        assert_eq!(peer, Some(reply.local));
        let rs = &request.resource_spans[0];
        let pid = &rs.resource.as_ref().unwrap().attributes[0];
        assert_eq!(
            pid.value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(4242))
        );
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(
            span.trace_id,
            [
                0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
                0xc6, 0x0c
            ]
        );
        assert_eq!(
            span.span_id,
            [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert_eq!(
            span.parent_span_id,
            [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73]
        );
        assert_eq!(span.kind, 2);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);

        // What our serializer writes, we read back: metrics and logs, gzip too.
        let metrics = serde_json::to_vec(&tagged::metrics(1, 2)).unwrap();
        let reply = post(addr, "/v1/metrics", &[JSON, GZIP], &gzip(&metrics)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            rx.recv().await.unwrap().into_batch(),
            Batch::Metrics(tagged::metrics(1, 2))
        );
        let logs = serde_json::to_vec(&tagged::logs(1, 2)).unwrap();
        let reply = post(
            addr,
            "/v1/logs",
            &["Content-Type: application/json; charset=utf-8"],
            &logs,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            rx.recv().await.unwrap().into_batch(),
            Batch::Logs(tagged::logs(1, 2))
        );
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn malformed_input_is_400_and_serving_continues() {
        let (handle, mut rx, addr) = receiver(1 << 20, 8).await;
        let bad: [(&str, &[u8]); 4] = [
            (PROTO, &[0x0a, 100, 1, 2]),
            (JSON, b"{\"resourceSpans\": ["),
            (
                JSON,
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#,
            ),
            (JSON, b"[1, 2, 3]"),
        ];
        for (ctype, body) in bad {
            let reply = post(addr, "/v1/traces", &[ctype], body).await;
            assert_eq!(reply.status, 400, "{ctype} {body:?}");
            assert_eq!(
                reply.header("content-type"),
                Some("text/plain; charset=utf-8")
            );
            assert!(reply.text().contains("malformed"), "{}", reply.text());
        }
        assert_eq!(handle.stats().rejected_malformed.load(Ordering::Relaxed), 4);
        assert!(rx.try_recv().is_err());

        let ok = tagged::logs(1, 1).encode_to_vec();
        assert_eq!(post(addr, "/v1/logs", &[PROTO], &ok).await.status, 200);
        assert!(rx.recv().await.is_some());
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn wrong_path_method_and_type() {
        let (handle, _rx, addr) = receiver(1 << 20, 8).await;
        assert_eq!(post(addr, "/v1/spans", &[PROTO], b"").await.status, 404);
        let get = request(addr, "GET /v1/traces HTTP/1.1", b"").await;
        assert_eq!(get.status, 405);
        assert_eq!(get.header("allow"), Some("POST"));
        for ctype in ["Content-Type: text/plain", "Content-Type: application/grpc"] {
            assert_eq!(post(addr, "/v1/traces", &[ctype], b"{}").await.status, 415);
        }
        assert_eq!(post(addr, "/v1/traces", &[], b"{}").await.status, 415);
        let br = post(addr, "/v1/traces", &[PROTO, "Content-Encoding: br"], b"").await;
        assert_eq!(br.status, 415);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn oversize_is_413_declared_streamed_or_decompressed() {
        let (handle, mut rx, addr) = receiver(16 * 1024, 8).await;
        let big = tagged::padded_traces(1, 1, 64 * 1024).encode_to_vec();

        // Declared by Content-Length.
        let reply = post(addr, "/v1/traces", &[PROTO], &big).await;
        assert_eq!(reply.status, 413);
        assert!(reply.text().contains("16384"), "{}", reply.text());

        // Chunked: no length up front, the read stops at the cap.
        let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
        chunked.extend_from_slice(&big);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        let head = format!("POST /v1/traces HTTP/1.1\r\n{PROTO}\r\nTransfer-Encoding: chunked");
        assert_eq!(request(addr, &head, &chunked).await.status, 413);

        // Small on the wire, too large once decompressed.
        let bomb = gzip(&big);
        assert!(bomb.len() < 16 * 1024);
        let reply = post(addr, "/v1/traces", &[PROTO, GZIP], &bomb).await;
        assert_eq!(reply.status, 413);
        assert!(reply.text().contains("decompressed"), "{}", reply.text());

        assert_eq!(handle.stats().rejected_oversize.load(Ordering::Relaxed), 3);
        assert!(rx.try_recv().is_err());
        let ok = tagged::traces(1, 1).encode_to_vec();
        assert_eq!(post(addr, "/v1/traces", &[PROTO], &ok).await.status, 200);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn full_channel_is_429_with_retry_after() {
        let (handle, mut rx, addr) = receiver(1 << 20, 1).await;
        let body = tagged::traces(1, 1).encode_to_vec();
        assert_eq!(post(addr, "/v1/traces", &[PROTO], &body).await.status, 200);
        let busy = post(addr, "/v1/traces", &[PROTO], &body).await;
        assert_eq!(busy.status, 429);
        assert_eq!(busy.header("retry-after"), Some("1"));
        assert!(
            busy.text().contains("queue of 1 requests"),
            "{}",
            busy.text()
        );
        // Our own exporter, which follows the OTLP spec, reads it as "retry in 1 s".
        let e = classify_http(
            StatusCode::TOO_MANY_REQUESTS,
            busy.header("retry-after"),
            "",
        );
        assert!(matches!(
            e,
            ExportError::Retryable {
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(1)
        ));
        assert_eq!(handle.stats().rejected_busy.load(Ordering::Relaxed), 1);
        assert!(rx.recv().await.is_some());
        assert_eq!(post(addr, "/v1/traces", &[PROTO], &body).await.status, 200);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn flood_is_bounded_by_the_queue_and_serving_continues() {
        const N: usize = 60;
        const QUEUE: usize = 4;
        let (handle, mut rx, addr) = receiver(1 << 20, QUEUE).await;
        let mut calls = JoinSet::new();
        for i in 0..N {
            let body = tagged::padded_traces(i as u64, 2, 100).encode_to_vec();
            calls.spawn(async move { post(addr, "/v1/traces", &[PROTO], &body).await.status });
        }
        let (mut ok, mut busy) = (0, 0);
        while let Some(status) = calls.join_next().await {
            match status.unwrap() {
                200 => ok += 1,
                429 => busy += 1,
                other => panic!("unexpected status {other}"),
            }
        }
        let stats = handle.stats();
        let accepted = stats.traces.accepted_requests.load(Ordering::Relaxed) as usize;
        let refused = stats.rejected_busy.load(Ordering::Relaxed) as usize;
        assert_eq!(
            (ok, busy),
            (QUEUE, N - QUEUE),
            "queued ≤ capacity, rest refused"
        );
        assert_eq!((accepted, refused), (ok, busy));
        assert_eq!(rx.len(), QUEUE);

        while rx.try_recv().is_ok() {}
        let body = tagged::traces(99, 1).encode_to_vec();
        assert_eq!(post(addr, "/v1/traces", &[PROTO], &body).await.status, 200);
        assert!(rx.recv().await.is_some());
        handle.shutdown().await;
    }
}
