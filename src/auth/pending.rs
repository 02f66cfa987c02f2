//! Pending sign-ins: the password was right, the code from the authenticator app is awaited.
//! A pending sign-in is never a session: it names a user and where to go afterwards, lives
//! two minutes, survives a few wrong codes, and is consumed by the right one. Also the record
//! of codes already used, so that a code is accepted once.
//!
//! In memory, both are small maps with expiry. With the Redis store they live in Redis under
//! the key prefix, so the code can be typed on another replica than the password:
//! - `pending:<key>`: a hash with the user, the credentials fingerprint, the return address,
//!   the wrong codes so far and a seal (an HMAC with the secret) over the user and the
//!   credentials; TTL the pending lifetime. `<key>` is one-way from the id in the cookie.
//! - `totp:used:<user key>:<step>`: a code's time step, once used; TTL the skew window.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use redis::Script;

use crate::credentials::totp;
use crate::session::redis_link::RedisLink;
use crate::session::state::{DurableStore, PendingRecord, load};
use crate::session::{SessionId, SessionKeys, StoreError};

/// Wrong codes a pending sign-in survives; the last of them ends it.
pub const MAX_WRONG_CODES: u32 = 5;

/// How long a used code's step is remembered: past the last moment the verifier could accept
/// it again (the step after it ends), with a margin for clocks.
const USED_FOR: Duration = Duration::from_secs(totp::STEP * (2 * totp::SKEW as u64 + 2));

/// A pending sign-in as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingLogin {
    pub user: String,
    /// The password the user signed in with, by fingerprint: a password changed in between
    /// ends the pending sign-in.
    pub credentials: u32,
    /// Where to go once signed in (already checked against the redirect rules).
    pub rd: String,
}

/// What a wrong code did to its pending sign-in.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterWrong {
    /// It lives on, with this many wrong codes so far.
    Alive(u32),
    /// That was the last wrong code allowed (or it had already ended): it is gone.
    Ended,
}

pub enum Pending {
    Memory(MemoryPending),
    Redis(RedisPending),
}

impl Pending {
    pub fn memory(lifetime: Duration) -> Pending {
        Pending::Memory(MemoryPending {
            lifetime,
            logins: Mutex::default(),
            used: Mutex::default(),
            disk: None,
        })
    }

    /// In memory, and also kept in `session.state_dir`: a restart neither ends a pending
    /// sign-in nor lets a used code be used a second time.
    pub fn durable(lifetime: Duration, disk: DurableStore) -> Pending {
        let now = (Instant::now(), SystemTime::now());
        let used = disk
            .used_codes()
            .into_iter()
            .map(|c| {
                let left = c.until.duration_since(now.1).unwrap_or_default();
                ((c.user, c.step), now.0 + left)
            })
            .collect();
        Pending::Memory(MemoryPending {
            lifetime,
            logins: Mutex::default(),
            used: Mutex::new(used),
            disk: Some(disk),
        })
    }

    pub fn redis(link: Arc<RedisLink>, keys: SessionKeys, lifetime: Duration) -> Pending {
        Pending::Redis(RedisPending {
            pending_prefix: format!("{}pending:", link.prefix),
            used_prefix: format!("{}totp:used:", link.prefix),
            link,
            keys,
            lifetime_ms: u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Starts a pending sign-in; its id goes into the signed cookie.
    pub async fn create(&self, login: PendingLogin) -> Result<SessionId, StoreError> {
        match self {
            Pending::Memory(m) => Ok(m.create(login)),
            Pending::Redis(r) => r.create(login).await,
        }
    }

    /// The pending sign-in `id` names, if it is still on.
    pub async fn get(&self, id: &SessionId) -> Result<Option<PendingLogin>, StoreError> {
        match self {
            Pending::Memory(m) => Ok(m.get(id)),
            Pending::Redis(r) => r.get(id).await,
        }
    }

    /// Counts a wrong code against the pending sign-in.
    pub async fn wrong_code(&self, id: &SessionId) -> Result<AfterWrong, StoreError> {
        match self {
            Pending::Memory(m) => Ok(m.wrong_code(id)),
            Pending::Redis(r) => r.wrong_code(id).await,
        }
    }

    /// Ends the pending sign-in and returns it, if it was still on: exactly one caller gets it.
    pub async fn take(&self, id: &SessionId) -> Result<Option<PendingLogin>, StoreError> {
        match self {
            Pending::Memory(m) => Ok(m.take(id)),
            Pending::Redis(r) => r.take(id).await,
        }
    }

    /// Records that `user`'s code for time step `step` was used; false if it already was.
    pub async fn use_step(&self, user: &str, step: u64) -> Result<bool, StoreError> {
        match self {
            Pending::Memory(m) => Ok(m.use_step(user, step)),
            Pending::Redis(r) => r.use_step(user, step).await,
        }
    }
}

struct Entry {
    login: PendingLogin,
    wrong: u32,
    expires: Instant,
}

pub struct MemoryPending {
    lifetime: Duration,
    logins: Mutex<HashMap<SessionId, Entry>>,
    used: Mutex<HashMap<(String, u64), Instant>>,
    /// Where used codes are also written, with `session.state_dir`.
    disk: Option<DurableStore>,
}

impl MemoryPending {
    fn create(&self, login: PendingLogin) -> SessionId {
        let now = Instant::now();
        let id = SessionId::generate();
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        // Only a right password makes an entry, so the map stays small; expired ones go here.
        logins.retain(|_, e| e.expires > now);
        let entry = Entry {
            login,
            wrong: 0,
            expires: now + self.lifetime,
        };
        self.keep(&id, &entry);
        logins.insert(id, entry);
        id
    }

    fn get(&self, id: &SessionId) -> Option<PendingLogin> {
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        self.entry(&mut logins, id)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.login.clone())
    }

    fn wrong_code(&self, id: &SessionId) -> AfterWrong {
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = self
            .entry(&mut logins, id)
            .filter(|e| e.expires > Instant::now())
        else {
            self.end(&mut logins, id);
            return AfterWrong::Ended;
        };
        entry.wrong += 1;
        if entry.wrong >= MAX_WRONG_CODES {
            self.end(&mut logins, id);
            return AfterWrong::Ended;
        }
        let wrong = entry.wrong;
        self.keep(id, entry);
        AfterWrong::Alive(wrong)
    }

    fn take(&self, id: &SessionId) -> Option<PendingLogin> {
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        self.entry(&mut logins, id)?;
        self.end(&mut logins, id)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.login)
    }

    /// `id`'s entry, brought back from `session.state_dir` if it was made before a restart.
    fn entry<'a>(
        &self,
        logins: &'a mut HashMap<SessionId, Entry>,
        id: &SessionId,
    ) -> Option<&'a mut Entry> {
        if !logins.contains_key(id) {
            let kept = self.disk.as_ref()?.pending_get(id)?;
            let left = load::at_ms(kept.expires_ms)
                .duration_since(SystemTime::now())
                .ok()?;
            let login = PendingLogin {
                user: kept.user,
                credentials: kept.credentials,
                rd: kept.rd,
            };
            let expires = Instant::now() + left;
            logins.insert(
                *id,
                Entry {
                    login,
                    wrong: kept.wrong,
                    expires,
                },
            );
        }
        logins.get_mut(id)
    }

    /// Writes `entry` to `session.state_dir`, if there is one.
    fn keep(&self, id: &SessionId, entry: &Entry) {
        if let Some(disk) = &self.disk {
            let left = entry.expires.saturating_duration_since(Instant::now());
            disk.pending_put(
                id,
                PendingRecord {
                    user: entry.login.user.clone(),
                    credentials: entry.login.credentials,
                    rd: entry.login.rd.clone(),
                    wrong: entry.wrong,
                    expires_ms: load::ms_of(SystemTime::now() + left),
                },
            );
        }
    }

    /// Ends `id`'s pending sign-in, on disk too.
    fn end(&self, logins: &mut HashMap<SessionId, Entry>, id: &SessionId) -> Option<Entry> {
        if let Some(disk) = &self.disk {
            disk.pending_end(id);
        }
        logins.remove(id)
    }

    fn use_step(&self, user: &str, step: u64) -> bool {
        let now = Instant::now();
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, until| *until > now);
        let key = (user.to_string(), step);
        if used.contains_key(&key) {
            return false;
        }
        used.insert(key, now + USED_FOR);
        if let Some(disk) = &self.disk {
            disk.code_used(user, step, SystemTime::now() + USED_FOR);
        }
        true
    }
}

/// Creates a pending sign-in unless the key exists. KEYS: pending. ARGV: user, cred, rd,
/// seal, lifetime ms.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'cred', ARGV[2], 'rd', ARGV[3], 'seal', ARGV[4], 'wrong', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
",
    )
});

/// Counts a wrong code; at ARGV[1] of them the pending sign-in ends. The count, or -1 when it
/// had already ended. KEYS: pending.
static WRONG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = redis.call('HINCRBY', KEYS[1], 'wrong', 1)
if n >= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) end
return n
",
    )
});

/// Reads and ends a pending sign-in in one step. KEYS: pending.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HMGET', KEYS[1], 'user', 'cred', 'rd', 'seal')
redis.call('DEL', KEYS[1])
return v
",
    )
});

type Fields = (Option<String>, Option<u32>, Option<String>, Option<String>);

pub struct RedisPending {
    link: Arc<RedisLink>,
    keys: SessionKeys,
    lifetime_ms: u64,
    pending_prefix: String,
    used_prefix: String,
}

impl RedisPending {
    fn pending_key(&self, id: &SessionId) -> String {
        let name = self.keys.name(b'p', id.as_bytes());
        format!("{}{}", self.pending_prefix, name.to_hex())
    }

    /// The seal over who a pending sign-in is for: someone who can write to Redis but has no
    /// secret cannot move one to another user.
    fn seal(&self, key: &str, user: &str, credentials: u32) -> String {
        let mut facts = Vec::with_capacity(key.len() + user.len() + 5);
        facts.extend_from_slice(key.as_bytes());
        facts.push(0);
        facts.extend_from_slice(&credentials.to_be_bytes());
        facts.extend_from_slice(user.as_bytes());
        self.keys.name(b'q', &facts).to_hex()
    }

    fn opened(&self, key: &str, fields: Fields) -> Option<PendingLogin> {
        let (Some(user), Some(credentials), Some(rd), Some(seal)) = fields else {
            return None;
        };
        let expected = self.seal(key, &user, credentials);
        // Not secret data, but compared in constant time all the same.
        let same = expected.len() == seal.len()
            && expected
                .bytes()
                .zip(seal.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            self.link.log_failure(
                "checking a pending sign-in",
                "a pending sign-in in Redis has a broken seal (someone changed it without the secret); refused",
            );
            return None;
        }
        Some(PendingLogin {
            user,
            credentials,
            rd,
        })
    }

    async fn create(&self, login: PendingLogin) -> Result<SessionId, StoreError> {
        loop {
            let id = SessionId::generate();
            let key = self.pending_key(&id);
            let mut call = CREATE.prepare_invoke();
            call.key(&key)
                .arg(&login.user)
                .arg(login.credentials)
                .arg(&login.rd)
                .arg(self.seal(&key, &login.user, login.credentials))
                .arg(self.lifetime_ms);
            let created: i64 = self
                .link
                .run("starting a pending sign-in", move |mut conn| async move {
                    call.invoke_async(&mut conn).await
                })
                .await?;
            if created == 1 {
                return Ok(id);
            }
        }
    }

    async fn get(&self, id: &SessionId) -> Result<Option<PendingLogin>, StoreError> {
        let key = self.pending_key(id);
        let read = key.clone();
        let fields: Fields = self
            .link
            .run("reading a pending sign-in", move |mut conn| async move {
                redis::cmd("HMGET")
                    .arg(&read)
                    .arg(&["user", "cred", "rd", "seal"])
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(self.opened(&key, fields))
    }

    async fn wrong_code(&self, id: &SessionId) -> Result<AfterWrong, StoreError> {
        let mut call = WRONG.prepare_invoke();
        call.key(self.pending_key(id)).arg(MAX_WRONG_CODES);
        let n: i64 = self
            .link
            .run("counting a wrong code", move |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(match u32::try_from(n) {
            Ok(n) if n < MAX_WRONG_CODES => AfterWrong::Alive(n),
            _ => AfterWrong::Ended,
        })
    }

    async fn take(&self, id: &SessionId) -> Result<Option<PendingLogin>, StoreError> {
        let key = self.pending_key(id);
        let mut call = TAKE.prepare_invoke();
        call.key(&key);
        let fields: Fields = self
            .link
            .run("ending a pending sign-in", move |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(self.opened(&key, fields))
    }

    async fn use_step(&self, user: &str, step: u64) -> Result<bool, StoreError> {
        let name = self.keys.name(b't', user.as_bytes());
        let key = format!("{}{}:{step}", self.used_prefix, name.to_hex());
        let ms = u64::try_from(USED_FOR.as_millis()).unwrap_or(u64::MAX);
        let set: Option<String> = self
            .link
            .run("recording a used code", move |mut conn| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> PendingLogin {
        PendingLogin {
            user: "alice".into(),
            credentials: 7,
            rd: "/app".into(),
        }
    }

    #[tokio::test]
    async fn memory_pending_logins_end_after_wrong_codes_or_when_taken() {
        let p = Pending::memory(Duration::from_secs(60));
        let id = p.create(login()).await.unwrap();
        assert_eq!(p.get(&id).await.unwrap(), Some(login()));
        for n in 1..MAX_WRONG_CODES {
            assert_eq!(p.wrong_code(&id).await.unwrap(), AfterWrong::Alive(n));
        }
        assert_eq!(p.wrong_code(&id).await.unwrap(), AfterWrong::Ended);
        assert_eq!(p.get(&id).await.unwrap(), None);

        let id = p.create(login()).await.unwrap();
        assert_eq!(p.take(&id).await.unwrap(), Some(login()));
        assert_eq!(p.take(&id).await.unwrap(), None, "taken once");
    }

    #[tokio::test]
    async fn memory_pending_logins_expire() {
        let p = Pending::memory(Duration::from_millis(20));
        let id = p.create(login()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(p.get(&id).await.unwrap(), None);
        assert_eq!(p.take(&id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_step_is_used_once_per_user() {
        let p = Pending::memory(Duration::from_secs(60));
        assert!(p.use_step("alice", 10).await.unwrap());
        assert!(!p.use_step("alice", 10).await.unwrap());
        assert!(p.use_step("alice", 11).await.unwrap());
        assert!(p.use_step("bob", 10).await.unwrap());
    }
}
