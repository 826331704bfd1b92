//! OTLP/gRPC receiver: the three OTLP collector services (traces, metrics, logs) on tonic,
//! gzip accepted, requests size-capped, bad input answered with the codes OTLP clients expect.
//!
//! tonic decodes the request before our handler runs, and answers bad input with its own
//! codes: `OUT_OF_RANGE` for a message over the size limit, `INTERNAL` for protobuf it cannot
//! parse. A small router in front of the generated servers turns those into
//! `RESOURCE_EXHAUSTED` (naming the limit) and `INVALID_ARGUMENT`, and counts them. The same
//! router checks the bearer token, when one is configured, before any decoding.
//!
//! With TLS, connections come from `kotel_tls::spawn_handshakes` (handshakes off the
//! accept loop, each within a deadline) and carry tonic's `TlsConnectInfo`, from which the
//! peer address is read just as from a plain TCP connection.

use crate::export::retry::rpc;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::http;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::codegen::Service;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Code;

use super::{Intake, ReceiverError, Reject, Transport, RETRY_AFTER};
use crate::export::{Batch, Signal};

/// Streams one HTTP/2 connection may carry at once.
const MAX_STREAMS: u32 = 64;
/// Longest a single call may take before the server gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A running gRPC server.
#[derive(Debug)]
pub(super) struct GrpcServer {
    pub(super) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl GrpcServer {
    /// Binds `addr` and serves until [`GrpcServer::shutdown`].
    pub(super) async fn start(
        addr: SocketAddr,
        intake: Arc<Intake>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<GrpcServer, ReceiverError> {
        let bind_err = |source| ReceiverError::Bind {
            protocol: "gRPC",
            addr,
            source,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let limit = intake.max_request_bytes;
        let svc = Handler(Arc::clone(&intake));
        let on_handshake_failure = {
            let intake = Arc::clone(&intake);
            move |peer, failure: kotel_tls::HandshakeFailure| {
                intake.handshake_failed(Transport::Grpc, peer, &failure)
            }
        };
        let router = Router {
            intake,
            traces: TraceServiceServer::new(svc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
            metrics: MetricsServiceServer::new(svc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
            logs: LogsServiceServer::new(svc)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .max_concurrent_streams(MAX_STREAMS)
            .timeout(CALL_TIMEOUT);
        let stopped = async {
            let _ = stopped.await;
        };
        let task = match tls {
            None => {
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                tokio::spawn(async move {
                    let served = server
                        .serve_with_incoming_shutdown(router, incoming, stopped)
                        .await;
                    if let Err(e) = served {
                        tracing::warn!(error = %e, "kotel.receiver.grpc_stopped");
                    }
                })
            }
            Some(config) => {
                let (conns, handshakes) = kotel_tls::spawn_handshakes(
                    listener,
                    config,
                    kotel_tls::HANDSHAKE_TIMEOUT,
                    on_handshake_failure,
                );
                let incoming = futures_util::stream::unfold(conns, |mut rx| async move {
                    let (stream, _) = rx.recv().await?;
                    Some((Ok::<_, std::io::Error>(stream), rx))
                });
                tokio::spawn(async move {
                    let served = server
                        .serve_with_incoming_shutdown(router, incoming, stopped)
                        .await;
                    handshakes.abort();
                    if let Err(e) = served {
                        tracing::warn!(error = %e, "kotel.receiver.grpc_stopped");
                    }
                })
            }
        };
        Ok(GrpcServer {
            addr: local,
            stop,
            task,
        })
    }

    /// Stops accepting, lets calls in flight finish for up to a second, then cuts them off.
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

/// The service implementations: hand the decoded request to the channel.
#[derive(Debug, Clone)]
struct Handler(Arc<Intake>);

impl Handler {
    fn offer(&self, batch: Batch, peer: Option<SocketAddr>) -> Result<(), tonic::Status> {
        self.0
            .offer(batch, peer, Transport::Grpc)
            .map_err(|reason| match reason {
                Reject::Busy => busy_status(&self.0.busy_message()),
                _ => tonic::Status::unavailable("kotel is shutting down; retry later"),
            })
    }
}

#[tonic::async_trait]
impl TraceService for Handler {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let peer = request.remote_addr();
        self.offer(Batch::Traces(request.into_inner()), peer)?;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Handler {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let peer = request.remote_addr();
        self.offer(Batch::Metrics(request.into_inner()), peer)?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Handler {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let peer = request.remote_addr();
        self.offer(Batch::Logs(request.into_inner()), peer)?;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo` of [`RETRY_AFTER`] in its details, which
/// OTLP clients take as "retry after this delay".
fn busy_status(message: &str) -> tonic::Status {
    let info = rpc::RetryInfo {
        retry_delay: Some(rpc::ProtoDuration {
            seconds: RETRY_AFTER.as_secs() as i64,
            nanos: RETRY_AFTER.subsec_nanos() as i32,
        }),
    };
    let details = rpc::Status {
        code: Code::ResourceExhausted as i32,
        message: message.to_string(),
        details: vec![rpc::Any {
            type_url: rpc::RETRY_INFO_TYPE_URL.into(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec();
    tonic::Status::with_details(Code::ResourceExhausted, message, details.into())
}

/// Routes by gRPC service path (tonic's router is not in our feature set) and rewrites tonic's
/// decode failures into OTLP's codes.
#[derive(Clone)]
struct Router {
    intake: Arc<Intake>,
    traces: TraceServiceServer<Handler>,
    metrics: MetricsServiceServer<Handler>,
    logs: LogsServiceServer<Handler>,
}

type RouterFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl Service<http::Request<tonic::body::Body>> for Router {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = RouterFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> RouterFuture {
        let ext = req.extensions();
        let peer = ext
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .or_else(|| {
                ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|t| t.get_ref().remote_addr())
            });
        let path = req.uri().path();
        let signal = if path.starts_with("/opentelemetry.proto.collector.trace.v1.TraceService/") {
            Signal::Traces
        } else if path.starts_with("/opentelemetry.proto.collector.metrics.v1.MetricsService/") {
            Signal::Metrics
        } else if path.starts_with("/opentelemetry.proto.collector.logs.v1.LogsService/") {
            Signal::Logs
        } else {
            return Box::pin(async {
                Ok(tonic::Status::unimplemented(
                    "no such service: kotel receives OTLP traces, metrics and logs",
                )
                .into_http())
            });
        };
        let authorization = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes);
        if !self
            .intake
            .authorized(authorization, Transport::Grpc, Some(signal), peer)
        {
            return Box::pin(async {
                Ok(
                    tonic::Status::unauthenticated(super::auth::UNAUTHENTICATED_MESSAGE)
                        .into_http(),
                )
            });
        }
        let inner: RouterFuture = match signal {
            Signal::Traces => Box::pin(self.traces.call(req)),
            Signal::Metrics => Box::pin(self.metrics.call(req)),
            Signal::Logs => Box::pin(self.logs.call(req)),
            Signal::Profiles => Box::pin(async {
                Ok(tonic::Status::unimplemented("kotel does not receive profiles").into_http())
            }),
        };
        let intake = Arc::clone(&self.intake);
        Box::pin(async move {
            let response = inner.await?;
            Ok(rewrite_decode_failure(response, &intake, signal, peer))
        })
    }
}

/// Turns tonic's answers to requests it could not decode into OTLP's codes and counts them;
/// every other response passes unchanged. tonic puts the `Status` of a failed call in the
/// response's extensions.
fn rewrite_decode_failure(
    response: http::Response<tonic::body::Body>,
    intake: &Intake,
    signal: Signal,
    peer: Option<SocketAddr>,
) -> http::Response<tonic::body::Body> {
    let Some(status) = response.extensions().get::<tonic::Status>() else {
        return response;
    };
    let message = status.message();
    let (reason, rewritten) = match status.code() {
        // "decoded message length too large" (before decompression) and "size limit ...
        // exceeded while decompressing" (after).
        Code::OutOfRange if message.contains("too large") => (
            Reject::Oversize,
            tonic::Status::resource_exhausted(intake.oversize_message(message)),
        ),
        Code::ResourceExhausted if message.starts_with("Error decompressing") => (
            Reject::Oversize,
            tonic::Status::resource_exhausted(intake.oversize_message(message)),
        ),
        // Unparseable protobuf, corrupt gzip, a truncated frame: the handler itself never
        // answers INTERNAL, so this is the client's input.
        Code::Internal => (
            Reject::Malformed,
            tonic::Status::invalid_argument(format!(
                "malformed OTLP/protobuf {signal} request: {message}"
            )),
        ),
        _ => return response,
    };
    intake.reject(reason, Transport::Grpc, Some(signal), peer, message);
    rewritten.into_http()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use bytes::{Buf, BufMut};
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use tokio::sync::mpsc;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::transport::Channel;

    use super::super::{start, Received, ReceiverConfig, ReceiverHandle};
    use super::*;
    use crate::export::{classify_grpc, ExportError};
    use kotel_testkit::otlp::tagged;

    async fn receiver(
        max_request_bytes: usize,
        queue: usize,
    ) -> (ReceiverHandle, mpsc::Receiver<Received>, Channel) {
        let cfg = ReceiverConfig {
            grpc: Some("127.0.0.1:0".parse().unwrap()),
            http: None,
            max_request_bytes,
            queue,
            ..ReceiverConfig::default()
        };
        let (tx, rx) = cfg.channel();
        let handle = start(&cfg, tx).await.unwrap();
        let addr = handle.grpc_addr().unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        (handle, rx, channel)
    }

    /// Sends bytes as they are, so that a test can send what no generated client would.
    #[derive(Clone, Copy)]
    struct Raw;

    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }

    async fn send_raw(channel: Channel, path: &'static str, body: Vec<u8>) -> tonic::Status {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        grpc.unary(
            tonic::Request::new(body),
            http::uri::PathAndQuery::from_static(path),
            Raw,
        )
        .await
        .expect_err("the receiver must refuse this")
    }

    #[tokio::test]
    async fn three_signals_arrive_with_the_peer() {
        let (handle, mut rx, channel) = receiver(1 << 20, 8).await;
        let server = handle.grpc_addr().unwrap();
        let r = TraceServiceClient::new(channel.clone())
            .export(tagged::traces(7, 3))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r,
            ExportTraceServiceResponse::default(),
            "no partial_success"
        );
        MetricsServiceClient::new(channel.clone())
            .export(tagged::metrics(1, 4))
            .await
            .unwrap();
        LogsServiceClient::new(channel)
            .export(tagged::logs(1, 5))
            .await
            .unwrap();

        let mut peers = Vec::new();
        let Some(Received::Traces { request, peer }) = rx.recv().await else {
            panic!("traces first");
        };
        assert_eq!(request, tagged::traces(7, 3));
        peers.push(peer);
        let Some(Received::Metrics { request, peer }) = rx.recv().await else {
            panic!("then metrics");
        };
        assert_eq!(request, tagged::metrics(1, 4));
        peers.push(peer);
        let Some(Received::Logs { request, peer }) = rx.recv().await else {
            panic!("then logs");
        };
        assert_eq!(request, tagged::logs(1, 5));
        peers.push(peer);
        // One channel, one connection: the same client address each time, not the server's.
        let peer = peers[0].expect("peer address known");
        assert!(peers.iter().all(|p| *p == Some(peer)), "{peers:?}");
        assert!(peer.ip().is_loopback() && peer.port() != 0 && peer != server);

        let stats = handle.stats();
        let counts = |s: Signal| {
            let c = stats.signal(s);
            (
                c.accepted_requests.load(Ordering::Relaxed),
                c.accepted_items.load(Ordering::Relaxed),
            )
        };
        assert_eq!(counts(Signal::Traces), (1, 3));
        assert_eq!(
            counts(Signal::Metrics),
            (1, 5),
            "4 gauge points + 1 histogram point"
        );
        assert_eq!(counts(Signal::Logs), (1, 5));
        assert_eq!(stats.rejected(), 0);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn gzip_requests_are_accepted() {
        let (handle, mut rx, channel) = receiver(1 << 20, 8).await;
        TraceServiceClient::new(channel)
            .send_compressed(CompressionEncoding::Gzip)
            .export(tagged::padded_traces(1, 2, 5000))
            .await
            .unwrap();
        let got = rx.recv().await.unwrap();
        assert_eq!(
            got.into_batch(),
            Batch::Traces(tagged::padded_traces(1, 2, 5000))
        );
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn oversize_is_resource_exhausted_naming_the_limit() {
        let (handle, mut rx, channel) = receiver(16 * 1024, 8).await;
        let big = tagged::padded_traces(1, 1, 64 * 1024);
        // Plain, and gzip that is small on the wire but too large once decompressed.
        for gzip in [false, true] {
            let mut client = TraceServiceClient::new(channel.clone());
            if gzip {
                client = client.send_compressed(CompressionEncoding::Gzip);
            }
            let err = client.export(big.clone()).await.expect_err("oversize");
            assert_eq!(err.code(), Code::ResourceExhausted, "gzip {gzip}: {err:?}");
            assert!(err.message().contains("16384"), "{}", err.message());
        }
        let stats = handle.stats();
        assert_eq!(stats.rejected_oversize.load(Ordering::Relaxed), 2);
        assert!(rx.try_recv().is_err(), "nothing oversize is queued");

        // Still serving.
        TraceServiceClient::new(channel)
            .export(tagged::traces(1, 1))
            .await
            .unwrap();
        assert!(rx.recv().await.is_some());
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn malformed_protobuf_is_invalid_argument() {
        let (handle, mut rx, channel) = receiver(1 << 20, 8).await;
        for path in [
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        ] {
            // Field 1, length-delimited, claiming 100 bytes that are not there.
            let err = send_raw(channel.clone(), path, vec![0x0a, 100, 1, 2]).await;
            assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
            assert!(err.message().contains("malformed"), "{}", err.message());
        }
        let err = send_raw(channel.clone(), "/nope.Service/Export", vec![]).await;
        assert_eq!(err.code(), Code::Unimplemented);
        assert_eq!(handle.stats().rejected_malformed.load(Ordering::Relaxed), 3);
        assert!(rx.try_recv().is_err());

        LogsServiceClient::new(channel)
            .export(tagged::logs(1, 1))
            .await
            .unwrap();
        assert!(rx.recv().await.is_some());
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn full_channel_is_resource_exhausted_with_retry_info() {
        let (handle, mut rx, channel) = receiver(1 << 20, 1).await;
        let mut client = TraceServiceClient::new(channel);
        client.export(tagged::traces(1, 1)).await.unwrap();
        let err = client.export(tagged::traces(2, 1)).await.expect_err("busy");
        assert_eq!(err.code(), Code::ResourceExhausted);
        // Our own exporter, which follows the OTLP spec, reads it as "retry in 1 s".
        assert_eq!(
            classify_grpc(&err),
            ExportError::Retryable {
                reason: format!("gRPC status ResourceExhausted: {}", err.message()),
                retry_after: Some(Duration::from_secs(1)),
            }
        );
        assert_eq!(handle.stats().rejected_busy.load(Ordering::Relaxed), 1);
        assert!(rx.recv().await.is_some());
        client.export(tagged::traces(3, 1)).await.unwrap();
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn flood_is_bounded_by_the_queue_and_serving_continues() {
        const N: usize = 60;
        const QUEUE: usize = 4;
        let (handle, mut rx, channel) = receiver(1 << 20, QUEUE).await;
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..N {
            let mut client = TraceServiceClient::new(channel.clone());
            calls
                .spawn(async move { client.export(tagged::padded_traces(i as u64, 2, 100)).await });
        }
        let (mut ok, mut busy) = (0, 0);
        while let Some(done) = calls.join_next().await {
            match done.unwrap() {
                Ok(_) => ok += 1,
                Err(s) if s.code() == Code::ResourceExhausted => busy += 1,
                Err(s) => panic!("unexpected {s:?}"),
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

        // The consumer drains; the next request goes through.
        while rx.try_recv().is_ok() {}
        TraceServiceClient::new(channel)
            .export(tagged::traces(99, 1))
            .await
            .unwrap();
        assert!(matches!(rx.recv().await, Some(Received::Traces { .. })));
        handle.shutdown().await;
    }
}
