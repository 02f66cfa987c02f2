//! A replica's short-lived copy of the Redis sessions it served a moment ago, so a busy
//! session costs Redis a read twice a second instead of one per request.
//!
//! The cache never keeps a session alive that Redis has ended for longer than [`CACHE_FOR`]:
//! - every entry is trusted for [`CACHE_FOR`] after it was read from Redis, then read again;
//! - an ended session is announced on the invalidation channel and dropped at once;
//! - the cache is used only while that channel is subscribed; when it is lost (or
//!   reconnected, when messages may have been missed) the whole cache is dropped.
//!
//! A busy session is read again by one request at a time: past half its time, the first request
//! that asks takes the refresh on itself while the others go on using the entry, so many
//! requests at once do not all miss together and each ask Redis.
//!
//! A read that started before an invalidation must not put the ended session back: every
//! invalidation bumps a generation, and an entry read under an older generation is taken out
//! again (see [`Cache::insert`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use super::identity::Owner;
use super::keys::SessionKey;
use super::memory::SessionId;

/// How long an entry is believed without asking Redis. Half the one-second bound on how long a
/// session ended on another replica may still be accepted here, if every message were lost.
pub const CACHE_FOR: Duration = Duration::from_millis(500);

/// Entries kept at most: a bound on memory whatever the traffic. Past it, sessions are read
/// from Redis each time until entries age out.
const MAX_ENTRIES: usize = 100_000;

type Hasher = foldhash::fast::RandomState;

pub struct Entry {
    pub owner: Owner,
    /// The user's name, for a "sign out everywhere" announced by name.
    pub user: Arc<str>,
    pub key: SessionKey,
    /// Unix milliseconds: when this was read from Redis, when the session started and when
    /// Redis last recorded it as used.
    pub fetched_ms: u64,
    pub created_ms: u64,
    pub seen_ms: u64,
    /// A request has taken on reading this session again.
    pub refreshing: AtomicBool,
}

/// What a cache hit needs, copied out without touching the entry's name.
#[derive(Clone, Copy, Debug)]
pub struct Cached {
    pub owner: Owner,
    pub created_ms: u64,
    pub seen_ms: u64,
}

#[derive(Default)]
pub struct Cache {
    map: DashMap<SessionId, Entry, Hasher>,
    /// The invalidation channel is subscribed: entries may be used.
    live: AtomicBool,
    generation: AtomicU64,
}

impl Cache {
    /// The entry for `id`, if it may be used at `now_ms`: its owner, and when the session
    /// started and was last seen (Unix ms). `None` also for the one request that is to read
    /// the session again now (see the module comment).
    pub fn get(&self, id: &SessionId, now_ms: u64) -> Option<Cached> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let entry = self.map.get(id)?;
        let age = now_ms.saturating_sub(entry.fetched_ms);
        let max = CACHE_FOR.as_millis() as u64;
        if age >= max {
            return None;
        }
        if age >= max / 2
            && entry
                .refreshing
                .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return None;
        }
        Some(Cached {
            owner: entry.owner,
            created_ms: entry.created_ms,
            seen_ms: entry.seen_ms,
        })
    }

    /// The generation to pass to [`insert`](Self::insert), taken before reading Redis.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Keeps `entry`, read from Redis under `generation`. If an invalidation came in since,
    /// the entry may describe a session that has just ended, so it is removed again: either
    /// the invalidation's own sweep saw the entry, or this check sees the new generation.
    pub fn insert(&self, id: SessionId, entry: Entry, generation: u64) {
        if !self.live.load(Ordering::Acquire) || self.map.len() >= MAX_ENTRIES {
            return;
        }
        self.map.insert(id, entry);
        if self.generation.load(Ordering::SeqCst) != generation {
            self.map.remove(&id);
        }
    }

    pub fn remove(&self, id: &SessionId) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.map.remove(id);
    }

    /// A session was ended somewhere.
    pub fn ended(&self, key: &SessionKey) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.map.retain(|_, e| e.key != *key);
    }

    /// Every session of a user was ended somewhere.
    pub fn user_ended(&self, user: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.map.retain(|_, e| &*e.user != user);
    }

    /// The channel is subscribed (`true`) or lost (`false`); either way nothing cached before
    /// can be trusted.
    pub fn set_live(&self, live: bool) {
        if !live {
            self.live.store(false, Ordering::Release);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.map.clear();
        if live {
            self.live.store(true, Ordering::Release);
        }
    }

    /// Forgets every entry.
    pub fn drop_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.map.clear();
    }

    /// Drops entries too old to be used.
    pub fn prune(&self, now_ms: u64) {
        let max = CACHE_FOR.as_millis() as u64;
        self.map
            .retain(|_, e| now_ms.saturating_sub(e.fetched_ms) < max);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::identity::UserNames;

    fn entry(key: SessionKey, user: &str, fetched_ms: u64) -> Entry {
        let names = UserNames::default();
        Entry {
            owner: Owner {
                user: names.intern(user),
                credentials: 1,
            },
            user: user.into(),
            key,
            fetched_ms,
            created_ms: fetched_ms,
            seen_ms: fetched_ms,
            refreshing: AtomicBool::new(false),
        }
    }

    fn key(n: u8) -> SessionKey {
        super::super::keys::SessionKeys::new(b"k").name(n, b"x")
    }

    #[test]
    fn nothing_is_cached_while_the_channel_is_down() {
        let cache = Cache::default();
        let id = SessionId::generate();
        cache.insert(id, entry(key(1), "alice", 1000), cache.generation());
        assert!(cache.get(&id, 1000).is_none());
        cache.set_live(true);
        cache.insert(id, entry(key(1), "alice", 1000), cache.generation());
        assert!(cache.get(&id, 1000).is_some());
        cache.set_live(false);
        assert!(cache.is_empty(), "a lost channel drops everything");
        cache.set_live(true);
        assert!(cache.get(&id, 1000).is_none());
    }

    #[test]
    fn entries_age_out() {
        let cache = Cache::default();
        cache.set_live(true);
        let id = SessionId::generate();
        cache.insert(id, entry(key(1), "alice", 1000), cache.generation());
        assert!(cache.get(&id, 1000 + 249).is_some());
        assert!(
            cache.get(&id, 1000 + 499).is_none(),
            "one request reads again"
        );
        assert!(
            cache.get(&id, 1000 + 499).is_some(),
            "the others use it meanwhile"
        );
        assert!(cache.get(&id, 1000 + 500).is_none());
        cache.prune(1000 + 500);
        assert!(cache.is_empty());
    }

    #[test]
    fn past_half_its_time_one_request_reads_again_while_the_others_use_the_entry() {
        let cache = Cache::default();
        cache.set_live(true);
        let id = SessionId::generate();
        cache.insert(id, entry(key(1), "alice", 1000), cache.generation());
        assert!(cache.get(&id, 1100).is_some());
        assert!(
            cache.get(&id, 1250).is_none(),
            "the first past half: reads again"
        );
        for _ in 0..10 {
            assert!(cache.get(&id, 1260).is_some(), "the others meanwhile");
        }
        // Its read puts a fresh entry in.
        cache.insert(id, entry(key(1), "alice", 1300), cache.generation());
        assert!(cache.get(&id, 1400).is_some());
    }

    #[test]
    fn a_read_from_before_an_invalidation_is_not_kept() {
        let cache = Cache::default();
        cache.set_live(true);
        let id = SessionId::generate();
        let before = cache.generation();
        cache.ended(&key(9));
        cache.insert(id, entry(key(1), "alice", 1000), before);
        assert!(cache.get(&id, 1000).is_none());
    }

    #[test]
    fn invalidations_drop_their_sessions_only() {
        let cache = Cache::default();
        cache.set_live(true);
        let (a, b, c) = (
            SessionId::generate(),
            SessionId::generate(),
            SessionId::generate(),
        );
        cache.insert(a, entry(key(1), "alice", 1000), cache.generation());
        cache.insert(b, entry(key(2), "alice", 1000), cache.generation());
        cache.insert(c, entry(key(3), "bob", 1000), cache.generation());
        cache.ended(&key(1));
        assert!(cache.get(&a, 1000).is_none());
        assert!(cache.get(&b, 1000).is_some());
        cache.user_ended("alice");
        assert!(cache.get(&b, 1000).is_none());
        assert!(cache.get(&c, 1000).is_some());
    }
}
