//! The in-memory session store: a sharded map (dashmap) from session id to session, with an
//! idle timeout that slides with use and an absolute timeout that never moves. Expired entries
//! are refused on read and removed by a sweeper thread that locks one shard at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::HeaderValue;
use rand::TryRng;

pub const ID_LEN: usize = 32;

/// 256 random bits from the operating system's CSPRNG.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; ID_LEN]);

impl SessionId {
    pub fn generate() -> SessionId {
        let mut id = [0u8; ID_LEN];
        // No fallback: without OS randomness there is no safe session id to hand out.
        rand::rngs::SysRng
            .try_fill_bytes(&mut id)
            .expect("the OS random number generator failed");
        SessionId(id)
    }

    pub fn from_bytes(bytes: [u8; ID_LEN]) -> SessionId {
        SessionId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// A short, one-way tag for logs: the first 4 bytes of SHA-256(id) in hex. It lets an
    /// operator follow one session through the log and is useless as a credential.
    pub fn log_tag(&self) -> LogTag {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.0);
        let mut tag = [0u8; 8];
        for (i, b) in digest[..4].iter().enumerate() {
            tag[2 * i] = HEX[(b >> 4) as usize];
            tag[2 * i + 1] = HEX[(b & 0xf) as usize];
        }
        LogTag(tag)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// See [`SessionId::log_tag`]; "-" when there is no session.
pub struct LogTag([u8; 8]);

impl Default for LogTag {
    fn default() -> LogTag {
        LogTag(*b"-       ")
    }
}

impl LogTag {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits").trim_end()
    }
}

// Never print an id: it is a bearer credential.
impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// The store could not answer. The in-memory store never fails on its own (only through the
/// fail points tests switch on), but every caller already treats this as "refuse the
/// request", so a networked store can be added without finding the fail-open paths again.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the session store is unavailable")]
    Unavailable,
}

pub struct Session {
    /// The user's name, ready to be sent as the identity header.
    pub user: HeaderValue,
    created: Instant,
    /// Milliseconds since the store's epoch; atomic so a read lock is enough to touch it.
    last_seen_ms: AtomicU64,
}

pub struct SessionStore {
    map: DashMap<SessionId, Session, foldhash::fast::RandomState>,
    epoch: Instant,
    idle: Duration,
    absolute: Duration,
}

/// Many small shards keep each sweeper lock short even with a million sessions.
const SHARDS: usize = 256;

impl SessionStore {
    pub fn new(idle: Duration, absolute: Duration) -> SessionStore {
        SessionStore {
            map: DashMap::with_capacity_and_hasher_and_shard_amount(
                0,
                foldhash::fast::RandomState::default(),
                SHARDS,
            ),
            epoch: Instant::now(),
            idle,
            absolute,
        }
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.duration_since(self.epoch).as_millis() as u64
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        let idle_for = Duration::from_millis(
            self.now_ms(now)
                .saturating_sub(s.last_seen_ms.load(Ordering::Relaxed)),
        );
        idle_for >= self.idle || now.duration_since(s.created) >= self.absolute
    }

    /// Creates a session for `user` under a fresh id.
    pub fn create(&self, user: HeaderValue) -> Result<SessionId, StoreError> {
        fail::fail_point!("session-create", |_| Err(StoreError::Unavailable));
        let now = Instant::now();
        let session = Session {
            user,
            created: now,
            last_seen_ms: AtomicU64::new(self.now_ms(now)),
        };
        loop {
            let id = SessionId::generate();
            // A collision of 256 random bits will not happen, but never overwrite a session.
            if let dashmap::Entry::Vacant(slot) = self.map.entry(id) {
                slot.insert(session);
                return Ok(id);
            }
        }
    }

    /// The user of a live session, sliding its idle timeout. Expired sessions are removed.
    pub fn touch(&self, id: &SessionId) -> Result<Option<HeaderValue>, StoreError> {
        fail::fail_point!("session-touch", |_| Err(StoreError::Unavailable));
        let now = Instant::now();
        {
            let Some(session) = self.map.get(id) else {
                return Ok(None);
            };
            if !self.expired(&session, now) {
                session
                    .last_seen_ms
                    .store(self.now_ms(now), Ordering::Relaxed);
                return Ok(Some(session.user.clone()));
            }
        }
        self.map
            .remove_if(id, |_, s| self.expired(s, Instant::now()));
        Ok(None)
    }

    /// Ends a session; true if it existed.
    pub fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        fail::fail_point!("session-remove", |_| Err(StoreError::Unavailable));
        Ok(self.map.remove(id).is_some())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes expired sessions. `retain` write-locks one shard at a time, so a request only
    /// ever waits for the pass over its own shard (1/256 of the map).
    pub fn sweep(&self) -> usize {
        let before = self.map.len();
        let now = Instant::now();
        self.map.retain(|_, s| !self.expired(s, now));
        before.saturating_sub(self.map.len())
    }

    /// Sweeps every `interval` on a thread of its own, off the async workers, until the store
    /// is dropped.
    pub fn spawn_sweeper(store: &Arc<SessionStore>, interval: Duration) {
        let weak: Weak<SessionStore> = Arc::downgrade(store);
        let spawned = std::thread::Builder::new()
            .name("session-sweeper".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    let Some(store) = weak.upgrade() else { return };
                    let removed = store.sweep();
                    if removed > 0 {
                        tracing::debug!(removed, live = store.len(), "swept expired sessions");
                    }
                }
            });
        if let Err(e) = spawned {
            // Expired sessions are still refused on read; only memory is at stake.
            tracing::error!("cannot start the session sweeper thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> HeaderValue {
        HeaderValue::from_static("alice")
    }

    #[test]
    fn ids_are_distinct() {
        assert_ne!(SessionId::generate(), SessionId::generate());
    }

    #[test]
    fn idle_timeout_slides_and_absolute_does_not() {
        let store = SessionStore::new(Duration::from_millis(300), Duration::from_millis(900));
        let id = store.create(user()).unwrap();
        // 4 x 100 ms is longer than the idle timeout, but each touch slides it.
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(
                store.touch(&id).unwrap(),
                Some(user()),
                "still within idle timeout"
            );
        }
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(
            store.touch(&id).unwrap(),
            None,
            "idle for longer than the idle timeout"
        );
        assert!(store.is_empty(), "an expired session is removed on read");

        let id = store.create(user()).unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(700) {
            assert!(store.touch(&id).unwrap().is_some());
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            store.touch(&id).unwrap(),
            None,
            "absolute timeout passed despite activity"
        );
    }

    #[test]
    fn sweep_removes_only_expired_sessions() {
        let store = SessionStore::new(Duration::from_millis(50), Duration::from_secs(60));
        for _ in 0..100 {
            store.create(user()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(70));
        let fresh = store.create(user()).unwrap();
        assert_eq!(store.sweep(), 100);
        assert_eq!(store.len(), 1);
        assert!(store.touch(&fresh).unwrap().is_some());
    }
}
