//! Sign-in ceremonies under way, each filed under a one-way hash of the secret that names it
//! until its last step takes it, once: a provider sign-in's [`Attempt`] (the PKCE verifier,
//! the nonce, where to go afterwards, which browser started it) under its `state`, and a
//! passkey ceremony's state under its own random name. In memory, or in Redis with the Redis
//! store (the last step may reach another replica).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::oidc::provider::AttemptSecrets;
use crate::session::StoreError;
use crate::session::redis_link::RedisLink;

/// How long a sign-in at a provider may take (typing a password and a code there included).
pub const ATTEMPT_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Attempts kept in memory at most: anyone may start one, so their number is bounded; past it,
/// new ones are refused (503) until old ones run out.
const MAX_ATTEMPTS: usize = 100_000;

/// One attempt, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub provider: String,
    pub secrets: AttemptSecrets,
    /// Where to go once signed in (already checked against the redirect rules).
    pub rd: String,
    /// SHA-256 of the sign-in cookie of the browser that started it, hex.
    pub browser: String,
}

/// How long a passkey challenge may be answered.
pub const CEREMONY_LIFETIME: Duration = Duration::from_secs(120);

/// One passkey ceremony under way, as filed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ceremony {
    /// The crate's state: the challenge.
    pub state: String,
    /// SHA-256 of what it is bound to (the sign-in cookie, or the session for the account
    /// page), hex.
    pub bound: String,
    /// The passkey domain and the origin it was started for.
    pub rp_id: String,
    pub origin: String,
    /// Whose passkey it checks (a second factor) or will be (a registration).
    pub user: Option<String>,
    /// Registration: the new passkey's name and the user's handle.
    pub name: Option<String>,
    pub handle: Option<[u8; 16]>,
}

/// How long a TOTP set-up on the account page waits for its first code.
pub const TOTP_SETUP_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// A TOTP set-up under way on the account page: the new secret, sealed for its user, and the
/// session it is bound to (SHA-256, hex).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TotpSetup {
    pub sealed: String,
    pub bound: String,
}

/// Ceremonies of one kind (`T`), each lasting the same time.
pub enum Attempts<T = Attempt> {
    /// The attempts, and how long each lasts.
    Memory(Mutex<HashMap<[u8; 32], (T, Instant)>>, Duration),
    Redis {
        link: Arc<RedisLink>,
        prefix: String,
        lifetime: Duration,
    },
}

/// The key an attempt is filed under: a hash of its `state`, so a store dump holds no state
/// that would complete someone's sign-in.
fn key_of(state: &str) -> [u8; 32] {
    sha2::Sha256::digest(state.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an attempt records of the browser: SHA-256 of its sign-in cookie, hex.
pub fn browser_tag(cookie: &str) -> String {
    tag_of(cookie.as_bytes())
}

/// SHA-256 of `secret`, hex: what a ceremony records of what it is bound to.
pub fn tag_of(secret: &[u8]) -> String {
    hex(&sha2::Sha256::digest(secret))
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Attempts<T> {
    /// In memory, each lasting `lifetime`.
    pub fn memory(lifetime: Duration) -> Attempts<T> {
        Attempts::Memory(Mutex::default(), lifetime)
    }

    /// In Redis under `{redis prefix}{kind}:`, each lasting `lifetime`.
    pub fn redis(link: Arc<RedisLink>, kind: &str, lifetime: Duration) -> Attempts<T> {
        Attempts::Redis {
            prefix: format!("{}{kind}:", link.prefix),
            link,
            lifetime,
        }
    }

    /// Files `attempt` under `state`; false when too many are under way (memory only).
    pub async fn put(&self, state: &str, attempt: T) -> Result<bool, StoreError> {
        match self {
            Attempts::Memory(map, lifetime) => {
                let now = Instant::now();
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                if map.len() >= MAX_ATTEMPTS {
                    map.retain(|_, (_, until)| *until > now);
                    if map.len() >= MAX_ATTEMPTS {
                        return Ok(false);
                    }
                }
                map.insert(key_of(state), (attempt, now + *lifetime));
                Ok(true)
            }
            Attempts::Redis {
                link,
                prefix,
                lifetime,
            } => {
                let key = format!("{prefix}{}", hex(&key_of(state)));
                let value = serde_json::to_string(&attempt).expect("an attempt is plain data");
                let ms = lifetime.as_millis() as u64;
                link.run("starting a sign-in ceremony", move |mut conn| async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .arg("PX")
                        .arg(ms)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await?;
                Ok(true)
            }
        }
    }

    /// Takes the attempt filed under `state`, if it is still on: exactly one caller gets it.
    pub async fn take(&self, state: &str) -> Result<Option<T>, StoreError> {
        match self {
            Attempts::Memory(map, _) => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                Ok(map
                    .remove(&key_of(state))
                    .filter(|(_, until)| *until > Instant::now())
                    .map(|(a, _)| a))
            }
            Attempts::Redis { link, prefix, .. } => {
                let key = format!("{prefix}{}", hex(&key_of(state)));
                let value: Option<String> = link
                    .run("finishing a sign-in ceremony", move |mut conn| async move {
                        redis::cmd("GETDEL").arg(&key).query_async(&mut conn).await
                    })
                    .await?;
                Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(provider: &str) -> Attempt {
        Attempt {
            provider: provider.into(),
            secrets: AttemptSecrets {
                nonce: "n".into(),
                pkce_verifier: "v".into(),
                redirect_uri: "http://x/cb".into(),
            },
            rd: "/".into(),
            browser: browser_tag("cookie"),
        }
    }

    #[tokio::test]
    async fn an_attempt_is_taken_once() {
        let attempts = Attempts::memory(ATTEMPT_LIFETIME);
        assert!(attempts.put("state-1", attempt("a")).await.unwrap());
        assert!(attempts.put("state-2", attempt("b")).await.unwrap());
        assert_eq!(attempts.take("state-1").await.unwrap(), Some(attempt("a")));
        assert_eq!(attempts.take("state-1").await.unwrap(), None);
        assert_eq!(attempts.take("state-3").await.unwrap(), None);
        assert_eq!(attempts.take("state-2").await.unwrap(), Some(attempt("b")));
    }

    #[tokio::test]
    async fn an_expired_attempt_is_gone() {
        let attempts = Attempts::Memory(Mutex::default(), Duration::ZERO);
        assert!(attempts.put("state", attempt("a")).await.unwrap());
        assert_eq!(attempts.take("state").await.unwrap(), None);
    }
}
