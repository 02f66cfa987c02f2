//! `[auth]`: where sessiongate's own endpoints live, the sign-in's capacity and failure limits,
//! the hosts a sign-in may return to, the origins that may open WebSockets, and whether a
//! second factor is required. (`auth.public_paths` and `auth.default` are rules: `rules`.)

use std::time::Duration;

use crate::config::error::{ConfigError, invalid};
use crate::config::file;
use crate::config::session::{SessionConfig, StoreConfig};
use crate::config::value::{duration, positive};
use crate::http::redirect::HostPattern;

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Where sessiongate's own endpoints live, e.g. `/.sessiongate`.
    pub prefix: String,
    /// Password checks computed at once: the number of hashing threads (each argon2id check
    /// needs ~19 MiB, kept while logins wait, given back when none does; one buffer stays
    /// for 10 s after the last login).
    pub login_workers: usize,
    /// Logins allowed to wait for a hashing slot; past that, 503.
    pub login_queue: usize,
    /// Failed logins allowed per username and per client address within `failure_window`.
    pub max_failures: u32,
    pub failure_window: Duration,
    /// Hosts a return address after login may be an `https://` URL on.
    pub redirect_hosts: Vec<HostPattern>,
    /// Origins besides this site's own that may open WebSockets (`https://app.example.com`),
    /// lowercased.
    pub websocket_origins: Vec<String>,
    /// `auth.require_second_factor` (or its old name `auth.require_totp`): every user must
    /// have a TOTP secret (checked when the config is validated).
    pub require_totp: bool,
    /// `auth.passkeys`: passkeys may be registered on the account page and used to sign in.
    pub passkeys: bool,
    /// `auth.passkey_rp_id`: the relying-party id passkeys are made for (a parent domain of
    /// the hosts browsers use, to share passkeys across subdomains); `None`: the host the
    /// browser used.
    pub passkey_rp_id: Option<String>,
    /// How long a sign-in waits for its code after the password (2 minutes). Not a file key:
    /// only code that builds a `Config` (tests) can shorten it.
    pub pending_lifetime: Duration,
    /// How long after signing in the account page changes a factor without asking for the
    /// password again (5 minutes). Not a file key, like `pending_lifetime`.
    pub confirm_after: Duration,
}

/// How long after signing in a factor may be added or removed without the password.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(5 * 60);

/// How long a pending sign-in (password right, code not yet given) lasts.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(120);

pub(super) fn validate_auth(a: &file::Auth, cores: usize) -> Result<AuthConfig, ConfigError> {
    let prefix = a.prefix.as_deref().unwrap_or("/.sessiongate");
    if !prefix.starts_with('/')
        || prefix.len() < 2
        || prefix.ends_with('/')
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
    {
        return Err(invalid(
            "auth.prefix",
            format!(
                "{prefix:?} must be a path like \"/.sessiongate\": starts with '/', no trailing '/', only letters, digits and -._~"
            ),
        ));
    }
    Ok(AuthConfig {
        prefix: prefix.to_string(),
        login_workers: positive("auth.login_workers", a.login_workers, cores)?,
        login_queue: positive("auth.login_queue", a.login_queue, 64)?,
        max_failures: match a.max_failures {
            None => 5,
            Some(0) => return Err(invalid("auth.max_failures", "must be at least 1")),
            Some(n) => n,
        },
        failure_window: duration(
            "auth.failure_window",
            a.failure_window,
            Duration::from_secs(60),
        )?,
        redirect_hosts: each(
            "auth.redirect_hosts",
            a.redirect_hosts.as_deref(),
            HostPattern::parse,
        )?,
        websocket_origins: each(
            "auth.websocket_origins",
            a.websocket_origins.as_deref(),
            websocket_origin,
        )?,
        require_totp: second_factor_required(a)?,
        passkeys: a.passkeys.unwrap_or(false),
        passkey_rp_id: a.passkey_rp_id.as_deref().map(rp_id).transpose()?,
        pending_lifetime: PENDING_LIFETIME,
        confirm_after: CONFIRM_AFTER,
    })
}

/// Passkeys need a store that keeps them (`session.state_dir` or Redis), and a relying-party
/// id that covers the hosts the session cookie is sent to.
pub(super) fn check_passkeys(
    auth: &AuthConfig,
    session: &SessionConfig,
) -> Result<(), ConfigError> {
    let memory_only = matches!(session.store, StoreConfig::Memory) && session.state_dir.is_none();
    if auth.passkeys && memory_only {
        return Err(invalid(
            "auth.passkeys",
            "passkeys need a place to keep them across restarts: set session.state_dir (one node) or use the Redis store (session.store = \"redis\")",
        ));
    }
    match (&auth.passkey_rp_id, &session.cookie_domain) {
        (Some(rp), Some(domain)) if !within(domain, rp) => Err(invalid(
            "auth.passkey_rp_id",
            format!(
                "{rp:?} does not cover session.cookie_domain {domain:?}: it must be that domain or a parent of it, or passkeys made on one host would not work on the others the session covers"
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether `host` is `domain` or a subdomain of it.
pub fn within(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// `auth.require_second_factor`, or its old name `auth.require_totp`; both given must agree.
fn second_factor_required(a: &file::Auth) -> Result<bool, ConfigError> {
    match (a.require_second_factor, a.require_totp) {
        (Some(new), Some(old)) if new != old => Err(invalid(
            "auth.require_second_factor",
            "and its old name auth.require_totp say different things; keep only require_second_factor",
        )),
        (new, old) => Ok(new.or(old).unwrap_or(false)),
    }
}

/// `auth.passkey_rp_id`: a domain name (no scheme, port or path), canonical.
fn rp_id(text: &str) -> Result<String, ConfigError> {
    match HostPattern::parse(text) {
        Ok(HostPattern::Exact(name)) if !crate::http::host::is_ip(&name) => Ok(name),
        _ => Err(invalid(
            "auth.passkey_rp_id",
            format!(
                "{text:?} is not a domain name; write the host browsers use (or a parent domain of it), e.g. \"example.com\", without scheme, port or path"
            ),
        )),
    }
}

/// Every entry of the list `key` through `check`; a refusal names the entry and quotes it.
fn each<T, E: std::fmt::Display>(
    key: &str,
    listed: Option<&[String]>,
    check: impl Fn(&str) -> Result<T, E>,
) -> Result<Vec<T>, ConfigError> {
    listed
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, text)| {
            check(text)
                .map_err(|reason| invalid(format!("{key}[{i}]"), format!("{text:?} {reason}")))
        })
        .collect()
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after; its host canonical.
fn websocket_origin(text: &str) -> Result<String, &'static str> {
    let Some((scheme, authority)) = text.split_once("://") else {
        return Err("is not an origin; write e.g. \"https://app.example.com\"");
    };
    if !matches!(scheme, "http" | "https") {
        return Err("must start with https:// (or http://)");
    }
    let a = crate::http::host::parse(authority.as_bytes()).map_err(|_| {
        "must be scheme://host[:port] with no path and a valid host, e.g. \"https://app.example.com\""
    })?;
    Ok(match a.port {
        Some(port) => format!("{scheme}://{}:{port}", a.host),
        None => format!("{scheme}://{}", a.host),
    })
}
