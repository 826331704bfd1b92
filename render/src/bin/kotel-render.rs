//! `kotel-render`: the renderer sidecar. Serves the `kotel.render.v1.Renderer` gRPC service and
//! the artifact HTTP server, both on loopback by default. With `--tls-cert` and `--tls-key`
//! both speak TLS only; `--tls-client-ca` also requires client certificates (mutual TLS).
//! A bad certificate or key file stops startup with exit code 2, naming the flag and file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kotel_render::server::{self, ServerConfig};
use kotel_render::{HeatmapOptions, Limits, StoreConfig};
use kotel_tls::ServerTlsFiles;

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
    /// TLS certificate chain (PEM) for both listeners; needs --tls-key. Artifact URLs then
    /// start with https://.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) matching --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA bundle (PEM) client certificates must chain to: turns on mutual TLS.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

/// The flag a TLS file came from, for error messages.
fn tls_flag(file: kotel_tls::TlsFile) -> &'static str {
    match file {
        kotel_tls::TlsFile::Cert => "--tls-cert",
        kotel_tls::TlsFile::Key => "--tls-key",
        kotel_tls::TlsFile::ClientCa | kotel_tls::TlsFile::Ca => "--tls-client-ca",
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KOTEL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTlsFiles {
            cert,
            key,
            client_ca: args.tls_client_ca,
        }),
        _ => None,
    };
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
        tls: tls.clone(),
    })
    .await;
    let srv = match srv {
        Ok(srv) => srv,
        Err(server::ServerError::Tls(e)) => {
            // A configuration problem: exit 2, naming the flag and the file.
            eprintln!("kotel-render: {}: {e}", tls_flag(e.file()));
            std::process::exit(2);
        }
        Err(e) => return Err(e).context("starting kotel-render"),
    };
    let mode = match &tls {
        None => "plaintext",
        Some(ServerTlsFiles {
            client_ca: Some(_), ..
        }) => "TLS, client certificates required",
        Some(_) => "TLS",
    };
    eprintln!(
        "kotel-render: gRPC on {}, HTTP on {} ({mode}), artifacts in {} served as {}/artifacts/",
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
