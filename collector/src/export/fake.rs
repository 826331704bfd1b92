//! Test-only fake OTLP collectors (gRPC with tonic, HTTP with hyper) on 127.0.0.1 that answer
//! as the OTLP specification describes and fail on command: a script of replies is consumed
//! one per call, then every call succeeds. Each serves traces, metrics, logs and profiles, or
//! (`start_without_profiles`) everything but profiles, as receivers without the profiles
//! service do.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_server::{
    ProfilesService, ProfilesServiceServer,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::codegen::Service;
use tonic::Code;

use super::retry::rpc;
use super::retry::tests::retry_info_details;
use super::{Batch, Signal};

/// What the fake answers to one call.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Partial success: `rejected` items refused, the rest accepted.
    Partial {
        /// Items refused.
        rejected: i64,
        /// `error_message`.
        message: String,
    },
    /// gRPC only: fail with this code, with a `RetryInfo` of the delay when one is given.
    Status(Code, Option<Duration>),
    /// HTTP only: fail with this status (body: a `google.rpc.Status`), with `Retry-After`.
    Http(u16, Option<&'static str>),
    /// Never answer.
    Hang,
}

/// One call the fake saw, before it decided how to answer.
#[derive(Debug, Clone)]
pub struct Call {
    /// When it arrived.
    pub at: Instant,
    /// Request path.
    pub path: String,
    /// Request headers, names lowercase.
    pub headers: Vec<(String, String)>,
}

impl Call {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    /// Without the profiles service (gRPC UNIMPLEMENTED, HTTP 404).
    no_profiles: bool,
    script: Mutex<VecDeque<Reply>>,
    calls: Mutex<Vec<Call>>,
    received: Mutex<Vec<Batch>>,
}

impl State {
    fn record_call<B>(&self, req: &http::Request<B>) {
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        self.calls.lock().unwrap().push(Call {
            at: Instant::now(),
            path: req.uri().path().to_string(),
            headers,
        });
    }

    /// The scripted reply for this call; `None` means plain success. Accepted data is kept.
    fn answer(&self, batch: Batch) -> Option<Reply> {
        let reply = self.script.lock().unwrap().pop_front();
        if matches!(reply, None | Some(Reply::Partial { .. })) {
            self.received.lock().unwrap().push(batch);
        }
        reply
    }
}

/// Handle on a running fake collector.
pub struct Fake {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Fake {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues replies for the next calls.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Every batch accepted (fully or partly), in arrival order.
    pub fn received(&self) -> Vec<Batch> {
        self.state.received.lock().unwrap().clone()
    }

    /// Stops listening and closes every connection.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(3), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// A port on 127.0.0.1 that nothing listens on (it was free a moment ago).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// Every signal's counters add up and nothing is left queued.
pub fn assert_balanced(stats: &super::ExportStats) {
    for signal in super::Signal::ALL {
        let s = stats.signal(signal);
        assert!(s.is_balanced(), "{signal}: {s:?}");
        assert_eq!(s.queued_items, 0, "{signal}: {s:?}");
    }
}

/// Through `q`, whose receiver refuses profiles: two profiles batches and a traces batch
/// (`traces(2, 3)`) are queued; once the first profiles batch is refused, a later one is
/// refused at submit, and `after` still goes. Shuts `q` down, checks that every profile was
/// dropped as unsupported and the counts balance, and returns the stats.
pub async fn queue_past_refused_profiles(
    q: super::ExportQueue,
    after: super::Batch,
) -> super::ExportStats {
    use super::testdata::{profiles, traces};
    use super::{Signal, SubmitError};
    let stats = q.stats();
    q.submit(profiles(2, 2)).unwrap();
    q.submit(profiles(3, 1)).unwrap();
    q.submit(traces(2, 3)).unwrap();
    wait_until(|| stats.signal(Signal::Profiles).dropped_unsupported == 3).await;
    assert_eq!(
        q.submit(profiles(4, 5)),
        Err(SubmitError::Unsupported {
            signal: Signal::Profiles,
            items: 5
        })
    );
    q.submit(after).unwrap();
    q.shutdown(Duration::from_secs(8)).await;
    let p = stats.signal(Signal::Profiles);
    assert_eq!((p.offered_items, p.dropped_unsupported), (8, 8), "{p:?}");
    assert_eq!(p.dropped_items, p.dropped_unsupported);
    assert_balanced(&stats);
    stats
}

/// Polls `cond` every 5 ms; fails the test after 5 s.
pub async fn wait_until(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn bind(addr: Option<SocketAddr>) -> TcpListener {
    let addr = addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
    // The port may still be held briefly by a collector that just stopped.
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot bind {addr}");
}

async fn hang() -> ! {
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// The fake OTLP/gRPC collector.
pub struct GrpcCollector;

impl GrpcCollector {
    /// Starts one on `addr`, or on a free port.
    pub async fn start(addr: Option<SocketAddr>) -> Fake {
        Self::serve(addr, false).await
    }

    /// Starts one without the profiles service: profiles calls get `UNIMPLEMENTED`, as from
    /// tonic's router for a service it does not have.
    pub async fn start_without_profiles(addr: Option<SocketAddr>) -> Fake {
        Self::serve(addr, true).await
    }

    async fn serve(addr: Option<SocketAddr>, no_profiles: bool) -> Fake {
        let listener = bind(addr).await;
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            no_profiles,
            ..State::default()
        });
        let svc = GrpcSvc(state.clone());
        let router = Router {
            state: state.clone(),
            traces: TraceServiceServer::new(svc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip),
            metrics: MetricsServiceServer::new(svc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip),
            logs: LogsServiceServer::new(svc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip),
            profiles: ProfilesServiceServer::new(svc)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(router, incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Fake {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

#[derive(Clone)]
struct GrpcSvc(Arc<State>);

/// The scripted reply to one gRPC export: `partial` builds the signal's partial success.
async fn grpc_answer<R: Default>(
    reply: Option<Reply>,
    partial: impl FnOnce(i64, String) -> R,
) -> Result<tonic::Response<R>, tonic::Status> {
    match reply {
        None => Ok(tonic::Response::new(R::default())),
        Some(Reply::Partial { rejected, message }) => {
            Ok(tonic::Response::new(partial(rejected, message)))
        }
        Some(Reply::Status(code, delay)) => Err(grpc_status(code, delay)),
        Some(Reply::Http(..)) => Err(tonic::Status::internal("HTTP reply on gRPC")),
        Some(Reply::Hang) => hang().await,
    }
}

fn grpc_status(code: Code, delay: Option<Duration>) -> tonic::Status {
    let message = format!("fake collector says {code:?}");
    match delay {
        Some(d) => tonic::Status::with_details(code, message, retry_info_details(code, d).into()),
        None => tonic::Status::new(code, message),
    }
}

#[tonic::async_trait]
impl TraceService for GrpcSvc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let partial = |rejected_spans, error_message| ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans,
                error_message,
            }),
        };
        grpc_answer(self.0.answer(Batch::Traces(request.into_inner())), partial).await
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcSvc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let partial = |rejected_data_points, error_message| ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points,
                error_message,
            }),
        };
        grpc_answer(self.0.answer(Batch::Metrics(request.into_inner())), partial).await
    }
}

#[tonic::async_trait]
impl LogsService for GrpcSvc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let partial = |rejected_log_records, error_message| ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records,
                error_message,
            }),
        };
        grpc_answer(self.0.answer(Batch::Logs(request.into_inner())), partial).await
    }
}

#[tonic::async_trait]
impl ProfilesService for GrpcSvc {
    async fn export(
        &self,
        request: tonic::Request<ExportProfilesServiceRequest>,
    ) -> Result<tonic::Response<ExportProfilesServiceResponse>, tonic::Status> {
        let partial = |rejected_profiles, error_message| ExportProfilesServiceResponse {
            partial_success: Some(ExportProfilesPartialSuccess {
                rejected_profiles,
                error_message,
            }),
        };
        grpc_answer(
            self.0.answer(Batch::Profiles(request.into_inner())),
            partial,
        )
        .await
    }
}

/// Routes by gRPC service path (tonic's router is not in our feature set) and records each call
/// with its raw headers.
#[derive(Clone)]
struct Router {
    state: Arc<State>,
    traces: TraceServiceServer<GrpcSvc>,
    metrics: MetricsServiceServer<GrpcSvc>,
    logs: LogsServiceServer<GrpcSvc>,
    profiles: ProfilesServiceServer<GrpcSvc>,
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
        self.state.record_call(&req);
        let path = req.uri().path();
        if path.starts_with("/opentelemetry.proto.collector.trace.v1.TraceService/") {
            Box::pin(self.traces.call(req))
        } else if path.starts_with("/opentelemetry.proto.collector.metrics.v1.MetricsService/") {
            Box::pin(self.metrics.call(req))
        } else if path.starts_with("/opentelemetry.proto.collector.logs.v1.LogsService/") {
            Box::pin(self.logs.call(req))
        } else if path
            .starts_with("/opentelemetry.proto.collector.profiles.v1development.ProfilesService/")
            && !self.state.no_profiles
        {
            Box::pin(self.profiles.call(req))
        } else {
            Box::pin(async { Ok(tonic::Status::unimplemented("no such service").into_http()) })
        }
    }
}

/// The fake OTLP/HTTP collector.
pub struct HttpCollector;

impl HttpCollector {
    /// Starts one on `addr`, or on a free port.
    pub async fn start(addr: Option<SocketAddr>) -> Fake {
        Self::serve(addr, false).await
    }

    /// Starts one that answers 404 on `/v1development/profiles`, as a receiver without the
    /// profiles path does.
    pub async fn start_without_profiles(addr: Option<SocketAddr>) -> Fake {
        Self::serve(addr, true).await
    }

    async fn serve(addr: Option<SocketAddr>, no_profiles: bool) -> Fake {
        let listener = bind(addr).await;
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            no_profiles,
            ..State::default()
        });
        let (stop, mut stopped) = oneshot::channel::<()>();
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            let mut connections: Vec<JoinHandle<()>> = Vec::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = accept_state.clone();
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(handle_http(&state, req).await) }
                        });
                        connections.push(tokio::spawn(async move {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, service)
                                .await;
                        }));
                    }
                }
            }
            // Down means down: close every connection, idle or not.
            for c in &connections {
                c.abort();
            }
            for c in connections {
                let _ = c.await;
            }
        });
        Fake {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

fn http_response(status: u16, body: Vec<u8>) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn handle_http(
    state: &State,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    state.record_call(&req);
    let signal = match req.uri().path() {
        "/v1/traces" => Signal::Traces,
        "/v1/metrics" => Signal::Metrics,
        "/v1/logs" => Signal::Logs,
        "/v1development/profiles" if !state.no_profiles => Signal::Profiles,
        _ => return http_response(404, Vec::new()),
    };
    if req.method() != http::Method::POST
        || req.headers().get("content-type").map(|v| v.as_bytes())
            != Some(b"application/x-protobuf")
    {
        return http_response(415, Vec::new());
    }
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let Ok(body) = req.into_body().collect().await else {
        return http_response(400, Vec::new());
    };
    let mut body = body.to_bytes().to_vec();
    if gzip {
        let mut plain = Vec::new();
        if flate2::read::GzDecoder::new(body.as_slice())
            .read_to_end(&mut plain)
            .is_err()
        {
            return http_response(400, Vec::new());
        }
        body = plain;
    }
    let batch = match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(body.as_slice()).map(Batch::Traces),
        Signal::Metrics => ExportMetricsServiceRequest::decode(body.as_slice()).map(Batch::Metrics),
        Signal::Logs => ExportLogsServiceRequest::decode(body.as_slice()).map(Batch::Logs),
        Signal::Profiles => {
            ExportProfilesServiceRequest::decode(body.as_slice()).map(Batch::Profiles)
        }
    };
    let Ok(batch) = batch else {
        return http_response(400, Vec::new());
    };
    match state.answer(batch) {
        None => http_response(200, Vec::new()),
        Some(Reply::Partial { rejected, message }) => {
            let body = match signal {
                Signal::Traces => ExportTraceServiceResponse {
                    partial_success: Some(ExportTracePartialSuccess {
                        rejected_spans: rejected,
                        error_message: message,
                    }),
                }
                .encode_to_vec(),
                Signal::Metrics => ExportMetricsServiceResponse {
                    partial_success: Some(ExportMetricsPartialSuccess {
                        rejected_data_points: rejected,
                        error_message: message,
                    }),
                }
                .encode_to_vec(),
                Signal::Logs => ExportLogsServiceResponse {
                    partial_success: Some(ExportLogsPartialSuccess {
                        rejected_log_records: rejected,
                        error_message: message,
                    }),
                }
                .encode_to_vec(),
                Signal::Profiles => ExportProfilesServiceResponse {
                    partial_success: Some(ExportProfilesPartialSuccess {
                        rejected_profiles: rejected,
                        error_message: message,
                    }),
                }
                .encode_to_vec(),
            };
            http_response(200, body)
        }
        Some(Reply::Http(status, retry_after)) => {
            let body = rpc::Status {
                code: 0,
                message: format!("fake collector says {status}"),
                details: Vec::new(),
            }
            .encode_to_vec();
            let mut resp = http_response(status, body);
            if let Some(after) = retry_after {
                resp.headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static(after));
            }
            resp
        }
        Some(Reply::Status(..)) => http_response(500, Vec::new()),
        Some(Reply::Hang) => hang().await,
    }
}
