//! kotel-tls: TLS for kotel's servers, the renderer sidecar and the agent's OTLP receiver. PEM
//! files become a rustls `ServerConfig` (mTLS when a client CA is given), and accepted TCP
//! connections are handshaken off the accept loop, each within a deadline, with failures
//! classified so that they can be counted and logged clearly. The agent's client of the
//! sidecar reads its PEM files with the same readers ([`read_certs`], [`read_key`]).
//!
//! rustls with the ring provider only. Nothing here logs or returns key material: errors name
//! the file and what was wrong with it, never its contents.
#![warn(missing_docs)]

mod files;
mod handshake;
mod server;

pub use files::{read_certs, read_key, read_roots, TlsError, TlsFile};
pub use handshake::{
    spawn_handshakes, Accepted, HandshakeFailure, HANDSHAKE_TIMEOUT, MAX_PENDING_HANDSHAKES,
};
pub use server::{install_crypto_provider, server_config, ServerTlsFiles, ALPN_H2, ALPN_HTTP1};
