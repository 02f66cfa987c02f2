//! The thread that keeps the files small and current: it writes when sessions were last used
//! (every `session.touch_interval`, in one pass, so a request never writes), and replaces the
//! logs with a fresh snapshot when they have grown, an hour has passed, or the disk failed
//! (that snapshot is how a degraded store catches up).

use std::fs::File;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use super::dir::{create_new, sync_dir};
use super::inner::Inner;
use super::load::{ms_of, started_of};
use super::record::{MAGIC, Record};
use super::writer::{Msg, write_all};
use crate::session::identity::Owner;
use crate::session::keys::SessionKey;
use crate::session::memory::StoredTimes;

/// Logs past this size are folded into a snapshot.
const COMPACT_AFTER_BYTES: u64 = 64 << 20;
/// Logs older than this are folded even when small, so ended and expired sessions leave the
/// disk too.
const COMPACT_AFTER: Duration = Duration::from_secs(3600);
/// How often a degraded store tries to catch up.
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Runs until the store is dropped.
pub fn spawn(inner: Weak<Inner>, touch_interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("state-keeper".into())
        .spawn(move || run(inner, touch_interval));
    if let Err(e) = spawned {
        tracing::error!(
            "session.state_dir: cannot start the keeper thread ({e}); last-seen times and snapshots are not written"
        );
    }
}

fn run(inner: Weak<Inner>, touch_interval: Duration) {
    let tick = touch_interval.min(RETRY_EVERY);
    let mut touched_to = SystemTime::now();
    let mut touched_at = Instant::now();
    let mut compacted_at = Instant::now();
    loop {
        std::thread::sleep(tick);
        let Some(inner) = inner.upgrade() else { return };
        if touched_at.elapsed() >= touch_interval {
            let from = touched_to;
            touched_to = SystemTime::now();
            touched_at = Instant::now();
            write_touches(&inner, from);
        }
        let degraded = inner.health.degraded().is_some();
        let grown = inner.health.log_bytes.load(Ordering::Relaxed) >= COMPACT_AFTER_BYTES;
        let old = compacted_at.elapsed() >= COMPACT_AFTER
            && inner.health.log_bytes.load(Ordering::Relaxed) > 0;
        if degraded || grown || old {
            compacted_at = Instant::now();
            compact(&inner);
        }
    }
}

/// Appends when every session used since `from` was last used.
pub fn write_touches(inner: &Inner, from: SystemTime) {
    let mut bytes = Vec::new();
    inner.live.used_since(from, |id, seen| {
        Record::Touch {
            key: inner.keys.of(id),
            last_seen_ms: ms_of(seen),
        }
        .encode(&mut bytes);
    });
    if !bytes.is_empty() {
        let _ = inner.writer.send(Msg::Append(bytes));
    }
}

/// Starts a new log, writes a snapshot of everything in memory, and deletes the logs it
/// covers. On failure the store is (or stays) degraded and the old files stay.
pub fn compact(inner: &Inner) {
    let (tx, rx) = std::sync::mpsc::channel();
    if inner.writer.send(Msg::Rotate(tx)).is_err() {
        return;
    }
    let (covered, failures) = match rx.recv() {
        Ok(Ok(rotated)) => rotated,
        Ok(Err(e)) => return inner.health.fail("starting a new log", &e),
        Err(_) => return,
    };
    if let Err(e) = write_snapshot(inner) {
        let _ = std::fs::remove_file(inner.dir.snapshot_tmp());
        return inner.health.fail("writing the snapshot", &e);
    }
    inner.health.log_bytes.store(0, Ordering::Relaxed);
    inner.health.recovered(failures);
    for n in inner.dir.logs().unwrap_or_default() {
        if n <= covered {
            let _ = std::fs::remove_file(inner.dir.log(n));
        }
    }
}

/// Writes every live session (and the profiles of provider users, the used codes, the
/// pending sign-ins and the users' own data) to `snapshot.tmp`, syncs it, and renames it over `snapshot`.
fn write_snapshot(inner: &Inner) -> std::io::Result<()> {
    // Lets a test hold the keeper between the new log and the snapshot.
    fail::fail_point!("state-snapshot");
    let tmp = inner.dir.snapshot_tmp();
    let _ = std::fs::remove_file(&tmp);
    let mut out = Out {
        file: create_new(&tmp)?,
        buf: MAGIC.to_vec(),
        failed: None,
    };
    for (user, profile) in inner.names.profiles() {
        let json = serde_json::to_string(&*profile).expect("a profile serialises");
        out.put(Record::Profile {
            user: user.to_string(),
            json,
        });
    }
    let others = inner.used_codes().into_iter().chain(inner.pending());
    for record in others.chain(inner.user_data()) {
        out.put(record);
    }
    let create = |key: SessionKey, owner: Owner, times: &StoredTimes| {
        Some(Record::Create {
            key,
            user: inner.names.name(owner.user)?.to_string(),
            credentials: owner.credentials,
            started: started_of(times),
        })
    };
    inner.live.export(|id, owner, times| {
        if let Some(r) = create(inner.keys.of(id), owner, &times) {
            out.put(r);
        }
    });
    inner.restored.export(|key, owner, times| {
        if let Some(r) = create(*key, owner, &times) {
            out.put(r);
        }
    });
    let file = out.finish()?;
    file.sync_all()?;
    std::fs::rename(&tmp, inner.dir.snapshot())?;
    sync_dir(inner.dir.path())
}

/// A snapshot being written: records are encoded into `buf`, which goes out to `file` (through
/// the writer's `write_all`, so the fail point that fills the disk in tests fails snapshots
/// too) a MiB at a time. The first error stops the writing and is returned by `finish`.
struct Out {
    file: File,
    buf: Vec<u8>,
    failed: Option<std::io::Error>,
}

impl Out {
    fn put(&mut self, record: Record) {
        record.encode(&mut self.buf);
        if self.buf.len() >= 1 << 20 {
            if self.failed.is_none() {
                self.failed = write_all(&mut self.file, &self.buf).err();
            }
            self.buf.clear();
        }
    }

    fn finish(mut self) -> std::io::Result<File> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        write_all(&mut self.file, &self.buf)?;
        Ok(self.file)
    }
}

/// Asks the writer to sync and stop, waiting for it (a clean shutdown).
pub fn close(writer: &Sender<Msg>) {
    let (tx, rx) = std::sync::mpsc::channel();
    if writer.send(Msg::Close(tx)).is_ok() {
        let _ = rx.recv_timeout(Duration::from_secs(10));
    }
}
