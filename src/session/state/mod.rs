//! `session.state_dir`: the memory store, also kept on disk so that sessions survive a
//! restart. The request path is the memory store's; the disk gets an append-only log of what
//! changed (written by one thread, see `writer`) and, now and then, a snapshot of everything
//! that replaces the logs (see `keeper`). docs/ARCHITECTURE.md says why this design and not
//! an embedded database.
//!
//! Nothing on disk is a credential: a session is named there by its keyed hash
//! (`SessionKeys::of`), which cannot be turned back into the id its cookie carries. Sessions
//! read back at start are kept under that hash (`restored`) until their first request, which
//! moves them under their id (`live`): the request path keeps its one lookup by id, and pays
//! one HMAC once per restored session.

pub mod dir;
mod inner;
mod keeper;
pub mod load;
pub mod record;
mod writer;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

pub use dir::{StateDir, StateError};
use inner::Inner;
use load::{UsedCode, ms_of, started_of};
pub use record::PendingRecord;
use record::{Record, UserEntry};
use writer::{Health, Msg};

use super::identity::{Owner, Profile, UserId, UserNames};
use super::keys::{SessionKey, SessionKeys};
use super::memory::{MemoryStore, SessionId, SessionMeta, StoreError, StoredTimes};

/// The memory store with its sessions also on disk. Clones share the store.
#[derive(Clone)]
pub struct DurableStore {
    inner: Arc<Inner>,
}

/// What opening a state directory needs besides the directory.
pub struct Opening {
    pub live: Arc<MemoryStore<SessionId>>,
    pub keys: SessionKeys,
    pub names: Arc<UserNames>,
    pub idle: Duration,
    pub absolute: Duration,
    pub touch_interval: Duration,
    pub sweep_interval: Duration,
    pub write_errors: Counter,
    pub degraded: Gauge,
}

impl DurableStore {
    /// Reads the sessions `dir` holds, writes them out as a fresh snapshot (dropping what
    /// expired, and any damaged end of a file, which is logged), and starts the writer and the
    /// keeper. A snapshot that cannot be written leaves the store degraded, not stopped.
    pub fn open(dir: StateDir, o: Opening) -> Result<DurableStore, StateError> {
        let dir = Arc::new(dir);
        let restored = Arc::new(MemoryStore::new(o.idle, o.absolute));
        let started = std::time::Instant::now();
        let loaded = load::load(&dir, &restored, &o.names)?;
        for line in &loaded.dropped {
            tracing::warn!("session.state_dir: {line}; the sessions before it are kept");
        }
        tracing::info!(
            sessions = restored.len(),
            files = loaded.files,
            bytes = loaded.bytes,
            ms = started.elapsed().as_millis() as u64,
            "session.state_dir: {} sessions read back from {}",
            restored.len(),
            dir.path().display()
        );
        let health = Arc::new(Health::new(o.write_errors, o.degraded));
        let next_log = dir.logs()?.last().map_or(1, |n| n + 1);
        let writer =
            writer::spawn(dir.clone(), health.clone(), next_log).map_err(|e| StateError::Dir {
                dir: dir.path().to_path_buf(),
                why: format!("cannot start the writer thread: {e}"),
            })?;
        MemoryStore::spawn_sweeper(&restored, o.sweep_interval);
        let inner = Arc::new(Inner {
            live: o.live,
            restored,
            keys: o.keys,
            names: o.names,
            writer,
            health,
            dir,
            touch_interval: o.touch_interval,
            used_codes: std::sync::Mutex::new(loaded.used_codes),
            pending: std::sync::Mutex::new(loaded.pending),
            user_data: std::sync::Mutex::new(loaded.user_data),
        });
        keeper::compact(&inner);
        keeper::spawn(Arc::downgrade(&inner), o.touch_interval);
        Ok(DurableStore { inner })
    }

    fn append(&self, records: &[Record]) {
        let mut bytes = Vec::new();
        for r in records {
            r.encode(&mut bytes);
        }
        // The writer stops only when the store is dropped.
        let _ = self.inner.writer.send(Msg::Append(bytes));
    }

    /// Waits until everything appended so far is on disk (or cannot be: degraded).
    async fn synced(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.inner.writer.send(Msg::Sync(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    pub fn create(
        &self,
        owner: Owner,
        name: &str,
        profile: Option<&Profile>,
        meta: &SessionMeta,
    ) -> Result<SessionId, StoreError> {
        let id = self.inner.live.create(owner, meta)?;
        let now = SystemTime::now();
        let times = StoredTimes {
            started: now,
            last_seen: now,
            client: meta.client,
            browser: meta.browser,
        };
        let create = Record::Create {
            key: self.inner.keys.of(&id),
            user: name.to_string(),
            credentials: owner.credentials,
            started: started_of(&times),
        };
        match profile {
            Some(p) => self.append(&[
                Record::Profile {
                    user: name.to_string(),
                    json: serde_json::to_string(p).expect("a profile serialises"),
                },
                create,
            ]),
            None => self.append(&[create]),
        }
        Ok(id)
    }

    /// Moves a session read back from disk under its id, on its first use; whether it did.
    fn restore(&self, id: &SessionId) -> bool {
        let key = self.inner.keys.of(id);
        self.inner.restored.move_to(&key, &self.inner.live, *id)
    }

    pub fn touch(&self, id: &SessionId) -> Result<Option<Owner>, StoreError> {
        match self.inner.live.touch(id)? {
            Some(owner) => Ok(Some(owner)),
            None if self.restore(id) => self.inner.live.touch(id),
            None => Ok(None),
        }
    }

    pub fn peek(&self, id: &SessionId) -> Option<(Owner, SystemTime)> {
        self.inner.live.peek(id).or_else(|| {
            self.restore(id);
            self.inner.live.peek(id)
        })
    }

    /// Ends a session, on disk before this returns; true if it existed.
    pub async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        let key = self.inner.keys.of(id);
        let found = self.inner.live.remove(id)? | self.inner.restored.remove(&key)?;
        if found {
            self.append(&[Record::End { key }]);
            self.synced().await;
        }
        Ok(found)
    }

    /// Ends every session whose owner `doomed` picks, on disk before this returns; how many.
    pub async fn end_where(&self, doomed: impl Fn(Owner) -> bool) -> usize {
        let ended: Vec<SessionKey> = self
            .inner
            .live
            .end_where_keys(&doomed)
            .iter()
            .map(|id| self.inner.keys.of(id))
            .chain(self.inner.restored.end_where_keys(&doomed))
            .collect();
        if !ended.is_empty() {
            let ends: Vec<Record> = ended.iter().map(|&key| Record::End { key }).collect();
            self.append(&ends);
            self.synced().await;
        }
        ended.len()
    }

    /// The live sessions of `user`, each under its outside name, oldest first.
    pub fn of_user(&self, user: UserId) -> Vec<(SessionKey, Owner, StoredTimes)> {
        let mut found: Vec<_> = self
            .inner
            .live
            .of_user(user)
            .into_iter()
            .map(|(id, owner, t)| (self.inner.keys.of(&id), owner, t))
            .chain(self.inner.restored.of_user(user))
            .collect();
        found.sort_by_key(|(_, _, t)| t.started);
        found
    }

    /// Ends the session of `user` named `handle`; false if they have none by that name.
    pub async fn end_listed(&self, user: UserId, handle: &SessionKey) -> Result<bool, StoreError> {
        let live = self
            .inner
            .live
            .of_user(user)
            .into_iter()
            .find(|(id, _, _)| self.inner.keys.of(id) == *handle);
        let found = match live {
            Some((id, _, _)) => self.inner.live.remove(&id)?,
            None => {
                let mine = self
                    .inner
                    .restored
                    .of_user(user)
                    .iter()
                    .any(|(k, _, _)| k == handle);
                mine && self.inner.restored.remove(handle)?
            }
        };
        if found {
            self.append(&[Record::End { key: *handle }]);
            self.synced().await;
        }
        Ok(found)
    }

    /// Records that `user` used the code of time `step`, kept until `until`.
    pub fn code_used(&self, user: &str, step: u64, until: SystemTime) {
        let code = UsedCode {
            user: user.to_string(),
            step,
            until,
        };
        self.append(&[Record::TotpUsed {
            user: code.user.clone(),
            step,
            until_ms: ms_of(until),
        }]);
        let mut codes = self
            .inner
            .used_codes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        codes.push(code);
    }

    /// The codes read back at start that are still remembered.
    pub fn used_codes(&self) -> Vec<UsedCode> {
        let now = SystemTime::now();
        let codes = self
            .inner
            .used_codes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        codes.iter().filter(|c| c.until > now).cloned().collect()
    }

    /// The name a pending sign-in goes by on disk (the cookie carries its id).
    fn pending_key(&self, id: &SessionId) -> SessionKey {
        self.inner.keys.name(b'p', id.as_bytes())
    }

    /// Keeps pending sign-in `id` as `pending` says (made, or a wrong code counted).
    pub fn pending_put(&self, id: &SessionId, pending: PendingRecord) {
        let key = self.pending_key(id);
        let mut all = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(key, pending.clone());
        drop(all);
        self.append(&[Record::Pending { key, pending }]);
    }

    /// Pending sign-in `id` ended (signed in, or too many wrong codes).
    pub fn pending_end(&self, id: &SessionId) {
        let key = self.pending_key(id);
        let mut all = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if all.remove(&key).is_some() {
            drop(all);
            self.append(&[Record::PendingEnd { key }]);
        }
    }

    /// Pending sign-in `id` as the disk has it, if it is still on: one started before a
    /// restart.
    pub fn pending_get(&self, id: &SessionId) -> Option<PendingRecord> {
        let key = self.pending_key(id);
        let now = ms_of(SystemTime::now());
        let all = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        all.get(&key).filter(|p| p.expires_ms > now).cloned()
    }

    /// `user`'s own data, if any is kept.
    pub fn user_data(&self, user: &str) -> Option<UserEntry> {
        let all = self
            .inner
            .user_data
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        all.get(user).cloned()
    }

    /// The user whose data carries `handle`.
    pub fn user_of(&self, handle: &[u8; 16]) -> Option<String> {
        let all = self
            .inner
            .user_data
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        all.iter()
            .find(|(_, e)| e.handle == *handle)
            .map(|(user, _)| user.clone())
    }

    /// Every user with data kept.
    pub fn user_data_users(&self) -> Vec<String> {
        let all = self
            .inner
            .user_data
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        all.keys().cloned().collect()
    }

    /// Replaces `user`'s data with what `change` makes of it (`None`: delete it), as one step
    /// against other changes in this process; on disk before it returns (or degraded).
    pub async fn change_user_data<T>(
        &self,
        user: &str,
        change: impl FnOnce(Option<&UserEntry>) -> (Option<UserEntry>, T),
    ) -> T {
        let (record, out) = self.change_in_memory(user, change);
        if let Some(record) = record {
            self.append(&[record]);
            self.synced().await;
        }
        out
    }

    /// Deletes `user`'s data without waiting for the disk (for the start, which has no async
    /// runtime to wait in); whether there was any.
    pub fn forget_user_data(&self, user: &str) -> bool {
        let (record, ()) = self.change_in_memory(user, |_| (None, ()));
        let forgotten = record.is_some();
        if let Some(record) = record {
            self.append(&[record]);
        }
        forgotten
    }

    /// The in-memory half of [`Self::change_user_data`]: the record to write, if anything
    /// changed.
    fn change_in_memory<T>(
        &self,
        user: &str,
        change: impl FnOnce(Option<&UserEntry>) -> (Option<UserEntry>, T),
    ) -> (Option<Record>, T) {
        let mut all = self
            .inner
            .user_data
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (new, out) = change(all.get(user));
        if new.as_ref() == all.get(user) {
            return (None, out);
        }
        let record = match new {
            Some(entry) => {
                let record = Record::UserData {
                    user: user.to_string(),
                    handle: entry.handle,
                    json: entry.json.clone(),
                };
                all.insert(user.to_string(), entry);
                Some(record)
            }
            None => all.remove(user).map(|_| Record::UserDataEnd {
                user: user.to_string(),
            }),
        };
        (record, out)
    }

    /// Why the disk is not being written, if it is not.
    pub fn degraded(&self) -> Option<String> {
        self.inner.health.degraded()
    }

    /// The session's outside name, as on disk and on the sessions page.
    pub fn key_of(&self, id: &SessionId) -> SessionKey {
        self.inner.keys.of(id)
    }

    pub fn live(&self) -> &MemoryStore<SessionId> {
        &self.inner.live
    }

    /// Sessions in memory, read back ones not used since included.
    pub fn len(&self) -> usize {
        self.inner.live.len() + self.inner.restored.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Syncs everything written and stops the writer (a clean shutdown). A degraded store
    /// first tries once more to write a whole snapshot, so that what happened while the disk
    /// failed (logouts included) is not lost if it takes writes again by now.
    pub fn close(&self) {
        // The keeper's last pass was at most one interval (and a tick) ago: what was used
        // since goes out now, so a clean restart keeps idle times exact.
        let since = SystemTime::now()
            .checked_sub(2 * self.inner.touch_interval)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        keeper::write_touches(&self.inner, since);
        if let Some(why) = self.inner.health.degraded() {
            keeper::compact(&self.inner);
            if self.inner.health.degraded().is_some() {
                tracing::error!(
                    "session.state_dir: stopping while it cannot be written ({why}): sessions made, and sessions ended, since the disk failed are not on disk"
                );
            }
        }
        keeper::close(&self.inner.writer);
    }
}

#[cfg(test)]
mod tests;
