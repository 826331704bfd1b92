//! A rustls server configuration from PEM files: mutual TLS when a client CA is given, the
//! ring crypto provider only.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;

use crate::files::{file_err, read_certs, read_key, read_roots, TlsError, TlsFile};

/// ALPN for gRPC (HTTP/2); gRPC clients insist on it.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for HTTP/1.1 servers.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

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

/// Installs rustls's ring provider as the process default, once; later calls (and a provider
/// someone else installed first) are fine. rustls panics without a default provider when
/// more than one is compiled in, so every TLS entry point calls this first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
}
