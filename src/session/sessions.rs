//! The session store the gate uses, in memory or in Redis, behind one set of async calls: the
//! request path never knows which it has.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::identity::{Account, Owner};
use super::keys::{SessionKey, SessionKeys};
use super::memory::{MemoryStore, SessionId, SessionMeta, StoreError, StoredTimes};
use super::redis::RedisStore;
use super::state::DurableStore;

/// Sessions the sessions page lists at most: the newest. A user with thousands of sessions
/// (a script logging in on every run) must not make one page view a long walk for the store.
pub const MAX_LISTED: usize = 100;

pub enum Sessions {
    Memory {
        store: Arc<MemoryStore>,
        /// For the sessions page's handles (the memory store keeps ids only).
        keys: SessionKeys,
    },
    Redis(RedisStore),
    /// In memory, and kept in `session.state_dir` across restarts.
    Durable(DurableStore),
}

/// The newest (at most [`MAX_LISTED`]) of `user`'s sessions in `all` (keyed by `K`, oldest
/// first) made with their current credentials, as the sessions page lists them under their
/// outside names (`name`, asked only of those listed); `here` is the one asking.
fn listed<K: PartialEq>(
    all: Vec<(K, Owner, StoredTimes)>,
    user: &impl Account,
    here: &K,
    name: impl Fn(&K) -> SessionKey,
) -> Vec<SessionInfo> {
    let mine: Vec<_> = all
        .into_iter()
        .filter(|(_, owner, _)| owner.credentials == user.credentials())
        .collect();
    let skip = mine.len().saturating_sub(MAX_LISTED);
    mine.into_iter()
        .skip(skip)
        .map(|(key, _, t)| SessionInfo {
            handle: name(&key),
            started: t.started,
            last_seen: t.last_seen,
            client: Some(t.client),
            browser: t.browser.to_string(),
            current: key == *here,
        })
        .collect()
}

/// A user whose sessions a reload ends: removed from the config (`keep: None`), or given new
/// credentials (`keep: Some(new)`: only sessions made with those live on).
pub struct Revoked<'a> {
    pub name: &'a str,
    pub keep: Option<u32>,
}

/// One session as its user's sessions page lists it.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// Names the session on the page and in the form that ends it: one-way from the id (see
    /// `keys`), not a credential.
    pub handle: SessionKey,
    pub started: SystemTime,
    pub last_seen: SystemTime,
    pub client: Option<IpAddr>,
    /// As the page prints it ("Firefox on Linux").
    pub browser: String,
    /// The session of the request that asked.
    pub current: bool,
}

impl Sessions {
    /// "memory" or "redis", for logs and readiness answers.
    pub fn kind(&self) -> &'static str {
        match self {
            Sessions::Memory { .. } => "memory",
            Sessions::Redis(_) => "redis",
            Sessions::Durable(_) => "memory with state_dir",
        }
    }

    pub async fn create(
        &self,
        user: &impl Account,
        meta: &SessionMeta,
    ) -> Result<SessionId, StoreError> {
        match self {
            Sessions::Memory { store, .. } => store.create(user.owner(), meta),
            Sessions::Durable(d) => d.create(user.owner(), user.name(), user.profile(), meta),
            Sessions::Redis(redis) => {
                redis
                    .create(user.name(), user.credentials(), user.profile(), meta)
                    .await
            }
        }
    }

    /// The owner of a live session, counting this as use.
    pub async fn touch(&self, id: &SessionId) -> Result<Option<Owner>, StoreError> {
        match self {
            Sessions::Memory { store, .. } => store.touch(id),
            Sessions::Durable(d) => d.touch(id),
            Sessions::Redis(redis) => redis.touch(id).await,
        }
    }

    /// The owner of a live session and when it started, not counted as use.
    pub async fn peek(&self, id: &SessionId) -> Result<Option<(Owner, SystemTime)>, StoreError> {
        match self {
            Sessions::Memory { store, .. } => Ok(store.peek(id)),
            Sessions::Durable(d) => Ok(d.peek(id)),
            Sessions::Redis(redis) => redis.peek(id).await,
        }
    }

    /// A session's outside name (see `keys`).
    pub fn key_of(&self, id: &SessionId) -> SessionKey {
        match self {
            Sessions::Memory { keys, .. } => keys.of(id),
            Sessions::Durable(d) => d.key_of(id),
            Sessions::Redis(redis) => redis.key_of(id),
        }
    }

    /// Ends a session; true if it existed.
    pub async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        match self {
            Sessions::Memory { store, .. } => store.remove(id),
            Sessions::Redis(redis) => redis.remove(id).await,
            Sessions::Durable(d) => d.remove(id).await,
        }
    }

    /// A session whose user the policy no longer accepts was found on a request. The memory
    /// store ends it; a shared store keeps it, since another replica's config may be newer
    /// (a reload on every replica ends those sessions, see [`end_stale`](Self::end_stale)).
    pub async fn stale(&self, id: &SessionId) -> Result<(), StoreError> {
        match self {
            Sessions::Memory { store, .. } => store.remove(id).map(|_| ()),
            Sessions::Redis(_) => Ok(()),
            Sessions::Durable(d) => d.remove(id).await.map(|_| ()),
        }
    }

    /// Ends every session of `user` (sign out everywhere); how many.
    pub async fn end_user(&self, user: &impl Account) -> Result<usize, StoreError> {
        match self {
            Sessions::Memory { store, .. } => Ok(store.end_where(|o| o.user == user.id())),
            Sessions::Durable(d) => Ok(d.end_where(|o| o.user == user.id()).await),
            Sessions::Redis(redis) => redis.end_user(user.name(), None).await,
        }
    }

    /// After a reload: ends the sessions the new policy no longer accepts (their user was
    /// removed or changed password); how many. The memory store asks `accepts` of every
    /// session; a shared store, which cannot walk every session, ends those of the users
    /// `revoked` names.
    pub async fn end_stale(
        &self,
        accepts: impl Fn(Owner) -> bool,
        revoked: &[Revoked<'_>],
    ) -> Result<usize, StoreError> {
        match self {
            Sessions::Memory { store, .. } => Ok(store.end_where(|owner| !accepts(owner))),
            Sessions::Durable(d) => Ok(d.end_where(|owner| !accepts(owner)).await),
            Sessions::Redis(redis) => {
                let mut ended = 0;
                for user in revoked {
                    ended += redis.end_user(user.name, user.keep).await?;
                }
                Ok(ended)
            }
        }
    }

    /// `user`'s newest live sessions (at most [`MAX_LISTED`]) made with their current
    /// password, oldest first; `current` is the session asking.
    pub async fn list(
        &self,
        user: &impl Account,
        current: &SessionId,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        match self {
            Sessions::Memory { store, keys } => {
                Ok(listed(store.of_user(user.id()), user, current, |id| {
                    keys.of(id)
                }))
            }
            Sessions::Durable(d) => Ok(listed(
                d.of_user(user.id()),
                user,
                &d.key_of(current),
                |key| *key,
            )),
            Sessions::Redis(redis) => {
                let here = redis.key_of(current);
                Ok(redis
                    .of_user(user.name(), MAX_LISTED)
                    .await?
                    .into_iter()
                    .filter(|l| l.credentials == user.credentials())
                    .map(|l| SessionInfo {
                        current: l.key == here,
                        handle: l.key,
                        started: l.started,
                        last_seen: l.last_seen,
                        client: l.client,
                        browser: l.browser,
                    })
                    .collect())
            }
        }
    }

    /// Ends the session of `user` that `handle` names (from their sessions page); false if
    /// no session of theirs has that handle.
    pub async fn end_listed(
        &self,
        user: &impl Account,
        handle: &SessionKey,
    ) -> Result<bool, StoreError> {
        match self {
            Sessions::Memory { store, keys } => {
                let found = store
                    .of_user(user.id())
                    .into_iter()
                    .find(|(id, _, _)| keys.of(id) == *handle);
                match found {
                    Some((id, _, _)) => store.remove(&id),
                    None => Ok(false),
                }
            }
            Sessions::Redis(redis) => redis.end_listed(user.name(), handle).await,
            Sessions::Durable(d) => d.end_listed(user.id(), handle).await,
        }
    }

    /// Why sessions are not being kept on disk (`session.state_dir` cannot be written), if
    /// they are not: readyz says so, and the metrics.
    pub fn degraded(&self) -> Option<String> {
        match self {
            Sessions::Durable(d) => d.degraded(),
            _ => None,
        }
    }

    /// Syncs what a durable store has not yet written (a clean shutdown).
    pub fn close(&self) {
        if let Sessions::Durable(d) = self {
            d.close();
        }
    }

    /// Whether the store answers (readiness).
    pub async fn ready(&self) -> Result<(), StoreError> {
        match self {
            Sessions::Memory { .. } | Sessions::Durable(_) => Ok(()),
            Sessions::Redis(redis) => redis.ready().await,
        }
    }

    /// The in-memory store, when that is the store (benchmarks fill it directly).
    pub fn memory(&self) -> Option<&MemoryStore> {
        match self {
            Sessions::Memory { store, .. } => Some(store),
            Sessions::Durable(d) => Some(d.live()),
            Sessions::Redis(_) => None,
        }
    }

    /// Sessions held in this process: all of them in memory, the replica cache with Redis.
    pub fn len(&self) -> usize {
        match self {
            Sessions::Memory { store, .. } => store.len(),
            Sessions::Redis(redis) => redis.cached(),
            Sessions::Durable(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
