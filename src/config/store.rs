//! `session.store` and `[redis]`: the server (one URL, or the sentinels that name the master),
//! its credentials and CA, the key prefix and the command deadline.

use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use secrecy::{ExposeSecret, SecretString};

use crate::config::error::{ConfigError, invalid};
use crate::config::file;
use crate::config::files::{read_ca, read_secret};
use crate::config::session::StoreConfig;
use crate::config::value::duration;
use crate::session::redis_link::{RedisConfig, SentinelConfig};

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
            "session.store = \"redis\" needs [redis] url = \"redis://HOST:6379/0\" (or sentinels and master_name)",
        )),
        ("redis", Some(r)) => Ok(StoreConfig::Redis(Box::new(validate_redis(r)?))),
        (other, _) => Err(invalid(
            "session.store",
            format!("{other:?} is not a store; use \"memory\" (the default) or \"redis\""),
        )),
    }
}

fn validate_redis(r: &file::Redis) -> Result<RedisConfig, ConfigError> {
    let url = match (&r.url, &r.sentinels) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "redis.sentinels",
                "redis.url and redis.sentinels are exclusive: one Redis server, or the sentinels that name the master",
            ));
        }
        (None, Some(sentinels)) => return validate_sentinel_mode(r, sentinels),
        (Some(url), None) => url,
        (None, None) => {
            return Err(invalid(
                "redis.url",
                "is required with session.store = \"redis\", e.g. \"redis://127.0.0.1:6379/0\" (or set redis.sentinels and redis.master_name)",
            ));
        }
    };
    for (key, set) in [
        ("redis.master_name", r.master_name.is_some()),
        (
            "redis.sentinel_password_file",
            r.sentinel_password_file.is_some(),
        ),
    ] {
        if set {
            return Err(invalid(key, "is for redis.sentinels; redis.url is set"));
        }
    }
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
        sentinel: None,
    })
}

/// `[redis]` with `sentinels`: the master is found through them when the link starts, so the
/// connection holds only what the data nodes need besides their address (database 0, RESP3,
/// no password: that stays apart as with a URL).
fn validate_sentinel_mode(
    r: &file::Redis,
    sentinels: &[String],
) -> Result<RedisConfig, ConfigError> {
    if sentinels.is_empty() {
        return Err(invalid(
            "redis.sentinels",
            "is empty; list at least one, e.g. [\"10.0.0.1:26379\", \"10.0.0.2:26379\"]",
        ));
    }
    let nodes = sentinels
        .iter()
        .enumerate()
        .map(|(i, s)| sentinel_address(i, s))
        .collect::<Result<Vec<_>, _>>()?;
    let master_name = match r.master_name.as_deref() {
        None => {
            return Err(invalid(
                "redis.master_name",
                "is required with redis.sentinels: the name the sentinels monitor the master under, e.g. \"mymaster\"",
            ));
        }
        Some(name) if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err(invalid(
                "redis.master_name",
                "must be visible ASCII characters without spaces, e.g. \"mymaster\"",
            ));
        }
        Some(name) => name.to_string(),
    };
    if r.ca.is_some() {
        return Err(invalid(
            "redis.ca",
            "TLS is not supported with redis.sentinels (only with a rediss:// redis.url)",
        ));
    }
    let password = nonempty_secret("redis.password_file", r.password_file.as_deref())?;
    let sentinel_password = nonempty_secret(
        "redis.sentinel_password_file",
        r.sentinel_password_file.as_deref(),
    )?;
    let placeholder = ("127.0.0.1", 6379).into_connection_info().map_err(|e| {
        invalid(
            "redis.sentinels",
            format!("cannot build a connection: {}", e.detail().unwrap_or("")),
        )
    })?;
    let display = format!("{master_name:?} via sentinels {}", sentinels.join(","));
    Ok(RedisConfig {
        connection: without_password(placeholder),
        password,
        tls: None,
        key_prefix: key_prefix(r.key_prefix.as_deref())?,
        timeout: duration("redis.timeout", r.timeout, Duration::from_millis(250))?,
        display,
        sentinel: Some(SentinelConfig {
            nodes,
            master_name,
            password: sentinel_password,
        }),
    })
}

/// One of `redis.sentinels`: `HOST:PORT` (`[v6]:PORT` for an IPv6 address).
fn sentinel_address(i: usize, written: &str) -> Result<(String, u16), ConfigError> {
    let key = format!("redis.sentinels[{i}]");
    let bad = || {
        invalid(
            key.clone(),
            format!("{written:?} is not HOST:PORT, e.g. \"10.0.0.1:26379\""),
        )
    };
    let (host, port) = written.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(['/', ' ', '@']) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// A password file that, when set, must not be empty.
fn nonempty_secret(key: &str, path: Option<&str>) -> Result<Option<SecretString>, ConfigError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let secret = read_secret(key, path)?;
    if secret.expose_secret().is_empty() {
        return Err(invalid(key, format!("{path:?} is empty")));
    }
    Ok(Some(secret))
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
    nonempty_secret("redis.password_file", Some(path))
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

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use crate::config::Config;
    use crate::config::session::StoreConfig;
    use crate::session::redis_link::RedisConfig;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"
[upstream]
url = "http://127.0.0.1:3000"
[[users]]
name = "alice"
password_hash = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$bFhbuNFJvSTFDCOCLdXpUQSnTdWIVYOt4Z8mIz9SVuw"
[session]
secret = "test-secret-0123456789abcdef0123456789abcdef"
store = "redis"
[redis]
"#;

    fn redis(lines: &str) -> Result<RedisConfig, String> {
        match Config::from_toml(&format!("{BASE}{lines}")) {
            Ok(config) => match config.session.store {
                StoreConfig::Redis(redis) => Ok(*redis),
                StoreConfig::Memory => Err("memory".into()),
            },
            Err(e) => Err(e.to_string()),
        }
    }

    fn secret_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn sentinels_master_name_and_both_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let data = secret_file(&dir, "data", "data-secret\n");
        let sentinel = secret_file(&dir, "sentinel", "sentinel-secret\n");
        let config = redis(&format!(
            "sentinels = [\"10.0.0.1:26379\", \"sentinel-2.internal:26380\", \"[fd00::3]:26379\"]\n\
             master_name = \"mymaster\"\npassword_file = {data:?}\nsentinel_password_file = {sentinel:?}\n"
        ))
        .unwrap();
        let sentinels = config.sentinel.as_ref().unwrap();
        assert_eq!(
            sentinels.nodes,
            vec![
                ("10.0.0.1".to_string(), 26379),
                ("sentinel-2.internal".to_string(), 26380),
                ("fd00::3".to_string(), 26379),
            ]
        );
        assert_eq!(sentinels.master_name, "mymaster");
        assert_eq!(
            sentinels.password.as_ref().map(|p| p.expose_secret()),
            Some("sentinel-secret")
        );
        assert_eq!(
            config.password.as_ref().map(|p| p.expose_secret()),
            Some("data-secret")
        );
        // Neither password is printed anywhere.
        let printed = format!("{config:?} {}", config.display);
        assert!(!printed.contains("secret"), "{printed}");
        assert!(config.display.contains("mymaster"), "{}", config.display);
    }

    #[test]
    fn a_url_alone_has_no_sentinels() {
        let config = redis("url = \"redis://127.0.0.1:6379/0\"\n").unwrap();
        assert!(config.sentinel.is_none());
    }

    #[test]
    fn each_mistake_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let empty = secret_file(&dir, "empty", "\n");
        let cases = [
            (
                "url = \"redis://127.0.0.1:6379/0\"\nsentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"m\"\n"
                    .to_string(),
                "redis.sentinels",
                "exclusive",
            ),
            (
                "sentinels = [\"127.0.0.1:26379\"]\n".to_string(),
                "redis.master_name",
                "required",
            ),
            (
                "sentinels = []\nmaster_name = \"m\"\n".to_string(),
                "redis.sentinels",
                "empty",
            ),
            (
                "sentinels = [\"127.0.0.1:26379\", \"127.0.0.1\"]\nmaster_name = \"m\"\n"
                    .to_string(),
                "redis.sentinels[1]",
                "HOST:PORT",
            ),
            (
                "sentinels = [\"127.0.0.1:0\"]\nmaster_name = \"m\"\n".to_string(),
                "redis.sentinels[0]",
                "HOST:PORT",
            ),
            (
                "sentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"my master\"\n".to_string(),
                "redis.master_name",
                "visible",
            ),
            (
                "url = \"redis://127.0.0.1:6379/0\"\nmaster_name = \"m\"\n".to_string(),
                "redis.master_name",
                "is for redis.sentinels",
            ),
            (
                format!(
                    "url = \"redis://127.0.0.1:6379/0\"\nsentinel_password_file = {empty:?}\n"
                ),
                "redis.sentinel_password_file",
                "is for redis.sentinels",
            ),
            (
                format!(
                    "sentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"m\"\nsentinel_password_file = {empty:?}\n"
                ),
                "redis.sentinel_password_file",
                "is empty",
            ),
            (
                "sentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"m\"\nca = \"/nonexistent\"\n"
                    .to_string(),
                "redis.ca",
                "TLS",
            ),
            ("key_prefix = \"x:\"\n".to_string(), "redis.url", "sentinels"),
        ];
        for (lines, key, says) in cases {
            let error = redis(&lines).err().unwrap_or_default();
            assert!(
                error.contains(key) && error.contains(says),
                "{lines}: expected {key} ({says}), got {error:?}"
            );
        }
    }
}
