//! Failed-login limits per canonical username and per client address, in fixed memory.
//!
//! Keys are hashed (with a per-process random seed) into a fixed table of buckets, so an
//! attacker who invents millions of usernames or addresses cannot grow it; a collision only
//! makes two keys share a budget. Each bucket counts failures in a fixed window.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::hash::BuildHasher;

const BUCKETS: usize = 1 << 16;

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Milliseconds since the limiter's epoch when this bucket's window started.
    window_start: u64,
    failures: u32,
}

pub struct Limiter {
    buckets: Box<[Mutex<Bucket>]>,
    hasher: foldhash::quality::RandomState,
    epoch: Instant,
    max_failures: u32,
    window: Duration,
}

/// What a key may do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Too many failures: try again after this long.
    Limited(Duration),
}

impl Limiter {
    pub fn new(max_failures: u32, window: Duration) -> Limiter {
        Limiter {
            buckets: (0..BUCKETS)
                .map(|_| Mutex::new(Bucket::default()))
                .collect(),
            hasher: foldhash::quality::RandomState::default(),
            epoch: Instant::now(),
            max_failures,
            window,
        }
    }

    fn bucket(&self, kind: u8, key: &str) -> &Mutex<Bucket> {
        let h = self.hasher.hash_one((kind, key));
        &self.buckets[(h as usize) & (BUCKETS - 1)]
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn check_one(&self, kind: u8, key: &str) -> Verdict {
        let now = self.now_ms();
        let window = self.window.as_millis() as u64;
        let b = *self
            .bucket(kind, key)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if now.saturating_sub(b.window_start) >= window || b.failures < self.max_failures {
            Verdict::Allowed
        } else {
            Verdict::Limited(Duration::from_millis(b.window_start + window - now))
        }
    }

    fn fail_one(&self, kind: u8, key: &str) {
        let now = self.now_ms();
        let mut b = self
            .bucket(kind, key)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if now.saturating_sub(b.window_start) >= self.window.as_millis() as u64 {
            *b = Bucket {
                window_start: now,
                failures: 0,
            };
        }
        b.failures = b.failures.saturating_add(1);
    }

    /// Whether a login for `user` from `client` may be checked at all.
    pub fn check(&self, user: &str, client: &str) -> Verdict {
        match (
            self.check_one(0, &canonical(user)),
            self.check_one(1, client),
        ) {
            (Verdict::Limited(a), Verdict::Limited(b)) => Verdict::Limited(a.max(b)),
            (Verdict::Limited(a), _) | (_, Verdict::Limited(a)) => Verdict::Limited(a),
            _ => Verdict::Allowed,
        }
    }

    pub fn record_failure(&self, user: &str, client: &str) {
        self.fail_one(0, &canonical(user));
        self.fail_one(1, client);
    }

    /// A good login clears its username's count (not the address's: one valid account must
    /// not buy an attacker fresh guesses at the others).
    pub fn record_success(&self, user: &str) {
        *self
            .bucket(0, &canonical(user))
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Bucket::default();
    }
}

/// `" Alice "` and `"alice"` are one user as far as guessing goes.
pub(crate) fn canonical(user: &str) -> String {
    user.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_user_in_any_spelling_and_per_address() {
        let l = Limiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(l.check("alice", "10.0.0.1"), Verdict::Allowed);
            l.record_failure(" Alice ", &format!("10.0.0.{}", 2));
        }
        assert!(
            matches!(l.check("ALICE", "10.9.9.9"), Verdict::Limited(_)),
            "by username"
        );
        assert!(
            matches!(l.check("bob", "10.0.0.2"), Verdict::Limited(_)),
            "by address"
        );
        assert_eq!(l.check("bob", "10.0.0.3"), Verdict::Allowed);
        l.record_success("alice");
        assert_eq!(l.check("alice", "10.0.0.4"), Verdict::Allowed);
    }

    #[test]
    fn window_passes() {
        let l = Limiter::new(1, Duration::from_millis(200));
        l.record_failure("a", "ip");
        let Verdict::Limited(wait) = l.check("a", "other") else {
            panic!("limited")
        };
        assert!(wait <= Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(l.check("a", "ip"), Verdict::Allowed);
    }

    #[test]
    fn memory_is_fixed_whatever_the_keys() {
        let l = Limiter::new(5, Duration::from_secs(60));
        for i in 0..200_000 {
            l.record_failure(&format!("user{i}"), &format!("ip{i}"));
        }
        assert_eq!(l.buckets.len(), BUCKETS);
    }
}
