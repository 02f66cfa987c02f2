//! Each local user's own data, which must outlive sessions and restarts: their passkeys. Kept
//! where sessions are kept durably, in `session.state_dir` or in Redis; the memory-only store
//! keeps none, and a config that turns passkeys on without one is refused at start.
//!
//! A user's data is one document (JSON, whose meaning is the credentials layer's) and a
//! handle: the random id passkeys carry instead of the user's name, by which a passkey
//! sign-in finds its user. A change replaces the whole document, as one step against other
//! changes (a passkey added while another signs in loses neither).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use redis::Script;

use super::memory::StoreError;
use super::redis_link::RedisLink;
use super::state::DurableStore;
pub use super::state::record::UserEntry;

/// Changes of one user's data tried at most, in Redis, when other replicas keep changing it.
const MAX_TRIES: usize = 8;

/// Replaces a user's data if it is still what was read (compare and set), and keeps the
/// handle index in step.
/// KEYS: data, handles. ARGV: expected ('' none), new ('' delete), old handle, new handle
/// ('' none), user.
static CHANGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 0 end
if ARGV[3] ~= '' then redis.call('HDEL', KEYS[2], ARGV[3]) end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], ARGV[4], ARGV[5]) end
return 1
",
    )
});

/// Clones share the store.
#[derive(Clone)]
pub enum UserData {
    /// The memory-only store: nothing is kept.
    Unkept,
    Durable(DurableStore),
    Redis {
        link: Arc<RedisLink>,
        /// `{redis prefix}userdata:`: each user's data is under it and their name.
        prefix: String,
        /// The hash from hex handle to user name.
        handles: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A user's data as one Redis string: the handle in hex, a newline, the document.
fn encode(entry: &UserEntry) -> String {
    format!("{}\n{}", hex(&entry.handle), entry.json)
}

fn decode(text: &str) -> Option<UserEntry> {
    let (handle, json) = text.split_once('\n')?;
    let mut bytes = [0u8; 16];
    if handle.len() != 32 {
        return None;
    }
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(handle.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(UserEntry {
        handle: bytes,
        json: json.to_string(),
    })
}

impl UserData {
    pub fn redis(link: Arc<RedisLink>) -> UserData {
        UserData::Redis {
            prefix: format!("{}userdata:", link.prefix),
            handles: format!("{}userdata-handles", link.prefix),
            link,
        }
    }

    /// Whether users' data is kept at all.
    pub fn kept(&self) -> bool {
        !matches!(self, UserData::Unkept)
    }

    /// `user`'s data, if any is kept.
    pub async fn get(&self, user: &str) -> Result<Option<UserEntry>, StoreError> {
        match self {
            UserData::Unkept => Ok(None),
            UserData::Durable(d) => Ok(d.user_data(user)),
            UserData::Redis { link, prefix, .. } => {
                let key = format!("{prefix}{user}");
                let text: Option<String> = link
                    .run("reading a user's passkeys", move |mut conn| async move {
                        redis::cmd("GET").arg(&key).query_async(&mut conn).await
                    })
                    .await?;
                Ok(text.as_deref().and_then(decode))
            }
        }
    }

    /// The user whose data carries `handle`.
    pub async fn user_of(&self, handle: &[u8; 16]) -> Result<Option<String>, StoreError> {
        match self {
            UserData::Unkept => Ok(None),
            UserData::Durable(d) => Ok(d.user_of(handle)),
            UserData::Redis { link, handles, .. } => {
                let (handles, field) = (handles.clone(), hex(handle));
                link.run("finding a passkey's user", move |mut conn| async move {
                    redis::cmd("HGET")
                        .arg(&handles)
                        .arg(&field)
                        .query_async(&mut conn)
                        .await
                })
                .await
            }
        }
    }

    /// Every user with data kept.
    pub async fn users(&self) -> Result<Vec<String>, StoreError> {
        match self {
            UserData::Unkept => Ok(Vec::new()),
            UserData::Durable(d) => Ok(d.user_data_users()),
            UserData::Redis { link, handles, .. } => {
                let handles = handles.clone();
                link.run("listing users' passkeys", move |mut conn| async move {
                    redis::cmd("HVALS")
                        .arg(&handles)
                        .query_async(&mut conn)
                        .await
                })
                .await
            }
        }
    }

    /// Replaces `user`'s data with what `change` makes of what is kept (`None`: delete it),
    /// as one step against other changes; `change` may be called again if another replica
    /// changed the data meanwhile. Kept on disk before it returns.
    pub async fn change<T>(
        &self,
        user: &str,
        mut change: impl FnMut(Option<&UserEntry>) -> (Option<UserEntry>, T),
    ) -> Result<T, StoreError> {
        match self {
            UserData::Unkept => Ok(change(None).1),
            UserData::Durable(d) => Ok(d.change_user_data(user, change).await),
            UserData::Redis { .. } => {
                for _ in 0..MAX_TRIES {
                    let old = self.get(user).await?;
                    let (new, out) = change(old.as_ref());
                    if self.swap(user, old.as_ref(), new.as_ref()).await? {
                        return Ok(out);
                    }
                }
                Err(StoreError::Unavailable)
            }
        }
    }

    /// Deletes the data of every user with data whom `configured` does not name (a user
    /// removed from the config takes their passkeys with them); who they were.
    pub async fn prune(&self, configured: &HashSet<String>) -> Result<Vec<String>, StoreError> {
        let mut gone = Vec::new();
        for user in self.users().await? {
            if !configured.contains(&user) {
                self.change(&user, |_| (None, ())).await?;
                gone.push(user);
            }
        }
        Ok(gone)
    }

    /// [`Self::prune`], logged: one line per user, and a warning naming `when` (the start, a
    /// reload) if the store does not answer.
    pub async fn forget_removed(&self, configured: &HashSet<String>, when: &str) {
        match self.prune(configured).await {
            Ok(gone) => gone.iter().for_each(|user| log_forgotten(user)),
            Err(e) => tracing::warn!(
                "{when}: the passkeys of users removed from the config could not be deleted ({e}); the next reload tries again"
            ),
        }
    }

    /// [`Self::forget_removed`] at start, which may run outside any async runtime: at once
    /// in a state directory (on disk soon after; a crash before that deletes them again at
    /// the next start), and on the Redis thread with Redis, which may not answer yet.
    pub fn forget_removed_at_start(&self, configured: HashSet<String>) {
        match self {
            UserData::Unkept => {}
            UserData::Durable(d) => {
                for user in d.user_data_users() {
                    if !configured.contains(&user) && d.forget_user_data(&user) {
                        log_forgotten(&user);
                    }
                }
            }
            UserData::Redis { link, .. } => {
                let data = self.clone();
                link.spawn(async move { data.forget_removed(&configured, "at start").await });
            }
        }
    }

    /// Redis: sets `user`'s data to `new` if it is still `old`.
    async fn swap(
        &self,
        user: &str,
        old: Option<&UserEntry>,
        new: Option<&UserEntry>,
    ) -> Result<bool, StoreError> {
        let UserData::Redis {
            link,
            prefix,
            handles,
        } = self
        else {
            return Ok(true);
        };
        let mut call = CHANGE.prepare_invoke();
        call.key(format!("{prefix}{user}"))
            .key(handles)
            .arg(old.map(encode).unwrap_or_default())
            .arg(new.map(encode).unwrap_or_default())
            .arg(old.map(|e| hex(&e.handle)).unwrap_or_default())
            .arg(new.map(|e| hex(&e.handle)).unwrap_or_default())
            .arg(user);
        let done: i64 = link
            .run("changing a user's passkeys", move |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(done == 1)
    }
}

fn log_forgotten(user: &str) {
    tracing::info!(user, "passkeys of removed user {user} deleted");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written_and_a_damaged_one_does_not() {
        let entry = UserEntry {
            handle: [0xab; 16],
            json: "{\"passkeys\":[]}\nwith a newline".into(),
        };
        assert_eq!(decode(&encode(&entry)), Some(entry));
        assert_eq!(decode("abc\n{}"), None);
        assert_eq!(decode("no newline"), None);
        assert_eq!(decode(&format!("{}\n{{}}", "zz".repeat(16))), None);
    }
}
