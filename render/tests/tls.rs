//! The sidecar over TLS and mutual TLS, with certificates made on the spot by
//! `tests/python/tls_certs.py`: a tonic client renders over TLS, the https artifact URL it gets
//! back serves the picture over TLS; with a client CA, only a client presenting a valid
//! certificate from that CA gets through. A client that trusts the wrong CA, a plaintext
//! client, a missing, wrong-CA or expired client certificate are each refused and counted.
//!
//! Without python3 and its `cryptography` package these tests print one loud line and skip
//! (CI installs both through scripts/setup.sh).

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use kotel_proto::render::v1::renderer_client::RendererClient;
use kotel_proto::render::v1::Format;
use kotel_render::server::{start, Server, ServerConfig};
use kotel_render::{HeatmapOptions, Limits, StoreConfig};
use kotel_testkit::pki::{self, CertPair, Pki};
use kotel_tls::ServerTlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

async fn server(dir: &Path, pki: &Pki, mtls: bool) -> Server {
    start(ServerConfig {
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
    })
    .await
    .unwrap()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// A gRPC client of the sidecar trusting `ca`, presenting `identity` if given.
async fn grpc_client(
    srv: &Server,
    ca: &Path,
    identity: Option<&CertPair>,
) -> Result<RendererClient<tonic::transport::Channel>, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)))
        .domain_name("localhost");
    if let Some(pair) = identity {
        tls = tls.identity(Identity::from_pem(read(&pair.cert), read(&pair.key)));
    }
    let channel = Endpoint::from_shared(format!("https://localhost:{}", srv.grpc_addr.port()))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| error_chain(&e))?;
    Ok(RendererClient::new(channel))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// One render over gRPC; `Err` with the whole error chain when it fails.
async fn render(
    srv: &Server,
    ca: &Path,
    identity: Option<&CertPair>,
) -> Result<kotel_proto::render::v1::RenderResponse, String> {
    let mut client = grpc_client(srv, ca, identity).await?;
    let mut req = common::heatmap_request(10, 16);
    req.formats = vec![Format::Svg as i32, Format::Png as i32];
    req.include_bytes = true;
    client
        .render_heatmap(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| format!("{e:?}"))
}

/// GET over HTTPS with rustls, trusting `ca`, presenting `identity` if given.
async fn https_get(
    url: &str,
    ca: &Path,
    identity: Option<&CertPair>,
) -> Result<(u16, bytes::Bytes), String> {
    kotel_tls::install_crypto_provider();
    let uri: hyper::Uri = url.parse().unwrap();
    assert_eq!(uri.scheme_str(), Some("https"), "{url}");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some(pair) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&pair.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&pair.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect((uri.host().unwrap(), uri.port_u16().unwrap()))
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(uri.path())
        .header("host", "localhost")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| error_chain(&e))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// Waits (bounded) until the server has counted `n` failed handshakes; the client may see its
/// failure a moment before the server's handshake task reports it.
async fn failures_reach(srv: &Server, n: u64) -> u64 {
    for _ in 0..100 {
        if srv.tls_failures.load(Ordering::Relaxed) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    srv.tls_failures.load(Ordering::Relaxed)
}

/// Waits until the failure count has not moved for 300 ms (tonic's reconnects are over).
async fn settle(srv: &Server) {
    let mut last = srv.tls_failures.load(Ordering::Relaxed);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = srv.tls_failures.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

/// A plaintext HTTP/1.1 GET on a raw socket; whatever came back (empty when the server
/// closed the connection).
async fn plain_http_get(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_with_https_artifact_urls() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = pki::make(dir.path(), "tls_round_trip_with_https_artifact_urls") else {
        return;
    };
    let srv = server(dir.path(), &pki, false).await;
    assert_eq!(srv.public_url, format!("https://{}", srv.http_addr));

    let resp = render(&srv, &pki.ca, None).await.expect("TLS render");
    let png = resp
        .artifacts
        .iter()
        .find(|a| a.media_type == "image/png")
        .unwrap();
    assert_eq!(
        png.url,
        format!("https://{}/artifacts/{}.png", srv.http_addr, png.id)
    );
    let (status, body) = https_get(&png.url, &pki.ca, None).await.expect("HTTPS GET");
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), png.content.as_slice(), "the stored picture");

    // A client that trusts another CA refuses the server; nothing is rendered for it. tonic
    // may reconnect after a failed connection, so a gRPC refusal counts at least once; an
    // HTTPS attempt here is one connection, so it counts exactly once.
    let before = srv.tls_failures.load(Ordering::Relaxed);
    let err = render(&srv, &pki.wrong_ca, None).await.unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("unknown"),
        "{err}"
    );
    // A plaintext client gets no service from a TLS listener.
    let plain = RendererClient::connect(format!("http://{}", srv.grpc_addr)).await;
    let plain_failed = match plain {
        Err(_) => true,
        Ok(mut c) => c
            .render_heatmap(common::heatmap_request(2, 2))
            .await
            .is_err(),
    };
    assert!(plain_failed, "plaintext gRPC to a TLS listener must fail");
    let grpc_refusals = failures_reach(&srv, before + 2).await - before;
    assert!(grpc_refusals >= 2, "{grpc_refusals}");
    settle(&srv).await;

    let before = srv.tls_failures.load(Ordering::Relaxed);
    let err = https_get(&png.url, &pki.wrong_ca, None).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    let plain = plain_http_get(srv.http_addr).await;
    assert!(
        !plain.starts_with("HTTP/1.1 200"),
        "plaintext HTTP answered: {plain}"
    );
    assert_eq!(failures_reach(&srv, before + 2).await, before + 2);

    // And the server still serves good clients.
    render(&srv, &pki.ca, None).await.expect("still serving");
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_valid_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = pki::make(dir.path(), "mtls_requires_a_valid_client_certificate") else {
        return;
    };
    let srv = server(dir.path(), &pki, true).await;

    let resp = render(&srv, &pki.ca, Some(&pki.client))
        .await
        .expect("mTLS render");
    let svg = &resp.artifacts[0];
    let (status, body) = https_get(&svg.url, &pki.ca, Some(&pki.client))
        .await
        .expect("mTLS GET");
    assert_eq!((status, body.as_ref()), (200, svg.content.as_slice()));

    for (what, identity) in [
        ("no client certificate", None),
        ("a wrong-CA client certificate", Some(&pki.wrong_client)),
        ("an expired client certificate", Some(&pki.client_expired)),
    ] {
        // TLS 1.3: the client may finish its side first and learn of the refusal on the
        // first request, so the render (not just the connect) must fail.
        let before = srv.tls_failures.load(Ordering::Relaxed);
        let err = render(&srv, &pki.ca, identity).await;
        assert!(err.is_err(), "gRPC with {what} must be refused");
        assert!(
            failures_reach(&srv, before + 1).await > before,
            "{what} counted"
        );
        settle(&srv).await;
        // One HTTPS connection: counted exactly once.
        let before = srv.tls_failures.load(Ordering::Relaxed);
        let got = https_get(&svg.url, &pki.ca, identity).await;
        assert!(got.is_err(), "HTTPS with {what} must be refused: {got:?}");
        assert_eq!(failures_reach(&srv, before + 1).await, before + 1, "{what}");
    }
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_garbage_clients_do_not_stall_the_listener() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = pki::make(
        dir.path(),
        "silent_and_garbage_clients_do_not_stall_the_listener",
    ) else {
        return;
    };
    const SILENT: usize = 200;
    const GARBAGE: usize = 50;
    let files = ServerTlsFiles {
        cert: pki.server.cert.clone(),
        key: pki.server.key.clone(),
        client_ca: None,
    };
    let config = kotel_tls::server_config(&files, &[b"http/1.1"]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&failures);
    // A short deadline so the test sees the silent clients time out.
    let (mut conns, task) =
        kotel_tls::spawn_handshakes(listener, config, Duration::from_secs(5), move |_, f| {
            seen.lock().unwrap().push(f.kind)
        });

    // Clients that connect and say nothing, and clients that send junk.
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    for _ in 0..GARBAGE {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        silent.push(s);
    }
    // Meanwhile a real client completes its handshake and comes out of the channel, while
    // every silent handshake is still pending (none has reached its deadline yet).
    let good = tokio::spawn({
        let ca = pki.ca.clone();
        async move {
            let url = format!("https://127.0.0.1:{}/x", addr.port());
            https_get(&url, &ca, None).await
        }
    });
    let (stream, _) = conns.recv().await.expect("the real client's connection");
    let timeouts_so_far = failures
        .lock()
        .unwrap()
        .iter()
        .filter(|k| **k == "timeout")
        .count();
    assert_eq!(
        timeouts_so_far, 0,
        "served while the silent handshakes were pending"
    );
    drop(stream);
    let _ = good.await;

    // Every bad client is refused and counted: the junk at once, the silent at the deadline.
    for _ in 0..200 {
        if failures.lock().unwrap().len() >= SILENT + GARBAGE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kinds = failures.lock().unwrap().clone();
    assert_eq!(
        kinds.iter().filter(|k| **k == "timeout").count(),
        SILENT,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "not_tls").count(),
        GARBAGE,
        "{kinds:?}"
    );
    drop(silent);
    task.abort();
}
