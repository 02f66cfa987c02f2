//! What the TOML file may contain, as serde reads it. Unknown keys are refused by serde and
//! named in the error (`Config::from_toml` adds the dotted key). Durations are read here;
//! every other check is the section's validation.

use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

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
    #[serde(default)]
    pub providers: Vec<Provider>,
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
    pub sentinels: Option<Vec<String>>,
    pub master_name: Option<String>,
    pub sentinel_password_file: Option<String>,
    pub ca: Option<String>,
    pub password_file: Option<String>,
    pub key_prefix: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: String,
    pub workers: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub shutdown_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub header_read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub handshake_timeout: Option<Duration>,
    pub redirect_http: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub hsts: Option<Duration>,
    pub max_connections: Option<usize>,
    pub trusted_proxies: Option<Vec<String>>,
    pub public_url: Option<String>,
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
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    pub identity_header: Option<String>,
    pub groups_header: Option<String>,
    pub ca: Option<String>,
    pub tls_server_name: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub tunnel_idle_timeout: Option<Duration>,
    pub upgrades: Option<Vec<String>>,
    pub default_cache_control: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub secret: Option<SecretString>,
    pub secret_file: Option<String>,
    pub cookie_name: Option<String>,
    pub secure: Option<bool>,
    pub same_site: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub absolute_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub cookie_max_age: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub sweep_interval: Option<Duration>,
    pub cookie_domain: Option<String>,
    pub store: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub touch_interval: Option<Duration>,
    pub state_dir: Option<String>,
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
    #[serde(default, deserialize_with = "duration")]
    pub failure_window: Option<Duration>,
    pub redirect_hosts: Option<Vec<String>>,
    pub websocket_origins: Option<Vec<String>>,
    pub require_totp: Option<bool>,
    pub require_second_factor: Option<bool>,
    pub auto_redirect: Option<bool>,
    pub passkeys: Option<bool>,
    pub passkey_rp_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    pub groups: Option<Vec<String>>,
    pub totp_secret: Option<SecretString>,
    pub totp_secret_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub username_claim: Option<String>,
    pub groups_claim: Option<String>,
    pub allowed_domains: Option<Vec<String>>,
    pub allowed_users: Option<Vec<String>>,
    pub allowed_groups: Option<Vec<String>>,
    pub logout_at_provider: Option<bool>,
    pub ca: Option<String>,
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

/// Ends every message about a value that is not a duration.
pub(super) const DURATION_HINT: &str = "; write e.g. \"30s\", \"30m\" or \"12h\"";

/// A duration as humantime reads it (`"500ms"`, `"30m"`, `"1h 30m"`, `"7d"`). Not
/// humantime-serde, which parses with the same function: its error drops humantime's reason and
/// the example below, and the README quotes this message. Zero is refused by validation.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!("{text:?} is not a duration ({e}){DURATION_HINT}"))
    })
}
