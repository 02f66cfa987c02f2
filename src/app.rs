//! `App`: everything a request needs, built once from the config and shared through `Arc`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;

use crate::auth::SignIn;
use crate::auth::cookies::PrefixCookies;
use crate::auth::csrf::FormTokens;
use crate::auth::limiter::Limiter;
use crate::auth::pending::Pending;
use crate::auth::provider_attempts::{ATTEMPT_LIFETIME, Attempts};
use crate::auth::provider_attempts::{CEREMONY_LIFETIME, Ceremony, TOTP_SETUP_LIFETIME, TotpSetup};
use crate::auth::shared_limiter::{FailureLimits, SharedLimiter};
use crate::config::Config;
use crate::config::error::ConfigError;
use crate::config::session::{SameSite, StoreConfig};
use crate::credentials::password::Verifier;
use crate::credentials::sealed::Sealer;
use crate::gate::{Gate, Site};
use crate::http::tls::CertStore;
use crate::oidc::Providers;
use crate::ops::metrics::{EndReason, Metrics};
use crate::pages::Pages;
use crate::proxy::Upstream;
use crate::proxy::readiness::UpstreamProbe;
use crate::session::cookie::{CookieAttrs, SessionCookie};
use crate::session::identity::UserNames;
use crate::session::redis::RedisStore;
use crate::session::redis_link::RedisConfig;
use crate::session::redis_link::{LinkError, RedisLink};
use crate::session::state::{DurableStore, Opening, StateDir, StateError};
use crate::session::tunnels::Tunnels;
use crate::session::user_data::UserData;
use crate::session::{CookieSigner, MemoryStore, SessionKeys, Sessions};
use secrecy::ExposeSecret;
use tokio_rustls::TlsAcceptor;

/// Logged at start, and by `sessiongate check`, when no secret is configured.
pub const NO_SECRET: &str = "no session.secret or session.secret_file configured: using a random key for this process, so login pages opened before a restart must be reloaded after it";

pub struct App {
    /// The config sessiongate started with. Users and rules live on in `gate`'s policy, which
    /// a reload replaces; everything else here needs a restart to change.
    pub config: Config,
    /// Shared with the tunnels, whose sessions it checks.
    pub gate: Arc<Gate>,
    pub signer: CookieSigner,
    pub verifier: Verifier,
    pub tokens: FormTokens,
    pub limiter: FailureLimits,
    /// Sign-ins waiting for their TOTP code, and the codes already used.
    pub pending: Pending,
    /// The session cookie's `Set-Cookie` lines.
    pub session_cookie: SessionCookie,
    /// The sign-in and pending sign-in cookies (see `auth::cookies`).
    pub prefix_cookies: PrefixCookies,
    /// One permit per client connection being served (`server.max_connections`).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// `None` without `upstream.url`: only sessiongate's own endpoints are served.
    pub upstream: Option<Upstream>,
    /// Whether the upstream accepts connections, for readyz; `None` without an upstream.
    pub upstream_probe: Option<UpstreamProbe>,
    pub routes: Routes,
    /// The serving certificate when the listener speaks HTTPS (reloaded on SIGHUP).
    pub certs: Option<Arc<CertStore>>,
    pub tls: Option<TlsAcceptor>,
    pub metrics: Arc<Metrics>,
    /// The pages people see, branded by `[login_page]`; a reload replaces them whole.
    pages: ArcSwap<Pages>,
    /// `[[providers]]` (a reload replaces them) and the sign-ins under way at them.
    pub providers: Providers,
    pub attempts: Attempts,
    /// Each local user's passkeys, and the passkey ceremonies under way.
    pub user_data: UserData,
    pub ceremonies: Attempts<Ceremony>,
    /// TOTP set-ups under way on account pages, and the key their secrets are sealed with.
    pub totp_setups: Attempts<TotpSetup>,
    pub sealer: Sealer,
    /// `auth.auto_redirect` (a reload changes it).
    auto_redirect: AtomicBool,
}

/// sessiongate's own endpoints, formatted once.
pub struct Routes {
    pub login: String,
    /// The second step of signing in, for users with TOTP.
    pub login_code: String,
    pub logout: String,
    pub healthz: String,
    pub readyz: String,
    /// The signed-in user's own sessions, and the form that ends one.
    pub sessions: String,
    pub sessions_end: String,
    /// `[login_page] logo`, served by sessiongate.
    pub logo: String,
    /// Forward-auth for nginx `auth_request`.
    pub auth_nginx: String,
    /// Forward-auth for Caddy `forward_auth` and Traefik ForwardAuth.
    pub auth_forward: String,
    /// Where each provider's endpoints are: `{oidc}/{id}/start` and `{oidc}/{id}/callback`.
    pub oidc: String,
    /// The passkey script, and signing in with a passkey: the challenge, then the answer.
    pub passkey_script: String,
    pub passkey_options: String,
    pub passkey_sign_in: String,
    /// A passkey as the second factor after the password: the challenge, then the answer.
    pub second_passkey_options: String,
    pub second_passkey: String,
    /// The signed-in user's account page, and its passkey forms.
    pub account: String,
    pub account_passkey_options: String,
    pub account_passkey_add: String,
    pub account_passkey_remove: String,
    /// The account page's TOTP forms: set up (then confirm with a code), remove.
    pub account_totp_start: String,
    pub account_totp_confirm: String,
    pub account_totp_remove: String,
    /// Body of the 401 answered to non-browser requests without a session.
    pub unauthorized_json: Bytes,
}

impl Routes {
    /// The endpoints under `prefix` (`auth.prefix`). `sessiongate healthcheck` asks for the
    /// same `healthz` path the handler serves.
    pub fn new(prefix: &str) -> Routes {
        Routes {
            login: format!("{prefix}/login"),
            login_code: format!("{prefix}/login/code"),
            logout: format!("{prefix}/logout"),
            healthz: format!("{prefix}/healthz"),
            readyz: format!("{prefix}/readyz"),
            sessions: format!("{prefix}/sessions"),
            sessions_end: format!("{prefix}/sessions/end"),
            logo: format!("{prefix}/logo"),
            auth_nginx: format!("{prefix}/auth/nginx"),
            auth_forward: format!("{prefix}/auth/forward"),
            oidc: format!("{prefix}/oidc"),
            passkey_script: format!("{prefix}/passkey.js"),
            passkey_options: format!("{prefix}/passkey/options"),
            passkey_sign_in: format!("{prefix}/passkey/sign-in"),
            second_passkey_options: format!("{prefix}/login/passkey/options"),
            second_passkey: format!("{prefix}/login/passkey"),
            account: format!("{prefix}/account"),
            account_passkey_options: format!("{prefix}/account/passkey/options"),
            account_passkey_add: format!("{prefix}/account/passkey/add"),
            account_passkey_remove: format!("{prefix}/account/passkey/remove"),
            account_totp_start: format!("{prefix}/account/totp/start"),
            account_totp_confirm: format!("{prefix}/account/totp/confirm"),
            account_totp_remove: format!("{prefix}/account/totp/remove"),
            unauthorized_json: Bytes::from(format!(
                "{{\"error\":\"login required\",\"login\":\"{prefix}/login\"}}\n"
            )),
        }
    }
}

impl Routes {
    /// What the gate needs to know of these endpoints (see [`Site`]).
    pub fn site(&self, config: &Config) -> Site {
        Site {
            prefix: config.auth.prefix.clone(),
            forward_auth: [self.auth_nginx.clone(), self.auth_forward.clone()],
            signed_in: vec![
                self.sessions.clone(),
                self.sessions_end.clone(),
                self.account.clone(),
                self.account_passkey_options.clone(),
                self.account_passkey_add.clone(),
                self.account_passkey_remove.clone(),
                self.account_totp_start.clone(),
                self.account_totp_confirm.clone(),
                self.account_totp_remove.clone(),
            ],
            websocket_origins: config.auth.websocket_origins.clone(),
            cookie_name: config.session.cookie_name.clone(),
        }
    }
}

/// What a reload did (see [`App::reload`]).
#[derive(Debug)]
pub struct Reloaded {
    pub users: usize,
    pub rules: usize,
    /// Sessions ended because their user was removed or changed password.
    pub ended_sessions: usize,
    /// Keys that changed in the file but only take effect on a restart.
    pub restart_only: Vec<String>,
}

/// Why the session store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    #[error(transparent)]
    Redis(#[from] LinkError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Why a reload was refused; the running policy stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("sessiongate was not started from a config file")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the config file: {0}")]
    Load(String),
}

/// The stores a process keeps its state in: sessions, failure counts and pending sign-ins,
/// all in memory or all in Redis.
struct Stores {
    sessions: Sessions,
    limiter: FailureLimits,
    pending: Pending,
    attempts: Attempts,
    user_data: UserData,
    ceremonies: Attempts<Ceremony>,
    totp_setups: Attempts<TotpSetup>,
}

impl Stores {
    fn memory(config: &Config, keys: SessionKeys, metrics: &Metrics) -> Stores {
        let s = &config.session;
        let store = Arc::new(
            MemoryStore::new(s.idle_timeout, s.absolute_timeout).counting_expiries(
                metrics.ended_counter(EndReason::Idle),
                metrics.ended_counter(EndReason::Absolute),
            ),
        );
        MemoryStore::spawn_sweeper(&store, s.sweep_interval);
        let limiter = Limiter::new(config.auth.max_failures, config.auth.failure_window);
        Stores {
            sessions: Sessions::Memory { store, keys },
            limiter: FailureLimits::Local(limiter),
            pending: Pending::memory(config.auth.pending_lifetime),
            attempts: Attempts::memory(ATTEMPT_LIFETIME),
            user_data: UserData::Unkept,
            ceremonies: Attempts::memory(CEREMONY_LIFETIME),
            totp_setups: Attempts::memory(TOTP_SETUP_LIFETIME),
        }
    }

    /// The memory store kept in `state_dir` (already opened and locked).
    fn durable(
        config: &Config,
        dir: StateDir,
        keys: SessionKeys,
        metrics: &Metrics,
        names: Arc<UserNames>,
    ) -> Result<Stores, StateError> {
        let mut stores = Stores::memory(config, keys.clone(), metrics);
        let Sessions::Memory { store: live, .. } = stores.sessions else {
            unreachable!("Stores::memory keeps sessions in memory")
        };
        let s = &config.session;
        let durable = DurableStore::open(
            dir,
            Opening {
                live,
                keys,
                names,
                idle: s.idle_timeout,
                absolute: s.absolute_timeout,
                touch_interval: s.touch_interval,
                sweep_interval: s.sweep_interval,
                write_errors: metrics.state_write_errors.clone(),
                degraded: metrics.state_degraded.clone(),
            },
        )?;
        stores.pending = Pending::durable(config.auth.pending_lifetime, durable.clone());
        stores.user_data = UserData::Durable(durable.clone());
        stores.sessions = Sessions::Durable(durable);
        Ok(stores)
    }

    /// `names` and `tunnels` are the gate's: the store reads names back with them and closes
    /// the tunnels of sessions ended on other replicas.
    fn redis(
        config: &Config,
        redis: &RedisConfig,
        keys: SessionKeys,
        metrics: &Metrics,
        names: Arc<UserNames>,
        tunnels: Arc<Tunnels>,
    ) -> Result<Stores, LinkError> {
        let s = &config.session;
        let link = Arc::new(RedisLink::start(redis, metrics)?);
        let store = RedisStore::new(
            link.clone(),
            keys.clone(),
            names,
            s.idle_timeout,
            s.absolute_timeout,
            s.touch_interval,
            tunnels,
        );
        let pending = Pending::redis(link.clone(), keys.clone(), config.auth.pending_lifetime);
        let attempts = Attempts::redis(link.clone(), "oidc", ATTEMPT_LIFETIME);
        let ceremonies = Attempts::redis(link.clone(), "passkey", CEREMONY_LIFETIME);
        let user_data = UserData::redis(link.clone());
        let totp_setups = Attempts::redis(link.clone(), "totp-setup", TOTP_SETUP_LIFETIME);
        let limiter = SharedLimiter::new(
            link,
            keys,
            config.auth.max_failures,
            config.auth.failure_window,
        );
        Ok(Stores {
            sessions: Sessions::Redis(store),
            limiter: FailureLimits::Shared(limiter),
            pending,
            attempts,
            user_data,
            ceremonies,
            totp_setups,
        })
    }
}

/// `session.state_dir`, checked and locked, and the session key: the configured one, else the
/// one kept in the state directory, else a random one for this process.
fn state_and_secret(config: &Config) -> Result<(Option<StateDir>, Vec<u8>), StateError> {
    let state_dir = match &config.session.state_dir {
        Some(path) => Some(StateDir::open(path)?),
        None => None,
    };
    let secret = match (&state_dir, &config.session.secret) {
        (Some(dir), None) => dir.secret()?,
        _ => secret_of(config),
    };
    Ok((state_dir, secret))
}

/// `session.secret`, or a random key for this process when none is configured.
fn secret_of(config: &Config) -> Vec<u8> {
    match &config.session.secret {
        Some(s) => s.expose_secret().to_vec(),
        None => {
            tracing::warn!("{NO_SECRET}");
            let mut key = vec![0u8; 64];
            rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut key)
                .expect("the OS random number generator failed");
            key
        }
    }
}

/// What every cookie of ours is set with (`session.secure`, `session.same_site`).
fn cookie_attrs(config: &Config) -> CookieAttrs {
    CookieAttrs {
        secure: config.session.secure,
        same_site: match config.session.same_site {
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::Strict => cookie::SameSite::Strict,
        },
    }
}

/// The serving certificate and its acceptor, when the listener speaks HTTPS.
fn tls_of(config: &Config) -> (Option<Arc<CertStore>>, Option<TlsAcceptor>) {
    let certs = config
        .server
        .tls
        .as_ref()
        .map(|t| Arc::new(CertStore::new(t.files(), t.loaded.clone())));
    let tls = certs
        .as_ref()
        .map(|c| TlsAcceptor::from(crate::http::tls::server_config(c.clone())));
    (certs, tls)
}

impl App {
    /// Everything built from `config`. Fails only if the Redis client cannot be set up (a
    /// CA it cannot use, no thread); Redis being down is not an error, it is connected to
    /// when it answers. The passkeys of users the config no longer names are deleted.
    pub fn new(config: Config) -> Result<Arc<App>, StoreSetupError> {
        let (state_dir, secret) = state_and_secret(&config)?;
        let metrics = Arc::new(Metrics::new(matches!(
            config.session.store,
            StoreConfig::Memory
        )));
        let names = Arc::new(UserNames::default());
        let tunnels = Arc::new(Tunnels::default());
        let keys = SessionKeys::new(&secret);
        let stores = match (&config.session.store, state_dir) {
            (StoreConfig::Memory, Some(dir)) => {
                Stores::durable(&config, dir, keys, &metrics, names.clone())?
            }
            (StoreConfig::Memory, None) => Stores::memory(&config, keys, &metrics),
            (StoreConfig::Redis(redis), _) => Stores::redis(
                &config,
                redis,
                keys,
                &metrics,
                names.clone(),
                tunnels.clone(),
            )?,
        };
        let s = &config.session;
        let signer = CookieSigner::new(&secret, &s.cookie_name);
        let attrs = cookie_attrs(&config);
        let session_cookie = SessionCookie::new(
            &s.cookie_name,
            signer.clone(),
            attrs,
            s.cookie_domain.clone(),
            s.cookie_max_age,
        );
        let prefix_cookies = PrefixCookies::new(
            &secret,
            &s.cookie_name,
            &config.auth.prefix,
            attrs,
            config.auth.pending_lifetime,
        );
        let (certs, tls) = tls_of(&config);
        let routes = Routes::new(&config.auth.prefix);
        let gate = Gate::new(
            config.policy(),
            names,
            stores.sessions,
            tunnels,
            signer.clone(),
            metrics.clone(),
            routes.site(&config),
        );
        let app = Arc::new(App {
            certs,
            tls,
            tokens: FormTokens::new(&secret),
            limiter: stores.limiter,
            pending: stores.pending,
            session_cookie,
            prefix_cookies,
            connections: Arc::new(tokio::sync::Semaphore::new(config.server.max_connections)),
            gate: Arc::new(gate),
            metrics,
            signer,
            verifier: Verifier::new(config.auth.login_workers, config.auth.login_queue),
            upstream: config.upstream.target.as_ref().map(Upstream::new),
            upstream_probe: config
                .upstream
                .target
                .as_ref()
                .map(|t| UpstreamProbe::new(t.authority.clone(), t.timeout)),
            routes,
            pages: ArcSwap::new(config.pages.clone()),
            providers: Providers::new(&config.providers)
                .expect("the config checked every provider's CA file"),
            attempts: stores.attempts,
            user_data: stores.user_data,
            ceremonies: stores.ceremonies,
            totp_setups: stores.totp_setups,
            sealer: Sealer::new(&secret, "totp"),
            auto_redirect: AtomicBool::new(config.auto_redirect),
            config,
        });
        app.user_data
            .forget_removed_at_start(app.configured_users());
        Ok(app)
    }

    /// The `[[users]]` names of the policy in force: only they keep their own data.
    fn configured_users(&self) -> HashSet<String> {
        let policy = self.gate.policy();
        policy.users().map(|u| u.name.clone()).collect()
    }

    /// What the sign-in endpoints work with, lent for one request.
    pub fn sign_in(&self) -> SignIn<'_> {
        SignIn {
            gate: &self.gate,
            limiter: &self.limiter,
            verifier: &self.verifier,
            tokens: &self.tokens,
            pending: &self.pending,
            session_cookie: &self.session_cookie,
            cookies: &self.prefix_cookies,
            pages: self.pages.load_full(),
            login: &self.routes.login,
            login_code: &self.routes.login_code,
            metrics: &self.metrics,
            providers: &self.providers,
            attempts: &self.attempts,
            oidc: &self.routes.oidc,
            public_url: self.config.public_url.as_deref(),
            auto_redirect: self.auto_redirect.load(Ordering::Relaxed),
            passkeys: self.config.auth.passkeys,
            passkey_rp_id: self.config.auth.passkey_rp_id.as_deref(),
            user_data: &self.user_data,
            ceremonies: &self.ceremonies,
            sealer: &self.sealer,
            passkey_script: &self.routes.passkey_script,
            passkey_options: &self.routes.passkey_options,
            passkey_sign_in: &self.routes.passkey_sign_in,
            second_passkey_options: &self.routes.second_passkey_options,
            second_passkey: &self.routes.second_passkey,
        }
    }

    /// Reads the config file again and puts its users, groups, rules, public paths and
    /// `[login_page]` in force; sessions of users it removes or whose password it changes end,
    /// and the passkeys of users it removes are deleted. The new file is validated whole
    /// first: a broken one is refused and the running policy stays. Keys that need a restart
    /// are left as they were and named in the result.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let source = self.config.source.as_ref().ok_or(ReloadError::NoFile)?;
        let path = source.path.clone();
        // Reading the file and parsing every password hash is blocking work.
        let newer = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| ReloadError::Load(e.to_string()))??;
        self.pages.store(newer.pages.clone());
        if let Err(e) = self.providers.replace(&newer.providers) {
            tracing::warn!("SIGHUP: providers: {e}; the providers in force stay");
        }
        self.auto_redirect
            .store(newer.auto_redirect, Ordering::Relaxed);
        let ended_sessions = match self.gate.replace_policy(newer.policy()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(
                    "SIGHUP: the new policy is in force, but sessions of removed users or changed passwords could not be ended now ({e}); they are refused on every request"
                );
                0
            }
        };
        self.user_data
            .forget_removed(&self.configured_users(), "SIGHUP")
            .await;
        Ok(Reloaded {
            users: newer.users.len(),
            rules: newer.rules.rules.len(),
            ended_sessions,
            restart_only: self.config.restart_only_changes(&newer),
        })
    }

    /// The pages in force (the `[login_page]` of the last config loaded).
    pub fn pages(&self) -> arc_swap::Guard<Arc<Pages>> {
        self.pages.load()
    }

    /// Re-reads the TLS certificate, key and OCSP response (SIGHUP). A bad new set is refused,
    /// logged, and the certificate (and response) in use stays.
    pub fn reload_tls(&self) -> Result<(), String> {
        match &self.certs {
            None => Ok(()),
            Some(certs) => certs.reload(),
        }
    }

    /// `Set-Cookie` that makes the browser forget the session cookie.
    pub fn clearing_cookie(&self) -> HeaderValue {
        self.session_cookie.clear()
    }
}
