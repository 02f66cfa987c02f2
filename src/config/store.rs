//! `session.store` and `[redis]`: the server, its credentials and CA, the key prefix and the
//! command deadline.

use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use secrecy::{ExposeSecret, SecretString};

use crate::config::error::{ConfigError, invalid};
use crate::config::file;
use crate::config::files::{read_ca, read_secret};
use crate::config::session::StoreConfig;
use crate::config::value::duration;
use crate::session::redis_link::RedisConfig;

/// `session.store` and `[redis]`.
pub(super) fn validate_store(
    s: &file::Session,
    redis: Option<&file::Redis>,
) -> Result<StoreConfig, ConfigError> {
    match (s.store.as_deref().unwrap_or("memory"), redis) {
        ("memory", None) => Ok(StoreConfig::Memory),
        ("memory", Some(_)) => Err(invalid(
            "redis",
            "[redis] is set but session.store is \"memory\": set session.store = \"redis\" to use it, or remove [redis]",
        )),
        ("redis", None) => Err(invalid(
            "redis.url",
            "session.store = \"redis\" needs [redis] url = \"redis://HOST:6379/0\"",
        )),
        ("redis", Some(r)) => Ok(StoreConfig::Redis(Box::new(validate_redis(r)?))),
        (other, _) => Err(invalid(
            "session.store",
            format!("{other:?} is not a store; use \"memory\" (the default) or \"redis\""),
        )),
    }
}

fn validate_redis(r: &file::Redis) -> Result<RedisConfig, ConfigError> {
    let Some(url) = &r.url else {
        return Err(invalid(
            "redis.url",
            "is required with session.store = \"redis\", e.g. \"redis://127.0.0.1:6379/0\"",
        ));
    };
    let (parsed, tls) = parse_url(url)?;
    let mut display = parsed.clone();
    let _ = display.set_password(None);
    let display = display.to_string();
    let info = url.as_str().into_connection_info().map_err(|e| {
        invalid(
            "redis.url",
            format!(
                "{display:?} is not a Redis URL: {}",
                e.detail().unwrap_or("unreadable")
            ),
        )
    })?;
    let password = password(&info, r.password_file.as_deref())?;
    let ca = match &r.ca {
        None => None,
        Some(_) if !tls => {
            return Err(invalid(
                "redis.ca",
                "is for rediss:// (TLS) URLs; redis.url is plain redis://",
            ));
        }
        Some(path) => Some(read_ca("redis.ca", path)?),
    };
    Ok(RedisConfig {
        connection: without_password(info),
        password,
        tls: tls.then_some(ca),
        key_prefix: key_prefix(r.key_prefix.as_deref())?,
        timeout: duration("redis.timeout", r.timeout, Duration::from_millis(250))?,
        display,
    })
}

/// `redis.url`, and whether it asks for TLS (`rediss://`).
fn parse_url(url: &str) -> Result<(url::Url, bool), ConfigError> {
    let parsed = url::Url::parse(url).map_err(|e| {
        invalid(
            "redis.url",
            format!("is not a URL ({e}); write e.g. \"redis://127.0.0.1:6379/0\""),
        )
    })?;
    let tls = match parsed.scheme() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(invalid(
                "redis.url",
                format!("scheme {other:?} is not supported; use redis:// or rediss:// (TLS)"),
            ));
        }
    };
    // redis-rs reads "#insecure" as "do not verify the certificate": never allowed here.
    if parsed.fragment().is_some() || parsed.query().is_some() {
        return Err(invalid(
            "redis.url",
            "must not have a query or #fragment (certificates are always verified; use redis.ca for a private CA)",
        ));
    }
    Ok((parsed, tls))
}

/// The password, from the URL or from `redis.password_file` (one place only).
fn password(
    info: &ConnectionInfo,
    password_file: Option<&str>,
) -> Result<Option<SecretString>, ConfigError> {
    let in_url = info.redis_settings().password();
    let Some(path) = password_file else {
        return Ok(in_url.map(SecretString::from));
    };
    if in_url.is_some() {
        return Err(invalid(
            "redis.password_file",
            "the password is in redis.url already: set it in one place",
        ));
    }
    let password = read_secret("redis.password_file", path)?;
    if password.expose_secret().is_empty() {
        return Err(invalid("redis.password_file", format!("{path:?} is empty")));
    }
    Ok(Some(password))
}

/// `info` as parsed from the URL (address, database, user name), with Nagle off, RESP3 and no
/// password: that is kept apart, where it cannot be printed, until a client is made.
fn without_password(info: ConnectionInfo) -> ConnectionInfo {
    let parsed = info.redis_settings();
    let mut redis = RedisConnectionInfo::default()
        .set_db(parsed.db())
        .set_protocol(redis::ProtocolVersion::RESP3);
    if let Some(user) = parsed.username() {
        redis = redis.set_username(user);
    }
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    info.set_redis_settings(redis).set_tcp_settings(tcp)
}

/// `redis.key_prefix` (default `sessiongate:`).
fn key_prefix(written: Option<&str>) -> Result<String, ConfigError> {
    let key_prefix = written.unwrap_or("sessiongate:");
    if key_prefix.is_empty()
        || key_prefix.len() > 64
        || !key_prefix.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(
            "redis.key_prefix",
            "must be 1 to 64 visible ASCII characters, e.g. \"sessiongate:\"",
        ));
    }
    Ok(key_prefix.to_string())
}
