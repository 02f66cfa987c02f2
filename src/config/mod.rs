//! The configuration file: what the user wrote (`file`, serde types) and the validated
//! [`Config`] the rest of the program uses, made of the lower modules' types. Each section is
//! validated by a module of its own; `files` reads the files the config names. Every error
//! names the key it is about.

pub mod auth;
pub mod error;
mod file;
pub mod files;
pub mod login_page;
mod ops;
mod providers;
mod restart;
mod rules;
pub mod server;
pub mod session;
mod store;
pub mod upstream;
mod users;
mod value;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::auth::AuthConfig;
use crate::config::error::{ConfigError, invalid};
use crate::config::login_page::LoginPageConfig;
use crate::config::server::ServerConfig;
use crate::config::session::SessionConfig;
use crate::config::upstream::UpstreamConfig;
use crate::gate::policy::{PolicyConfig, UserConfig};
use crate::gate::rules::RuleSet;
use crate::oidc::config::ProviderConfig;
use crate::ops::logging::LogFormat;
use crate::pages::Pages;

// Names other modules used before the config was split by section.
pub use crate::config::session::{SameSite, StoreConfig};

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
    /// `[[providers]]`: the OpenID Connect providers people may sign in with.
    pub providers: Vec<ProviderConfig>,
    /// Each provider's id and fingerprint, for the policy.
    pub provider_fingerprints: Vec<(String, u32)>,
    /// `auth.auto_redirect`: a browser that needs to sign in goes straight to the provider
    /// when it is the only way in (one provider, no `[[users]]`).
    pub auto_redirect: bool,
    /// `server.public_url`, without a trailing '/': where browsers reach sessiongate when an
    /// outer proxy changes the scheme or host (the providers' callbacks are built on it).
    pub public_url: Option<String>,
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

/// A config file as it was loaded: its path, and its keys as written, so a reload can tell
/// which settings changed.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub table: toml::Table,
}

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
        let document =
            toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let file: file::File = serde_path_to_error::deserialize(document).map_err(|e| {
            // The dotted key (`session.idle_timeout`, `users[1].name`) when serde was inside one.
            let key = e.path().to_string();
            if key == "." || key.contains('?') {
                ConfigError::Parse(e.into_inner().to_string())
            } else if e.inner().message().ends_with(file::DURATION_HINT) {
                invalid(key, e.inner().message())
            } else {
                // An unknown key or a wrong type: toml's own message, which shows the line.
                ConfigError::Parse(format!("{key}: {}", e.into_inner()))
            }
        })?;
        validate(file)
    }

    /// What the gate's policy is made of: the users, the rules and the redirect hosts.
    pub fn policy(&self) -> PolicyConfig<'_> {
        PolicyConfig {
            users: &self.users,
            rules: &self.rules,
            redirect_hosts: &self.auth.redirect_hosts,
            providers: &self.provider_fingerprints,
        }
    }

    /// The keys that differ between the file this config was loaded from and `newer`, other
    /// than those a reload applies (users, rules, `auth.public_paths`, `auth.default`):
    /// settings that only take effect on a restart. Empty without a source.
    pub fn restart_only_changes(&self, newer: &Config) -> Vec<String> {
        match (&self.source, &newer.source) {
            (Some(old), Some(new)) => restart::changes(&old.table, &new.table),
            _ => Vec::new(),
        }
    }
}

fn validate(file: file::File) -> Result<Config, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = server::validate_server(&file.server, cores)?;
    let upstream = upstream::validate_upstream(&file.upstream)?;
    let store = store::validate_store(&file.session, file.redis.as_ref())?;
    let session = session::validate_session(&file.session, store)?;
    let auth = auth::validate_auth(&file.auth, cores)?;
    auth::check_passkeys(&auth, &session)?;
    let providers = providers::validate_providers(file.providers)?;
    let users = users::validate_users(file.users, auth.require_totp, !providers.is_empty())?;
    providers::check_user_names(&users, &providers)?;
    let public_url = providers::validate_public_url(file.server.public_url.as_deref())?;
    providers::check_same_site(&session, &providers)?;
    let rules = rules::validate_rules(&file.auth, file.rules, &users, &providers)?;
    let metrics = ops::validate_metrics(&file.metrics, server.listen)?;
    let log = ops::validate_log(&file.log)?;
    let login_page = login_page::validate_login_page(&file.login_page)?;
    let pages = login_page::compile_pages(&login_page, &auth.prefix)?;
    Ok(Config {
        server,
        upstream,
        session,
        auth,
        users,
        rules,
        provider_fingerprints: providers
            .iter()
            .map(|p| (p.id.clone(), p.fingerprint()))
            .collect(),
        providers,
        auto_redirect: file.auth.auto_redirect.unwrap_or(true),
        public_url,
        metrics,
        log,
        login_page,
        pages: Arc::new(pages),
        source: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MINIMAL: &str = r#"
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

    fn refused(extra: &str) -> String {
        Config::from_toml(&format!("{MINIMAL}{extra}"))
            .unwrap_err()
            .to_string()
    }

    /// serde reads the durations, and the error still names the dotted key, as the README's
    /// example shows it; zero is refused by validation.
    #[test]
    fn refused_values_name_their_dotted_key() {
        assert_eq!(
            refused("[session]\nidle_timeout = \"soon\""),
            "config: session.idle_timeout: \"soon\" is not a duration (expected number at 0); write e.g. \"30s\", \"30m\" or \"12h\""
        );
        assert_eq!(
            refused("[session]\nabsolute_timeout = \"0s\""),
            "config: session.absolute_timeout: must be longer than zero"
        );
        let unknown = refused("[session]\ncolor = \"blue\"");
        assert!(unknown.starts_with("config: session.color: "), "{unknown}");
        assert!(unknown.contains("unknown field `color`"), "{unknown}");
        assert!(
            unknown.contains("line "),
            "toml's message shows the line: {unknown}"
        );
        let wrong_type = refused("[[users]]\nname = 7\npassword_hash = \"x\"");
        assert!(
            wrong_type.starts_with("config: users[1].name: "),
            "{wrong_type}"
        );
        assert!(
            wrong_type.contains("invalid type: integer `7`"),
            "{wrong_type}"
        );
        assert!(refused("[server\n").contains("line"));
    }

    /// `{:?}` of a config, logged or printed by mistake, shows neither the session secret nor
    /// the Redis password; the client gets the password only when it is made.
    #[test]
    fn debug_never_prints_a_secret() {
        use secrecy::ExposeSecret;
        let secret = "session-secret-session-secret-0123456789";
        let config = Config::from_toml(&format!(
            "{MINIMAL}[session]\nsecret = \"{secret}\"\nstore = \"redis\"\n[redis]\nurl = \"redis://user:redis-password@127.0.0.1:6379/2\"\n"
        ))
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains(secret) && !printed.contains("redis-password"));
        let StoreConfig::Redis(redis) = &config.session.store else {
            panic!("redis store");
        };
        let settings = redis.connection.redis_settings();
        assert_eq!(settings.password(), None);
        assert_eq!((settings.username(), settings.db()), (Some("user"), 2));
        assert_eq!(
            redis.password.as_ref().map(|p| p.expose_secret()),
            Some("redis-password")
        );
        assert_eq!(redis.display, "redis://user@127.0.0.1:6379/2");
    }
}
