//! An HTTPS connection: the TLS handshake, then HTTP/2 or HTTP/1.1, whichever ALPN agreed.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::server::connection::{Protocols, conn_info, service, until_asked_to_stop};
use crate::server::watchdog::{Watched, until_stalled};

/// An accepted connection on a TLS listener, before its handshake.
pub struct TlsConn {
    pub acceptor: TlsAcceptor,
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub permit: OwnedSemaphorePermit,
}

/// Whether a TLS connection speaks HTTP/2: only when ALPN agreed on `h2`. After `http/1.1`,
/// or with no ALPN at all, it is HTTP/1.1. The protocol is never guessed from the first bytes:
/// a client that agreed on one protocol in the handshake and then speaks another is in error,
/// and is answered by the protocol it agreed on, which refuses the other's bytes. (Guessing
/// served HTTP/2 on connections an edge proxy or a test suite had set up for HTTP/1.1.)
fn alpn_is_h2(alpn: Option<&[u8]>) -> bool {
    alpn == Some(b"h2")
}

/// Serves one TLS connection in its own task: the handshake, bounded by
/// `server.handshake_timeout` so a client that stalls it holds up nobody else, then HTTP/2 or
/// HTTP/1.1 as ALPN agreed.
pub async fn serve_tls(app: Arc<App>, conn: TlsConn, protocols: Protocols, graceful: Watcher) {
    let TlsConn {
        acceptor,
        stream,
        peer,
        permit,
    } = conn;
    let timeout = app.config.server.handshake_timeout;
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake with {peer} timed out after {timeout:?}");
            return;
        }
    };
    let h2 = alpn_is_h2(tls.get_ref().1.alpn_protocol());
    let deadline = app.config.server.header_read_timeout;
    let info = Arc::new(conn_info(&app, peer, "https", permit));
    let io = TokioIo::new(Watched::new(tls, info.clone()));
    let service = service(app, info.clone());
    // Each connection is watched by one shutdown signal only: the other is let go at once,
    // so the shutdown never waits for it. The connection is pinned here, where it is polled
    // (see `spawn_plain`).
    let Protocols {
        http1,
        http2,
        stop_http1,
    } = protocols;
    if h2 {
        drop(stop_http1);
        let conn = graceful.watch(http2.serve_connection(io, service));
        tokio::pin!(conn);
        until_stalled(conn, &info, deadline, peer).await;
    } else {
        drop(graceful);
        let conn = http1.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        until_stalled(until_asked_to_stop(conn, stop_http1), &info, deadline, peer).await;
    }
}

#[cfg(test)]
mod tests {
    use super::alpn_is_h2;

    #[test]
    fn only_an_agreed_h2_means_http2() {
        assert!(alpn_is_h2(Some(b"h2")));
        for other in [
            None,
            Some(&b"http/1.1"[..]),
            Some(b"h2c"),
            Some(b"H2"),
            Some(b""),
        ] {
            assert!(!alpn_is_h2(other), "{other:?}");
        }
    }
}
