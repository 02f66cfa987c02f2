//! The cookies a sign-in sets under the prefix, next to the session cookie: the sign-in
//! cookie, which the sign-in form's token is bound to, and the pending sign-in's, which
//! carries a password step to its code step. Both go only to sessiongate's own endpoints.

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use rand::TryRng;

use super::csrf::Binding;
use crate::http::headers::single_cookie;
use crate::session::SessionId;
use crate::session::cookie::{self, CookieAttrs, CookieSigner};

/// The name of a cookie of ours scoped to the prefix: the session cookie's with `-{role}`. A
/// `__Host-` cookie must have `Path=/`, so such a name becomes `__Secure-` (which still makes
/// browsers refuse it over plain http).
fn cookie_name(session_cookie: &str, role: &str) -> String {
    match session_cookie.strip_prefix("__Host-") {
        Some(base) => format!("__Secure-{base}-{role}"),
        None => format!("{session_cookie}-{role}"),
    }
}

/// The sign-in and pending cookies' names and attributes, fixed at start.
pub struct PrefixCookies {
    /// `auth.prefix`: the cookies' path.
    path: String,
    attrs: CookieAttrs,
    signin: String,
    pending: String,
    /// Signs the pending cookie's value.
    pending_signer: CookieSigner,
    /// `auth.pending_lifetime`: how long the pending cookie is kept.
    pending_lifetime: Duration,
}

impl PrefixCookies {
    /// The cookies named after `session_cookie`, on `prefix`, signed with `secret`.
    pub fn new(
        secret: &[u8],
        session_cookie: &str,
        prefix: &str,
        attrs: CookieAttrs,
        pending_lifetime: Duration,
    ) -> PrefixCookies {
        let pending = cookie_name(session_cookie, "pending");
        PrefixCookies {
            path: prefix.to_string(),
            attrs,
            signin: cookie_name(session_cookie, "signin"),
            pending_signer: CookieSigner::new(secret, &pending),
            pending,
            pending_lifetime,
        }
    }

    /// `Set-Cookie` for a cookie of ours on the prefix: `value` for `max_age`, or (`None`)
    /// the one that makes the browser forget it.
    fn set(&self, name: &str, value: Option<(&str, Duration)>) -> HeaderValue {
        let mut c = self
            .attrs
            .cookie(name, value.map_or("", |(v, _)| v), &self.path);
        match value {
            Some((_, max_age)) => cookie::keep_for(&mut c, max_age),
            None => c.make_removal(),
        }
        cookie::header(&c)
    }

    /// `Set-Cookie` for the pending sign-in `id`, or (`None`) the one that makes the browser
    /// forget it.
    pub(crate) fn pending(&self, id: Option<&SessionId>) -> HeaderValue {
        let value = id.map(|id| self.pending_signer.sign(id));
        self.set(
            &self.pending,
            value.as_deref().map(|v| (v, self.pending_lifetime)),
        )
    }

    /// The pending sign-in id in the request's cookie, if exactly one cookie of ours (on any
    /// Cookie line) carries a value we signed.
    pub(crate) fn pending_id(&self, headers: &HeaderMap) -> Option<SessionId> {
        let value = single_cookie(headers, &self.pending)?;
        self.pending_signer.verify(std::str::from_utf8(value).ok()?)
    }

    /// `Set-Cookie` for a new sign-in cookie `value`, kept as long as a form token lasts.
    fn signin(&self, value: &str) -> HeaderValue {
        self.set(&self.signin, Some((value, super::csrf::TOKEN_LIFETIME)))
    }
}

/// The sign-in cookie, which the sign-in form's token is bound to, so that a token works only
/// from the browser that loaded the form: 32 random bytes, base64url, set with the first
/// sign-in page a browser gets and kept as long as a token lasts.
pub(crate) struct SignInCookie {
    /// The one the request brought, if it brought exactly one well-formed.
    brought: Option<String>,
}

/// base64url of 32 bytes, without padding.
const SIGN_IN_COOKIE_LEN: usize = 43;

impl SignInCookie {
    pub(crate) fn of(cookies: &PrefixCookies, headers: &HeaderMap) -> SignInCookie {
        let brought = single_cookie(headers, &cookies.signin)
            .filter(|v| {
                v.len() == SIGN_IN_COOKIE_LEN
                    && v.iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            })
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string);
        SignInCookie { brought }
    }

    /// What a posted sign-in form's token must be bound to: only a cookie the request brought.
    pub(crate) fn binding(&self) -> Option<Binding<'_>> {
        self.brought
            .as_deref()
            .map(|v| Binding::SignIn(v.as_bytes()))
    }

    /// The cookie the request brought, if it brought exactly one well-formed.
    pub(crate) fn binding_value(&self) -> Option<&str> {
        self.brought.as_deref()
    }

    /// The value to bind a new form to, and the `Set-Cookie` the response needs when the
    /// request brought none.
    pub(crate) fn value(&self, cookies: &PrefixCookies) -> (Cow<'_, str>, Option<HeaderValue>) {
        match &self.brought {
            Some(v) => (Cow::Borrowed(v), None),
            None => {
                let mut raw = [0u8; 32];
                // No fallback: a guessable value would let a token move between browsers.
                rand::rngs::SysRng
                    .try_fill_bytes(&mut raw)
                    .expect("the OS random number generator failed");
                let value = URL_SAFE_NO_PAD.encode(raw);
                let set = cookies.signin(&value);
                (Cow::Owned(value), Some(set))
            }
        }
    }
}
