//! TLS for kotel's servers (the renderer sidecar here, and the agent's OTLP receiver, which
//! uses this module too): PEM files become a rustls `ServerConfig` (mTLS when a client CA is
//! given), and accepted TCP connections are handshaken off the accept loop, each within a
//! deadline, with failures classified so that they can be counted and logged clearly.
//!
//! rustls with the ring provider only. Nothing here logs or returns key material: errors name
//! the file and what was wrong with it, never its contents.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, CertificateError, RootCertStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// ALPN for gRPC (HTTP/2); gRPC clients insist on it.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for HTTP/1.1 servers.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once per listener (a few KiB each); further connections
/// wait in the listen backlog until one finishes or times out. A storm of silent clients can
/// thus delay new clients by at most [`HANDSHAKE_TIMEOUT`], never stall the listener.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// The PEM files a TLS server needs. `client_ca` turns on mutual TLS: clients must then
/// present a certificate signed by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; `None`: no client
    /// certificates asked for.
    pub client_ca: Option<PathBuf>,
}

/// Which file a [`TlsError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The certificate chain.
    Cert,
    /// The private key.
    Key,
    /// The CA bundle client certificates are checked against.
    ClientCa,
    /// The CA bundle a client checks a server's certificate against.
    Ca,
}

impl TlsFile {
    /// The config key naming this file (`cert_file`, `key_file`, `client_ca_file`).
    pub fn config_key(self) -> &'static str {
        match self {
            TlsFile::Cert => "cert_file",
            TlsFile::Key => "key_file",
            TlsFile::ClientCa => "client_ca_file",
            TlsFile::Ca => "ca_file",
        }
    }

    /// What the file is, in words.
    fn what(self) -> &'static str {
        match self {
            TlsFile::Cert => "certificate file",
            TlsFile::Key => "private key file",
            TlsFile::ClientCa => "client CA file",
            TlsFile::Ca => "CA file",
        }
    }
}

/// Why a TLS server configuration could not be built. Messages name the file, never its
/// contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{} {}: {message}", .file.what(), .path.display())]
    File {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What was wrong (without the file's contents).
        message: String,
    },
    /// rustls refused the combination, e.g. a key that does not match the certificate.
    #[error("{message}")]
    Config {
        /// The file the problem is attributed to.
        file: TlsFile,
        /// What rustls said, with the paths involved.
        message: String,
    },
}

impl TlsError {
    /// The file the error is about.
    pub fn file(&self) -> TlsFile {
        match self {
            TlsError::File { file, .. } | TlsError::Config { file, .. } => *file,
        }
    }
}

/// Installs rustls's ring provider as the process default, once; later calls (and a provider
/// someone else installed first) are fine. rustls panics without a default provider when
/// more than one is compiled in, so every TLS entry point calls this first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn file_err(file: TlsFile, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        file,
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn check_readable(file: TlsFile, path: &Path) -> Result<(), TlsError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| file_err(file, path, format!("cannot read it: {e}")))
}

/// Reads every certificate in a PEM file; an error when there is none.
pub fn read_certs(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    check_readable(file, path)?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(file, path, format!("cannot read it: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(file, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(
            file,
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    check_readable(TlsFile::Key, path)?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        let message = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_string()
            }
            other => format!("not a valid PEM private key: {other}"),
        };
        file_err(TlsFile::Key, path, message)
    })
}

/// Reads a CA bundle into a root store.
pub fn read_roots(file: TlsFile, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(file, path)? {
        roots
            .add(cert)
            .map_err(|e| file_err(file, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Builds a server configuration from `files`, offering `alpn` (e.g. [`ALPN_H2`] for gRPC).
/// With a client CA, every client must present a certificate that chains to it.
pub fn server_config(
    files: &ServerTlsFiles,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(TlsFile::Cert, &files.cert)?;
    let key = read_key(&files.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            file: TlsFile::Cert,
            message: e.to_string(),
        })?;
    let builder = match &files.client_ca {
        Some(path) => {
            let roots = read_roots(TlsFile::ClientCa, path)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| file_err(TlsFile::ClientCa, path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config {
            file: TlsFile::Key,
            message: format!(
                "certificate {} with private key {}: {}",
                files.cert.display(),
                files.key.display(),
                match e {
                    rustls::Error::InconsistentKeys(_) =>
                        "the key does not belong to the certificate".to_string(),
                    other => other.to_string(),
                }
            ),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Why a client's TLS handshake failed, for counting and for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeFailure {
    /// A stable short label: `timeout`, `not_tls`, `client_rejected_server`,
    /// `unknown_issuer`, `expired`, `no_client_cert`, `bad_client_cert`, `closed` or `other`.
    pub kind: &'static str,
    /// What happened, in words, for the log.
    pub message: String,
}

impl HandshakeFailure {
    fn new(kind: &'static str, message: impl Into<String>) -> HandshakeFailure {
        HandshakeFailure {
            kind,
            message: message.into(),
        }
    }

    /// Classifies the error a handshake ended with.
    pub fn classify(e: &std::io::Error) -> HandshakeFailure {
        let Some(tls) = e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) else {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe => HandshakeFailure::new(
                    "closed",
                    format!("the client closed the connection during the handshake: {e}"),
                ),
                _ => HandshakeFailure::new("other", e.to_string()),
            };
        };
        match tls {
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                HandshakeFailure::new(
                    "not_tls",
                    format!("the client did not speak TLS (a plaintext client?): {tls}"),
                )
            }
            rustls::Error::AlertReceived(alert) => {
                let why = match alert {
                    AlertDescription::UnknownCA => {
                        "it does not trust the CA that signed our certificate"
                    }
                    AlertDescription::CertificateExpired => "it says our certificate has expired",
                    AlertDescription::BadCertificate | AlertDescription::CertificateUnknown => {
                        "it does not accept our certificate"
                    }
                    _ => "it sent an alert",
                };
                HandshakeFailure::new(
                    "client_rejected_server",
                    format!("the client refused the handshake: {why} (alert {alert:?})"),
                )
            }
            rustls::Error::NoCertificatesPresented => HandshakeFailure::new(
                "no_client_cert",
                "the client presented no certificate, and mutual TLS requires one",
            ),
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => HandshakeFailure::new(
                    "unknown_issuer",
                    "client certificate: unknown issuer (not signed by client_ca_file)",
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    HandshakeFailure::new("expired", "client certificate expired")
                }
                other => HandshakeFailure::new(
                    "bad_client_cert",
                    format!("client certificate refused: {other}"),
                ),
            },
            other => HandshakeFailure::new("other", other.to_string()),
        }
    }
}

/// A TCP connection whose TLS handshake finished, with the client's address.
pub type Accepted = (TlsStream<TcpStream>, SocketAddr);

/// Accepts connections on `listener` and runs each TLS handshake on its own task, at most
/// [`MAX_PENDING_HANDSHAKES`] at once and each within `timeout`, so that a slow or hostile
/// client (or a storm of them) never stalls the accept loop or the connections already
/// served. Established connections come out of the returned channel (capacity 16: a
/// consumer that stops reading stops the accepting); each failure is passed to
/// `on_failure` and the connection closed. The task ends when the channel's receiver is
/// dropped, or when the returned handle is aborted.
pub fn spawn_handshakes<F>(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    on_failure: F,
) -> (mpsc::Receiver<Accepted>, JoinHandle<()>)
where
    F: Fn(SocketAddr, HandshakeFailure) + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel::<Accepted>(16);
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        let mut pending: JoinSet<Result<Accepted, (SocketAddr, HandshakeFailure)>> = JoinSet::new();
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                Some(done) = pending.join_next() => match done {
                    Ok(Ok(accepted)) => {
                        if tx.send(accepted).await.is_err() {
                            return;
                        }
                    }
                    Ok(Err((peer, failure))) => on_failure(peer, failure),
                    Err(_) => {} // a handshake task panicked or was cancelled: nothing to serve
                },
                accepted = listener.accept(), if pending.len() < MAX_PENDING_HANDSHAKES => {
                    match accepted {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            let acceptor = acceptor.clone();
                            pending.spawn(async move {
                                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                                    Ok(Ok(tls)) => Ok((tls, peer)),
                                    Ok(Err(e)) => Err((peer, HandshakeFailure::classify(&e))),
                                    Err(_) => Err((
                                        peer,
                                        HandshakeFailure::new(
                                            "timeout",
                                            format!(
                                                "the client did not finish its TLS handshake within {} s",
                                                timeout.as_secs_f64()
                                            ),
                                        ),
                                    )),
                                }
                            });
                        }
                        Err(e) => {
                            // Out of file descriptors, usually: back off instead of spinning.
                            tracing::warn!(error = %e, "kotel.tls.accept_failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let files = ServerTlsFiles {
            cert: dir.path().join("nope.crt"),
            key: empty.clone(),
            client_ca: None,
        };
        let err = server_config(&files, &[ALPN_H2]).unwrap_err();
        assert_eq!(err.file(), TlsFile::Cert);
        assert!(err.to_string().contains("nope.crt"), "{err}");

        let files = ServerTlsFiles {
            cert: empty.clone(),
            ..files
        };
        let err = server_config(&files, &[ALPN_H2]).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn a_key_file_holding_junk_names_the_key_and_not_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("server.key");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = read_key(&key);
        // Whatever rustls makes of it, the message names the file and never echoes it.
        if let Err(e) = err {
            let shown = format!("{e} {e:?}");
            assert!(shown.contains("server.key"), "{shown}");
            assert!(!shown.contains("c2VjcmV0"), "{shown}");
        }
    }

    #[test]
    fn handshake_errors_are_classified() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let kind = |e| HandshakeFailure::classify(&io(e)).kind;
        assert_eq!(
            kind(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            )),
            "unknown_issuer"
        );
        assert_eq!(
            kind(rustls::Error::InvalidCertificate(CertificateError::Expired)),
            "expired"
        );
        assert_eq!(
            kind(rustls::Error::NoCertificatesPresented),
            "no_client_cert"
        );
        assert_eq!(
            kind(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
            "client_rejected_server"
        );
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(HandshakeFailure::classify(&eof).kind, "closed");
    }
}
