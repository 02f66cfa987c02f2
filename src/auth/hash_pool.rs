//! The threads password checks run on: a fixed number, started with the App, at the lowest CPU
//! priority, each reusing one argon2 block buffer while logins keep coming.
//!
//! Why not `spawn_blocking`: tokio's blocking pool grows to hundreds of threads under a login
//! storm, each with its own malloc arena that keeps the 19 MiB argon2 buffers it freed
//! (+460 MiB RSS that stayed after a 200-login burst), and its threads compete with the
//! proxy's workers at the same priority (p99 of proxied requests ~4x during the burst).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use argon2::Block;

/// A password check, given the calling thread's block memory.
pub type Job = Box<dyn FnOnce(&mut BlockMemory) + Send>;

/// The queue is full or the threads are gone: the caller answers "busy".
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// A fixed set of hashing threads fed by a bounded queue. Dropping the pool lets the threads
/// finish the jobs already queued and exit.
pub struct HashPool {
    jobs: SyncSender<Job>,
}

impl HashPool {
    /// Starts `threads` threads and a queue holding up to `capacity` jobs not yet taken.
    pub fn start(threads: usize, capacity: usize) -> HashPool {
        let (jobs, rx) = std::sync::mpsc::sync_channel(capacity);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            if let Err(e) = std::thread::Builder::new()
                .name(format!("sessiongate-hash-{i}"))
                .spawn(move || work(&rx))
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

fn work(jobs: &Mutex<Receiver<Job>>) {
    lower_priority();
    let mut memory = BlockMemory::default();
    while let Some(job) = next(jobs, &mut memory) {
        // A panic is a failed login (the job's reply is dropped unanswered) and the thread
        // goes on: it must not shrink the pool for good.
        if catch_unwind(AssertUnwindSafe(|| job(&mut memory))).is_err() {
            tracing::error!("a password check panicked; that login is refused");
            memory.release();
        }
    }
}

/// The next job; `None` once the pool is dropped and the queue is drained. The block memory is
/// kept while jobs are waiting and given back to the OS before sleeping, so a login storm
/// reuses one buffer per thread and leaves nothing resident behind it.
fn next(jobs: &Mutex<Receiver<Job>>, memory: &mut BlockMemory) -> Option<Job> {
    // Nothing panics while holding the lock (jobs run outside it), but a poisoned lock must
    // not stop the pool either.
    let rx = jobs.lock().unwrap_or_else(PoisonError::into_inner);
    match rx.try_recv() {
        Ok(job) => return Some(job),
        Err(TryRecvError::Disconnected) => return None,
        Err(TryRecvError::Empty) => {}
    }
    memory.release();
    rx.recv().ok()
}

/// Hashing at nice 19 lets the proxy's workers (and an upstream on the same CPU) preempt it
/// at once: on Linux the nice value is per thread. Not SCHED_IDLE, which runs only when the
/// CPU has nothing else to do, so steady proxied traffic could stall logins indefinitely; a
/// nice-19 thread still gets its small share (weight 15 against 1024) under full load.
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

/// An anonymous private mapping of `len` blocks, unmapped on drop.
struct Mapping {
    ptr: NonNull<Block>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> Option<Mapping> {
        let bytes = len.checked_mul(size_of::<Block>())?;
        if bytes == 0 {
            return None;
        }
        // SAFETY: a fresh anonymous mapping aliases nothing; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        Some(Mapping {
            ptr: NonNull::new(ptr.cast())?,
            len,
        })
    }

    fn as_mut_slice(&mut self) -> &mut [Block] {
        // SAFETY: the mapping is page-aligned (more than a Block's 64-byte alignment), holds
        // `len` blocks, reads as zeros until written (all-zero bytes are a valid Block: it is
        // an array of u64) and is borrowed mutably through `self` only.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the range mmap returned in `new`, no longer borrowed.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len * size_of::<Block>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

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

    #[test]
    fn a_panicking_job_does_not_shrink_or_wedge_the_pool() {
        let pool = HashPool::start(1, 8);
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
            .map(|_| results.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn the_queue_is_bounded() {
        let pool = HashPool::start(1, 2);
        let (release, gate) = channel::<()>();
        let (started, running) = channel();
        pool.try_run(Box::new(move |_| {
            started.send(()).unwrap();
            let _ = gate.recv();
        }))
        .unwrap();
        running.recv_timeout(Duration::from_secs(10)).unwrap();
        // One running, two waiting, then no room.
        pool.try_run(Box::new(|_| {})).unwrap();
        pool.try_run(Box::new(|_| {})).unwrap();
        assert_eq!(pool.try_run(Box::new(|_| {})), Err(Full));
        drop(release);
    }

    #[test]
    fn memory_is_kept_while_jobs_wait_and_given_back_when_idle() {
        let pool = HashPool::start(1, 8);
        let (tx, rx) = channel();
        for _ in 0..3 {
            let tx = tx.clone();
            pool.try_run(Box::new(move |memory: &mut BlockMemory| {
                let before = memory.mapped_bytes();
                memory.blocks(16).unwrap();
                tx.send(before).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }))
            .unwrap();
        }
        let seen: Vec<usize> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        // The first job mapped the memory; the next two found it still there.
        assert_eq!(seen, [0, 16 * 1024, 16 * 1024]);
        // Idle now: the next job starts with nothing mapped.
        std::thread::sleep(Duration::from_millis(100));
        pool.try_run(Box::new(move |memory: &mut BlockMemory| {
            tx.send(memory.mapped_bytes()).unwrap();
        }))
        .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 0);
    }
}
