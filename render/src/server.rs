//! The sidecar's network side: the `kotel.render.v1.Renderer` gRPC service (tonic) and an HTTP
//! server (hyper) with `GET /artifacts/<id>.svg|png`, the report page at `GET /` (built from the
//! newest request of each series, see [`crate::report::Recent`]), and
//! `POST /v1/heatmap` / `POST /v1/flame` taking protobuf request bodies.
//!
//! Errors: malformed or over-limit requests get gRPC INVALID_ARGUMENT / HTTP 400 with the
//! message naming the limit; a gRPC message larger than `max_request_bytes` is refused by
//! tonic's decoder with OUT_OF_RANGE (tonic 0.14's code for it); an HTTP body larger than it gets
//! 413.
//!
//! TLS is optional ([`ServerConfig::tls`]): both listeners then speak only TLS (gRPC with ALPN
//! `h2`), handshakes run off the accept loop within a deadline (see [`kotel_tls`]), artifact
//! URLs default to `https://`, and with a client CA every client must present a certificate
//! signed by it. Failed handshakes are counted in [`Server::tls_failures`] and logged.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use kotel_proto::render::v1::renderer_server::{Renderer as RendererRpc, RendererServer};
use kotel_proto::render::v1::{RenderFlameRequest, RenderHeatmapRequest, RenderResponse};
use prost::Message;

use crate::{HeatmapOptions, Limits, RenderError, Renderer, RendererConfig, StoreConfig};
use kotel_tls::{self as tls, ServerTlsFiles, TlsError};

/// What can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source} (is the port in use?)")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The renderer could not be built (store directory, options).
    #[error(transparent)]
    Renderer(#[from] RenderError),
    /// The TLS certificate, key or client CA could not be used; the message names the file.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// Where and how the sidecar serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// gRPC listen address (port 0 picks one).
    pub grpc: SocketAddr,
    /// HTTP listen address (port 0 picks one).
    pub http: SocketAddr,
    /// Artifact store directory.
    pub store_dir: PathBuf,
    /// Base of artifact URLs; `http://<bound http addr>` when `None`.
    pub public_url: Option<String>,
    /// Store cap and TTL.
    pub store: StoreConfig,
    /// Request bounds.
    pub limits: Limits,
    /// Heatmap options (the trace link template of exemplar markers).
    pub heatmap: HeatmapOptions,
    /// Serve TLS (and require client certificates when a client CA is given); `None`:
    /// plaintext.
    pub tls: Option<ServerTlsFiles>,
}

/// A running sidecar. Dropping it leaves the tasks running; call [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    /// Bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
    /// Base of artifact URLs, without a trailing `/`: artifacts are served under
    /// `<public_url>/artifacts/`.
    pub public_url: String,
    /// The renderer both servers use.
    pub renderer: Arc<Renderer>,
    /// TLS handshakes that failed (wrong CA, expired or missing client certificate, a
    /// plaintext client, a timeout), on both listeners.
    pub tls_failures: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Stops serving (aborts the server tasks).
    pub fn shutdown(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Binds both listeners and starts serving on the current tokio runtime. Fails with
/// [`ServerError::Bind`] when a listener cannot be bound, [`ServerError::Tls`] when a TLS file
/// is unreadable or unusable, and [`ServerError::Renderer`] when the store or the options are
/// bad; nothing is served then.
pub async fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })
    };
    let http = bind(cfg.http).await?;
    let grpc = bind(cfg.grpc).await?;
    let local = |l: &tokio::net::TcpListener, addr| {
        l.local_addr()
            .map_err(|source| ServerError::Bind { addr, source })
    };
    let http_addr = local(&http, cfg.http)?;
    let grpc_addr = local(&grpc, cfg.grpc)?;
    // Both TLS configurations are built before anything is served: a bad file stops startup.
    let tls_configs = match &cfg.tls {
        Some(files) => Some((
            tls::server_config(files, &[tls::ALPN_H2])?,
            tls::server_config(files, &[tls::ALPN_HTTP1])?,
        )),
        None => None,
    };
    let scheme = if tls_configs.is_some() {
        "https"
    } else {
        "http"
    };
    let public_url = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{http_addr}"))
        .trim_end_matches('/')
        .to_string();
    let renderer = Arc::new(Renderer::new(RendererConfig {
        store_dir: cfg.store_dir.clone(),
        url_prefix: format!("{public_url}/artifacts"),
        store: cfg.store,
        limits: cfg.limits.clone(),
        heatmap: cfg.heatmap.clone(),
    })?);
    renderer.recent().enable();

    let max = usize::try_from(cfg.limits.max_request_bytes).unwrap_or(usize::MAX);
    let svc = RendererServer::new(GrpcService {
        renderer: Arc::clone(&renderer),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(usize::MAX);
    let tls_failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    match tls_configs {
        None => {
            tasks.push(tokio::spawn(async move {
                let incoming =
                    tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
                let _ = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(incoming)
                    .await;
            }));
            tasks.push(tokio::spawn(serve_http(http, Arc::clone(&renderer))));
        }
        Some((grpc_tls, http_tls)) => {
            let (grpc_conns, grpc_handshakes) = tls::spawn_handshakes(
                grpc,
                grpc_tls,
                tls::HANDSHAKE_TIMEOUT,
                handshake_failed("grpc", Arc::clone(&tls_failures)),
            );
            let (http_conns, http_handshakes) = tls::spawn_handshakes(
                http,
                http_tls,
                tls::HANDSHAKE_TIMEOUT,
                handshake_failed("http", Arc::clone(&tls_failures)),
            );
            tasks.push(grpc_handshakes);
            tasks.push(http_handshakes);
            tasks.push(tokio::spawn(async move {
                let incoming = futures_util::stream::unfold(grpc_conns, |mut rx| async move {
                    let (stream, _) = rx.recv().await?;
                    Some((Ok::<_, std::io::Error>(stream), rx))
                });
                let _ = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(incoming)
                    .await;
            }));
            tasks.push(tokio::spawn(serve_https(http_conns, Arc::clone(&renderer))));
        }
    }
    let sweeper = {
        let renderer = Arc::clone(&renderer);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let r = Arc::clone(&renderer);
                let _ = tokio::task::spawn_blocking(move || r.store().sweep()).await;
            }
        })
    };
    Ok(Server {
        grpc_addr,
        http_addr,
        public_url,
        renderer,
        tls_failures,
        tasks: {
            tasks.push(sweeper);
            tasks
        },
    })
}

/// Counts a failed handshake and logs `kotel_render.tls.handshake_failed` (through `tracing`;
/// the binary prints it to stderr), the first time and then at every power of two, so a storm
/// of bad clients cannot flood the log.
fn handshake_failed(
    listener: &'static str,
    failures: Arc<AtomicU64>,
) -> impl Fn(SocketAddr, tls::HandshakeFailure) + Send + Sync + 'static {
    move |peer, failure| {
        let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                listener,
                %peer,
                reason = failure.kind,
                error = %failure.message,
                failures = n,
                "kotel_render.tls.handshake_failed"
            );
        }
    }
}

struct GrpcService {
    renderer: Arc<Renderer>,
}

fn status(e: RenderError) -> tonic::Status {
    if e.is_client_error() {
        tonic::Status::invalid_argument(e.to_string())
    } else {
        tonic::Status::internal(e.to_string())
    }
}

async fn blocking<T, F>(f: F) -> Result<T, RenderError>
where
    F: FnOnce() -> Result<T, RenderError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RenderError::Raster(format!("render task failed: {e}")))?
}

#[tonic::async_trait]
impl RendererRpc for GrpcService {
    async fn render_heatmap(
        &self,
        request: tonic::Request<RenderHeatmapRequest>,
    ) -> Result<tonic::Response<RenderResponse>, tonic::Status> {
        let r = Arc::clone(&self.renderer);
        let req = request.into_inner();
        let resp = blocking(move || r.render_heatmap(&req))
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(resp))
    }

    async fn render_flame(
        &self,
        request: tonic::Request<RenderFlameRequest>,
    ) -> Result<tonic::Response<RenderResponse>, tonic::Status> {
        let r = Arc::clone(&self.renderer);
        let req = request.into_inner();
        let resp = blocking(move || r.render_flame(&req))
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(resp))
    }
}

async fn serve_http(listener: tokio::net::TcpListener, renderer: Arc<Renderer>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(serve_connection(stream, Arc::clone(&renderer)));
    }
}

/// The HTTP server over connections whose TLS handshake already finished.
async fn serve_https(
    mut conns: tokio::sync::mpsc::Receiver<tls::Accepted>,
    renderer: Arc<Renderer>,
) {
    while let Some((stream, _)) = conns.recv().await {
        tokio::spawn(serve_connection(stream, Arc::clone(&renderer)));
    }
}

async fn serve_connection<IO>(stream: IO, renderer: Arc<Renderer>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let renderer = Arc::clone(&renderer);
        async move { Ok::<_, Infallible>(route(req, renderer).await) }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}

fn respond(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("x-content-type-options", "nosniff")
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    let mut m = msg.into();
    m.push('\n');
    respond(status, "text/plain; charset=utf-8", m)
}

async fn route(req: Request<Incoming>, renderer: Arc<Renderer>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/") => report_page(&renderer),
        (&Method::GET, p) if p.starts_with("/artifacts/") => {
            artifact(&renderer, &p["/artifacts/".len()..])
        }
        (&Method::POST, "/v1/heatmap") => {
            post(req, renderer, |r, body| {
                let req = RenderHeatmapRequest::decode(body).map_err(decode_err)?;
                r.render_heatmap(&req)
            })
            .await
        }
        (&Method::POST, "/v1/flame") => {
            post(req, renderer, |r, body| {
                let req = RenderFlameRequest::decode(body).map_err(decode_err)?;
                r.render_flame(&req)
            })
            .await
        }
        (_, "/" | "/v1/heatmap" | "/v1/flame") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        (_, p) if p.starts_with("/artifacts/") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /, /artifacts/<id>.svg|png, POST /v1/heatmap, POST /v1/flame",
        ),
    }
}

fn decode_err(e: prost::DecodeError) -> RenderError {
    RenderError::Invalid(format!("body is not a valid protobuf request: {e}"))
}

fn artifact(renderer: &Renderer, name: &str) -> Response<Full<Bytes>> {
    match renderer.store().get(name) {
        Ok(Some((bytes, ext))) => {
            let mut resp = respond(StatusCode::OK, ext.media_type(), bytes);
            let h = resp.headers_mut();
            h.insert(
                "cache-control",
                hyper::header::HeaderValue::from_static("public, max-age=3600, immutable"),
            );
            h.insert(
                "content-security-policy",
                hyper::header::HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:",
                ),
            );
            resp
        }
        Ok(None) => text(
            StatusCode::NOT_FOUND,
            format!("no artifact {name} (expired or never stored)"),
        ),
        Err(e @ crate::StoreError::BadName(_)) => text(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn post<F>(req: Request<Incoming>, renderer: Arc<Renderer>, f: F) -> Response<Full<Bytes>>
where
    F: FnOnce(&Renderer, Bytes) -> Result<RenderResponse, RenderError> + Send + 'static,
{
    let max = renderer.limits().max_request_bytes;
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > max) {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request bytes is {n}, over the limit of {max}"),
        );
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request bytes is over the limit of {max}"),
            )
        }
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("reading the body failed: {e}"),
            )
        }
    };
    let r = Arc::clone(&renderer);
    match blocking(move || f(&r, body)).await {
        Ok(resp) => respond(
            StatusCode::OK,
            "application/x-protobuf",
            resp.encode_to_vec(),
        ),
        Err(e) if e.is_client_error() => text(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The report page: a table, heatmap and flame graph of the newest requests, reloading itself.
fn report_page(renderer: &Renderer) -> Response<Full<Bytes>> {
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let data = renderer
        .recent()
        .report(&renderer.heatmap_options().trace_url_template, now);
    let mut resp = respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        crate::report::report_html(&data),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&crate::report::csp()) {
        resp.headers_mut().insert("content-security-policy", v);
    }
    resp.headers_mut().insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-store"),
    );
    resp
}
