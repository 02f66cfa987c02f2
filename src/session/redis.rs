//! The Redis session store: sessions every replica sharing one Redis can read, that outlive a
//! restart, and that any replica can end.
//!
//! What Redis holds, under `redis.key_prefix`:
//! - `session:<key>`: a hash with the user's name, the credentials fingerprint, when it started
//!   and was last seen (Unix ms), the client address and the browser, and a seal (an HMAC with
//!   the secret) over the user, credentials and start: someone who can write to Redis but has
//!   no secret can end sessions, never move one to another user or make it outlive its
//!   absolute end. `<key>` is the session's one-way name (see `keys`), never its id: a dump of
//!   Redis holds no credential.
//! - `user:<name>`: a sorted set of that user's session keys (scored by their absolute end),
//!   so "sign out everywhere" and the sessions page are one operation each, not a scan.
//! - the `ended` channel: every ended session is announced on it, for the replica caches.
//!
//! Every key has a TTL: a session's is the earlier of its absolute end and its idle end,
//! renewed when "last seen" is written back (at most once per `session.touch_interval`); a
//! user's index lives as long as their longest-lived session. Nothing stays behind when a
//! session ends, however it ends. Replicas compare times by their own clocks, which must be
//! in step (NTP), as with any shared session store.
//!
//! The scripts build a user's index key from the name, so this is for a single Redis (with
//! replicas or Sentinel in front of it), not Redis Cluster.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::Script;

use super::cache::{Cache, Entry};
use super::identity::{Owner, Profile, UserId, UserNames};
use super::keys::{SessionKey, SessionKeys};
use super::memory::{SessionId, SessionMeta, StoreError};
use super::redis_link::{MasterSlot, RedisLink};
use super::tunnels::Tunnels;

/// Creates a session unless the key exists; adds it to the user's index, which lives as long
/// as the user's longest-lived session (members past their absolute end are dropped).
/// KEYS: session, index. ARGV: user, cred, now, client, browser, expire_at, member, abs_end,
/// seal.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'cred', ARGV[2], 'created', ARGV[3],
  'seen', ARGV[3], 'client', ARGV[4], 'browser', ARGV[5], 'seal', ARGV[9])
redis.call('PEXPIREAT', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[8], ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
if redis.call('PEXPIRETIME', KEYS[2]) < tonumber(ARGV[6]) then
  redis.call('PEXPIREAT', KEYS[2], ARGV[6])
end
return 1
",
    )
});

/// What separates a provider user's key from their profile (JSON) in a session's `user`
/// field; a configured user's field is their name alone, as before providers.
const PROFILE_SEPARATOR: char = '\u{1e}';

/// A session's `user` field: the name, and a provider user's profile after it.
fn user_field(name: &str, profile: Option<&Profile>) -> String {
    match profile {
        None => name.to_string(),
        Some(p) => format!(
            "{name}{PROFILE_SEPARATOR}{}",
            serde_json::to_string(p).expect("a profile is plain data")
        ),
    }
}

/// Writes "last seen" back and renews the TTL (and the index's, which lives as long as the
/// user's longest-lived session), unless the session has ended meanwhile (a bare HSET would
/// bring back a hash with only that field).
/// KEYS: session, index. ARGV: now, expire_at.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'seen', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
if redis.call('PEXPIRETIME', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIREAT', KEYS[2], ARGV[2])
end
return 1
",
    )
});

/// Ends one session by its key and announces it.
/// KEYS: session. ARGV: member, index prefix, channel.
static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local user = redis.call('HGET', KEYS[1], 'user')
local n = redis.call('DEL', KEYS[1])
if user then redis.call('ZREM', ARGV[2] .. user, ARGV[1]) end
redis.call('PUBLISH', ARGV[3], 's:' .. ARGV[1])
return n
",
    )
});

/// Ends one of a user's sessions, if it is theirs.
/// KEYS: index. ARGV: member, session prefix, channel.
static END_LISTED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local n = redis.call('DEL', ARGV[2] .. ARGV[1])
redis.call('PUBLISH', ARGV[3], 's:' .. ARGV[1])
return n
",
    )
});

/// Ends every session of a user, or those not made with the credentials in ARGV[3].
/// KEYS: index. ARGV: session prefix, channel, credentials to keep or ''.
static END_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local k = ARGV[1] .. m
  if ARGV[3] == '' or redis.call('HGET', k, 'cred') ~= ARGV[3] then
    n = n + redis.call('DEL', k)
    redis.call('ZREM', KEYS[1], m)
    redis.call('PUBLISH', ARGV[2], 's:' .. m)
  end
end
return n
",
    )
});

/// A user's newest sessions (at most ARGV[2]): key, created, seen, client, browser, cred, six
/// values each. Keys whose session has gone (idled out) are dropped from the index on the way.
/// KEYS: index. ARGV: session prefix, how many.
static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1, 'REV')) do
  local v = redis.call('HMGET', ARGV[1] .. m, 'created', 'seen', 'client', 'browser', 'cred')
  if v[1] then
    out[#out + 1] = m
    for i = 1, 5 do out[#out + 1] = v[i] or '' end
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
return out
",
    )
});

/// How often the invalidation channel is checked with a PING: a connection that went silent
/// (a host gone without a reset) is noticed within this and `redis.timeout`.
const HEARTBEAT: Duration = Duration::from_secs(1);

pub struct RedisStore {
    link: Arc<RedisLink>,
    keys: SessionKeys,
    names: Arc<UserNames>,
    cache: Arc<Cache>,
    idle_ms: u64,
    absolute_ms: u64,
    touch_ms: u64,
    session_prefix: String,
    index_prefix: String,
    channel: String,
}

/// One of a user's sessions as Redis holds it.
pub struct Listed {
    pub key: SessionKey,
    pub credentials: u32,
    pub started: SystemTime,
    pub last_seen: SystemTime,
    pub client: Option<IpAddr>,
    /// As the page prints it.
    pub browser: String,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn whole_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisStore {
    pub fn new(
        link: Arc<RedisLink>,
        keys: SessionKeys,
        names: Arc<UserNames>,
        idle: Duration,
        absolute: Duration,
        touch_interval: Duration,
        tunnels: Arc<Tunnels>,
    ) -> RedisStore {
        let prefix = &link.prefix;
        let store = RedisStore {
            session_prefix: format!("{prefix}session:"),
            index_prefix: format!("{prefix}user:"),
            channel: format!("{prefix}ended"),
            cache: Arc::new(Cache::default()),
            idle_ms: whole_ms(idle),
            absolute_ms: whole_ms(absolute),
            touch_ms: whole_ms(touch_interval),
            keys,
            names,
            link,
        };
        store.link.spawn(follow_invalidations(
            store.link.master(),
            store.cache.clone(),
            tunnels,
            store.channel.clone(),
            store.link.timeout(),
            store.link.display.clone(),
        ));
        store
    }

    /// The outside name of a session (see `keys`).
    pub fn key_of(&self, id: &SessionId) -> SessionKey {
        self.keys.of(id)
    }

    fn session_key(&self, key: &SessionKey) -> String {
        format!("{}{}", self.session_prefix, key.to_hex())
    }

    fn index_key(&self, user: &str) -> String {
        format!("{}{user}", self.index_prefix)
    }

    fn expired(&self, created_ms: u64, seen_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(seen_ms) >= self.idle_ms
            || now_ms.saturating_sub(created_ms) >= self.absolute_ms
    }

    /// When a session used at `now_ms` ends if nothing touches it again.
    fn expire_at(&self, created_ms: u64, now_ms: u64) -> u64 {
        created_ms
            .saturating_add(self.absolute_ms)
            .min(now_ms.saturating_add(self.idle_ms))
    }

    /// A new session of the user `name`, made with `credentials`; a provider user's `profile`
    /// is kept with it (and sealed with it), so that every replica knows who they are.
    pub async fn create(
        &self,
        name: &str,
        credentials: u32,
        profile: Option<&Profile>,
        meta: &SessionMeta,
    ) -> Result<SessionId, StoreError> {
        let user = user_field(name, profile);
        fail::fail_point!("session-create", |_| Err(StoreError::Unavailable));
        loop {
            let id = SessionId::generate();
            let key = self.keys.of(&id);
            let now = unix_ms();
            let mut call = CREATE.prepare_invoke();
            call.key(self.session_key(&key))
                .key(self.index_key(name))
                .arg(&user)
                .arg(credentials)
                .arg(now)
                .arg(meta.client.to_string())
                .arg(meta.browser.to_string())
                .arg(self.expire_at(now, now))
                .arg(key.to_hex())
                .arg(now.saturating_add(self.absolute_ms))
                .arg(self.keys.seal(&key, &user, credentials, now).to_hex());
            let created: i64 = self
                .link
                .run("creating a session", move |mut conn| async move {
                    call.invoke_async(&mut conn).await
                })
                .await?;
            // A collision of 256 random bits will not happen, but never overwrite a session.
            if created == 1 {
                return Ok(id);
            }
        }
    }

    /// The owner of a live session. Redis is asked unless the replica cache has just read it;
    /// "last seen" is written back once `session.touch_interval` has passed since the last
    /// write. A session of a user this replica's config does not know is not ended (another
    /// replica may have a newer config); it is refused here.
    pub async fn touch(&self, id: &SessionId) -> Result<Option<Owner>, StoreError> {
        fail::fail_point!("session-touch", |_| Err(StoreError::Unavailable));
        Ok(self.read(id, true).await?.map(|(owner, _)| owner))
    }

    /// The owner of a live session and when it started, without writing "last seen" back.
    pub async fn peek(&self, id: &SessionId) -> Result<Option<(Owner, SystemTime)>, StoreError> {
        Ok(self
            .read(id, false)
            .await?
            .map(|(owner, created)| (owner, at(created))))
    }

    /// [`touch`](Self::touch) (`write_back`) or [`peek`](Self::peek): the owner and the start
    /// in Unix ms.
    async fn read(
        &self,
        id: &SessionId,
        write_back: bool,
    ) -> Result<Option<(Owner, u64)>, StoreError> {
        let now = unix_ms();
        if let Some(e) = self.cache.get(id, now)
            && !self.expired(e.created_ms, e.seen_ms, now)
        {
            return Ok(Some((e.owner, e.created_ms)));
        }
        let generation = self.cache.generation();
        let key = self.keys.of(id);
        let session = self.session_key(&key);
        let read = session.clone();
        type Fields = (
            Option<String>,
            Option<u32>,
            Option<u64>,
            Option<u64>,
            Option<String>,
        );
        let fields: Fields = self
            .link
            .run("reading a session", move |mut conn| async move {
                redis::cmd("HMGET")
                    .arg(&read)
                    .arg(&["user", "cred", "created", "seen", "seal"])
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let (Some(user), Some(credentials), Some(created_ms), Some(mut seen_ms), Some(seal)) =
            fields
        else {
            return Ok(None);
        };
        if !self
            .keys
            .seal_holds(&seal, &key, &user, credentials, created_ms)
        {
            // Written by someone without the secret: refused, and left for an operator to see.
            self.link
                .log_failure("checking a session", "a session in Redis has a broken seal (someone changed it without the secret); refused");
            return Ok(None);
        }
        if self.expired(created_ms, seen_ms, now) {
            return Ok(None);
        }
        let Some((user, uid)) = self.user_of(&user) else {
            return Ok(None);
        };
        if write_back && now.saturating_sub(seen_ms) >= self.touch_ms {
            if !self.touch_at(session, &user, created_ms, now).await? {
                return Ok(None);
            }
            seen_ms = now;
        }

        let owner = Owner {
            user: uid,
            credentials,
        };
        self.cache.insert(
            *id,
            Entry {
                owner,
                user: user.into(),
                key,
                fetched_ms: now,
                created_ms,
                seen_ms,
                refreshing: std::sync::atomic::AtomicBool::new(false),
            },
            generation,
        );
        Ok(Some((owner, created_ms)))
    }

    /// The name (or a provider user's key) and id of a session's `user` field; a provider
    /// user's profile in it is made known here. `None`: a name this replica's config does not
    /// know (another replica may have a newer config), or an unreadable profile.
    fn user_of(&self, field: &str) -> Option<(String, UserId)> {
        match field.split_once(PROFILE_SEPARATOR) {
            None => Some((field.to_string(), self.names.get(field)?)),
            Some((key, profile)) => {
                let profile = serde_json::from_str::<Profile>(profile).ok()?;
                Some((key.to_string(), self.names.intern_profile(key, profile)))
            }
        }
    }

    /// Writes "last seen" (`now`) back to the session stored at `session`, of `user`, started
    /// at `created_ms`; false if it has ended meanwhile.
    async fn touch_at(
        &self,
        session: String,
        user: &str,
        created_ms: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut call = TOUCH.prepare_invoke();
        call.key(session)
            .key(self.index_key(user))
            .arg(now)
            .arg(self.expire_at(created_ms, now));
        let alive: i64 = self
            .link
            .run("touching a session", move |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(alive != 0)
    }

    /// Ends a session; true if it existed. Refused here at once, on other replicas as soon as
    /// they hear of it.
    pub async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        fail::fail_point!("session-remove", |_| Err(StoreError::Unavailable));
        self.cache.remove(id);
        let key = self.keys.of(id);
        let mut call = END.prepare_invoke();
        call.key(self.session_key(&key))
            .arg(key.to_hex())
            .arg(&self.index_prefix)
            .arg(&self.channel);
        let ended: i64 = self
            .link
            .run("ending a session", move |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        // Again: a request that read the session before it ended may have cached it.
        self.cache.remove(id);
        Ok(ended > 0)
    }

    /// Ends `user`'s session named `key` on their sessions page; false if it is not theirs or
    /// has already ended.
    pub async fn end_listed(&self, user: &str, key: &SessionKey) -> Result<bool, StoreError> {
        let mut call = END_LISTED.prepare_invoke();
        call.key(self.index_key(user))
            .arg(key.to_hex())
            .arg(&self.session_prefix)
            .arg(&self.channel);
        let ended: i64 = self
            .link
            .run("ending a listed session", move |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        self.cache.ended(key);
        Ok(ended > 0)
    }

    /// Ends every session of `user`, or (with `keep`) those not made with those credentials;
    /// how many.
    pub async fn end_user(&self, user: &str, keep: Option<u32>) -> Result<usize, StoreError> {
        let mut call = END_USER.prepare_invoke();
        call.key(self.index_key(user))
            .arg(&self.session_prefix)
            .arg(&self.channel)
            .arg(keep.map_or(String::new(), |c| c.to_string()));
        let ended: i64 = self
            .link
            .run("ending a user's sessions", move |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        if keep.is_none() {
            self.cache.user_ended(user);
        }
        Ok(usize::try_from(ended).unwrap_or(0))
    }

    /// The newest live sessions of `user` (at most `newest`), oldest first.
    pub async fn of_user(&self, user: &str, newest: usize) -> Result<Vec<Listed>, StoreError> {
        let mut call = LIST.prepare_invoke();
        call.key(self.index_key(user))
            .arg(&self.session_prefix)
            .arg(newest);
        let flat: Vec<String> = self
            .link
            .run("listing a user's sessions", move |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        let now = unix_ms();
        let mut listed: Vec<Listed> = flat
            .chunks_exact(6)
            .filter_map(|v| {
                let key = SessionKey::from_hex(&v[0])?;
                let created: u64 = v[1].parse().ok()?;
                let seen: u64 = v[2].parse().ok()?;
                if self.expired(created, seen, now) {
                    return None;
                }
                Some(Listed {
                    key,
                    credentials: v[5].parse().ok()?,
                    started: at(created),
                    last_seen: at(seen),
                    client: v[3].parse().ok(),
                    browser: v[4].clone(),
                })
            })
            .collect();
        listed.sort_by_key(|l| l.started);
        Ok(listed)
    }

    /// Whether Redis answers.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.link.ping().await
    }

    /// Sessions this replica holds copies of.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    pub fn link(&self) -> &Arc<RedisLink> {
        &self.link
    }
}

/// Keeps the replica cache in step with sessions ended anywhere: subscribes to the channel,
/// drops what each message names, and drops the whole cache whenever the subscription is lost
/// or made again (messages may have been missed in between). With sentinels it moves to each
/// new master, as a lost subscription. Runs until the link's runtime stops.
async fn follow_invalidations(
    master: Arc<MasterSlot>,
    cache: Arc<Cache>,
    tunnels: Arc<Tunnels>,
    channel: String,
    timeout: Duration,
    server: String,
) {
    let mut was_lost = false;
    let mut changes = master.changes();
    loop {
        cache.set_live(false);
        changes.mark_unchanged();
        let Some(current) = master.current() else {
            let _ = tokio::time::timeout(Duration::from_millis(250), changes.changed()).await;
            continue;
        };
        let subscribed = tokio::time::timeout(timeout.max(Duration::from_secs(1)), async {
            let mut pubsub = current.pubsub.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let Ok(Ok(pubsub)) = subscribed else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        cache.set_live(true);
        if was_lost {
            tracing::info!("redis {server}: invalidation channel subscribed again");
        }
        let (mut sink, mut stream) = pubsub.split();
        let mut beat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => apply(&cache, &tunnels, msg.get_payload_bytes()),
                    None => break,
                },
                _ = changes.changed() => break,
                _ = beat.tick() => {
                    cache.prune(unix_ms());
                    let pong = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        cache.set_live(false);
        was_lost = true;
        tracing::warn!(
            "redis {server}: invalidation channel lost; this replica reads every session from Redis until it is back"
        );
    }
}

/// One message from the channel: `s:<key>` ended one session, here too: its cached copy goes
/// and its open tunnels close.
fn apply(cache: &Cache, tunnels: &Tunnels, payload: &[u8]) {
    let key = std::str::from_utf8(payload)
        .ok()
        .and_then(|p| p.strip_prefix("s:"))
        .and_then(SessionKey::from_hex);
    match key {
        Some(key) => {
            cache.ended(&key);
            tunnels.session_ended(&key);
        }
        // Not ours to read: be safe and forget everything.
        None => cache.drop_all(),
    }
}
