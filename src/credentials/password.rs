//! Password hashes from the config (argon2id PHC strings, or bcrypt for users moving over from
//! htpasswd) and their verification on a bounded pool off the async workers.

use std::sync::Arc;

use argon2::password_hash::phc::Output;
use argon2::{Argon2, PasswordHasher};
use tokio::sync::{Semaphore, oneshot};

use super::hash_pool::{BlockMemory, HashPool, LINGER};

#[derive(Clone)]
pub enum PasswordHash {
    /// A PHC string (`$argon2id$v=19$m=...`), checked to parse at load time.
    Argon2(String),
    /// A bcrypt hash (`$2b$` / `$2y$` / `$2a$`).
    Bcrypt(String),
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordHash::Argon2(_) => f.write_str("PasswordHash::Argon2(..)"),
            PasswordHash::Bcrypt(_) => f.write_str("PasswordHash::Bcrypt(..)"),
        }
    }
}

impl PasswordHash {
    /// Checks a hash from the config; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let text = text.trim();
        if text.starts_with("$argon2") {
            let phc = argon2::PasswordHash::new(text)
                .map_err(|e| format!("not a valid argon2 PHC string: {e}"))?;
            argon2::Params::try_from(&phc)
                .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
            if phc.salt.is_none() || phc.hash.is_none() {
                return Err("argon2 PHC string has no salt or no hash".into());
            }
            Ok(PasswordHash::Argon2(text.to_string()))
        } else if ["$2b$", "$2y$", "$2a$"].iter().any(|p| text.starts_with(p)) {
            if text.len() != 60 {
                return Err("a bcrypt hash is 60 characters long".into());
            }
            Ok(PasswordHash::Bcrypt(text.to_string()))
        } else {
            Err("must be an argon2id PHC string ($argon2id$...) or a bcrypt hash ($2b$/$2y$); make one with `sessiongate hash-password`".into())
        }
    }

    /// The hash as the config wrote it.
    pub fn as_str(&self) -> &str {
        match self {
            PasswordHash::Argon2(s) | PasswordHash::Bcrypt(s) => s,
        }
    }

    /// Slow on purpose: call it from a blocking thread. Comparison of the outputs is
    /// constant-time.
    pub fn verify(&self, password: &[u8]) -> bool {
        self.check(password, &mut BlockMemory::default())
    }

    /// `verify` with argon2's working memory taken from `memory`, which a hashing thread keeps
    /// from one login to the next.
    pub(crate) fn check(&self, password: &[u8], memory: &mut BlockMemory) -> bool {
        match self {
            PasswordHash::Argon2(phc) => argon2_matches(phc, password, memory),
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        }
    }
}

/// What the argon2 crate's `verify_password` does (the PHC string's algorithm, version,
/// parameters, salt and output length; a constant-time comparison of the outputs), except that
/// the blocks live in `memory` instead of a fresh 19 MiB allocation per check.
fn argon2_matches(phc: &str, password: &[u8], memory: &mut BlockMemory) -> bool {
    let Ok(phc) = argon2::PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let version = match phc.version.map(argon2::Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    // Also takes the output length from the hash.
    let Ok(params) = argon2::Params::try_from(&phc) else {
        return false;
    };
    let Some(blocks) = memory.blocks(params.block_count()) else {
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, out, blocks)
        .is_ok()
        // `Output`'s `==` is constant-time.
        && Output::new(out).is_ok_and(|computed| computed == *expected)
}

/// A new argon2id hash with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's baseline).
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Why a login could not be checked (as opposed to being wrong).
#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// Too many logins are already waiting for a hashing slot.
    Busy,
}

/// The bounded pool passwords are checked on. It lives as long as the process; the hashes it
/// checks come from the policy of the moment.
pub struct Verifier {
    /// Admission: logins running or waiting. Past this, fail fast instead of queueing forever.
    admitted: Arc<Semaphore>,
    /// `login_workers` threads; each argon2 check holds its memory cost (19 MiB by default).
    pool: HashPool,
}

impl Verifier {
    pub fn new(workers: usize, queue: usize) -> Verifier {
        Verifier {
            admitted: Arc::new(Semaphore::new(workers + queue)),
            // Room for every admitted login, so an admitted one is never refused by the queue.
            pool: HashPool::start(workers, workers + queue, LINGER),
        }
    }

    /// Checks `password` against `hash`. Callers pass a dummy hash of the same cost for
    /// unknown users, so that both failures take the same time and give the same answer.
    pub async fn verify(&self, hash: &PasswordHash, password: &str) -> Result<bool, VerifyError> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| VerifyError::Busy)?;
        let hash = hash.clone();
        let password = password.as_bytes().to_vec();
        let (reply, answer) = oneshot::channel();
        self.pool
            .try_run(Box::new(move |memory| {
                // The client left while this waited: nobody would read the answer. (`admitted`
                // is released with the closure, here and if the check panics.)
                if reply.is_closed() {
                    return;
                }
                fail::fail_point!("password-check");
                let ok = hash.check(&password, memory);
                // Queued and running logins count as admitted. The slot is freed before the
                // answer goes out: at nice 19 this thread may not run again for a while once
                // the answer wakes the login, and the client's next login must find it free.
                drop(admitted);
                let _ = reply.send(ok);
            }))
            .map_err(|_| VerifyError::Busy)?;
        // No answer (the check panicked) is a failed login, never a granted one.
        Ok(answer.await.unwrap_or(false))
    }
}

/// A hash of a random password with the same algorithm and cost as `like`.
pub(crate) fn dummy_like(like: Option<&PasswordHash>) -> PasswordHash {
    let mut random = [0u8; 32];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut random)
        .expect("the OS random number generator failed");
    match like {
        Some(PasswordHash::Bcrypt(h)) => {
            let cost = h[4..6].parse().unwrap_or(bcrypt::DEFAULT_COST);
            let hash = bcrypt::hash(random, cost).expect("bcrypt hashes any input");
            PasswordHash::Bcrypt(hash)
        }
        Some(PasswordHash::Argon2(phc)) => {
            let params = argon2::PasswordHash::new(phc)
                .ok()
                .and_then(|p| argon2::Params::try_from(&p).ok())
                .unwrap_or_default();
            let hash = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(&random)
                .expect("argon2 hashes with parameters that parsed");
            PasswordHash::Argon2(hash.to_string())
        }
        None => PasswordHash::Argon2(
            hash_password(&random).expect("default argon2 parameters are valid"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_hash_round_trips_and_rejects_wrong_password() {
        let phc = hash_password(b"correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        let hash = PasswordHash::parse(&phc).unwrap();
        assert!(hash.verify(b"correct horse"));
        assert!(!hash.verify(b"correct horse "));
    }

    #[test]
    fn bcrypt_hashes_from_htpasswd_are_accepted() {
        let h = bcrypt::hash("secret", 4).unwrap();
        let hash = PasswordHash::parse(&h).unwrap();
        assert!(hash.verify(b"secret"));
        assert!(!hash.verify(b"Secret"));
        let y = h.replacen("$2b$", "$2y$", 1);
        assert!(PasswordHash::parse(&y).unwrap().verify(b"secret"));
    }

    /// The hashing threads' path (blocks in reused memory) agrees with the argon2 crate's own
    /// `verify_password` for every algorithm, version, cost and output length, with one memory
    /// reused across them all (larger, then smaller, then larger again).
    #[test]
    fn argon2_checks_in_reused_memory_agree_with_the_argon2_crate() {
        use argon2::{Algorithm, Params, PasswordVerifier, Version};
        let mut memory = BlockMemory::default();
        let cases = [
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(19 * 1024, 2, 1, None),
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(64, 1, 1, Some(16)),
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(4096, 3, 4, Some(64)),
            ),
            (
                Algorithm::Argon2i,
                Version::V0x13,
                Params::new(256, 4, 2, None),
            ),
            (
                Algorithm::Argon2d,
                Version::V0x10,
                Params::new(128, 2, 1, Some(20)),
            ),
            (
                Algorithm::Argon2id,
                Version::V0x10,
                Params::new(8192, 1, 2, None),
            ),
        ];
        for (algorithm, version, params) in cases {
            let argon2 = Argon2::new(algorithm, version, params.unwrap());
            let phc = argon2.hash_password(b"pass word").unwrap().to_string();
            let hash = PasswordHash::parse(&phc).unwrap();
            for (password, right) in [
                (&b"pass word"[..], true),
                (b"pass word ", false),
                (b"Pass word", false),
                (b"", false),
            ] {
                let reference = Argon2::default()
                    .verify_password(password, phc.as_str())
                    .is_ok();
                assert_eq!(reference, right, "{phc} {password:?}");
                assert_eq!(
                    hash.check(password, &mut memory),
                    right,
                    "{phc} {password:?}"
                );
                assert_eq!(hash.verify(password), right, "{phc} {password:?}");
            }
            // A different output changes nothing else: refused.
            let other = Argon2::new(algorithm, version, argon2.params().clone())
                .hash_password(b"another")
                .unwrap()
                .to_string();
            let salt_of = |p: &str| p.rsplit('$').nth(1).unwrap().to_string();
            let forged = phc.replace(&salt_of(&phc), &salt_of(&other));
            assert!(
                !PasswordHash::parse(&forged)
                    .unwrap()
                    .check(b"pass word", &mut memory)
            );
        }
    }

    #[test]
    fn bcrypt_checks_with_block_memory_agree_with_the_bcrypt_crate() {
        let mut memory = BlockMemory::default();
        let h = bcrypt::hash("secret", 4).unwrap();
        let hash = PasswordHash::parse(&h).unwrap();
        for password in ["secret", "Secret", "secret ", ""] {
            assert_eq!(
                hash.check(password.as_bytes(), &mut memory),
                bcrypt::verify(password, &h).unwrap()
            );
        }
    }

    #[tokio::test]
    async fn users_with_different_costs_and_algorithms_share_the_pool() {
        use argon2::Params;
        let big = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        )
        .hash_password(b"big")
        .unwrap()
        .to_string();
        let small = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(b"small")
        .unwrap()
        .to_string();
        let old = bcrypt::hash("old", 4).unwrap();
        let hashes: Arc<Vec<(&str, PasswordHash)>> = Arc::new(
            [("big", &big), ("small", &small), ("old", &old)]
                .iter()
                .map(|(name, phc)| (*name, PasswordHash::parse(phc).unwrap()))
                .collect(),
        );
        let dummy = dummy_like(Some(&hashes[0].1));
        // Room for all 21 checks at once: none is refused as busy.
        let verifier = Arc::new(Verifier::new(2, 19));
        let mut checks = Vec::new();
        for round in 0..3 {
            for (name, password, right) in [
                ("big", "big", true),
                ("small", "small", true),
                ("old", "old", true),
                ("big", "small", false),
                ("small", "big", false),
                ("old", "big", false),
                ("nobody", "big", false),
            ] {
                let (verifier, hashes, dummy) = (verifier.clone(), hashes.clone(), dummy.clone());
                checks.push(tokio::spawn(async move {
                    let hash = hashes
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or(&dummy, |(_, h)| h);
                    let got = verifier.verify(hash, password).await;
                    assert_eq!(got, Ok(right), "round {round}: {name} / {password}");
                }));
            }
        }
        for c in checks {
            c.await.unwrap();
        }
    }

    #[test]
    fn malformed_hashes_are_refused_with_a_reason() {
        for bad in [
            "",
            "plaintext",
            "$argon2id$v=19$m=bad",
            "$2b$04$short",
            "{SHA}abc",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
