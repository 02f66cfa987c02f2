//! Reading the state files back at start: the snapshot, then every log in order, into the
//! store of sessions not used since (keyed by their disk key) and the table of user names.

use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::dir::{StateDir, StateError};
use super::record::{Damage, Frames, MAGIC, PendingRecord, Record, Started, UserEntry};
use crate::session::browser::Browser;
use crate::session::identity::{Owner, Profile, UserNames};
use crate::session::keys::SessionKey;
use crate::session::memory::{MemoryStore, StoredTimes};

/// A TOTP code's step a user used, remembered until `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedCode {
    pub user: String,
    pub step: u64,
    pub until: SystemTime,
}

/// What reading found beside the sessions themselves.
#[derive(Default)]
pub struct Loaded {
    /// One line per file whose end was dropped, naming the file and why.
    pub dropped: Vec<String>,
    pub used_codes: Vec<UsedCode>,
    /// Pending sign-ins still on, by keyed hash.
    pub pending: std::collections::HashMap<SessionKey, PendingRecord>,
    /// Each local user's own data (see `session::user_data`), by name.
    pub user_data: std::collections::HashMap<String, UserEntry>,
    pub files: usize,
    pub bytes: u64,
}

/// Reads every state file of `dir` into `into` and `names`.
pub fn load(
    dir: &StateDir,
    into: &MemoryStore<SessionKey>,
    names: &UserNames,
) -> Result<Loaded, StateError> {
    let mut files: Vec<PathBuf> = Vec::new();
    if dir.snapshot().exists() {
        files.push(dir.snapshot());
    }
    files.extend(dir.logs()?.into_iter().map(|n| dir.log(n)));
    let mut loaded = Loaded::default();
    for file in files {
        read_file(&file, into, names, &mut loaded)?;
    }
    into.sweep();
    let now = SystemTime::now();
    loaded.used_codes.retain(|c| c.until > now);
    loaded.pending.retain(|_, p| at_ms(p.expires_ms) > now);
    Ok(loaded)
}

/// Times [`load_unlocked`] reads again while snapshots replace the logs under it.
const UNLOCKED_TRIES: usize = 10;

/// Reads `dir` as [`load`] does while the sessiongate holding it may be writing: when a
/// snapshot replaced the logs meanwhile (some read already, or gone before they could be),
/// it reads again. What a write cut short at the end of the newest log holds has not
/// happened yet, and is left out. The sessions read are not kept.
pub fn load_unlocked(dir: &StateDir) -> Result<Loaded, StateError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let before = identity(&dir.snapshot());
        let sessions = MemoryStore::new(Duration::from_secs(60), Duration::from_secs(60));
        let read = load(dir, &sessions, &UserNames::default());
        let settled = identity(&dir.snapshot()) == before;
        match read {
            Ok(loaded) if settled => return Ok(loaded),
            Err(e) if tries >= UNLOCKED_TRIES => return Err(e),
            _ if tries >= UNLOCKED_TRIES => {
                return Err(StateError::Dir {
                    dir: dir.path().to_path_buf(),
                    why: "its files kept changing while they were read; try again".into(),
                });
            }
            // Also a log deleted between listing and opening it, by the snapshot covering it.
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Which snapshot file is in place (a new one is renamed over the old).
fn identity(snapshot: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(snapshot).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
}

fn read_file(
    file: &Path,
    into: &MemoryStore<SessionKey>,
    names: &UserNames,
    loaded: &mut Loaded,
) -> Result<(), StateError> {
    let err = |why: String| StateError::File {
        file: file.to_path_buf(),
        why,
    };
    let handle = std::fs::File::open(file).map_err(|e| err(e.to_string()))?;
    let len = handle.metadata().map_err(|e| err(e.to_string()))?.len();
    loaded.files += 1;
    loaded.bytes += len;
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the map is only read. State files are only ever appended to, renamed into
    // place or deleted, never truncated or rewritten in place, so the bytes mapped stay as
    // they are even while the sessiongate holding the directory writes on (read unlocked).
    let map = unsafe { memmap2::Mmap::map(&handle) }.map_err(|e| err(e.to_string()))?;
    let Some(frames) = map.strip_prefix(MAGIC.as_slice()) else {
        if MAGIC.starts_with(&map) {
            // A file cut short while its first bytes were written holds nothing.
            loaded.dropped.push(format!(
                "{}: empty (cut short when it was made)",
                file.display()
            ));
            return Ok(());
        }
        return Err(err(
            "is not a sessiongate state file (or one from a newer version); move it out of the directory to start without it".into(),
        ));
    };
    let mut frames = Frames::new(frames);
    loop {
        match frames.next_record() {
            Ok(Some(record)) => apply(record, into, names, loaded),
            Ok(None) => return Ok(()),
            Err(damage) => {
                let at = MAGIC.len() + frames.offset;
                let how = match damage {
                    Damage::Torn => "a write cut short by a crash",
                    Damage::Corrupt => "corrupt: a checksum or a record is wrong",
                };
                loaded.dropped.push(format!(
                    "{}: dropped {} bytes from byte {at} on ({how})",
                    file.display(),
                    map.len() - at
                ));
                return Ok(());
            }
        }
    }
}

fn apply(record: Record, into: &MemoryStore<SessionKey>, names: &UserNames, loaded: &mut Loaded) {
    match record {
        Record::Create {
            key,
            user,
            credentials,
            started,
        } => {
            let owner = Owner {
                user: names.intern(&user),
                credentials,
            };
            into.put(key, owner, &times_of(&started));
        }
        Record::Touch { key, last_seen_ms } => into.seen_at(&key, at_ms(last_seen_ms)),
        Record::End { key } => {
            let _ = into.remove(&key);
        }
        Record::Profile { user, json } => {
            if let Ok(profile) = serde_json::from_str::<Profile>(&json) {
                names.intern_profile(&user, profile);
            }
        }
        Record::TotpUsed {
            user,
            step,
            until_ms,
        } => loaded.used_codes.push(UsedCode {
            user,
            step,
            until: at_ms(until_ms),
        }),
        Record::Pending { key, pending } => {
            loaded.pending.insert(key, pending);
        }
        Record::PendingEnd { key } => {
            loaded.pending.remove(&key);
        }
        Record::UserData { user, handle, json } => {
            loaded.user_data.insert(user, UserEntry { handle, json });
        }
        Record::UserDataEnd { user } => {
            loaded.user_data.remove(&user);
        }
    }
}

/// The wall-clock time `ms` Unix milliseconds name.
pub fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Unix milliseconds of `t` (zero before 1970).
pub fn ms_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn times_of(s: &Started) -> StoredTimes {
    let client = Ipv6Addr::from(s.client);
    StoredTimes {
        started: at_ms(s.created_ms),
        last_seen: at_ms(s.last_seen_ms),
        client: client
            .to_ipv4_mapped()
            .map_or(IpAddr::V6(client), IpAddr::V4),
        browser: Browser::from_bytes(s.browser),
    }
}

pub fn started_of(t: &StoredTimes) -> Started {
    Started {
        created_ms: ms_of(t.started),
        last_seen_ms: ms_of(t.last_seen),
        client: match t.client {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        },
        browser: t.browser.to_bytes(),
    }
}
