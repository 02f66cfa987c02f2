//! Why a config file was refused. Every error names the key it is about.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax errors, and what serde refuses outside any key (a missing `[server]`);
    /// toml's message shows the line.
    #[error("config: {0}")]
    Parse(String),
    #[error("config: {key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// The value of `key` cannot be used, for `reason`.
pub(super) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}
