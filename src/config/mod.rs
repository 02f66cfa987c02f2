//! The configuration file: what the user wrote (`file::*`, serde types) and the validated
//! [`Config`] the rest of the program uses. Every error names the key it is about.

pub mod error;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::password::PasswordHash;
use crate::auth::redirect::HostPattern;
use crate::auth::totp::TotpSecret;
use crate::config::error::ConfigError;
use crate::gate::rules::{self, Access, DefaultAccess, Origin, Principal, Rule, RuleSet};
use crate::http::headers;
use crate::pages::{Branding, Logo, Pages, UserTemplate};
use http::HeaderName;

/// What the TOML file may contain. Unknown keys are refused by serde and named in the error.
mod file {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub server: Server,
        #[serde(default)]
        pub upstream: Upstream,
        #[serde(default)]
        pub session: Session,
        #[serde(default)]
        pub auth: Auth,
        #[serde(default)]
        pub users: Vec<User>,
        #[serde(default)]
        pub rules: Vec<Rule>,
        pub redis: Option<Redis>,
        #[serde(default)]
        pub metrics: Metrics,
        #[serde(default)]
        pub log: Log,
        #[serde(default)]
        pub login_page: LoginPage,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct LoginPage {
        pub title: Option<String>,
        pub app_name: Option<String>,
        pub logo: Option<String>,
        pub message: Option<String>,
        pub accent_color: Option<String>,
        pub template: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Metrics {
        pub listen: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Log {
        pub format: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Redis {
        pub url: Option<String>,
        pub ca: Option<String>,
        pub password_file: Option<String>,
        pub key_prefix: Option<String>,
        pub timeout: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        pub listen: String,
        pub workers: Option<usize>,
        pub shutdown_timeout: Option<String>,
        pub header_read_timeout: Option<String>,
        pub handshake_timeout: Option<String>,
        pub redirect_http: Option<String>,
        pub hsts: Option<String>,
        pub max_connections: Option<usize>,
        pub trusted_proxies: Option<Vec<String>>,
        pub tls: Option<ServerTls>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ServerTls {
        pub cert: String,
        pub key: String,
        pub hsts_include_subdomains: Option<bool>,
        pub hsts_preload: Option<bool>,
        pub ocsp_file: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Upstream {
        pub url: Option<String>,
        pub timeout: Option<String>,
        pub identity_header: Option<String>,
        pub groups_header: Option<String>,
        pub ca: Option<String>,
        pub tls_server_name: Option<String>,
        pub tunnel_idle_timeout: Option<String>,
        pub upgrades: Option<Vec<String>>,
        pub default_cache_control: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Session {
        pub secret: Option<String>,
        pub secret_file: Option<String>,
        pub cookie_name: Option<String>,
        pub secure: Option<bool>,
        pub same_site: Option<String>,
        pub idle_timeout: Option<String>,
        pub absolute_timeout: Option<String>,
        pub cookie_max_age: Option<String>,
        pub sweep_interval: Option<String>,
        pub cookie_domain: Option<String>,
        pub store: Option<String>,
        pub touch_interval: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Auth {
        pub prefix: Option<String>,
        pub public_paths: Option<Vec<String>>,
        pub default: Option<String>,
        pub login_workers: Option<usize>,
        pub login_queue: Option<usize>,
        pub max_failures: Option<u32>,
        pub failure_window: Option<String>,
        pub redirect_hosts: Option<Vec<String>>,
        pub websocket_origins: Option<Vec<String>>,
        pub require_totp: Option<bool>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct User {
        pub name: String,
        pub password_hash: String,
        pub groups: Option<Vec<String>>,
        pub totp_secret: Option<String>,
        pub totp_secret_file: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rule {
        pub path: String,
        pub methods: Option<Vec<String>>,
        pub host: Option<String>,
        pub public: Option<bool>,
        pub allow: Option<Vec<String>>,
        pub deny: Option<bool>,
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub session: SessionConfig,
    pub auth: AuthConfig,
    pub users: Vec<UserConfig>,
    /// `auth.public_paths` (as public rules) followed by `[[rules]]`, and `auth.default`.
    pub rules: RuleSet,
    /// `[metrics] listen`: where `GET /metrics` is served, on a listener of its own; off when
    /// `None`.
    pub metrics: Option<SocketAddr>,
    pub log: LogFormat,
    /// `[login_page]`: the branding and the sign-in template, as read.
    pub login_page: LoginPageConfig,
    /// The pages compiled from `login_page`, checked at load (a template that fails is a
    /// config error); a reload puts the new ones in force.
    pub pages: Arc<Pages>,
    /// The file this was loaded from, if any: SIGHUP reads it again.
    pub source: Option<Source>,
}

/// `[login_page]`, validated: text that is only ever printed escaped, an accent that can only
/// be a colour, and the files it names read.
#[derive(Debug, Clone)]
pub struct LoginPageConfig {
    pub branding: Branding,
    pub template: Option<UserTemplate>,
}

/// Largest `login_page.logo` read; a logo is a few KiB.
pub const MAX_LOGO_BYTES: usize = 256 * 1024;
/// Largest `login_page.template` read.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;

/// `[log] format`: how log lines are written. Read at start only (a reload keeps the format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `key=value` lines, as tracing's formatter writes them.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A config file as it was loaded: its path, and its keys as written, so a reload can tell
/// which settings changed.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub table: toml::Table,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Number of single-threaded runtimes serving connections (one per core by default).
    pub workers: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// Slow-client and idle-connection deadline: a connection with no request being handled
    /// and nothing written for this long is closed (src/watchdog.rs).
    pub header_read_timeout: Duration,
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// HTTPS on the main listener when set.
    pub tls: Option<TlsFiles>,
    /// A plain-http listener that redirects everything to https.
    pub redirect_http: Option<SocketAddr>,
    /// `Strict-Transport-Security` value sent on responses over TLS: `server.hsts` with
    /// `[server.tls]`'s includeSubDomains and preload, made once here.
    pub hsts: Option<http::HeaderValue>,
    /// Client connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Peers whose X-Forwarded-* headers are believed (a load balancer in front).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `server.tls.ocsp_file`: a DER OCSP response stapled with the certificate.
    pub ocsp: Option<PathBuf>,
    /// Loaded and checked at validation time, so `sessiongate check` catches bad files.
    pub loaded: Arc<rustls::sign::CertifiedKey>,
}

impl TlsFiles {
    /// The files to read again on SIGHUP.
    pub fn files(&self) -> crate::server::tls::CertFiles {
        crate::server::tls::CertFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            ocsp: self.ocsp.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Where requests are forwarded; `None` without `upstream.url`, when sessiongate only
    /// serves its login and forward-auth endpoints.
    pub target: Option<UpstreamTarget>,
    pub identity_header: HeaderName,
    /// Carries the user's groups, comma-separated.
    pub groups_header: HeaderName,
    /// `upstream.upgrades`: the protocols an HTTP/1.1 upgrade may switch to, lower case
    /// (never `h2c`; see `upgrade::decide`).
    pub upgrades: Vec<http::HeaderValue>,
    /// `Cache-Control` given to a signed-in answer the app sent without one, so a shared cache
    /// in front cannot keep it for others; `None` when set to `""`.
    pub default_cache_control: Option<http::HeaderValue>,
}

#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// `host:port` to connect to, as written (resolved at connect time).
    pub authority: http::uri::Authority,
    /// Set for `https://` upstreams.
    pub tls: Option<UpstreamTls>,
    pub timeout: Duration,
    /// An upgraded connection (WebSocket) with no bytes either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
}

#[derive(Clone)]
pub struct UpstreamTls {
    pub client: Arc<rustls::ClientConfig>,
    /// `upstream.ca`: the private CA the client trusts instead of the bundled roots.
    pub ca: Option<PathBuf>,
    /// Name checked against the upstream's certificate (and sent as SNI), if not the URL's host.
    pub server_name: Option<rustls_pki_types::ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca", &self.ca)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct SessionConfig {
    /// HMAC key for the cookie signature; `None` means "random per process".
    pub secret: Option<Vec<u8>>,
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
    /// How often at most a session's "last seen" is written back to a shared store.
    pub touch_interval: Duration,
}

/// Where sessions live (`session.store`).
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// In this process: fastest, but every restart signs everyone out.
    Memory,
    /// In Redis, shared by every replica that uses the same server and secret.
    Redis(Box<RedisConfig>),
}

/// `[redis]`, validated.
#[derive(Clone)]
pub struct RedisConfig {
    /// Address, database, credentials and protocol, ready for the client.
    pub connection: redis::ConnectionInfo,
    /// Set for `rediss://`: the CA (PEM) to verify the server with, or `None` for the system
    /// roots.
    pub tls: Option<Option<Vec<u8>>>,
    /// Every key sessiongate writes starts with it.
    pub key_prefix: String,
    /// One command's deadline.
    pub timeout: Duration,
    /// The server as logs may name it: no password.
    pub display: String,
}

// Hand-written so the password never reaches a log line through `{:?}`.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("server", &self.display)
            .field("tls", &self.tls.is_some())
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

// Hand-written so the secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("cookie_name", &self.cookie_name)
            .field("secure", &self.secure)
            .field("same_site", &self.same_site)
            .field("idle_timeout", &self.idle_timeout)
            .field("absolute_timeout", &self.absolute_timeout)
            .field("cookie_max_age", &self.cookie_max_age)
            .field("sweep_interval", &self.sweep_interval)
            .field("cookie_domain", &self.cookie_domain)
            .field("store", &self.store)
            .field("touch_interval", &self.touch_interval)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
}

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
    /// Every user must have a TOTP secret (checked when the config is validated).
    pub require_totp: bool,
    /// How long a sign-in waits for its code after the password (2 minutes). Not a file key:
    /// only code that builds a `Config` (tests) can shorten it.
    pub pending_lifetime: Duration,
}

#[derive(Debug, Clone)]
pub struct UserConfig {
    pub name: String,
    pub password_hash: PasswordHash,
    pub groups: Vec<String>,
    /// With a secret, signing in takes a code from an authenticator app after the password.
    pub totp: Option<TotpSecret>,
}

/// How long a pending sign-in (password right, code not yet given) lasts.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(120);

const MIN_SECRET_LEN: usize = 32;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Config::from_toml(&text)?;
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.source = Some(Source {
            path: path.to_path_buf(),
            table,
        });
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let file: file::File =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        validate(file)
    }

    /// The keys that differ between the file this config was loaded from and `newer`, other
    /// than those a reload applies (users, rules, `auth.public_paths`, `auth.default`):
    /// settings that only take effect on a restart. Empty without a source.
    pub fn restart_only_changes(&self, newer: &Config) -> Vec<String> {
        let (Some(old), Some(new)) = (&self.source, &newer.source) else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        diff_tables("", &old.table, &new.table, &mut changed);
        changed.retain(|key| {
            !RELOADED_KEYS.iter().any(|reloaded| {
                key == reloaded
                    || key
                        .strip_prefix(reloaded)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
        });
        changed
    }
}

/// What SIGHUP applies without a restart.
const RELOADED_KEYS: &[&str] = &[
    "users",
    "rules",
    "auth.public_paths",
    "auth.default",
    "auth.redirect_hosts",
    "login_page",
];

/// Appends to `out` the dotted names of the keys whose values differ between `a` and `b`,
/// descending into tables (but not into arrays, which count as one value).
fn diff_tables(prefix: &str, a: &toml::Table, b: &toml::Table, out: &mut Vec<String>) {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (a.get(key), b.get(key)) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                diff_tables(&name, x, y, out)
            }
            (x, y) if x == y => {}
            _ => out.push(name),
        }
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

fn duration(key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let d = humantime::parse_duration(text).map_err(|e| {
        invalid(
            key,
            format!("{text:?} is not a duration ({e}); write e.g. \"30s\", \"30m\" or \"12h\""),
        )
    })?;
    if d.is_zero() {
        return Err(invalid(key, "must be longer than zero"));
    }
    Ok(d)
}

fn positive(key: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(n) => Ok(n),
    }
}

fn validate(file: file::File) -> Result<Config, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = validate_server(&file.server, cores)?;
    let upstream = validate_upstream(&file.upstream)?;
    let store = validate_store(&file.session, file.redis.as_ref())?;
    let session = validate_session(&file.session, store)?;
    let auth = validate_auth(&file.auth, cores)?;

    if file.users.is_empty() {
        return Err(invalid(
            "users",
            "no [[users]] configured: nobody could log in (add one with `sessiongate hash-password`)",
        ));
    }
    let mut users: Vec<UserConfig> = Vec::with_capacity(file.users.len());
    for (i, u) in file.users.into_iter().enumerate() {
        let name = u.name.trim();
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(invalid(
                format!("users[{i}].name"),
                "must be 1 to 256 characters without control characters",
            ));
        }
        // The name travels in a header; bytes past ASCII would reach the app as raw UTF-8
        // that every framework decodes differently.
        if !name.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return Err(invalid(
                format!("users[{i}].name"),
                "must be sendable in an HTTP header (visible ASCII and spaces)",
            ));
        }
        if users.iter().any(|other| other.name == name) {
            return Err(invalid(
                format!("users[{i}].name"),
                format!("user {name:?} is configured twice"),
            ));
        }
        let password_hash = PasswordHash::parse(&u.password_hash)
            .map_err(|reason| invalid(format!("users[{i}].password_hash"), reason))?;
        let mut groups: Vec<String> = Vec::new();
        for (j, g) in u.groups.iter().flatten().enumerate() {
            if !rules::is_group_name(g) {
                return Err(invalid(
                    format!("users[{i}].groups[{j}]"),
                    format!("{g:?} is not a group name (letters, digits and -_. only)"),
                ));
            }
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
        let totp = user_totp(i, u.totp_secret.as_deref(), u.totp_secret_file.as_deref())?;
        if auth.require_totp && totp.is_none() {
            return Err(invalid(
                format!("users[{i}].totp_secret"),
                format!(
                    "auth.require_totp is on but user {name:?} has no totp_secret or totp_secret_file (make one with `sessiongate totp-setup --user {name:?}`)"
                ),
            ));
        }
        users.push(UserConfig {
            name: name.to_string(),
            password_hash,
            groups,
            totp,
        });
    }
    let rules = validate_rules(&file.auth, file.rules, &users)?;
    let metrics = match &file.metrics.listen {
        None => None,
        Some(text) => {
            let addr: SocketAddr = text.parse().map_err(|_| {
                invalid(
                    "metrics.listen",
                    format!("{text:?} is not an address; write IP:PORT, e.g. \"127.0.0.1:9464\""),
                )
            })?;
            if addr == server.listen && addr.port() != 0 {
                return Err(invalid(
                    "metrics.listen",
                    "must differ from server.listen: the metrics are never served next to the app",
                ));
            }
            Some(addr)
        }
    };
    let log = match file.log.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(invalid(
                "log.format",
                format!("{other:?} is not a log format; use \"text\" or \"json\""),
            ));
        }
    };

    let login_page = validate_login_page(&file.login_page)?;
    let pages = Pages::new(
        login_page.branding.clone(),
        login_page.template.as_ref(),
        &auth.prefix,
    )
    .map_err(|e| invalid("login_page.template", e.to_string()))?;

    Ok(Config {
        server,
        upstream,
        session,
        auth,
        users,
        rules,
        metrics,
        log,
        login_page,
        pages: Arc::new(pages),
        source: None,
    })
}

/// `auth.public_paths` become public rules ahead of `[[rules]]`; every rule is checked on its
/// own, against the users it names, and against the rules before it.
fn validate_rules(
    auth: &file::Auth,
    written: Vec<file::Rule>,
    users: &[UserConfig],
) -> Result<RuleSet, ConfigError> {
    let mut list: Vec<Rule> = Vec::new();
    for (i, p) in auth.public_paths.iter().flatten().enumerate() {
        if !p.starts_with('/') || p.contains(['?', '#', '%', '\\']) || p.contains("/.") {
            return Err(invalid(
                format!("auth.public_paths[{i}]"),
                format!(
                    "{p:?} must be a plain path prefix starting with '/' (no ?, #, %, \\ or dot segments)"
                ),
            ));
        }
        if p == "/" {
            return Err(invalid(
                format!("auth.public_paths[{i}]"),
                "\"/\" would make every path public; remove sessiongate instead",
            ));
        }
        list.push(Rule {
            origin: Origin::PublicPath(i),
            path: p.clone(),
            methods: None,
            host: None,
            access: Access::Public,
        });
    }
    for (i, r) in written.into_iter().enumerate() {
        let rule = validate_rule(i, r, users)?;
        // Only [[rules]] are checked for shadowing: an overlap among public_paths is harmless,
        // but a [[rules]] entry that can never match is a mistake the operator must hear about.
        if let Some(earlier) = list.iter().find(|e| rule.is_shadowed_by(e)) {
            return Err(invalid(
                format!("rules[{i}]"),
                format!(
                    "path {:?} can never match: {} comes first and matches every request it would",
                    rule.path,
                    earlier.name()
                ),
            ));
        }
        list.push(rule);
    }
    let default = match auth.default.as_deref().unwrap_or("login") {
        "login" => DefaultAccess::Login,
        "deny" => DefaultAccess::Deny,
        other => {
            return Err(invalid(
                "auth.default",
                format!("{other:?} is not allowed; use \"login\" (any logged-in user) or \"deny\""),
            ));
        }
    };
    Ok(RuleSet {
        rules: list,
        default,
    })
}

fn validate_rule(i: usize, r: file::Rule, users: &[UserConfig]) -> Result<Rule, ConfigError> {
    let at = |field: &str| format!("rules[{i}].{field}");
    let named = |reason: String| {
        invalid(
            format!("rules[{i}]"),
            format!("path {:?}: {reason}", r.path),
        )
    };
    rules::check_path(&r.path)
        .map_err(|reason| invalid(at("path"), format!("{:?} {reason}", r.path)))?;
    let methods = match &r.methods {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(invalid(at("methods"), "is empty: leave it out to match every method"));
        }
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(j, m)| {
                    let upper = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
                    http::Method::from_bytes(m.as_bytes())
                        .ok()
                        .filter(|_| upper)
                        .ok_or_else(|| {
                            invalid(
                                format!("rules[{i}].methods[{j}]"),
                                format!("{m:?} is not an HTTP method; write it in capitals, e.g. \"GET\""),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let host = match &r.host {
        None => None,
        // Canonical, as every request's host is before it is compared.
        Some(h) => match crate::http::host::parse(h.as_bytes()) {
            Ok(a) if a.port.is_none() => Some(a.host.into_owned()),
            reason => {
                let reason = reason.map_or_else(|bad| bad.message(), |_| "it has a port");
                return Err(invalid(
                    at("host"),
                    format!(
                        "{h:?} is not a host name (no scheme, port or path), e.g. \"grafana.example.com\": {reason}"
                    ),
                ));
            }
        },
    };
    for (key, value) in [("public", r.public), ("deny", r.deny)] {
        if value == Some(false) {
            return Err(invalid(
                at(key),
                format!("{key} = false means nothing; remove the key"),
            ));
        }
    }
    let access = match (r.public.is_some(), &r.allow, r.deny.is_some()) {
        (true, None, false) => Access::Public,
        (false, None, true) => Access::Deny,
        (false, Some(list), false) => Access::Allow(principals(i, list, users)?),
        (false, None, false) => {
            return Err(named(
                "needs one of public = true, allow = [...] or deny = true".into(),
            ));
        }
        (true, Some(_), _) => {
            return Err(named(
                "public = true and allow cannot be combined: public needs no login, allow names who may enter".into(),
            ));
        }
        _ => {
            return Err(named(
                "set only one of public = true, allow = [...] or deny = true".into(),
            ));
        }
    };
    Ok(Rule {
        origin: Origin::Rule(i),
        path: r.path,
        methods,
        host,
        access,
    })
}

/// The entries of `rules[i].allow`: user names from `[[users]]`, or `group:NAME` for a group at
/// least one user is in. A name that matches nobody is a mistake (a typo locks the wrong people
/// out or, worse, was meant to let someone in), so it is refused rather than ignored.
fn principals(
    i: usize,
    list: &[String],
    users: &[UserConfig],
) -> Result<Vec<Principal>, ConfigError> {
    if list.is_empty() {
        return Err(invalid(
            format!("rules[{i}].allow"),
            "is empty: nobody could enter; write deny = true if that is meant",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(j, entry)| {
            let key = format!("rules[{i}].allow[{j}]");
            if let Some(group) = entry.strip_prefix("group:") {
                if !rules::is_group_name(group) {
                    return Err(invalid(key, format!("{group:?} is not a group name (letters, digits and -_. only)")));
                }
                if !users.iter().any(|u| u.groups.iter().any(|g| g == group)) {
                    return Err(invalid(
                        key,
                        format!("unknown group {group:?}: no [[users]] entry lists it in groups"),
                    ));
                }
                Ok(Principal::Group(group.to_string()))
            } else if users.iter().any(|u| u.name == *entry) {
                Ok(Principal::User(entry.clone()))
            } else {
                Err(invalid(
                    key,
                    format!("unknown user {entry:?}: not a [[users]] name (write \"group:NAME\" for a group)"),
                ))
            }
        })
        .collect()
}

fn validate_server(s: &file::Server, cores: usize) -> Result<ServerConfig, ConfigError> {
    let listen = |key: &str, text: &str| -> Result<SocketAddr, ConfigError> {
        text.parse().map_err(|_| {
            invalid(
                key,
                format!("{text:?} is not an address; write IP:PORT, e.g. \"127.0.0.1:8080\""),
            )
        })
    };
    let tls = s.tls.as_ref().map(validate_tls).transpose()?;
    let redirect_http = match &s.redirect_http {
        None => None,
        Some(_) if tls.is_none() => {
            return Err(invalid(
                "server.redirect_http",
                "redirects to https need [server.tls] (cert and key)",
            ));
        }
        Some(addr) => Some(listen("server.redirect_http", addr)?),
    };
    let hsts = match (&s.hsts, &s.tls) {
        (None, t) => {
            hsts_flags_without_max_age(t.as_ref())?;
            None
        }
        (Some(_), None) => {
            return Err(invalid(
                "server.hsts",
                "HSTS needs [server.tls] (cert and key)",
            ));
        }
        (Some(text), Some(t)) => {
            let max_age = duration("server.hsts", Some(text), Duration::ZERO)?;
            Some(hsts_value(
                max_age,
                t.hsts_include_subdomains.unwrap_or(false),
                t.hsts_preload.unwrap_or(false),
            )?)
        }
    };
    Ok(ServerConfig {
        listen: listen("server.listen", &s.listen)?,
        workers: positive("server.workers", s.workers, cores)?,
        shutdown_timeout: duration(
            "server.shutdown_timeout",
            s.shutdown_timeout.as_deref(),
            Duration::from_secs(10),
        )?,
        header_read_timeout: duration(
            "server.header_read_timeout",
            s.header_read_timeout.as_deref(),
            Duration::from_secs(30),
        )?,
        handshake_timeout: duration(
            "server.handshake_timeout",
            s.handshake_timeout.as_deref(),
            Duration::from_secs(10),
        )?,
        max_connections: positive("server.max_connections", s.max_connections, 8192)?,
        trusted_proxies: s
            .trusted_proxies
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        invalid(
                            format!("server.trusted_proxies[{i}]"),
                            format!("{text:?} is not an address or CIDR range like \"10.0.0.0/8\""),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
        tls,
        redirect_http,
        hsts,
    })
}

/// `[server.tls]`: the certificate and key (which must belong together) and the OCSP response
/// to staple, all read now so a bad file stops the start and `check`, naming its key.
fn validate_tls(t: &file::ServerTls) -> Result<TlsFiles, ConfigError> {
    let (cert, key) = (PathBuf::from(&t.cert), PathBuf::from(&t.key));
    let mut loaded = crate::server::tls::load_certified_key(&cert, &key)
        .map_err(|reason| invalid("server.tls", reason))?;
    let ocsp = match &t.ocsp_file {
        None => None,
        Some(path) => {
            let path = PathBuf::from(path);
            let der = crate::server::tls::load_ocsp(&path)
                .map_err(|reason| invalid("server.tls.ocsp_file", reason))?;
            loaded.ocsp = Some(der);
            Some(path)
        }
    };
    Ok(TlsFiles {
        cert,
        key,
        ocsp,
        loaded: Arc::new(loaded),
    })
}

/// The browsers' HSTS preload list takes only hosts that send a max-age of a year or more with
/// includeSubDomains (its submission rules): anything less is refused here rather than sent as
/// a `preload` the list would reject.
const HSTS_PRELOAD_MIN: Duration = Duration::from_secs(31_536_000);

/// The `Strict-Transport-Security` value: `max-age` from `server.hsts`, then the directives
/// `[server.tls]` asks for.
fn hsts_value(
    max_age: Duration,
    include_subdomains: bool,
    preload: bool,
) -> Result<http::HeaderValue, ConfigError> {
    if preload && !include_subdomains {
        return Err(invalid(
            "server.tls.hsts_preload",
            "preload needs server.tls.hsts_include_subdomains = true (the preload list covers every subdomain)",
        ));
    }
    if preload && max_age < HSTS_PRELOAD_MIN {
        return Err(invalid(
            "server.tls.hsts_preload",
            format!(
                "preload needs server.hsts of at least 365d (31536000 seconds); it is {} seconds",
                max_age.as_secs()
            ),
        ));
    }
    let mut value = format!("max-age={}", max_age.as_secs());
    if include_subdomains {
        value.push_str("; includeSubDomains");
    }
    if preload {
        value.push_str("; preload");
    }
    Ok(http::HeaderValue::from_str(&value).expect("digits and ASCII words are header-safe"))
}

/// `hsts_include_subdomains` or `hsts_preload` on, but no `server.hsts` to send them with:
/// refused, since no header would be sent and the setting would silently do nothing.
fn hsts_flags_without_max_age(tls: Option<&file::ServerTls>) -> Result<(), ConfigError> {
    let Some(t) = tls else { return Ok(()) };
    for (key, on) in [
        (
            "server.tls.hsts_include_subdomains",
            t.hsts_include_subdomains,
        ),
        ("server.tls.hsts_preload", t.hsts_preload),
    ] {
        if on == Some(true) {
            return Err(invalid(
                key,
                "needs server.hsts (the max-age) to be set: the directive is sent in that header",
            ));
        }
    }
    Ok(())
}

fn validate_upstream(u: &file::Upstream) -> Result<UpstreamConfig, ConfigError> {
    let identity_header = managed_header(
        "upstream.identity_header",
        u.identity_header.as_deref(),
        "x-forwarded-user",
    )?;
    let groups_header = managed_header(
        "upstream.groups_header",
        u.groups_header.as_deref(),
        "x-forwarded-groups",
    )?;
    if headers::same_name(&identity_header, &groups_header) {
        return Err(invalid(
            "upstream.groups_header",
            "must differ from upstream.identity_header",
        ));
    }
    let target = match &u.url {
        Some(url) => Some(validate_target(url, u)?),
        None => {
            for (key, set) in [
                ("upstream.timeout", u.timeout.is_some()),
                (
                    "upstream.tunnel_idle_timeout",
                    u.tunnel_idle_timeout.is_some(),
                ),
                ("upstream.ca", u.ca.is_some()),
                ("upstream.tls_server_name", u.tls_server_name.is_some()),
                (
                    "upstream.default_cache_control",
                    u.default_cache_control.is_some(),
                ),
            ] {
                if set {
                    return Err(invalid(key, "needs upstream.url"));
                }
            }
            None
        }
    };
    Ok(UpstreamConfig {
        target,
        identity_header,
        groups_header,
        upgrades: upgrades(u.upgrades.as_deref())?,
        default_cache_control: default_cache_control(u.default_cache_control.as_deref())?,
    })
}

/// `upstream.upgrades` (default `["websocket"]`), lower case. Each entry is a protocol name
/// (an HTTP token); `h2c` is refused here as it is on every request, so a config that lists
/// it fails at start rather than seeming to allow it.
fn upgrades(listed: Option<&[String]>) -> Result<Vec<http::HeaderValue>, ConfigError> {
    let Some(listed) = listed else {
        return Ok(vec![http::HeaderValue::from_static("websocket")]);
    };
    let mut out: Vec<http::HeaderValue> = Vec::with_capacity(listed.len());
    for (i, name) in listed.iter().enumerate() {
        let key = || format!("upstream.upgrades[{i}]");
        if name.eq_ignore_ascii_case("h2c") {
            return Err(invalid(
                key(),
                "h2c can never be relayed: after it the client sends HTTP/2 requests straight to the app, past sessiongate; remove it",
            ));
        }
        if !crate::http::upgrade::is_token(name.as_bytes()) {
            return Err(invalid(
                key(),
                format!(
                    "{name:?} is not a protocol name (letters, digits and !#$%&'*+-.^_`|~, no spaces, no version)"
                ),
            ));
        }
        let lower = http::HeaderValue::from_str(&name.to_ascii_lowercase())
            .map_err(|_| invalid(key(), "is not a valid header value"))?;
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

/// `upstream.default_cache_control`: any value a `Cache-Control` header can carry (sent as
/// written), `""` for none.
fn default_cache_control(text: Option<&str>) -> Result<Option<http::HeaderValue>, ConfigError> {
    const KEY: &str = "upstream.default_cache_control";
    match text.map(str::trim) {
        // Static, so the copy put on each answer is a pointer, not a reference count shared by
        // every worker thread.
        None | Some("private") => Ok(Some(http::HeaderValue::from_static("private"))),
        Some("") => Ok(None),
        Some(text) => http::HeaderValue::from_str(text).map(Some).map_err(|_| {
            invalid(
                KEY,
                format!(
                    "{text:?} cannot be a header value (no line breaks or control characters); write e.g. \"private\", or \"\" to leave answers as the app sent them"
                ),
            )
        }),
    }
}

fn validate_target(url: &str, u: &file::Upstream) -> Result<UpstreamTarget, ConfigError> {
    let uri: http::Uri = url.parse().map_err(|_| {
        invalid(
            "upstream.url",
            format!("{url:?} is not a URL; write e.g. \"http://127.0.0.1:3000\""),
        )
    })?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(invalid(
                "upstream.url",
                "must start with http:// or https://",
            ));
        }
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| invalid("upstream.url", "has no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid("upstream.url", "must not contain user information"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(
            "upstream.url",
            "must not have a path or query: requests keep their own path",
        ));
    }
    // Normalise to host:port so the connector always has a port.
    let authority = if authority.port_u16().is_some() {
        authority
    } else {
        format!("{}:{}", authority.host(), if https { 443 } else { 80 })
            .parse()
            .map_err(|_| invalid("upstream.url", "has an invalid host"))?
    };

    let tls = if https {
        let client = crate::server::tls::client_config(u.ca.as_deref().map(Path::new))
            .map_err(|reason| invalid("upstream.ca", reason))?;
        let server_name = match &u.tls_server_name {
            None => None,
            Some(name) => Some(
                rustls_pki_types::ServerName::try_from(name.clone()).map_err(|_| {
                    invalid(
                        "upstream.tls_server_name",
                        format!("{name:?} is not a DNS name or IP address"),
                    )
                })?,
            ),
        };
        Some(UpstreamTls {
            client: Arc::new(client),
            ca: u.ca.as_ref().map(PathBuf::from),
            server_name,
        })
    } else {
        for (key, set) in [
            ("upstream.ca", u.ca.is_some()),
            ("upstream.tls_server_name", u.tls_server_name.is_some()),
        ] {
            if set {
                return Err(invalid(key, "only applies to https:// upstreams"));
            }
        }
        None
    };

    Ok(UpstreamTarget {
        authority,
        tls,
        timeout: duration(
            "upstream.timeout",
            u.timeout.as_deref(),
            Duration::from_secs(30),
        )?,
        tunnel_idle_timeout: duration(
            "upstream.tunnel_idle_timeout",
            u.tunnel_idle_timeout.as_deref(),
            Duration::from_secs(3600),
        )?,
    })
}

/// A header sessiongate sets for the upstream (`key`, or `default` when absent): a valid name
/// that HTTP or sessiongate does not already manage.
fn managed_header(
    key: &str,
    name: Option<&str>,
    default: &'static str,
) -> Result<HeaderName, ConfigError> {
    let Some(name) = name else {
        return Ok(HeaderName::from_static(default));
    };
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| invalid(key, format!("{name:?} is not a valid header name")))?;
    if headers::is_reserved(&header) {
        return Err(invalid(
            key,
            format!("{name:?} is a header sessiongate or HTTP itself manages"),
        ));
    }
    Ok(header)
}

/// `session.store` and `[redis]`.
fn validate_store(
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
    use redis::IntoConnectionInfo;
    let Some(url) = &r.url else {
        return Err(invalid(
            "redis.url",
            "is required with session.store = \"redis\", e.g. \"redis://127.0.0.1:6379/0\"",
        ));
    };
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
    let mut redis = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    if let Some(path) = &r.password_file {
        if parsed.password().is_some() {
            return Err(invalid(
                "redis.password_file",
                "the password is in redis.url already: set it in one place",
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("redis.password_file", format!("cannot read {path:?}: {e}")))?;
        let password = text.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            return Err(invalid("redis.password_file", format!("{path:?} is empty")));
        }
        redis = redis.set_password(password);
    }
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    let connection = info.set_redis_settings(redis).set_tcp_settings(tcp);
    let ca = match &r.ca {
        None => None,
        Some(_) if !tls => {
            return Err(invalid(
                "redis.ca",
                "is for rediss:// (TLS) URLs; redis.url is plain redis://",
            ));
        }
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| invalid("redis.ca", format!("cannot read {path:?}: {e}")))?;
            if !has_pem_certificate(&pem) {
                return Err(invalid(
                    "redis.ca",
                    format!("{path:?} holds no PEM certificate"),
                ));
            }
            Some(pem)
        }
    };
    let key_prefix = r
        .key_prefix
        .clone()
        .unwrap_or_else(|| "sessiongate:".into());
    if key_prefix.is_empty()
        || key_prefix.len() > 64
        || !key_prefix.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(
            "redis.key_prefix",
            "must be 1 to 64 visible ASCII characters, e.g. \"sessiongate:\"",
        ));
    }
    Ok(RedisConfig {
        connection,
        tls: tls.then_some(ca),
        key_prefix,
        timeout: duration(
            "redis.timeout",
            r.timeout.as_deref(),
            Duration::from_millis(250),
        )?,
        display,
    })
}

/// Whether `pem` holds at least one certificate.
fn has_pem_certificate(pem: &[u8]) -> bool {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem).any(|c| c.is_ok())
}

fn validate_session(s: &file::Session, store: StoreConfig) -> Result<SessionConfig, ConfigError> {
    let secret = match (&s.secret, &s.secret_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "session.secret_file",
                "set either session.secret or session.secret_file, not both",
            ));
        }
        (Some(secret), None) => Some(secret.as_bytes().to_vec()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid("session.secret_file", format!("cannot read {path:?}: {e}"))
            })?;
            Some(text.trim_end_matches(['\r', '\n']).as_bytes().to_vec())
        }
        (None, None) => None,
    };
    if let Some(secret) = &secret
        && secret.len() < MIN_SECRET_LEN
    {
        let key = if s.secret.is_some() {
            "session.secret"
        } else {
            "session.secret_file"
        };
        return Err(invalid(
            key,
            format!(
                "must be at least {MIN_SECRET_LEN} bytes (it has {}); make one with `openssl rand -base64 48`",
                secret.len()
            ),
        ));
    }

    let secure = s.secure.unwrap_or(true);
    let base_name = s.cookie_name.as_deref().unwrap_or("sessiongate");
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
    let cookie_domain = match &s.cookie_domain {
        None => None,
        // A leading dot means nothing to browsers; the rest is canonical like any host.
        Some(d) => match HostPattern::parse(d.strip_prefix('.').unwrap_or(d)) {
            Ok(HostPattern::Exact(name)) if !crate::http::host::is_ip(&name) => Some(name),
            _ => {
                return Err(invalid(
                    "session.cookie_domain",
                    format!("{d:?} is not a domain name like \"example.com\""),
                ));
            }
        },
    };
    let cookie_name = if base_name.starts_with("__Host-") || base_name.starts_with("__Secure-") {
        if !secure {
            return Err(invalid(
                "session.cookie_name",
                "__Host- and __Secure- cookies need session.secure = true",
            ));
        }
        if cookie_domain.is_some() && base_name.starts_with("__Host-") {
            return Err(invalid(
                "session.cookie_name",
                "__Host- cookies cannot have a Domain; with session.cookie_domain use __Secure- (or no prefix: it is added)",
            ));
        }
        base_name.to_string()
    } else if secure && cookie_domain.is_some() {
        // A Domain rules out __Host-; __Secure- still makes browsers refuse it over http.
        format!("__Secure-{base_name}")
    } else if secure {
        // No Domain is set and Path is "/", so the strictest prefix applies.
        format!("__Host-{base_name}")
    } else {
        base_name.to_string()
    };

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
        s.idle_timeout.as_deref(),
        Duration::from_secs(30 * 60),
    )?;
    let absolute_timeout = duration(
        "session.absolute_timeout",
        s.absolute_timeout.as_deref(),
        Duration::from_secs(12 * 3600),
    )?;
    let cookie_max_age = match &s.cookie_max_age {
        None => None,
        Some(v) => Some(duration("session.cookie_max_age", Some(v), Duration::ZERO)?),
    };
    let sweep_interval = duration(
        "session.sweep_interval",
        s.sweep_interval.as_deref(),
        Duration::from_secs(60),
    )?;

    if matches!(store, StoreConfig::Redis(_)) && secret.is_none() {
        return Err(invalid(
            "session.secret_file",
            "session.store = \"redis\" needs session.secret or session.secret_file: every replica must sign and find sessions with the same key",
        ));
    }
    // Often enough that the idle timeout is kept to within a tenth, rarely enough that a busy
    // session costs a shared store one write a minute at most.
    let touch_default = (idle_timeout / 10).min(Duration::from_secs(60));
    let touch_interval = duration(
        "session.touch_interval",
        s.touch_interval.as_deref(),
        touch_default.max(Duration::from_millis(1)),
    )?;
    if touch_interval >= idle_timeout {
        return Err(invalid(
            "session.touch_interval",
            "must be shorter than session.idle_timeout, or busy sessions would idle out",
        ));
    }

    Ok(SessionConfig {
        store,
        touch_interval,
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

fn validate_auth(a: &file::Auth, cores: usize) -> Result<AuthConfig, ConfigError> {
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
            a.failure_window.as_deref(),
            Duration::from_secs(60),
        )?,
        redirect_hosts: a
            .redirect_hosts
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, h)| {
                HostPattern::parse(h).map_err(|reason| {
                    invalid(
                        format!("auth.redirect_hosts[{i}]"),
                        format!("{h:?} {reason}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        websocket_origins: a
            .websocket_origins
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, o)| {
                websocket_origin(o).map_err(|reason| {
                    invalid(
                        format!("auth.websocket_origins[{i}]"),
                        format!("{o:?} {reason}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        require_totp: a.require_totp.unwrap_or(false),
        pending_lifetime: PENDING_LIFETIME,
    })
}

/// `users[i].totp_secret` or `users[i].totp_secret_file` (not both), as a checked secret.
fn user_totp(
    i: usize,
    inline: Option<&str>,
    file: Option<&str>,
) -> Result<Option<TotpSecret>, ConfigError> {
    let (key, text) = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                format!("users[{i}].totp_secret"),
                "set either totp_secret or totp_secret_file, not both",
            ));
        }
        (Some(text), None) => (format!("users[{i}].totp_secret"), text.to_string()),
        (None, Some(path)) => {
            let key = format!("users[{i}].totp_secret_file");
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(key.clone(), format!("cannot read {path:?}: {e}")))?;
            (key, text)
        }
        (None, None) => return Ok(None),
    };
    // The reason never quotes the secret: config errors are printed and logged.
    TotpSecret::from_base32(&text)
        .map(Some)
        .map_err(|reason| invalid(key, reason))
}

/// Reads a file named by `key`, refusing one larger than `limit` bytes.
fn read_limited(key: &str, path: &str, limit: usize) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| invalid(key, format!("cannot read {path:?}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(key, format!("cannot read {path:?}: {e}")))?;
    if bytes.len() > limit {
        return Err(invalid(
            key,
            format!("{path:?} is larger than {} KiB", limit / 1024),
        ));
    }
    Ok(bytes)
}

/// One line of text: no control characters (a newline included), at most `max` characters.
fn one_line(key: &str, value: Option<&str>, max: usize) -> Result<Option<String>, ConfigError> {
    let Some(text) = value.map(str::trim) else {
        return Ok(None);
    };
    if text.chars().any(char::is_control) || text.chars().count() > max {
        return Err(invalid(
            key,
            format!("must be one line of at most {max} characters"),
        ));
    }
    Ok((!text.is_empty()).then(|| text.to_string()))
}

fn validate_login_page(p: &file::LoginPage) -> Result<LoginPageConfig, ConfigError> {
    let title = one_line("login_page.title", p.title.as_deref(), 120)?
        .unwrap_or_else(|| Branding::default().title);
    let app_name = one_line("login_page.app_name", p.app_name.as_deref(), 120)?;
    let message = one_line("login_page.message", p.message.as_deref(), 500)?;
    let accent_color = match &p.accent_color {
        None => crate::pages::DEFAULT_ACCENT.to_string(),
        Some(text) => crate::pages::parse_color(text).ok_or_else(|| {
            invalid(
                "login_page.accent_color",
                format!(
                    "{text:?} is not a colour; write \"#rgb\" or \"#rrggbb\", e.g. \"#1f5fbf\""
                ),
            )
        })?,
    };
    let logo = match &p.logo {
        None => None,
        Some(path) => {
            let content_type = match Path::new(path)
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("svg") => "image/svg+xml",
                Some("png") => "image/png",
                _ => {
                    return Err(invalid(
                        "login_page.logo",
                        format!("{path:?} must be an .svg or a .png file"),
                    ));
                }
            };
            let bytes = read_limited("login_page.logo", path, MAX_LOGO_BYTES)?;
            if content_type == "image/png" && !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
                return Err(invalid(
                    "login_page.logo",
                    format!("{path:?} is not a PNG image"),
                ));
            }
            Some(Logo {
                bytes: bytes.into(),
                content_type,
            })
        }
    };
    let template = match &p.template {
        None => None,
        Some(path) => {
            let bytes = read_limited("login_page.template", path, MAX_TEMPLATE_BYTES)?;
            let source = String::from_utf8(bytes).map_err(|_| {
                invalid("login_page.template", format!("{path:?} is not UTF-8 text"))
            })?;
            Some(UserTemplate {
                path: path.clone(),
                source,
            })
        }
    };
    Ok(LoginPageConfig {
        branding: Branding {
            title,
            app_name,
            message,
            accent_color,
            logo,
        },
        template,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_value_joins_max_age_and_the_directives_and_refuses_a_preload_the_list_would() {
        let year = Duration::from_secs(31_536_000);
        let value = |max_age, sub, preload| {
            hsts_value(max_age, sub, preload).map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(value(year, false, false).unwrap(), "max-age=31536000");
        assert_eq!(
            value(Duration::from_secs(60), true, false).unwrap(),
            "max-age=60; includeSubDomains"
        );
        assert_eq!(
            value(year, true, true).unwrap(),
            "max-age=31536000; includeSubDomains; preload"
        );
        for (max_age, sub, says) in [
            (year, false, "hsts_include_subdomains = true"),
            (year - Duration::from_secs(1), true, "at least 365d"),
        ] {
            let err = value(max_age, sub, true).unwrap_err().to_string();
            assert!(
                err.contains("server.tls.hsts_preload") && err.contains(says),
                "{err}"
            );
        }
    }

    const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:8080"
[upstream]
url = "http://127.0.0.1:3000"
[[users]]
name = "alice"
password_hash = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$bFhbuNFJvSTFDCOCLdXpUQSnTdWIVYOt4Z8mIz9SVuw"
"#;

    /// Parses `MINIMAL` on a thread allowed to run on one CPU only, as a sidecar limited to
    /// one core (or pinned with taskset) is.
    fn config_on_one_cpu() -> Config {
        std::thread::spawn(|| {
            // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity
            // (pid 0: this thread) only read and write that set.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                assert_eq!(
                    libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
                    0,
                    "cannot pin the test thread to CPU 0"
                );
            }
            Config::from_toml(MINIMAL).unwrap()
        })
        .join()
        .unwrap()
    }

    /// On one core a second password-hashing thread adds memory and competes with the request
    /// path for the core's caches without checking passwords any faster (measured in
    /// docs/BENCHMARKS.md), so the defaults follow the cores sessiongate may use.
    #[test]
    fn worker_counts_default_to_the_cores_sessiongate_may_use() {
        let one = config_on_one_cpu();
        assert_eq!(one.auth.login_workers, 1);
        assert_eq!(one.server.workers, 1);

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let all = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(all.auth.login_workers, cores);
        assert_eq!(all.server.workers, cores);
    }

    fn with_upstream_line(line: &str) -> Result<Config, ConfigError> {
        let toml = MINIMAL.replace(
            "url = \"http://127.0.0.1:3000\"",
            &format!("url = \"http://127.0.0.1:3000\"\n{line}"),
        );
        Config::from_toml(&toml)
    }

    #[test]
    fn upstream_upgrades_default_to_websocket_and_are_lower_cased() {
        let names = |c: Config| -> Vec<String> {
            c.upstream
                .upgrades
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(with_upstream_line("").unwrap()), ["websocket"]);
        assert_eq!(
            names(
                with_upstream_line("upgrades = [\"WebSocket\", \"My-Proto\", \"websocket\"]")
                    .unwrap()
            ),
            ["websocket", "my-proto"]
        );
        assert!(names(with_upstream_line("upgrades = []").unwrap()).is_empty());
    }

    #[test]
    fn upstream_upgrades_never_list_h2c_and_hold_only_tokens() {
        for (line, key, says) in [
            (
                "upgrades = [\"websocket\", \"h2c\"]",
                "upstream.upgrades[1]",
                "h2c can never be relayed",
            ),
            (
                "upgrades = [\"H2C\"]",
                "upstream.upgrades[0]",
                "h2c can never be relayed",
            ),
            (
                "upgrades = [\"web socket\"]",
                "upstream.upgrades[0]",
                "is not a protocol name",
            ),
            (
                "upgrades = [\"websocket/13\"]",
                "upstream.upgrades[0]",
                "is not a protocol name",
            ),
            (
                "upgrades = [\"\"]",
                "upstream.upgrades[0]",
                "is not a protocol name",
            ),
        ] {
            let e = with_upstream_line(line).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(says), "{line}: {e}");
        }
    }

    #[test]
    fn default_cache_control_is_private_off_when_empty_and_any_header_value() {
        let value = |line: &str| {
            with_upstream_line(line)
                .unwrap()
                .upstream
                .default_cache_control
        };
        assert_eq!(value("").unwrap(), "private");
        assert_eq!(value("default_cache_control = \"\"").as_ref(), None);
        assert_eq!(
            value("default_cache_control = \"private, no-store, max-age=0\"").unwrap(),
            "private, no-store, max-age=0"
        );
        let e = with_upstream_line("default_cache_control = \"private\\nx-evil: 1\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("upstream.default_cache_control") && e.contains("header value"),
            "{e}"
        );
    }
}
