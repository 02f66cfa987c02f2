//! The name a session goes by outside this process: in Redis, and on the sessions page.
//!
//! A session id is a bearer credential, so it never leaves sessiongate except inside the
//! signed cookie. Everything else names the session by `HMAC-SHA256(secret, id)`: a Redis dump
//! or a page's HTML then holds nothing that can be turned back into an id, or into a cookie,
//! without the secret.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::memory::SessionId;

const KEY_LEN: usize = 32;

/// A session's outside name: one-way from its id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; KEY_LEN]);

impl SessionKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SessionKey {
        SessionKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(self) -> String {
        let mut out = String::with_capacity(2 * KEY_LEN);
        for b in self.0 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// The key in [`to_hex`](Self::to_hex) form, if `text` is exactly that.
    pub fn from_hex(text: &str) -> Option<SessionKey> {
        let bytes = text.as_bytes();
        if bytes.len() != 2 * KEY_LEN {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut key = [0u8; KEY_LEN];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            key[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(SessionKey(key))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({})", self.to_hex())
    }
}

/// Derives [`SessionKey`]s, and other one-way names from the same secret.
#[derive(Clone)]
pub struct SessionKeys {
    keyed: Hmac<Sha256>,
}

impl SessionKeys {
    pub fn new(secret: &[u8]) -> SessionKeys {
        let mut keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC accepts keys of any length");
        // Domain separation from the cookie signature and the form tokens (same secret).
        keyed.update(b"sessiongate outside name\0");
        SessionKeys { keyed }
    }

    pub fn of(&self, id: &SessionId) -> SessionKey {
        self.name(b's', id.as_bytes())
    }

    /// The seal on what a shared store says about a session: who it belongs to, with which
    /// credentials, since when. Someone who can write to Redis but does not have the secret
    /// cannot move a session to another user or extend its absolute end.
    pub fn seal(
        &self,
        key: &SessionKey,
        user: &str,
        credentials: u32,
        created_ms: u64,
    ) -> SessionKey {
        SessionKey(
            self.sealed(key, user, credentials, created_ms)
                .finalize()
                .into_bytes()
                .into(),
        )
    }

    /// Whether `seal` (hex) is the seal of these facts; compared in constant time.
    pub fn seal_holds(
        &self,
        seal: &str,
        key: &SessionKey,
        user: &str,
        credentials: u32,
        created_ms: u64,
    ) -> bool {
        let Some(given) = SessionKey::from_hex(seal) else {
            return false;
        };
        self.sealed(key, user, credentials, created_ms)
            .verify_slice(&given.0)
            .is_ok()
    }

    fn sealed(
        &self,
        key: &SessionKey,
        user: &str,
        credentials: u32,
        created_ms: u64,
    ) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(b"v");
        mac.update(&key.0);
        mac.update(&credentials.to_be_bytes());
        mac.update(&created_ms.to_be_bytes());
        mac.update(user.as_bytes());
        mac
    }

    /// A one-way name for any other value (a username or address in the failed-login
    /// counters), under its own `kind` byte.
    pub fn name(&self, kind: u8, value: &[u8]) -> SessionKey {
        let mut mac = self.keyed.clone();
        mac.update(&[kind]);
        mac.update(value);
        SessionKey(mac.finalize().into_bytes().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_way_per_secret_and_round_trip_as_hex() {
        let id = SessionId::generate();
        let a = SessionKeys::new(b"0123456789abcdef0123456789abcdef");
        let b = SessionKeys::new(b"fedcba9876543210fedcba9876543210");
        let key = a.of(&id);
        assert_eq!(key, a.of(&id));
        assert_ne!(key, b.of(&id));
        assert_ne!(key.0, *id.as_bytes());
        assert_ne!(key, a.name(b'u', id.as_bytes()), "kinds are separate");
        let hex = key.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(SessionKey::from_hex(&hex), Some(key));
        assert_eq!(SessionKey::from_hex(&hex.to_uppercase()), None);
        assert_eq!(SessionKey::from_hex(&hex[1..]), None);
        assert_eq!(SessionKey::from_hex(&format!("{}zz", &hex[2..])), None);
    }

    #[test]
    fn a_seal_holds_only_for_the_facts_it_was_made_for() {
        let keys = SessionKeys::new(b"0123456789abcdef0123456789abcdef");
        let key = keys.of(&SessionId::generate());
        let seal = keys.seal(&key, "alice", 7, 1000).to_hex();
        assert!(keys.seal_holds(&seal, &key, "alice", 7, 1000));
        assert!(!keys.seal_holds(&seal, &key, "admin", 7, 1000));
        assert!(!keys.seal_holds(&seal, &key, "alice", 8, 1000));
        assert!(!keys.seal_holds(&seal, &key, "alice", 7, 2000));
        let other = keys.of(&SessionId::generate());
        assert!(!keys.seal_holds(&seal, &other, "alice", 7, 1000));
        assert!(!keys.seal_holds("", &key, "alice", 7, 1000));
        let foreign = SessionKeys::new(b"fedcba9876543210fedcba9876543210");
        assert!(!foreign.seal_holds(&seal, &key, "alice", 7, 1000));
    }
}
