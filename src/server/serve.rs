//! The accept loop: a task per connection, at most `server.max_connections` at once, and the
//! graceful shutdown that lets the requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::app::App;
use crate::server::connection::{Protocols, spawn_plain};
use crate::server::https::{TlsConn, serve_tls};

/// Serves connections from `listener` until `shutdown` completes, then stops accepting and
/// gives in-flight requests up to `server.shutdown_timeout` to finish. With `[server.tls]` the
/// listener speaks HTTPS (HTTP/2 or HTTP/1.1, as ALPN agreed), otherwise plain HTTP/1.1.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Providers are discovered in the background of the first listener to start.
    app.providers.start();
    let graceful = GracefulShutdown::new();
    // hyper-util's GracefulShutdown does not take an HTTP/1 connection with upgrades, so
    // those are watched by hand: each holds a receiver, `true` asks it to finish, and the
    // sender's `closed()` is every one of them gone.
    let (stop_http1, http1_stopped) = watch::channel(false);
    let protocols = Protocols::new(http1_stopped);
    tokio::pin!(shutdown);
    while let Some((stream, peer, permit)) = accept(&listener, &app, shutdown.as_mut()).await {
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        match app.tls.clone() {
            None => spawn_plain(app, stream, peer, permit, &protocols),
            Some(acceptor) => {
                let tls = TlsConn {
                    acceptor,
                    stream,
                    peer,
                    permit,
                };
                tokio::spawn(serve_tls(app, tls, protocols.clone(), graceful.watcher()));
            }
        }
    }
    drop(listener);
    drain(&app, graceful, stop_http1, protocols).await;
    Ok(())
}

/// The next connection with its place under `server.max_connections`, or `None` once
/// `shutdown` completes. At the limit, waits until a connection closes: new clients wait in
/// the kernel's queue instead of the process running out of file descriptors.
async fn accept(
    listener: &TcpListener,
    app: &App,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = tokio::select! {
        permit = app.connections.clone().acquire_owned() => permit.ok()?,
        () = shutdown.as_mut() => return None,
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => return Some((stream, peer, permit)),
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning on the error.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = shutdown.as_mut() => return None,
        }
    }
}

/// After the listener closed: requests in flight and open tunnels get `shutdown_timeout`
/// together; then the tunnels still open are closed (the connections still serving a request
/// go with the worker's task).
async fn drain(
    app: &App,
    graceful: GracefulShutdown,
    stop_http1: watch::Sender<bool>,
    protocols: Protocols,
) {
    let tunnels = app.gate.tunnels();
    let _ = stop_http1.send(true);
    drop(protocols);
    let drained = async {
        tokio::join!(graceful.shutdown(), stop_http1.closed());
        tunnels.wait_empty().await;
    };
    tokio::select! {
        () = drained => {}
        () = tokio::time::sleep(app.config.server.shutdown_timeout) => {
            let closed = tunnels.close_all();
            tracing::warn!("shutdown timeout passed; closing the remaining connections and {closed} tunnels");
        }
    }
}
