//! `[session]`: the signing secret, the cookie (name, prefix, domain, SameSite), the
//! lifetimes, and where sessions live.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretSlice};

use crate::config::error::{ConfigError, invalid};
use crate::config::file;
use crate::config::files::read_secret;
use crate::config::value::duration;
use crate::http::redirect::HostPattern;
use crate::session::redis_link::RedisConfig;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// HMAC key for the cookie signature; `None` means "random per process". Never printed.
    pub secret: Option<SecretSlice<u8>>,
    /// The cookie name as sent to browsers (with the `__Host-` prefix when it applies).
    pub cookie_name: String,
    pub secure: bool,
    pub same_site: SameSite,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub cookie_max_age: Option<Duration>,
    pub sweep_interval: Duration,
    /// The cookie's Domain, to share one login across subdomains; `None`: this host only.
    pub cookie_domain: Option<String>,
    /// Where sessions live.
    pub store: StoreConfig,
    /// How often at most a session's "last seen" is written back to a shared store or to
    /// `state_dir`.
    pub touch_interval: Duration,
    /// Where the memory store also keeps its sessions on disk, so they survive a restart;
    /// `None`: memory only.
    pub state_dir: Option<PathBuf>,
}

/// Where sessions live (`session.store`).
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// In this process: fastest, but every restart signs everyone out.
    Memory,
    /// In Redis, shared by every replica that uses the same server and secret.
    Redis(Box<RedisConfig>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
}

const MIN_SECRET_LEN: usize = 32;

pub(super) fn validate_session(
    s: &file::Session,
    store: StoreConfig,
) -> Result<SessionConfig, ConfigError> {
    let secret = secret(s)?;
    let secure = s.secure.unwrap_or(true);
    let base_name = base_cookie_name(s.cookie_name.as_deref())?;
    let cookie_domain = cookie_domain(s.cookie_domain.as_deref())?;
    let cookie_name = cookie_name(base_name, secure, cookie_domain.is_some())?;
    let same_site = match s.same_site.as_deref().unwrap_or("lax") {
        v if v.eq_ignore_ascii_case("lax") => SameSite::Lax,
        v if v.eq_ignore_ascii_case("strict") => SameSite::Strict,
        other => {
            return Err(invalid(
                "session.same_site",
                format!("{other:?} is not allowed; use \"lax\" or \"strict\""),
            ));
        }
    };
    let idle_timeout = duration(
        "session.idle_timeout",
        s.idle_timeout,
        Duration::from_secs(30 * 60),
    )?;
    let absolute_timeout = duration(
        "session.absolute_timeout",
        s.absolute_timeout,
        Duration::from_secs(12 * 3600),
    )?;
    let cookie_max_age = match s.cookie_max_age {
        None => None,
        Some(v) => Some(duration("session.cookie_max_age", Some(v), Duration::ZERO)?),
    };
    let sweep_interval = duration(
        "session.sweep_interval",
        s.sweep_interval,
        Duration::from_secs(60),
    )?;
    if matches!(store, StoreConfig::Redis(_)) && secret.is_none() {
        return Err(invalid(
            "session.secret_file",
            "session.store = \"redis\" needs session.secret or session.secret_file: every replica must sign and find sessions with the same key",
        ));
    }
    let state_dir = state_dir(s.state_dir.as_deref(), &store)?;
    Ok(SessionConfig {
        state_dir,
        store,
        touch_interval: touch_interval(s.touch_interval, idle_timeout)?,
        secret,
        cookie_name,
        secure,
        same_site,
        idle_timeout,
        absolute_timeout,
        cookie_max_age,
        sweep_interval,
        cookie_domain,
    })
}

/// `session.state_dir`: a path, with the memory store only (Redis keeps sessions itself).
fn state_dir(written: Option<&str>, store: &StoreConfig) -> Result<Option<PathBuf>, ConfigError> {
    let Some(dir) = written else { return Ok(None) };
    if dir.trim().is_empty() {
        return Err(invalid(
            "session.state_dir",
            "is empty; name a directory such as \"/var/lib/sessiongate\", or remove the key to keep sessions in memory only",
        ));
    }
    if matches!(store, StoreConfig::Redis(_)) {
        return Err(invalid(
            "session.state_dir",
            "keeps the memory store's sessions on disk; with session.store = \"redis\" they live in Redis already: remove one of the two",
        ));
    }
    Ok(Some(PathBuf::from(dir)))
}

/// `session.secret` or `session.secret_file` (not both), at least `MIN_SECRET_LEN` bytes.
fn secret(s: &file::Session) -> Result<Option<SecretSlice<u8>>, ConfigError> {
    let (key, secret) = match (&s.secret, &s.secret_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "session.secret_file",
                "set either session.secret or session.secret_file, not both",
            ));
        }
        (Some(secret), None) => ("session.secret", secret.clone()),
        (None, Some(path)) => (
            "session.secret_file",
            read_secret("session.secret_file", path)?,
        ),
        (None, None) => return Ok(None),
    };
    let bytes = secret.expose_secret().as_bytes();
    if bytes.len() < MIN_SECRET_LEN {
        return Err(invalid(
            key,
            format!(
                "must be at least {MIN_SECRET_LEN} bytes (it has {}); make one with `openssl rand -base64 48`",
                bytes.len()
            ),
        ));
    }
    Ok(Some(SecretSlice::from(bytes.to_vec())))
}

/// `session.cookie_domain`: a domain name, canonical like any host; `None` when absent.
fn cookie_domain(written: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(d) = written else { return Ok(None) };
    // A leading dot means nothing to browsers; the rest is canonical like any host.
    match HostPattern::parse(d.strip_prefix('.').unwrap_or(d)) {
        Ok(HostPattern::Exact(name)) if !crate::http::host::is_ip(&name) => Ok(Some(name)),
        _ => Err(invalid(
            "session.cookie_domain",
            format!("{d:?} is not a domain name like \"example.com\""),
        )),
    }
}

/// `session.cookie_name` as written: a cookie-name token.
fn base_cookie_name(written: Option<&str>) -> Result<&str, ConfigError> {
    let base_name = written.unwrap_or("sessiongate");
    if base_name.is_empty()
        || !base_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(invalid(
            "session.cookie_name",
            format!(
                "{base_name:?} is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)"
            ),
        ));
    }
    Ok(base_name)
}

/// The cookie name as sent: with the strictest prefix browsers allow for how the cookie is
/// set, unless the name has a prefix already (which must then fit).
fn cookie_name(base_name: &str, secure: bool, has_domain: bool) -> Result<String, ConfigError> {
    if base_name.starts_with("__Host-") || base_name.starts_with("__Secure-") {
        if !secure {
            return Err(invalid(
                "session.cookie_name",
                "__Host- and __Secure- cookies need session.secure = true",
            ));
        }
        if has_domain && base_name.starts_with("__Host-") {
            return Err(invalid(
                "session.cookie_name",
                "__Host- cookies cannot have a Domain; with session.cookie_domain use __Secure- (or no prefix: it is added)",
            ));
        }
        Ok(base_name.to_string())
    } else if secure && has_domain {
        // A Domain rules out __Host-; __Secure- still makes browsers refuse it over http.
        Ok(format!("__Secure-{base_name}"))
    } else if secure {
        // No Domain is set and Path is "/", so the strictest prefix applies.
        Ok(format!("__Host-{base_name}"))
    } else {
        Ok(base_name.to_string())
    }
}

/// `session.touch_interval`, shorter than the idle timeout.
fn touch_interval(
    written: Option<Duration>,
    idle_timeout: Duration,
) -> Result<Duration, ConfigError> {
    // Often enough that the idle timeout is kept to within a tenth, rarely enough that a busy
    // session costs a shared store one write a minute at most.
    let touch_default = (idle_timeout / 10).min(Duration::from_secs(60));
    let touch_interval = duration(
        "session.touch_interval",
        written,
        touch_default.max(Duration::from_millis(1)),
    )?;
    if touch_interval >= idle_timeout {
        return Err(invalid(
            "session.touch_interval",
            "must be shorter than session.idle_timeout, or busy sessions would idle out",
        ));
    }
    Ok(touch_interval)
}
