//! The OTLP receiver over mutual TLS, without BPF: a tonic client presenting a client
//! certificate exports over gRPC and the request arrives with the client's TCP address (what
//! linking needs, read through tonic's `TlsConnectInfo`); OTLP/HTTP over TLS answers 200; a
//! wrong-CA or expired client certificate, none at all, or a plaintext client is refused and
//! counted in `rejected_handshake`. Certificates come from `tests/python/tls_certs.py`; without
//! python3 and `cryptography` the test prints one loud line and skips.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kotel_collector::receiver::{self, Received, ReceiverConfig, ReceiverHandle};
use kotel_testkit::pki::{self, CertPair, Pki};
use kotel_tls::ServerTlsFiles;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

async fn export(
    handle: &ReceiverHandle,
    pki: &Pki,
    client: Option<&CertPair>,
) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).unwrap()))
        .domain_name("localhost");
    if let Some(c) = client {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&c.cert).unwrap(),
            std::fs::read(&c.key).unwrap(),
        ));
    }
    let port = handle.grpc_addr().unwrap().port();
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    TraceServiceClient::new(channel)
        .export(ExportTraceServiceRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn https_post(
    handle: &ReceiverHandle,
    pki: &Pki,
    client: &CertPair,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    kotel_tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            CertificateDer::pem_file_iter(&client.cert)
                .unwrap()
                .map(Result::unwrap)
                .collect(),
            PrivateKeyDer::from_pem_file(&client.key).unwrap(),
        )
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(handle.http_addr().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    tls.read_to_string(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_receiver_keeps_the_peer_and_refuses_bad_clients() {
    let dir = std::env::temp_dir().join(format!("kotel-receiver-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(pki) = pki::make(&dir, "mtls_receiver_keeps_the_peer_and_refuses_bad_clients") else {
        return;
    };
    let cfg = ReceiverConfig {
        grpc: Some("127.0.0.1:0".parse().unwrap()),
        http: Some("127.0.0.1:0".parse().unwrap()),
        tls: Some(ServerTlsFiles {
            cert: pki.server.cert.clone(),
            key: pki.server.key.clone(),
            client_ca: Some(pki.ca.clone()),
        }),
        ..ReceiverConfig::default()
    };
    let (tx, mut rx) = cfg.channel();
    let handle = receiver::start(&cfg, tx).await.unwrap();

    export(&handle, &pki, Some(&pki.client))
        .await
        .expect("mTLS export");
    let Some(Received::Traces { peer, .. }) = rx.recv().await else {
        panic!("traces");
    };
    let peer = peer.expect("the peer address survives TLS (linking needs it)");
    assert!(peer.ip().is_loopback() && peer.port() != 0, "{peer}");
    let reply = https_post(&handle, &pki, &pki.client).await.expect("HTTPS");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    let stats = handle.stats();
    assert_eq!(stats.rejected_handshake.load(Ordering::Relaxed), 0);
    for (bad, client) in [
        ("no client certificate", None),
        ("a wrong-CA client certificate", Some(&pki.wrong_client)),
        ("an expired client certificate", Some(&pki.client_expired)),
    ] {
        let before = stats.rejected_handshake.load(Ordering::Relaxed);
        assert!(
            export(&handle, &pki, client).await.is_err(),
            "{bad} refused"
        );
        let mut counted = before;
        for _ in 0..100 {
            counted = stats.rejected_handshake.load(Ordering::Relaxed);
            if counted > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(counted > before, "{bad} counted");
        // An HTTPS connection is one handshake: exactly one more.
        if let Some(client) = client {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = stats.rejected_handshake.load(Ordering::Relaxed);
            assert!(https_post(&handle, &pki, client).await.is_err());
            for _ in 0..100 {
                if stats.rejected_handshake.load(Ordering::Relaxed) > before {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(stats.rejected_handshake.load(Ordering::Relaxed), before + 1);
        }
    }
    // A plaintext client is refused too.
    let plain = format!("http://{}", handle.grpc_addr().unwrap());
    let plain_ok = match TraceServiceClient::connect(plain).await {
        Ok(mut c) => c.export(ExportTraceServiceRequest::default()).await.is_ok(),
        Err(_) => false,
    };
    assert!(!plain_ok, "plaintext gRPC to a TLS receiver must fail");
    assert_eq!(stats.traces.accepted_requests.load(Ordering::Relaxed), 2);
    assert!(rx.try_recv().is_ok(), "the HTTPS request");
    assert!(rx.try_recv().is_err(), "nothing from the refused clients");
    handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
