//! Client TLS for the OTLP exporters: the rustls configuration built from a CA file (or the
//! system roots) and an optional client certificate and key for mTLS, and plain-language
//! descriptions of handshake failures.
//!
//! TLS failures never fall back to plaintext: whether a connection uses TLS is decided once,
//! from the endpoint's scheme (see [`Security`]), when the exporter is built.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use super::ExportBuildError;

/// One PEM file of the TLS settings and where it was configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFile {
    /// The file.
    pub path: PathBuf,
    /// The config field or environment variable that named it, for messages, e.g.
    /// `export.tls.ca_file` or `OTEL_EXPORTER_OTLP_CERTIFICATE`.
    pub source: &'static str,
}

impl TlsFile {
    /// `path` as configured by `source`.
    pub fn new(path: impl Into<PathBuf>, source: &'static str) -> TlsFile {
        TlsFile {
            path: path.into(),
            source,
        }
    }
}

/// Client TLS settings of the exporters. Paths only: nothing secret is held or shown here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA certificates (PEM) that the receiver's certificate must chain to. Without it the
    /// system's roots are used.
    pub ca_file: Option<TlsFile>,
    /// Client certificate chain (PEM) for mTLS; needs `key_file`.
    pub cert_file: Option<TlsFile>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `cert_file`.
    pub key_file: Option<TlsFile>,
    /// Plaintext for an OTLP/gRPC endpoint given without a scheme (`host:port`), as the OTLP
    /// exporter specification's `insecure` option. An `http://` or `https://` scheme decides on
    /// its own: `https://` is always TLS, whatever this says.
    pub insecure: bool,
}

impl TlsSettings {
    /// Whether any file is configured (they have no effect on an `http://` endpoint).
    pub fn has_files(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// Whether an exporter's connections use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plaintext: the endpoint says `http://` (or, for gRPC without a scheme, `insecure`).
    Plain,
    /// TLS: the endpoint says `https://` (or, for gRPC without a scheme, not `insecure`).
    Tls,
}

/// The rustls client configuration for `settings`, with `alpn` protocols (`h2` for gRPC,
/// none for OTLP/HTTP, where the connector sets `http/1.1`). Reads and checks every file now,
/// so a bad file stops the agent at startup; errors name the file and the setting, never the
/// key's contents. Uses ring as the crypto provider explicitly (no process-wide default needed).
pub fn client_config(
    settings: &TlsSettings,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, ExportBuildError> {
    let roots = match &settings.ca_file {
        Some(ca) => ca_roots(ca)?,
        None => system_roots()?,
    };
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("export.tls", None, format!("TLS setup: {e}")))?
            .with_root_certificates(roots);
    let mut config = match (&settings.cert_file, &settings.key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), None) => {
            return Err(tls_error(
                cert.source,
                Some(&cert.path),
                "a client certificate needs its private key too (export.tls.key_file or \
                 OTEL_EXPORTER_OTLP_CLIENT_KEY)"
                    .into(),
            ))
        }
        (None, Some(key)) => {
            return Err(tls_error(
                key.source,
                Some(&key.path),
                "a client key needs its certificate too (export.tls.cert_file or \
                 OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE)"
                    .into(),
            ))
        }
        (Some(cert), Some(key)) => {
            let chain = certificates(cert)?;
            check_validity(cert, &chain[0])?;
            let private = private_key(key)?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                let why = match e {
                    rustls::Error::InconsistentKeys(_) => {
                        "the private key does not belong to the certificate".to_string()
                    }
                    other => format!("the key cannot be used: {other}"),
                };
                tls_error(key.source, Some(&key.path), why)
            })?
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn tls_error(source: &'static str, path: Option<&Path>, problem: String) -> ExportBuildError {
    ExportBuildError::Tls {
        setting: source,
        path: path.map(|p| p.display().to_string()).unwrap_or_default(),
        problem,
    }
}

/// Reads a whole file, naming it and its setting on failure.
fn read(file: &TlsFile) -> Result<Vec<u8>, ExportBuildError> {
    std::fs::read(&file.path).map_err(|e| {
        tls_error(
            file.source,
            Some(&file.path),
            format!("cannot read it: {e}"),
        )
    })
}

/// Refuses kotel's own client certificate when it has expired or is not valid yet: every
/// handshake would fail, and a TLS 1.3 receiver does not always say why.
fn check_validity(file: &TlsFile, cert: &CertificateDer<'_>) -> Result<(), ExportBuildError> {
    let Some(period) = super::cert_validity::validity(cert) else {
        return Ok(()); // unreadable here; the receiver will judge it
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let at = |secs: i64| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    };
    if now > period.not_after {
        return Err(tls_error(
            file.source,
            Some(&file.path),
            format!(
                "the client certificate expired at {}; renew it",
                at(period.not_after)
            ),
        ));
    }
    if now < period.not_before {
        return Err(tls_error(
            file.source,
            Some(&file.path),
            format!(
                "the client certificate is not valid until {}",
                at(period.not_before)
            ),
        ));
    }
    Ok(())
}

/// Every certificate in a PEM file; at least one.
fn certificates(file: &TlsFile) -> Result<Vec<CertificateDer<'static>>, ExportBuildError> {
    let pem = read(file)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            tls_error(
                file.source,
                Some(&file.path),
                format!("not a valid PEM certificate file: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(tls_error(
            file.source,
            Some(&file.path),
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file. The parser's own message is not shown: it may quote the
/// file, and the file is a secret.
fn private_key(file: &TlsFile) -> Result<PrivateKeyDer<'static>, ExportBuildError> {
    let pem = read(file)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        tls_error(
            file.source,
            Some(&file.path),
            "holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
        )
    })
}

fn ca_roots(file: &TlsFile) -> Result<RootCertStore, ExportBuildError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(file)? {
        roots.add(cert).map_err(|e| {
            tls_error(
                file.source,
                Some(&file.path),
                format!("not a usable CA certificate: {e}"),
            )
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, ExportBuildError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let detail = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(tls_error(
            "export.tls.ca_file",
            None,
            format!(
                "the endpoint uses TLS, no CA file is set and no system CA certificates were \
                 found{detail}; set export.tls.ca_file or OTEL_EXPORTER_OTLP_CERTIFICATE"
            ),
        ));
    }
    Ok(roots)
}

/// TLS failures seen by the exporters since the process started (handshakes refused either
/// way, or a peer that does not speak TLS). Exported as `kotel_export_tls_failures_total`.
static FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many export attempts failed in TLS so far.
pub fn failures() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

/// Counts a TLS failure that was recognised some other way than by its rustls error.
pub fn count_failure() {
    FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// If `error` (or any error it was caused by) is a TLS failure, counts it and describes it in
/// plain words ("the receiver's certificate has expired", …) with the setting to check.
pub fn describe_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let tls = find_rustls_error(error)?;
    FAILURES.fetch_add(1, Ordering::Relaxed);
    Some(describe(tls))
}

fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An io::Error's `source()` skips the error it wraps (and connectors wrap tokio-rustls'
        // io::Error in another one), so look inside each layer too.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(tls) = find_rustls_error(inner) {
                return Some(tls);
            }
        }
        current = e.source();
    }
    None
}

const CHECK_CA: &str = "check export.tls.ca_file / OTEL_EXPORTER_OTLP_CERTIFICATE";
const CHECK_CLIENT: &str = "check export.tls.cert_file / OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";

fn describe(error: &rustls::Error) -> String {
    use rustls::Error as E;
    match error {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "TLS handshake failed: the receiver's certificate is not signed by a trusted CA \
             (unknown issuer); {CHECK_CA}"
        ),
        E::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "TLS handshake failed: the receiver's certificate expired".into(),
        E::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "TLS handshake failed: the receiver's certificate is not valid yet".into(),
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "TLS handshake failed: the receiver's certificate is not valid for the endpoint's \
              host name"
            .into(),
        E::InvalidCertificate(other) => {
            format!("TLS handshake failed: the receiver's certificate is invalid: {other:?}")
        }
        E::AlertReceived(AlertDescription::CertificateExpired) => format!(
            "TLS handshake failed: the receiver refused kotel's client certificate: certificate \
             expired; {CHECK_CLIENT}"
        ),
        E::AlertReceived(
            alert @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied),
        ) => format!(
            "TLS handshake failed: the receiver refused kotel's client certificate \
             (TLS alert {alert:?}); {CHECK_CLIENT}"
        ),
        E::AlertReceived(AlertDescription::CertificateRequired) => format!(
            "TLS handshake failed: the receiver requires a client certificate (mTLS) and none \
             is configured; {CHECK_CLIENT} and export.tls.key_file / \
             OTEL_EXPORTER_OTLP_CLIENT_KEY"
        ),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "TLS handshake failed: the receiver did not answer in TLS (if it is a plaintext \
             receiver, say so with an http:// endpoint)"
                .into()
        }
        other => format!("TLS failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_described_with_the_setting_to_check() {
        let unknown = describe(&rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(
            unknown.contains("unknown issuer") && unknown.contains("ca_file"),
            "{unknown}"
        );
        let expired = describe(&rustls::Error::InvalidCertificate(
            CertificateError::Expired,
        ));
        assert!(expired.contains("certificate expired"), "{expired}");
        let client = describe(&rustls::Error::AlertReceived(AlertDescription::UnknownCA));
        assert!(
            client.contains("client certificate") && client.contains("cert_file"),
            "{client}"
        );
    }

    #[test]
    fn rustls_errors_are_found_through_io_errors_and_sources() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        // As hyper-rustls hands it on: tokio-rustls' io::Error inside another io::Error.
        let io = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, inner));
        let before = failures();
        let text = describe_failure(&io).expect("a TLS failure");
        assert!(text.contains("unknown issuer"), "{text}");
        assert!(failures() > before);
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(describe_failure(&plain), None);
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kotel-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn bad_files_name_the_setting_and_path_never_the_key() {
        let d = dir("bad");
        let missing = TlsFile::new(d.join("nope.crt"), "export.tls.ca_file");
        let err = client_config(
            &TlsSettings {
                ca_file: Some(missing),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("export.tls.ca_file") && err.contains("nope.crt"),
            "{err}"
        );

        let garbage = d.join("garbage.pem");
        std::fs::write(&garbage, "hello\n").unwrap();
        let err = client_config(
            &TlsSettings {
                ca_file: Some(TlsFile::new(&garbage, "OTEL_EXPORTER_OTLP_CERTIFICATE")),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && err.contains("no PEM certificate"),
            "{err}"
        );

        // A "key" whose body is a secret-looking string that is not a key.
        let secret = "hunter2-s3cret!key#material";
        let key = d.join("client.key");
        std::fs::write(
            &key,
            format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"),
        )
        .unwrap();
        let e = private_key(&TlsFile::new(&key, "export.tls.key_file")).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("export.tls.key_file"), "{shown}");

        let cert = d.join("client.crt");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = client_config(
            &TlsSettings {
                cert_file: Some(TlsFile::new(&cert, "export.tls.cert_file")),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("key_file"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
