//! The TLS connector of the OTLP/gRPC exporter: TCP, then a rustls handshake, then a wait for
//! the receiver's first bytes, so that a receiver refusing kotel's client certificate is
//! reported with its TLS alert ("unknown CA", "certificate expired", …).
//!
//! Why the wait: under TLS 1.3 the client's handshake is over before the server has checked
//! the client certificate. A server that refuses it sends an alert and closes; if the client
//! writes first (HTTP/2's preface), the write fails with a broken pipe and the alert is never
//! read. An HTTP/2 server speaks first (its SETTINGS frame), so the connector reads once:
//! the server's bytes are kept and handed to HTTP/2 unchanged, an alert becomes the
//! connection's error.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;

/// The stream the connector hands to tonic.
type Stream = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Longest wait for the receiver's first bytes after the handshake (at most half the connect
/// timeout). A receiver that does not speak first (no HTTP/2 server is known to) only delays
/// each new connection by this.
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(2);

/// Connects over TCP, then always does a TLS handshake (whatever scheme tonic asks for), with
/// the server name taken from the URI's host, then waits for the receiver's first bytes.
#[derive(Clone)]
pub(super) struct TlsConnector {
    inner: HttpsConnector<HttpConnector>,
    first_bytes_wait: Duration,
}

impl TlsConnector {
    /// A connector using `config` (ALPN `h2`), each TCP connect bounded by `connect_timeout`.
    pub(super) fn new(config: Arc<rustls::ClientConfig>, connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        TlsConnector {
            inner: HttpsConnector::from((http, config)),
            first_bytes_wait: FIRST_BYTES_WAIT.min(connect_timeout / 2),
        }
    }
}

impl tower_service::Service<Uri> for TlsConnector {
    type Response = FirstBytes<Stream>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut parts = uri.into_parts();
        parts.scheme = Some(hyper::http::uri::Scheme::HTTPS);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(hyper::http::uri::PathAndQuery::from_static("/"));
        }
        // Cannot fail: the parts came from a valid URI with an authority. Should it ever, the
        // URI without a scheme makes the inner connector fail the connection (never plaintext).
        let uri = Uri::from_parts(parts).unwrap_or_default();
        let connecting = self.inner.call(uri);
        let wait = self.first_bytes_wait;
        Box::pin(async move {
            let stream = connecting.await?;
            let mut io = TokioIo::new(stream);
            let mut first = vec![0u8; 16 * 1024];
            let n = match tokio::time::timeout(wait, io.read(&mut first)).await {
                Err(_) => 0, // nothing yet: carry on, HTTP/2 will find out
                Ok(Ok(0)) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the receiver closed the connection right after the TLS handshake",
                    )
                    .into())
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e.into()),
            };
            first.truncate(n);
            Ok(FirstBytes {
                first,
                pos: 0,
                inner: io.into_inner(),
            })
        })
    }
}

/// A stream whose first bytes were read ahead; they are read again first.
pub(super) struct FirstBytes<T> {
    first: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T: Read + Unpin> Read for FirstBytes<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.first.len() {
            let rest = &this.first[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.first.len() {
                this.first = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for FirstBytes<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_read_ahead_come_first_then_the_stream() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let stream = FirstBytes {
            first: b"hello ".to_vec(),
            pos: 0,
            inner: TokioIo::new(ours),
        };
        let mut io = TokioIo::new(stream);
        theirs.write_all(b"world").await.unwrap();
        io.write_all(b"ping").await.unwrap();
        io.flush().await.unwrap();
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        drop(theirs);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"hello world");
    }
}
