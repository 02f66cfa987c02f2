//! Failed-login limits kept in Redis, so that every replica counts the same failures: an
//! attacker gains nothing by spreading guesses over replicas. Same rules as the local
//! `Limiter`: a fixed window per canonical username and per client address, starting at the
//! first failure. Usernames and addresses are stored as one-way names (an unknown "username"
//! is sometimes a password typed into the wrong field).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use super::limiter::{Verdict, canonical};
use crate::session::redis_link::RedisLink;
use crate::session::{SessionKeys, StoreError};

/// The longest wait among the keys at or over the limit, in ms; 0 when allowed.
/// KEYS: user, address. ARGV: max failures.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local wait = 0
for _, k in ipairs(KEYS) do
  if tonumber(redis.call('GET', k) or '0') >= tonumber(ARGV[1]) then
    local t = redis.call('PTTL', k)
    if t > wait then wait = t end
  end
end
return wait
",
    )
});

/// Counts a failure on each key; the first failure starts the window.
/// KEYS: user, address. ARGV: window in ms.
static FAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for _, k in ipairs(KEYS) do
  if redis.call('INCR', k) == 1 then redis.call('PEXPIRE', k, ARGV[1]) end
end
return 1
",
    )
});

pub struct SharedLimiter {
    link: Arc<RedisLink>,
    keys: SessionKeys,
    max_failures: u32,
    window: Duration,
}

impl SharedLimiter {
    pub fn new(
        link: Arc<RedisLink>,
        keys: SessionKeys,
        max_failures: u32,
        window: Duration,
    ) -> SharedLimiter {
        SharedLimiter {
            link,
            keys,
            max_failures,
            window,
        }
    }

    fn user_key(&self, user: &str) -> String {
        let name = self.keys.name(b'u', canonical(user).as_bytes());
        format!("{}fail:user:{}", self.link.prefix, name.to_hex())
    }

    fn addr_key(&self, client: &str) -> String {
        let name = self.keys.name(b'a', client.as_bytes());
        format!("{}fail:addr:{}", self.link.prefix, name.to_hex())
    }

    pub async fn check(&self, user: &str, client: &str) -> Result<Verdict, StoreError> {
        let mut call = CHECK.prepare_invoke();
        call.key(self.user_key(user))
            .key(self.addr_key(client))
            .arg(self.max_failures);
        let wait: i64 = self
            .link
            .run("checking failed logins", move |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(match u64::try_from(wait) {
            Ok(ms) if ms > 0 => Verdict::Limited(Duration::from_millis(ms)),
            _ => Verdict::Allowed,
        })
    }

    pub async fn record_failure(&self, user: &str, client: &str) -> Result<(), StoreError> {
        let mut call = FAIL.prepare_invoke();
        call.key(self.user_key(user))
            .key(self.addr_key(client))
            .arg(u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX));
        self.link
            .run("counting a failed login", move |mut conn| async move {
                call.invoke_async::<i64>(&mut conn).await
            })
            .await
            .map(|_| ())
    }

    pub async fn record_success(&self, user: &str) -> Result<(), StoreError> {
        let key = self.user_key(user);
        self.link
            .run("clearing failed logins", move |mut conn| async move {
                redis::cmd("DEL")
                    .arg(&key)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await
            .map(|_| ())
    }
}

/// The failed-login limits in force: this process's own, or shared through Redis.
pub enum FailureLimits {
    Local(super::limiter::Limiter),
    Shared(SharedLimiter),
}

impl FailureLimits {
    /// Whether a login for `user` from `client` may be checked at all. A shared store that
    /// cannot answer is an error: the login is refused, never let through unlimited.
    pub async fn check(&self, user: &str, client: &str) -> Result<Verdict, StoreError> {
        match self {
            FailureLimits::Local(l) => Ok(l.check(user, client)),
            FailureLimits::Shared(s) => s.check(user, client).await,
        }
    }

    pub async fn record_failure(&self, user: &str, client: &str) -> Result<(), StoreError> {
        match self {
            FailureLimits::Local(l) => {
                l.record_failure(user, client);
                Ok(())
            }
            FailureLimits::Shared(s) => s.record_failure(user, client).await,
        }
    }

    pub async fn record_success(&self, user: &str) -> Result<(), StoreError> {
        match self {
            FailureLimits::Local(l) => {
                l.record_success(user);
                Ok(())
            }
            FailureLimits::Shared(s) => s.record_success(user).await,
        }
    }
}
