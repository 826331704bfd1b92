//! The agent's HTTP endpoints about itself, served on a loopback address: `/metrics`
//! (Prometheus text), `/healthz` and `/readyz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::prometheus::{render_prometheus, Sample};

/// Something that can list the current counters.
pub trait SampleSource: Send + Sync + 'static {
    /// Every counter, now.
    fn samples(&self) -> Vec<Sample>;
    /// Whether the agent is ready to serve.
    fn ready(&self) -> bool;
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the task is dropped. Returns
/// the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    source: Arc<dyn SampleSource>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let source = Arc::clone(&source);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let source = Arc::clone(&source);
                    async move { Ok::<_, Infallible>(route(&req, source.as_ref())) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Ok((local, task))
}

fn route(req: &Request<Incoming>, source: &dyn SampleSource) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, ctype: &'static str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    };
    if req.method() != hyper::Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render_prometheus(&source.samples()),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if source.ready() => text(StatusCode::OK, "text/plain", "ready\n".into()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(bool);
    impl SampleSource for Fixed {
        fn samples(&self) -> Vec<Sample> {
            vec![Sample {
                name: "kotel_up".into(),
                help: "up",
                kind: super::super::catalog::Kind::Gauge,
                labels: vec![],
                value: 1,
            }]
        }
        fn ready(&self) -> bool {
            self.0
        }
    }

    async fn get_path(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let code = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, buf)
    }

    #[tokio::test]
    async fn endpoints_answer_over_real_http() {
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Fixed(false)))
            .await
            .unwrap();
        assert_eq!(get_path(addr, "/healthz").await.0, 200);
        assert_eq!(get_path(addr, "/readyz").await.0, 503);
        let (code, body) = get_path(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("kotel_up 1"));
        assert_eq!(get_path(addr, "/nope").await.0, 404);
        task.abort();
    }
}
