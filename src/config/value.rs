//! Checks several sections share: a count of at least one, a duration longer than zero.

use std::time::Duration;

use crate::config::error::{ConfigError, invalid};

/// `value` of `key`, or `default` when the key is absent; zero is refused.
pub(super) fn positive(
    key: &str,
    value: Option<usize>,
    default: usize,
) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(n) => Ok(n),
    }
}

/// `value` of `key` (read by `file`), or `default` when the key is absent; zero is refused.
pub(super) fn duration(
    key: &str,
    value: Option<Duration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(d) if d.is_zero() => Err(invalid(key, "must be longer than zero")),
        Some(d) => Ok(d),
    }
}
