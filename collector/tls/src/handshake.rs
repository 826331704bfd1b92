//! Server-side TLS handshakes off the accept loop: each within a deadline, a bounded number at
//! once, failures classified so that they can be counted and logged clearly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once per listener (a few KiB each); further connections
/// wait in the listen backlog until one finishes or times out. A storm of silent clients can
/// thus delay new clients by at most [`HANDSHAKE_TIMEOUT`], never stall the listener.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

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
