//! `sessiongate passkeys list|remove --user NAME`: a user's passkeys as an administrator sees
//! them, and their removal when a device is lost, where the config keeps them: in Redis or in
//! `session.state_dir`. Listing reads the state directory without its lock, so it works while
//! sessiongate runs; removing takes the lock, so sessiongate must be stopped first.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use secrecy::ExposeSecret;

use crate::config::Config;
use crate::config::session::StoreConfig;
use crate::credentials::passkey::{KeptPasskey, Keys};
use crate::ops::metrics::Metrics;
use crate::session::identity::UserNames;
use crate::session::redis_link::{RedisConfig, RedisLink};
use crate::session::state::{DurableStore, Opening, StateDir, StateError, load};
use crate::session::user_data::{UserData, UserEntry};
use crate::session::{MemoryStore, SessionKeys};

pub enum Action {
    List,
    Remove(Which),
}

/// The passkeys `remove` removes.
pub enum Which {
    /// The one with this id, as `list` prints it.
    Id(String),
    All,
}

/// Why the command did not do it; the exit code tells the two apart.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// It could not be done (exit 1).
    #[error("{0}")]
    Error(String),
    /// The user has no passkeys, or none with that id (exit 2).
    #[error("{0}")]
    NotFound(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Error(_) => 1,
            Failure::NotFound(_) => 2,
        }
    }
}

/// Runs `action` on `user`'s passkeys with the config at `config`: what to print.
pub fn run(config: &Path, user: &str, action: &Action) -> Result<String, Failure> {
    let config = Config::load(config).map_err(|e| Failure::Error(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Error(format!("cannot start a runtime: {e}")))?;
    rt.block_on(async {
        match action {
            Action::List => list(&config, user).await,
            Action::Remove(which) => remove(&config, user, which).await,
        }
    })
}

/// Where the config keeps users' data.
#[derive(Clone, Copy)]
enum Kept<'c> {
    Redis(&'c RedisConfig),
    Dir(&'c Path),
}

fn kept(config: &Config) -> Result<Kept<'_>, Failure> {
    match (&config.session.store, &config.session.state_dir) {
        (StoreConfig::Redis(redis), _) => Ok(Kept::Redis(redis)),
        (StoreConfig::Memory, Some(dir)) => Ok(Kept::Dir(dir)),
        (StoreConfig::Memory, None) => Err(Failure::Error(
            "this config keeps no passkeys: they need session.state_dir or a Redis session store"
                .into(),
        )),
    }
}

async fn list(config: &Config, user: &str) -> Result<String, Failure> {
    let entry = match kept(config)? {
        Kept::Redis(redis) => {
            let data = redis_data(redis).await?;
            data.get(user).await.map_err(|e| unavailable(redis, e))?
        }
        Kept::Dir(path) => {
            let dir = StateDir::unlocked(path).map_err(failed)?;
            load::load_unlocked(&dir)
                .map_err(failed)?
                .user_data
                .remove(user)
        }
    };
    let Some(entry) = entry else {
        return Err(no_passkeys(config, user));
    };
    let keys = Keys::parse(&entry.json).ok_or_else(|| damaged(user))?;
    if keys.passkeys.is_empty() {
        return Err(no_passkeys(config, user));
    }
    Ok(keys.passkeys.iter().map(line).collect())
}

async fn remove(config: &Config, user: &str, which: &Which) -> Result<String, Failure> {
    let kept = kept(config)?;
    let data = match kept {
        Kept::Redis(redis) => redis_data(redis).await?,
        Kept::Dir(path) => UserData::Durable(open_locked(config, path, user)?),
    };
    let changed = data
        .change(user, |entry| without(entry, which, config, user))
        .await;
    if let UserData::Durable(store) = &data {
        let degraded = store.degraded();
        store.close();
        if let Some(why) = degraded {
            return Err(Failure::Error(format!(
                "the change could not be written to session.state_dir: {why}"
            )));
        }
    }
    let removed = changed.map_err(|e| match kept {
        Kept::Redis(redis) => unavailable(redis, e),
        Kept::Dir(_) => Failure::Error(e.to_string()),
    })??;
    Ok(removed.iter().map(|line| format!("{line}\n")).collect())
}

/// `entry` without the passkeys `which` names, and a line for each removed.
fn without(
    entry: Option<&UserEntry>,
    which: &Which,
    config: &Config,
    user: &str,
) -> (Option<UserEntry>, Result<Vec<String>, Failure>) {
    let unchanged = entry.cloned();
    let Some(entry) = entry else {
        return (None, Err(no_passkeys(config, user)));
    };
    let named = |k: &KeptPasskey| format!("removed passkey {} {:?} of {user}", k.id(), k.name);
    let keys = Keys::parse(&entry.json);
    match (which, keys) {
        // A document that cannot be read goes too: it is all the user's passkeys.
        (Which::All, None) => {
            let line = format!("removed the passkeys of {user} (their document was damaged)");
            (None, Ok(vec![line]))
        }
        (Which::All, Some(keys)) if keys.passkeys.is_empty() => {
            (unchanged, Err(no_passkeys(config, user)))
        }
        (Which::All, Some(keys)) => (None, Ok(keys.passkeys.iter().map(named).collect())),
        (Which::Id(_), None) => (unchanged, Err(damaged(user))),
        (Which::Id(id), Some(mut keys)) => {
            let Some(at) = keys.passkeys.iter().position(|k| k.id() == *id) else {
                return (unchanged, Err(no_such_id(user, id)));
            };
            let gone = keys.passkeys.remove(at);
            let kept = UserEntry {
                handle: entry.handle,
                json: keys.to_json(),
            };
            (Some(kept), Ok(vec![named(&gone)]))
        }
    }
}

/// One passkey as `list` prints it. The name is quoted and escaped: the user chose it.
fn line(k: &KeptPasskey) -> String {
    let last = k.last_used_ms.map_or_else(|| "never".to_string(), utc);
    let backed_up = if k.backed_up { "yes" } else { "no" };
    format!(
        "{}  {:?}  added {}  last used {last}  backed up {backed_up}\n",
        k.id(),
        k.name,
        utc(k.added_ms)
    )
}

/// Unix milliseconds as `2026-01-31 12:34:56 UTC`.
fn utc(ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// The store in Redis, once Redis has answered (so that its failure has words).
async fn redis_data(redis: &RedisConfig) -> Result<UserData, Failure> {
    super::check::redis_answers(redis)
        .await
        .map_err(|why| Failure::Error(format!("redis {}: {why}", redis.display)))?;
    let link = RedisLink::start(redis, &Metrics::new(false))
        .map_err(|e| Failure::Error(format!("redis {}: {e}", redis.display)))?;
    Ok(UserData::redis(Arc::new(link)))
}

fn unavailable(redis: &RedisConfig, e: crate::session::StoreError) -> Failure {
    Failure::Error(format!(
        "redis {}: {e} (it stopped answering, or other changes kept overtaking this one)",
        redis.display
    ))
}

/// The state directory opened as a start opens it, for writing: locked, so only while no
/// sessiongate runs on it.
fn open_locked(config: &Config, path: &Path, user: &str) -> Result<DurableStore, Failure> {
    let dir = StateDir::open_existing(path).map_err(|e| match e {
        StateError::Locked { dir, pid } => Failure::Error(format!(
            "session.state_dir {}: a running sessiongate (pid {pid}) holds it; stop that sessiongate first, then run this again. Or remove {user} from [[users]] in its config and reload it (SIGHUP): that deletes all of {user}'s passkeys",
            dir.display()
        )),
        e => failed(e),
    })?;
    let s = &config.session;
    let secret = match &s.secret {
        Some(secret) => secret.expose_secret().to_vec(),
        None => dir.secret().map_err(failed)?,
    };
    let opening = Opening {
        live: Arc::new(MemoryStore::new(s.idle_timeout, s.absolute_timeout)),
        keys: SessionKeys::new(&secret),
        names: Arc::new(UserNames::default()),
        idle: s.idle_timeout,
        absolute: s.absolute_timeout,
        touch_interval: s.touch_interval,
        sweep_interval: s.sweep_interval,
        write_errors: Counter::default(),
        degraded: Gauge::default(),
    };
    DurableStore::open(dir, opening).map_err(failed)
}

fn failed(e: StateError) -> Failure {
    Failure::Error(e.to_string())
}

fn damaged(user: &str) -> Failure {
    Failure::Error(format!(
        "the passkeys kept for {user} cannot be read (a damaged document); `remove --all` deletes them"
    ))
}

fn no_passkeys(config: &Config, user: &str) -> Failure {
    let configured = config.users.iter().any(|u| u.name == user);
    let why = if configured {
        String::new()
    } else {
        format!(" ({user} is not a [[users]] name in this config)")
    };
    Failure::NotFound(format!("{user} has no passkeys{why}"))
}

fn no_such_id(user: &str, id: &str) -> Failure {
    Failure::NotFound(format!(
        "{user} has no passkey with id {id:?}; `sessiongate passkeys list --user {user}` lists theirs"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_767_225_600_999), "2026-01-01 00:00:00 UTC");
    }
}
