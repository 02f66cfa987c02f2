//! The in-memory session store: a sharded map (dashmap) from session id to session, with an
//! idle timeout that slides with use and an absolute timeout that never moves. Expired entries
//! are refused on read and removed by a sweeper thread that locks one small shard at a time
//! and rests between bursts of work.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use prometheus_client::metrics::counter::Counter;
use rand::TryRng;

use super::browser::Browser;
use super::identity::{Owner, UserId};

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

/// When and where a stored session started, and when it was last used.
#[derive(Clone, Copy, Debug)]
pub struct StoredTimes {
    pub started: SystemTime,
    pub last_seen: SystemTime,
    pub client: IpAddr,
    pub browser: Browser,
}

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

/// What the sessions page shows about where a session was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionMeta {
    pub client: IpAddr,
    pub browser: Browser,
}

/// One live session. Next to its 32-byte id it is 48 bytes and owns no heap memory: the owner
/// is two numbers, the times are milliseconds since the store's epoch, the address is 16 bytes
/// and the browser two. A `HeaderValue` and an `Instant` per session cost 278 bytes a session
/// in all at a million sessions.
pub struct Session {
    created_ms: u64,
    /// Atomic so that touching a session needs only its shard's read lock.
    last_seen_ms: AtomicU64,
    owner: Owner,
    /// IPv4 addresses as IPv4-mapped IPv6, so both fit in 16 bytes.
    client: [u8; 16],
    browser: Browser,
}

type Hasher = foldhash::fast::RandomState;

/// Many small shards keep each write lock short: at a million sessions a shard holds about 250
/// and the sweeper's pass over one takes a few microseconds, so a request that needs the shard
/// being swept waits that long at most. (dashmap's default, 4 x CPUs, would put 125,000
/// sessions behind one lock on two cores.) A power of two, as dashmap requires.
const SHARDS: usize = 4096;

/// Sessions by `K`: the session id, or (for sessions read back from `state_dir` and not yet
/// used since) the one-way key the disk knows them by.
pub struct MemoryStore<K = SessionId> {
    map: DashMap<K, Session, Hasher>,
    epoch: Instant,
    /// The wall-clock time of the store's zero: [`BEFORE_EPOCH`] before `epoch`, so that a
    /// session read back from disk, started before this process, still has a time.
    wall_zero: SystemTime,
    idle_ms: u64,
    absolute_ms: u64,
    /// Sessions that ran out, by which timeout (the metrics read these).
    idled_out: Counter,
    timed_out: Counter,
    /// Added to the clock, so tests can let time pass without sleeping.
    #[cfg(test)]
    skew_ms: AtomicU64,
}

/// Whole milliseconds in `d`, rounded down so that a timeout is never stretched (see
/// [`expired`]); durations past `u64::MAX` ms saturate.
fn whole_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a session created at `created_ms` and last used at `last_seen_ms` is past one of
/// its timeouts at `now_ms` (all in whole milliseconds since one epoch, rounded down). With
/// times and timeouts rounded down a session is refused at most a millisecond early and never
/// late: an accepted difference of at most `timeout_ms - 1` whole milliseconds means less than
/// `timeout_ms` really passed. A `last_seen_ms` after `now_ms` (another request stored a later
/// time while this one was reading the clock) counts as just used.
fn expired(
    created_ms: u64,
    last_seen_ms: u64,
    now_ms: u64,
    idle_ms: u64,
    absolute_ms: u64,
) -> bool {
    now_ms.saturating_sub(last_seen_ms) >= idle_ms
        || now_ms.saturating_sub(created_ms) >= absolute_ms
}

/// How far before the process's start the store's times reach. A session older than its
/// absolute timeout is over, so with the longest timeout allowed here any session worth
/// reading back has a time; older ones count as started at zero, and are long expired.
const BEFORE_EPOCH: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

impl<K: Copy + Eq + Hash> MemoryStore<K> {
    pub fn new(idle: Duration, absolute: Duration) -> MemoryStore<K> {
        MemoryStore {
            map: DashMap::with_capacity_and_hasher_and_shard_amount(0, Hasher::default(), SHARDS),
            epoch: Instant::now(),
            wall_zero: SystemTime::now() - BEFORE_EPOCH,
            idle_ms: whole_ms(idle),
            absolute_ms: whole_ms(absolute),
            idled_out: Counter::default(),
            timed_out: Counter::default(),
            #[cfg(test)]
            skew_ms: AtomicU64::new(0),
        }
    }

    /// Counts sessions that end by their idle timeout in `idle` and by their absolute timeout
    /// in `absolute`.
    pub fn counting_expiries(mut self, idle: Counter, absolute: Counter) -> MemoryStore<K> {
        self.idled_out = idle;
        self.timed_out = absolute;
        self
    }

    /// Counts `s`, found expired at `now_ms` and being removed, under the timeout that ended it.
    fn count_expiry(&self, s: &Session, now_ms: u64) {
        if now_ms.saturating_sub(s.created_ms) >= self.absolute_ms {
            self.timed_out.inc();
        } else {
            self.idled_out.inc();
        }
    }

    #[cfg(not(test))]
    fn now_ms(&self) -> u64 {
        whole_ms(self.epoch.elapsed() + BEFORE_EPOCH)
    }

    #[cfg(test)]
    fn now_ms(&self) -> u64 {
        whole_ms(self.epoch.elapsed() + BEFORE_EPOCH) + self.skew_ms.load(Ordering::Relaxed)
    }

    /// The wall-clock time of store time `ms`.
    fn wall_at(&self, ms: u64) -> SystemTime {
        self.wall_zero + Duration::from_millis(ms)
    }

    /// The store time of wall-clock time `t`; zero for times before the store's zero.
    fn ms_at(&self, t: SystemTime) -> u64 {
        t.duration_since(self.wall_zero).map_or(0, whole_ms)
    }

    /// Moves the store's clock forward by `by`.
    #[cfg(test)]
    fn let_time_pass(&self, by: Duration) {
        self.skew_ms.fetch_add(whole_ms(by), Ordering::Relaxed);
    }

    fn is_expired(&self, s: &Session, now_ms: u64) -> bool {
        expired(
            s.created_ms,
            s.last_seen_ms.load(Ordering::Relaxed),
            now_ms,
            self.idle_ms,
            self.absolute_ms,
        )
    }

    /// The owner of a live session, sliding its idle timeout. Expired sessions are removed.
    pub fn touch(&self, id: &K) -> Result<Option<Owner>, StoreError> {
        fail::fail_point!("session-touch", |_| Err(StoreError::Unavailable));
        let now = self.now_ms();
        {
            // A read lock on the id's shard, held to the end of this block.
            let Some(session) = self.map.get(id) else {
                return Ok(None);
            };
            let last_seen = session.last_seen_ms.load(Ordering::Relaxed);
            if !expired(
                session.created_ms,
                last_seen,
                now,
                self.idle_ms,
                self.absolute_ms,
            ) {
                // Written only when the clock moved on: a session busy on two workers at once
                // would otherwise bounce its cache line between them on every request.
                if last_seen < now {
                    session.last_seen_ms.store(now, Ordering::Relaxed);
                }
                return Ok(Some(session.owner));
            }
        }
        // Checked again under the write lock: a request that read the clock before the session
        // expired may have slid it in between.
        let now = self.now_ms();
        if let Some((_, s)) = self.map.remove_if(id, |_, s| self.is_expired(s, now)) {
            self.count_expiry(&s, now);
        }
        Ok(None)
    }

    /// The owner of a live session and when it started, without counting this as use (an
    /// open tunnel checking its session is still there).
    pub fn peek(&self, id: &K) -> Option<(Owner, SystemTime)> {
        let session = self.map.get(id)?;
        if self.is_expired(&session, self.now_ms()) {
            return None;
        }
        Some((session.owner, self.wall_at(session.created_ms)))
    }

    /// Ends a session; true if it existed.
    pub fn remove(&self, id: &K) -> Result<bool, StoreError> {
        fail::fail_point!("session-remove", |_| Err(StoreError::Unavailable));
        Ok(self.map.remove(id).is_some())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The live sessions of `user` (any credentials), each with its id, oldest first: one pass
    /// over the shards under their read locks. Only the sessions page asks, one user at a
    /// time.
    pub fn of_user(&self, user: UserId) -> Vec<(K, Owner, StoredTimes)> {
        let now = self.now_ms();
        let mut found: Vec<(K, Owner, StoredTimes)> = self
            .map
            .iter()
            .filter(|e| e.owner.user == user && !self.is_expired(e.value(), now))
            .map(|e| (*e.key(), e.owner, self.times_of(e.value())))
            .collect();
        found.sort_by_key(|(_, _, t)| t.started);
        found
    }

    /// Ends every session whose owner `doomed` picks (a reload removed the user or changed
    /// their password), one shard at a time like [`sweep`](Self::sweep); how many.
    pub fn end_where(&self, doomed: impl Fn(Owner) -> bool) -> usize {
        self.end_where_keys(doomed).len()
    }

    /// [`end_where`](Self::end_where), naming the sessions it ended.
    pub fn end_where_keys(&self, doomed: impl Fn(Owner) -> bool) -> Vec<K> {
        let mut ended = Vec::new();
        for i in 0..self.map.shards().len() {
            self.remove_in_shard(i, |s, _| doomed(s.owner), Some(&mut ended));
        }
        ended
    }

    /// Removes the expired sessions of shard `index` under its write lock; how many.
    fn sweep_shard(&self, index: usize) -> usize {
        self.remove_in_shard(
            index,
            |s, now| {
                let expired = self.is_expired(s, now);
                if expired {
                    self.count_expiry(s, now);
                }
                expired
            },
            None,
        )
    }

    /// Removes the sessions of shard `index` that `doomed` picks (given the session and the
    /// time), under the shard's write lock; how many. Their keys go to `ended` if given.
    fn remove_in_shard(
        &self,
        index: usize,
        doomed: impl Fn(&Session, u64) -> bool,
        mut ended: Option<&mut Vec<K>>,
    ) -> usize {
        let now = self.now_ms();
        let mut shard = self.map.shards()[index].write();
        let before = shard.len();
        // SAFETY: this is dashmap's own `retain`, narrowed to one shard so the sweeper can rest
        // between shards (`DashMap::retain` walks them all in one go). The write guard gives
        // exclusive access to the table for the whole loop; each bucket comes from the table's
        // own iterator, is read before it is erased, and erasing the bucket just yielded is
        // what the raw iterator allows (hashbrown's `HashMap::retain` does the same).
        unsafe {
            for bucket in shard.iter() {
                let (key, session) = bucket.as_ref();
                if doomed(session.get(), now) {
                    if let Some(ended) = ended.as_mut() {
                        ended.push(*key);
                    }
                    shard.erase(bucket);
                }
            }
        }
        before - shard.len()
    }

    /// Removes expired sessions in one pass as fast as it can, write-locking one shard at a
    /// time, so a request only ever waits for the pass over its own shard.
    pub fn sweep(&self) -> usize {
        (0..self.map.shards().len())
            .map(|i| self.sweep_shard(i))
            .sum()
    }

    /// The sweeper thread's pass: [`sweep`](Self::sweep) in bursts of [`SWEEP_BURST`], each
    /// followed by a rest [`SWEEP_REST`] times as long.
    fn sweep_paced(&self) -> usize {
        let mut removed = 0;
        let mut burst = Instant::now();
        for index in 0..self.map.shards().len() {
            removed += self.sweep_shard(index);
            let worked = burst.elapsed();
            if worked >= SWEEP_BURST {
                std::thread::sleep(worked * SWEEP_REST);
                burst = Instant::now();
            }
        }
        removed
    }

    /// Sweeps every `interval` on a thread of its own, off the async workers, until the store
    /// is dropped.
    pub fn spawn_sweeper(store: &Arc<MemoryStore<K>>, interval: Duration)
    where
        K: Send + Sync + 'static,
    {
        let weak: Weak<MemoryStore<K>> = Arc::downgrade(store);
        let spawned = std::thread::Builder::new()
            .name("session-sweeper".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    let Some(store) = weak.upgrade() else { return };
                    let removed = store.sweep_paced();
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

/// How a session's client address is kept: IPv4 as IPv4-mapped IPv6, 16 bytes either way.
fn client_octets(client: IpAddr) -> [u8; 16] {
    match client {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl MemoryStore<SessionId> {
    /// Creates a session for `owner` under a fresh id.
    pub fn create(&self, owner: Owner, meta: &SessionMeta) -> Result<SessionId, StoreError> {
        fail::fail_point!("session-create", |_| Err(StoreError::Unavailable));
        let now = self.now_ms();
        loop {
            let id = SessionId::generate();
            // A collision of 256 random bits will not happen, but never overwrite a session.
            if let dashmap::Entry::Vacant(slot) = self.map.entry(id) {
                slot.insert(Session {
                    created_ms: now,
                    last_seen_ms: AtomicU64::new(now),
                    owner,
                    client: client_octets(meta.client),
                    browser: meta.browser,
                });
                return Ok(id);
            }
        }
    }
}

/// What the durable store (`state_dir`) needs beside the request path: putting sessions back,
/// moving one from its disk key to its id on first use, and reading everything out.
impl<K: Copy + Eq + Hash> MemoryStore<K> {
    fn times_of(&self, s: &Session) -> StoredTimes {
        let client = Ipv6Addr::from(s.client);
        StoredTimes {
            started: self.wall_at(s.created_ms),
            last_seen: self.wall_at(s.last_seen_ms.load(Ordering::Relaxed)),
            client: client
                .to_ipv4_mapped()
                .map_or(IpAddr::V6(client), IpAddr::V4),
            browser: s.browser,
        }
    }

    fn session_of(&self, owner: Owner, times: &StoredTimes) -> Session {
        Session {
            created_ms: self.ms_at(times.started),
            last_seen_ms: AtomicU64::new(self.ms_at(times.last_seen)),
            owner,
            client: client_octets(times.client),
            browser: times.browser,
        }
    }

    /// Puts back a session read from disk, unless it has expired; whether it was put.
    pub fn insert(&self, key: K, owner: Owner, times: &StoredTimes) -> bool {
        let session = self.session_of(owner, times);
        if self.is_expired(&session, self.now_ms()) {
            return false;
        }
        self.map.insert(key, session);
        true
    }

    /// Puts a session read from disk back as it was, expired or not: a later record may
    /// slide it (see [`seen_at`](Self::seen_at)); a [`sweep`](Self::sweep) after reading
    /// drops what stayed expired.
    pub fn put(&self, key: K, owner: Owner, times: &StoredTimes) {
        self.map.insert(key, self.session_of(owner, times));
    }

    /// Records that the session under `key` was used at `t`, unless it was used later.
    pub fn seen_at(&self, key: &K, t: SystemTime) {
        if let Some(s) = self.map.get(key) {
            s.last_seen_ms.fetch_max(self.ms_at(t), Ordering::Relaxed);
        }
    }

    /// Moves the live session under `key` to `to` under `new_key`, with its times; whether
    /// there was one. `key`'s shard stays write-locked until the session is in `to`, so a
    /// request looking for it in `to` after missing it here always finds it.
    pub fn move_to<N: Copy + Eq + Hash>(&self, key: &K, to: &MemoryStore<N>, new_key: N) -> bool {
        let dashmap::Entry::Occupied(entry) = self.map.entry(*key) else {
            return false;
        };
        if self.is_expired(entry.get(), self.now_ms()) {
            return false;
        }
        let s = entry.get();
        to.map
            .insert(new_key, to.session_of(s.owner, &self.times_of(s)));
        entry.remove();
        true
    }

    /// Calls `f` with every live session (dashmap's iterator read-locks one shard at a time).
    pub fn export(&self, mut f: impl FnMut(&K, Owner, StoredTimes)) {
        let now = self.now_ms();
        for e in self.map.iter() {
            if !self.is_expired(e.value(), now) {
                f(e.key(), e.owner, self.times_of(e.value()));
            }
        }
    }

    /// Calls `f` with the key and last use of every session used at or after `since`.
    pub fn used_since(&self, since: SystemTime, mut f: impl FnMut(&K, SystemTime)) {
        let since_ms = self.ms_at(since);
        self.map.iter().for_each(|e| {
            let seen = e.last_seen_ms.load(Ordering::Relaxed);
            if seen >= since_ms && e.created_ms < seen {
                f(e.key(), self.wall_at(seen));
            }
        });
    }
}

/// How long the sweeper works at a stretch before it sleeps. A sweep of a million expired
/// sessions is ~20 ms of CPU work; done in one go on a CPU it shares with a proxy worker or the
/// upstream, the kernel let it run whole time slices (milliseconds) while they waited, even
/// when it yielded between shards (a yield does not reach tasks in other cgroups). Sleeping
/// hands the CPU to whatever else is runnable whatever the scheduling policy or cgroup layout,
/// so a request waits for one burst (plus the shard that ends it) at most.
///
/// The sweeper keeps a normal priority. At nice 19 or SCHED_IDLE it would run less often, but
/// it can be preempted while it holds a shard's write lock, and a starved sweeper leaves the
/// requests for that shard waiting (priority inversion); short bursts avoid the stalls without
/// that risk.
const SWEEP_BURST: Duration = Duration::from_micros(20);

/// The sweeper rests this many times as long as it worked, so it takes at most a fifth of a
/// CPU: a pass over a million expired sessions takes ~0.2 s instead of ~0.03 s. Only memory
/// reclamation waits; expired sessions are refused on read whether swept or not. (Measured
/// with `benches/load.sh --only stall`: 50 us bursts with 3x rest gave p99 ratios of 1.61,
/// 0.86 and 4.92 over three rounds; 20 us with 4x rest 2.97, 0.93, 1.15, 1.20 and 2.30 over
/// five. Both are within the machine's noise of each other; the shorter burst bounds the
/// wait a request can see.)
const SWEEP_REST: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::session::identity::UserNames;

    fn names() -> &'static UserNames {
        static NAMES: std::sync::OnceLock<UserNames> = std::sync::OnceLock::new();
        NAMES.get_or_init(UserNames::default)
    }

    fn owner(name: &str) -> Owner {
        Owner {
            user: names().intern(name),
            credentials: 1,
        }
    }

    const META: SessionMeta = SessionMeta {
        client: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        browser: Browser::UNKNOWN,
    };

    fn store(idle: Duration, absolute: Duration) -> MemoryStore {
        MemoryStore::new(idle, absolute)
    }

    fn alice(_: &MemoryStore) -> Owner {
        owner("alice")
    }

    #[test]
    fn ids_are_distinct() {
        assert_ne!(SessionId::generate(), SessionId::generate());
    }

    #[test]
    fn a_session_is_small_and_owns_no_heap_memory() {
        // The memory budget (200 MiB for a million sessions) rests on this size.
        assert_eq!(std::mem::size_of::<Session>(), 48);
        assert!(!std::mem::needs_drop::<Session>());
    }

    #[test]
    fn times_round_down_to_whole_milliseconds_and_saturate() {
        assert_eq!(whole_ms(Duration::from_micros(300_999)), 300);
        assert_eq!(whole_ms(Duration::from_millis(300)), 300);
        assert_eq!(whole_ms(Duration::from_micros(999)), 0);
        assert_eq!(whole_ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn expiry_boundaries() {
        let (idle, absolute) = (300, 900);
        // Created at 1000, last used at 1200.
        let at = |now| expired(1000, 1200, now, idle, absolute);
        assert!(!at(1200));
        assert!(!at(1499), "1 ms before the idle timeout");
        assert!(at(1500), "exactly the idle timeout");
        // Used again just before the absolute timeout: still ends at created + absolute.
        let at = |now| expired(1000, 1850, now, idle, absolute);
        assert!(!at(1899));
        assert!(
            at(1900),
            "exactly the absolute timeout, however recent the use"
        );
        // Another request stored a later time than this one read from the clock.
        assert!(!expired(1000, 1300, 1250, idle, absolute));
        // Timeouts too long to count in milliseconds never end a session.
        assert!(!expired(0, 0, u64::MAX - 1, u64::MAX, u64::MAX));
        // A timeout under a millisecond rounds down to 0: every session is already over.
        assert!(expired(1000, 1000, 1000, 0, absolute));
    }

    #[test]
    fn each_session_names_its_own_owner() {
        let store = store(Duration::from_secs(60), Duration::from_secs(60));
        let bob = owner("bob");
        let a = store.create(alice(&store), &META).unwrap();
        let b = store.create(bob, &META).unwrap();
        assert_eq!(store.touch(&a).unwrap(), Some(owner("alice")));
        assert_eq!(store.touch(&b).unwrap(), Some(bob));
        assert_eq!(store.touch(&SessionId::generate()).unwrap(), None);
    }

    #[test]
    fn end_where_ends_only_the_picked_owners_sessions() {
        let store = store(HOUR, HOUR);
        let stale = Owner {
            credentials: 7,
            ..owner("alice")
        };
        let current = Owner {
            credentials: 8,
            ..owner("alice")
        };
        let old: Vec<SessionId> = (0..500)
            .map(|_| store.create(stale, &META).unwrap())
            .collect();
        let kept = store.create(current, &META).unwrap();
        let bobs = store.create(owner("bob"), &META).unwrap();
        assert_eq!(store.end_where(|o| o == stale), 500);
        assert!(old.iter().all(|id| store.touch(id).unwrap().is_none()));
        assert_eq!(store.touch(&kept).unwrap(), Some(current));
        assert_eq!(store.touch(&bobs).unwrap(), Some(owner("bob")));
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn of_user_lists_one_users_live_sessions_with_where_they_started() {
        let store = store(HOUR, HOUR);
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let firefox = Browser::from_user_agent("Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0");
        let first = store.create(alice(&store), &META).unwrap();
        let second = store
            .create(
                alice(&store),
                &SessionMeta {
                    client: v6,
                    browser: firefox,
                },
            )
            .unwrap();
        store.create(owner("bob"), &META).unwrap();
        let listed = store.of_user(owner("alice").user);
        let ids: Vec<SessionId> = listed.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&first) && ids.contains(&second));
        let (_, _, times) = listed.iter().find(|(id, _, _)| *id == second).unwrap();
        assert_eq!(times.client, v6);
        assert_eq!(times.browser, firefox);
        let (_, _, times) = listed.iter().find(|(id, _, _)| *id == first).unwrap();
        assert_eq!(times.client, META.client, "IPv4 comes back as IPv4");
        store.let_time_pass(2 * HOUR);
        assert!(
            store.of_user(owner("alice").user).is_empty(),
            "expired ones are not listed"
        );
    }

    #[test]
    fn remove_ends_a_session() {
        let store = store(HOUR, HOUR);
        let id = store.create(alice(&store), &META).unwrap();
        assert!(store.remove(&id).unwrap());
        assert!(!store.remove(&id).unwrap());
        assert_eq!(store.touch(&id).unwrap(), None);
        assert!(store.is_empty());
    }

    #[test]
    fn idle_timeout_slides_and_absolute_does_not() {
        let (idle, absolute) = (Duration::from_secs(300), Duration::from_secs(900));
        let store = store(idle, absolute);
        let id = store.create(alice(&store), &META).unwrap();
        // 4 x 100 s is longer than the idle timeout, but each touch slides it.
        for _ in 0..4 {
            store.let_time_pass(Duration::from_secs(100));
            assert!(
                store.touch(&id).unwrap().is_some(),
                "still within idle timeout"
            );
        }
        store.let_time_pass(idle);
        assert_eq!(
            store.touch(&id).unwrap(),
            None,
            "idle for as long as the idle timeout"
        );
        assert!(store.is_empty(), "an expired session is removed on read");

        let id = store.create(alice(&store), &META).unwrap();
        for _ in 0..8 {
            store.let_time_pass(Duration::from_secs(100));
            assert!(store.touch(&id).unwrap().is_some());
        }
        store.let_time_pass(Duration::from_secs(100));
        assert_eq!(
            store.touch(&id).unwrap(),
            None,
            "absolute timeout passed despite activity"
        );
    }

    #[test]
    fn expiries_are_counted_by_the_timeout_that_ended_them() {
        let (idle, absolute) = (Duration::from_secs(300), Duration::from_secs(900));
        let (idled, timed) = (Counter::default(), Counter::default());
        let store = store(idle, absolute).counting_expiries(idled.clone(), timed.clone());
        // Idle, found on read.
        let id = store.create(alice(&store), &META).unwrap();
        store.let_time_pass(idle);
        assert_eq!(store.touch(&id).unwrap(), None);
        // Absolute, though used all along, found by the sweeper.
        let id = store.create(alice(&store), &META).unwrap();
        for _ in 0..9 {
            store.let_time_pass(Duration::from_secs(100));
            let _ = store.touch(&id).unwrap();
        }
        // Idle, found by the sweeper; and one still live, not counted.
        store.create(alice(&store), &META).unwrap();
        store.let_time_pass(idle);
        store.create(alice(&store), &META).unwrap();
        assert_eq!(
            store.sweep(),
            1,
            "the idle one (the absolute one ended on read)"
        );
        assert_eq!((idled.get(), timed.get()), (2, 1));
        assert_eq!(store.len(), 1);
    }

    // The sweep tests move the store's clock instead of sleeping: a session that must stay
    // live has an hour of real time left, however slowly a busy machine runs the test.
    #[test]
    fn sweep_removes_only_expired_sessions() {
        let store = store(HOUR, 10 * HOUR);
        // Enough sessions to land in most shards.
        for _ in 0..5000 {
            store.create(alice(&store), &META).unwrap();
        }
        let touched = store.create(alice(&store), &META).unwrap();
        store.let_time_pass(HOUR / 2);
        assert!(store.touch(&touched).unwrap().is_some());
        store.let_time_pass(HOUR * 3 / 4);
        let fresh = store.create(alice(&store), &META).unwrap();
        assert_eq!(store.sweep(), 5000);
        assert_eq!(store.len(), 2);
        assert!(store.touch(&fresh).unwrap().is_some());
        assert!(store.touch(&touched).unwrap().is_some(), "touching slid it");
    }

    #[test]
    fn the_sweepers_paced_pass_removes_only_expired_sessions() {
        let store = store(HOUR, 10 * HOUR);
        // Enough work for several bursts and rests.
        for _ in 0..20_000 {
            store.create(alice(&store), &META).unwrap();
        }
        store.let_time_pass(2 * HOUR);
        let fresh = store.create(alice(&store), &META).unwrap();
        assert_eq!(store.sweep_paced(), 20_000);
        assert_eq!(store.len(), 1);
        assert!(store.touch(&fresh).unwrap().is_some());
    }

    #[test]
    fn sweeping_beside_busy_requests_keeps_live_sessions() {
        let idle = Duration::from_millis(400);
        let store = Arc::new(store(idle, HOUR));
        let created = Instant::now();
        let live: Vec<SessionId> = (0..64)
            .map(|_| store.create(alice(&store), &META).unwrap())
            .collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut swept = 0;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..500 {
                        store.create(alice(&store), &META).unwrap();
                    }
                    swept += store.sweep();
                }
                swept
            })
        };
        let start = Instant::now();
        // When each session's previous touch began: it was touched after that instant.
        let mut touched = vec![created; live.len()];
        while start.elapsed() < Duration::from_millis(1200) {
            for (id, last) in live.iter().zip(touched.iter_mut()) {
                let before = Instant::now();
                let found = store.touch(id).unwrap().is_some();
                // Checked before now, touched after `last`: only a test thread stalled past the
                // idle timeout in between may lose it.
                assert!(found || last.elapsed() >= idle, "a live session was swept");
                *last = before;
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(
            churn.join().unwrap() > 0,
            "the sweeps removed the churned sessions"
        );
    }
}
