//! The session cookie value: `base64url(id) "." base64url(HMAC-SHA256(name, id))`, and the
//! `Set-Cookie` lines of our cookies.
//!
//! The signature is a cheap pre-filter: forged or random values are rejected before they reach
//! the store, so the store's fast hasher only ever sees ids we issued. Access is granted by the
//! server-side lookup, never by the signature alone.

use std::time::Duration;

use ::cookie::Cookie;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderValue;
use sha2::Sha256;

use super::memory::{ID_LEN, SessionId};

const TAG_LEN: usize = 32;
/// base64 without padding: 4 characters per 3 bytes, rounded up.
const fn b64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}
const ID_B64: usize = b64_len(ID_LEN);
const TAG_B64: usize = b64_len(TAG_LEN);
/// Exact length of every value we issue; anything else is refused before decoding.
pub const VALUE_LEN: usize = ID_B64 + 1 + TAG_B64;

/// Signs and verifies cookie values. Holds an HMAC state already keyed and fed the cookie name,
/// so each request clones it instead of re-deriving the key.
#[derive(Clone)]
pub struct CookieSigner {
    keyed: Hmac<Sha256>,
}

impl CookieSigner {
    pub fn new(secret: &[u8], cookie_name: &str) -> CookieSigner {
        let mut keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC accepts keys of any length");
        // The name is length-prefixed so (name, id) pairs can never run into each other.
        keyed.update(&(cookie_name.len() as u64).to_be_bytes());
        keyed.update(cookie_name.as_bytes());
        CookieSigner { keyed }
    }

    /// The cookie value for a session id.
    pub fn sign(&self, id: &SessionId) -> String {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(VALUE_LEN);
        URL_SAFE_NO_PAD.encode_string(id.as_bytes(), &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut out);
        out
    }

    /// The session id in a cookie value, if the value is well-formed and its signature is ours.
    /// The tag comparison is constant-time (`Mac::verify_slice`).
    pub fn verify(&self, value: &str) -> Option<SessionId> {
        let value = value.as_bytes();
        if value.len() != VALUE_LEN || value[ID_B64] != b'.' {
            return None;
        }
        let mut id = [0u8; ID_LEN];
        let mut tag = [0u8; TAG_LEN + 2];
        let n = URL_SAFE_NO_PAD
            .decode_slice(&value[..ID_B64], &mut id)
            .ok()?;
        let t = URL_SAFE_NO_PAD
            .decode_slice(&value[ID_B64 + 1..], &mut tag)
            .ok()?;
        if n != ID_LEN || t != TAG_LEN {
            return None;
        }
        let mut mac = self.keyed.clone();
        mac.update(&id);
        mac.verify_slice(&tag[..TAG_LEN]).ok()?;
        Some(SessionId::from_bytes(id))
    }
}

/// What every cookie of ours is set with besides its name, value and path: always HttpOnly,
/// `Secure` and `SameSite` as `session.secure` and `session.same_site` say.
#[derive(Clone, Copy, Debug)]
pub struct CookieAttrs {
    pub secure: bool,
    pub same_site: ::cookie::SameSite,
}

impl CookieAttrs {
    /// `name=value` on `path` with these attributes, kept until the browser session ends.
    pub fn cookie(self, name: &str, value: &str, path: &str) -> Cookie<'static> {
        Cookie::build((name.to_string(), value.to_string()))
            .path(path.to_string())
            .http_only(true)
            .secure(self.secure)
            .same_site(self.same_site)
            .build()
    }
}

/// Makes the browser keep `c` for `max_age` (whole seconds).
pub fn keep_for(c: &mut Cookie<'_>, max_age: Duration) {
    c.set_max_age(::cookie::time::Duration::seconds(
        i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
    ));
}

/// A cookie as a `Set-Cookie` value.
pub fn header(c: &Cookie<'_>) -> HeaderValue {
    HeaderValue::try_from(c.to_string()).expect("cookie names and values are header-safe")
}

/// The session cookie's `Set-Cookie` lines: on every path, and on this exact host unless
/// `session.cookie_domain` names a domain.
pub struct SessionCookie {
    name: String,
    signer: CookieSigner,
    attrs: CookieAttrs,
    domain: Option<String>,
    /// `session.cookie_max_age`; `None`: the cookie lasts as long as the browser session.
    max_age: Option<Duration>,
}

impl SessionCookie {
    pub fn new(
        name: &str,
        signer: CookieSigner,
        attrs: CookieAttrs,
        domain: Option<String>,
        max_age: Option<Duration>,
    ) -> SessionCookie {
        SessionCookie {
            name: name.to_string(),
            signer,
            attrs,
            domain,
            max_age,
        }
    }

    /// `Set-Cookie` for a new session.
    pub fn set(&self, id: &SessionId) -> HeaderValue {
        let mut c = self.cookie(&self.signer.sign(id));
        if let Some(max_age) = self.max_age {
            keep_for(&mut c, max_age);
        }
        header(&c)
    }

    /// `Set-Cookie` that makes the browser forget the session cookie.
    pub fn clear(&self) -> HeaderValue {
        let mut c = self.cookie("");
        c.make_removal();
        header(&c)
    }

    fn cookie(&self, value: &str) -> Cookie<'static> {
        let mut c = self.attrs.cookie(&self.name, value, "/");
        if let Some(domain) = &self.domain {
            c.set_domain(domain.clone());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn signed_value_verifies_to_the_same_id() {
        let signer = CookieSigner::new(SECRET, "sessiongate");
        let id = SessionId::generate();
        let value = signer.sign(&id);
        assert_eq!(value.len(), VALUE_LEN);
        assert_eq!(signer.verify(&value), Some(id));
    }

    #[test]
    fn tampered_truncated_and_foreign_values_are_refused() {
        let signer = CookieSigner::new(SECRET, "sessiongate");
        let value = signer.sign(&SessionId::generate());

        // Flip one character of the id, then of the tag.
        for pos in [0, VALUE_LEN - 1] {
            let mut bytes = value.clone().into_bytes();
            bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
            assert_eq!(signer.verify(std::str::from_utf8(&bytes).unwrap()), None);
        }
        assert_eq!(signer.verify(&value[..VALUE_LEN - 1]), None);
        assert_eq!(signer.verify(&format!("{value}A")), None);
        assert_eq!(signer.verify(""), None);
        assert_eq!(signer.verify(&"!".repeat(VALUE_LEN)), None);

        // Same secret, other cookie name: the signature binds the name.
        let other_name = CookieSigner::new(SECRET, "other");
        assert_eq!(other_name.verify(&value), None);
        // Other secret.
        let other_key = CookieSigner::new(b"fedcba9876543210fedcba9876543210", "sessiongate");
        assert_eq!(other_key.verify(&value), None);
    }
}
