//! The PEM files of a TLS configuration: certificate chains, private keys and CA bundles read
//! into rustls types, with errors that name the file and what was wrong with it, never its
//! contents.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

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

/// Why a TLS configuration could not be built from its files. Messages name the file, never
/// its contents.
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

/// A [`TlsError::File`] about `path`.
pub(crate) fn file_err(file: TlsFile, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        file,
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Whether `path` exists and can be looked at, so that a missing file is named as such.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
