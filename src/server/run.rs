//! `run`: the whole process. One single-threaded runtime per worker, all accepting on the same
//! listening socket, beside the main thread's signals, redirect and metrics listeners.
//!
//! One current-thread runtime per core rather than tokio's work-stealing runtime: on this
//! workload it halves context switches per request and was worth ~25% throughput
//! (docs/PERF-NOTES.md).

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::app::App;
use crate::config::Config;
use crate::server::error::StartError;
use crate::server::listen::{listen, raise_fd_limit};
use crate::server::redirect::serve_redirect;
use crate::server::serve::serve;
use crate::server::signals::wait_for_signal;

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

    let (stop_tx, stop_rx) = watch::channel(false);
    let threads = start_workers(&listener, &app, workers, &stop_rx)?;
    drop(listener);

    // The main thread waits for signals; the redirect listener, if any, runs beside that.
    let signals = current_thread()?;
    if let Some(addr) = app.config.server.redirect_http {
        let https_port = app.config.server.listen.port();
        let redirect = listen(addr).map_err(|source| StartError::Listen { addr, source })?;
        let stopped = stopped(stop_rx.clone());
        signals.spawn(async move {
            let serve = |l| {
                tracing::info!("redirecting http://{addr} to https");
                serve_redirect(l, https_port, stopped)
            };
            if let Err(e) = on(redirect, serve).await {
                tracing::error!("redirect listener failed: {e}");
            }
        });
    }
    if let Some(metrics) = metrics_listener {
        let app = app.clone();
        let stopped = stopped(stop_rx.clone());
        signals.spawn(async move {
            let serve_metrics = |l| crate::server::metrics::serve_metrics(l, app, stopped);
            if let Err(e) = on(metrics, serve_metrics).await {
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
    app.gate.sessions().close();
    tracing::info!("stopped");
    Ok(())
}

/// One thread per worker, each serving `listener` on its own runtime until `stop` turns true.
fn start_workers(
    listener: &std::net::TcpListener,
    app: &Arc<App>,
    workers: usize,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<std::io::Result<()>>>, StartError> {
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let listener = listener.try_clone().map_err(StartError::Runtime)?;
        let app = app.clone();
        let stopped = stopped(stop.clone());
        let rt = current_thread()?;
        let thread = std::thread::Builder::new()
            .name(format!("sessiongate-worker-{i}"))
            .spawn(move || rt.block_on(on(listener, |l| serve(l, app, stopped))))
            .map_err(StartError::Runtime)?;
        threads.push(thread);
    }
    Ok(threads)
}

fn current_thread() -> Result<Runtime, StartError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Runs `serve` on `listener`, registered with the runtime it runs on.
async fn on<F, Fut>(listener: std::net::TcpListener, serve: F) -> std::io::Result<()>
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = std::io::Result<()>>,
{
    serve(TcpListener::from_std(listener)?).await
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
        "{} users, {} providers and {} rules loaded; a request no rule matches: {}",
        config.users.len(),
        config.providers.len(),
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
