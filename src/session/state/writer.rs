//! The thread that appends to the log: records from every request are written as they come
//! (a crash of the process loses none the kernel has), synced to the disk at least every
//! [`SYNC_EVERY`], and at once for a caller that waits (an ended session, before its
//! response). Callers that arrive together share one sync.
//!
//! A write that fails (disk full, read-only) puts the store in degraded mode: sessions keep
//! working from memory, records are dropped, and the keeper catches up by writing a whole new
//! snapshot once the disk takes writes again (see `keeper`).

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::dir::{StateDir, create_new, sync_dir};
use super::record::MAGIC;

/// The longest a written record waits for a sync: what a power cut can lose.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// At most one warning this often while writes keep failing.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How the disk side is doing, read by readyz, the metrics and the keeper.
pub struct Health {
    degraded: AtomicBool,
    /// Why, while degraded, and how many writes failed so far: under one lock, so that a
    /// failure and a recovery never interleave.
    failed: std::sync::Mutex<Failed>,
    /// Bytes written to logs since the last snapshot.
    pub log_bytes: AtomicU64,
    /// When a warning was last logged, for one a minute at most.
    warned_at: std::sync::Mutex<Option<Instant>>,
    write_errors: Counter,
    /// 1 while degraded.
    degraded_gauge: Gauge,
}

#[derive(Default)]
struct Failed {
    /// Never holds a secret: an I/O error and a file name.
    reason: String,
    count: u64,
}

impl Health {
    pub fn new(write_errors: Counter, degraded_gauge: Gauge) -> Health {
        Health {
            degraded: AtomicBool::new(false),
            failed: std::sync::Mutex::default(),
            log_bytes: AtomicU64::new(0),
            warned_at: std::sync::Mutex::new(None),
            write_errors,
            degraded_gauge,
        }
    }

    pub fn degraded(&self) -> Option<String> {
        self.degraded
            .load(Ordering::Acquire)
            .then(|| self.failed().reason.clone())
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, Failed> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many writes have failed so far.
    pub fn failures(&self) -> u64 {
        self.failed().count
    }

    /// Enters (or stays in) degraded mode because `what` failed; warns at most once a minute.
    pub fn fail(&self, what: &str, e: &std::io::Error) {
        self.write_errors.inc();
        let why = format!("{what}: {e}");
        {
            let mut failed = self.failed();
            failed.reason.clone_from(&why);
            failed.count += 1;
            self.degraded_gauge.set(1);
            self.degraded.store(true, Ordering::Release);
        }
        let mut warned = self.warned_at.lock().unwrap_or_else(|e| e.into_inner());
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            drop(warned);
            tracing::warn!(
                "session.state_dir: cannot write ({why}); sessions keep working from memory but changes are not kept on disk until writes succeed again"
            );
        }
    }

    /// Leaves degraded mode after a snapshot, unless a write failed since the log the
    /// snapshot goes with was opened (`failures` then): what failed may be newer than the
    /// snapshot, and that log is no longer written, so the next snapshot must be waited for.
    pub fn recovered(&self, failures: u64) {
        let failed = self.failed();
        if failed.count != failures {
            return;
        }
        self.degraded_gauge.set(0);
        let was = self.degraded.swap(false, Ordering::AcqRel);
        drop(failed);
        if was {
            tracing::info!("session.state_dir: writes succeed again; every session is on disk");
        }
    }
}

pub enum Msg {
    /// Encoded records to append.
    Append(Vec<u8>),
    /// Answer once everything sent before is on disk (or cannot be: degraded).
    Sync(tokio::sync::oneshot::Sender<()>),
    /// Start a new log; answers the number of the last old one, which a snapshot taken from
    /// now on covers, and the count of failed writes when the new one was opened.
    Rotate(Sender<std::io::Result<(u64, u64)>>),
    /// Sync and stop; answers when done.
    Close(Sender<()>),
}

struct Writer {
    dir: Arc<StateDir>,
    health: Arc<Health>,
    /// The log being appended to, and its number. `None` after a failed rotation.
    log: Option<File>,
    number: u64,
    unsynced: bool,
    synced_at: Instant,
}

/// Starts the writer appending to a new log numbered `number`.
pub fn spawn(dir: Arc<StateDir>, health: Arc<Health>, number: u64) -> std::io::Result<Sender<Msg>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut writer = Writer {
        dir,
        health,
        log: None,
        number,
        unsynced: false,
        synced_at: Instant::now(),
    };
    if let Err(e) = writer.open_log() {
        writer.health.fail("creating a log", &e);
    }
    std::thread::Builder::new()
        .name("state-writer".into())
        .spawn(move || writer.run(rx))?;
    Ok(tx)
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut batch = Vec::new();
        loop {
            let wait = if self.unsynced {
                SYNC_EVERY.saturating_sub(self.synced_at.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            match rx.recv_timeout(wait) {
                Ok(msg) => batch.push(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.sync();
                    return;
                }
            }
            // Everything already waiting goes in the same write and the same sync.
            while batch.len() < 4096
                && let Ok(msg) = rx.try_recv()
            {
                batch.push(msg);
            }
            if self.handle(std::mem::take(&mut batch)) {
                return;
            }
        }
    }

    /// Writes a batch; true when asked to stop.
    fn handle(&mut self, batch: Vec<Msg>) -> bool {
        let mut bytes = Vec::new();
        let mut waiters = Vec::new();
        let mut close = None;
        for msg in batch {
            match msg {
                Msg::Append(b) => bytes.extend_from_slice(&b),
                Msg::Sync(w) => waiters.push(w),
                Msg::Rotate(reply) => {
                    self.append(&std::mem::take(&mut bytes));
                    let _ = reply.send(self.rotate());
                }
                Msg::Close(reply) => close = Some(reply),
            }
        }
        self.append(&bytes);
        if !waiters.is_empty() || close.is_some() || self.synced_at.elapsed() >= SYNC_EVERY {
            self.sync();
        }
        for w in waiters {
            let _ = w.send(());
        }
        if let Some(reply) = close {
            let _ = reply.send(());
            return true;
        }
        false
    }

    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let Some(log) = self.log.as_mut() else { return };
        match write_all(log, bytes) {
            Ok(()) => {
                self.unsynced = true;
                self.health
                    .log_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                // What follows a failed write cannot be appended after a torn record; the
                // next snapshot starts a new log.
                self.log = None;
                self.health.fail("writing the log", &e);
            }
        }
    }

    fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        if let Some(log) = self.log.as_mut()
            && let Err(e) = sync_data(log)
        {
            self.log = None;
            self.health.fail("syncing the log", &e);
        }
        self.unsynced = false;
        self.synced_at = Instant::now();
    }

    fn rotate(&mut self) -> std::io::Result<(u64, u64)> {
        self.sync();
        let old = self.number;
        self.number += 1;
        self.open_log()?;
        // Counted here, not by the keeper once it has the answer: this thread may fail a
        // write to the new log before then.
        Ok((old, self.health.failures()))
    }

    fn open_log(&mut self) -> std::io::Result<()> {
        self.log = None;
        let path = self.dir.log(self.number);
        let mut log = create_new(&path)?;
        write_all(&mut log, MAGIC)?;
        log.sync_all()?;
        sync_dir(self.dir.path())?;
        self.log = Some(log);
        Ok(())
    }
}

/// `write_all`, or the fail point tests use to fill the disk.
pub fn write_all(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    fail::fail_point!("state-write", |_| Err(std::io::Error::from_raw_os_error(
        libc::ENOSPC
    )));
    file.write_all(bytes)
}

fn sync_data(file: &mut File) -> std::io::Result<()> {
    fail::fail_point!("state-write", |_| Err(std::io::Error::from_raw_os_error(
        libc::ENOSPC
    )));
    file.sync_data()
}
