//! The agent's sidecar client over TLS: `[render.tls]` → [`artifacts::sidecar_tls`] →
//! [`artifacts::Artifacts::sidecar`] against a real `kotel-render` server (in this process)
//! with certificates made on the spot by `tests/python/tls_certs.py`. A TLS and an mTLS
//! render round trip hand out `https://` artifact URLs; a client trusting the wrong CA, one
//! without the client certificate the sidecar requires, one left to the system's roots and a
//! plaintext one are each refused, and the picture is skipped and counted, never rendered in
//! plaintext.
//!
//! Without python3 and its `cryptography` package these tests print one loud line and skip.

use std::path::{Path, PathBuf};

use kotel_bpf::Probe;
use kotel_collector::artifacts::{sidecar_tls, Artifacts};
use kotel_collector::config::{RenderSettings, RenderTlsSettings};
use kotel_render::server::{start, Server, ServerConfig};
use kotel_render::{HeatmapOptions, Limits, StoreConfig};
use kotel_testkit::pki::{self, CertPair, Pki};
use kotel_tls::ServerTlsFiles;

fn sidecar(rt: &tokio::runtime::Runtime, dir: &Path, pki: &Pki, mtls: bool) -> Server {
    rt.block_on(start(ServerConfig {
        grpc: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        store_dir: dir.join("store"),
        public_url: None,
        store: StoreConfig::default(),
        limits: Limits::default(),
        heatmap: HeatmapOptions::default(),
        tls: Some(ServerTlsFiles {
            cert: pki.server.cert.clone(),
            key: pki.server.key.clone(),
            client_ca: mtls.then(|| pki.ca.clone()),
        }),
    }))
    .unwrap()
}

/// One flame graph through the agent's sidecar client; the artifact URL, or `None` when the
/// picture was skipped (and then it was counted).
fn render_once(
    rt: &tokio::runtime::Runtime,
    renderer: String,
    tls: RenderTlsSettings,
) -> Option<String> {
    let settings = RenderSettings {
        renderer,
        tls,
        ..RenderSettings::default()
    };
    let client_tls = sidecar_tls(&settings).expect("valid [render.tls] files");
    let mut artifacts = Artifacts::sidecar(&settings.renderer, client_tls, rt.handle().clone());
    let now = 1_796_000_000_000_000_000;
    artifacts.add_stack(Probe::Offcpu, "main;read;schedule".into(), 5_000_000, now);
    let made = artifacts
        .render_flames(now)
        .into_iter()
        .next()
        .map(|(_, r)| r.url);
    assert_eq!(
        (artifacts.made, artifacts.skipped),
        if made.is_some() { (1, 0) } else { (0, 1) },
        "a skipped picture is counted"
    );
    made
}

/// The sidecar's count of failed handshakes once it reaches `n` (bounded wait: the server
/// counts a moment after the client gave up). Proves a refusal was TLS, not a timeout.
fn handshake_failures(srv: &Server, n: u64) -> u64 {
    use std::sync::atomic::Ordering;
    for _ in 0..100 {
        if srv.tls_failures.load(Ordering::Relaxed) >= n {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    srv.tls_failures.load(Ordering::Relaxed)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn tls_round_trip_and_refusals() {
    let dir = tempfile_dir("tls");
    let Some(pki) = pki::make(&dir, "tls_round_trip_and_refusals") else {
        return;
    };
    let rt = runtime();
    let srv = sidecar(&rt, &dir, &pki, false);
    let https = format!("https://localhost:{}", srv.grpc_addr.port());
    let trusting = |ca: &Path| RenderTlsSettings {
        ca_file: ca.to_path_buf(),
        ..RenderTlsSettings::default()
    };

    let url = render_once(&rt, https.clone(), trusting(&pki.ca)).expect("rendered over TLS");
    assert!(
        url.starts_with(&format!("https://{}/artifacts/", srv.http_addr)),
        "{url}"
    );
    assert_eq!(
        render_once(&rt, https.clone(), trusting(&pki.wrong_ca)),
        None
    );
    // No ca_file: the system's roots, which do not hold the test CA. Refused, not downgraded.
    assert_eq!(render_once(&rt, https, RenderTlsSettings::default()), None);
    let plaintext = format!("http://127.0.0.1:{}", srv.grpc_addr.port());
    assert_eq!(
        render_once(&rt, plaintext, RenderTlsSettings::default()),
        None
    );
    assert!(
        handshake_failures(&srv, 3) >= 3,
        "each refusal was a TLS refusal"
    );
    srv.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mtls_round_trip_needs_the_client_certificate() {
    let dir = tempfile_dir("mtls");
    let Some(pki) = pki::make(&dir, "mtls_round_trip_needs_the_client_certificate") else {
        return;
    };
    let rt = runtime();
    let srv = sidecar(&rt, &dir, &pki, true);
    let https = format!("https://localhost:{}", srv.grpc_addr.port());
    let with = |pair: Option<&CertPair>| RenderTlsSettings {
        ca_file: pki.ca.clone(),
        cert_file: pair.map(|p| p.cert.clone()).unwrap_or_default(),
        key_file: pair.map(|p| p.key.clone()).unwrap_or_default(),
    };
    let url = render_once(&rt, https.clone(), with(Some(&pki.client))).expect("rendered over mTLS");
    assert!(url.starts_with("https://"), "{url}");
    assert_eq!(render_once(&rt, https.clone(), with(None)), None);
    assert_eq!(
        render_once(&rt, https.clone(), with(Some(&pki.wrong_client))),
        None
    );
    assert_eq!(
        render_once(&rt, https, with(Some(&pki.client_expired))),
        None
    );
    assert!(
        handshake_failures(&srv, 3) >= 3,
        "each refusal was a TLS refusal"
    );
    srv.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kotel-sidecar-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
