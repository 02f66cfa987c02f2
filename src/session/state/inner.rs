//! What the durable store, its writer and its keeper share: below both the store (`mod.rs`)
//! and the keeper, so that neither imports the other.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::SystemTime;

use super::dir::StateDir;
use super::load::{UsedCode, ms_of};
use super::record::{PendingRecord, Record, UserEntry};
use super::writer::{Health, Msg};
use crate::session::identity::UserNames;
use crate::session::keys::{SessionKey, SessionKeys};
use crate::session::memory::{MemoryStore, SessionId};

/// What the store, its writer and its keeper share.
pub struct Inner {
    pub(super) live: Arc<MemoryStore<SessionId>>,
    pub(super) restored: Arc<MemoryStore<SessionKey>>,
    pub(super) keys: SessionKeys,
    pub(super) names: Arc<UserNames>,
    pub(super) writer: Sender<Msg>,
    pub(super) health: Arc<Health>,
    pub(super) dir: Arc<StateDir>,
    /// `session.touch_interval`: how often the keeper writes when sessions were last used.
    pub(super) touch_interval: std::time::Duration,
    /// TOTP codes used, kept so that a restart does not let a code be used twice.
    pub(super) used_codes: std::sync::Mutex<Vec<UsedCode>>,
    /// Every pending sign-in on disk, by keyed hash: what a snapshot writes, and what a
    /// pending sign-in started before a restart is found in.
    pub(super) pending: std::sync::Mutex<HashMap<SessionKey, PendingRecord>>,
    /// Each local user's own data, by name: kept whole in memory (it is small: a few
    /// passkeys per user) and written through.
    pub(super) user_data: std::sync::Mutex<HashMap<String, UserEntry>>,
}

impl Inner {
    pub(super) fn used_codes(&self) -> Vec<Record> {
        let now = SystemTime::now();
        let mut codes = self.used_codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|c| c.until > now);
        codes
            .iter()
            .map(|c| Record::TotpUsed {
                user: c.user.clone(),
                step: c.step,
                until_ms: ms_of(c.until),
            })
            .collect()
    }

    pub(super) fn pending(&self) -> Vec<Record> {
        let now = ms_of(SystemTime::now());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| p.expires_ms > now);
        pending
            .iter()
            .map(|(key, p)| Record::Pending {
                key: *key,
                pending: p.clone(),
            })
            .collect()
    }

    pub(super) fn user_data(&self) -> Vec<Record> {
        let all = self.user_data.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .map(|(user, e)| Record::UserData {
                user: user.clone(),
                handle: e.handle,
                json: e.json.clone(),
            })
            .collect()
    }
}
