//! `kotel-render`: the renderer sidecar. Serves the `kotel.render.v1.Renderer` gRPC service and
//! the artifact HTTP server, both on loopback by default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kotel_render::server::{self, ServerConfig};
use kotel_render::{HeatmapOptions, Limits, StoreConfig};

/// Renders latency heatmaps and off-CPU flame graphs (SVG, PNG) and serves them.
#[derive(Debug, Parser)]
#[command(name = "kotel-render", version)]
struct Args {
    /// gRPC listen address (kotel.render.v1.Renderer).
    #[arg(long, default_value = "127.0.0.1:4320")]
    grpc: SocketAddr,
    /// HTTP listen address (artifacts, gallery, POST /v1/heatmap and /v1/flame).
    #[arg(long, default_value = "127.0.0.1:4321")]
    http: SocketAddr,
    /// Artifact store directory [default: $TMPDIR/kotel-render].
    #[arg(long)]
    store: Option<PathBuf>,
    /// Base URL artifact URLs start with [default: http://<http addr>].
    #[arg(long)]
    public_url: Option<String>,
    /// Link for exemplar markers; {trace_id} and {span_id} are replaced, e.g.
    /// http://localhost:16686/trace/{trace_id}.
    #[arg(long, default_value = "")]
    trace_url_template: String,
    /// Total bytes kept in the store before the oldest artifacts are evicted.
    #[arg(long, default_value_t = 256 << 20)]
    store_max_bytes: u64,
    /// Seconds an artifact lives after it was last stored.
    #[arg(long, default_value_t = 3600)]
    store_ttl_secs: u64,
    /// Largest request accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_request_bytes)]
    max_request_bytes: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store_dir = args
        .store
        .unwrap_or_else(|| std::env::temp_dir().join("kotel-render"));
    let srv = server::start(ServerConfig {
        grpc: args.grpc,
        http: args.http,
        store_dir: store_dir.clone(),
        public_url: args.public_url,
        store: StoreConfig {
            max_bytes: args.store_max_bytes,
            ttl: Duration::from_secs(args.store_ttl_secs),
        },
        limits: Limits {
            max_request_bytes: args.max_request_bytes,
            ..Limits::default()
        },
        heatmap: HeatmapOptions {
            trace_url_template: args.trace_url_template,
        },
    })
    .await
    .context("starting kotel-render")?;
    eprintln!(
        "kotel-render: gRPC on {}, HTTP on {}, artifacts in {} served as {}/artifacts/",
        srv.grpc_addr,
        srv.http_addr,
        store_dir.display(),
        srv.public_url
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    srv.shutdown();
    Ok(())
}
