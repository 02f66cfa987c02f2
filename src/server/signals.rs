//! Signals: SIGTERM and SIGINT stop the process; SIGHUP reloads the users, the rules and the
//! TLS certificate.

use std::sync::Arc;

use crate::app::{App, ReloadError, Reloaded};
use crate::server::error::StartError;

/// Returns on SIGTERM or SIGINT; on every SIGHUP meanwhile, reloads the config's users and
/// rules and the TLS certificate.
pub async fn wait_for_signal(app: &Arc<App>) -> Result<(), StartError> {
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

fn log_reload(result: Result<Reloaded, ReloadError>) {
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
