//! The agent's own telemetry: counters every stage increments, rendered as Prometheus text on
//! `/metrics`, plus `/healthz` and `/readyz`, served on a loopback address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

/// Counters shared by the pipeline stages and the HTTP endpoints. Cheap to update from any
/// thread (relaxed atomics).
#[derive(Debug, Default)]
pub struct SelfStats {
    /// Ring-buffer records decoded into events.
    pub events_received: AtomicU64,
    /// Events the kernel could not put in the ring buffer.
    pub events_lost: AtomicU64,
    /// Records that could not be decoded.
    pub records_undecodable: AtomicU64,
    /// Spans built from kernel events.
    pub spans_produced: AtomicU64,
    /// Metric export rounds completed.
    pub metric_rounds: AtomicU64,
    /// Processes whose cached metadata was dropped on exec or exit.
    pub process_invalidations: AtomicU64,
    /// Pictures rendered.
    pub artifacts_made: AtomicU64,
    /// Pictures skipped (renderer failed or unreachable).
    pub artifacts_skipped: AtomicU64,
    /// Set once the probes are attached and the exporter runs.
    pub ready: AtomicBool,
}

/// One counter line for `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Prometheus metric name.
    pub name: String,
    /// Help text.
    pub help: &'static str,
    /// Label pairs.
    pub labels: Vec<(&'static str, String)>,
    /// Value.
    pub value: u64,
}

/// Renders samples as Prometheus text exposition format 0.0.4, grouping by name.
pub fn render_prometheus(samples: &[Sample]) -> String {
    let mut out = String::new();
    let mut seen: Vec<&str> = Vec::new();
    for s in samples {
        if !seen.contains(&s.name.as_str()) {
            seen.push(&s.name);
            out.push_str(&format!(
                "# HELP {} {}\n# TYPE {} counter\n",
                s.name, s.help, s.name
            ));
        }
        out.push_str(&s.name);
        if !s.labels.is_empty() {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            out.push_str(&format!("{{{}}}", labels.join(",")));
        }
        out.push_str(&format!(" {}\n", s.value));
    }
    out
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

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

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Adds to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_groups_by_name_and_escapes_labels() {
        let s = |name: &str, labels: Vec<(&'static str, String)>, value| Sample {
            name: name.into(),
            help: "h",
            labels,
            value,
        };
        let text = render_prometheus(&[
            s(
                "kotel_events_lost_total",
                vec![("kind", "writev".into())],
                3,
            ),
            s("kotel_events_lost_total", vec![("kind", "a\"b".into())], 4),
            s("kotel_spans_total", vec![], 9),
        ]);
        assert_eq!(
            text.matches("# TYPE kotel_events_lost_total counter")
                .count(),
            1
        );
        assert!(text.contains("kotel_events_lost_total{kind=\"writev\"} 3\n"));
        assert!(text.contains("kotel_events_lost_total{kind=\"a\\\"b\"} 4\n"));
        assert!(text.contains("kotel_spans_total 9\n"));
    }

    struct Fixed(bool);
    impl SampleSource for Fixed {
        fn samples(&self) -> Vec<Sample> {
            vec![Sample {
                name: "kotel_up".into(),
                help: "up",
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
