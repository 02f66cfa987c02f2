//! Signing in with OpenID Connect providers: their configs, their discovery and keys, the
//! authorization request and the checks of what comes back (`provider`), and who a checked
//! ID token names (`claims`). The sign-in endpoints that drive a browser through it are in
//! `auth::provider`; a provider's users become sessions like any other (see `gate`).

pub mod claims;
pub mod config;
pub mod http;
pub mod provider;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

pub use config::ProviderConfig;
pub use provider::Provider;

use self::http::ProviderHttp;
use crate::http::tls::client_config;

/// How long one call to a provider may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The configured providers, in the config's order (the buttons' order); a reload replaces
/// the list.
#[derive(Default)]
pub struct Providers {
    list: ArcSwap<Vec<Arc<Provider>>>,
    /// Whether discovery was started (the first listener starts it; a reload after that).
    started: std::sync::atomic::AtomicBool,
}

impl Providers {
    /// The providers `configs` describe, undiscovered; [`start`](Self::start) discovers them.
    /// A provider's `ca` file is read here (the config checked it exists).
    pub fn new(configs: &[ProviderConfig]) -> Result<Providers, String> {
        let list = configs
            .iter()
            .map(|c| build(c, None))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Providers {
            list: ArcSwap::from_pointee(list),
            started: Default::default(),
        })
    }

    /// Starts discovering every provider, in the background, the first time it is called.
    /// Needs a tokio runtime.
    pub fn start(&self) {
        if !self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.discover_new();
        }
    }

    fn discover_new(&self) {
        for p in self.list.load().iter().filter(|p| !p.ready()) {
            tokio::spawn(Provider::keep_discovering(Arc::downgrade(p)));
        }
    }

    /// Every provider, in order.
    pub fn all(&self) -> Arc<Vec<Arc<Provider>>> {
        self.list.load_full()
    }

    pub fn is_empty(&self) -> bool {
        self.list.load().is_empty()
    }

    /// The provider called `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Provider>> {
        self.list.load().iter().find(|p| p.id() == id).cloned()
    }

    /// Puts `configs` in force (a reload): a provider configured as before keeps what it
    /// discovered; new and changed ones are discovered afresh; removed ones are dropped (their
    /// discovery tasks end). Their sessions are the gate's business.
    pub fn replace(&self, configs: &[ProviderConfig]) -> Result<(), String> {
        let old = self.list.load_full();
        let list = configs
            .iter()
            .map(|c| {
                let same = old
                    .iter()
                    .find(|p| p.id() == c.id && unchanged(&p.config, c));
                build(c, same)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fresh: Vec<Arc<Provider>> = list
            .iter()
            .filter(|p| !old.iter().any(|o| Arc::ptr_eq(o, p)))
            .cloned()
            .collect();
        self.list.store(Arc::new(list));
        if self.started.load(std::sync::atomic::Ordering::SeqCst) {
            for p in &fresh {
                tokio::spawn(Provider::keep_discovering(Arc::downgrade(p)));
            }
        }
        Ok(())
    }
}

/// `config`'s provider: `same` when one is configured exactly so already.
fn build(config: &ProviderConfig, same: Option<&Arc<Provider>>) -> Result<Arc<Provider>, String> {
    if let Some(p) = same {
        return Ok(p.clone());
    }
    let tls = client_config(config.ca.as_deref())
        .map_err(|e| format!("providers: {:?}: {e}", config.id))?;
    Ok(Provider::new(
        config.clone(),
        ProviderHttp::new(Arc::new(tls), CALL_TIMEOUT),
    ))
}

/// Whether two configs of one provider would behave the same.
fn unchanged(a: &ProviderConfig, b: &ProviderConfig) -> bool {
    a.fingerprint() == b.fingerprint()
        && a.name == b.name
        && a.scopes == b.scopes
        && a.logout_at_provider == b.logout_at_provider
        && a.ca == b.ca
}
