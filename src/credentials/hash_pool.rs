//! The threads password checks run on: a fixed number, started with the App, at the lowest CPU
//! priority, each reusing one argon2 block buffer while logins keep coming and giving it back
//! to the OS when they stop.
//!
//! Why not `spawn_blocking`: tokio's blocking pool grows to hundreds of threads under a login
//! storm, each with its own malloc arena that keeps the 19 MiB argon2 buffers it freed
//! (+460 MiB RSS that stayed after a 200-login burst), and its threads compete with the
//! proxy's workers at the same priority (p99 of proxied requests ~4x during the burst).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use argon2::Block;
use memmap2::MmapMut;

/// How long the pool keeps one block buffer after the last login. A fresh 19 MiB buffer costs
/// the first touch of every page (13-19 ms measured on the benchmark VM, close to the ~25 ms
/// of a default-cost check); logins that come close together (a retry, a few people at once)
/// reuse a warm one, and a quiet process is back to its idle footprint after this.
pub const LINGER: Duration = Duration::from_secs(10);

/// A password check, given the calling thread's block memory.
pub type Job = Box<dyn FnOnce(&mut BlockMemory) + Send>;

/// The queue is full or the threads are gone: the caller answers "busy".
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// A fixed set of hashing threads fed by a bounded queue. Dropping the pool lets the threads
/// finish the jobs already queued and exit.
pub struct HashPool {
    /// Lock-free for the async workers that queue logins: they never wait on a lock that a
    /// low-priority hashing thread could be holding.
    jobs: SyncSender<Job>,
}

/// What the hashing threads share; only they take these locks.
struct Shared {
    jobs: Mutex<Receiver<Job>>,
    /// The one buffer kept for the pool while it is idle, and since when (kept `linger`).
    spare: Mutex<Option<(Mapping, Instant)>>,
    linger: Duration,
}

impl HashPool {
    /// Starts `threads` threads and a queue holding up to `capacity` jobs not yet taken.
    pub fn start(threads: usize, capacity: usize, linger: Duration) -> HashPool {
        let (jobs, rx) = std::sync::mpsc::sync_channel(capacity);
        let shared = Arc::new(Shared {
            jobs: Mutex::new(rx),
            spare: Mutex::new(None),
            linger,
        });
        for i in 0..threads {
            let shared = shared.clone();
            if let Err(e) = std::thread::Builder::new()
                .name(format!("sessiongate-hash-{i}"))
                .spawn(move || work(&shared))
            {
                // Fewer threads only means slower logins; with none at all every login
                // waits in the queue, so say so loudly.
                tracing::error!("cannot start password hashing thread {i}: {e}");
            }
        }
        HashPool { jobs }
    }

    /// Queues `job` without waiting; `Full` when the queue has no room.
    pub fn try_run(&self, job: Job) -> Result<(), Full> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) | TrySendError::Disconnected(_) => Full,
        })
    }
}

fn work(shared: &Shared) {
    lower_priority();
    let mut memory = BlockMemory::default();
    while let Some(job) = shared.next(&mut memory) {
        // A panic is a failed login (the job's reply is dropped unanswered) and the thread
        // goes on: it must not shrink the pool for good.
        if catch_unwind(AssertUnwindSafe(|| job(&mut memory))).is_err() {
            tracing::error!("a password check panicked; that login is refused");
            memory.release();
        }
    }
}

/// Nothing panics while these locks are held (jobs run outside them), but a poisoned lock
/// must not stop the pool either.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// The next job; `None` once the pool is dropped and the queue is drained. While jobs are
    /// queued a thread keeps its block memory; once idle it gives it back to the OS, except
    /// one buffer for the whole pool (the spare), unmapped after `linger` without a login.
    fn next(&self, memory: &mut BlockMemory) -> Option<Job> {
        // Only tried: if another thread holds the lock, it is waiting for a job, so none is
        // queued, and waiting for the lock with this buffer would keep it while idle.
        let rx = match self.jobs.try_lock() {
            Ok(rx) => Some(rx),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(rx) = rx {
            match rx.try_recv() {
                Ok(job) => {
                    drop(rx);
                    self.adopt_spare(memory);
                    return Some(job);
                }
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
        }
        self.park(memory.map.take());
        let rx = lock(&self.jobs);
        let job = loop {
            // Wakes up at least every `linger` even without a spare: another thread may park
            // one while this one waits.
            let wait = lock(&self.spare).as_ref().map_or(self.linger, |(_, at)| {
                self.linger.saturating_sub(at.elapsed())
            });
            match rx.recv_timeout(wait) {
                Ok(job) => break Some(job),
                Err(RecvTimeoutError::Disconnected) => break None,
                Err(RecvTimeoutError::Timeout) => {
                    let mut spare = lock(&self.spare);
                    let idle = spare.take_if(|(_, at)| at.elapsed() >= self.linger);
                    drop(spare);
                    drop(idle);
                }
            }
        };
        drop(rx);
        self.adopt_spare(memory);
        job
    }

    fn adopt_spare(&self, memory: &mut BlockMemory) {
        if memory.map.is_none() {
            memory.map = lock(&self.spare).take().map(|(map, _)| map);
        }
    }

    /// Keeps the larger of `map` and the spare as the spare, and unmaps the other.
    fn park(&self, map: Option<Mapping>) {
        let Some(map) = map else { return };
        let mut spare = lock(&self.spare);
        let unneeded = if spare.as_ref().is_none_or(|(s, _)| s.len < map.len) {
            spare.replace((map, Instant::now())).map(|(old, _)| old)
        } else {
            Some(map)
        };
        drop(spare);
        // Unmapping 19 MiB takes a while: not under the lock.
        drop(unneeded);
    }
}

/// Hashing at nice 19 lets the proxy's workers (and an upstream on the same CPU) preempt it
/// as soon as they wake: on Linux the nice value is per thread. Under full load it still gets
/// a small share (weight 15 against nice 0's 1024), so logins slow down but go on. Not
/// SCHED_IDLE: a fifth of that share, meant for work that can wait indefinitely, and a login
/// has a person waiting. Not SCHED_BATCH alone: it keeps the thread's full share and only
/// stops it from preempting others, while the point is that others preempt it.
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: gettid and setpriority have no memory-safety preconditions.
    let (tid, rc) = unsafe {
        let tid = libc::gettid();
        (
            tid,
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19),
        )
    };
    if rc != 0 {
        tracing::warn!(
            "cannot lower the CPU priority of hashing thread {tid}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Memory for argon2's blocks (1 KiB each, `m` of them: 19 MiB at the default cost), mapped
/// straight from the OS. Through malloc, freeing it would not give it back: glibc raises its
/// mmap threshold after the first such free and keeps later ones in the thread's arena.
#[derive(Default)]
pub struct BlockMemory {
    map: Option<Mapping>,
}

impl BlockMemory {
    /// `count` blocks, reusing the current mapping when it is large enough. `None` when the
    /// OS refuses the memory.
    pub fn blocks(&mut self, count: usize) -> Option<&mut [Block]> {
        if self.map.as_ref().is_none_or(|m| m.len < count) {
            // Unmap first: old and new never need to be resident together.
            self.map = None;
            self.map = Some(Mapping::new(count)?);
        }
        self.map.as_mut().map(|m| &mut m.as_mut_slice()[..count])
    }

    /// Gives the memory back to the OS.
    pub fn release(&mut self) {
        self.map = None;
    }

    #[cfg(test)]
    fn mapped_bytes(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len * size_of::<Block>())
    }
}

/// An anonymous private mapping of `len` blocks, unmapped on drop (by `MmapMut`).
struct Mapping {
    map: MmapMut,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> Option<Mapping> {
        let bytes = len.checked_mul(size_of::<Block>())?;
        if bytes == 0 {
            return None;
        }
        let map = MmapMut::map_anon(bytes).ok()?;
        Some(Mapping { map, len })
    }

    fn as_mut_slice(&mut self) -> &mut [Block] {
        // SAFETY: the mapping is page-aligned (more than a Block's 64-byte alignment), holds
        // `len` blocks, reads as zeros until written (all-zero bytes are a valid Block: it is
        // an array of u64) and is borrowed mutably through `self` only.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().cast::<Block>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn block_memory_grows_is_reused_and_is_released() {
        let mut memory = BlockMemory::default();
        assert_eq!(memory.mapped_bytes(), 0);
        let first = memory.blocks(64).unwrap().as_ptr();
        memory.blocks(64).unwrap()[63].as_mut()[0] = 7;
        assert_eq!(memory.blocks(32).unwrap().as_ptr(), first, "reused");
        assert_eq!(memory.blocks(32).unwrap().len(), 32);
        assert_eq!(memory.mapped_bytes(), 64 * 1024);
        assert_eq!(memory.blocks(128).unwrap().len(), 128);
        assert_eq!(memory.mapped_bytes(), 128 * 1024);
        memory.release();
        assert_eq!(memory.mapped_bytes(), 0);
        assert!(memory.blocks(0).is_none());
        assert!(memory.blocks(usize::MAX).is_none());
    }

    /// How long a test waits for a job's answer: it comes as soon as the job has run, but a
    /// loaded machine can take seconds for that (printing a panic's backtrace among them).
    const WAIT: Duration = Duration::from_secs(120);

    #[test]
    fn a_panicking_job_does_not_shrink_or_wedge_the_pool() {
        let pool = HashPool::start(1, 8, LINGER);
        let (done, results) = channel();
        for i in 0..3 {
            let done = done.clone();
            pool.try_run(Box::new(move |_| {
                if i == 0 {
                    panic!("injected");
                }
                done.send(i).unwrap();
            }))
            .unwrap();
        }
        // The single thread survived the panic and ran the rest.
        let mut got: Vec<i32> = (0..2)
            .map(|_| results.recv_timeout(WAIT).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn the_queue_is_bounded() {
        let pool = HashPool::start(1, 2, LINGER);
        let (release, gate) = channel::<()>();
        let (started, running) = channel();
        pool.try_run(Box::new(move |_| {
            started.send(()).unwrap();
            let _ = gate.recv();
        }))
        .unwrap();
        running.recv_timeout(WAIT).unwrap();
        // One running, two waiting, then no room.
        pool.try_run(Box::new(|_| {})).unwrap();
        pool.try_run(Box::new(|_| {})).unwrap();
        assert_eq!(pool.try_run(Box::new(|_| {})), Err(Full));
        drop(release);
    }

    /// A job that reports how much memory its thread had when it started, then maps `blocks`.
    fn probe(tx: &std::sync::mpsc::Sender<usize>, blocks: usize, hold: Duration) -> Job {
        let tx = tx.clone();
        Box::new(move |memory: &mut BlockMemory| {
            tx.send(memory.mapped_bytes()).unwrap();
            memory.blocks(blocks).unwrap();
            std::thread::sleep(hold);
        })
    }

    #[test]
    fn memory_is_kept_while_jobs_wait() {
        let pool = HashPool::start(1, 8, LINGER);
        let (tx, rx) = channel();
        for _ in 0..3 {
            pool.try_run(probe(&tx, 16, Duration::from_millis(20)))
                .unwrap();
        }
        let seen: Vec<usize> = (0..3).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
        // The first job mapped the memory; the next two found it still there.
        assert_eq!(seen, [0, 16 * 1024, 16 * 1024]);
    }

    #[test]
    fn an_idle_pool_keeps_one_buffer_for_a_while_then_none() {
        let linger = Duration::from_secs(3);
        let pool = HashPool::start(2, 8, linger);
        let (tx, rx) = channel();
        // Both threads busy at once, each with its own buffer.
        let both = Arc::new(std::sync::Barrier::new(2));
        for _ in 0..2 {
            let both = both.clone();
            let tx = tx.clone();
            pool.try_run(Box::new(move |memory: &mut BlockMemory| {
                memory.blocks(16).unwrap();
                both.wait();
                tx.send(0).unwrap();
            }))
            .unwrap();
        }
        for _ in 0..2 {
            rx.recv_timeout(WAIT).unwrap();
        }
        // Idle, well within `linger` (the threads have parked their buffers): the next login
        // finds a warm buffer.
        std::thread::sleep(linger / 10);
        pool.try_run(probe(&tx, 16, Duration::ZERO)).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), 16 * 1024);
        // Idle for longer than `linger`: nothing is kept. The unmapping is a thread's timer, so
        // a loaded machine may run it late; each probe keeps a buffer again, so each try waits
        // out `linger` anew.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            std::thread::sleep(linger + linger / 2);
            pool.try_run(probe(&tx, 16, Duration::ZERO)).unwrap();
            if rx.recv_timeout(WAIT).unwrap() == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the idle buffer was never unmapped"
            );
        }
    }

    #[test]
    fn the_spare_is_the_larger_buffer_and_the_other_is_unmapped() {
        let (_jobs, rx) = std::sync::mpsc::sync_channel(1);
        let shared = Shared {
            jobs: Mutex::new(rx),
            spare: Mutex::new(None),
            linger: LINGER,
        };
        let spare_len = || shared.spare.lock().unwrap().as_ref().map(|(m, _)| m.len);
        shared.park(None);
        assert_eq!(spare_len(), None);
        shared.park(Mapping::new(8));
        assert_eq!(spare_len(), Some(8));
        shared.park(Mapping::new(16));
        assert_eq!(spare_len(), Some(16));
        shared.park(Mapping::new(4));
        assert_eq!(spare_len(), Some(16));
        let mut memory = BlockMemory::default();
        shared.adopt_spare(&mut memory);
        assert_eq!(memory.mapped_bytes(), 16 * 1024);
        assert_eq!(spare_len(), None);
    }
}
