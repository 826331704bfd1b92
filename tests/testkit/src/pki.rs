//! Test certificates for the Rust TLS tests, made on the spot by `tests/python/tls_certs.py`
//! (python3 with `cryptography`, from tests/python/requirements.txt), which the pytest tests
//! use too. Nothing is checked in: every call makes fresh keys. Without python3 or
//! `cryptography` a test says so in one loud line and skips.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A certificate and its private key, as PEM file paths.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CertPair {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// Every file a TLS test may need: two unrelated certificate authorities (the trusted one and
/// a "wrong" one) and, under them, server certificates for `localhost`, `127.0.0.1` and `::1`
/// and client certificates for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pki {
    /// The trusted CA's certificate (PEM).
    pub ca: PathBuf,
    /// A CA that signed nothing the trusted one did.
    pub wrong_ca: PathBuf,
    /// A server certificate signed by the trusted CA.
    pub server: CertPair,
    /// A client certificate signed by the trusted CA.
    pub client: CertPair,
    /// [`Pki::server`], but valid only in the past.
    pub server_expired: CertPair,
    /// [`Pki::client`], but valid only in the past.
    pub client_expired: CertPair,
    /// A server certificate with the same names, signed by the wrong CA.
    pub wrong_server: CertPair,
    /// A client certificate signed by the wrong CA.
    pub wrong_client: CertPair,
}

/// Makes a fresh PKI in `dir`; or, when it cannot (no python3, no `cryptography`), says so
/// loudly on stderr, naming `test`, and returns `None` so that the test can skip.
pub fn make(dir: &Path, test: &str) -> Option<Pki> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/tls_certs.py");
    let why = match std::process::Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()
    {
        Ok(o) if o.status.success() => {
            return Some(serde_json::from_slice(&o.stdout).expect("tls_certs.py JSON"))
        }
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => format!("python3: {e}"),
    };
    // Straight to stderr, past the test harness's capture, so the skip is always visible.
    let _ = writeln!(
        std::io::stderr(),
        "!!!!!! KOTEL-TLS SKIPPED {test}: no test certificates (python3 with cryptography, \
         see tests/python/requirements.txt): {why} !!!!!!"
    );
    None
}
