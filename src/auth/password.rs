//! Password hashes from the config (argon2id PHC strings, or bcrypt for users moving over from
//! htpasswd) and their verification on a bounded pool off the async workers.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

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

    /// Slow on purpose: call it from a blocking thread. Comparison of the outputs is
    /// constant-time inside the argon2 and bcrypt crates.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Argon2(phc) => Argon2::default()
                .verify_password(password, phc.as_str())
                .is_ok(),
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        }
    }
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

/// The configured users, and the bounded pool their passwords are checked on.
pub struct Users {
    hashes: HashMap<String, PasswordHash>,
    /// Checked for unknown users so that they take as long as known ones.
    dummy: PasswordHash,
    /// Admission: logins running or waiting. Past this, fail fast instead of queueing forever.
    admitted: Arc<Semaphore>,
    /// Hashes running at once; each argon2 hash holds its memory cost (19 MiB by default).
    running: Arc<Semaphore>,
}

impl Users {
    pub fn new(users: &[crate::config::UserConfig], workers: usize, queue: usize) -> Users {
        Users {
            hashes: users
                .iter()
                .map(|u| (u.name.clone(), u.password_hash.clone()))
                .collect(),
            dummy: dummy_like(users.first().map(|u| &u.password_hash)),
            admitted: Arc::new(Semaphore::new(workers + queue)),
            running: Arc::new(Semaphore::new(workers)),
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        self.hashes.contains_key(name)
    }

    /// Checks a username and password. Unknown users are checked against a dummy hash of the
    /// same cost, so both failures take the same time and give the same answer.
    pub async fn verify(&self, name: &str, password: &str) -> Result<bool, VerifyError> {
        let _admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| VerifyError::Busy)?;
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| VerifyError::Busy)?;
        let (hash, known) = match self.hashes.get(name) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let password = password.as_bytes().to_vec();
        let ok = tokio::task::spawn_blocking(move || {
            let _running = running;
            hash.verify(&password)
        })
        .await
        // A panic inside a hash check is a failed login, never a granted one.
        .unwrap_or(false);
        Ok(ok && known)
    }
}

/// A hash of a random password with the same algorithm and cost as `like`.
fn dummy_like(like: Option<&PasswordHash>) -> PasswordHash {
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
