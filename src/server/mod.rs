//! Listening: the accept loop, one task per connection, graceful shutdown, and `run`, which
//! starts one single-threaded runtime per worker.
//!
//! One current-thread runtime per core (all accepting on the same listening socket) rather than
//! tokio's work-stealing runtime: on this workload it halves context switches per request and
//! was worth ~25% throughput (docs/PERF-NOTES.md).

pub mod conn;
pub mod tls;
pub mod watchdog;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Config;
use crate::config::error::StartError;
use crate::handler;
use crate::http::limits::MAX_HEAD_BYTES;
use crate::server::conn::ConnInfo;
use crate::server::watchdog::{Activity, Watched};

/// Serves connections from `listener` until `shutdown` completes, then stops accepting and
/// gives in-flight requests up to `server.shutdown_timeout` to finish. With `[server.tls]` the
/// listener speaks HTTPS (HTTP/2 or HTTP/1.1, as ALPN agreed), otherwise plain HTTP/1.1.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    // hyper-util's GracefulShutdown does not take an HTTP/1 connection with upgrades, so
    // those are watched by hand: each holds a receiver, `true` asks it to finish, and the
    // sender's `closed()` is every one of them gone.
    let (stop_http1, http1_stopped) = tokio::sync::watch::channel(false);
    let protocols = Protocols::new(http1_stopped);
    let deadline = app.config.server.header_read_timeout;
    tokio::pin!(shutdown);

    loop {
        // At `server.max_connections`, stop accepting until one closes: new clients wait in
        // the kernel's queue instead of the process running out of file descriptors.
        let permit = tokio::select! {
            permit = app.connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning on the error.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        match app.tls.clone() {
            None => {
                let info = Arc::new(conn_info(&app, peer, "http", permit));
                let io = TokioIo::new(Watched::new(stream, info.clone()));
                let watch = info.clone();
                let service =
                    service_fn(move |req| handler::handle(app.clone(), info.clone(), req));
                let conn = until_asked_to_stop(
                    protocols
                        .http1
                        .serve_connection(io, service)
                        .with_upgrades(),
                    protocols.stop_http1.clone(),
                );
                tokio::spawn(async move {
                    until_stalled(conn, &watch, deadline, peer).await;
                });
            }
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
    // Requests in flight and open tunnels get `shutdown_timeout` together; then the tunnels
    // still open are closed (the connections still serving a request go with this task).
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
    Ok(())
}

/// How an accepted connection is served: one builder per protocol, and what asks HTTP/1
/// connections to finish.
#[derive(Clone)]
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// `true` asks every HTTP/1 connection, plain or TLS, to finish its request and close.
    stop_http1: tokio::sync::watch::Receiver<bool>,
}

impl Protocols {
    fn new(stop_http1: tokio::sync::watch::Receiver<bool>) -> Protocols {
        // No hyper header timer and no HTTP/2 pings: the watchdog closes slow and idle
        // connections for a fraction of the cost (src/watchdog.rs). The header count is left
        // at hyper's default of 100 (more get 431): setting it explicitly, even to 100, makes
        // hyper initialise a header array on every request instead of using an uninitialised
        // one.
        let mut http1 = http1::Builder::new();
        http1
            .header_read_timeout(None)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD_BYTES as u32);
        Protocols {
            http1,
            http2,
            stop_http1,
        }
    }
}

/// An accepted connection on a TLS listener, before its handshake.
struct TlsConn {
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
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
async fn serve_tls(
    app: Arc<App>,
    conn: TlsConn,
    protocols: Protocols,
    graceful: hyper_util::server::graceful::Watcher,
) {
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
    let watch = info.clone();
    let service = service_fn(move |req| handler::handle(app.clone(), info.clone(), req));
    // Each connection is watched by one shutdown signal only: the other is let go at once,
    // so the shutdown never waits for it.
    let Protocols {
        http1,
        http2,
        stop_http1,
    } = protocols;
    if h2 {
        drop(stop_http1);
        let conn = graceful.watch(http2.serve_connection(io, service));
        until_stalled(conn, &watch, deadline, peer).await;
    } else {
        drop(graceful);
        let conn = until_asked_to_stop(
            http1.serve_connection(io, service).with_upgrades(),
            stop_http1,
        );
        until_stalled(conn, &watch, deadline, peer).await;
    }
}

/// Serves an HTTP/1 connection (plain or TLS); once `stop` says so, lets its request in flight
/// finish and closes it (what `GracefulShutdown::watch` does for HTTP/2).
async fn until_asked_to_stop<I, S, B>(
    conn: hyper::server::conn::http1::UpgradeableConnection<I, S>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> hyper::Result<()>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => return ended,
        _ = stop.wait_for(|stop| *stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// Serves one connection until it ends, or until the watchdog finds it slow or idle for
/// `deadline` (then it is dropped, which closes it).
async fn until_stalled<E: std::fmt::Display>(
    conn: impl Future<Output = Result<(), E>>,
    info: &ConnInfo,
    deadline: Duration,
    peer: SocketAddr,
) {
    tokio::select! {
        biased;
        ended = conn => if let Err(e) = ended {
            tracing::debug!("connection from {peer} ended: {e}");
        },
        () = info.activity.stalled(deadline) => {
            tracing::debug!("closed a slow or idle connection from {peer}");
        }
    }
}

/// Answers every request on a plain-http listener with 308 to the same path on https, so
/// the login flow never runs over plain HTTP. `https_port` is the TLS listener's port.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("accept failed on the redirect listener: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let service = service_fn(move |req| async move {
            Ok::<_, std::convert::Infallible>(https_redirect(&req, https_port))
        });
        let conn = http1.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(conn);
    }
}

fn https_redirect<B>(
    req: &http::Request<B>,
    https_port: u16,
) -> http::Response<crate::proxy::Body> {
    use crate::http::error::Refusal;
    use crate::http::host::HostProblem;
    use http::StatusCode;
    // The redirect goes to the canonical host: never to a host the https listener would refuse.
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => crate::http::host::canonical(h.as_bytes()).map_err(HostProblem::Invalid),
        (None, _) => Err(HostProblem::Missing),
        (Some(_), Some(_)) => Err(HostProblem::Repeated),
    };
    let host = match host {
        Ok(host) => host,
        Err(problem) => return Refusal::BadHost(problem).response(),
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    match HeaderValue::from_str(&format!("https://{host}{port}{path}")) {
        Ok(location) => crate::http::response::redirect(StatusCode::PERMANENT_REDIRECT, location),
        Err(_) => Refusal::RedirectTarget.response(),
    }
}

fn conn_info(
    app: &App,
    peer: SocketAddr,
    proto: &'static str,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> ConnInfo {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    ConnInfo {
        peer: ip,
        peer_header: HeaderValue::from_str(&ip.to_string()).expect("an IP address is header-safe"),
        trusted: app
            .config
            .server
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip)),
        proto,
        activity: Activity::default(),
        permit: std::sync::Mutex::new(Some(permit)),
    }
}

/// Runs sessiongate with `config` until SIGTERM or SIGINT, then shuts down gracefully.
pub fn run(config: Config) -> Result<(), StartError> {
    raise_fd_limit(config.server.max_connections);
    let addr = config.server.listen;
    let listener = listen(addr).map_err(|source| StartError::Listen { addr, source })?;
    let workers = config.server.workers;
    // Bound before anything starts, so a port in use stops the start with its name.
    let metrics_listener = match config.metrics {
        Some(addr) => Some(listen(addr).map_err(|source| StartError::Listen { addr, source })?),
        None => None,
    };
    let app = App::new(config).map_err(StartError::Store)?;
    log_start(&app, &listener, workers, metrics_listener.as_ref());

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

    // The main thread waits for signals; the redirect listener, if any, runs beside that.
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    if let Some(addr) = app.config.server.redirect_http {
        let https_port = app.config.server.listen.port();
        let redirect = listen(addr).map_err(|source| StartError::Listen { addr, source })?;
        let mut stop = stop_rx.clone();
        signals.spawn(async move {
            let listener = match TcpListener::from_std(redirect) {
                Ok(l) => l,
                Err(e) => return tracing::error!("redirect listener failed: {e}"),
            };
            tracing::info!("redirecting http://{addr} to https");
            let stopped = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            if let Err(e) = serve_redirect(listener, https_port, stopped).await {
                tracing::error!("redirect listener failed: {e}");
            }
        });
    }
    if let Some(metrics) = metrics_listener {
        let app = app.clone();
        let mut stop = stop_rx.clone();
        signals.spawn(async move {
            let listener = match TcpListener::from_std(metrics) {
                Ok(l) => l,
                Err(e) => return tracing::error!("metrics listener failed: {e}"),
            };
            let stopped = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            if let Err(e) = crate::ops::metrics_server::serve_metrics(listener, app, stopped).await
            {
                tracing::error!("metrics listener failed: {e}");
            }
        });
    }
    signals.block_on(wait_for_signal(&app))?;
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

/// The start-up lines: one each for the listener, the upstream, the store, the policy and the
/// metrics, so the log says at once what this process serves and how.
fn log_start(
    app: &App,
    listener: &std::net::TcpListener,
    workers: usize,
    metrics: Option<&std::net::TcpListener>,
) {
    let config = &app.config;
    tracing::info!(
        "sessiongate listening on {}://{} ({workers} workers)",
        if app.tls.is_some() { "https" } else { "http" },
        listener.local_addr().unwrap_or(config.server.listen),
    );
    match &config.upstream.target {
        Some(t) => tracing::info!(
            "upstream {}://{} (timeout {:?})",
            if t.tls.is_some() { "https" } else { "http" },
            t.authority,
            t.timeout
        ),
        None => tracing::info!("no upstream: serving sign-in and forward-auth only"),
    }
    match &config.session.store {
        crate::config::StoreConfig::Memory => {
            tracing::info!("sessions in memory: a restart signs everyone out")
        }
        crate::config::StoreConfig::Redis(r) => tracing::info!(
            "sessions in redis {} (key prefix {:?}); requests needing a session get 503 while it does not answer",
            r.display,
            r.key_prefix
        ),
    }
    tracing::info!(
        "{} users and {} rules loaded; a request no rule matches: {}",
        config.users.len(),
        config.rules.rules.len(),
        match config.rules.default {
            crate::gate::rules::DefaultAccess::Login => "any signed-in user",
            crate::gate::rules::DefaultAccess::Deny => "refused (auth.default = \"deny\")",
        }
    );
    match metrics.and_then(|m| m.local_addr().ok()) {
        Some(addr) => tracing::info!("metrics served on http://{addr}/metrics"),
        None => tracing::info!("metrics off (set [metrics] listen to serve them)"),
    }
}

/// A non-blocking listening socket with a deep accept queue. The standard library's 128 drops
/// connections when a thousand clients arrive at once (SYN retransmits cost them a second);
/// the kernel caps the value at net.core.somaxconn.
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// File descriptors `max_connections` needs: each client connection can hold an upstream
/// connection too, and a few more for listeners, logs and Redis.
pub(crate) fn descriptors_needed(max_connections: usize) -> u64 {
    (max_connections as u64) * 2 + 256
}

/// Raises the soft file-descriptor limit to the hard one, as far as `max_connections` needs.
fn raise_fd_limit(max_connections: usize) {
    let wanted = descriptors_needed(max_connections);
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => tracing::warn!(
            "the file descriptor limit is {got}; server.max_connections = {max_connections} needs about {wanted} (raise `ulimit -n`)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the file descriptor limit: {e}"),
    }
}

/// Returns on SIGTERM or SIGINT; on every SIGHUP meanwhile, reloads the config's users and
/// rules and the TLS certificate.
async fn wait_for_signal(app: &Arc<App>) -> Result<(), StartError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartError::Runtime)?;
    let mut hup = signal(SignalKind::hangup()).map_err(StartError::Runtime)?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                // The file is read on a blocking thread (see `App::reload`): this thread also
                // serves the redirect listener.
                log_reload(app.reload().await);
                match app.reload_tls() {
                    Ok(()) if app.certs.is_some() => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Ok(()) => {}
                    Err(e) => tracing::error!("SIGHUP: TLS certificate not reloaded, keeping the current one: {e}"),
                }
            }
        }
    }
}

fn log_reload(result: Result<crate::app::Reloaded, crate::app::ReloadError>) {
    match result {
        Ok(r) => {
            tracing::info!(
                "SIGHUP: config reloaded: {} users, {} rules; {} sessions of removed users or changed passwords ended",
                r.users,
                r.rules,
                r.ended_sessions
            );
            for key in r.restart_only {
                tracing::warn!(
                    "SIGHUP: {key} changed but needs a restart to take effect; still using the old value"
                );
            }
        }
        Err(e) => tracing::error!("SIGHUP: config not reloaded, keeping the running policy: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
