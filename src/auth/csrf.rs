//! Cross-site request forgery checks for sessiongate's own POST endpoints (login, logout).
//!
//! Browsers say where a request comes from: `Sec-Fetch-Site` in current ones, `Origin` on
//! every cross-origin POST in all of them. When a browser says "another site", the request
//! is refused, whatever else it carries. Clients that send neither (scripts, curl) must echo
//! the signed token that the login form carries instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, header};
use sha2::Sha256;

use crate::host;

/// How long a form token stays good: a login page left open over lunch still works.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, PartialEq, Eq)]
pub enum Origin {
    /// The browser says the request comes from this site.
    SameOrigin,
    /// The browser says it comes from another site.
    CrossSite,
    /// No browser signal: only a valid form token will do.
    Unknown,
}

/// What the request's headers say about where it comes from. `authority` is the request's
/// own host: the Host header, or for HTTP/2 the `:authority` (the URI's).
pub fn origin_of<B>(req: &http::Request<B>) -> Origin {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.as_bytes())
        .or_else(|| req.uri().authority().map(|a| a.as_str().as_bytes()));
    origin_from(req.headers(), host)
}

fn origin_from(headers: &HeaderMap, host: Option<&[u8]>) -> Origin {
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" => Origin::SameOrigin,
            _ => Origin::CrossSite,
        };
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Origin::Unknown;
    };
    // "https://App.example.:8443" is the page's origin; it is this site's if the Host names
    // the same canonical host and port (the port the Origin's scheme implies when none is
    // written).
    let origin = origin.to_str().ok().and_then(host::Origin::parse);
    let host = host.and_then(|h| host::parse(h).ok());
    match (origin, host) {
        (Some(o), Some(h)) if o.is(o.scheme, &h) => Origin::SameOrigin,
        _ => Origin::CrossSite,
    }
}

/// Issues and checks the stateless form token: `base64url(issued_at || HMAC(key, issued_at))`.
#[derive(Clone)]
pub struct FormTokens {
    keyed: Hmac<Sha256>,
}

impl FormTokens {
    pub fn new(secret: &[u8]) -> FormTokens {
        let mut keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC accepts keys of any length");
        // Domain separation from the session cookie signature, which uses the same secret.
        keyed.update(b"sessiongate form token\0");
        FormTokens { keyed }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    pub fn issue(&self) -> String {
        self.issue_at(Self::now())
    }

    fn issue_at(&self, issued: u64) -> String {
        let mut mac = self.keyed.clone();
        mac.update(&issued.to_be_bytes());
        let mut raw = issued.to_be_bytes().to_vec();
        raw.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn verify(&self, token: &str) -> bool {
        let mut raw = [0u8; 8 + 32 + 2];
        let Ok(40) = URL_SAFE_NO_PAD.decode_slice(token.as_bytes(), &mut raw) else {
            return false;
        };
        let issued = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let mut mac = self.keyed.clone();
        mac.update(&raw[..8]);
        if mac.verify_slice(&raw[8..40]).is_err() {
            return false;
        }
        let now = Self::now();
        issued <= now + 60 && now.saturating_sub(issued) <= TOKEN_LIFETIME.as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    fn origin_of(h: &HeaderMap) -> Origin {
        origin_from(h, h.get(header::HOST).map(|v| v.as_bytes()))
    }

    #[test]
    fn browser_signals_decide() {
        assert_eq!(
            origin_of(&headers(&[("sec-fetch-site", "same-origin")])),
            Origin::SameOrigin
        );
        for site in ["cross-site", "same-site", "none"] {
            let h = HeaderMap::from_iter([(
                http::HeaderName::from_static("sec-fetch-site"),
                HeaderValue::from_str(site).unwrap(),
            )]);
            assert_eq!(origin_of(&h), Origin::CrossSite, "{site}");
        }
        let same = headers(&[
            ("origin", "https://app.example:8443"),
            ("host", "app.example:8443"),
        ]);
        assert_eq!(origin_of(&same), Origin::SameOrigin);
        for (origin, host) in [
            ("https://app.example", "APP.Example."),
            ("https://app.example.", "app.example:443"),
            ("http://[::1]:8080", "[0::1]:8080"),
        ] {
            let h = HeaderMap::from_iter([
                (header::ORIGIN, HeaderValue::from_str(origin).unwrap()),
                (header::HOST, HeaderValue::from_str(host).unwrap()),
            ]);
            assert_eq!(origin_of(&h), Origin::SameOrigin, "{origin} vs {host}");
        }
        for (origin, host) in [
            ("https://evil.example", "app.example"),
            ("https://app.example.evil.example", "app.example"),
            ("null", "app.example"),
            ("https://app.example:8443", "app.example"),
            ("https://app.example", "app.example:8443"),
            ("https://app.example", "app.example.."),
            ("https://app.example@evil.example", "app.example"),
        ] {
            let h = HeaderMap::from_iter([
                (header::ORIGIN, HeaderValue::from_str(origin).unwrap()),
                (header::HOST, HeaderValue::from_str(host).unwrap()),
            ]);
            assert_eq!(origin_of(&h), Origin::CrossSite, "{origin} vs {host}");
        }
        assert_eq!(origin_of(&headers(&[("host", "a")])), Origin::Unknown);
    }

    #[test]
    fn tokens_verify_only_when_signed_and_fresh() {
        let tokens = FormTokens::new(b"0123456789abcdef0123456789abcdef");
        assert!(tokens.verify(&tokens.issue()));
        let old = tokens.issue_at(FormTokens::now() - TOKEN_LIFETIME.as_secs() - 10);
        assert!(!tokens.verify(&old), "expired");
        let future = tokens.issue_at(FormTokens::now() + 3600);
        assert!(!tokens.verify(&future), "issued in the future");
        let other = FormTokens::new(b"fedcba9876543210fedcba9876543210");
        assert!(!other.verify(&tokens.issue()), "another key");
        assert!(!tokens.verify(""));
        assert!(!tokens.verify("AAAA"));
        let mut t = tokens.issue().into_bytes();
        t[20] = if t[20] == b'A' { b'B' } else { b'A' };
        assert!(!tokens.verify(std::str::from_utf8(&t).unwrap()), "tampered");
    }
}
