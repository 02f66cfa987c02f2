//! Why sessiongate could not start. Request-time failures are answered with a status code in
//! `handler`/`proxy` and never surface as these.

use thiserror::Error;

use crate::config::error::ConfigError;

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
    Store(#[from] crate::app::StoreSetupError),
}
