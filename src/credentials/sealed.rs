//! Secrets kept where they could be read by whoever reads the store (the state files, Redis):
//! the TOTP secrets people set up themselves. Sealed with ChaCha20-Poly1305 under a key derived
//! from the session secret, each bound to what it belongs to (the user's name), so a sealed
//! secret is unreadable without the session secret and cannot be moved to another user.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::Sha256;

/// Seals and opens with one key.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// The sealer keyed from `secret` (the session secret) for `purpose`.
    pub fn new(secret: &[u8], purpose: &str) -> Sealer {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC takes a key of any length");
        mac.update(b"sessiongate sealed: ");
        mac.update(purpose.as_bytes());
        let derived = mac.finalize().into_bytes();
        let key = UnboundKey::new(&CHACHA20_POLY1305, &derived).expect("a 32-byte key");
        Sealer {
            key: LessSafeKey::new(key),
        }
    }

    /// `plain` sealed for `owner`: base64url of a random nonce, the ciphertext and its tag.
    pub fn seal(&self, plain: &[u8], owner: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut nonce)
            .expect("the OS random number generator failed");
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(owner.as_bytes()),
                &mut data,
            )
            .expect("a secret this small always seals");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// What `sealed` holds, if it was sealed with this key for `owner`.
    pub fn open(&self, sealed: &str, owner: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        let (nonce, rest) = bytes.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(owner.as_bytes()), &mut data)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_for_its_owner() {
        let sealer = Sealer::new(b"session secret", "totp");
        let sealed = sealer.seal(b"JBSWY3DPEHPK3PXP", "alice");
        assert!(!sealed.contains("JBSWY3DP"));
        assert_eq!(
            sealer.open(&sealed, "alice").as_deref(),
            Some(&b"JBSWY3DPEHPK3PXP"[..])
        );
        assert_eq!(sealer.open(&sealed, "bob"), None, "bound to its owner");
        let other = Sealer::new(b"another secret", "totp");
        assert_eq!(other.open(&sealed, "alice"), None, "needs the key");
        assert_eq!(
            Sealer::new(b"session secret", "other").open(&sealed, "alice"),
            None
        );
        assert_ne!(
            sealer.seal(b"x", "alice"),
            sealer.seal(b"x", "alice"),
            "fresh nonces"
        );
        assert_eq!(sealer.open("short", "alice"), None);
    }
}
