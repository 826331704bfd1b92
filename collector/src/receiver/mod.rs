//! Receiver: an OTLP endpoint in the agent (gRPC on 4317, HTTP protobuf and JSON on 4318) that
//! takes applications' traces, metrics and logs and hands them, with the sender's address, to a
//! bounded channel.
//!
//! The pieces, by role:
//!
//! - [`start`] binds the servers a [`ReceiverConfig`] asks for and returns a [`ReceiverHandle`]
//!   (bound addresses, [`ReceiverStats`], `shutdown`).
//! - Each accepted request becomes one [`Received`] on the caller's
//!   `tokio::sync::mpsc::Sender`, offered with `try_send`: when the channel is full the client
//!   is told to back off (gRPC `RESOURCE_EXHAUSTED` with a `RetryInfo`, HTTP 429 with
//!   `Retry-After`) and the refusal is counted, so a flood costs at most `queue` requests of
//!   memory.
//! - Bad input never reaches the channel: malformed requests get `INVALID_ARGUMENT` / 400,
//!   requests larger than [`ReceiverConfig::max_request_bytes`] (after decompression) get
//!   `RESOURCE_EXHAUSTED` / 413, and the servers keep serving.
//!
//! - Optional TLS on both listeners ([`ReceiverConfig::tls`], mutual TLS with a client CA):
//!   handshakes run off the accept loop within a deadline (see `kotel_tls`), and a
//!   failed handshake (wrong CA, expired or missing client certificate, a plaintext client)
//!   is counted as `rejected_handshake`. An optional bearer token ([`auth`]) is checked on
//!   every request before anything is decoded: gRPC `UNAUTHENTICATED`, HTTP 401.
//!
//! Every refusal increments a counter in [`ReceiverStats`] and logs `kotel.receiver.rejected`
//! (rate-limited). Tokens are never logged.

pub mod auth;
mod grpc;
pub(crate) mod http;

use std::net::SocketAddr;

pub use crate::link::resolve::PeerCache;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::mpsc;

use crate::export::{Batch, Signal};
use crate::telemetry::RateLimit;

/// How long a client is asked to wait when the channel is full.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One OTLP export request as received, with the address of the connection it came on.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// Spans.
    Traces {
        /// The request, unchanged.
        request: ExportTraceServiceRequest,
        /// The TCP peer of the sending connection (to find the sending process), when known.
        peer: Option<SocketAddr>,
    },
    /// Metrics.
    Metrics {
        /// The request, unchanged.
        request: ExportMetricsServiceRequest,
        /// The TCP peer of the sending connection, when known.
        peer: Option<SocketAddr>,
    },
    /// Log records.
    Logs {
        /// The request, unchanged.
        request: ExportLogsServiceRequest,
        /// The TCP peer of the sending connection, when known.
        peer: Option<SocketAddr>,
    },
    /// Profiles. The receiver's servers do not take them (they answer UNIMPLEMENTED / 404);
    /// the variant keeps [`Batch`] and `Received` one to one.
    Profiles {
        /// The request, unchanged.
        request: ExportProfilesServiceRequest,
        /// The TCP peer of the sending connection, when known.
        peer: Option<SocketAddr>,
    },
}

impl Received {
    /// Wraps an exporter [`Batch`] with the peer it came from.
    pub fn new(batch: Batch, peer: Option<SocketAddr>) -> Received {
        match batch {
            Batch::Traces(request) => Received::Traces { request, peer },
            Batch::Metrics(request) => Received::Metrics { request, peer },
            Batch::Logs(request) => Received::Logs { request, peer },
            Batch::Profiles(request) => Received::Profiles { request, peer },
        }
    }

    /// Which signal the request carries.
    pub fn signal(&self) -> Signal {
        match self {
            Received::Traces { .. } => Signal::Traces,
            Received::Metrics { .. } => Signal::Metrics,
            Received::Logs { .. } => Signal::Logs,
            Received::Profiles { .. } => Signal::Profiles,
        }
    }

    /// The TCP peer of the sending connection, when known.
    pub fn peer(&self) -> Option<SocketAddr> {
        match self {
            Received::Traces { peer, .. }
            | Received::Metrics { peer, .. }
            | Received::Logs { peer, .. }
            | Received::Profiles { peer, .. } => *peer,
        }
    }

    /// The request as an exporter [`Batch`], to forward upstream unchanged.
    pub fn into_batch(self) -> Batch {
        match self {
            Received::Traces { request, .. } => Batch::Traces(request),
            Received::Metrics { request, .. } => Batch::Metrics(request),
            Received::Logs { request, .. } => Batch::Logs(request),
            Received::Profiles { request, .. } => Batch::Profiles(request),
        }
    }
}

/// Where the receiver listens, how much it takes, and whom it lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// OTLP/gRPC listen address; `None` turns the gRPC server off. Default `127.0.0.1:4317`.
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP (protobuf and JSON) listen address; `None` turns it off. Default
    /// `127.0.0.1:4318`.
    pub http: Option<SocketAddr>,
    /// Largest request accepted, in bytes after decompression. Default 4 MiB.
    pub max_request_bytes: usize,
    /// Capacity of the channel, in requests, when it is made with [`ReceiverConfig::channel`]
    /// (the channel passed to [`start`] is what bounds memory). Default 256.
    pub queue: usize,
    /// TLS on both listeners (mutual TLS when a client CA is given); `None`: plaintext.
    pub tls: Option<kotel_tls::ServerTlsFiles>,
    /// The bearer token every request must carry; `None`: no authentication.
    pub bearer_token: Option<auth::BearerToken>,
}

impl Default for ReceiverConfig {
    fn default() -> ReceiverConfig {
        ReceiverConfig {
            grpc: Some(SocketAddr::from(([127, 0, 0, 1], 4317))),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 4318))),
            max_request_bytes: 4 * 1024 * 1024,
            queue: 256,
            tls: None,
            bearer_token: None,
        }
    }
}

impl ReceiverConfig {
    /// The receiver `[receiver]` describes, with its token loaded (from the file, else from
    /// `KOTEL_RECEIVER_BEARER_TOKEN` through `env`) and its TLS files checked, so that a bad
    /// file stops the agent before anything is loaded or bound. Call after
    /// [`crate::config::Config::validate`].
    pub fn from_settings(
        settings: &crate::config::ReceiverSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ReceiverConfig, ReceiverError> {
        let listen = |a: &str| {
            if a == "none" {
                None
            } else {
                a.parse::<SocketAddr>().ok()
            }
        };
        let tls = settings.tls.files();
        if let Some(files) = &tls {
            kotel_tls::server_config(files, &[]).map_err(|source| ReceiverError::Tls { source })?;
        }
        Ok(ReceiverConfig {
            grpc: listen(&settings.grpc),
            http: listen(&settings.http),
            max_request_bytes: settings.max_request_bytes,
            tls,
            bearer_token: auth::BearerToken::load(&settings.bearer_token_file, env)?,
            ..ReceiverConfig::default()
        })
    }

    /// A channel sized as [`ReceiverConfig::queue`] says (at least 1), to pass to [`start`].
    pub fn channel(&self) -> (mpsc::Sender<Received>, mpsc::Receiver<Received>) {
        mpsc::channel(self.queue.max(1))
    }
}

/// Counters for one signal.
#[derive(Debug, Default)]
pub struct SignalCounters {
    /// Requests handed to the channel.
    pub accepted_requests: AtomicU64,
    /// Items (spans, metric data points, log records) in those requests.
    pub accepted_items: AtomicU64,
}

/// What the receiver accepted and refused. Relaxed atomics, readable from any thread.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    /// Accepted traces.
    pub traces: SignalCounters,
    /// Accepted metrics.
    pub metrics: SignalCounters,
    /// Accepted logs.
    pub logs: SignalCounters,
    /// Accepted profiles (always zero: the receiver does not take them).
    pub profiles: SignalCounters,
    /// Requests refused because they could not be decoded (bad protobuf, JSON or gzip).
    pub rejected_malformed: AtomicU64,
    /// Requests refused because they exceeded `max_request_bytes`.
    pub rejected_oversize: AtomicU64,
    /// Requests refused because the channel was full (the client was told to retry).
    pub rejected_busy: AtomicU64,
    /// Requests refused because the channel's consumer had gone (the agent is stopping).
    pub rejected_closed: AtomicU64,
    /// Requests refused because they lacked the bearer token, or carried a wrong one.
    pub rejected_unauthenticated: AtomicU64,
    /// Connections refused because their TLS handshake failed (untrusted or expired client
    /// certificate, none when one is required, a plaintext client, a timeout).
    pub rejected_handshake: AtomicU64,
}

impl ReceiverStats {
    /// The counters of `signal`.
    pub fn signal(&self, signal: Signal) -> &SignalCounters {
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
            Signal::Profiles => &self.profiles,
        }
    }

    /// Items of `signal` accepted so far.
    pub fn accepted_items(&self, signal: Signal) -> u64 {
        self.signal(signal).accepted_items.load(Ordering::Relaxed)
    }

    /// The counter of refusals for `reason`.
    fn rejected_counter(&self, reason: Reject) -> &AtomicU64 {
        match reason {
            Reject::Malformed => &self.rejected_malformed,
            Reject::Oversize => &self.rejected_oversize,
            Reject::Busy => &self.rejected_busy,
            Reject::Closed => &self.rejected_closed,
            Reject::Unauthenticated => &self.rejected_unauthenticated,
            Reject::Handshake => &self.rejected_handshake,
        }
    }

    /// Refusals for `reason` so far.
    pub fn rejected_for(&self, reason: Reject) -> u64 {
        self.rejected_counter(reason).load(Ordering::Relaxed)
    }

    /// Total requests refused, for any reason.
    pub fn rejected(&self) -> u64 {
        [
            &self.rejected_malformed,
            &self.rejected_oversize,
            &self.rejected_busy,
            &self.rejected_closed,
            &self.rejected_unauthenticated,
            &self.rejected_handshake,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// A listen address could not be bound.
    #[error(
        "cannot listen for OTLP/{protocol} on {addr}: {source}; is another collector or agent \
         already using it? Pick another address, or `none` to turn this receiver off"
    )]
    Bind {
        /// `gRPC` or `HTTP`.
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The bearer token could not be loaded (the message never carries the token).
    #[error(transparent)]
    Token(#[from] auth::TokenError),
    /// A TLS file could not be used; names the config field and the file.
    #[error("receiver.tls.{}: {source}", .source.file().config_key())]
    Tls {
        /// What was wrong.
        #[source]
        source: kotel_tls::TlsError,
    },
}

/// A running receiver. Dropping it without [`ReceiverHandle::shutdown`] leaves the servers
/// running until the runtime stops.
#[derive(Debug)]
pub struct ReceiverHandle {
    grpc: Option<grpc::GrpcServer>,
    http: Option<http::HttpServer>,
    stats: Arc<ReceiverStats>,
}

impl ReceiverHandle {
    /// Where the gRPC server listens (port 0 in the config is resolved here).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(|s| s.addr)
    }

    /// Where the HTTP server listens.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|s| s.addr)
    }

    /// The receiver's counters.
    pub fn stats(&self) -> Arc<ReceiverStats> {
        Arc::clone(&self.stats)
    }

    /// Stops listening and closes every connection; requests in flight are answered or cut
    /// off within about a second.
    pub async fn shutdown(self) {
        if let Some(s) = self.grpc {
            s.shutdown().await;
        }
        if let Some(s) = self.http {
            s.shutdown().await;
        }
    }
}

/// Binds the servers `cfg` asks for and starts serving on the current tokio runtime. Accepted
/// requests go to `tx` (see [`ReceiverConfig::channel`]); the caller owns the other end and
/// should forward what it reads promptly, since a full channel makes clients back off.
pub async fn start(
    cfg: &ReceiverConfig,
    tx: mpsc::Sender<Received>,
) -> Result<ReceiverHandle, ReceiverError> {
    start_with_peers(cfg, tx, None).await
}

/// [`start`], and before a request is answered, its connection's owner is looked up in
/// `peers` while the sending process surely still exists (a short-lived application may
/// exit right after its last export is acknowledged).
pub async fn start_with_peers(
    cfg: &ReceiverConfig,
    tx: mpsc::Sender<Received>,
    peers: Option<Arc<PeerCache>>,
) -> Result<ReceiverHandle, ReceiverError> {
    // Both TLS configurations are built before anything listens: a bad file stops startup.
    let tls = |alpn: &[u8]| {
        cfg.tls
            .as_ref()
            .map(|files| kotel_tls::server_config(files, &[alpn]))
            .transpose()
            .map_err(|source| ReceiverError::Tls { source })
    };
    let (grpc_tls, http_tls) = (tls(kotel_tls::ALPN_H2)?, tls(kotel_tls::ALPN_HTTP1)?);
    let stats = Arc::new(ReceiverStats::default());
    let intake = Arc::new(Intake {
        tx,
        stats: Arc::clone(&stats),
        max_request_bytes: cfg.max_request_bytes,
        logs: std::array::from_fn(|_| RateLimit::new(Duration::from_secs(1))),
        peers,
        token: cfg.bearer_token.clone(),
    });
    let grpc = match cfg.grpc {
        Some(addr) => Some(grpc::GrpcServer::start(addr, Arc::clone(&intake), grpc_tls).await?),
        None => None,
    };
    let http = match cfg.http {
        Some(addr) => match http::HttpServer::start(addr, Arc::clone(&intake), http_tls).await {
            Ok(s) => Some(s),
            Err(e) => {
                if let Some(g) = grpc {
                    g.shutdown().await;
                }
                return Err(e);
            }
        },
        None => None,
    };
    let security = match &cfg.tls {
        None => "plaintext",
        Some(f) if f.client_ca.is_some() => "mtls",
        Some(_) => "tls",
    };
    let token = cfg.bearer_token.is_some();
    if let Some(s) = &grpc {
        tracing::info!(addr = %s.addr, security, bearer_token = token, "kotel.receiver.grpc_listening");
    }
    if let Some(s) = &http {
        tracing::info!(addr = %s.addr, security, bearer_token = token, "kotel.receiver.http_listening");
    }
    Ok(ReceiverHandle { grpc, http, stats })
}

/// Which server a request came through, for logs.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Grpc,
    Http,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// Why a request (or, for [`Reject::Handshake`], a connection) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// It could not be decoded (bad protobuf, JSON or gzip).
    Malformed,
    /// It exceeded `max_request_bytes`.
    Oversize,
    /// The channel to the agent was full; the client was told to retry.
    Busy,
    /// The agent is stopping.
    Closed,
    /// The bearer token was missing or wrong.
    Unauthenticated,
    /// The TLS handshake failed.
    Handshake,
}

impl Reject {
    /// Every reason, in `Reject::index` order.
    pub const ALL: [Reject; 6] = [
        Reject::Malformed,
        Reject::Oversize,
        Reject::Busy,
        Reject::Closed,
        Reject::Unauthenticated,
        Reject::Handshake,
    ];

    /// Its key in `summary.json`, next to the `receiver_rejected` total.
    pub fn summary_key(self) -> &'static str {
        match self {
            Reject::Malformed => "receiver_rejected_malformed",
            Reject::Oversize => "receiver_rejected_oversize",
            Reject::Busy => "receiver_rejected_busy",
            Reject::Closed => "receiver_rejected_closed",
            Reject::Unauthenticated => "receiver_rejected_unauthenticated",
            Reject::Handshake => "receiver_rejected_tls_handshake",
        }
    }

    /// The stable name used in logs and as the metrics' reason label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::Oversize => "oversize",
            Reject::Busy => "busy",
            Reject::Closed => "closed",
            Reject::Unauthenticated => "unauthenticated",
            Reject::Handshake => "tls_handshake",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What both servers share: the channel, the counters and the limits.
#[derive(Debug)]
struct Intake {
    tx: mpsc::Sender<Received>,
    stats: Arc<ReceiverStats>,
    max_request_bytes: usize,
    logs: [RateLimit; 6],
    peers: Option<Arc<PeerCache>>,
    token: Option<auth::BearerToken>,
}

impl Intake {
    /// Whether a request with this `authorization` value may come in; a refusal is counted
    /// and logged (without the value).
    fn authorized(
        &self,
        authorization: Option<&[u8]>,
        transport: Transport,
        signal: Option<Signal>,
        peer: Option<SocketAddr>,
    ) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        if token.accepts(authorization) {
            return true;
        }
        let why = if authorization.is_some() {
            "wrong bearer token"
        } else {
            "no authorization header"
        };
        self.reject(Reject::Unauthenticated, transport, signal, peer, why);
        false
    }

    /// Counts a failed TLS handshake and logs it (rate-limited).
    fn handshake_failed(
        &self,
        transport: Transport,
        peer: SocketAddr,
        failure: &kotel_tls::HandshakeFailure,
    ) {
        let counter = self.stats.rejected_counter(Reject::Handshake);
        self.logs[Reject::Handshake.index()].count_and_log(counter, 1, |suppressed| {
            tracing::warn!(
                reason = failure.kind,
                transport = transport.as_str(),
                peer = %peer,
                error = %failure.message,
                suppressed,
                "kotel.receiver.tls_handshake_failed"
            )
        });
    }

    /// Offers a decoded request to the channel without waiting. On success the request is
    /// counted as accepted; a refusal is counted and logged.
    fn offer(
        &self,
        batch: Batch,
        peer: Option<SocketAddr>,
        transport: Transport,
    ) -> Result<(), Reject> {
        let signal = batch.signal();
        let items = batch.items();
        if let (Some(peers), Some(addr), Signal::Traces) = (&self.peers, peer, signal) {
            // A /proc scan on a cache miss: let the runtime move other tasks off this thread.
            let multi = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            if multi {
                tokio::task::block_in_place(|| peers.resolve(addr));
            } else {
                peers.resolve(addr);
            }
        }
        match self.tx.try_send(Received::new(batch, peer)) {
            Ok(()) => {
                let c = self.stats.signal(signal);
                c.accepted_requests.fetch_add(1, Ordering::Relaxed);
                c.accepted_items.fetch_add(items, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.reject(Reject::Busy, transport, Some(signal), peer, "queue full");
                Err(Reject::Busy)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.reject(
                    Reject::Closed,
                    transport,
                    Some(signal),
                    peer,
                    "agent stopping",
                );
                Err(Reject::Closed)
            }
        }
    }

    /// Counts a refusal and logs `kotel.receiver.rejected`, at most once a second per reason.
    fn reject(
        &self,
        reason: Reject,
        transport: Transport,
        signal: Option<Signal>,
        peer: Option<SocketAddr>,
        why: &str,
    ) {
        let counter = self.stats.rejected_counter(reason);
        self.logs[reason.index()].count_and_log(counter, 1, |suppressed| {
            tracing::warn!(
                reason = reason.as_str(),
                transport = transport.as_str(),
                signal = signal.map_or("unknown", Signal::as_str),
                peer = ?peer,
                error = why,
                suppressed,
                "kotel.receiver.rejected"
            )
        });
    }

    /// The message sent with a busy refusal.
    fn busy_message(&self) -> String {
        format!(
            "kotel receiver busy: its queue of {} requests is full; retry after {} s",
            self.tx.max_capacity(),
            RETRY_AFTER.as_secs()
        )
    }

    /// The message sent with an oversize refusal.
    fn oversize_message(&self, detail: &str) -> String {
        format!(
            "request exceeds the kotel receiver's limit of {} bytes (max_request_bytes, after \
             decompression): {detail}",
            self.max_request_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use kotel_testkit::otlp::tagged;

    use super::*;

    #[test]
    fn defaults_are_the_otlp_ports_on_loopback() {
        let c = ReceiverConfig::default();
        assert_eq!(c.grpc, Some("127.0.0.1:4317".parse().unwrap()));
        assert_eq!(c.http, Some("127.0.0.1:4318".parse().unwrap()));
        assert_eq!(c.max_request_bytes, 4 << 20);
        assert_eq!(c.queue, 256);
    }

    #[tokio::test]
    async fn binding_a_used_address_names_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        for (grpc, http) in [(Some(addr), None), (None, Some(addr))] {
            let cfg = ReceiverConfig {
                grpc,
                http,
                ..ReceiverConfig::default()
            };
            let (tx, _rx) = cfg.channel();
            let err = start(&cfg, tx).await.expect_err("address in use");
            assert!(err.to_string().contains(&addr.to_string()), "{err}");
        }
    }

    #[tokio::test]
    async fn consumer_gone_is_unavailable_and_counted() {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let cfg = ReceiverConfig {
            grpc: Some("127.0.0.1:0".parse().unwrap()),
            http: Some("127.0.0.1:0".parse().unwrap()),
            ..ReceiverConfig::default()
        };
        let (tx, rx) = cfg.channel();
        let handle = start(&cfg, tx).await.unwrap();
        drop(rx);

        let grpc = handle.grpc_addr().unwrap();
        let err = TraceServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap()
            .export(tagged::traces(1, 1))
            .await
            .expect_err("nobody reads");
        assert_eq!(err.code(), tonic::Code::Unavailable);

        let mut s = tokio::net::TcpStream::connect(handle.http_addr().unwrap())
            .await
            .unwrap();
        s.write_all(
            b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
              Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        .await
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");

        assert_eq!(handle.stats().rejected_closed.load(Ordering::Relaxed), 2);
        assert_eq!(handle.stats().rejected(), 2);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn a_bearer_token_is_required_on_both_listeners() {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let cfg = ReceiverConfig {
            grpc: Some("127.0.0.1:0".parse().unwrap()),
            http: Some("127.0.0.1:0".parse().unwrap()),
            bearer_token: Some(auth::BearerToken::new("t0ken", "test").unwrap()),
            ..ReceiverConfig::default()
        };
        let (tx, mut rx) = cfg.channel();
        let handle = start(&cfg, tx).await.unwrap();
        let grpc = format!("http://{}", handle.grpc_addr().unwrap());
        let mut client = TraceServiceClient::connect(grpc).await.unwrap();
        for token in [None, Some("Bearer t0ken-not")] {
            let mut req = tonic::Request::new(tagged::traces(1, 1));
            if let Some(t) = token {
                req.metadata_mut()
                    .insert("authorization", t.parse().unwrap());
            }
            let err = client.export(req).await.expect_err("no or wrong token");
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
            assert!(!err.message().contains("t0ken"), "{}", err.message());
        }
        let mut req = tonic::Request::new(tagged::traces(2, 1));
        req.metadata_mut()
            .insert("authorization", "Bearer t0ken".parse().unwrap());
        client.export(req).await.unwrap();

        let http = handle.http_addr().unwrap();
        let post = |auth: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
            let req = format!(
                "POST /v1/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).await.unwrap();
            reply
        };
        let reply = post("").await;
        assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
        assert!(reply
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"));
        assert!(post("Authorization: Bearer nope\r\n")
            .await
            .starts_with("HTTP/1.1 401"));
        assert!(post("Authorization: Bearer t0ken\r\n")
            .await
            .starts_with("HTTP/1.1 200"));

        let stats = handle.stats();
        assert_eq!(stats.rejected_unauthenticated.load(Ordering::Relaxed), 4);
        assert_eq!(stats.traces.accepted_requests.load(Ordering::Relaxed), 2);
        assert_eq!(rx.recv().await.unwrap().signal(), Signal::Traces);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn both_off_starts_nothing() {
        let cfg = ReceiverConfig {
            grpc: None,
            http: None,
            ..ReceiverConfig::default()
        };
        let (tx, _rx) = cfg.channel();
        let h = start(&cfg, tx).await.unwrap();
        assert_eq!((h.grpc_addr(), h.http_addr()), (None, None));
        h.shutdown().await;
    }
}
