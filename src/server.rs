//! Listening: the accept loop, one task per connection, graceful shutdown, and `run`, which
//! starts one single-threaded runtime per worker.
//!
//! One current-thread runtime per core (all accepting on the same listening socket) rather than
//! tokio's work-stealing runtime: on this workload it halves context switches per request and
//! was worth ~25% throughput (../shared/PERF-NOTES.md).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Config;
use crate::error::StartError;
use crate::handler::{self, ConnInfo};

/// Serves connections from `listener` until `shutdown` completes, then stops accepting and
/// gives in-flight requests up to `server.shutdown_timeout` to finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.server.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning on the error.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let info = Arc::new(conn_info(peer, "http"));
        let app = app.clone();
        let service = service_fn(move |req| handler::handle(app.clone(), info.clone(), req));
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection from {peer} ended: {e}");
            }
        });
    }

    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(app.config.server.shutdown_timeout) => {
            tracing::warn!("shutdown timeout passed; closing the remaining connections");
        }
    }
    Ok(())
}

fn conn_info(peer: SocketAddr, proto: &'static str) -> ConnInfo {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    ConnInfo {
        client_ip: HeaderValue::from_str(&ip.to_string()).expect("an IP address is header-safe"),
        proto,
    }
}

/// Runs sessiongate with `config` until SIGTERM or SIGINT, then shuts down gracefully.
pub fn run(config: Config) -> Result<(), StartError> {
    let addr = config.server.listen;
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| StartError::Listen { addr, source })?;
    let workers = config.server.workers;
    let app = App::new(config);
    tracing::info!(
        "sessiongate listening on http://{} ({workers} workers), upstream {}",
        listener.local_addr().unwrap_or(addr),
        app.config.upstream.authority
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let listener = listener.try_clone().map_err(StartError::Runtime)?;
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let thread = std::thread::Builder::new()
            .name(format!("sessiongate-worker-{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    serve(listener, app, async move {
                        let _ = stop.wait_for(|stopped| *stopped).await;
                    })
                    .await
                })
            })
            .map_err(StartError::Runtime)?;
        threads.push(thread);
    }
    drop(listener);

    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    signals.block_on(wait_for_signal())?;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("worker failed: {e}"),
            Err(_) => tracing::error!("worker panicked"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> Result<(), StartError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartError::Runtime)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
