//! `[metrics]` and `[log]`: where the metrics are served, and how log lines are written.

use std::net::SocketAddr;

use crate::config::error::{ConfigError, invalid};
use crate::config::file;
use crate::ops::logging::LogFormat;

/// `metrics.listen`: an address of its own, never the app's (`server.listen`).
pub(super) fn validate_metrics(
    m: &file::Metrics,
    server_listen: SocketAddr,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(text) = &m.listen else {
        return Ok(None);
    };
    let addr: SocketAddr = text.parse().map_err(|_| {
        invalid(
            "metrics.listen",
            format!("{text:?} is not an address; write IP:PORT, e.g. \"127.0.0.1:9464\""),
        )
    })?;
    if addr == server_listen && addr.port() != 0 {
        return Err(invalid(
            "metrics.listen",
            "must differ from server.listen: the metrics are never served next to the app",
        ));
    }
    Ok(Some(addr))
}

/// `log.format`: `text` (the default) or `json`.
pub(super) fn validate_log(l: &file::Log) -> Result<LogFormat, ConfigError> {
    match l.format.as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(invalid(
            "log.format",
            format!("{other:?} is not a log format; use \"text\" or \"json\""),
        )),
    }
}
