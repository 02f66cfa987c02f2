//! Signing in with a passkey, no username typed: the page's script (`passkey.js`) asks
//! `POST {prefix}/passkey/options` for a challenge, the browser's passkey signs it, and the
//! script posts the answer to `POST {prefix}/passkey/sign-in` as an ordinary form, which
//! signs in like a password would (a 303 with the session cookie, or the sign-in page again
//! saying what was wrong). A passkey verifies the user itself, so no second factor is asked.
//!
//! Each challenge is one ceremony: filed for 2 minutes under a random name the page carries,
//! bound to the browser's sign-in cookie, and taken once. Failures count towards the same
//! per-user and per-address limits as wrong passwords.

use std::net::IpAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use super::cookies::SignInCookie;
use super::form::read_checked_form;
use super::provider_attempts::{Ceremony, browser_tag};
use super::sign_in::{self, Posted, SignIn, Step, login_unavailable};
use crate::credentials::passkey::{self, Keys, Party, PasskeyError};
use crate::http::error::Refusal;
use crate::http::response::{self, no_store};
use crate::ops::metrics::LoginResult;
use crate::proxy::Body;
use crate::session::StoreError;
use crate::session::user_data::UserEntry;

/// The origin the browser is on and the passkey domain for it (`auth.passkey_rp_id`, else
/// the origin's host); `None` when the request names no usable host.
pub(crate) fn party_of(
    auth: &SignIn<'_>,
    proto: &str,
    req: &Request<Incoming>,
) -> Option<(String, String)> {
    let origin = super::provider::origin(auth, proto, req)?;
    let rp_id = match auth.passkey_rp_id {
        Some(id) => id.to_string(),
        None => {
            let authority = origin.split_once("://")?.1;
            crate::http::host::canonical(authority.as_bytes())
                .ok()?
                .into_owned()
        }
    };
    Some((origin, rp_id))
}

/// Files the ceremony `make` builds around the crate's state, once `started`, and answers the
/// page's script: the ceremony's name and the options for `navigator.credentials` (JSON), or
/// why none could start.
pub(crate) async fn offer(
    auth: &SignIn<'_>,
    started: Result<(serde_json::Value, String), PasskeyError>,
    make: impl FnOnce(String) -> Ceremony,
) -> Response<Body> {
    let (options, state) = match started {
        Ok(started) => started,
        Err(e) => return response::text(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let name = ceremony_name();
    match auth.ceremonies.put(&name, make(state)).await {
        Ok(true) => options_json(&name, options),
        Ok(false) => Refusal::LoginsBusy.response(),
        Err(e) => sign_in::store_unavailable(&e),
    }
}

/// A random name for a new ceremony.
pub(crate) fn ceremony_name() -> String {
    use base64::Engine;
    let mut raw = [0u8; 32];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut raw)
        .expect("the OS random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The JSON a script gets: the ceremony's name and the options for `navigator.credentials`.
fn options_json(name: &str, options: serde_json::Value) -> Response<Body> {
    let body = serde_json::json!({ "ceremony": name, "publicKey": options["publicKey"] });
    let mut res = response::json(StatusCode::OK, Bytes::from(body.to_string()));
    no_store(&mut res);
    res
}

/// The ceremony `name`, taken (once), if it is bound to `bound` (a hex SHA-256).
pub(crate) async fn take_ceremony(
    auth: &SignIn<'_>,
    name: &str,
    bound: &str,
) -> Result<Option<Ceremony>, StoreError> {
    if name.is_empty() {
        return Ok(None);
    }
    let ceremony = auth.ceremonies.take(name).await?;
    Ok(ceremony.filter(|c| bool::from(c.bound.as_bytes().ct_eq(bound.as_bytes()))))
}

/// `POST {prefix}/passkey/options`: a challenge for signing in with any passkey of this site.
pub async fn options(auth: &SignIn<'_>, proto: &str, req: Request<Incoming>) -> Response<Body> {
    if !auth.passkeys {
        return Refusal::PasskeysOff.response();
    }
    let browser = SignInCookie::of(auth.cookies, req.headers());
    let Some((origin, rp_id)) = party_of(auth, proto, &req) else {
        return Refusal::NoSuchEndpoint.response();
    };
    if let Err(refusal) = read_checked_form(auth.tokens, req, false, browser.binding()).await {
        return refusal.response();
    }
    // The challenge is bound to the cookie the form's token was bound to.
    let Some(cookie) = browser.binding_value() else {
        return Refusal::NoFormCookie.response();
    };
    let started = Party::new(&rp_id, &origin).and_then(|p| p.start_sign_in());
    let bound = browser_tag(cookie);
    offer(auth, started, |state| Ceremony {
        state,
        bound,
        rp_id,
        origin,
        user: None,
        name: None,
        handle: None,
    })
    .await
}

/// `POST {prefix}/passkey/sign-in` from `client`: the browser's answer, as a form.
pub async fn sign_in(auth: &SignIn<'_>, client: IpAddr, req: Request<Incoming>) -> Response<Body> {
    let (res, result) = attempt(auth, client, req).await;
    auth.metrics.login(result);
    res
}

async fn attempt(
    auth: &SignIn<'_>,
    client: IpAddr,
    req: Request<Incoming>,
) -> (Response<Body>, LoginResult) {
    if !auth.passkeys {
        return (Refusal::PasskeysOff.response(), LoginResult::Invalid);
    }
    let browser = SignInCookie::of(auth.cookies, req.headers());
    let posted = match sign_in::read_post(auth, client, &browser, Step::Password, req).await {
        Ok(posted) => posted,
        Err(refused) => return refused,
    };
    let at = PasskeyAttempt {
        auth,
        client: posted.meta.client.to_string(),
        browser,
        posted,
    };
    at.run().await
}

/// A passkey sign-in's post, read.
struct PasskeyAttempt<'a> {
    auth: &'a SignIn<'a>,
    client: String,
    browser: SignInCookie,
    posted: Posted,
}

impl PasskeyAttempt<'_> {
    fn refused(&self, refusal: &Refusal<'_>) -> Response<Body> {
        sign_in::refused(self.auth, &self.browser, refusal, &self.posted.form.rd, "")
    }

    fn unavailable(&self, e: &StoreError) -> (Response<Body>, LoginResult) {
        let res = login_unavailable(self.auth, &self.browser, &self.posted.form.rd, e);
        (res, LoginResult::Unavailable)
    }

    async fn run(&self) -> (Response<Body>, LoginResult) {
        let form = &self.posted.form;
        let bound = self.browser.binding_value().map(browser_tag);
        let ceremony = match bound {
            Some(bound) => take_ceremony(self.auth, &form.ceremony, &bound).await,
            None => Ok(None),
        };
        let ceremony = match ceremony {
            Ok(Some(c)) => c,
            Ok(None) => return (self.refused(&Refusal::PasskeyRestart), LoginResult::Invalid),
            Err(e) => return self.unavailable(&e),
        };
        let (response, handle, cred_id) = match passkey::identify(&form.credential) {
            Ok(found) => found,
            Err(e) => return self.failed(None, &e).await,
        };
        let user = match self.auth.user_data.user_of(&handle).await {
            Ok(user) => user,
            Err(e) => return self.unavailable(&e),
        };
        if let Err(refused) = self.within_limits(user.as_deref()).await {
            return refused;
        }
        let Some(user) = user else {
            let e = PasskeyError::Refused("it is not registered here (removed?)".into());
            return self.failed(None, &e).await;
        };
        self.check(&ceremony, &user, &response, &cred_id).await
    }

    /// Checks the answer against `user`'s passkey `cred_id`; signs in on success.
    async fn check(
        &self,
        ceremony: &Ceremony,
        user: &str,
        response: &webauthn_rs::prelude::PublicKeyCredential,
        cred_id: &[u8],
    ) -> (Response<Body>, LoginResult) {
        let policy = self.auth.gate.policy();
        let Some(configured) = policy.user(user) else {
            let e = PasskeyError::Refused("its user is no longer configured".into());
            return self.failed(None, &e).await;
        };
        let party = Party::new(&ceremony.rp_id, &ceremony.origin);
        let checked = self
            .auth
            .user_data
            .change(user, |entry| {
                let keys = entry.and_then(|e| Keys::parse(&e.json)).unwrap_or_default();
                let Some(kept) = keys.find(cred_id) else {
                    let e = PasskeyError::Refused("it is not registered here (removed?)".into());
                    return (entry.cloned(), Err(e));
                };
                let used = party
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|p| p.finish_sign_in(&ceremony.state, response, kept));
                match (used, entry) {
                    (Ok(used), Some(e)) => {
                        let json = keys.with_used(used).to_json();
                        let entry = UserEntry {
                            handle: e.handle,
                            json,
                        };
                        (Some(entry), Ok(()))
                    }
                    (Err(err), _) => (entry.cloned(), Err(err)),
                    (Ok(_), None) => (None, Err(PasskeyError::Unreadable)),
                }
            })
            .await;
        match checked {
            Err(e) => self.unavailable(&e),
            Ok(Err(e)) => self.failed(Some(user), &e).await,
            Ok(Ok(())) => self.signed_in(&policy, configured).await,
        }
    }

    async fn signed_in(
        &self,
        policy: &crate::gate::policy::Policy,
        user: &crate::gate::policy::User,
    ) -> (Response<Body>, LoginResult) {
        tracing::info!(user = user.name.as_str(), "passkey accepted");
        let (posted, browser) = (&self.posted, &self.browser);
        sign_in::complete_posted(self.auth, browser, policy, user, posted, &posted.form.rd).await
    }

    /// The same failure limits as a password, for the passkey's user when it names one.
    async fn within_limits(&self, user: Option<&str>) -> Result<(), (Response<Body>, LoginResult)> {
        let user = user.unwrap_or("");
        match sign_in::held_back(self.auth, user, &self.client, "passkey").await {
            Ok(None) => Ok(()),
            Ok(Some(refusal)) => Err((self.refused(&refusal), LoginResult::RateLimited)),
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    /// A refused passkey: counted like a wrong password, and the sign-in page saying why.
    async fn failed(&self, user: Option<&str>, e: &PasskeyError) -> (Response<Body>, LoginResult) {
        let counted = self
            .auth
            .limiter
            .record_failure(user.unwrap_or(""), &self.client)
            .await;
        if let Err(e) = counted {
            return self.unavailable(&e);
        }
        tracing::warn!(user = user.unwrap_or(""), reason = %e, "passkey sign-in refused");
        let reason = match e {
            PasskeyError::Refused(why) => why.clone(),
            other => other.to_string(),
        };
        let res = self.refused(&Refusal::PasskeyFailed { reason: &reason });
        (res, LoginResult::WrongCredentials)
    }
}
