//! Errors that stop sessiongate from starting. Request-time failures are answered with a
//! status code in `handler`/`proxy` and never surface as these.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax errors and unknown keys; toml's message names the key and the line.
    #[error("config: {0}")]
    Parse(String),
    #[error("config: {key}: {reason}")]
    Invalid { key: String, reason: String },
}

#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot set up the session store: {0}")]
    Store(#[from] crate::session::redis_link::LinkError),
}
