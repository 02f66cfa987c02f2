//! `App`: everything a request needs, built once from the config and shared through `Arc`.

use std::sync::Arc;

use bytes::Bytes;
use cookie::Cookie;
use http::{HeaderMap, HeaderValue, header};

use crate::auth::csrf::FormTokens;
use crate::auth::limiter::Limiter;
use crate::auth::password::Users;
use crate::config::{Config, SameSite};
use crate::headers::cookie_pairs;
use crate::proxy::Upstream;
use crate::session::{CookieSigner, SessionId, SessionStore, StoreError};
use crate::tls::CertStore;
use tokio_rustls::TlsAcceptor;

pub struct App {
    pub config: Config,
    pub sessions: Arc<SessionStore>,
    pub signer: CookieSigner,
    pub users: Users,
    pub tokens: FormTokens,
    pub limiter: Limiter,
    /// One permit per client connection being served (`server.max_connections`).
    pub connections: Arc<tokio::sync::Semaphore>,
    pub upstream: Upstream,
    pub routes: Routes,
    /// The serving certificate when the listener speaks HTTPS (reloaded on SIGHUP).
    pub certs: Option<Arc<CertStore>>,
    pub tls: Option<TlsAcceptor>,
}

/// sessiongate's own endpoints, formatted once.
pub struct Routes {
    pub login: String,
    pub logout: String,
    pub healthz: String,
    /// Body of the 401 answered to non-browser requests without a session.
    pub unauthorized_json: Bytes,
}

/// A live session found on a request.
pub struct Authenticated {
    pub id: SessionId,
    pub user: HeaderValue,
}

impl App {
    pub fn new(config: Config) -> Arc<App> {
        let secret = match &config.session.secret {
            Some(s) => s.clone(),
            None => {
                tracing::warn!(
                    "no session.secret or session.secret_file configured: using a random key for this process, so login pages opened before a restart must be reloaded after it"
                );
                let mut key = vec![0u8; 64];
                rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut key)
                    .expect("the OS random number generator failed");
                key
            }
        };
        let sessions = Arc::new(SessionStore::new(
            config.session.idle_timeout,
            config.session.absolute_timeout,
            config.users.iter().map(|u| {
                HeaderValue::from_str(&u.name).expect("validated user names are header-safe")
            }),
        ));
        SessionStore::spawn_sweeper(&sessions, config.session.sweep_interval);
        let prefix = &config.auth.prefix;
        let routes = Routes {
            login: format!("{prefix}/login"),
            logout: format!("{prefix}/logout"),
            healthz: format!("{prefix}/healthz"),
            unauthorized_json: Bytes::from(format!(
                "{{\"error\":\"login required\",\"login\":\"{prefix}/login\"}}\n"
            )),
        };
        let certs = config.server.tls.as_ref().map(|t| {
            Arc::new(CertStore::new(
                t.cert.clone(),
                t.key.clone(),
                t.loaded.clone(),
            ))
        });
        let tls = certs
            .as_ref()
            .map(|c| TlsAcceptor::from(crate::tls::server_config(c.clone())));
        Arc::new(App {
            certs,
            tls,
            tokens: FormTokens::new(&secret),
            limiter: Limiter::new(config.auth.max_failures, config.auth.failure_window),
            connections: Arc::new(tokio::sync::Semaphore::new(config.server.max_connections)),
            signer: CookieSigner::new(&secret, &config.session.cookie_name),
            users: Users::new(
                &config.users,
                config.auth.login_workers,
                config.auth.login_queue,
            ),
            upstream: Upstream::new(&config.upstream),
            sessions,
            routes,
            config,
        })
    }

    /// The live session named by the request's cookie, if any. A missing, malformed, forged,
    /// duplicated or expired cookie all mean "no session"; a store that cannot answer is an
    /// error, which callers turn into a refusal, never into "anonymous".
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Authenticated>, StoreError> {
        let name = self.config.session.cookie_name.as_str();
        let mut found = None;
        for value in headers.get_all(header::COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            for (n, v, _) in cookie_pairs(text) {
                if n == name {
                    if found.is_some() {
                        // Two session cookies: we never set that, so trust neither.
                        return Ok(None);
                    }
                    found = Some(v);
                }
            }
        }
        let Some(id) = found.and_then(|v| self.signer.verify(v)) else {
            return Ok(None);
        };
        Ok(self
            .sessions
            .touch(&id)?
            .map(|user| Authenticated { id, user }))
    }

    fn base_cookie(&self, value: String) -> Cookie<'static> {
        let s = &self.config.session;
        Cookie::build((s.cookie_name.clone(), value))
            .path("/")
            .http_only(true)
            .secure(s.secure)
            .same_site(match s.same_site {
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::Strict => cookie::SameSite::Strict,
            })
            .build()
    }

    /// `Set-Cookie` for a new session. No Domain: the cookie stays on this exact host.
    pub fn session_cookie(&self, id: &SessionId) -> HeaderValue {
        let mut c = self.base_cookie(self.signer.sign(id));
        if let Some(max_age) = self.config.session.cookie_max_age {
            c.set_max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64));
        }
        HeaderValue::try_from(c.to_string()).expect("cookie names and values are header-safe")
    }

    /// Re-reads the TLS certificate and key (SIGHUP). A bad new pair is refused, logged, and
    /// the certificate in use stays.
    pub fn reload_tls(&self) -> Result<(), String> {
        match &self.certs {
            None => Ok(()),
            Some(certs) => certs.reload(),
        }
    }

    /// `Set-Cookie` that makes the browser forget the session cookie.
    pub fn clearing_cookie(&self) -> HeaderValue {
        let mut c = self.base_cookie(String::new());
        c.make_removal();
        HeaderValue::try_from(c.to_string()).expect("cookie names are header-safe")
    }
}
